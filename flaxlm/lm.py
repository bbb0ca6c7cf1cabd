"""A trained language model ready for inference (generation, scoring): model, params and tokenizer.

`load(path)` accepts
  - a `flaxlm train` workdir (it has checkpoints/): the latest checkpoint's params
    (flaxlm.checkpoint.restore_params) and its saved config;
  - a `flaxlm export` folder (params.msgpack + model_config.json): flaxlm.checkpoint.load_params;
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

import dataclasses
import os
from typing import Any

import flax.linen as nn

from flaxlm import models
from flaxlm import objectives
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


def load(path: str, tokenizer: str = "") -> LM:
    """The model, params and tokenizer at `path`; `tokenizer` (a file) overrides the tokenizer."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ConfigError(
            f"--model={path} does not exist; give a flaxlm train workdir, export or HF model dir"
        )
    tok, bos_id = None, None
    if os.path.isdir(os.path.join(path, "checkpoints")):
        from flaxlm import checkpoint as ckpt

        params, step, saved = ckpt.restore_params(path)
        model_cfg = dict(saved["model"], pair_head=objectives.has_pair_head(saved["objective"]))
        source = f"flaxlm workdir {path} (step {step})"
        find_tokenizer = lambda: _tokenizer_of_data_config(saved.get("data"), model_cfg["vocab_size"], source)
    elif os.path.isfile(os.path.join(path, "params.msgpack")) or path.endswith("params.msgpack"):
        from flaxlm import checkpoint as ckpt

        params, meta = ckpt.load_params(path)
        model_cfg = dict(meta["model"])
        folder = os.path.dirname(path) if path.endswith("params.msgpack") else path
        source = f"flaxlm export {folder} (step {meta.get('step', '?')})"
        find_tokenizer = lambda: _tokenizer_of_export(folder, meta, model_cfg["vocab_size"], source)
    else:
        hf = _hf_module(path)
        if not hf.is_hf_dir(path):
            raise ConfigError(
                f"--model={path} is neither a flaxlm train workdir (checkpoints/), a flaxlm export "
                "(params.msgpack) nor a Hugging Face model dir (config.json + weights)"
            )
        model_cfg, params, tok = hf.load_hf(path)
        model_cfg = dict(model_cfg)
        source = f"HF model {path}"
        find_tokenizer = lambda: _missing_tokenizer(f"{source} has no tokenizer files flaxlm reads")

    if tokenizer:
        tok = tokenizer_lib.load_tokenizer(tokenizer)
    elif tok is None:
        tok = find_tokenizer()
    if tok.vocab_size > model_cfg["vocab_size"]:
        raise ConfigError(
            f"the tokenizer has {tok.vocab_size} tokens but {source} has vocab_size "
            f"{model_cfg['vocab_size']}; pass --tokenizer=PATH with the tokenizer the model was trained with"
        )
    if model_cfg.get("arch") == "gpt" and source.startswith("HF"):
        from flaxlm import generate

        bos_id = generate.eos_id_of(tok)
    model = models.get_model(model_cfg)
    return LM(model=model, params=params, tokenizer=tok, arch=model_cfg["arch"], source=source, bos_id=bos_id)


def _missing_tokenizer(why: str):
    raise tokenizer_lib.TokenizerError(
        f"{why}; pass --tokenizer=PATH (the sentencepiece .model or vocab.txt the model was trained with)"
    )


def _tokenizer_of_data_config(data: dict | None, vocab_size: int, source: str) -> tokenizer_lib.Tokenizer:
    """The tokenizer `flaxlm train` used with this saved data config (trained again if not cached)."""
    import ml_collections

    from flaxlm.data import prepare as prepare_lib

    if not data:
        _missing_tokenizer(f"{source} records no data config to find its tokenizer")
    data_cfg = ml_collections.ConfigDict(data)
    if data_cfg.get("tokenizer") and not os.path.isfile(data_cfg.tokenizer):
        _missing_tokenizer(
            f"the tokenizer file {data_cfg.tokenizer} that {source} was trained with is missing"
        )
    data_dir = data_cfg.get("data_dir") or prepare_lib.default_data_dir()
    try:
        return prepare_lib.get_tokenizer(data_cfg, vocab_size, data_dir)
    except tokenizer_lib.TokenizerError:
        raise
    except FlaxlmError as e:  # the corpus it was trained on is not on this machine
        _missing_tokenizer(f"cannot rebuild the tokenizer of {source} ({e})")


def _tokenizer_of_export(folder: str, meta: dict, vocab_size: int, source: str) -> tokenizer_lib.Tokenizer:
    if meta.get("tokenizer"):  # a tokenizer file saved inside the export
        return tokenizer_lib.load_tokenizer(
            os.path.join(folder, meta["tokenizer"]), lowercase=meta.get("tokenizer_lowercase", True)
        )
    return _tokenizer_of_data_config(meta.get("data"), vocab_size, source)


def _hf_module(path: str):
    """flaxlm.hf, imported only for a folder that is not a flaxlm one (it needs the [hf] extra)."""
    try:
        from flaxlm import hf
    except ImportError as e:
        raise ConfigError(
            f"--model={path} is neither a flaxlm train workdir (checkpoints/) nor a flaxlm export "
            f"(params.msgpack), and reading Hugging Face model dirs is unavailable ({e})"
        ) from None
    return hf
