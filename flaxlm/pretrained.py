"""Where fine-tuning starts: a pretrained backbone, its model config and its tokenizer, from one path.

`load(path)` accepts:
  a `flaxlm train` workdir   (has checkpoints/): the latest checkpoint's params and saved config
  a `flaxlm export` folder   (has params.msgpack): flaxlm.checkpoint.load_params
  a Hugging Face model dir   (flaxlm.hf.is_hf_dir): flaxlm.hf.load_hf

For flaxlm checkpoints the tokenizer is the one pretraining used, found as
`flaxlm train` finds it (flaxlm.data.prepare.get_tokenizer): the saved
config's data.tokenizer file, else the sentencepiece model trained on the
saved data.corpus, cached under data.data_dir (or $FLAXLM_DATA_DIR or
~/.cache/flaxlm) and retrained (deterministically, the same bytes) if that
cache is gone. `tokenizer=PATH` overrides it.
"""

import contextlib
import dataclasses
import os
from typing import Any

import ml_collections
from absl import logging as absl_logging

from flaxlm import checkpoint as ckpt
from flaxlm.errors import ConfigError, FlaxlmError
from flaxlm.models.heads import BACKBONE


@dataclasses.dataclass
class Pretrained:
    arch: str  # "bert" | "gpt"
    model: dict  # config.model fields: arch + flaxlm.models.TransformerConfig fields
    backbone: dict  # the BertEncoder (bert) or GPTDecoder (gpt) params, nested dicts of arrays
    tokenizer: Any  # flaxlm.data.tokenizer.Tokenizer
    source: str  # for logs and results: "flaxlm workdir /x (step 600)"


def _tokenizer_from_data_config(data: dict | None, vocab_size: int, where: str):
    from flaxlm.data import prepare as prepare_lib
    from flaxlm.data import tokenizer as tokenizer_lib

    if not data:
        raise ConfigError(
            f"{where} records no data config to find its tokenizer; pass "
            "--config.tokenizer=PATH (the sentencepiece .model or vocab.txt it was pretrained with)"
        )
    data_cfg = ml_collections.ConfigDict(data)
    if data_cfg.get("tokenizer") and not os.path.exists(data_cfg.tokenizer):
        raise ConfigError(
            f"the tokenizer {data_cfg.tokenizer} that {where} was pretrained with is missing; "
            "pass --config.tokenizer=PATH"
        )
    data_dir = data_cfg.get("data_dir") or prepare_lib.default_data_dir()
    try:
        return prepare_lib.get_tokenizer(data_cfg, vocab_size, data_dir)
    except tokenizer_lib.TokenizerError:
        raise
    except FlaxlmError as e:  # e.g. the pretraining corpus is not on this machine
        raise ConfigError(
            f"cannot rebuild the tokenizer {where} was pretrained with ({e}); pass --config.tokenizer=PATH"
        ) from None


def _backbone(arch: str, params: dict, where: str) -> dict:
    """The backbone subtree: BertForPreTraining's "encoder"; all of GPTDecoder's params."""
    name = BACKBONE[arch]
    if name in params:
        return params[name]
    if "word_embeddings" in params:
        return params
    raise ConfigError(f"{where} has no {arch} backbone parameters (no '{name}' or 'word_embeddings')")


def load(path: str, tokenizer: str = "") -> Pretrained:
    """The backbone, model config and tokenizer at `path`; `tokenizer` (a file) overrides the tokenizer."""
    from flaxlm.data import tokenizer as tokenizer_lib

    if not os.path.exists(path):
        raise ConfigError(f"--init={path} does not exist; give a flaxlm workdir, export or HF model dir")
    if os.path.isdir(os.path.join(path, "checkpoints")):
        with _quiet_absl():  # orbax warns that a read-only manager does not save
            params, step, saved = ckpt.restore_params(path)
        model, data, where = dict(saved["model"]), saved.get("data"), f"flaxlm workdir {path} (step {step})"
        tok = None
    elif os.path.isfile(os.path.join(path, ckpt.PARAMS_FILE)) or path.endswith(ckpt.PARAMS_FILE):
        params, meta = ckpt.load_params(path)
        model, data = dict(meta["model"]), meta.get("data")
        where = f"flaxlm export {path} (step {meta.get('step', '?')})"
        tok = None
    elif os.path.isfile(os.path.join(path, "config.json")):
        hf = _hf_module(path)
        if not hf.is_hf_dir(path):
            raise ConfigError(
                f"--init={path} has a config.json but is not a Hugging Face BERT/GPT-2 model dir"
            )
        model, params, tok = hf.load_hf(path)
        model, data, where = dict(model), None, f"HF model {path}"
    else:
        raise ConfigError(
            f"--init={path} is neither a flaxlm workdir (checkpoints/), a flaxlm export "
            "(params.msgpack) nor a Hugging Face model dir (config.json)"
        )
    model.pop("pair_head", None)  # a pretraining-head switch; the fine-tuning model has its own heads
    arch = model.get("arch")
    if arch not in BACKBONE:
        raise ConfigError(f"{where}: model.arch={arch!r}; expected 'bert' or 'gpt'")
    if tokenizer:
        tok = tokenizer_lib.load_tokenizer(tokenizer)
    elif tok is None:
        tok = _tokenizer_from_data_config(data, model["vocab_size"], where)
    # HF embedding tables may have spare rows (GPT-2's are often padded); flaxlm's match exactly.
    hf_padded = where.startswith("HF") and not tokenizer and tok.vocab_size < model["vocab_size"]
    if tok.vocab_size != model["vocab_size"] and not hf_padded:
        raise ConfigError(
            f"the tokenizer ({getattr(tok, 'model_path', None) or getattr(tok, 'vocab_path', tok)}) has "
            f"{tok.vocab_size} tokens but {where} has vocab_size {model['vocab_size']}; "
            "pass --config.tokenizer=PATH with the tokenizer it was pretrained with"
        )
    return Pretrained(
        arch=arch, model=model, backbone=_backbone(arch, params, where), tokenizer=tok, source=where
    )


def _hf_module(path: str):
    """flaxlm.hf, imported only for HF dirs (it needs the optional [hf] extra)."""
    try:
        from flaxlm import hf
    except ImportError as e:
        raise ConfigError(
            f"--init={path} looks like a Hugging Face model dir, but HF import is unavailable ({e}); "
            "pip install 'flaxlm[hf]'"
        ) from None
    return hf


@contextlib.contextmanager
def _quiet_absl():
    level = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(level)
