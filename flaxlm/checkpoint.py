"""Orbax checkpoints of a training run: train state, data-iterator position and config together.

Layout: WORKDIR/checkpoints/<step>/{state,data,config}. Orbax writes each
step into `<step>.orbax-checkpoint-tmp-*` and renames it when complete, so
a crash (even kill -9) mid-save leaves a tmp folder that `latest_step`
never lists and the next start deletes; the previous checkpoint stays the
latest complete one. A complete checkpoint whose files cannot be decoded
(truncated or garbled) is moved to WORKDIR/corrupt_checkpoints/<step> and the
run falls back to the newest readable one; an I/O error while reading it (a
flaky network mount) stops the run instead, keeping the checkpoint
(`restore_latest`).

Exports (`flaxlm export`) hold the parameters alone, as one msgpack file
(flax.serialization: nested dicts of numpy arrays, readable without orbax
or a device mesh), with the model config as JSON beside it:
OUT/params.msgpack and OUT/model_config.json. `load_params(OUT)` reads
them back.
"""

import json
import logging
import os
import socket
import sys
import time

import grain
import jax
import orbax.checkpoint as ocp
from flax import serialization

from flaxlm import files
from flaxlm import objectives
from flaxlm import tokenizer_pin
from flaxlm.data.tokenizer import WordPieceTokenizer
from flaxlm.errors import CheckpointError, FlaxlmError, WorkdirError

log = logging.getLogger(__name__)

PARAMS_FILE = "params.msgpack"
MODEL_CONFIG_FILE = "model_config.json"


def checkpoint_dir(workdir: str) -> str:
    """WORKDIR/checkpoints, absolute: orbax refuses relative paths (`--workdir=runs/x` must work)."""
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def manager(workdir: str, *, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save, cleanup_tmp_directories=True
    )
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(mngr: ocp.CheckpointManager, step: int, state, data_iterator, config_dict) -> None:
    """Starts saving `step` (async: returns once the arrays are copied off the device).

    The data iterator's position is read here, synchronously (grain's handler
    is a blocking one), so it is the position after this step's batch.
    """
    items = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(config_dict)}
    if data_iterator is not None:
        items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    mngr.save(step, args=ocp.args.Composite(**items), force=True)


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state, data_iterator):
    """Restores the state at `step` onto the shardings of `abstract_state`, and the iterator in place.

    grain keeps one iterator position per process (data/process_I-of-N.json). A
    checkpoint written by a different number of processes restores too: each
    position counts global batches taken, the same number on every host
    (flaxlm/data/pipeline.py), so every process takes that shared position.
    """
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    data_dir = os.path.join(str(mngr.directory), str(step), "data")
    own = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    same_processes = os.path.exists(os.path.join(data_dir, own))
    if data_iterator is not None and same_processes:
        items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = mngr.restore(step, args=ocp.args.Composite(**items))
    if data_iterator is not None and not same_processes:
        data_iterator.set_state(_shared_position(data_dir))
    return restored["state"]


def _shared_position(data_dir: str) -> dict:
    """The one iterator position all of a checkpoint's processes saved (written by another process count)."""
    names = sorted(f for f in os.listdir(data_dir) if f.startswith("process_") and f.endswith(".json"))
    if not names:  # a damaged checkpoint (not an OSError: those are the storage's, see restore_latest)
        raise ValueError(f"{data_dir} holds no data-iterator position")
    states = []
    for name in names:
        with open(os.path.join(data_dir, name), encoding="utf-8") as f:
            states.append(json.load(f))
    if any(s != states[0] for s in states):
        raise CheckpointError(
            f"the data positions in {data_dir} differ between the {len(names)} processes that wrote them; "
            f"resume with that many processes (this run has {jax.process_count()})"
        )
    return states[0]


def saved_config(mngr: ocp.CheckpointManager, step: int) -> dict:
    return mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]


def _abandoned_read(e: BaseException | None) -> bool:
    """An error left over from orbax's reads of a checkpoint that failed: raised in orbax's code, or
    asyncio's "Event loop is closed" from a TensorStore callback that outlived the restore."""
    if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
        return True
    tb = e.__traceback__ if e is not None else None
    while tb is not None:
        if "orbax" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


class _AbandonedReadsFilter(logging.Filter):
    """Drops asyncio's "Task exception was never retrieved" records of abandoned orbax reads."""

    def filter(self, record: logging.LogRecord) -> bool:
        e = record.exc_info[1] if record.exc_info else None
        if _abandoned_read(e):
            log.debug("ignored after a failed restore: %r", e)
            return False
        return True


def _quiet_abandoned_reads() -> None:
    """Keeps a failed restore's leftovers off stderr: the warning that follows says what happened.

    When one array of a checkpoint cannot be read, orbax abandons the other reads
    under way; their coroutines and TensorStore callbacks end later with the same
    error, or with "Event loop is closed". Python reports those through
    sys.unraisablehook and asyncio through its logger ("Task exception was never
    retrieved"): one traceback each, dozens in all, some before the restore raises.
    These filters, set before the first restore, log exactly those at debug level and
    pass everything else on unchanged.
    """
    previous = sys.unraisablehook
    if getattr(previous, "_flaxlm_quiet", False):
        return

    def hook(unraisable):
        if _abandoned_read(unraisable.exc_value):
            log.debug("ignored after a failed restore: %r", unraisable.exc_value)
        else:
            previous(unraisable)

    hook._flaxlm_quiet = True
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(_AbandonedReadsFilter())


def _chain(e: BaseException | None) -> list[BaseException]:
    """`e` and the exceptions it was raised from, outermost first."""
    out: list[BaseException] = []
    while e is not None and all(e is not x for x in out):
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def _why(e: BaseException) -> str:
    """One readable line for a failed restore: the innermost error of the chain (orbax's outer ones
    embed a TensorStore spec many lines long), cut at 240 characters."""
    root = _chain(e)[-1]
    text = f"{type(root).__name__}: " + " ".join(str(root).split())
    return text if len(text) <= 240 else text[:239] + "…"


def _storage_error(e: BaseException) -> bool:
    """An error of the storage rather than of the checkpoint's bytes: an OSError anywhere in the chain
    (EIO, ENOENT, ESTALE from a flaky mount) or TensorStore's UNAVAILABLE / DEADLINE_EXCEEDED."""
    transient = ("UNAVAILABLE", "DEADLINE_EXCEEDED")
    return os_error_in(e) is not None or any(str(x).startswith(transient) for x in _chain(e))


def quarantine(workdir: str, step: int) -> str:
    """Moves checkpoint `step` out of the manager's sight (kept, for a post-mortem); returns where."""
    dest_root = os.path.join(workdir, "corrupt_checkpoints")
    os.makedirs(dest_root, exist_ok=True)
    dest = os.path.join(dest_root, f"{step}-{int(time.time())}")
    os.replace(os.path.join(checkpoint_dir(workdir), str(step)), dest)
    return dest


def restore_latest(mngr, workdir: str, abstract_state, data_iterator, check_config=None, max_step=None):
    """Restores the newest readable checkpoint; returns (state, step), or (None, None) if there is none.

    `max_step`: consider only the checkpoints of steps up to it.

    `check_config(saved_config_dict)` may raise FlaxlmError (a checkpoint of a
    different model): that is the user's to fix and propagates. An I/O error
    (`_storage_error`) says nothing about the checkpoint: CheckpointError, naming
    the step and asking for a rerun, with everything left in place. Any other
    failure to read a checkpoint means it is damaged: the next older one is
    tried, and once one restores the damaged newer ones are moved to
    WORKDIR/corrupt_checkpoints (so later saves of those steps do not
    collide) with a one-line warning naming both steps. If none restores,
    nothing is moved and CheckpointError names them all.
    """
    steps = sorted((s for s in mngr.all_steps() if max_step is None or s <= max_step), reverse=True)
    failed: list[tuple[int, str]] = []
    _quiet_abandoned_reads()
    for step in steps:
        try:
            config = saved_config(mngr, step)
            if check_config is not None:
                check_config(config)
            state = restore(mngr, step, abstract_state, data_iterator)
        except FlaxlmError:
            raise
        except Exception as e:  # noqa: BLE001 - any other unreadable file means a damaged checkpoint
            log.debug("checkpoint %d failed to restore", step, exc_info=True)
            if _storage_error(e):
                where = os.path.join(checkpoint_dir(workdir), str(step))
                raise CheckpointError(
                    f"cannot read the checkpoint of step {step} ({_why(e)}); it is kept in place: rerun "
                    f"when the storage is reachable again (if this persists, move {where} away to resume "
                    "from the checkpoint before it)"
                ) from e
            failed.append((step, _why(e)))
            continue
        for bad, why in failed:
            where = quarantine(workdir, bad) if jax.process_index() == 0 else "corrupt_checkpoints/"
            sys.stderr.write(
                f"flaxlm: warning: the checkpoint of step {bad} is unreadable ({why}); "
                f"moved it to {where} and resuming from the checkpoint of step {step} instead\n"
            )
        if failed:
            if jax.process_count() > 1:
                from jax.experimental import multihost_utils

                multihost_utils.sync_global_devices("flaxlm:quarantined")
            mngr.reload()
        return state, step
    if failed:
        raise CheckpointError(
            f"no checkpoint in {checkpoint_dir(workdir)} can be read ("
            + "; ".join(f"step {s}: {why}" for s, why in failed)
            + "); move the checkpoints folder away to start from scratch"
        )
    return None, None


def restore_common(mngrs, workdirs, abstract_state, data_iterators, check_config=None):
    """restore_latest for the workdirs of the seeds of one run (flaxlm/seeds.py), at one common step.

    Returns (one state per seed, step), or (None, None) if they have no common checkpoint. Each seed
    saves through its own manager, so a crash during a save can leave some seeds a checkpoint
    ahead of the others: those newer checkpoints are deleted (the resumed run recomputes them
    exactly, and a later save of the same step must not collide). With one workdir this is
    restore_latest.
    """
    cap = max(set.intersection(*(set(m.all_steps()) for m in mngrs)), default=0)
    while True:
        restored = [
            restore_latest(m, wd, abstract_state, it, check_config, max_step=cap)
            for m, wd, it in zip(mngrs, workdirs, data_iterators)
        ]
        steps = {step or 0 for _, step in restored}
        if len(steps) == 1:
            break
        cap = min(steps)  # a seed's checkpoint at `cap` was unreadable: fall back together
    for m, wd in zip(mngrs, workdirs):
        ahead = [s for s in m.all_steps() if s > cap]
        if ahead and jax.process_index() == 0:
            sys.stderr.write(
                f"flaxlm: warning: {checkpoint_dir(wd)} holds steps {ahead}, ahead of the other seeds' "
                f"common step {cap or 'none'}; deleted them, all seeds resume together\n"
            )
        for s in ahead:
            m.delete(s)
    step = steps.pop() or None
    return ([state for state, _ in restored] if step else None), step


def check_writable(path: str, what: str = "--workdir") -> None:
    """Creates `path` if needed and proves a file can be written there, else WorkdirError (one line)."""
    if "://" in path:  # os.makedirs("gs://b/x") would quietly make a local folder named "gs:"
        raise WorkdirError(
            f"{what} {path} is a URL; flaxlm writes with ordinary file I/O: mount the bucket "
            "(gcsfuse BUCKET /mnt/gcs, as tools/launch/tpu_pod.sh does) and pass a path under the mount"
        )
    # Host and pid: the hosts of a multi-host run probe the same shared workdir at the same moment.
    probe = os.path.join(path, f".flaxlm-write-test-{socket.gethostname()}-{os.getpid()}")
    try:
        os.makedirs(path, exist_ok=True)
        with open(probe, "w", encoding="utf-8") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise WorkdirError(
            f"cannot write to {what} {path}: {e.strerror or e}; choose a writable directory"
        ) from e


def os_error_in(e: BaseException) -> OSError | None:
    """The OSError behind `e` (orbax wraps write failures), or None."""
    return next((x for x in _chain(e) if isinstance(x, OSError)), None)


# Export -------------------------------------------------------------------------------------------------


def restore_params(workdir: str, step: int | None = None):
    """The parameters of checkpoint `step` (default: the latest) as nested dicts of numpy arrays.

    Restored to host memory whatever mesh or device count wrote them.
    Returns (params, step, saved config dict).
    """
    if not os.path.isdir(checkpoint_dir(workdir)):
        raise CheckpointError(f"{workdir} has no checkpoints/ folder; is it a `flaxlm train` --workdir?")
    options = ocp.CheckpointManagerOptions(read_only=True, create=False, enable_async_checkpointing=False)
    handlers = {
        "state": ocp.StandardCheckpointHandler(),
        "config": ocp.JsonCheckpointHandler(),
        "data": grain.checkpoint.CheckpointHandler(),
    }
    with ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_handlers=handlers) as mngr:
        steps = mngr.all_steps()
        if not steps:
            raise CheckpointError(f"{checkpoint_dir(workdir)} holds no complete checkpoint")
        if step is None:
            step = max(steps)
        elif step not in steps:
            raise CheckpointError(
                f"no checkpoint of step {step} in {checkpoint_dir(workdir)}; "
                f"it has steps {', '.join(map(str, sorted(steps)))}"
            )
        # Onto this host's first device, whatever mesh wrote it: explicit target shardings make
        # orbax reshard instead of trusting the saved (possibly absent) device layout.
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
            mngr.item_metadata(step)["state"],
        )
        restored = mngr.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), config=ocp.args.JsonRestore()),
        )
    return jax.device_get(restored["state"]["params"]), step, restored["config"]


def export_params(workdir: str, out: str, step: int | None = None) -> tuple[str, int]:
    """Writes checkpoint `step`'s parameters and model config to the folder `out`; returns (file, step).

    Each file is written under a temporary name and renamed, so an
    interrupted export never leaves a truncated params file.
    """
    params, step, saved = restore_params(workdir, step)
    model = dict(saved["model"])
    model["pair_head"] = objectives.has_pair_head(saved["objective"])  # as train.model_config
    # "data" lets fine-tuning find the tokenizer pretraining used (flaxlm.pretrained).
    meta = {"model": model, "objective": saved["objective"], "step": int(step), "data": saved.get("data")}
    tok = tokenizer_pin.pinned(workdir)  # the tokenizer the run pinned travels with the export
    if tok is not None:
        add_tokenizer(out, tok, meta)
    return write_export(out, params, meta), step


def add_tokenizer(out: str, tok, meta: dict) -> None:
    """Saves `tok`'s files in the export folder `out` and names them in `meta` for `flaxlm.lm` to read."""
    check_writable(out, "--out")
    meta["tokenizer"] = os.path.basename(tok.save(out)[0])
    if isinstance(tok, WordPieceTokenizer):
        meta["tokenizer_lowercase"] = tok.lowercase


def write_export(out: str, params, meta: dict) -> str:
    """Writes OUT/params.msgpack and OUT/model_config.json (`meta`: model, objective, step, ...).

    The format `load_params` reads; also written by `flaxlm import-hf`. Returns the params file.
    """
    check_writable(out, "--out")
    files.write_atomic(os.path.join(out, PARAMS_FILE), serialization.msgpack_serialize(params))
    files.write_atomic(os.path.join(out, MODEL_CONFIG_FILE), json.dumps(meta, indent=2) + "\n")
    return os.path.join(out, PARAMS_FILE)


def load_params(path: str):
    """Reads an export back: returns (params, model_config dict).

    `path` is the folder `flaxlm export --out` wrote (or its params.msgpack).
    params is the nested dict of numpy arrays that `model.apply({"params": params}, ...)`
    takes; the config dict holds `model` (the fields of config.model plus
    `pair_head`), `objective` and `step`; build the model with
    `flaxlm.models.get_model(ml_collections.ConfigDict(cfg["model"]))`.
    """
    folder = os.path.dirname(path) if path.endswith(PARAMS_FILE) else path
    try:
        with open(os.path.join(folder, PARAMS_FILE), "rb") as f:
            params = serialization.msgpack_restore(f.read())
        with open(os.path.join(folder, MODEL_CONFIG_FILE), encoding="utf-8") as f:
            config = json.load(f)
    except OSError as e:
        raise WorkdirError(f"cannot read the export in {folder}: {e.strerror or e}") from e
    return params, config
