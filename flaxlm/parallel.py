"""Device mesh and batch placement for the two train-step paths (mesh jit, pmap)."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from flaxlm.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the batch dimension is split over both


def make_mesh(mesh_cfg, devices=None) -> Mesh:
    """A (data, fsdp, tensor) mesh over all devices; one axis may be -1 (= what remains)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = [mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor]
    if shape.count(-1) > 1:
        raise ConfigError(f"config.mesh {dict(zip(MESH_AXES, shape))}: at most one axis may be -1")
    known = int(np.prod([s for s in shape if s != -1]))
    if -1 in shape:
        if len(devices) % known:
            raise ConfigError(
                f"config.mesh {dict(zip(MESH_AXES, shape))} does not divide the {len(devices)} devices"
            )
        shape[shape.index(-1)] = len(devices) // known
    if int(np.prod(shape)) != len(devices):
        raise ConfigError(
            f"config.mesh {dict(zip(MESH_AXES, shape))} needs {int(np.prod(shape))} devices, "
            f"but {len(devices)} are present; set the axes so their product is {len(devices)}"
        )
    # Plain Mesh (Auto axis types): jax.make_mesh's Explicit default breaks nn.Embed.
    return Mesh(np.array(devices).reshape(shape), MESH_AXES)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES))


def with_seed_axis(shardings):
    """The same layouts for arrays with a leading seed axis (num_seeds > 1), never split over devices."""
    return jax.tree.map(lambda s: NamedSharding(s.mesh, P(None, *s.spec)), shardings)


def check_batch_divisible(global_batch: int, num_shards: int, what: str = "devices"):
    if global_batch % num_shards:
        raise ConfigError(
            f"config.train.batch_size={global_batch} is not divisible by the {num_shards} "
            f"{what}; use a multiple of {num_shards}"
        )


def global_batch(local_batch, sharding: NamedSharding):
    """Host-local numpy batch → global jax.Arrays laid out by `sharding` (multi-host safe)."""
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
    )


def pmap_batch(local_batch, num_local_devices: int):
    """[B, ...] → [devices, B/devices, ...] for a pmapped step."""

    def split(x):
        x = np.asarray(x)
        return x.reshape(num_local_devices, x.shape[0] // num_local_devices, *x.shape[1:])

    return jax.tree.map(split, local_batch)
