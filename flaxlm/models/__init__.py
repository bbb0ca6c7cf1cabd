"""Model zoo: `get_model(model_cfg)` builds a BERT, ELECTRA, GPT or T5 module from a config."""

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from flaxlm.errors import ConfigError

from flaxlm.models.bert import BertEncoder, BertForPreTraining
from flaxlm.models.electra import ElectraForPreTraining
from flaxlm.models.gpt import GPTDecoder
from flaxlm.models.layers import TransformerConfig
from flaxlm.models.t5 import T5ForConditionalGeneration

__all__ = [
    "BertEncoder",
    "BertForPreTraining",
    "ElectraForPreTraining",
    "GPTDecoder",
    "T5ForConditionalGeneration",
    "TransformerConfig",
    "get_model",
]

_ARCHS = {"bert": BertForPreTraining, "gpt": GPTDecoder, "t5": T5ForConditionalGeneration}
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _to_dtype(name: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value  # Already a dtype (e.g. jnp.bfloat16).
    if value not in _DTYPES:
        raise ConfigError(f"model.{name}={value!r}; expected one of {list(_DTYPES)}")
    return _DTYPES[value]


def get_model(model_cfg: Mapping[str, Any]) -> nn.Module:
    """Builds BertForPreTraining (arch "bert"), ElectraForPreTraining (arch "bert" with
    generator_size > 0), GPTDecoder (arch "gpt") or T5ForConditionalGeneration ("t5").

    model_cfg: an ml_collections.ConfigDict (or dict) with `arch` plus any
    TransformerConfig fields; dtype/param_dtype are strings like "bfloat16".
    """
    fields = dict(model_cfg)
    arch = fields.pop("arch", None)
    if arch not in _ARCHS:
        raise ConfigError(f"model.arch={arch!r}; expected one of {list(_ARCHS)}")
    known = {f.name for f in dataclasses.fields(TransformerConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(
            f"unknown model config field(s) {unknown}; TransformerConfig fields are {sorted(known)}"
        )
    for name in ("dtype", "param_dtype"):
        if name in fields:
            fields[name] = _to_dtype(name, fields[name])
    cfg = TransformerConfig(**fields)
    if arch == "bert" and cfg.generator_size > 0:
        return ElectraForPreTraining(cfg)
    return _ARCHS[arch](cfg)
