"""Orbax checkpoints of a training run: train state, data-iterator position and config together.

Layout: WORKDIR/checkpoints/<step>/{state,data,config}. Orbax writes each
step into a temporary folder and renames it when complete, so a crash
mid-save leaves the previous checkpoint as the latest complete one.
"""

import logging

import grain
import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


def manager(workdir: str, *, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save, cleanup_tmp_directories=True
    )
    return ocp.CheckpointManager(f"{workdir}/checkpoints", options=options)


def save(mngr: ocp.CheckpointManager, step: int, state, data_iterator, config_dict) -> None:
    """Starts saving `step` (async: returns once the arrays are copied off the device)."""
    items = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(config_dict)}
    if data_iterator is not None:
        items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    mngr.save(step, args=ocp.args.Composite(**items), force=True)


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state, data_iterator):
    """Restores the state at `step` onto the shardings of `abstract_state`, and the iterator in place."""
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = mngr.restore(step, args=ocp.args.Composite(**items))
    return restored["state"]


def saved_config(mngr: ocp.CheckpointManager, step: int) -> dict:
    return mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]


def abstract_like(state, shardings=None):
    """ShapeDtypeStructs (with target shardings) describing `state`, for a restore."""
    if shardings is None:
        shardings = jax.tree.map(lambda x: getattr(x, "sharding", None), state)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
