"""LoRA (Hu et al., 2021): trainable low-rank updates to frozen Dense kernels, kept outside the model.

The model code does not change. LoRA parameters are a flat dict keyed by the
"/"-joined path of the kernel they adapt::

    {"encoder/block_0/attention/query/kernel": {"a": A_[in, r], "b": B_[r, out]}, ...}

and `merge` returns the parameter tree with every adapted kernel replaced by

    kernel + (alpha / r) * A @ B

The fine-tuning loss calls `merge` on every step (the base tree is a
constant there, so only A and B get gradients), and exports call the same
function, so an exported merged model computes exactly what was trained.
B starts at zero: at initialisation the merged model *is* the base model.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

ATTENTION = ("query", "key", "value", "out")  # flaxlm.models.layers.MultiHeadAttention's projections
MLP = ("fc_in", "fc_out")  # flaxlm.models.layers.Mlp's


def target_paths(params, include_mlp: bool = False) -> list[str]:
    """The "/"-joined paths of the kernels LoRA adapts: attention q/k/v/out (+ MLP fc_in/fc_out)."""
    wanted = {(parent, name) for parent, names in [("attention", ATTENTION), ("mlp", MLP)] for name in names}
    if not include_mlp:
        wanted = {w for w in wanted if w[0] == "attention"}
    flat = traverse_util.flatten_dict(params)
    return sorted(
        "/".join(p) for p in flat if len(p) >= 3 and p[-1] == "kernel" and tuple(p[-3:-1]) in wanted
    )


def init(rng: jax.Array, params, paths: list[str], rank: int) -> dict[str, dict[str, jax.Array]]:
    """LoRA factors for `paths`: A ~ N(0, 1/in) (so x @ A has the scale of x), B = 0."""
    flat = traverse_util.flatten_dict(params, sep="/")
    lora = {}
    for i, path in enumerate(paths):
        kernel = flat[path]
        d_in, d_out = kernel.shape
        a = jax.random.normal(jax.random.fold_in(rng, i), (d_in, rank), jnp.float32) / np.sqrt(d_in)
        lora[path] = {"a": a.astype(kernel.dtype), "b": jnp.zeros((rank, d_out), kernel.dtype)}
    return lora


def merge(params, lora: dict, *, alpha: float, rank: int):
    """`params` with kernel + (alpha / rank) * A @ B for each entry of `lora` (a new tree)."""
    if not lora:
        return params
    flat = traverse_util.flatten_dict(params, sep="/")
    missing = sorted(set(lora) - set(flat))
    if missing:
        raise KeyError(f"LoRA paths not in the parameter tree: {missing}")
    scale = alpha / rank
    for path, ab in lora.items():
        kernel = flat[path]
        flat[path] = kernel + (scale * (ab["a"] @ ab["b"])).astype(kernel.dtype)
    return traverse_util.unflatten_dict(flat, sep="/")


def num_params(lora: dict) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(lora))
