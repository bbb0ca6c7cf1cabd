"""Several seeds as one program (config.train.num_seeds=K): what seed i is, where it writes, the seed axis.

Seed i of K (0-based) is the single run with config.train.seed + i and
config.data.seed + i: its own init and dropout keys, its own shuffle order
and dynamic masks, and evaluation masks from its data seed + 1, as that run.
The K states and batches are stacked on a leading seed axis and one jitted
step, vmapped over it, trains them all (flaxlm/train.py).

Each seed writes WORKDIR/seed_i exactly as its single run writes its
workdir: config.json (that run's config, num_seeds=1), metrics.jsonl and
checkpoints/ (its own state and data-iterator position), so every tool that
reads a workdir (finetune --init, score, export, a resumed single run)
takes WORKDIR/seed_i. WORKDIR/config.json records the K-seed config. With
K = 1 nothing changes: the run is WORKDIR itself and nothing is stacked.
"""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


def seed_configs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
    """The single-run config of each seed: [config] itself when num_seeds is 1."""
    k = config.train.num_seeds
    if k == 1:
        return [config]
    configs = []
    for i in range(k):
        c = config.copy_and_resolve_references()
        c.train.seed, c.data.seed, c.train.num_seeds = config.train.seed + i, config.data.seed + i, 1
        configs.append(c)
    return configs


def seed_workdirs(workdir: str, num_seeds: int) -> list[str]:
    """Where each seed's run lives: [workdir] for a single run, else workdir/seed_0 ... seed_{K-1}."""
    if num_seeds == 1:
        return [workdir]
    return [os.path.join(workdir, f"seed_{i}") for i in range(num_seeds)]


def stack(trees: list):
    """One tree with a leading seed axis [K, ...] from K trees; [tree] gives tree itself.

    numpy leaves stay numpy (batches stay on the host until they are placed).
    """
    if len(trees) == 1:
        return trees[0]
    return jax.tree.map(lambda *xs: np.stack(xs) if isinstance(xs[0], np.ndarray) else jnp.stack(xs), *trees)


def unstack(tree, num_seeds: int) -> list:
    """The K trees along the leading seed axis; [tree] when num_seeds is 1."""
    if num_seeds == 1:
        return [tree]
    return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(num_seeds)]
