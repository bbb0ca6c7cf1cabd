"""A trained language model ready for inference (generation, scoring): model, params and tokenizer.

`load(path)` accepts
  - a `flaxlm train` workdir (it has checkpoints/): the latest checkpoint's params
    (flaxlm.checkpoint.restore_params) and its saved config;
  - a `flaxlm export` folder (params.msgpack + model_config.json): flaxlm.checkpoint.load_params;
    a `flaxlm finetune` seed folder of a generation task is one too (its LM is the backbone, soft
    prompt or prefixes included; it records no tokenizer, so pass `tokenizer`);
  - a Hugging Face BERT / GPT-2 folder: flaxlm.hf.load_hf (imported only for such a folder).

The tokenizer of a flaxlm checkpoint is the one pretraining used, found the
way `flaxlm train` finds it (flaxlm.data.prepare.get_tokenizer): the saved
config's data.tokenizer file, else the sentencepiece model trained on
data.corpus and cached in data.data_dir (or $FLAXLM_DATA_DIR, or
~/.cache/flaxlm); that training is deterministic, so if the cache is gone
the same model is trained again from the corpus. An export finds it from the
data config or tokenizer file its model_config.json records. `tokenizer=PATH`
(a sentencepiece .model or WordPiece vocab.txt) overrides all of these.
"""

import contextlib
import dataclasses
import os
from typing import Any

import flax.linen as nn
from absl import logging as absl_logging

from flaxlm import models
from flaxlm import objectives
from flaxlm import tokenizer_pin
from flaxlm.data import tokenizer as tokenizer_lib
from flaxlm.errors import ConfigError, FlaxlmError


@dataclasses.dataclass
class LM:
    model: nn.Module  # GPTDecoder (arch "gpt") or BertForPreTraining (arch "bert")
    params: Any  # nested dicts of arrays: model.apply({"params": params}, ...)
    tokenizer: tokenizer_lib.Tokenizer
    arch: str
    source: str  # for messages: "flaxlm workdir /x (step 600)"
    # Prepended when scoring a sentence, so that its first token is scored too: GPT-2 saw
    # <|endoftext|> before every document. None for flaxlm decoders, whose packed documents never
    # attend across the separator: their first token has no context and is not scored.
    bos_id: int | None = None

    @property
    def config(self) -> models.TransformerConfig:
        return self.model.config


@dataclasses.dataclass
class Checkpoint:
    """What `read` finds at a path, before anyone builds a model from it."""

    model_cfg: dict  # config.model fields: arch + flaxlm.models.TransformerConfig fields (+ pair_head)
    params: Any  # the whole model's params, nested dicts of arrays
    tokenizer: tokenizer_lib.Tokenizer
    source: str  # for messages: "flaxlm workdir /x (step 600)", "HF model /y"
    is_hf: bool  # read from a Hugging Face model dir (its tokenizer files, its padded vocabulary)


def read(
    path: str, tokenizer: str = "", flag: str = "--model", tokenizer_flag: str = "--tokenizer"
) -> Checkpoint:
    """The params, model config and tokenizer at `path` (a workdir, an export or an HF dir).

    `tokenizer` (a file) overrides the tokenizer. `flag` and `tokenizer_flag` name the caller's
    options in error messages (`flaxlm finetune` says --init and --config.tokenizer).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ConfigError(
            f"{flag}={path} does not exist; give a flaxlm train workdir, export or HF model dir"
        )

    def missing_tokenizer(why: str):
        raise tokenizer_lib.TokenizerError(
            f"{why}; pass {tokenizer_flag}=PATH "
            "(the sentencepiece .model or vocab.txt the model was trained with)"
        )

    tok, is_hf = None, False
    given = None  # the `tokenizer` file, once read
    if os.path.isdir(os.path.join(path, "checkpoints")):
        from flaxlm import checkpoint as ckpt

        with _quiet_absl():  # orbax warns that a read-only manager does not save
            params, step, saved = ckpt.restore_params(path)
        model_cfg = dict(saved["model"], pair_head=objectives.has_pair_head(saved["objective"]))
        source = f"flaxlm workdir {path} (step {step})"
        pinned = tokenizer_pin.pinned(path)
        if tokenizer and pinned:
            given = tokenizer_lib.load_tokenizer(tokenizer)
            tokenizer_pin.check_given(path, pinned, given, tokenizer_flag)
        if pinned:
            tok = pinned
        find_tokenizer = lambda: _tokenizer_of_data_config(
            saved.get("data"), model_cfg["vocab_size"], source, missing_tokenizer
        )
    elif os.path.isdir(os.path.join(path, "seed_0", "checkpoints")):
        raise ConfigError(
            f"{flag}={path} holds one workdir per seed (config.train.num_seeds > 1); "
            f"pass one of them: {os.path.join(path, 'seed_0')}, seed_1, ..."
        )
    elif os.path.isfile(os.path.join(path, "params.msgpack")) or path.endswith("params.msgpack"):
        from flaxlm import checkpoint as ckpt

        params, meta = ckpt.load_params(path)
        model_cfg = dict(meta["model"])
        if meta.get("head") == "generation":  # flaxlm finetune's CausalLM / Seq2SeqLM: the LM is inside
            from flaxlm.models.heads import BACKBONE

            params = params[BACKBONE[model_cfg["arch"]]]
        folder = os.path.dirname(path) if path.endswith("params.msgpack") else path
        source = f"flaxlm export {folder} (step {meta.get('step', '?')})"
        find_tokenizer = lambda: _tokenizer_of_export(
            folder, meta, model_cfg["vocab_size"], source, missing_tokenizer
        )
    else:
        hf = _hf_module(path, flag)
        if not hf.is_hf_dir(path):
            raise ConfigError(
                f"{flag}={path} is neither a flaxlm train workdir (checkpoints/), a flaxlm export "
                "(params.msgpack) nor a Hugging Face BERT/GPT-2 model dir (config.json + weights)"
            )
        model_cfg, params, tok = hf.load_hf(path)
        model_cfg, is_hf = dict(model_cfg), True
        source = f"HF model {path}"
        find_tokenizer = lambda: missing_tokenizer(f"{source} has no tokenizer files flaxlm reads")

    if tokenizer:
        tok = given or tokenizer_lib.load_tokenizer(tokenizer)
    elif tok is None:
        tok = find_tokenizer()
    return Checkpoint(model_cfg=model_cfg, params=params, tokenizer=tok, source=source, is_hf=is_hf)


def load(path: str, tokenizer: str = "") -> LM:
    """The model, params and tokenizer at `path`; `tokenizer` (a file) overrides the tokenizer."""
    found = read(path, tokenizer)
    model_cfg, tok = found.model_cfg, found.tokenizer
    if tok.vocab_size > model_cfg["vocab_size"]:
        raise ConfigError(
            f"the tokenizer has {tok.vocab_size} tokens but {found.source} has vocab_size "
            f"{model_cfg['vocab_size']}; pass --tokenizer=PATH with the tokenizer the model was trained with"
        )
    bos_id = None
    if model_cfg.get("arch") == "gpt" and found.is_hf:
        from flaxlm import generate

        bos_id = generate.eos_id_of(tok)
    return LM(
        model=models.get_model(model_cfg),
        params=found.params,
        tokenizer=tok,
        arch=model_cfg["arch"],
        source=found.source,
        bos_id=bos_id,
    )


def _tokenizer_of_data_config(data: dict | None, vocab_size: int, source: str, missing_tokenizer):
    """The tokenizer `flaxlm train` used with this saved data config (trained again if not cached)."""
    import ml_collections

    from flaxlm.data import prepare as prepare_lib

    if not data:
        missing_tokenizer(f"{source} records no data config to find its tokenizer")
    data_cfg = ml_collections.ConfigDict(data)
    if data_cfg.get("tokenizer") and not os.path.isfile(data_cfg.tokenizer):
        missing_tokenizer(
            f"the tokenizer file {data_cfg.tokenizer} that {source} was trained with is missing"
        )
    data_dir = data_cfg.get("data_dir") or prepare_lib.default_data_dir()
    try:
        return prepare_lib.get_tokenizer(data_cfg, vocab_size, data_dir)
    except tokenizer_lib.TokenizerError:
        raise
    except FlaxlmError as e:  # the corpus it was trained on is not on this machine
        missing_tokenizer(f"cannot rebuild the tokenizer of {source} ({e})")


def _tokenizer_of_export(folder: str, meta: dict, vocab_size: int, source: str, missing_tokenizer):
    if meta.get("tokenizer"):  # a tokenizer file saved inside the export
        return tokenizer_lib.load_tokenizer(
            os.path.join(folder, meta["tokenizer"]), lowercase=meta.get("tokenizer_lowercase", True)
        )
    return _tokenizer_of_data_config(meta.get("data"), vocab_size, source, missing_tokenizer)


def _hf_module(path: str, flag: str):
    """flaxlm.hf, imported only for a folder that is not a flaxlm one (it needs the [hf] extra)."""
    try:
        from flaxlm import hf
    except ImportError as e:
        raise ConfigError(
            f"{flag}={path} is neither a flaxlm train workdir (checkpoints/) nor a flaxlm export "
            f"(params.msgpack), and reading Hugging Face model dirs needs the [hf] extra ({e}): "
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
