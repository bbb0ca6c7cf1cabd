"""AdamW with the BERT recipe: warmup, linear (or cosine) decay, clipping, no decay on LN/bias."""

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


def decay_mask(params):
    """True for weights that get weight decay: everything but LayerNorm scales and biases (as BERT)."""

    def wants_decay(path, _):
        name = path[-1].key if hasattr(path[-1], "key") else str(path[-1])
        return name not in ("bias", "scale")

    return jax.tree_util.tree_map_with_path(wants_decay, params)


def make_optimizer(tc) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(tc.grad_clip_norm),
        optax.adamw(
            learning_rate_schedule(tc),
            b1=tc.b1,
            b2=tc.b2,
            eps=tc.eps,
            weight_decay=tc.weight_decay,
            mask=decay_mask,
        ),
    )
