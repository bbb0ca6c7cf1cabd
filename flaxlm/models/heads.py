"""Fine-tuning heads over a pretrained backbone (BertEncoder or GPTDecoder's final hidden states).

  SequenceClassifier  one label per input: logits_BL
  TokenClassifier     one label per token: logits_BTL
  SpanExtractor       extractive QA: start_logits_BT, end_logits_BT
  CausalLM            generation with GPT: the pretrained decoder and its tied LM head, logits_BTV
  Seq2SeqLM           generation with T5: the whole pretrained encoder-decoder, logits_BTV

The backbone keeps the name and parameters it has in pretraining, so a
pretrained tree drops in: params = {"encoder": BertEncoder params} (BERT) or
{"decoder": GPTDecoder params} (GPT), plus the head's own (newly initialised)
parameters; the generation models add none ({"decoder": ...} for GPT, {"t5": the whole
T5ForConditionalGeneration tree} for T5). The inputs are those of the backbone, int32 [B, T]: input_ids,
token_type_ids (ignored by GPT), segment_ids (1 = real token, 0 = padding)
and positions; Seq2SeqLM also takes the decoder's decoder_input_ids, decoder_segment_ids and
decoder_positions [B, T']. Padding must come after the real tokens.

L: number of labels.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxlm.models import layers
from flaxlm.models.bert import BertEncoder
from flaxlm.models.gpt import GPTDecoder
from flaxlm.models.layers import TransformerConfig
from flaxlm.models.t5 import T5ForConditionalGeneration

BACKBONE = {"bert": "encoder", "gpt": "decoder", "t5": "t5"}  # arch -> the backbone's parameter name
HEADS = ("sequence", "token", "span", "generation")
SEQ2SEQ_INPUTS = ("decoder_input_ids", "decoder_segment_ids", "decoder_positions")


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


class CausalLM(nn.Module):
    """GPT as it was pretrained: inputs -> next-token logits_BTV (token_type_ids ignored)."""

    config: TransformerConfig
    arch: str = "gpt"
    num_labels: int = 0

    @nn.compact
    def __call__(self, input_ids, token_type_ids, segment_ids, positions, *, deterministic: bool):
        return GPTDecoder(self.config, name=BACKBONE["gpt"])(
            input_ids, segment_ids, positions, deterministic=deterministic
        )


class Seq2SeqLM(nn.Module):
    """T5 as it was pretrained: encoder inputs + decoder inputs -> logits_BTV of the next target token."""

    config: TransformerConfig
    arch: str = "t5"
    num_labels: int = 0

    def setup(self):
        self.t5 = T5ForConditionalGeneration(self.config)  # named "t5" (BACKBONE["t5"])

    def __call__(
        self,
        input_ids,
        token_type_ids,
        segment_ids,
        positions,
        decoder_input_ids,
        decoder_segment_ids,
        decoder_positions,
        *,
        deterministic: bool,
    ):
        return self.t5(
            input_ids,
            segment_ids,
            positions,
            decoder_input_ids,
            decoder_segment_ids,
            decoder_positions,
            deterministic=deterministic,
        )

    def encode(self, input_ids, segment_ids, positions):
        return self.t5.encode(input_ids, segment_ids, positions, deterministic=True)

    def decode(self, encoded_BSD, segment_ids, decoder_input_ids, decoder_segment_ids, decoder_positions):
        return self.t5.decode(
            encoded_BSD,
            segment_ids,
            decoder_input_ids,
            decoder_segment_ids,
            decoder_positions,
            deterministic=True,
        )


_HEAD_CLASSES = {"sequence": SequenceClassifier, "token": TokenClassifier, "span": SpanExtractor}


def get_head_model(arch: str, cfg: TransformerConfig, head: str, num_labels: int) -> nn.Module:
    """The model of `head` ("sequence", "token" or "span" over a "bert" or "gpt" backbone; "generation":
    CausalLM for "gpt", Seq2SeqLM for "t5")."""
    if arch not in BACKBONE:
        raise ValueError(f"arch={arch!r}; expected one of {list(BACKBONE)}")
    if head == "generation":
        if arch == "bert":
            raise ValueError("generation needs a decoder (arch gpt or t5); bert is an encoder")
        return CausalLM(cfg) if arch == "gpt" else Seq2SeqLM(cfg)
    if head not in _HEAD_CLASSES:
        raise ValueError(f"head={head!r}; expected one of {HEADS}")
    if arch == "t5":
        raise ValueError(f"the {head} head reads a BERT or GPT backbone; T5 fine-tunes on generation tasks")
    return _HEAD_CLASSES[head](cfg, arch, num_labels)


def apply_inputs(batch) -> tuple[jax.Array, ...]:
    """The backbone inputs of a batch dict, in call order (+ the decoder's for a Seq2SeqLM batch)."""
    inputs = (batch["input_ids"], batch["token_type_ids"], batch["segment_ids"], batch["positions"])
    if "decoder_input_ids" in batch:
        inputs += tuple(batch[k] for k in SEQ2SEQ_INPUTS)
    return inputs


def greedy_decode(
    model: nn.Module, params, batch, *, max_new_tokens: int, eos_id: int, num_tokens: int | None = None
) -> jax.Array:
    """tokens_BN: the most likely continuation of each row, eos_id and then eos_id again once a row ends.

    num_tokens: choose among ids < num_tokens only (T5's sentinel ids above the tokenizer's are
    not text).

    CausalLM: continues batch["prompt_ids"] [B, T] (right-padded, batch["prompt_len"] real tokens),
    writing token i at slot prompt_len + i (needs prompt_len + max_new_tokens <= T). Seq2SeqLM:
    encodes the inputs once, then decodes from the start id 0 over max_new_tokens slots. Both
    recompute the whole row at every step (no cache): simple, and cheap at fine-tuning lengths.
    Pure; runs under jit.
    """
    variables = {"params": params}
    n, v = max_new_tokens, num_tokens
    b = batch["input_ids"].shape[0]
    if isinstance(model, CausalLM):
        ids_BT = batch["prompt_ids"]
        t = ids_BT.shape[1]
        slots_T = jnp.arange(t)
        ones_BT = jnp.ones_like(ids_BT)  # one document per row: the causal mask hides the slots ahead
        pos_BT = jnp.broadcast_to(slots_T, ids_BT.shape)

        def next_token(ids_BT, i):
            logits_BTV = model.apply(variables, ids_BT, ids_BT, ones_BT, pos_BT, deterministic=True)
            read_B = jnp.minimum(batch["prompt_len"] - 1 + i, t - 1)
            return jnp.argmax(jnp.take_along_axis(logits_BTV, read_B[:, None, None], axis=1)[:, 0, :v], -1)

        def write(ids_BT, token_B, i):
            at_BT = slots_T[None, :] == (batch["prompt_len"] + i)[:, None]
            return jnp.where(at_BT, token_B[:, None], ids_BT)

    else:
        encoded_BSD = model.apply(
            variables, batch["input_ids"], batch["segment_ids"], batch["positions"], method="encode"
        )
        ids_BT = jnp.zeros((b, n), jnp.int32)  # the decoder start id 0, then the tokens so far
        slots_T = jnp.arange(n)
        ones_BT = jnp.ones_like(ids_BT)
        pos_BT = jnp.broadcast_to(slots_T, ids_BT.shape)

        def next_token(ids_BT, i):
            logits_BTV = model.apply(
                variables, encoded_BSD, batch["segment_ids"], ids_BT, ones_BT, pos_BT, method="decode"
            )
            return jnp.argmax(logits_BTV[:, i, :v], -1)

        def write(ids_BT, token_B, i):
            return jax.lax.dynamic_update_slice(ids_BT, token_B[:, None], (0, jnp.minimum(i + 1, n - 1)))

    def cond(carry):
        i, _, _, done_B = carry
        return (i < n) & ~jnp.all(done_B)

    def body(carry):
        i, ids_BT, tokens_BN, done_B = carry
        token_B = jnp.where(done_B, eos_id, next_token(ids_BT, i)).astype(jnp.int32)
        tokens_BN = jax.lax.dynamic_update_slice(tokens_BN, token_B[:, None], (0, i))
        return i + 1, write(ids_BT, token_B, i), tokens_BN, done_B | (token_B == eos_id)

    tokens_BN = jnp.full((b, n), eos_id, jnp.int32)
    carry = (jnp.zeros((), jnp.int32), ids_BT, tokens_BN, jnp.zeros((b,), jnp.bool_))
    return jax.lax.while_loop(cond, body, carry)[2]
