"""Pure train and eval steps shared by the mesh-jit and pmap paths.

Every loss term is a weighted mean over the GLOBAL batch (MLM over masked
positions, causal LM over real next-token targets, NSP/SOP over
sequences, ELECTRA's RTD over real tokens). The counts behind each mean differ between devices and between
microbatches, so each shard's term is normalised by the global count
(`totals`) instead of its own: summing the shards' terms then gives exactly
the global-batch loss, and the mesh step, the pmap step (pmean of the
shards' gradients, with totals = pmean of the counts) and gradient
accumulation (sum over microbatches) all compute the same gradient.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from flaxlm import objectives
from flaxlm.models import bert, gpt

# Which loss term each metric is a mean over.
_TERM_OF_PREFIX = {"mlm": "mlm", "nsp": "pair", "sop": "pair", "sbo": "sbo", "rtd": "rtd", "lm": "lm"}

# Folded into a step's key for ELECTRA's sampling key, before the device and microbatch indices are:
# every shard of a step gets the same key (flaxlm.models.electra draws per row from it).
_SAMPLE_STREAM = 0x5A3D1E


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    skipped_steps: jax.Array  # steps whose update was dropped for a non-finite loss or gradient


def batch_totals(batch, objective: str) -> dict[str, jax.Array]:
    """The count behind each loss term's mean, from the batch alone (no model)."""
    if objective == "clm":
        return {"lm": jnp.sum(objectives.next_token_weights(batch["segment_ids"]))}
    if objective == "prefix_lm":
        return {"lm": jnp.sum(objectives.prefix_lm_weights(batch["segment_ids"], batch["prefix_mask"]))}
    if objectives.is_seq2seq(objective):
        return {"lm": jnp.sum((batch["decoder_segment_ids"] != 0).astype(jnp.float32))}
    totals = {"mlm": jnp.sum(batch["mlm_weights"].astype(jnp.float32))}
    if objectives.pair_name(objective):
        totals["pair"] = jnp.asarray(batch["pair_label"].shape[0], jnp.float32)
    if objectives.has_sbo_head(objective):
        totals["sbo"] = totals["mlm"]  # the SBO term scores the MLM targets
    if objective == "electra":
        totals["rtd"] = jnp.sum(objectives.rtd_weights(batch["segment_ids"]))
    return totals


def apply_model(
    model, params, batch, *, objective: str, train: bool, rng=None, sample_rng=None, loss_chunk_size: int = 0
):
    """The model's outputs on `batch`; rng: dropout's key, sample_rng: ELECTRA's generator samples.

    A decoder-only LM with loss_chunk_size > 0: the final hidden states and the tied output
    embedding, (hidden_BTD, embedding_VD), for `objectives.chunked_causal_lm_loss`, not the logits;
    BERT's objectives: its dict with the MLM (and SBO) head's hidden states and the vocabulary
    projection instead of their logits, for `objectives.chunked_mlm_loss`.
    """
    rngs = {"dropout": rng} if train else {}
    if train and sample_rng is not None:
        rngs["sample"] = sample_rng
    hidden = {"return_hidden": True} if loss_chunk_size else {}  # the chunked loss projects itself
    if objectives.is_decoder_only(objective) or objectives.is_seq2seq(objective):
        seq2seq = [batch[k] for k in objectives.SEQ2SEQ_FIELDS] if objectives.is_seq2seq(objective) else []
        prefix = {"prefix_mask": batch["prefix_mask"]} if objective == "prefix_lm" else {}
        out = model.apply(
            {"params": params},
            batch["input_ids"],
            batch["segment_ids"],
            batch["positions"],
            *seq2seq,
            **prefix,
            **hidden,
            deterministic=not train,
            rngs=rngs,
        )
        return (out, gpt.output_embedding(params)) if loss_chunk_size else out
    out = model.apply(
        {"params": params},
        batch["input_ids"],
        batch["token_type_ids"],
        batch["segment_ids"],
        batch["positions"],
        batch["mlm_positions"],
        *[batch[k] for k in objectives.model_fields(objective)],
        **hidden,
        deterministic=not train,
        rngs=rngs,
    )
    return {**out, **bert.output_projection(params)} if loss_chunk_size else out


def shard_loss(
    params,
    batch,
    rng,
    totals,
    *,
    model,
    objective: str,
    pair_weight: float,
    train: bool,
    rtd_weight: float = 50.0,
    sample_rng=None,
    loss_chunk_size: int = 0,
):
    """This shard's share of the global loss, and its share of each metric.

    Returns (loss, metrics); summed over all shards of a global batch both
    equal the global-batch values.
    """
    out = apply_model(
        model,
        params,
        batch,
        objective=objective,
        train=train,
        rng=rng,
        sample_rng=sample_rng,
        loss_chunk_size=loss_chunk_size,
    )
    total, metrics = 0.0, {}
    for term in objectives.loss_terms(out, batch, objective=objective, loss_chunk_size=loss_chunk_size):
        share = term.count / jnp.maximum(totals[term.name], 1e-9)
        total = total + objectives.term_weight(term.name, pair_weight, rtd_weight) * term.loss * share
        for k, v in term.metrics.items():
            if k.endswith(("_loss", "_accuracy", "_fraction")):
                metrics[k] = v * share
    metrics["loss"] = total
    return total, jax.tree.map(jax.lax.stop_gradient, metrics)


def _split_microbatches(batch, n: int):
    return jax.tree.map(lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), batch)


def make_train_step(
    model,
    tx: optax.GradientTransformation,
    schedule,
    *,
    objective: str,
    pair_weight: float = 1.0,
    rtd_weight: float = 50.0,
    grad_accum_steps: int = 1,
    axis_name: str | None = None,
    debug_nan_step: int = 0,
    loss_chunk_size: int = 0,
):
    """Returns `train_step(state, batch, rng) -> (state, metrics)`.

    loss_chunk_size > 0 (decoder-only LM, or BERT's MLM and SBO heads): the loss scores that many
    positions (predicted positions) of each row at a time, never holding the full logits
    (`objectives.chunked_causal_lm_loss`, `objectives.chunked_mlm_loss`); the same loss and gradients.

    `rng` is the run's dropout key; each step folds in its step number (and
    microbatch / device index), so the step is a pure function of its inputs.
    With `axis_name` the step runs under pmap over that axis.

    A step whose loss or gradient norm is not finite leaves params and
    optimizer state unchanged (only `step` and `skipped_steps` advance) and
    reports `finite=False`; the loop decides whether to go on or stop.
    `debug_nan_step` (1-based, 0 = off) multiplies that step's loss and
    gradients by NaN, to test this path deterministically.
    """
    grad_fn = jax.value_and_grad(shard_loss, has_aux=True)

    def train_step(state: TrainState, batch, rng):
        totals = batch_totals(batch, objective)
        rng = jax.random.fold_in(rng, state.step)
        sample_rng = jax.random.fold_in(rng, _SAMPLE_STREAM)
        if axis_name is not None:
            totals = jax.lax.pmean(totals, axis_name)
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        kwargs = dict(
            model=model,
            objective=objective,
            pair_weight=pair_weight,
            rtd_weight=rtd_weight,
            train=True,
            sample_rng=sample_rng,
            loss_chunk_size=loss_chunk_size,
        )

        if grad_accum_steps == 1:
            (_, metrics), grads = grad_fn(state.params, batch, rng, totals, **kwargs)
        else:

            def micro_step(carry, xs):
                i, micro = xs
                (_, m), g = grad_fn(state.params, micro, jax.random.fold_in(rng, i), totals, **kwargs)
                return jax.tree.map(jnp.add, carry, (g, m)), None

            micro = _split_microbatches(batch, grad_accum_steps)
            zeros = jax.tree.map(jnp.zeros_like, state.params)
            m0 = jax.eval_shape(
                lambda: grad_fn(state.params, jax.tree.map(lambda x: x[0], micro), rng, totals, **kwargs)[0][
                    1
                ]
            )
            m0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), m0)
            (grads, metrics), _ = jax.lax.scan(micro_step, (zeros, m0), (jnp.arange(grad_accum_steps), micro))

        if axis_name is not None:
            grads = jax.lax.pmean(grads, axis_name)
            metrics = jax.lax.pmean(metrics, axis_name)

        if debug_nan_step:
            poison = jnp.where(state.step + 1 == debug_nan_step, jnp.nan, 1.0)
            grads = jax.tree.map(lambda g: g * poison.astype(g.dtype), grads)
            metrics = dict(metrics, loss=metrics["loss"] * poison)

        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)

        def update(_):
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            return optax.apply_updates(state.params, updates), opt_state

        # A cond, not a select of old and new values: the update runs only when it will be kept,
        # and nothing reads and rewrites every parameter and moment a second time (~3% of a CPU
        # step). NaNs never reach the state either way.
        params, opt_state = jax.lax.cond(finite, update, lambda _: (state.params, state.opt_state), None)
        skipped = state.skipped_steps + (~finite).astype(jnp.int32)
        metrics = dict(
            metrics,
            grad_norm=grad_norm,
            # The rate of this step's update: optax's schedule counts applied updates, and a
            # skipped step applied none, so its count is behind state.step by the steps skipped.
            learning_rate=schedule(state.step - state.skipped_steps),
            skipped_steps=skipped,
            finite=finite,
        )
        if "lm_loss" in metrics:
            metrics["perplexity"] = jnp.exp(metrics["lm_loss"])
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, skipped_steps=skipped
        )
        return new_state, metrics

    return train_step


def make_eval_step(
    model,
    *,
    objective: str,
    pair_weight: float = 1.0,
    rtd_weight: float = 50.0,
    axis_name: str | None = None,
    loss_chunk_size: int = 0,
):
    """Returns `eval_step(params, batch) -> (metrics, totals)`; average over batches with `totals`."""

    def eval_step(params, batch):
        totals = batch_totals(batch, objective)
        if axis_name is not None:
            totals = jax.lax.pmean(totals, axis_name)
        _, metrics = shard_loss(
            params,
            batch,
            None,
            totals,
            model=model,
            objective=objective,
            pair_weight=pair_weight,
            rtd_weight=rtd_weight,
            train=False,
            loss_chunk_size=loss_chunk_size,
        )
        if axis_name is not None:
            metrics = jax.lax.pmean(metrics, axis_name)
        return metrics, totals

    return eval_step


class EvalAccumulator:
    """Averages eval metrics over batches, each weighted by its term's count."""

    def __init__(self, pair_weight: float = 1.0, rtd_weight: float = 50.0):
        self.pair_weight = pair_weight
        self.rtd_weight = rtd_weight
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}

    def add(self, metrics, totals):
        for k, v in metrics.items():
            if k == "loss":
                continue
            term = _TERM_OF_PREFIX[k.split("_")[0]]
            self.sums[k] = self.sums.get(k, 0.0) + float(v) * float(totals[term])
            self.counts[k] = self.counts.get(k, 0.0) + float(totals[term])

    def result(self) -> dict[str, float]:
        out = {k: self.sums[k] / max(self.counts[k], 1e-9) for k in self.sums}
        loss = out.get("mlm_loss", 0.0) + out.get("sbo_loss", 0.0) + out.get("lm_loss", 0.0)
        for name in ("nsp", "sop"):
            loss += self.pair_weight * out.get(f"{name}_loss", 0.0)
        loss += self.rtd_weight * out.get("rtd_loss", 0.0)
        out["loss"] = loss
        if "lm_loss" in out:
            out["perplexity"] = float(jnp.exp(out["lm_loss"]))
        return out
