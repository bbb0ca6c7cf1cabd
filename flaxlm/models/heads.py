"""Fine-tuning heads over a pretrained backbone (BertEncoder or GPTDecoder's final hidden states).

  SequenceClassifier  one label per input: logits_BL
  TokenClassifier     one label per token: logits_BTL
  SpanExtractor       extractive QA: start_logits_BT, end_logits_BT

The backbone keeps the name and parameters it has in pretraining, so a
pretrained tree drops in: params = {"encoder": BertEncoder params} (BERT) or
{"decoder": GPTDecoder params} (GPT), plus the head's own (newly initialised)
parameters. The inputs are those of the backbone, int32 [B, T]: input_ids,
token_type_ids (ignored by GPT), segment_ids (1 = real token, 0 = padding)
and positions. Padding must come after the real tokens.

L: number of labels.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxlm.models import layers
from flaxlm.models.bert import BertEncoder
from flaxlm.models.gpt import GPTDecoder
from flaxlm.models.layers import TransformerConfig

BACKBONE = {"bert": "encoder", "gpt": "decoder"}  # arch -> the backbone's parameter name
HEADS = ("sequence", "token", "span")


def backbone(arch: str, cfg: TransformerConfig, inputs, deterministic: bool):
    """(hidden_BTD, summary_BD) of `inputs`; call inside a compact method (the caller owns the params).

    summary_BD: BERT's [CLS] pooler output tanh(dense(hidden[:, 0])); for GPT the
    final hidden state of the last real token, the only one that has attended to
    the whole input under the causal mask.
    """
    input_ids, token_type_ids, segment_ids, positions = inputs
    if arch == "bert":
        return BertEncoder(cfg, name=BACKBONE[arch])(
            input_ids, token_type_ids, segment_ids, positions, deterministic=deterministic
        )
    hidden_BTD = GPTDecoder(cfg, name=BACKBONE[arch])(
        input_ids, segment_ids, positions, deterministic=deterministic, return_hidden=True
    )
    last_B = jnp.maximum(jnp.sum(segment_ids != 0, axis=1) - 1, 0)
    summary_BD = jnp.take_along_axis(hidden_BTD, last_B[:, None, None], axis=1)[:, 0]
    return hidden_BTD, summary_BD


class SequenceClassifier(nn.Module):
    """inputs -> logits_BL from the backbone's summary (dropout, then a dense layer)."""

    config: TransformerConfig
    arch: str
    num_labels: int

    @nn.compact
    def __call__(self, input_ids, token_type_ids, segment_ids, positions, *, deterministic: bool):
        cfg = self.config
        inputs = (input_ids, token_type_ids, segment_ids, positions)
        _, summary_BD = backbone(self.arch, cfg, inputs, deterministic)
        summary_BD = nn.Dropout(cfg.dropout_rate)(summary_BD, deterministic=deterministic)
        return layers.dense(cfg, self.num_labels, "classifier")(summary_BD)


class TokenClassifier(nn.Module):
    """inputs -> logits_BTL for every token (dropout, then a dense layer)."""

    config: TransformerConfig
    arch: str
    num_labels: int

    @nn.compact
    def __call__(self, input_ids, token_type_ids, segment_ids, positions, *, deterministic: bool):
        cfg = self.config
        inputs = (input_ids, token_type_ids, segment_ids, positions)
        hidden_BTD, _ = backbone(self.arch, cfg, inputs, deterministic)
        hidden_BTD = nn.Dropout(cfg.dropout_rate)(hidden_BTD, deterministic=deterministic)
        return layers.dense(cfg, self.num_labels, "classifier")(hidden_BTD)


class SpanExtractor(nn.Module):
    """inputs -> (start_logits_BT, end_logits_BT): a dense layer with 2 outputs per token (BERT's QA head)."""

    config: TransformerConfig
    arch: str
    num_labels: int = 2  # start, end

    @nn.compact
    def __call__(self, input_ids, token_type_ids, segment_ids, positions, *, deterministic: bool):
        inputs = (input_ids, token_type_ids, segment_ids, positions)
        hidden_BTD, _ = backbone(self.arch, self.config, inputs, deterministic)
        logits_BT2 = layers.dense(self.config, 2, "span_head")(hidden_BTD)
        return logits_BT2[..., 0], logits_BT2[..., 1]


_HEAD_CLASSES = {"sequence": SequenceClassifier, "token": TokenClassifier, "span": SpanExtractor}


def get_head_model(arch: str, cfg: TransformerConfig, head: str, num_labels: int) -> nn.Module:
    """The model of `head` ("sequence", "token" or "span") over an `arch` ("bert" or "gpt") backbone."""
    if arch not in BACKBONE:
        raise ValueError(f"arch={arch!r}; expected one of {list(BACKBONE)}")
    if head not in _HEAD_CLASSES:
        raise ValueError(f"head={head!r}; expected one of {HEADS}")
    return _HEAD_CLASSES[head](cfg, arch, num_labels)


def apply_inputs(batch) -> tuple[jax.Array, ...]:
    """The four backbone inputs of a batch dict, in call order."""
    return batch["input_ids"], batch["token_type_ids"], batch["segment_ids"], batch["positions"]
