"""Checkpoints in-process on 8 fake devices: restore onto other meshes, a full disk, a workdir that
cannot be written, batches that do not split over the devices, the non-finite guard, signals."""

import errno
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flaxlm import checkpoint as ckpt
from flaxlm import errors
from flaxlm import models
from flaxlm import optimizer as optimizer_lib
from flaxlm import preemption
from flaxlm import train as train_lib
from flaxlm.data import pipeline
from test_train import tiny


def make_runner(config, devices=None, parallelism="mesh"):
    config = config.copy_and_resolve_references()
    config.parallelism = parallelism
    model = models.get_model(train_lib.model_config(config))
    tx = optimizer_lib.make_optimizer(config.train)
    runner = train_lib.Runner(config, model, tx, optimizer_lib.learning_rate_schedule(config.train), devices)
    return runner, model, tx


@pytest.fixture(scope="module")
def batches(data_dir):
    config = tiny("bert_tiny", data_dir)
    data = train_lib.prepare_data(config)
    return config, pipeline.take(pipeline.train_iterator(data, global_batch=16, seed=0), 3)


def test_restore_onto_4_devices_1_device_and_pmap(batches, tmp_path):
    config, (b1, b2, b3) = batches
    rng = jax.random.key(0)
    runner8, model, tx = make_runner(config)
    assert runner8.mesh.devices.size == 8
    state = runner8.init(model, tx, rng)
    for b in (b1, b2):
        state, _ = runner8.train_step(state, b, rng)
    mngr = ckpt.manager(str(tmp_path), keep=1, async_save=False)
    ckpt.save(mngr, 2, state, None, config.to_dict())
    saved = jax.device_get(runner8.host_state(state))
    _, ref_metrics = runner8.train_step(state, b3, rng)  # (donates `state`)
    ref_loss = runner8.metrics_to_host(ref_metrics)["loss"]

    for devices, parallelism in ((jax.devices()[:4], "mesh"), (jax.devices()[:1], "mesh"), (None, "pmap")):
        runner, model, tx = make_runner(config, devices, parallelism)
        restored = ckpt.restore(mngr, 2, runner.abstract_state(model, tx, rng), None)
        host = jax.device_get(restored)
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(host), jax.tree.leaves(saved)))
        if len(runner.devices if runner.pmap else runner.mesh.devices.flat) == 1:  # (compiles are slow)
            # ... and it trains on: the next step's loss is the 8-device one.
            _, metrics = runner.train_step(runner.place_state(restored), b3, rng)
            np.testing.assert_allclose(runner.metrics_to_host(metrics)["loss"], ref_loss, atol=1e-5, rtol=0)
    mngr.close()


@pytest.mark.parametrize("parallelism", ["mesh", "pmap"])
def test_batch_not_divisible_by_the_8_devices(batches, parallelism):
    config = batches[0].copy_and_resolve_references()
    config.train.batch_size = 12
    with pytest.raises(errors.ConfigError, match="batch_size=12 is not divisible by the 8"):
        make_runner(config, parallelism=parallelism)


@pytest.mark.parametrize("where", ["file", "proc"])
def test_unwritable_workdir_is_one_clear_error(tmp_path, data_dir, where):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    workdir = str(blocker / "sub") if where == "file" else "/proc/flaxlm-test-workdir"
    with pytest.raises(
        errors.WorkdirError, match=f"cannot write to --workdir {workdir}: .*choose a writable"
    ):
        train_lib.train_and_evaluate(tiny("bert_tiny", data_dir), workdir)


def test_full_disk_during_a_save_keeps_the_previous_checkpoint(tmp_path, data_dir, monkeypatch):
    """ENOSPC simulated in the save of step 4 (grain's handler writes in the blocking part of the save)."""
    from grain._src.python.checkpoint import handler

    original = handler.CheckpointHandler.save

    def full_disk(self, directory, *args, **kwargs):
        if "/4.orbax-checkpoint-tmp" in str(directory):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
        return original(self, directory, *args, **kwargs)

    monkeypatch.setattr(handler.CheckpointHandler, "save", full_disk)
    config = tiny("bert_tiny", data_dir, num_steps=6, checkpoint_every=2, eval_every=100, eval_batches=1)
    workdir = str(tmp_path / "run")
    with pytest.raises(errors.WorkdirError) as e:
        train_lib.train_and_evaluate(config, workdir)
    msg = str(e.value)
    assert "checkpoint of step 4" in msg and "No space left on device" in msg, msg
    assert "the checkpoint of step 2 is intact" in msg, msg
    mngr = ckpt.manager(workdir, keep=3)
    assert mngr.latest_step() == 2
    params, step, _ = ckpt.restore_params(workdir)
    assert step == 2 and all(np.isfinite(x).all() for x in jax.tree.leaves(params))
    mngr.close()


def test_nonfinite_step_leaves_params_and_optimizer_state_unchanged(batches):
    config, (b1, b2, _) = batches
    config = config.copy_and_resolve_references()
    config.train.debug_nan_step = 2
    runner, model, tx = make_runner(config, jax.devices()[:1])
    rng = jax.random.key(0)
    state, m1 = runner.train_step(runner.init(model, tx, rng), b1, rng)
    before = jax.device_get((state.params, state.opt_state))
    state, m2 = runner.train_step(state, b2, rng)
    m1, m2 = runner.metrics_to_host(m1), runner.metrics_to_host(m2)
    assert m1["finite"] == 1.0 and m1["skipped_steps"] == 0.0
    assert m2["finite"] == 0.0 and m2["skipped_steps"] == 1.0 and np.isnan(m2["loss"])
    after = jax.device_get((state.params, state.opt_state))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before)))
    assert int(state.step) == 2 and int(state.skipped_steps) == 1


def test_preemption_handler_flags_signals_and_restores_the_previous_handlers():
    previous = signal.getsignal(signal.SIGINT)
    with preemption.Preemption() as p:
        assert not p.should_stop(1)
        os.kill(os.getpid(), signal.SIGINT)
        assert p.should_stop(2) and p.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C does not wait
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is previous


def test_after_a_skipped_step_the_logged_learning_rate_is_the_one_applied(batches):
    """nonfinite=skip: the step after a skipped one logs the rate optax applies (its schedule's count)."""
    config, (b1, b2, b3) = batches
    config = config.copy_and_resolve_references()
    config.train.debug_nan_step = 2
    runner, model, tx = make_runner(config, jax.devices()[:1])
    schedule = optimizer_lib.learning_rate_schedule(config.train)
    rng = jax.random.key(0)
    state = runner.init(model, tx, rng)
    for batch in (b1, b2):
        state, _ = runner.train_step(state, batch, rng)
    counts = [
        int(s.count)
        for s in jax.tree.leaves(state.opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByScheduleState))
        if isinstance(s, optax.ScaleByScheduleState)
    ]
    assert counts == [1] and int(state.step) == 2  # one update applied in two steps
    _, m3 = runner.train_step(state, b3, rng)
    lr = runner.metrics_to_host(m3)["learning_rate"]
    assert lr == pytest.approx(float(schedule(1))) and lr != pytest.approx(float(schedule(2)))


@pytest.fixture
def two_checkpoints(tmp_path):
    """Steps 1 and 2 of a small state in tmp_path/checkpoints; returns (manager, abstract state)."""
    state = {"w": jnp.arange(50_000, dtype=jnp.float32), "b": jnp.ones(3)}
    mngr = ckpt.manager(str(tmp_path), keep=3, async_save=False)
    for step in (1, 2):
        ckpt.save(mngr, step, {k: v + step for k, v in state.items()}, None, {"model": {}})
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    yield mngr, abstract
    mngr.close()


def test_an_io_error_while_restoring_stops_and_keeps_the_checkpoint(tmp_path, two_checkpoints, monkeypatch):
    """EIO from a flaky mount says nothing about the checkpoint: no fallback, nothing moved."""
    mngr, abstract = two_checkpoints

    def eio(mngr, step, *args):
        path = f"{tmp_path}/checkpoints/{step}/state/manifest.ocdbt"
        raise RuntimeError("reading failed") from OSError(errno.EIO, os.strerror(errno.EIO), path)

    monkeypatch.setattr(ckpt, "restore", eio)
    with pytest.raises(errors.CheckpointError) as e:
        ckpt.restore_latest(mngr, str(tmp_path), abstract, None)
    msg = str(e.value)
    assert "\n" not in msg and "checkpoint of step 2" in msg and "Input/output error" in msg, msg
    assert "rerun" in msg and f"move {tmp_path}/checkpoints/2 away" in msg, msg
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]
    assert not (tmp_path / "corrupt_checkpoints").exists()


def test_a_damaged_checkpoint_is_moved_aside_with_one_readable_line(tmp_path, two_checkpoints, capfd):
    mngr, abstract = two_checkpoints
    data = [p for p in (tmp_path / "checkpoints" / "2" / "state").rglob("d/*") if p.is_file()]
    biggest = max(data, key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[:100])
    state, step = ckpt.restore_latest(mngr, str(tmp_path), abstract, None)
    assert step == 1 and float(state["b"][0]) == 2.0
    warning = capfd.readouterr().err.strip().splitlines()
    warning = [line for line in warning if line.startswith("flaxlm: warning:")]
    assert len(warning) == 1 and "step 2 is unreadable" in warning[0] and "step 1 instead" in warning[0]
    assert "ValueError: " in warning[0] and len(warning[0]) < 500, warning  # the innermost error
    assert "TensorStore(" not in warning[0], warning  # not orbax's outer one, with its many-line spec
    assert os.listdir(tmp_path / "corrupt_checkpoints")[0].startswith("2-")
