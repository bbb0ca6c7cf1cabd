"""AdamW with the BERT recipe: warmup, linear (or cosine) decay, clipping, no decay on LN/bias.

One optimizer for pretraining and fine-tuning (flaxlm/finetune.py passes its own schedule).
"""

import jax
import optax


def learning_rate_schedule(tc) -> optax.Schedule:
    """Linear warmup to `learning_rate` over `warmup_steps`, then linear/cosine decay to 0 at
    `num_steps` (a run that ends early with `stop_at_step` keeps the whole schedule)."""
    total = tc.num_steps
    warmup = max(min(tc.warmup_steps, total), 0)
    decay_steps = max(total - warmup, 1)
    if tc.schedule == "cosine":
        decay = optax.cosine_decay_schedule(tc.learning_rate, decay_steps)
    else:
        decay = optax.linear_schedule(tc.learning_rate, 0.0, decay_steps)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, tc.learning_rate, warmup), decay], [warmup])


def wants_decay(name: str) -> bool:
    """Whether the parameter `name` gets weight decay: not biases (`bias`, BERT's MLM output
    `mlm_bias`, ...) nor LayerNorm scales, as BERT and Hugging Face exclude them.

    `name` is the parameter's own name; a "/"-joined path (fine-tuning keys its trained
    parameters so) counts by its last part.
    """
    name = name.rsplit("/", 1)[-1]
    return not (name.endswith("bias") or name == "scale")


def decay_mask(params):
    """The tree of `params` with True where `wants_decay`."""

    def mask(path, _):
        last = path[-1]
        return wants_decay(last.key if hasattr(last, "key") else str(last))

    return jax.tree_util.tree_map_with_path(mask, params)


def make_optimizer(tc, schedule: optax.Schedule | None = None) -> optax.GradientTransformation:
    """Clipping then AdamW on `schedule` (default: `learning_rate_schedule(tc)`), decay by `decay_mask`.

    `tc` needs grad_clip_norm, b1, b2, eps and weight_decay (a train config section).
    """
    return optax.chain(
        optax.clip_by_global_norm(tc.grad_clip_norm),
        optax.adamw(
            schedule if schedule is not None else learning_rate_schedule(tc),
            b1=tc.b1,
            b2=tc.b2,
            eps=tc.eps,
            weight_decay=tc.weight_decay,
            mask=decay_mask,
        ),
    )
