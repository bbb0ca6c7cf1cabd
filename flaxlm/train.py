"""The training loop: data → state → jitted (or pmapped) steps → metrics, evals, checkpoints.

`train_and_evaluate(config, workdir)` is what `flaxlm train` runs. It
resumes from the latest complete checkpoint in `workdir` when there is one.
"""

import contextlib
import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import jax_utils
from jax.experimental import multihost_utils
from tqdm import tqdm

from flaxlm import baselines
from flaxlm import checkpoint as ckpt
from flaxlm import config as config_lib
from flaxlm import errors
from flaxlm import metrics as metrics_lib
from flaxlm import models
from flaxlm import objectives
from flaxlm import optimizer as optimizer_lib
from flaxlm import parallel
from flaxlm import preemption
from flaxlm import sharding as sharding_lib
from flaxlm import train_step as step_lib
from flaxlm.data import pipeline
from flaxlm.data import prepare as prepare_lib

log = logging.getLogger(__name__)


def model_config(config) -> ml_collections.ConfigDict:
    """The model section plus what the objective decides (whether the pair head exists)."""
    mc = ml_collections.ConfigDict(config.model.to_dict())
    mc.pair_head = objectives.has_pair_head(config.objective)
    return mc


def dummy_batch(config, batch_size: int = 1):
    """A batch of the right structure and shapes (zeros) for init and abstract evaluation."""
    T, P = config.data.seq_len, config.data.max_predictions
    z = lambda *s: np.zeros((batch_size, *s), np.int32)
    if config.objective == "clm":
        return {"input_ids": z(T), "segment_ids": z(T), "positions": z(T)}
    batch = {
        "input_ids": z(T),
        "token_type_ids": z(T),
        "segment_ids": z(T),
        "positions": z(T),
        "mlm_positions": z(P),
        "mlm_targets": z(P),
        "mlm_weights": np.zeros((batch_size, P), np.float32),
    }
    if objectives.pair_name(config.objective):
        batch["pair_label"] = z()
    return batch


def init_state(model, tx, config, rng) -> step_lib.TrainState:
    batch = dummy_batch(config)
    if config.objective == "clm":
        variables = model.init(
            rng, batch["input_ids"], batch["segment_ids"], batch["positions"], deterministic=True
        )
    else:
        variables = model.init(
            rng,
            batch["input_ids"],
            batch["token_type_ids"],
            batch["segment_ids"],
            batch["positions"],
            batch["mlm_positions"],
            deterministic=True,
        )
    params = variables["params"]
    return step_lib.TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        skipped_steps=jnp.zeros((), jnp.int32),
    )


def prepare_data(config) -> prepare_lib.PreparedData:
    """The config's prepared data (built once, then cached), checked against the model's vocabulary.

    With several processes, process 0 prepares first and the others wait, then
    reuse its shards (shared data dir) or prepare their own (host-local dir).
    """

    def prepare():
        return prepare_lib.prepare(
            config.data,
            pair_labels=objectives.has_pair_head(config.objective),
            vocab_size=config.model.vocab_size,
        )

    if jax.process_count() == 1:
        data = prepare()
    elif jax.process_index() == 0:
        data = prepare()
        multihost_utils.sync_global_devices("flaxlm:data_prepared")
    else:
        multihost_utils.sync_global_devices("flaxlm:data_prepared")
        data = prepare()
    check_vocab(data.tokenizer, config)
    return data


def check_vocab(tok, config):
    if tok.vocab_size != config.model.vocab_size:
        raise config_lib.ConfigError(
            f"the tokenizer has {tok.vocab_size} tokens but "
            f"config.model.vocab_size={config.model.vocab_size}; "
            f"set --config.model.vocab_size={tok.vocab_size}"
        )


def check_resume_config(saved: dict, config) -> None:
    """A checkpoint can only continue a run of the same model shape and vocabulary."""
    saved_model = saved.get("model", {})
    shape_keys = (
        "arch",
        "vocab_size",
        "hidden_size",
        "num_layers",
        "num_heads",
        "mlp_dim",
        "max_len",
        "type_vocab_size",
        "position_embedding",
        "pre_ln",
        "pooler",
    )
    diffs = [
        f"{k}: checkpoint {saved_model.get(k)!r} vs config {config.model[k]!r}"
        for k in shape_keys
        if k in saved_model and saved_model[k] != config.model[k]
    ]
    if saved.get("objective") != config.objective:
        diffs.append(f"objective: checkpoint {saved.get('objective')!r} vs config {config.objective!r}")
    if diffs:
        raise config_lib.ConfigError(
            "the checkpoint in the workdir was written by a different model ("
            + "; ".join(diffs)
            + "); use a new --workdir or the matching config"
        )


class Runner:
    """Holds the compiled steps and data placement of one parallelism path."""

    def __init__(self, config, model, tx, schedule, devices=None):
        self.config = config
        self.pmap = config.parallelism == "pmap"
        tc = config.train
        kwargs = dict(objective=config.objective, pair_weight=config.pair_weight)
        train_kwargs = dict(kwargs, grad_accum_steps=tc.grad_accum_steps, debug_nan_step=tc.debug_nan_step)
        if self.pmap:
            self.devices = devices or jax.local_devices()
            self.n = len(self.devices)
            parallel.check_batch_divisible(tc.batch_size // jax.process_count(), self.n, "local devices")
            train = step_lib.make_train_step(model, tx, schedule, axis_name="batch", **train_kwargs)
            self._train = jax.pmap(
                train, axis_name="batch", in_axes=(0, 0, None), donate_argnums=(0,), devices=self.devices
            )
            self._eval = jax.pmap(
                step_lib.make_eval_step(model, axis_name="batch", **kwargs),
                axis_name="batch",
                devices=self.devices,
            )
        else:
            self.mesh = parallel.make_mesh(config.mesh, devices)
            shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
            parallel.check_batch_divisible(tc.batch_size, shards, "data-parallel devices (mesh data x fsdp)")
            self.batch_sharding = parallel.batch_sharding(self.mesh)
            rep = parallel.replicated(self.mesh)
            # Parameters and optimizer state laid out by config.sharding.rules (flaxlm/sharding.py).
            shapes = jax.eval_shape(lambda r: init_state(model, tx, config, r), jax.random.key(0))
            self.state_sharding = sharding_lib.state_shardings(
                shapes, shapes.params, self.mesh, config.sharding.rules
            )
            train = step_lib.make_train_step(model, tx, schedule, **train_kwargs)
            self._train = jax.jit(
                train,
                in_shardings=(self.state_sharding, self.batch_sharding, rep),
                out_shardings=(self.state_sharding, rep),
                donate_argnums=(0,),
            )
            self._eval = jax.jit(
                step_lib.make_eval_step(model, **kwargs),
                in_shardings=(self.state_sharding.params, self.batch_sharding),
                out_shardings=rep,
            )
        if tc.batch_size // tc.grad_accum_steps % (self.n if self.pmap else 1):
            raise config_lib.ConfigError(
                "config.train.batch_size / grad_accum_steps must split over the devices"
            )

    # State placement -------------------------------------------------------
    def in_mesh(self):
        """The context the mesh steps run in: it lets the models' activation constraints see the mesh."""
        return contextlib.nullcontext() if self.pmap else jax.set_mesh(self.mesh)

    def init(self, model, tx, rng):
        init = lambda r: init_state(model, tx, self.config, r)
        if self.pmap:
            return jax_utils.replicate(jax.jit(init)(rng), self.devices)
        with self.in_mesh():  # each device computes only its own shards: no full copy anywhere
            return jax.jit(init, out_shardings=self.state_sharding)(rng)

    def host_state(self, state):
        """The state as one copy (what checkpoints and exports hold)."""
        return jax_utils.unreplicate(state) if self.pmap else state

    def place_state(self, state):
        return jax_utils.replicate(state, self.devices) if self.pmap else state

    def abstract_state(self, model, tx, rng):
        shapes = jax.eval_shape(lambda r: init_state(model, tx, self.config, r), rng)
        if self.pmap:
            sharding = jax.sharding.SingleDeviceSharding(self.devices[0])
            return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)
        return jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, self.state_sharding
        )

    # Steps -------------------------------------------------------------------
    def put_batch(self, local_batch):
        if self.pmap:
            return parallel.pmap_batch(local_batch, self.n)
        return parallel.global_batch(local_batch, self.batch_sharding)

    def train_step(self, state, batch, rng):
        batch = self.put_batch(batch)
        with self.in_mesh():
            return self._train(state, batch, rng)

    def lower_train_step(self, state, batch, rng):
        """The train step lowered for (possibly abstract) placed inputs; `.compile()` it to inspect it."""
        with self.in_mesh():
            return self._train.lower(state, batch, rng)

    def eval_step(self, params, batch):
        batch = self.put_batch(batch)
        with self.in_mesh():
            metrics, totals = self._eval(params, batch)
        if self.pmap:
            metrics, totals = jax.tree.map(lambda x: x[0], (metrics, totals))
        return metrics, totals

    def metrics_to_host(self, metrics):
        metrics = jax.device_get(metrics)
        if self.pmap:
            metrics = jax.tree.map(lambda x: x[0], metrics)
        return {k: float(v) for k, v in metrics.items()}


def evaluate(runner: Runner, params, batches, pair_weight: float) -> dict[str, float]:
    acc = step_lib.EvalAccumulator(pair_weight)
    for batch in batches:
        metrics, totals = runner.eval_step(params, batch)
        acc.add(jax.device_get(metrics), jax.device_get(totals))
    return acc.result()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains `config` in `workdir` (resuming if it holds a checkpoint); returns the last eval metrics.

    SIGTERM/SIGINT during the loop: the current step is finished, saved and
    waited for, and the function returns early (rerun to resume). A
    non-finite loss or gradient norm raises NonFiniteError before anything
    of that step is saved (config.train.nonfinite="stop"), or drops the
    step's update ("skip").
    """
    config_lib.validate(config)
    tc = config.train
    is_main = jax.process_index() == 0
    ckpt.check_writable(workdir)  # before minutes of data preparation

    data = prepare_data(config)
    log.info("data: %s (train %d, validation %d examples)", data.path, len(data.train), len(data.validation))

    model = models.get_model(model_config(config))
    schedule = optimizer_lib.learning_rate_schedule(tc)
    tx = optimizer_lib.make_optimizer(tc)
    runner = Runner(config, model, tx, schedule)

    init_rng, dropout_rng = jax.random.split(jax.random.key(tc.seed))
    data_iter = pipeline.train_iterator(
        data,
        global_batch=tc.batch_size,
        seed=config.data.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        prefetch=config.data.prefetch,
    )
    eval_batches = pipeline.eval_batches(
        data,
        global_batch=tc.batch_size,
        seed=config.data.seed + 1,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        max_batches=tc.eval_batches,
    )

    # Trivial baselines on the same held-out targets as the model (the whole validation list, not
    # this host's slice), logged with every evaluation.
    baseline = baselines.evaluate(
        baselines.train_statistics(data),
        pipeline.eval_batches(
            data, global_batch=tc.batch_size, seed=config.data.seed + 1, max_batches=tc.eval_batches
        ),
        config.objective,
    )
    if is_main:
        tqdm.write(
            "baselines on the held-out targets: "
            + ", ".join(f"eval_{k}={v:.4f}" for k, v in sorted(baseline.items()))
        )

    mngr = ckpt.manager(workdir, keep=tc.keep_checkpoints)
    state, latest = ckpt.restore_latest(
        mngr,
        workdir,
        runner.abstract_state(model, tx, init_rng),
        data_iter,
        check_config=lambda saved: check_resume_config(saved, config),
    )
    if state is not None:
        state = runner.place_state(state)
        log.info("resumed from the checkpoint of step %d in %s", latest, workdir)
        if is_main:
            print(f"flaxlm: resuming from step {latest} ({workdir}/checkpoints/{latest})", flush=True)
    else:
        state = runner.init(model, tx, init_rng)
    start = latest or 0
    last = tc.stop_at_step or tc.num_steps  # a phase may end early; the schedule spans num_steps

    if is_main:
        with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config.to_dict(), f, indent=2, default=str)
        n_params = sum(x.size for x in jax.tree.leaves(runner.host_state(state).params))
        log.info("model: %s, %d parameters; objective %s", config.model.arch, n_params, config.objective)

    writer = metrics_lib.MetricWriter(workdir, enabled=is_main, start=start)
    bar = tqdm(total=last, initial=start, disable=not is_main, desc="train", unit="step", dynamic_ncols=True)
    eval_metrics: dict[str, float] = {}
    pending = None  # (step, device metrics): read one step late so logging never stalls the device
    # (step, device metrics) of the steps whose finiteness the host has not read yet. Reading
    # them waits for the device, so it happens every config.train.check_finite_every steps
    # (and before every save), not after each step.
    unchecked: list = []
    last_saved = latest  # newest checkpoint known good (saved from a checked state, or restored)
    tokens, t_last = 0, time.perf_counter()

    def log_train(step, device_metrics):
        nonlocal tokens, t_last
        m = runner.metrics_to_host(device_metrics)
        m.pop("finite")
        now = time.perf_counter()
        m["tokens_per_s"] = tokens / max(now - t_last, 1e-9)
        tokens, t_last = 0, now
        writer.write(step, m)
        bar.set_postfix(loss=f"{m['loss']:.3f}", tok_s=f"{m['tokens_per_s']:.0f}")

    def run_eval(step):
        nonlocal eval_metrics, tokens, t_last
        eval_metrics = evaluate(runner, state.params, eval_batches, config.pair_weight)
        writer.write(step, {**eval_metrics, **baseline}, prefix="eval_")
        if is_main:
            tqdm.write(
                f"step {step}: " + ", ".join(f"eval_{k}={v:.4f}" for k, v in sorted(eval_metrics.items()))
            )
        t_last, tokens = time.perf_counter(), 0  # evaluation time is not training throughput

    def check_finite(steps_metrics):
        """Reads the `finite` flags of these steps at once; warns (skip) or raises (stop) for bad ones."""
        flags = jax.device_get([m["finite"] for _, m in steps_metrics])
        for (step, device_metrics), flag in zip(steps_metrics, flags):
            if not np.all(flag):  # pmap: one copy per device, all equal
                nonfinite(step, device_metrics)

    def nonfinite(step, device_metrics):
        m = runner.metrics_to_host(device_metrics)
        what = f"non-finite loss ({m['loss']}) or gradient norm ({m['grad_norm']}) at step {step}"
        if tc.nonfinite == "skip":
            log.warning("%s: update skipped (%d skipped so far)", what, int(m["skipped_steps"]))
            return
        kept = (
            f"the checkpoint of step {last_saved} is untouched" if last_saved else "no checkpoint was written"
        )
        raise errors.NonFiniteError(
            f"{what}; stopped without saving it, {kept}; lower config.train.learning_rate, "
            "or set --config.train.nonfinite=skip to drop such steps"
        )

    def disk_error(e: BaseException, step: int) -> errors.WorkdirError | None:
        os_err = ckpt.os_error_in(e)
        if os_err is None:
            return None
        mngr.reload()
        good = [s for s in mngr.all_steps() if s != step]
        kept = f"the checkpoint of step {max(good)} is intact" if good else "no earlier checkpoint exists"
        return errors.WorkdirError(
            f"cannot write the checkpoint of step {step} to {ckpt.checkpoint_dir(workdir)}: "
            f"{os_err.strerror or os_err}; {kept}; free space or choose a writable --workdir, then rerun"
        )

    def save(step):
        nonlocal last_saved
        try:
            ckpt.save(mngr, step, runner.host_state(state), data_iter, config.to_dict())
            if stopping:
                mngr.wait_until_finished()  # durable before we report it and exit
        except Exception as e:
            raise (disk_error(e, step) or e) from e
        last_saved = step

    if start == 0:
        run_eval(0)  # the starting point of every learning curve
    stopping = False
    try:
        with preemption.Preemption() as preempt:
            for step in range(start + 1, last + 1):
                batch = next(data_iter)
                tokens += pipeline.batch_tokens(batch) * jax.process_count()
                state, metrics = runner.train_step(state, batch, dropout_rng)
                unchecked.append((step, metrics))
                if (
                    step % tc.check_finite_every == 0
                ):  # all but this step: done by now, reading does not stall
                    check_finite(unchecked[:-1])
                    unchecked = unchecked[-1:]
                if pending is not None:
                    log_train(*pending)
                    pending = None
                if step % tc.log_every == 0 or step == last:
                    pending = (step, metrics)
                bar.update(1)
                stopping = preempt.should_stop(step)
                if step % tc.eval_every == 0 or step == last:
                    if pending is not None:
                        log_train(*pending)
                        pending = None
                    run_eval(step)
                if step % tc.checkpoint_every == 0 or step == last or stopping:
                    check_finite(unchecked)  # never save a state the host has not seen finite
                    unchecked = []
                    save(step)
                if stopping:
                    break
        check_finite(unchecked)
        if pending is not None:
            log_train(*pending)
        try:
            mngr.wait_until_finished()
        except Exception as e:
            raise (disk_error(e, last_saved) or e) from e
    finally:
        bar.close()
        try:  # let good saves already under way finish, whatever stopped the loop
            mngr.wait_until_finished()
        except Exception:  # noqa: BLE001 - reported above when it matters; never mask the first error
            log.debug("waiting for checkpoints after an error", exc_info=True)
        mngr.close()
        writer.close()
    if is_main and stopping:
        print(
            f"flaxlm: stopped by {preempt.signal_name} at step {step}; checkpoint saved to "
            f"{ckpt.checkpoint_dir(workdir)}/{step}; rerun the same command to resume",
            flush=True,
        )
    elif is_main:
        print(
            f"flaxlm: done at step {last}; metrics in {workdir}/metrics.jsonl, "
            f"checkpoint in {workdir}/checkpoints/{last}",
            flush=True,
        )
        if eval_metrics:
            print(f"flaxlm: held-out {baselines.summary(eval_metrics, baseline)}", flush=True)
    return eval_metrics
