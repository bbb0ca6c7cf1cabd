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
cache is gone. `tokenizer=PATH` overrides it. Reading the three formats is
flaxlm.lm.read's job, shared with generation and scoring.
"""

import dataclasses
from typing import Any

from flaxlm import lm as lm_lib
from flaxlm.errors import ConfigError
from flaxlm.models.heads import BACKBONE


@dataclasses.dataclass
class Pretrained:
    arch: str  # "bert" | "gpt" | "t5"
    model: dict  # config.model fields: arch + flaxlm.models.TransformerConfig fields
    backbone: dict  # the BertEncoder (bert), GPTDecoder (gpt) or whole T5 (t5) params, nested dicts of arrays
    tokenizer: Any  # flaxlm.data.tokenizer.Tokenizer
    source: str  # for logs and results: "flaxlm workdir /x (step 600)"


def _backbone(arch: str, params: dict, where: str) -> dict:
    """The backbone subtree: BertForPreTraining's "encoder"; all of GPTDecoder's or T5's params."""
    name = BACKBONE[arch]
    if arch == "t5":  # the whole encoder-decoder is what fine-tuning starts from
        if "shared" not in params:
            raise ConfigError(f"{where} has no t5 parameters (no 'shared' embedding)")
        return params
    if name in params:
        return params[name]
    if "word_embeddings" in params:
        return params
    raise ConfigError(f"{where} has no {arch} backbone parameters (no '{name}' or 'word_embeddings')")


def load(path: str, tokenizer: str = "") -> Pretrained:
    """The backbone, model config and tokenizer at `path`; `tokenizer` (a file) overrides the tokenizer."""
    found = lm_lib.read(path, tokenizer, flag="--init", tokenizer_flag="--config.tokenizer")
    model, tok, where = dict(found.model_cfg), found.tokenizer, found.source
    model.pop("pair_head", None)  # a pretraining-head switch; the fine-tuning model has its own heads
    if not model.get("pooler", True):
        # TransformerConfig's default pair_head needs a pooler, which a GPT, T5 or ELECTRA trained
        # without one lacks (T5_SWITCHES have it so).
        model["pair_head"] = False
    arch = model.get("arch")
    if arch not in BACKBONE:
        raise ConfigError(f"{where}: model.arch={arch!r}; expected 'bert', 'gpt' or 't5'")
    # HF embedding tables may have spare rows (GPT-2's are often padded); flaxlm's match exactly,
    # except T5's, whose last ids are the span-corruption sentinels the tokenizer does not have.
    spare_rows = (found.is_hf and not tokenizer) or arch == "t5"
    if tok.vocab_size != model["vocab_size"] and not (spare_rows and tok.vocab_size < model["vocab_size"]):
        raise ConfigError(
            f"the tokenizer ({tok.path}) has "
            f"{tok.vocab_size} tokens but {where} has vocab_size {model['vocab_size']}; "
            "pass --config.tokenizer=PATH with the tokenizer it was pretrained with"
        )
    return Pretrained(
        arch=arch, model=model, backbone=_backbone(arch, found.params, where), tokenizer=tok, source=where
    )
