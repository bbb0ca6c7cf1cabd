"""Fine-tuning: a pretrained backbone + a task head, trained fully or parameter-efficiently, over seeds.

Generation tasks (config.task.kind="generation") fine-tune a GPT or T5 as the language model it
is, with no new head: the loss counts the target tokens only, and dev/test are scored by greedy
decoding (flaxlm.tasks.generation).

`finetune(config, init, workdir)` is what `flaxlm finetune` runs:

  init (workdir | export | HF dir) -> backbone, model config, tokenizer    flaxlm.pretrained
  config.task -> data, features, loss, metrics                             flaxlm.tasks
  backbone + head model                                                    flaxlm.models.heads
  for each seed: train for config.train.epochs, score dev and test
  -> WORKDIR/results.json (per seed, mean and std) and a printed table

config.method decides what is trained (the rest is a constant of the loss,
so it gets no gradient and no optimizer state):
  full     everything
  head     the new head (and BERT's pooler, config.train_pooler); not for generation (no new head)
  lora     the head (+ pooler) and LoRA factors on attention q/k/v/out
           (+ MLP with config.lora.mlp); flaxlm.lora
  adapter  the head (+ pooler), bottleneck adapters (model.adapter_dim =
           config.adapter.dim) and every LayerNorm
  prompt   the head (+ pooler) and a soft prompt of config.prompt.length vectors before the
           input (model.prompt_length; Lester et al. 2021)
  prefix   the head (+ pooler) and config.prefix.length learned keys and values in every
           self-attention layer (model.prefix_length; Li & Liang 2021)
The trained model of each seed is saved as WORKDIR/seed_<s>/params.msgpack +
model_config.json, LoRA merged into the kernels (`load_finetuned` reads it).
"""

import dataclasses
import json
import logging
import math
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import serialization
from flax import traverse_util
from tqdm import tqdm

from flaxlm import checkpoint as ckpt
from flaxlm import files
from flaxlm import lora as lora_lib
from flaxlm import metrics as metrics_lib
from flaxlm import models
from flaxlm import optimizer as optimizer_lib
from flaxlm import parallel
from flaxlm import pretrained as pretrained_lib
from flaxlm import tasks as tasks_lib
from flaxlm.errors import ConfigError, NonFiniteError
from flaxlm.models import heads
from flaxlm.tasks import common

log = logging.getLogger(__name__)

METHODS = ("full", "head", "lora", "adapter", "prompt", "prefix")
# The parameters (path components) that prompt / prefix tuning add to the backbone; flaxlm.models.layers.
PROMPT_PARAMS = ("soft_prompt", "prefix_key", "prefix_value")
RESULTS_FILE = "results.json"


def base_config() -> ml_collections.ConfigDict:
    """The fine-tuning config schema; configs/finetune_*.py start from it."""
    c = ml_collections.ConfigDict()
    c.task = ml_collections.ConfigDict(
        dict(
            kind="classification",  # "classification" | "ner" | "qa" | "generation"
            # built-in data: "movie_sentiment" | "wnut16_tweets" | "shakespeare_cloze" | "definitions";
            # ignored when the three files below are given
            dataset="movie_sentiment",
            # classification: JSON lines; ner: word<TAB>tag lines; qa: SQuAD v1.1 JSON;
            # generation: JSON lines with "source" and "target"
            train_file="",
            dev_file="",
            test_file="",
            max_seq_len=128,
            max_query_len=48,  # qa: question tokens kept
            doc_stride=64,  # qa: tokens between the starts of a passage's windows
            max_answer_len=16,  # qa: longest answer span, in tokens
            corpus="",  # qa built-in set: the corpus spec to build it from ("" = the embedded Shakespeare)
            max_train_examples=0,  # > 0: train on a fixed random subset of this many examples
            max_eval_examples=0,  # > 0: score dev and test on fixed random subsets of this many
            max_target_len=32,  # generation: target tokens + [SEP] (T5's decoder length; GPT's share of T)
            max_new_tokens=32,  # generation: greedy decoding stops after this many tokens (or at [SEP])
        )
    )
    c.method = "full"  # "full" | "head" | "lora" | "adapter" | "prompt" | "prefix"
    c.lora = ml_collections.ConfigDict(dict(rank=8, alpha=16.0, mlp=False))
    c.adapter = ml_collections.ConfigDict(dict(dim=64))
    c.prompt = ml_collections.ConfigDict(dict(length=20))  # soft-prompt vectors (prompt tuning)
    c.prefix = ml_collections.ConfigDict(dict(length=10))  # key/value slots per layer (prefix tuning)
    c.train_pooler = True  # head/lora/adapter: also train BERT's [CLS] pooler (part of the encoder)
    c.learning_rate = ml_collections.ConfigDict(
        dict(full=1e-4, head=1e-3, lora=1e-3, adapter=1e-3, prompt=1e-2, prefix=3e-3)
    )
    c.dropout_rate = 0.1  # hidden and attention dropout while fine-tuning (replaces the pretraining value)
    c.train = ml_collections.ConfigDict(
        dict(
            batch_size=32,
            epochs=3,
            num_steps=0,  # > 0: stop after this many steps instead (the schedule spans them)
            warmup_fraction=0.1,
            schedule="linear",  # "linear" | "cosine" decay after warmup
            weight_decay=0.01,  # not on LayerNorm scales and biases
            b1=0.9,
            b2=0.999,
            eps=1e-6,
            grad_clip_norm=1.0,
            log_every=20,
            eval_batch_size=64,
        )
    )
    c.seeds = (0,)  # --config.seeds=0,1,2: one run per seed, then mean and std
    c.tokenizer = ""  # a .model / vocab.txt to use instead of the one found with --init
    c.data_dir = ""  # downloads and cached task data; "" = $FLAXLM_DATA_DIR or ~/.cache/flaxlm
    c.save_params = True  # write each seed's trained params (LoRA merged) to WORKDIR/seed_<s>/
    return c


def validate(c) -> None:
    def fail(msg):
        raise ConfigError(msg)

    if c.method not in METHODS:
        fail(f"config.method={c.method!r} is unknown; choose one of {', '.join(METHODS)}")
    if not c.seeds:
        fail("config.seeds is empty; give at least one, e.g. --config.seeds=0,1,2")
    for name in ("batch_size", "epochs", "eval_batch_size", "log_every"):
        if c.train[name] < 1:
            fail(f"config.train.{name}={c.train[name]} must be >= 1")
    if not 0.0 <= c.train.warmup_fraction < 1.0:
        fail(f"config.train.warmup_fraction={c.train.warmup_fraction} must be in [0, 1)")
    if c.train.schedule not in ("linear", "cosine"):
        fail(f"config.train.schedule={c.train.schedule!r} is unknown; choose 'linear' or 'cosine'")
    if c.method == "lora" and (c.lora.rank < 1 or c.lora.alpha <= 0):
        fail(f"config.lora.rank={c.lora.rank} and alpha={c.lora.alpha} must be positive")
    if c.method == "adapter" and c.adapter.dim < 1:
        fail(f"config.adapter.dim={c.adapter.dim} must be >= 1 for method 'adapter'")
    for method in ("prompt", "prefix"):
        if c.method == method and c[method].length < 1:
            fail(f"config.{method}.length={c[method].length} must be >= 1 for method {method!r}")
    if c.task.max_seq_len < 8:
        fail(f"config.task.max_seq_len={c.task.max_seq_len} is too short; use at least 8")
    if c.task.kind == "generation":
        if c.method == "head":
            fail(
                "config.method='head' trains nothing on a generation task (it has no new head); "
                "use full, lora or adapter"
            )
        if not 1 <= c.task.max_new_tokens <= c.task.max_target_len:
            fail(
                f"config.task.max_new_tokens={c.task.max_new_tokens} must be in "
                f"[1, config.task.max_target_len={c.task.max_target_len}]"
            )


# Parameters -------------------------------------------------------------------------------------------


def dummy_inputs(seq_len: int, seq2seq: bool = False) -> tuple[np.ndarray, ...]:
    """Zero inputs of one row for init: the four backbone inputs (+ T5's three decoder inputs)."""
    z = np.zeros((1, seq_len), np.int32)
    return (z,) * (7 if seq2seq else 4)


def trainable_paths(paths, method: str, backbone_name: str, train_pooler: bool) -> list[str]:
    """The "/"-joined parameter paths `method` trains (LoRA factors come on top, see module docstring)."""

    def head(p):
        return not p.startswith(backbone_name + "/") or (
            train_pooler and p.startswith(f"{backbone_name}/pooler/")
        )

    def adapter_or_norm(p):
        parents = p.split("/")[:-1]
        return any(s.endswith("_adapter") or s.endswith("norm") for s in parents)

    if method == "full":
        return sorted(paths)
    if method in ("head", "lora"):
        return sorted(p for p in paths if head(p))
    if method in ("prompt", "prefix"):
        return sorted(p for p in paths if head(p) or any(s in PROMPT_PARAMS for s in p.split("/")))
    return sorted(p for p in paths if head(p) or adapter_or_norm(p))


def make_optimizer(tc, learning_rate: float, num_steps: int) -> tuple[optax.GradientTransformation, Any]:
    sched_cfg = ml_collections.ConfigDict(
        dict(
            learning_rate=learning_rate,
            num_steps=num_steps,
            warmup_steps=int(round(tc.warmup_fraction * num_steps)),
            schedule=tc.schedule,
        )
    )
    schedule = optimizer_lib.learning_rate_schedule(sched_cfg)
    return optimizer_lib.make_optimizer(tc, schedule), schedule


@dataclasses.dataclass
class Init:
    """Makes a head model's parameters from a pretrained backbone; built once, shared by a run's seeds."""

    shapes: dict  # "/"-joined path -> jax.ShapeDtypeStruct of every parameter the model has
    fill: Any  # jitted (rng, given params) -> all params, the missing ones freshly initialised


def make_init(model, seq_len: int) -> Init:
    inputs = dummy_inputs(seq_len, seq2seq=isinstance(model, heads.Seq2SeqLM))
    shapes = jax.eval_shape(lambda r: model.init(r, *inputs, deterministic=True)["params"], jax.random.key(0))

    def fill(rng, given):
        # flax initialises only the params `given` lacks, so the random draws (slow to compile)
        # are those of the head and adapters, not of the whole backbone.
        _, variables = model.apply(
            {"params": given}, *inputs, deterministic=True, rngs={"params": rng}, mutable=["params"]
        )
        return variables["params"]

    return Init(traverse_util.flatten_dict(shapes, sep="/"), jax.jit(fill))


def init_params(init: Init, rng, backbone: dict, backbone_name: str) -> tuple[dict, list[str]]:
    """The model's params: the pretrained `backbone` where it has them, fresh elsewhere.

    Returns (params, new): `new` lists the backbone paths the pretrained tree
    lacks (adapters, or e.g. a pooler an HF checkpoint does not have); they
    and the head are initialised fresh. Pretrained leaves the model does not
    have (pretraining heads) are ignored; a shape mismatch is a ConfigError.
    """
    loaded = traverse_util.flatten_dict({backbone_name: backbone}, sep="/") if backbone else {}
    given, new = {}, []
    for path, shape in init.shapes.items():
        if path not in loaded:
            if path.startswith(backbone_name + "/"):
                new.append(path)
            continue
        if tuple(loaded[path].shape) != tuple(shape.shape):
            raise ConfigError(
                f"pretrained parameter {path} has shape {tuple(loaded[path].shape)}, the model needs "
                f"{tuple(shape.shape)}; --init and the model config disagree"
            )
        given[path] = jnp.asarray(loaded[path], shape.dtype)
    params = init.fill(rng, traverse_util.unflatten_dict(given, sep="/"))
    return jax.tree.map(jnp.asarray, params), sorted(new)


def split_params(params, method: str, backbone_name: str, *, train_pooler: bool, lora_cfg, rng):
    """(trainable, frozen, counts) for `method`.

    trainable = {"params": {path: array}, "lora": LoRA factors ({} unless method
    is "lora")}; frozen = {path: array} for the rest; counts = total and
    trainable parameter numbers (LoRA factors included in both) and their ratio.
    """
    flat = traverse_util.flatten_dict(params, sep="/")
    keep = set(trainable_paths(flat, method, backbone_name, train_pooler))
    lora = {}
    if method == "lora":
        targets = lora_lib.target_paths(params, include_mlp=lora_cfg.mlp)
        lora = lora_lib.init(rng, params, targets, lora_cfg.rank)
    trainable = {"params": {p: flat[p] for p in keep}, "lora": lora}
    frozen = {p: v for p, v in flat.items() if p not in keep}
    counts = {
        "total": int(sum(v.size for v in flat.values())) + lora_lib.num_params(lora),
        "trainable": int(sum(flat[p].size for p in keep)) + lora_lib.num_params(lora),
    }
    counts["trainable_fraction"] = counts["trainable"] / counts["total"]
    return trainable, frozen, counts


@flax.struct.dataclass
class FtState:
    step: jax.Array
    trainable: Any  # {"params": {path: array}, "lora": {path: {"a", "b"}}}
    opt_state: Any


def new_state(trainable, tx) -> FtState:
    return FtState(jnp.zeros((), jnp.int32), trainable, tx.init(trainable))


@dataclasses.dataclass
class Setup:
    """The model and task of a run, and how its trained and frozen parameters make the model's tree."""

    model: Any
    task: Any
    lora_alpha: float
    lora_rank: int
    eos_id: int = 0  # generation: where greedy decoding stops ([SEP])
    num_tokens: int | None = None  # generation: ids the tokenizer has (T5's sentinels lie above)

    def full_params(self, trainable, frozen):
        """The model's parameter tree: frozen and trained leaves together, LoRA merged."""
        flat = {**frozen, **trainable["params"]}
        params = traverse_util.unflatten_dict(flat, sep="/")
        return lora_lib.merge(params, trainable["lora"], alpha=self.lora_alpha, rank=self.lora_rank)

    def apply(self, params, batch, *, train: bool, rng=None):
        rngs = {"dropout": rng} if train else {}
        return self.model.apply(
            {"params": params}, *heads.apply_inputs(batch), deterministic=not train, rngs=rngs
        )


def make_steps(setup: Setup, tx, schedule):
    """(train_step(state, frozen, batch, rng) -> (state, metrics), predict_step(trainable, frozen, batch))."""

    def loss_fn(trainable, frozen, batch, rng):
        outputs = setup.apply(setup.full_params(trainable, frozen), batch, train=True, rng=rng)
        return setup.task.loss(outputs, batch)

    def train_step(state: FtState, frozen, batch, rng):
        rng = jax.random.fold_in(rng, state.step)
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.trainable, frozen, batch, rng)
        updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
        trainable = optax.apply_updates(state.trainable, updates)
        metrics = dict(metrics, grad_norm=optax.tree.norm(grads), learning_rate=schedule(state.step))
        return FtState(step=state.step + 1, trainable=trainable, opt_state=opt_state), metrics

    def predict_step(trainable, frozen, batch):
        params = setup.full_params(trainable, frozen)
        outputs = setup.apply(params, batch, train=False)
        if setup.task.head != "generation":
            return setup.task.predict(outputs)
        nll, count = setup.task.target_nll(outputs, batch)
        tokens = heads.greedy_decode(
            setup.model,
            params,
            batch,
            max_new_tokens=setup.task.cfg.max_new_tokens,
            eos_id=setup.eos_id,
            num_tokens=setup.num_tokens,
        )
        return {"tokens": tokens, "nll": nll, "count": count}

    return train_step, predict_step


# Data -------------------------------------------------------------------------------------------------


def batches(features: common.Features, batch_size: int, order: np.ndarray | None = None):
    """Batches of `batch_size` rows in `order` (default: as stored); the last is padded with weight-0 rows."""
    n = len(features)
    order = np.arange(n) if order is None else order
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        pad = batch_size - len(idx)
        rows = np.concatenate([idx, np.zeros(pad, idx.dtype)]) if pad else idx
        batch = {k: v[rows] for k, v in features.arrays.items()}
        if pad:
            batch["weight"] = batch["weight"].copy()
            batch["weight"][len(idx) :] = 0.0
        yield batch, len(idx)


# The run ----------------------------------------------------------------------------------------------


def _mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single seed)."""
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0}


def summarize(per_seed: list[dict]) -> dict:
    """{"dev": {metric: {"mean", "std"}}, "test": {...}} over the seeds' results."""
    out = {}
    for split in ("dev", "test"):
        names = per_seed[0][split].keys()
        out[split] = {m: _mean_std([r[split][m] for r in per_seed]) for m in names}
    return out


def format_table(per_seed: list[dict], summary: dict) -> str:
    cols = [(split, m) for split in ("dev", "test") for m in per_seed[0][split]]
    header = ["seed"] + [f"{s} {m}" for s, m in cols]
    rows = [[str(r["seed"])] + [f"{r[s][m]:.4f}" for s, m in cols] for r in per_seed]
    rows.append(
        ["mean ± std"] + [f"{summary[s][m]['mean']:.4f} ± {summary[s][m]['std']:.4f}" for s, m in cols]
    )
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    fmt = lambda cells: "  ".join(
        c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )
    return "\n".join([fmt(header)] + [fmt(r) for r in rows])


class Evaluator:
    """Runs predict_step over a split and scores it with the task's metrics."""

    def __init__(self, predict, batch_size: int, put_batch):
        self.predict = predict
        self.batch_size = batch_size
        self.put_batch = put_batch

    def __call__(self, task, trainable, frozen, features, examples) -> dict[str, float]:
        parts = []  # arrays, or dicts of arrays (generation), of each batch's real rows
        for batch, n in batches(features, self.batch_size):
            out = jax.device_get(self.predict(trainable, frozen, self.put_batch(batch)))
            parts.append(jax.tree.map(lambda x, n=n: np.asarray(x)[:n], out))
        return task.score(jax.tree.map(lambda *xs: np.concatenate(xs), *parts), features, examples)


@dataclasses.dataclass
class Run:
    """Everything the seeds of one `flaxlm finetune` share: model, data, compiled steps."""

    config: Any
    init: str  # the --init path
    pretrained: pretrained_lib.Pretrained
    task: Any
    model_cfg: dict  # config.model fields of the fine-tuned model (saved with each seed's params)
    features: dict  # split -> common.Features
    setup: Setup
    init_fn: Init
    tx: optax.GradientTransformation
    train_step: Any  # jitted
    evaluate: Evaluator
    put_batch: Any  # host batch -> device arrays
    replicated: Any  # sharding of the state
    num_steps: int
    learning_rate: float

    @property
    def backbone_name(self) -> str:
        return heads.BACKBONE[self.pretrained.arch]


def build_run(config, init: str) -> Run:
    """Loads --init and the task, builds the head model and compiles-on-first-use the steps."""
    from flaxlm.data import prepare as prepare_lib

    data_dir = config.data_dir or prepare_lib.default_data_dir()
    pre = pretrained_lib.load(init, tokenizer=config.tokenizer)
    if config.task.kind == "generation" and pre.arch == "bert":
        raise ConfigError(f"generation needs a decoder (gpt or t5); {pre.source} is a bert encoder")
    if config.task.kind != "generation" and pre.arch == "t5":
        raise ConfigError(
            f"config.task.kind={config.task.kind!r} needs a bert or gpt backbone; "
            f"{pre.source} is t5 (fine-tune it on a generation task)"
        )
    task = tasks_lib.get_task(config.task, data_dir)
    model_cfg = dict(
        pre.model,
        dropout_rate=config.dropout_rate,
        attention_dropout_rate=config.dropout_rate,
        adapter_dim=config.adapter.dim if config.method == "adapter" else 0,
        prompt_length=config.prompt.length if config.method == "prompt" else 0,
        prefix_length=config.prefix.length if config.method == "prefix" else 0,
    )
    if pre.arch == "bert" and task.head == "sequence":
        # The classifier reads BERT's [CLS] pooler; a backbone pretrained without one (ELECTRA, or
        # pooler=False) gets a fresh one, initialised and trained as the head is.
        model_cfg["pooler"] = True
    if config.task.max_seq_len > model_cfg["max_len"]:
        raise ConfigError(
            f"config.task.max_seq_len={config.task.max_seq_len} exceeds the {model_cfg['max_len']} positions "
            f"of the pretrained model; set --config.task.max_seq_len={model_cfg['max_len']} or less"
        )
    transformer_cfg = models.get_model(ml_collections.ConfigDict(model_cfg)).config
    model = heads.get_head_model(pre.arch, transformer_cfg, task.head, task.num_labels)
    features = {s: task.encode(task.splits[s], pre.tokenizer, pre.arch) for s in common.SPLITS}
    log.info(
        "task %s: %s",
        config.task.kind,
        ", ".join(f"{s} {len(task.splits[s])} examples ({len(features[s])} rows)" for s in common.SPLITS),
    )

    # Data parallel over every device; the state is replicated.
    mesh = parallel.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1)))
    tc = config.train
    parallel.check_batch_divisible(tc.batch_size, mesh.shape["data"], "devices")
    parallel.check_batch_divisible(tc.eval_batch_size, mesh.shape["data"], "devices (eval_batch_size)")
    rep, batch_sharding = parallel.replicated(mesh), parallel.batch_sharding(mesh)

    num_steps = tc.num_steps or math.ceil(len(features["train"]) / tc.batch_size) * tc.epochs
    learning_rate = config.learning_rate[config.method]
    tx, schedule = make_optimizer(tc, learning_rate, num_steps)
    setup = Setup(
        model,
        task,
        config.lora.alpha,
        config.lora.rank,
        eos_id=pre.tokenizer.sep_id,
        num_tokens=pre.tokenizer.vocab_size,
    )
    train_step, predict_step = make_steps(setup, tx, schedule)
    put_batch = lambda b: parallel.global_batch(b, batch_sharding)
    return Run(
        config=config,
        init=init,
        pretrained=pre,
        task=task,
        model_cfg=model_cfg,
        features=features,
        setup=setup,
        init_fn=make_init(model, config.task.max_seq_len),
        tx=tx,
        train_step=jax.jit(
            train_step,
            in_shardings=(rep, rep, batch_sharding, rep),
            out_shardings=(rep, rep),
            donate_argnums=(0,),
        ),
        evaluate=Evaluator(
            jax.jit(predict_step, in_shardings=(rep, rep, batch_sharding)), tc.eval_batch_size, put_batch
        ),
        put_batch=put_batch,
        replicated=rep,
        num_steps=num_steps,
        learning_rate=learning_rate,
    )


def run_seed(run: Run, seed: int, seed_dir: str) -> tuple[dict, dict]:
    """Trains and scores one seed (head, LoRA/adapter init, dropout and data order all follow it).

    Returns (result, counts): dev and test metrics, steps and training time;
    total and trained parameter numbers. Metrics go to seed_dir/metrics.jsonl,
    the trained params (LoRA merged) to seed_dir/ if config.save_params.
    """
    config, task = run.config, run.task
    init_rng, lora_rng, dropout_rng = jax.random.split(jax.random.key(seed), 3)
    params, new = init_params(run.init_fn, init_rng, run.pretrained.backbone, run.backbone_name)
    if new and seed == config.seeds[0]:
        shown = ", ".join(new[:4]) + (f", ... ({len(new)} in all)" if len(new) > 4 else "")
        log.info("parameters not in --init, initialised fresh: %s", shown)
    trainable, frozen, counts = split_params(
        params,
        config.method,
        run.backbone_name,
        train_pooler=config.train_pooler and task.head == "sequence",  # only the classifier reads it
        lora_cfg=config.lora,
        rng=lora_rng,
    )
    frozen = jax.device_put(frozen, run.replicated)
    state = jax.device_put(new_state(trainable, run.tx), run.replicated)

    writer = metrics_lib.MetricWriter(seed_dir)
    t0 = time.perf_counter()
    try:
        state = _train_loop(run, seed, state, frozen, writer, dropout_rng)
        result = {
            "seed": int(seed),
            "steps": run.num_steps,
            "train_seconds": round(time.perf_counter() - t0, 1),
        }
        for split in ("dev", "test"):
            result[split] = run.evaluate(
                task, state.trainable, frozen, run.features[split], task.splits[split]
            )
        writer.write(run.num_steps, {f"{s}_{k}": v for s in ("dev", "test") for k, v in result[s].items()})
    finally:
        writer.close()
    tqdm.write(
        f"seed {seed}: "
        + ", ".join(f"{s}_{k}={v:.4f}" for s in ("dev", "test") for k, v in result[s].items())
    )
    if config.save_params:
        meta = {
            "model": run.model_cfg,
            "head": task.head,
            "num_labels": task.num_labels,
            "labels": list(task.labels),
            "task": config.task.to_dict(),
            "method": config.method,
            "seed": int(seed),
            "init": run.init,
        }
        save_finetuned(seed_dir, jax.device_get(run.setup.full_params(state.trainable, frozen)), meta)
    return result, counts


def _train_loop(run: Run, seed: int, state, frozen, writer, rng):
    """The optimisation loop of one seed; dev metrics after every epoch. Returns the final state."""
    tc, train, task = run.config.train, run.features["train"], run.task
    bar = tqdm(total=run.num_steps, desc=f"finetune seed {seed}", unit="step", dynamic_ncols=True)
    step, epoch, pending = 0, 0, None

    def log_train(at, device_metrics):
        m = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
        if not math.isfinite(m["loss"]):
            raise NonFiniteError(
                f"non-finite loss ({m['loss']}) at step {at} of seed {seed}; lower config.learning_rate"
            )
        writer.write(at, m)
        bar.set_postfix(loss=f"{m['loss']:.4f}")

    try:
        while step < run.num_steps:
            order = np.random.default_rng([seed, epoch]).permutation(len(train))
            for batch, _ in batches(train, tc.batch_size, order):
                if step >= run.num_steps:
                    break
                state, metrics = run.train_step(state, frozen, run.put_batch(batch), rng)
                step += 1
                bar.update(1)
                if pending is not None:
                    log_train(*pending)  # the previous step's metrics: reading them does not stall
                    pending = None
                if step % tc.log_every == 0 or step == run.num_steps:
                    pending = (step, metrics)
            epoch += 1
            if pending is not None:
                log_train(*pending)
                pending = None
            dev = run.evaluate(task, state.trainable, frozen, run.features["dev"], task.splits["dev"])
            writer.write(step, dev, prefix="dev_")
            tqdm.write(
                f"seed {seed} epoch {epoch} step {step}: "
                + ", ".join(f"dev_{k}={v:.4f}" for k, v in dev.items())
            )
    finally:
        bar.close()
    return state


def finetune(config: ml_collections.ConfigDict, init: str, workdir: str) -> dict:
    """Fine-tunes `init` on config.task once per seed; writes and returns the results (module docstring)."""
    validate(config)
    ckpt.check_writable(workdir)
    run = build_run(config, init)
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(dict(config.to_dict(), init=init), f, indent=2, default=str)

    per_seed = []
    for seed in config.seeds:
        result, counts = run_seed(run, seed, os.path.join(workdir, f"seed_{seed}"))
        per_seed.append(result)
    summary = summarize(per_seed)
    results = {
        "task": config.task.to_dict(),
        "method": config.method,
        "init": init,
        "init_source": run.pretrained.source,
        "arch": run.pretrained.arch,
        "params": counts,
        "learning_rate": run.learning_rate,
        "examples": {s: len(run.task.splits[s]) for s in common.SPLITS},
        "seeds": per_seed,
        "summary": summary,
    }
    with open(os.path.join(workdir, RESULTS_FILE), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    print(
        f"flaxlm finetune: {config.task.kind} ({config.task.train_file or config.task.dataset}), "
        f"{run.pretrained.source}, method {config.method}: {counts['trainable']:,} of {counts['total']:,} "
        f"parameters trained ({100 * counts['trainable_fraction']:.2f}%)",
        flush=True,
    )
    print(format_table(per_seed, summary), flush=True)
    print(f"flaxlm finetune: results in {os.path.join(workdir, RESULTS_FILE)}", flush=True)
    return results


# Saved fine-tuned models ----------------------------------------------------------------------------------


def save_finetuned(folder: str, params, meta: dict) -> None:
    """folder/params.msgpack + folder/model_config.json (the layout of `flaxlm export`, plus head info)."""
    files.write_atomic(os.path.join(folder, ckpt.PARAMS_FILE), serialization.msgpack_serialize(params))
    files.write_atomic(
        os.path.join(folder, ckpt.MODEL_CONFIG_FILE), json.dumps(meta, indent=2, default=str) + "\n"
    )


def load_finetuned(folder: str):
    """(model, params, meta) of a saved fine-tuned model; `model.apply({"params": params}, ...)` runs it."""
    params, meta = ckpt.load_params(folder)
    cfg = models.get_model(ml_collections.ConfigDict(meta["model"])).config
    return heads.get_head_model(meta["model"]["arch"], cfg, meta["head"], meta["num_labels"]), params, meta
