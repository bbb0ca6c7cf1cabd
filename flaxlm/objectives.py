"""Pretraining losses: pure functions of arrays, safe under jit.

Each returns (scalar loss, metrics dict of scalars). Losses are weighted means
over the counted targets; an all-zero weight mask gives loss 0, not NaN.
Cross-entropy is computed in float32 whatever the logits' dtype.
"""

import functools
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax

OBJECTIVES = (
    "mlm",
    "mlm_nsp",
    "mlm_sop",
    "mlm_sbo",
    "electra",
    "clm",
    "prefix_lm",
    "span_corruption",
    "iid_denoising",
)
# A decoder-only model (arch "gpt"): left to right, or a prefix LM.
DECODER_OBJECTIVES = ("clm", "prefix_lm")
# T5's (arch "t5"): span corruption (the paper's final objective), BERT-style i.i.d. denoising (Table 4).
SEQ2SEQ_OBJECTIVES = ("span_corruption", "iid_denoising")

# The batch fields of an encoder-decoder (T5) batch besides input_ids/segment_ids/positions.
SEQ2SEQ_FIELDS = ("decoder_input_ids", "decoder_segment_ids", "decoder_positions")

# The batch fields of SpanBERT's span-boundary objective (flaxlm.data.masking, sbo=True), in the order
# BertForPreTraining takes them.
SBO_FIELDS = ("sbo_left", "sbo_right", "sbo_offset")


def _cross_entropy(logits_XC: jax.Array, targets_X: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-example CE and correctness; logits [..., C], integer targets [...]."""
    logits_XC = logits_XC.astype(jnp.float32)
    # Out-of-range ids (e.g. -1 at ignored positions) must not index out of
    # bounds; their weight is zero anyway.
    targets_X = jnp.clip(targets_X, 0, logits_XC.shape[-1] - 1)
    target_logit_X = jnp.take_along_axis(logits_XC, targets_X[..., None], axis=-1)[..., 0]
    # logsumexp - target logit == -log_softmax[target], without materialising
    # a second [..., C] array.
    ce_X = jax.nn.logsumexp(logits_XC, axis=-1) - target_logit_X
    correct_X = _argmax(logits_XC) == targets_X
    return ce_X, correct_X.astype(jnp.float32)


def _argmax(logits_XC: jax.Array) -> jax.Array:
    """jnp.argmax(logits_XC, axis=-1) (the first maximal index; the first NaN if any) as the smallest
    index that holds the maximum: two float reductions, which XLA:CPU vectorizes, where argmax's
    (value, index) reduction took 14% of GPT-tiny's train step on a 2-core CPU. The indices are
    float32, exact below 2**24 classes."""
    logits_XC = jax.lax.stop_gradient(logits_XC)
    C = logits_XC.shape[-1]
    if C > 2**24:
        return jnp.argmax(logits_XC, axis=-1)
    hit_XC = (logits_XC == jnp.max(logits_XC, axis=-1, keepdims=True)) | jnp.isnan(logits_XC)
    index_XC = jax.lax.broadcasted_iota(jnp.float32, logits_XC.shape, logits_XC.ndim - 1)
    return jnp.min(jnp.where(hit_XC, index_XC, jnp.float32(C)), axis=-1).astype(jnp.int32)


def model_fields(objective: str) -> tuple[str, ...]:
    """The batch fields the model takes after mlm_positions, in call order: SpanBERT's SBO_FIELDS;
    ELECTRA's mlm_targets and mlm_weights (where its generator's samples go, and what they replace)."""
    if has_sbo_head(objective):
        return SBO_FIELDS
    if objective == "electra":
        return ("mlm_targets", "mlm_weights")
    return ()


def _weighted_mean(x: jax.Array, weights: jax.Array) -> jax.Array:
    return jnp.sum(x * weights) / jnp.maximum(jnp.sum(weights), 1e-8)


def mlm_loss(
    logits_BPV: jax.Array, targets_BP: jax.Array, weights_BP: jax.Array, *, name: str = "mlm"
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Masked-LM cross-entropy, averaged over positions with weight > 0; metrics `{name}_loss/...`.

    weights_BP: 1.0 for real masked positions, 0.0 for padding of P.
    (SpanBERT's SBO loss is this on the SBO head's logits, name "sbo".)
    """
    weights_BP = weights_BP.astype(jnp.float32)
    ce_BP, correct_BP = _cross_entropy(logits_BPV, targets_BP)
    loss = _weighted_mean(ce_BP, weights_BP)
    return loss, {
        f"{name}_loss": loss,
        f"{name}_accuracy": _weighted_mean(correct_BP, weights_BP),
        f"{name}_count": jnp.sum(weights_BP),
    }


def pair_loss(
    logits_B2: jax.Array, labels_B: jax.Array, weights_B: jax.Array | None = None, *, name: str = "nsp"
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Sentence-pair (NSP or SOP) classification CE; metrics `{name}_loss/_accuracy`."""
    if weights_B is None:
        weights_B = jnp.ones(labels_B.shape, jnp.float32)
    weights_B = weights_B.astype(jnp.float32)
    ce_B, correct_B = _cross_entropy(logits_B2, labels_B)
    loss = _weighted_mean(ce_B, weights_B)
    return loss, {
        f"{name}_loss": loss,
        f"{name}_accuracy": _weighted_mean(correct_B, weights_B),
    }


def next_token_weights(segment_ids_BT: jax.Array) -> jax.Array:
    """[B,T] float32: 1 where position t has a target, t+1 in the same (non-padding) document."""
    same_doc_BT = (segment_ids_BT[:, 1:] == segment_ids_BT[:, :-1]) & (segment_ids_BT[:, :-1] != 0)
    # The last position has no next token.
    return jnp.concatenate([same_doc_BT, jnp.zeros_like(same_doc_BT[:, :1])], axis=1).astype(jnp.float32)


def prefix_lm_weights(segment_ids_BT: jax.Array, prefix_mask_BT: jax.Array) -> jax.Array:
    """[B,T] float32: next_token_weights where the target t+1 is not in its document's prefix.

    A prefix LM scores only the continuation: the prefix is its input, seen bidirectionally.
    """
    continuation_BT = jnp.concatenate(
        [prefix_mask_BT[:, 1:] == 0, jnp.zeros_like(prefix_mask_BT[:, :1], bool)], 1
    )
    return next_token_weights(segment_ids_BT) * continuation_BT.astype(jnp.float32)


def causal_lm_loss(
    logits_BTV: jax.Array,
    input_ids_BT: jax.Array,
    segment_ids_BT: jax.Array,
    prefix_mask_BT: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Next-token CE: position t predicts input_ids[t+1] within one document.

    A target counts only if segment_ids[t+1] == segment_ids[t] != 0, so nothing
    is predicted across a packed-document boundary or into/out of padding; with
    prefix_mask_BT (prefix LM) only if t+1 is outside the prefix, too.
    """
    targets_BT = jnp.concatenate([input_ids_BT[:, 1:], jnp.zeros_like(input_ids_BT[:, :1])], axis=1)
    if prefix_mask_BT is None:
        weights_BT = next_token_weights(segment_ids_BT)
    else:
        weights_BT = prefix_lm_weights(segment_ids_BT, prefix_mask_BT)
    ce_BT, correct_BT = _cross_entropy(logits_BTV, targets_BT)
    loss = _weighted_mean(ce_BT, weights_BT)
    return loss, {
        "lm_loss": loss,
        "lm_accuracy": _weighted_mean(correct_BT, weights_BT),
        "lm_tokens": jnp.sum(weights_BT),
        "perplexity": jnp.exp(loss),
    }


def chunked_causal_lm_loss(
    hidden_BTD: jax.Array,
    embedding_VD: jax.Array,
    input_ids_BT: jax.Array,
    segment_ids_BT: jax.Array,
    prefix_mask_BT: jax.Array | None = None,
    *,
    chunk_size: int,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """causal_lm_loss of logits_BTV = hidden_BTD @ embedding_VD.T (GPT's tied head), without logits_BTV.

    The positions are taken at most chunk_size at a time along T, in equal chunks (chunk_shape), every
    row at once (so a batch sharded over devices stays sharded); each chunk's [B, C, V] logits live
    only while that chunk is scored. The projection runs in hidden_BTD's dtype, as flax's
    Embed.attend does, and the CE in float32. Differentiating it computes each chunk's gradient in
    the forward pass, from the same logits, so the backward pass recomputes nothing and stores
    [B, T, D] and [V, D], never [B, T, V].
    Same loss, metrics and gradients as causal_lm_loss on the full logits, up to summation order.
    """
    targets_BT = jnp.concatenate([input_ids_BT[:, 1:], jnp.zeros_like(input_ids_BT[:, :1])], axis=1)
    if prefix_mask_BT is None:
        weights_BT = next_token_weights(segment_ids_BT)
    else:
        weights_BT = prefix_lm_weights(segment_ids_BT, prefix_mask_BT)
    ce_sum, correct_sum = _fused_head_ce(chunk_size, hidden_BTD, embedding_VD, None, targets_BT, weights_BT)
    count = jnp.sum(weights_BT)
    loss = ce_sum / jnp.maximum(count, 1e-8)
    return loss, {
        "lm_loss": loss,
        "lm_accuracy": correct_sum / jnp.maximum(count, 1e-8),
        "lm_tokens": count,
        "perplexity": jnp.exp(loss),
    }


def chunk_shape(T: int, chunk_size: int) -> tuple[int, int]:
    """(K, C): T positions in K = ceil(T / chunk_size) equal chunks of C <= chunk_size, the last
    zero-padded (e.g. 20 masked positions at chunk_size 13: 2 chunks of 10, not 2 of 13 with 6 padding)."""
    K = -(-T // chunk_size)
    return K, -(-T // K)


def _chunk_along_t(x_BT, chunk_size: int):
    """[B, T, ...] -> [K, B, C, ...] with (K, C) = chunk_shape(T, chunk_size), T zero-padded to K * C."""
    B, T = x_BT.shape[:2]
    K, C = chunk_shape(T, chunk_size)
    x_BT = jnp.pad(x_BT, [(0, 0), (0, K * C - T)] + [(0, 0)] * (x_BT.ndim - 2))
    return jnp.moveaxis(x_BT.reshape(B, K, C, *x_BT.shape[2:]), 1, 0)


def _head_chunk(h_BCD, embedding_VD, bias_V, targets_BC, weights_BC, *, grads: bool):
    """One chunk: (sum of weighted CE, sum of weighted correctness[, d ce_sum / d logits_BCV])."""
    logits_BCV = jnp.einsum("bcd,vd->bcv", h_BCD, embedding_VD.astype(h_BCD.dtype))
    if bias_V is not None:  # added in the model's dtype, as BertForPreTraining adds its output bias
        logits_BCV = logits_BCV + bias_V.astype(h_BCD.dtype)
    logits_BCV = logits_BCV.astype(jnp.float32)
    V = logits_BCV.shape[-1]
    targets_BC = jnp.clip(targets_BC, 0, V - 1)  # as _cross_entropy: out-of-range ids weigh 0
    lse_BC = jax.nn.logsumexp(logits_BCV, axis=-1)
    target_logit_BC = jnp.take_along_axis(logits_BCV, targets_BC[..., None], axis=-1)[..., 0]
    correct_BC = (_argmax(logits_BCV) == targets_BC).astype(jnp.float32)
    sums = (jnp.sum((lse_BC - target_logit_BC) * weights_BC), jnp.sum(correct_BC * weights_BC))
    if not grads:
        return sums
    # d CE / d logits = softmax - one_hot(target), per counted position.
    dlogits_BCV = jnp.exp(logits_BCV - lse_BC[..., None]) - jax.nn.one_hot(targets_BC, V, dtype=jnp.float32)
    return sums, (dlogits_BCV * weights_BC[..., None]).astype(h_BCD.dtype)


def _fused_head_ce_sums(chunk_size, hidden_BTD, embedding_VD, bias_V, targets_BT, weights_BT, grads: bool):
    xs = tuple(_chunk_along_t(x, chunk_size) for x in (hidden_BTD, targets_BT, weights_BT))

    def scan_fn(carry, x):
        h_BCD, targets_BC, weights_BC = x
        out = _head_chunk(h_BCD, embedding_VD, bias_V, targets_BC, weights_BC, grads=grads)
        if not grads:
            return jax.tree.map(jnp.add, carry, out), None
        (ce, correct), dlogits_BCV = out
        ce_sum, correct_sum, demb_DV, dbias_V = carry
        dh_BCD = jnp.einsum("bcv,vd->bcd", dlogits_BCV, embedding_VD.astype(h_BCD.dtype))
        # The embedding's and the bias's gradients as matmuls that contract the chunk's positions,
        # dlogits_BCV's leading axes, as they lie in memory: h^T @ dlogits (so [D, V], transposed once
        # after the loop) and ones @ dlogits. XLA:CPU copied dlogits to [V, B*C] for dlogits^T @ h and
        # summed it over its leading axes slowly: 11% of BERT-tiny's and GPT-tiny's train step.
        demb_DV += jnp.einsum("bcd,bcv->dv", h_BCD, dlogits_BCV, preferred_element_type=jnp.float32)
        if bias_V is not None:
            ones_BC = jnp.ones(dlogits_BCV.shape[:2], dlogits_BCV.dtype)
            dbias_V += jnp.einsum("bc,bcv->v", ones_BC, dlogits_BCV, preferred_element_type=jnp.float32)
        return (ce_sum + ce, correct_sum + correct, demb_DV, dbias_V), dh_BCD

    zero = jnp.zeros((), jnp.float32)
    if not grads:
        return jax.lax.scan(scan_fn, (zero, zero), xs)[0], None
    dbias_V = None if bias_V is None else jnp.zeros(bias_V.shape, jnp.float32)
    init = (zero, zero, jnp.zeros(embedding_VD.shape[::-1], jnp.float32), dbias_V)
    (ce_sum, correct_sum, demb_DV, dbias_V), dh_KBCD = jax.lax.scan(scan_fn, init, xs)
    B, T, D = hidden_BTD.shape
    dh_BTD = jnp.moveaxis(dh_KBCD, 0, 1).reshape(B, -1, D)[:, :T]
    if dbias_V is not None:
        dbias_V = dbias_V.astype(bias_V.dtype)
    return (ce_sum, correct_sum), (dh_BTD, demb_DV.T.astype(embedding_VD.dtype), dbias_V)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused_head_ce(chunk_size, hidden_BTD, embedding_VD, bias_V, targets_BT, weights_BT):
    """(sum of w_t CE_t, sum of w_t correct_t) of logits hidden @ embedding.T (+ bias_V unless None),
    at most chunk_size positions of every row at a time (chunk_shape)."""
    return _fused_head_ce_sums(chunk_size, hidden_BTD, embedding_VD, bias_V, targets_BT, weights_BT, False)[0]


def _fused_fwd(chunk_size, hidden_BTD, embedding_VD, bias_V, targets_BT, weights_BT):
    return _fused_head_ce_sums(chunk_size, hidden_BTD, embedding_VD, bias_V, targets_BT, weights_BT, True)


def _fused_bwd(chunk_size, grads, cotangents):
    # The sums are linear in each position's CE, so the cotangent only scales the gradients computed
    # forward; the correctness sum is piecewise constant (zero gradient).
    g = cotangents[0]
    scaled = tuple(None if x is None else x * g.astype(x.dtype) for x in grads)
    return (*scaled, None, None)


_fused_head_ce.defvjp(_fused_fwd, _fused_bwd)


def chunked_mlm_loss(
    hidden_BPE: jax.Array,
    embedding_VE: jax.Array,
    bias_V: jax.Array,
    targets_BP: jax.Array,
    weights_BP: jax.Array,
    *,
    chunk_size: int,
    name: str = "mlm",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """mlm_loss of logits_BPV = hidden_BPE @ embedding_VE.T + bias_V (BERT's tied MLM head, or SpanBERT's
    SBO head with name "sbo"), at most chunk_size predicted positions of every row at a time, never holding
    logits_BPV; the same loss, metrics and gradients as mlm_loss on the full logits, up to summation
    order (see chunked_causal_lm_loss)."""
    weights_BP = weights_BP.astype(jnp.float32)
    ce_sum, correct_sum = _fused_head_ce(chunk_size, hidden_BPE, embedding_VE, bias_V, targets_BP, weights_BP)
    count = jnp.sum(weights_BP)
    loss = ce_sum / jnp.maximum(count, 1e-8)
    return loss, {
        f"{name}_loss": loss,
        f"{name}_accuracy": correct_sum / jnp.maximum(count, 1e-8),
        f"{name}_count": count,
    }


def seq2seq_loss(
    logits_BTV: jax.Array, targets_BT: jax.Array, decoder_segment_ids_BT: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Teacher-forced CE of an encoder-decoder: decoder position t predicts targets[t].

    Every real decoder position (segment != 0) counts; metrics are named as the causal LM's
    (lm_loss, lm_accuracy, lm_tokens, perplexity), over the decoder targets.
    """
    weights_BT = (decoder_segment_ids_BT != 0).astype(jnp.float32)
    ce_BT, correct_BT = _cross_entropy(logits_BTV, targets_BT)
    loss = _weighted_mean(ce_BT, weights_BT)
    return loss, {
        "lm_loss": loss,
        "lm_accuracy": _weighted_mean(correct_BT, weights_BT),
        "lm_tokens": jnp.sum(weights_BT),
        "perplexity": jnp.exp(loss),
    }


def is_seq2seq(objective: str) -> bool:
    """Whether `objective` trains an encoder-decoder (arch "t5") on inputs and decoder targets."""
    return objective in SEQ2SEQ_OBJECTIVES


def is_decoder_only(objective: str) -> bool:
    """Whether `objective` trains a decoder-only model (arch "gpt") on next-token targets."""
    return objective in DECODER_OBJECTIVES


def rtd_weights(segment_ids_BT: jax.Array) -> jax.Array:
    """[B,T] float32: ELECTRA's discriminator scores every real token (segment != 0), none of the padding."""
    return (segment_ids_BT != 0).astype(jnp.float32)


def rtd_loss(
    logits_BT: jax.Array, labels_BT: jax.Array, segment_ids_BT: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """ELECTRA's replaced-token detection: sigmoid cross-entropy over every real token.

    labels_BT: 1.0 where the generator's sample replaced the original token. Metrics: rtd_loss,
    rtd_accuracy (logit > 0 as "replaced"), rtd_replaced_fraction (of the real tokens; the majority
    baseline's accuracy is 1 minus it) and rtd_count (real tokens).
    """
    logits_BT = logits_BT.astype(jnp.float32)
    weights_BT = rtd_weights(segment_ids_BT)
    bce_BT = optax.sigmoid_binary_cross_entropy(logits_BT, labels_BT)
    loss = _weighted_mean(bce_BT, weights_BT)
    correct_BT = ((logits_BT > 0) == (labels_BT > 0)).astype(jnp.float32)
    return loss, {
        "rtd_loss": loss,
        "rtd_accuracy": _weighted_mean(correct_BT, weights_BT),
        "rtd_replaced_fraction": _weighted_mean(labels_BT, weights_BT),
        "rtd_count": jnp.sum(weights_BT),
    }


def pair_name(objective: str) -> str | None:
    """ "nsp" or "sop" for objectives with a sentence-pair head, else None."""
    return {"mlm_nsp": "nsp", "mlm_sop": "sop"}.get(objective)


def has_pair_head(objective: str) -> bool:
    """Whether the model for `objective` builds the 2-way NSP/SOP head (and the data carries labels)."""
    return pair_name(objective) is not None


def has_sbo_head(objective: str) -> bool:
    """Whether the model for `objective` builds SpanBERT's span-boundary head (and the masks carry
    the SBO_FIELDS): "mlm_sbo", MLM + SBO on single segments, as SpanBERT trained (no NSP)."""
    return objective == "mlm_sbo"


class LossTerm(NamedTuple):
    """One weighted-mean loss of an objective: `count` is the weight behind the mean."""

    name: str  # "mlm", "pair", "sbo", "rtd" or "lm"
    loss: jax.Array
    count: jax.Array
    metrics: dict[str, jax.Array]


def loss_terms(
    outputs: Any, batch: Mapping[str, jax.Array], *, objective: str, loss_chunk_size: int = 0
) -> list[LossTerm]:
    """The loss terms of one pretraining objective on one batch.

    objective:
      "mlm", "mlm_nsp", "mlm_sop", "mlm_sbo": outputs is BertForPreTraining's dict;
        batch has mlm_targets [B,P], mlm_weights [B,P] and, for the pair objectives,
        pair_label [B] (NSP: 1 = random B; SOP: 1 = swapped). mlm_sbo adds the SBO
        term: the same targets and weights scored from outputs["sbo_logits"]. With
        loss_chunk_size > 0 the dict has the heads' inputs to the vocabulary projection instead of
        their logits (mlm_hidden, sbo_hidden [B,P,E]), with that projection (embedding [V,E],
        mlm_bias, sbo_bias [V]), and each term is chunked_mlm_loss.
      "electra": outputs is ElectraForPreTraining's dict: the generator's MLM term (as "mlm") and
        the discriminator's RTD term over every real token (segment_ids != 0).
      "clm": outputs is GPTDecoder's logits_BTV; batch has input_ids and
        segment_ids. With loss_chunk_size > 0 (clm, prefix_lm), outputs is (hidden_BTD,
        embedding_VD) instead and the loss is chunked_causal_lm_loss, chunk_size=loss_chunk_size.
      "prefix_lm": as "clm", and batch has prefix_mask [B, T]; only continuation targets count.
      "span_corruption", "iid_denoising": outputs is T5ForConditionalGeneration's logits_BTV;
        batch has targets and decoder_segment_ids [B, T] (one "lm" term over the decoder targets).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r}; expected one of {OBJECTIVES}")
    if is_decoder_only(objective):
        prefix_BT = batch["prefix_mask"] if objective == "prefix_lm" else None
        if loss_chunk_size:
            hidden_BTD, embedding_VD = outputs
            loss, m = chunked_causal_lm_loss(
                hidden_BTD,
                embedding_VD,
                batch["input_ids"],
                batch["segment_ids"],
                prefix_BT,
                chunk_size=loss_chunk_size,
            )
        else:
            loss, m = causal_lm_loss(outputs, batch["input_ids"], batch["segment_ids"], prefix_BT)
        return [LossTerm("lm", loss, m["lm_tokens"], m)]
    if is_seq2seq(objective):
        loss, m = seq2seq_loss(outputs, batch["targets"], batch["decoder_segment_ids"])
        return [LossTerm("lm", loss, m["lm_tokens"], m)]

    def masked_lm(name):  # "mlm", or SpanBERT's "sbo": the same targets from another head
        if loss_chunk_size:
            return chunked_mlm_loss(
                outputs[f"{name}_hidden"],
                outputs["embedding"],
                outputs[f"{name}_bias"],
                batch["mlm_targets"],
                batch["mlm_weights"],
                chunk_size=loss_chunk_size,
                name=name,
            )
        return mlm_loss(outputs[f"{name}_logits"], batch["mlm_targets"], batch["mlm_weights"], name=name)

    loss, m = masked_lm("mlm")
    terms = [LossTerm("mlm", loss, m["mlm_count"], m)]
    name = pair_name(objective)
    if name:
        labels_B = batch["pair_label"]
        loss, m = pair_loss(outputs["pair_logits"], labels_B, name=name)
        terms.append(LossTerm("pair", loss, jnp.asarray(labels_B.shape[0], jnp.float32), m))
    if objective == "electra":
        loss, m = rtd_loss(outputs["rtd_logits"], outputs["rtd_labels"], batch["segment_ids"])
        terms.append(LossTerm("rtd", loss, m["rtd_count"], m))
    if has_sbo_head(objective):
        loss, m = masked_lm("sbo")
        terms.append(LossTerm("sbo", loss, m["sbo_count"], m))
    return terms


def term_weight(name: str, pair_weight: float, rtd_weight: float) -> float:
    """A term's weight in the total: pair_weight for NSP/SOP, rtd_weight (ELECTRA's λ) for RTD, else 1."""
    return {"pair": pair_weight, "rtd": rtd_weight}.get(name, 1.0)


def pretraining_loss(
    outputs: Any,
    batch: Mapping[str, jax.Array],
    *,
    objective: str,
    pair_weight: float = 1.0,
    rtd_weight: float = 50.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total loss on one batch: mlm + pair_weight * pair (+ sbo, summed as SpanBERT; + rtd_weight * rtd,
    ELECTRA), or the causal-LM loss.

    Metrics always include `loss`. (The train step sums the same terms, each
    normalised by its global count, so it also works on shards of a batch.)
    """
    loss, metrics = 0.0, {}
    for term in loss_terms(outputs, batch, objective=objective):
        loss = loss + term_weight(term.name, pair_weight, rtd_weight) * term.loss
        metrics.update(term.metrics)
    return loss, {"loss": loss, **metrics}
