"""Sharding rules: parameter paths -> PartitionSpecs over the (data, fsdp, tensor) mesh.

A rule is a pair `(regex, spec)`; config.sharding.rules holds them in order
and the first whose regex is found (`re.search`) in a parameter's path
wins. A path joins the parameter's dict keys with "/", e.g.
"encoder/block_0/attention/query/kernel" (BERT) or
"block_0/mlp/fc_in/kernel" (GPT). ALBERT's shared weights sit under
"encoder/shared_block/..." (share_layers="all") or "encoder/shared_attention",
"encoder/shared_mlp" (and their *_norm), so the same rules name them; its
factorised embeddings add "encoder/embedding_projection". A spec has one entry per array
dimension (fewer: the rest are replicated): None (replicated), a mesh axis
name, or a tuple of axis names; `()` replicates the whole array.

The defaults (`DEFAULT_RULES`) combine two schemes; a mesh axis of size 1
switches its scheme off, so the same rules serve every mesh:
  fsdp    every matrix of the blocks (and of the heads) is split along its
          model dimension D (ZeRO-3): XLA gathers it just before use and
          reduce-scatters its gradient.
  tensor  Megatron-style: q/k/v and MLP fc_in are split by output columns
          (heads, F), attention out and fc_out by input rows, so each block
          needs one all-reduce per sublayer; the vocabulary is split over
          the word embeddings (and the tied output projection).
The embedding tables are not split over fsdp (see the rule's comment); with
fsdp alone they are replicated: 8-10% of the parameters of BERT-large or
a 1.3B decoder.
LayerNorm scales and biases, and biases added after a row-split matrix,
are replicated.

Optimizer state follows the parameters: a leaf whose dict-key path and
shape equal a parameter's (Adam's mu and nu) gets that parameter's
sharding; everything else (step counts, schedule state) is replicated.
Parameters are never built whole on one device: `state_shardings` works on
`jax.eval_shape(init)`, and the Runner jits init with these
out_shardings.
"""

import math
import re
from typing import Any, Iterable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from flaxlm.errors import ConfigError

# (regex over the parameter path, spec). Order matters: the first match wins.
DEFAULT_RULES = (
    # Attention: column-parallel q/k/v (heads over `tensor`), row-parallel output projection.
    (r"attention/(query|key|value)/kernel$", ("fsdp", "tensor")),  # [D, N*H]
    (r"attention/(query|key|value)/bias$", ("tensor",)),  # [N*H]
    (r"attention/out/kernel$", ("tensor", "fsdp")),  # [N*H, D]
    # MLP: column-parallel fc_in, row-parallel fc_out.
    (r"mlp/fc_in/kernel$", ("fsdp", "tensor")),  # [D, F]
    (r"mlp/fc_in/bias$", ("tensor",)),  # [F]
    (r"mlp/fc_out/kernel$", ("tensor", "fsdp")),  # [F, D]
    # Embeddings: the vocabulary over `tensor` (the tied output projection too). D stays whole: XLA
    # cannot gather rows of a table split along D into batch-split activations without first
    # rebuilding the whole table on every device ("involuntary full rematerialization").
    (r"word_embeddings/embedding$", ("tensor", None)),  # [V, D]
    (r"mlm_bias$", ("tensor",)),  # [V]
    (r"(position|token_type)_embeddings/embedding$", ()),  # [T, D], [2, D]: small
    # ALBERT's factorised embeddings: the E -> D projection, its output dimension D over `fsdp`.
    (r"embedding_projection/kernel$", (None, "fsdp")),  # [E, D]
    # Heads on [CLS] / masked positions: small; split the input dimension over `fsdp` only.
    (r"(pooler|mlm_transform)/kernel$", ("fsdp", None)),  # [D, D]; mlm_transform [D, E] with ALBERT
    (r"pair_head/kernel$", ()),  # [D, 2]
    # Replicated: biases added after a row-split (or small) matrix, and LayerNorm.
    (r"(attention/out|mlp/fc_out|pooler|mlm_transform|pair_head|embedding_projection)/bias$", ()),
    (r"_norm/(scale|bias)$", ()),
    # Anything else (a fine-tuning head, say) is replicated.
    (r".*", ()),
)

Rule = tuple[str, Sequence[Any]]


def path_str(keypath) -> str:
    """A pytree key path -> "a/b/c" from its dict keys only (drops optax tuple indices and .mu/.nu)."""
    return "/".join(str(k.key) for k in keypath if isinstance(k, jax.tree_util.DictKey))


def _axes(entry) -> tuple[str, ...]:
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def match(path: str, rules: Iterable[Rule]) -> tuple[int, P]:
    """The index of the first rule whose regex is found in `path`, and its PartitionSpec."""
    for i, (regex, spec) in enumerate(rules):
        if re.search(regex, path):
            return i, P(*[e if e is None or isinstance(e, str) else tuple(e) for e in spec])
    raise ConfigError(
        f"no entry of config.sharding.rules matches the parameter {path!r}; "
        "end the rules with ('.*', ()) to replicate whatever no other rule names"
    )


def check_spec(path: str, shape: tuple[int, ...], spec: P, mesh: Mesh, regex: str) -> None:
    """Raises ConfigError unless `spec` fits `shape` on `mesh` (known axes, rank, divisibility)."""
    where = f"parameter {path} of shape {tuple(shape)} (rule {regex!r} -> {tuple(spec)})"
    if len(spec) > len(shape):
        raise ConfigError(f"{where}: the spec has more entries than the array has dims; fix the rule")
    for dim, entry in enumerate(spec):
        axes = _axes(entry)
        unknown = [a for a in axes if a not in mesh.shape]
        if unknown:
            raise ConfigError(f"{where}: unknown mesh axis {unknown[0]!r}; use one of {list(mesh.shape)}")
        size = math.prod(mesh.shape[a] for a in axes)
        if shape[dim] % size:
            named = " x ".join(f"{a!r} (size {mesh.shape[a]})" for a in axes)
            raise ConfigError(
                f"{where}: dim {dim} ({shape[dim]}) is not divisible by mesh axis {named}; "
                f"choose config.mesh sizes that divide {shape[dim]}, or change config.sharding.rules"
            )


def param_specs(params, rules: Iterable[Rule]):
    """The PartitionSpec of every leaf of `params` (arrays or ShapeDtypeStructs), same tree."""
    rules = tuple(rules)
    return jax.tree_util.tree_map_with_path(lambda kp, _: match(path_str(kp), rules)[1], params)


def param_shardings(params, mesh: Mesh, rules: Iterable[Rule]):
    """NamedShardings for `params`, each checked against its array's shape and the mesh."""
    rules = tuple(rules)

    def one(kp, x):
        path = path_str(kp)
        i, spec = match(path, rules)
        check_spec(path, x.shape, spec, mesh, rules[i][0])
        return NamedSharding(mesh, spec)

    return jax.tree_util.tree_map_with_path(one, params)


def state_shardings(state, params, mesh: Mesh, rules: Iterable[Rule]):
    """Shardings for any tree holding `params` and trees that mirror them (a TrainState).

    A leaf whose dict-key path and shape equal a parameter's gets that
    parameter's sharding (so params, Adam's mu and nu all match); every
    other leaf (step counters, optax counts) is replicated.
    """
    by_path = {}
    for kp, x in jax.tree_util.tree_leaves_with_path(params):
        by_path[path_str(kp)] = x.shape
    shardings = param_shardings(params, mesh, rules)
    sharding_of = {path_str(kp): s for kp, s in jax.tree_util.tree_leaves_with_path(shardings)}
    replicated = NamedSharding(mesh, P())

    def one(kp, x):
        path = path_str(kp)
        if path in by_path and tuple(by_path[path]) == tuple(x.shape):
            return sharding_of[path]
        return replicated

    return jax.tree_util.tree_map_with_path(one, state)


def explain(params, rules: Iterable[Rule]) -> list[tuple[str, tuple[int, ...], str, tuple]]:
    """(path, shape, matching regex, spec) per parameter: what the rules do to a model."""
    rules = tuple(rules)
    rows = []
    for kp, x in jax.tree_util.tree_leaves_with_path(params):
        path = path_str(kp)
        i, spec = match(path, rules)
        rows.append((path, tuple(x.shape), rules[i][0], tuple(spec)))
    return rows


def bytes_per_device(tree, shardings) -> int:
    """Bytes one device holds of `tree` (arrays or ShapeDtypeStructs) laid out by `shardings`."""
    total = 0
    for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)):
        shard = s.shard_shape(tuple(x.shape))
        total += math.prod(shard) * np.dtype(x.dtype).itemsize
    return total
