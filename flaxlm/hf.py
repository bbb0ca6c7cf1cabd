"""Hugging Face interoperability: HF BERT / GPT-2 model directories <-> flaxlm parameters.

    model_cfg, params, tokenizer = load_hf("path/to/hf_dir")
    model = flaxlm.models.get_model(model_cfg)      # BertForPreTraining or GPTDecoder
    save_hf("path/to/out", model_cfg, params, tokenizer)   # transformers' from_pretrained reads it

An HF directory holds config.json, the weights (model.safetensors, a sharded
model.safetensors.index.json, or pytorch_model.bin, which needs torch) and the
tokenizer files. Supported:

  BERT (model_type "bert"): BertModel, BertForPreTraining, BertForMaskedLM. Which
    heads exist is read from the weight names, so the returned params hold exactly
    what the checkpoint has: the encoder always, the pooler, the MLM head (mlm_*)
    and the NSP head (pair_head) when present. model_cfg["pooler"] and
    model_cfg["pair_head"] say which. A BertModel checkpoint has no MLM head: its
    params are {"encoder": ...} and run with
    `BertEncoder(get_model(model_cfg).config).apply({"params": params["encoder"]}, ...)`.
  GPT-2 (model_type "gpt2"): GPT2LMHeadModel, GPT2Model (the LM head is tied to the
    word embeddings in both).

Weight layouts: torch's nn.Linear stores [out, in] and flax's Dense kernel is
[in, out], so BERT's linear weights are transposed. GPT-2's Conv1D weights are
already [in, out]; its fused c_attn [D, 3D] is our query | key | value
concatenated along the output axis. Tied weights (BERT's MLM decoder, GPT-2's
lm_head) are not written, as transformers' save_pretrained does not write them.
Weights are read and written as float32 (bf16/fp16 checkpoints are widened).

Tokenizers: BERT's vocab.txt -> WordPieceTokenizer (do_lower_case from
tokenizer_config.json); GPT-2's vocab.json + merges.txt, encoder.json +
vocab.bpe or tokenizer.json -> flaxlm.data.bpe.ByteLevelBPETokenizer; our own
sentencepiece models travel as spiece.model, declared as transformers'
BigBirdTokenizer (a plain sentencepiece tokenizer that adds [CLS] ... [SEP]
like BERT), which gives the same ids as flaxlm on text without literal
special-token strings.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from typing import Any

import numpy as np

from flaxlm.data.tokenizer import SentencePieceTokenizer, Tokenizer, WordPieceTokenizer
from flaxlm.errors import FlaxlmError

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPM_FILE = "spiece.model"

BERT_ARCHITECTURES = ("BertModel", "BertForPreTraining", "BertForMaskedLM")
GPT_ARCHITECTURES = ("GPT2LMHeadModel", "GPT2Model")

# HF activation name -> ours. HF's "gelu_new" and "gelu_pytorch_tanh" are both the tanh approximation.
_FROM_HF_ACTIVATION = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
}
_TO_HF_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}

# Buffers some checkpoints carry that are not parameters (HF recomputes them).
_BUFFER_SUFFIXES = ("embeddings.position_ids", ".attn.bias", ".attn.masked_bias")


class HFError(FlaxlmError):
    """An HF directory (or a flaxlm model) that cannot be converted; the message says why and what to do."""


# ----------------------------------------------------------------------------- weight correspondence


@dataclasses.dataclass(frozen=True)
class _Weight:
    """One HF tensor and the flaxlm parameter(s) it holds.

    ours: one path into the params tree, or several (GPT-2's fused c_attn) that
    are the HF tensor split into equal parts along its last axis.
    transpose: torch nn.Linear's [out, in] <-> flax Dense's [in, out].
    """

    hf: str
    ours: tuple[tuple[str, ...], ...]
    transpose: bool = False


def _linear(hf: str, ours: tuple[str, ...], transpose: bool = True) -> list[_Weight]:
    return [
        _Weight(f"{hf}.weight", (ours + ("kernel",),), transpose),
        _Weight(f"{hf}.bias", (ours + ("bias",),)),
    ]


def _norm(hf: str, ours: tuple[str, ...]) -> list[_Weight]:
    return [_Weight(f"{hf}.weight", (ours + ("scale",),)), _Weight(f"{hf}.bias", (ours + ("bias",),))]


def _embedding(hf: str, ours: tuple[str, ...]) -> _Weight:
    return _Weight(f"{hf}.weight", (ours + ("embedding",),))


def bert_weights(num_layers: int, *, prefix: str, pooler: bool, mlm: bool, pair: bool) -> list[_Weight]:
    """The HF BERT <-> flaxlm BertForPreTraining correspondence.

    prefix: "bert." for BertForPreTraining/BertForMaskedLM, "" for BertModel.
    """
    enc = ("encoder",)
    w = [
        _embedding(f"{prefix}embeddings.word_embeddings", enc + ("word_embeddings",)),
        _embedding(f"{prefix}embeddings.position_embeddings", enc + ("position_embeddings",)),
        _embedding(f"{prefix}embeddings.token_type_embeddings", enc + ("token_type_embeddings",)),
        *_norm(f"{prefix}embeddings.LayerNorm", enc + ("embeddings_norm",)),
    ]
    for i in range(num_layers):
        hf, ours = f"{prefix}encoder.layer.{i}", enc + (f"block_{i}",)
        for name in ("query", "key", "value"):
            w += _linear(f"{hf}.attention.self.{name}", ours + ("attention", name))
        w += _linear(f"{hf}.attention.output.dense", ours + ("attention", "out"))
        w += _norm(f"{hf}.attention.output.LayerNorm", ours + ("attention_norm",))
        w += _linear(f"{hf}.intermediate.dense", ours + ("mlp", "fc_in"))
        w += _linear(f"{hf}.output.dense", ours + ("mlp", "fc_out"))
        w += _norm(f"{hf}.output.LayerNorm", ours + ("mlp_norm",))
    if pooler:
        w += _linear(f"{prefix}pooler.dense", enc + ("pooler",))
    if mlm:
        w += _linear("cls.predictions.transform.dense", ("mlm_transform",))
        w += _norm("cls.predictions.transform.LayerNorm", ("mlm_norm",))
        w.append(_Weight("cls.predictions.bias", (("mlm_bias",),)))
    if pair:
        w += _linear("cls.seq_relationship", ("pair_head",))
    return w


def gpt_weights(num_layers: int, *, prefix: str) -> list[_Weight]:
    """The HF GPT-2 <-> flaxlm GPTDecoder correspondence; prefix "transformer." for GPT2LMHeadModel."""
    w = [
        _embedding(f"{prefix}wte", ("word_embeddings",)),
        _embedding(f"{prefix}wpe", ("position_embeddings",)),
    ]
    for i in range(num_layers):
        hf, ours = f"{prefix}h.{i}", (f"block_{i}",)
        qkv = tuple(ours + ("attention", name) for name in ("query", "key", "value"))
        w += _norm(f"{hf}.ln_1", ours + ("attention_norm",))
        w.append(_Weight(f"{hf}.attn.c_attn.weight", tuple(p + ("kernel",) for p in qkv)))
        w.append(_Weight(f"{hf}.attn.c_attn.bias", tuple(p + ("bias",) for p in qkv)))
        w += _linear(f"{hf}.attn.c_proj", ours + ("attention", "out"), transpose=False)
        w += _norm(f"{hf}.ln_2", ours + ("mlp_norm",))
        w += _linear(f"{hf}.mlp.c_fc", ours + ("mlp", "fc_in"), transpose=False)
        w += _linear(f"{hf}.mlp.c_proj", ours + ("mlp", "fc_out"), transpose=False)
    w += _norm(f"{prefix}ln_f", ("final_norm",))
    return w


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def _to_flaxlm(weights: dict[str, np.ndarray], rules: list[_Weight], source: str) -> dict:
    """HF state dict -> nested params; every rule's tensor must exist."""
    params: dict = {}
    for rule in rules:
        if rule.hf not in weights:
            raise HFError(
                f"{source}: weight {rule.hf!r} is missing although config.json implies it; "
                "the weights do not match the config (re-save the model with transformers)"
            )
        w = weights[rule.hf]
        if rule.transpose:
            w = w.T
        parts = np.split(w, len(rule.ours), axis=-1) if len(rule.ours) > 1 else [w]
        for path, part in zip(rule.ours, parts):
            _set(params, path, np.ascontiguousarray(part))
    return params


def _to_hf(params, rules: list[_Weight]) -> dict[str, np.ndarray]:
    """Nested params -> HF state dict (float32, contiguous)."""
    out = {}
    for rule in rules:
        try:
            parts = [np.asarray(_get(params, path), dtype=np.float32) for path in rule.ours]
        except (KeyError, TypeError):
            missing = "/".join(rule.ours[0])
            raise HFError(
                f"the parameters lack {missing}; pass the full parameter tree of the model"
            ) from None
        w = np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
        out[rule.hf] = np.ascontiguousarray(w.T if rule.transpose else w)
    return out


# ----------------------------------------------------------------------------- reading an HF directory


def is_hf_dir(path: str) -> bool:
    """Whether `path` is a directory with an HF config.json (with a model_type) and weights."""
    if not os.path.isfile(os.path.join(path, CONFIG_FILE)):
        return False
    try:
        with open(os.path.join(path, CONFIG_FILE), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    weights = (SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE, TORCH_FILE)
    return (
        isinstance(config, dict)
        and "model_type" in config
        and any(os.path.isfile(os.path.join(path, w)) for w in weights)
    )


def _read_config(path: str) -> dict:
    file = os.path.join(path, CONFIG_FILE)
    if not os.path.isdir(path):
        raise HFError(
            f"{path}: no such directory; pass a Hugging Face model directory (config.json + weights)"
        )
    if not os.path.isfile(file):
        raise HFError(
            f"{path}: no config.json; not a Hugging Face model directory "
            "(save one with transformers' save_pretrained)"
        )
    try:
        with open(file, encoding="utf-8") as f:
            config = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HFError(f"{file}: not valid JSON ({e}); restore the file written by save_pretrained") from None
    if not isinstance(config, dict):
        raise HFError(f"{file}: expected a JSON object; restore the file written by save_pretrained")
    return config


def _read_safetensors(file: str) -> dict[str, np.ndarray]:
    try:
        from safetensors import safe_open
    except ImportError:
        raise HFError(
            f"{file}: reading safetensors needs the 'safetensors' package; pip install 'flaxlm[hf]'"
        ) from None
    out = {}
    try:
        with safe_open(file, framework="np") as f:
            for name in f.keys():
                try:
                    out[name] = f.get_tensor(name)
                except TypeError:  # bfloat16: numpy has no such dtype, so read it through jax
                    with safe_open(file, framework="flax") as fj:
                        out[name] = np.asarray(fj.get_tensor(name), dtype=np.float32)
    except OSError as e:
        raise HFError(f"{file}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for damaged files
        raise HFError(f"{file}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    return out


def _read_torch(file: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise HFError(
            f"{file}: reading pytorch_model.bin needs torch; pip install 'flaxlm[hf]' "
            "(or save the model as safetensors)"
        ) from None
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged or non-torch file
        raise HFError(f"{file}: not a readable torch state dict ({type(e).__name__}: {e})") from None
    return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}


def read_weights(path: str) -> dict[str, np.ndarray]:
    """The HF state dict in `path` (safetensors, sharded safetensors or pytorch_model.bin), float32."""
    single = os.path.join(path, SAFETENSORS_FILE)
    index = os.path.join(path, SAFETENSORS_INDEX_FILE)
    if os.path.isfile(single):
        weights = _read_safetensors(single)
    elif os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        weights = {}
        for shard in shards:
            weights.update(_read_safetensors(os.path.join(path, shard)))
    elif os.path.isfile(os.path.join(path, TORCH_FILE)):
        weights = _read_torch(os.path.join(path, TORCH_FILE))
    else:
        raise HFError(
            f"{path}: no model.safetensors or pytorch_model.bin; flaxlm reads torch-format HF weights only "
            "(save the model with transformers' save_pretrained)"
        )
    out = {}
    for name, w in weights.items():
        # Old BERT checkpoints name LayerNorm parameters gamma/beta.
        if ".LayerNorm." in name:
            name = name.replace(".gamma", ".weight").replace(".beta", ".bias")
        out[name] = w.astype(np.float32) if np.issubdtype(w.dtype, np.floating) else w
    return out


# ----------------------------------------------------------------------------- configs


def _base_model_cfg() -> dict:
    from flaxlm.config import base_config

    return base_config().model.to_dict()


def _architecture(hf_config: dict, supported: tuple[str, ...], source: str) -> str | None:
    archs = hf_config.get("architectures") or []
    if archs and archs[0] not in supported:
        raise HFError(
            f"{source}: architecture {archs[0]!r} is not supported; flaxlm imports "
            f"{', '.join(supported)} (convert the model to one of these, or load its base model)"
        )
    return archs[0] if archs else None


def _activation(name: str, source: str) -> str:
    if name not in _FROM_HF_ACTIVATION:
        raise HFError(
            f"{source}: activation {name!r} is not supported; flaxlm has {sorted(_FROM_HF_ACTIVATION)}"
        )
    return _FROM_HF_ACTIVATION[name]


def _bert_model_cfg(hf: dict, source: str) -> dict:
    """config.json of HF BERT -> our model fields (HF BertConfig's defaults for absent keys)."""
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise HFError(
            f"{source}: position_embedding_type={hf['position_embedding_type']!r} is not supported; "
            "flaxlm imports BERTs with 'absolute' (learned) position embeddings"
        )
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        raise HFError(f"{source}: a BERT decoder (is_decoder/add_cross_attention) is not supported")
    cfg = _base_model_cfg()
    cfg.update(
        arch="bert",
        vocab_size=hf.get("vocab_size", 30522),
        hidden_size=hf.get("hidden_size", 768),
        num_layers=hf.get("num_hidden_layers", 12),
        num_heads=hf.get("num_attention_heads", 12),
        mlp_dim=hf.get("intermediate_size", 3072),
        max_len=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        dropout_rate=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout_rate=hf.get("attention_probs_dropout_prob", 0.1),
        pre_ln=False,
        position_embedding="learned",
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        activation=_activation(hf.get("hidden_act", "gelu"), source),
        initializer_range=hf.get("initializer_range", 0.02),
    )
    return cfg


def _gpt_model_cfg(hf: dict, source: str) -> dict:
    """config.json of HF GPT-2 -> our model fields (HF GPT2Config's defaults for absent keys)."""
    for key, expected in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False)):
        if hf.get(key, expected) != expected:
            raise HFError(
                f"{source}: {key}={hf[key]} is not supported; flaxlm's GPT-2 needs {key}={expected}"
            )
    if hf.get("add_cross_attention"):
        raise HFError(f"{source}: GPT-2 with cross-attention (add_cross_attention) is not supported")
    hidden = hf.get("n_embd", 768)
    cfg = _base_model_cfg()
    cfg.update(
        arch="gpt",
        vocab_size=hf.get("vocab_size", 50257),
        hidden_size=hidden,
        num_layers=hf.get("n_layer", 12),
        num_heads=hf.get("n_head", 12),
        mlp_dim=hf.get("n_inner") or 4 * hidden,
        max_len=hf.get("n_positions", 1024),
        type_vocab_size=0,  # GPT-2 has no token-type embeddings
        # GPT-2 has separate embedding and residual dropout rates; ours has one (the residual one).
        dropout_rate=hf.get("resid_pdrop", 0.1),
        attention_dropout_rate=hf.get("attn_pdrop", 0.1),
        pre_ln=True,
        position_embedding="learned",
        layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        activation=_activation(hf.get("activation_function", "gelu_new"), source),
        initializer_range=hf.get("initializer_range", 0.02),
        pair_head=False,
    )
    return cfg


def _bert_hf_config(cfg: dict, architecture: str, pad_id: int) -> dict:
    return {
        "architectures": [architecture],
        "model_type": "bert",
        "vocab_size": cfg["vocab_size"],
        "hidden_size": cfg["hidden_size"],
        "num_hidden_layers": cfg["num_layers"],
        "num_attention_heads": cfg["num_heads"],
        "intermediate_size": cfg["mlp_dim"],
        "hidden_act": _TO_HF_ACTIVATION[cfg["activation"]],
        "hidden_dropout_prob": cfg["dropout_rate"],
        "attention_probs_dropout_prob": cfg["attention_dropout_rate"],
        "max_position_embeddings": cfg["max_len"],
        "type_vocab_size": cfg["type_vocab_size"],
        "initializer_range": cfg["initializer_range"],
        "layer_norm_eps": cfg["layer_norm_eps"],
        "position_embedding_type": "absolute",
        "pad_token_id": pad_id,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }


def _gpt_hf_config(cfg: dict, eos_id: int | None) -> dict:
    config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg["vocab_size"],
        "n_embd": cfg["hidden_size"],
        "n_layer": cfg["num_layers"],
        "n_head": cfg["num_heads"],
        "n_inner": cfg["mlp_dim"],
        "n_positions": cfg["max_len"],
        "activation_function": _TO_HF_ACTIVATION[cfg["activation"]],
        "resid_pdrop": cfg["dropout_rate"],
        "embd_pdrop": cfg["dropout_rate"],
        "attn_pdrop": cfg["attention_dropout_rate"],
        "layer_norm_epsilon": cfg["layer_norm_eps"],
        "initializer_range": cfg["initializer_range"],
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }
    if eos_id is not None:
        config.update(bos_token_id=eos_id, eos_token_id=eos_id)
    return config


def heads_of(model_cfg: dict, params) -> list[str]:
    """What a BERT's params hold besides the encoder: a subset of ["pooler", "mlm", "pair"]; GPT: ["lm"]."""
    if model_cfg["arch"] == "gpt":
        return ["lm"]  # tied to the word embeddings, so always there
    present = {
        "pooler": "pooler" in params["encoder"],
        "mlm": "mlm_bias" in params,
        "pair": "pair_head" in params,
    }
    return [name for name, there in present.items() if there]


def objective_of(model_cfg: dict) -> str:
    """The flaxlm objective whose heads match: "clm" (gpt), "mlm_nsp" (BERT with a pair head), "mlm"."""
    if model_cfg["arch"] == "gpt":
        return "clm"
    return "mlm_nsp" if model_cfg.get("pair_head") else "mlm"


# ----------------------------------------------------------------------------- shape check


def _dummy_inputs(model_cfg: dict) -> tuple:
    z = np.zeros((1, 8), np.int32)
    return (z, z, z) if model_cfg["arch"] == "gpt" else (z, z, z, z)


def _check_shapes(model_cfg: dict, params, source: str) -> None:
    """Every array in `params` has the shape flaxlm's model of `model_cfg` gives it (heads may be absent)."""
    import jax

    from flaxlm import models

    model = models.get_model(model_cfg)
    expected = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), *_dummy_inputs(model_cfg), deterministic=True)
    )["params"]
    flat_expected = {
        jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(expected)
    }
    for key, value in jax.tree_util.tree_leaves_with_path(params):
        name = jax.tree_util.keystr(key)
        if name not in flat_expected:
            raise HFError(f"{source}: parameter {name} does not exist in flaxlm's {model_cfg['arch']} model")
        if tuple(np.shape(value)) != tuple(flat_expected[name]):
            raise HFError(
                f"{source}: parameter {name} has shape {tuple(np.shape(value))} but the config implies "
                f"{tuple(flat_expected[name])}; the weights do not match the config"
            )


# ----------------------------------------------------------------------------- tokenizers


def _hf_tokenizer(path: str, arch: str) -> Tokenizer | None:
    """The tokenizer in an HF directory, or None when it has none flaxlm reads."""
    from flaxlm.data import bpe

    tok_config = {}
    tok_config_file = os.path.join(path, TOKENIZER_CONFIG_FILE)
    if os.path.isfile(tok_config_file):
        with open(tok_config_file, encoding="utf-8") as f:
            tok_config = json.load(f)
    if os.path.isfile(os.path.join(path, SPM_FILE)):  # written by save_hf for flaxlm-trained models
        return SentencePieceTokenizer(os.path.join(path, SPM_FILE))
    if arch == "bert":
        vocab = os.path.join(path, "vocab.txt")
        if not os.path.isfile(vocab):
            return None
        lowercase = bool(tok_config.get("do_lower_case", True))
        strip_accents = tok_config.get("strip_accents")
        if strip_accents is not None and strip_accents != lowercase:
            raise HFError(
                f"{tok_config_file}: strip_accents={strip_accents} with do_lower_case={lowercase} is not "
                "supported (flaxlm strips accents exactly when it lowercases); remove the tokenizer files "
                "to import the weights alone"
            )
        if not tok_config.get("tokenize_chinese_chars", True) or not tok_config.get(
            "do_basic_tokenize", True
        ):
            raise HFError(
                f"{tok_config_file}: tokenize_chinese_chars/do_basic_tokenize=false is not supported; "
                "remove the tokenizer files to import the weights alone"
            )
        return WordPieceTokenizer(vocab, lowercase=lowercase)
    for name in ("vocab.json", "encoder.json", "tokenizer.json"):
        if os.path.isfile(os.path.join(path, name)):
            return bpe.ByteLevelBPETokenizer.from_path(os.path.join(path, name))
    return None


def save_tokenizer(tok: Tokenizer, directory: str) -> str:
    """Writes `tok`'s files into `directory` in a form both flaxlm and transformers read.

    Returns the file to give `flaxlm.data.tokenizer.load_tokenizer` (or --config.data.tokenizer):
    vocab.txt (WordPiece), spiece.model (sentencepiece) or vocab.json (+ merges.txt, GPT-2 BPE).
    """
    from flaxlm.data import bpe

    os.makedirs(directory, exist_ok=True)
    if isinstance(tok, WordPieceTokenizer):
        dest = os.path.join(directory, "vocab.txt")
        _copy(tok.vocab_path, dest)
    elif isinstance(tok, SentencePieceTokenizer):
        dest = os.path.join(directory, SPM_FILE)
        _copy(tok.model_path, dest)
    elif isinstance(tok, bpe.ByteLevelBPETokenizer):
        dest = tok.save(directory)[0]
    else:
        raise HFError(f"cannot save a {type(tok).__name__} in Hugging Face format")
    return dest


def _copy(src: str, dest: str) -> None:
    if os.path.abspath(src) != os.path.abspath(dest):
        shutil.copyfile(src, dest)


def _tokenizer_config(tok: Tokenizer, max_len: int) -> dict:
    """tokenizer_config.json telling transformers' AutoTokenizer how to read the saved files."""
    from flaxlm.data import bpe

    if isinstance(tok, bpe.ByteLevelBPETokenizer):
        eot = bpe.END_OF_TEXT
        return {
            "tokenizer_class": "GPT2Tokenizer",
            "add_prefix_space": False,
            "bos_token": eot,
            "eos_token": eot,
            "unk_token": eot,
            "model_max_length": max_len,
        }
    specials = {
        "unk_token": "[UNK]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
        "model_max_length": max_len,
    }
    if isinstance(tok, WordPieceTokenizer):
        return {"tokenizer_class": "BertTokenizer", "do_lower_case": tok.lowercase, **specials}
    # Sentencepiece: BigBirdTokenizer encodes with the model as is (no extra normalisation) and builds
    # [CLS] A [SEP] B [SEP]; token_type_ids are not in its default outputs, so ask for them.
    return {
        "tokenizer_class": "BigBirdTokenizer",
        "bos_token": "[CLS]",
        "eos_token": "[SEP]",
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
        **specials,
    }


# ----------------------------------------------------------------------------- public API


def load_hf(path: str) -> tuple[dict, Any, Tokenizer | None]:
    """Reads an HF BERT or GPT-2 directory: returns (model_cfg, params, tokenizer).

    model_cfg: a plain dict of flaxlm config.model fields (plus pair_head), ready
    for `flaxlm.models.get_model`. params: the nested dict of float32 numpy
    arrays that model's `apply({"params": params}, ...)` takes; for a BERT
    without MLM head (BertModel) only {"encoder": ...} (see the module
    docstring). tokenizer: a flaxlm Tokenizer of the directory's tokenizer
    files, or None when there are none.
    """
    path = os.fspath(path)
    hf_config = _read_config(path)
    source = os.path.join(path, CONFIG_FILE)
    model_type = hf_config.get("model_type")
    if model_type == "bert":
        _architecture(hf_config, BERT_ARCHITECTURES, source)
        model_cfg = _bert_model_cfg(hf_config, source)
        weights = read_weights(path)
        prefix = "bert." if any(k.startswith("bert.") for k in weights) else ""
        pooler = f"{prefix}pooler.dense.weight" in weights
        mlm = "cls.predictions.bias" in weights
        pair = "cls.seq_relationship.weight" in weights
        if pair and not pooler:
            raise HFError(
                f"{path}: the checkpoint has an NSP head but no pooler; it is not a BertForPreTraining"
            )
        rules = bert_weights(model_cfg["num_layers"], prefix=prefix, pooler=pooler, mlm=mlm, pair=pair)
        model_cfg.update(pooler=pooler, pair_head=pair)
        tied = {"cls.predictions.decoder.weight": f"{prefix}embeddings.word_embeddings.weight"}
        ignored = {"cls.predictions.decoder.bias"}  # the same Parameter as cls.predictions.bias
    elif model_type == "gpt2":
        _architecture(hf_config, GPT_ARCHITECTURES, source)
        model_cfg = _gpt_model_cfg(hf_config, source)
        weights = read_weights(path)
        prefix = "transformer." if any(k.startswith("transformer.") for k in weights) else ""
        rules = gpt_weights(model_cfg["num_layers"], prefix=prefix)
        tied = {"lm_head.weight": f"{prefix}wte.weight"}
        ignored = set()
    else:
        raise HFError(
            f"{source}: model_type {model_type!r} is not supported; flaxlm imports 'bert' "
            f"({', '.join(BERT_ARCHITECTURES)}) and 'gpt2' ({', '.join(GPT_ARCHITECTURES)})"
        )

    for name, tied_to in tied.items():
        if name in weights and tied_to in weights and not np.array_equal(weights[name], weights[tied_to]):
            raise HFError(
                f"{path}: {name} differs from {tied_to}; flaxlm ties the output projection to the word "
                "embeddings, so untied checkpoints are not supported"
            )
    known = {r.hf for r in rules} | set(tied) | ignored
    unexpected = sorted(k for k in weights if k not in known and not k.endswith(_BUFFER_SUFFIXES))
    if unexpected:
        more = f" and {len(unexpected) - 3} more" if len(unexpected) > 3 else ""
        raise HFError(
            f"{path}: unexpected weights {unexpected[:3]}{more}; only "
            f"{', '.join(BERT_ARCHITECTURES + GPT_ARCHITECTURES)} checkpoints are supported"
        )
    params = _to_flaxlm(weights, rules, path)
    _check_shapes(model_cfg, params, path)

    tok = _hf_tokenizer(path, model_cfg["arch"])
    if tok is not None and tok.vocab_size > model_cfg["vocab_size"]:
        raise HFError(
            f"{path}: the tokenizer has {tok.vocab_size} tokens but the model's vocab_size is "
            f"{model_cfg['vocab_size']}; the tokenizer files belong to another model"
        )
    return model_cfg, params, tok


def save_hf(path: str, model_cfg: dict, params, tokenizer: Tokenizer | None = None) -> None:
    """Writes config.json + model.safetensors (+ tokenizer files) that transformers' from_pretrained loads.

    The HF class follows the heads in `params`: BERT with a pair head ->
    BertForPreTraining; with an MLM head only -> BertForMaskedLM (which ignores
    the pooler; load_hf keeps it); encoder only -> BertModel; GPT ->
    GPT2LMHeadModel. Sinusoidal position tables are written as HF's learned
    position embeddings (same values; a reload gives position_embedding
    "learned"). BERT with pre_ln=True has no HF equivalent and is refused.
    """
    import jax

    from flaxlm.models import layers

    path = os.fspath(path)
    model_cfg = dict(model_cfg)
    arch = model_cfg.get("arch")
    params = jax.device_get(params)
    if arch not in ("bert", "gpt"):
        raise HFError(f"model arch {arch!r} cannot be saved in Hugging Face format; expected 'bert' or 'gpt'")
    if model_cfg.get("activation", "gelu") not in _TO_HF_ACTIVATION:
        raise HFError(f"activation {model_cfg['activation']!r} has no Hugging Face equivalent")
    base = _base_model_cfg()
    model_cfg = {**base, **model_cfg}
    if arch == "bert":
        model_cfg["pooler"] = "pooler" in params["encoder"]
        model_cfg["pair_head"] = "pair_head" in params
    _check_shapes(model_cfg, params, f"the {arch} parameters")
    if model_cfg["position_embedding"] == "sinusoidal":
        table = layers.sinusoidal_table(model_cfg["max_len"], model_cfg["hidden_size"])
        params = {k: dict(v) if isinstance(v, dict) else v for k, v in params.items()}
        where = params["encoder"] if arch == "bert" else params
        where["position_embeddings"] = {"embedding": table}
    if tokenizer is not None and tokenizer.vocab_size > model_cfg["vocab_size"]:
        raise HFError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
            f"{model_cfg['vocab_size']}; pass the tokenizer the model was trained with"
        )

    if arch == "bert":
        if model_cfg["pre_ln"]:
            raise HFError(
                "a pre_ln=True BERT has no Hugging Face equivalent (HF BERT is post-LN); "
                "only post-LN BERTs can be saved in HF format"
            )
        mlm, pair, pooler = "mlm_bias" in params, model_cfg["pair_head"], model_cfg["pooler"]
        architecture = "BertForPreTraining" if pair else "BertForMaskedLM" if mlm else "BertModel"
        prefix = "" if architecture == "BertModel" else "bert."
        rules = bert_weights(model_cfg["num_layers"], prefix=prefix, pooler=pooler, mlm=mlm, pair=pair)
        hf_config = _bert_hf_config(model_cfg, architecture, tokenizer.pad_id if tokenizer else 0)
    else:
        rules = gpt_weights(model_cfg["num_layers"], prefix="transformer.")
        hf_config = _gpt_hf_config(model_cfg, tokenizer.sep_id if tokenizer else None)
    weights = _to_hf(params, rules)

    try:
        from safetensors.numpy import save_file
    except ImportError:
        raise HFError(
            "saving in Hugging Face format needs the 'safetensors' package; pip install 'flaxlm[hf]'"
        ) from None
    from flaxlm.checkpoint import check_writable

    check_writable(path, "the HF output directory")
    tmp = os.path.join(path, f".{SAFETENSORS_FILE}.tmp-{os.getpid()}")
    save_file(weights, tmp, metadata={"format": "pt"})  # "pt": the layout transformers' torch models read
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors creates the file owner-only; give it the usual mode
    os.replace(tmp, os.path.join(path, SAFETENSORS_FILE))
    _write_json(os.path.join(path, CONFIG_FILE), hf_config)
    if tokenizer is not None:
        save_tokenizer(tokenizer, path)
        _write_json(
            os.path.join(path, TOKENIZER_CONFIG_FILE), _tokenizer_config(tokenizer, model_cfg["max_len"])
        )


def _write_json(file: str, obj) -> None:
    tmp = f"{file}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, file)


# ----------------------------------------------------------------------------- CLI operations


def import_hf(hf_dir: str, out: str) -> dict:
    """`flaxlm import-hf`: an HF directory -> a flaxlm export (OUT/params.msgpack + OUT/model_config.json).

    The tokenizer files go beside them; model_config.json names the one to give
    --config.data.tokenizer ("tokenizer", relative to OUT; null when the HF
    directory has none) and lists the heads the checkpoint has ("heads", see
    `heads_of`). The objective is the one those heads fit (`objective_of`:
    "mlm" also for an encoder alone); step is 0. Returns the model_config.json dict.
    """
    from flaxlm import checkpoint as ckpt

    model_cfg, params, tok = load_hf(hf_dir)
    meta = {
        "model": model_cfg,
        "objective": objective_of(model_cfg),
        "step": 0,
        "hf_dir": os.path.abspath(hf_dir),
        "heads": heads_of(model_cfg, params),
        "tokenizer": None,
    }
    if tok is not None:
        ckpt.check_writable(out, "--out")
        meta["tokenizer"] = os.path.basename(save_tokenizer(tok, out))
        if isinstance(tok, WordPieceTokenizer):
            meta["tokenizer_lowercase"] = tok.lowercase
    ckpt.write_export(out, params, meta)
    return meta


def workdir_tokenizer(config: dict) -> Tokenizer | None:
    """The tokenizer a training run with this saved config.json used, or None if it is not on this machine.

    Either the configured file (config.data.tokenizer) or the sentencepiece
    model `flaxlm train` trained and cached in the data dir. Never trains one.
    """
    from flaxlm.data import corpus as corpus_lib
    from flaxlm.data import prepare as prepare_lib
    from flaxlm.data import tokenizer as tokenizer_lib

    data = config.get("data", {})
    if data.get("tokenizer"):
        path = data["tokenizer"]
    else:
        data_dir = data.get("data_dir") or prepare_lib.default_data_dir()
        try:
            fingerprint = corpus_lib.corpus_fingerprint(data.get("corpus", "default"))
        except FlaxlmError:  # the corpus files are gone, so the cache key cannot be rebuilt
            return None
        path = tokenizer_lib.spm_cache_path(
            os.path.join(data_dir, "tokenizers"),
            config["model"]["vocab_size"],
            data.get("tokenizer_type", "unigram"),
            fingerprint,
        )
    return tokenizer_lib.load_tokenizer(path) if os.path.isfile(path) else None


def export_workdir(workdir: str, out: str, step: int | None = None) -> tuple[int, Tokenizer | None]:
    """`flaxlm export --format=hf`: checkpoint `step` (default: the latest) of a run -> an HF directory.

    Returns (step, the tokenizer written or None when the run's tokenizer was not found).
    """
    from flaxlm import checkpoint as ckpt
    from flaxlm import objectives

    params, step, saved = ckpt.restore_params(workdir, step)
    model_cfg = dict(saved["model"])
    model_cfg["pair_head"] = objectives.has_pair_head(saved["objective"])
    tok = workdir_tokenizer(saved)
    save_hf(out, model_cfg, params, tok)
    return step, tok
