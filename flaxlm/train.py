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
from flaxlm import seeds as seeds_lib
from flaxlm import sharding as sharding_lib
from flaxlm import tokenizer_pin
from flaxlm import train_step as step_lib
from flaxlm.data import builders, pipeline
from flaxlm.data import prepare as prepare_lib

log = logging.getLogger(__name__)


def model_config(config) -> ml_collections.ConfigDict:
    """The model section plus what the objective decides (whether the pair head exists)."""
    mc = ml_collections.ConfigDict(config.model.to_dict())
    mc.pair_head = objectives.has_pair_head(config.objective)
    if objectives.has_sbo_head(config.objective):
        # A span holds at most the masking budget, max_predictions tokens: offsets 0 .. P - 1.
        mc.sbo_positions = config.data.max_predictions
    return mc


def dummy_batch(config, batch_size: int = 1):
    """A batch of the right structure and shapes (zeros) for init and abstract evaluation."""
    T, P = config.data.seq_len, config.data.max_predictions
    z = lambda *s: np.zeros((batch_size, *s), np.int32)
    if config.objective == "clm":
        return {"input_ids": z(T), "segment_ids": z(T), "positions": z(T)}
    if config.objective == "prefix_lm":
        return {"input_ids": z(T), "segment_ids": z(T), "positions": z(T), "prefix_mask": z(T)}
    if objectives.is_seq2seq(config.objective):
        targets_length = builders.targets_length(
            config.data.builder, T, config.data.noise_density, config.data.mean_noise_span_length
        )
        batch = {"input_ids": z(T), "segment_ids": z(T), "positions": z(T), "targets": z(targets_length)}
        return {**batch, **{k: z(targets_length) for k in objectives.SEQ2SEQ_FIELDS}}
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
    if objectives.has_sbo_head(config.objective):
        batch.update(sbo_left=z(P), sbo_right=z(P), sbo_offset=z(P))
    return batch


def init_state(model, tx, config, rng) -> step_lib.TrainState:
    batch = dummy_batch(config)
    if objectives.is_decoder_only(config.objective) or objectives.is_seq2seq(config.objective):
        seq2seq = [batch[k] for k in objectives.SEQ2SEQ_FIELDS if k in batch]
        variables = model.init(
            rng, batch["input_ids"], batch["segment_ids"], batch["positions"], *seq2seq, deterministic=True
        )
    else:
        variables = model.init(
            rng,
            batch["input_ids"],
            batch["token_type_ids"],
            batch["segment_ids"],
            batch["positions"],
            batch["mlm_positions"],
            *[batch[k] for k in objectives.model_fields(config.objective)],
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
            sbo=objectives.has_sbo_head(config.objective),
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
    if config.data.builder in builders.SEQ2SEQ_BUILDERS:
        # The sentinels are the model's last ids, past the tokenizer's (flaxlm.data.builders.sentinel_ids).
        if tok.vocab_size + config.data.num_sentinels > config.model.vocab_size:
            raise config_lib.ConfigError(
                f"the tokenizer has {tok.vocab_size} tokens and {config.data.builder} reserves "
                f"config.data.num_sentinels={config.data.num_sentinels} sentinel ids after them, more than "
                f"config.model.vocab_size={config.model.vocab_size}; set --config.model.vocab_size="
                f"{tok.vocab_size + config.data.num_sentinels}"
            )
        return
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
        "embedding_size",  # ALBERT's factorisation and sharing, RoBERTa's position layout
        "share_layers",
        "position_offset",
        "head_dim",  # T5's shape
        "num_decoder_layers",
        "gated_mlp",
        "tie_embeddings",
        "generator_size",  # ELECTRA's generator width
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
    """Holds the compiled steps and data placement of one parallelism path.

    With config.train.num_seeds = K > 1 (mesh path) the steps are vmapped over a leading seed
    axis of the state, the batch and the dropout key (flaxlm/seeds.py).
    """

    def __init__(self, config, model, tx, schedule, devices=None):
        self.config = config
        self.pmap = config.parallelism == "pmap"
        tc = config.train
        self.num_seeds = tc.num_seeds
        if self.num_seeds > 1 and jax.process_count() > 1:
            raise config_lib.ConfigError(
                f"config.train.num_seeds={self.num_seeds} trains its seeds in one process; with several "
                "processes start one run per seed (--config.train.seed=S+i --config.data.seed=D+i)"
            )
        kwargs = dict(
            objective=config.objective,
            pair_weight=config.pair_weight,
            rtd_weight=config.rtd_weight,
            loss_chunk_size=config.train.loss_chunk_size,
        )
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
            evaluate = step_lib.make_eval_step(model, **kwargs)
            # The state as the steps hold it; self.state_sharding is one seed's (what checkpoints hold).
            self.step_state_sharding = self.state_sharding
            if self.num_seeds > 1:
                train, evaluate = jax.vmap(train), jax.vmap(evaluate)
                self.step_state_sharding = parallel.with_seed_axis(self.state_sharding)
                self.batch_sharding = parallel.with_seed_axis(self.batch_sharding)
            self._train = jax.jit(
                train,
                in_shardings=(self.step_state_sharding, self.batch_sharding, rep),
                out_shardings=(self.step_state_sharding, rep),
                donate_argnums=(0,),
            )
            self._eval = jax.jit(
                evaluate,
                in_shardings=(self.step_state_sharding.params, self.batch_sharding),
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
        """The initial state from `rng` (num_seeds > 1: one key per seed, [K])."""
        init = lambda r: init_state(model, tx, self.config, r)
        if self.pmap:
            return jax_utils.replicate(jax.jit(init)(rng), self.devices)
        if self.num_seeds > 1:
            init = jax.vmap(init)
        with self.in_mesh():  # each device computes only its own shards: no full copy anywhere
            return jax.jit(init, out_shardings=self.step_state_sharding)(rng)

    def host_state(self, state):
        """The state as one copy (what checkpoints and exports hold)."""
        return jax_utils.unreplicate(state) if self.pmap else state

    def place_state(self, state):
        if self.pmap:
            return jax_utils.replicate(state, self.devices)
        return jax.device_put(state, self.step_state_sharding) if self.num_seeds > 1 else state

    def abstract_state(self, model, tx, rng):
        """One seed's state as checkpoints hold it, laid out for restoring."""
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

    def metrics_per_seed(self, metrics) -> list[dict[str, float]]:
        """metrics_to_host for each seed: [dict] when num_seeds is 1."""
        return [self.metrics_to_host(m) for m in seeds_lib.unstack(jax.device_get(metrics), self.num_seeds)]


def evaluate(
    runner: Runner, params, seed_batches, pair_weight: float, rtd_weight: float = 50.0
) -> list[dict[str, float]]:
    """The eval metrics of each seed over its own list of batches (`seed_batches`: one list per seed).

    The seeds' validation splits may differ in length (data.seed decides their segmentation): a seed
    out of batches repeats its last one in the stacked step, and that result is not counted.
    """
    accs = [step_lib.EvalAccumulator(pair_weight, rtd_weight) for _ in seed_batches]
    for j in range(max(len(batches) for batches in seed_batches)):
        batch = seeds_lib.stack([batches[min(j, len(batches) - 1)] for batches in seed_batches])
        metrics, totals = jax.device_get(runner.eval_step(params, batch))
        per_seed = zip(
            accs, seed_batches, *(seeds_lib.unstack(x, runner.num_seeds) for x in (metrics, totals))
        )
        for acc, batches, m, t in per_seed:
            if j < len(batches):
                acc.add(m, t)
    return [acc.result() for acc in accs]


class _Reports:
    """What the loop reports: each seed's metrics.jsonl rows, the progress bar, the eval lines on stdout.

    A train row is written one step late: `defer` keeps the step's device metrics and `flush`, called
    once the next step is dispatched, reads them, so logging never stalls the device. Its
    tokens_per_s counts each seed's training tokens since the previous train row or evaluation.
    """

    def __init__(self, runner: Runner, workdirs, tags, seed_baselines, start: int, last: int, is_main: bool):
        self.runner, self.tags, self.seed_baselines, self.is_main = runner, tags, seed_baselines, is_main
        self.writers = [metrics_lib.MetricWriter(wd, enabled=is_main, start=start) for wd in workdirs]
        self.bar = tqdm(
            total=last, initial=start, disable=not is_main, desc="train", unit="step", dynamic_ncols=True
        )
        self.pending = None  # (step, device metrics) of the train row not written yet
        self._restart_count(time.perf_counter())

    def _restart_count(self, now: float):
        self.tokens, self.since = np.zeros(len(self.tags), np.int64), now

    def count(self, batches):
        """Adds each seed's batch tokens (all hosts') to its throughput count."""
        self.tokens += np.array([pipeline.batch_tokens(b) for b in batches]) * jax.process_count()

    def defer(self, step: int, device_metrics):
        self.pending = (step, device_metrics)

    def flush(self):
        """Writes the deferred train row, if there is one."""
        if self.pending is None:
            return
        (step, device_metrics), self.pending = self.pending, None
        ms = self.runner.metrics_per_seed(device_metrics)
        now = time.perf_counter()
        for writer, m, n in zip(self.writers, ms, self.tokens):
            m.pop("finite")
            m["tokens_per_s"] = int(n) / max(now - self.since, 1e-9)
            writer.write(step, m)
        self._restart_count(now)
        self.bar.set_postfix(
            loss="/".join(f"{m['loss']:.3f}" for m in ms),
            tok_s=f"{sum(m['tokens_per_s'] for m in ms):.0f}",
        )

    def eval(self, step: int, eval_metrics: list[dict[str, float]]):
        """Writes each seed's eval row (with its baselines) and prints its line."""
        for tag, writer, m, baseline in zip(self.tags, self.writers, eval_metrics, self.seed_baselines):
            writer.write(step, {**m, **baseline}, prefix="eval_")
            if self.is_main:
                line = ", ".join(f"eval_{k}={v:.4f}" for k, v in sorted(m.items()))
                tqdm.write(f"{tag}step {step}: {line}")
        self._restart_count(time.perf_counter())  # evaluation time is not training throughput

    def close(self):
        self.bar.close()
        for writer in self.writers:
            writer.close()


def _check_finite(steps_metrics, runner: Runner, policy: str, last_saved: int | None, tags) -> None:
    """Reads the `finite` flags of these (step, device metrics) at once (this waits for the device).

    A non-finite step of a seed is logged as skipped (policy "skip"), or raises NonFiniteError ("stop").
    """
    flags = jax.device_get([m["finite"] for _, m in steps_metrics])
    for (step, device_metrics), flag in zip(steps_metrics, flags):
        if np.all(flag):  # pmap: one copy per device, all equal
            continue
        for tag, m in zip(tags, runner.metrics_per_seed(device_metrics)):
            if m["finite"]:  # another seed's step
                continue
            what = f"{tag}non-finite loss ({m['loss']}) or gradient norm ({m['grad_norm']}) at step {step}"
            if policy == "skip":
                log.warning("%s: update skipped (%d skipped so far)", what, int(m["skipped_steps"]))
                continue
            kept = "no checkpoint was written"
            if last_saved:
                kept = f"the checkpoint of step {last_saved} is untouched"
            raise errors.NonFiniteError(
                f"{what}; stopped without saving it, {kept}; lower config.train.learning_rate, "
                "or set --config.train.nonfinite=skip to drop such steps"
            )


def _disk_error(e: BaseException, mngr, workdir: str, step: int) -> errors.WorkdirError | None:
    """The one-line error for a checkpoint of `step` that the disk refused; None if `e` is not that."""
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


def _save(mngrs, workdirs, step: int, seed_states, data_iters, configs, durable: bool) -> None:
    """Saves each seed's state and data position of `step`; `durable` waits until it is on disk."""
    for mngr, wd, seed_state, data_iter, c in zip(mngrs, workdirs, seed_states, data_iters, configs):
        try:
            ckpt.save(mngr, step, seed_state, data_iter, c.to_dict())
            if durable:
                mngr.wait_until_finished()
        except Exception as e:
            raise (_disk_error(e, mngr, wd, step) or e) from e


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str
) -> dict[str, float] | list[dict[str, float]]:
    """Trains `config` in `workdir` (resuming if it holds a checkpoint); returns the last eval metrics.

    config.train.num_seeds = K > 1 trains K seeds as one program, seed i in
    WORKDIR/seed_i exactly as its single run (flaxlm/seeds.py); the eval
    metrics are then one dict per seed.

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
    configs = seeds_lib.seed_configs(config)  # each seed's single-run config: [config] when num_seeds is 1
    workdirs = seeds_lib.seed_workdirs(workdir, tc.num_seeds)
    tags = [f"seed {i}: " if tc.num_seeds > 1 else "" for i in range(tc.num_seeds)]  # prefix of its lines

    # Per seed: data.seed also decides the prepared examples (segmentation, NSP pairs, static masks).
    seed_data = [prepare_data(c) for c in configs]
    for data in seed_data:
        log.info(
            "data: %s (train %d, validation %d examples)", data.path, len(data.train), len(data.validation)
        )

    model = models.get_model(model_config(config))
    schedule = optimizer_lib.learning_rate_schedule(tc)
    tx = optimizer_lib.make_optimizer(tc)
    runner = Runner(config, model, tx, schedule)

    keys = seeds_lib.stack([jax.random.split(jax.random.key(c.train.seed)) for c in configs])
    init_rng, dropout_rng = keys[..., 0], keys[..., 1]
    data_iters = [
        pipeline.train_iterator(
            data,
            global_batch=tc.batch_size,
            seed=c.data.seed,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            prefetch=config.data.prefetch,
            num_threads=config.data.reader_threads,
            num_workers=config.data.reader_workers,
        )
        for c, data in zip(configs, seed_data)
    ]
    seed_eval_batches = [
        pipeline.eval_batches(
            data,
            global_batch=tc.batch_size,
            seed=c.data.seed + 1,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            max_batches=tc.eval_batches,
        )
        for c, data in zip(configs, seed_data)
    ]

    # Trivial baselines on the same held-out targets as the model (the whole validation list, not
    # this host's slice: with one process, the very batches above), logged with every evaluation.
    seed_baselines = [
        baselines.evaluate(
            baselines.train_statistics(data),
            local
            if jax.process_count() == 1
            else pipeline.eval_batches(
                data, global_batch=tc.batch_size, seed=c.data.seed + 1, max_batches=tc.eval_batches
            ),
            config.objective,
        )
        for c, data, local in zip(configs, seed_data, seed_eval_batches)
    ]
    if is_main:
        for tag, baseline in zip(tags, seed_baselines):
            tqdm.write(
                f"{tag}baselines on the held-out targets: "
                + ", ".join(f"eval_{k}={v:.4f}" for k, v in sorted(baseline.items()))
            )

    mngrs = [ckpt.manager(wd, keep=tc.keep_checkpoints) for wd in workdirs]
    states, latest = ckpt.restore_common(
        mngrs,
        workdirs,
        runner.abstract_state(model, tx, jax.random.key(tc.seed)),
        data_iters,
        check_config=lambda saved: check_resume_config(saved, config),
    )
    # The tokenizer goes with the run (WORKDIR/tokenizer/): later readers use that copy, and a resume
    # whose config now gives another tokenizer (an edited corpus) stops here. A fresh start pins anew.
    for wd, data in zip(workdirs, seed_data):
        if states is None and is_main:
            tokenizer_pin.pin(wd, data.tokenizer)
        elif states is not None:
            tokenizer_pin.pin_or_check(wd, data.tokenizer, write=is_main)
    where = workdirs[0] if tc.num_seeds == 1 else os.path.join(workdir, "seed_*")
    if states is not None:
        state = runner.place_state(seeds_lib.stack(states))
        log.info("resumed from the checkpoint of step %d in %s", latest, where)
        if is_main:
            print(f"flaxlm: resuming from step {latest} ({where}/checkpoints/{latest})", flush=True)
    else:
        state = runner.init(model, tx, init_rng)
    start = latest or 0
    last = tc.stop_at_step or tc.num_steps  # a phase may end early; the schedule spans num_steps

    if is_main:
        # Each seed's workdir records its single-run config; WORKDIR records the K-seed one.
        for wd, c in list(zip(workdirs, configs)) + ([(workdir, config)] if tc.num_seeds > 1 else []):
            with open(os.path.join(wd, "config.json"), "w", encoding="utf-8") as f:
                json.dump(c.to_dict(), f, indent=2, default=str)
        n_params = sum(x.size for x in jax.tree.leaves(runner.host_state(state).params)) // tc.num_seeds
        log.info("model: %s, %d parameters; objective %s", config.model.arch, n_params, config.objective)

    reports = _Reports(runner, workdirs, tags, seed_baselines, start, last, is_main)
    eval_metrics: list[dict[str, float]] = [{} for _ in configs]  # one per seed
    if start == 0:  # the starting point of every learning curve
        eval_metrics = evaluate(
            runner, state.params, seed_eval_batches, config.pair_weight, config.rtd_weight
        )
        reports.eval(0, eval_metrics)
    # (step, device metrics) of the steps whose finiteness the host has not read yet. Reading
    # them waits for the device, so it happens every config.train.check_finite_every steps
    # (and before every save), not after each step.
    unchecked: list = []
    last_saved = latest  # newest checkpoint known good (saved from a checked state, or restored)
    stopping = False
    try:
        with preemption.Preemption() as preempt:
            for step in range(start + 1, last + 1):
                batches = [next(it) for it in data_iters]
                reports.count(batches)
                state, metrics = runner.train_step(state, seeds_lib.stack(batches), dropout_rng)
                unchecked.append((step, metrics))
                if step % tc.check_finite_every == 0:  # all but this step: done by now, reading won't stall
                    _check_finite(unchecked[:-1], runner, tc.nonfinite, last_saved, tags)
                    unchecked = unchecked[-1:]
                reports.flush()
                if step % tc.log_every == 0 or step == last:
                    reports.defer(step, metrics)
                reports.bar.update(1)
                stopping = preempt.should_stop(step)
                if step % tc.eval_every == 0 or step == last:
                    reports.flush()
                    eval_metrics = evaluate(
                        runner, state.params, seed_eval_batches, config.pair_weight, config.rtd_weight
                    )
                    reports.eval(step, eval_metrics)
                if step % tc.checkpoint_every == 0 or step == last or stopping:
                    # Never save a state the host has not seen finite.
                    _check_finite(unchecked, runner, tc.nonfinite, last_saved, tags)
                    unchecked = []
                    seed_states = seeds_lib.unstack(runner.host_state(state), tc.num_seeds)
                    _save(mngrs, workdirs, step, seed_states, data_iters, configs, durable=stopping)
                    last_saved = step
                if stopping:
                    break
        _check_finite(unchecked, runner, tc.nonfinite, last_saved, tags)
        reports.flush()
        for mngr, wd in zip(mngrs, workdirs):
            try:
                mngr.wait_until_finished()
            except Exception as e:
                raise (_disk_error(e, mngr, wd, last_saved) or e) from e
    finally:
        reports.close()
        for mngr in mngrs:
            try:  # let good saves already under way finish, whatever stopped the loop
                mngr.wait_until_finished()
            except Exception:  # noqa: BLE001 - reported above when it matters; never mask the first error
                log.debug("waiting for checkpoints after an error", exc_info=True)
            mngr.close()

    if is_main and stopping:
        print(
            f"flaxlm: stopped by {preempt.signal_name} at step {step}; checkpoint saved to "
            f"{ckpt.checkpoint_dir(where)}/{step}; rerun the same command to resume",
            flush=True,
        )
    elif is_main:
        print(
            f"flaxlm: done at step {last}; metrics in {where}/metrics.jsonl, "
            f"checkpoint in {where}/checkpoints/{last}",
            flush=True,
        )
        for tag, m, baseline in zip(tags, eval_metrics, seed_baselines):
            if m:
                print(f"flaxlm: {tag}held-out {baselines.summary(m, baseline)}", flush=True)
    return eval_metrics[0] if tc.num_seeds == 1 else eval_metrics
