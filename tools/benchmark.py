"""Train-step throughput of flaxlm next to HF transformers (PyTorch and Flax), measured in one run.

  python tools/benchmark.py --model bert_base --seq 128 --batch 8 --compare hf_torch,hf_flax
  python tools/benchmark.py --model gpt2_small --seq 256 --batch 8 --compare hf_torch,hf_flax
  python tools/benchmark.py --model bert_large --seq 512 --batch 32 --dtype bfloat16 \\
      --attention dot_product --compare hf_torch,hf_flax             # on one GPU
  python tools/benchmark.py --model bert_tiny --seq 128 --batch 32 --data   # with the input pipeline
  python tools/benchmark.py --model bert_tiny --quick                 # a smoke test: 2 steps

--model names a recipe in configs/ (bert_tiny, gpt_tiny, bert_base, bert_large, gpt2_small);
--set model.FIELD=VALUE changes any field of its model section, --set train.FIELD=VALUE of its train
section (e.g. train.loss_chunk_size).

What is timed: the full train step (forward, backward, gradient clipping, AdamW update) of one
batch, after compilation and --warmup untimed steps, each step waited for before the next.
flaxlm runs its product step (`flaxlm.train.Runner.train_step`, the one `flaxlm train` runs).
The peers run the same shapes with HF transformers' models: BertForPreTraining /
GPT2LMHeadModel with torch.optim.AdamW (hf_torch, eager, HF's default attention, "sdpa"), and
FlaxBertForPreTraining / FlaxGPT2LMHeadModel with the same optax AdamW chain, jitted with a
donated state (hf_flax). Same batch, sequence length, dropout rates, optimizer, gradient clipping
(1.0), learning rate (the recipe's peak from the first step, no warmup) and compute dtype
("bfloat16": bf16 compute, float32 parameters and optimizer state; torch.autocast for hf_torch).
HF's BERT head scores every position (labels -100 where nothing
is masked); flaxlm's scores only the masked ones: that saving is flaxlm's, and it is counted.

Each framework runs in its own worker process (its own peak memory). The workers are started
(and compiled) one after another, then take turns: --rounds rounds of --steps/--rounds steps
each (on a CPU by default one step per round, flaxlm, peer, peer, flaxlm, peer, peer, ...), so a
machine shared with other jobs slows them all alike and the ratios stay meaningful.
Each turn starts with --turn_warmup untimed steps (by default 1 when the frameworks take turns on a
CPU, else 0). Without it, a turn's first step pays for memory the framework freed while the others
ran: XLA maps its step's scratch buffer afresh every step (1.5 GB for BERT-base at seq 128, batch 8)
and unmaps it at the end, and on a VM whose balloon reports freed memory to the host, the host takes
those pages back during the other frameworks' turns. On this project's VM that made flaxlm's first
step of a turn 3.9-8.6 s against 2.9 s for the next one (docs/performance.md); a training loop, which
runs its steps back to back, never pays it. --hugepages picks the workers that run with glibc's
transparent huge pages (flaxlm.hugepages): by default flaxlm's, as the `flaxlm` command runs, and
not the peers', as their own scripts run; `all` compares the graphs and kernels alone.
--flaxlm_env NAME=VALUE (repeatable) sets a variable in flaxlm's worker alone, to try a setting
against the same peers in one run (an XLA flag, a glibc tunable); each row reports the values its
worker saw ("flaxlm_env").

Ratios: each round gives one ratio per peer (the peer's median step time in that round over
flaxlm's in the same round, i.e. flaxlm's tokens/s over the peer's), so a slow spell that hits
one round hits both sides of its ratio. The reported ratio is the median of the rounds' ratios,
with a 95% bootstrap interval over rounds (10,000 resamples, seed 0: the same rounds give the same
interval) and the rounds' min and max (`ratio_stats`). With one round (the default on
accelerators, where the frameworks run one after another) the interval is that one ratio.

Batches: token ids drawn at random (a step's time does not depend on their values), every
position a real token, BERT's masked positions at random (max_predictions per row, as the
recipe: 20 at seq 128, 80 at seq 512). --data instead feeds flaxlm from the real input pipeline
(the embedded corpus, prepared once, read with the train loop's prefetching iterator), as an
extra row "flaxlm_data": if it is slower than "flaxlm", training is input-bound. The pipeline's
tokenizer has min(vocabulary, --data_vocab) pieces, so its ids fit the model's vocabulary.

Output: JSON lines on stdout: "machine", "peak" (one per compute dtype), one "train_step" per
framework, one "ratio" per peer (flaxlm / peer: tokens_per_s, its interval tokens_per_s_low /
tokens_per_s_high, tokens_per_s_min / tokens_per_s_max and tokens_per_s_rounds over the rounds,
and peak_memory); then a Markdown table on stderr.
Fields of "train_step": tokens_per_s (batch x seq positions per second), step_s_median /
step_s_min / step_s_max, flops_per_token (`flaxlm.flops.train_flops_per_token`: 6 N + 12 L D T,
the same model FLOPs for every framework), flops_per_s (achieved), mfu (flops_per_s / peak),
peak_memory_bytes (accelerators: the device's peak bytes in use; CPU: the worker's peak RSS,
which includes the framework itself, about import_rss_bytes), compile_s (the first step), cpu_s_median
(CPU: process CPU seconds per step), loss_first / loss_last (a sanity check that it trains).

Peak FLOP/s: on a CPU it is measured in the same run, by the best of several N x N matmuls
(float32 and bfloat16) in JAX, before each of flaxlm's rounds and after the last; the best
measurement counts. On GPUs and TPUs it is the chip's published dense peak
(`flaxlm.flops.PUBLISHED_PEAK_FLOPS`; H100 SXM bf16: 989 TFLOP/s); --peak_tflops overrides it.
"""

import argparse
import importlib.util
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)

from flaxlm import hugepages  # noqa: E402  (os and sys only: the workers import their framework first)

PEERS = ("hf_torch", "hf_flax")


# --- Configuration (shared by the parent and the workers) ------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="bert_base", help="a recipe in configs/ (without .py)")
    p.add_argument("--seq", type=int, default=128, help="sequence length")
    p.add_argument("--batch", type=int, default=8, help="sequences per step")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="compute dtype")
    p.add_argument(
        "--attention",
        default="xla",
        choices=("xla", "dot_product"),
        help="flaxlm's config.model.attention; dot_product sets attention dropout to 0 for every framework",
    )
    p.add_argument("--remat", action="store_true", help="flaxlm: recompute each block in the backward pass")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="model.FIELD=VALUE",
        help="override a model or train field",
    )
    p.add_argument("--compare", default="", help="comma-separated peers: hf_torch, hf_flax")
    p.add_argument("--data", action="store_true", help="also time flaxlm fed by the real input pipeline")
    p.add_argument("--data_vocab", type=int, default=8000, help="--data: the pipeline tokenizer's size")
    p.add_argument("--steps", type=int, default=10, help="timed steps per framework")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after the compiling one")
    p.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="turns the frameworks take (0: one per step on a CPU, so 10 with the default --steps; 1 on "
        "accelerators, where the frameworks then run one after another, never side by side)",
    )
    p.add_argument(
        "--turn_warmup",
        type=int,
        default=-1,
        help="untimed steps at the start of each framework's turn (-1: 1 when the frameworks take turns "
        "on a CPU, else 0)",
    )
    p.add_argument("--peak_tflops", type=float, default=0.0, help="override the peak FLOP/s (in TFLOP/s)")
    p.add_argument("--matmul_size", type=int, default=2048, help="CPU peak: the N of the N x N matmuls")
    p.add_argument(
        "--quick", action="store_true", help="2 steps, 1 warmup, 1 round (or --rounds 2), small matmuls"
    )
    add_hugepages_flag(p)
    add_flaxlm_env_flag(p)
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.flaxlm_env = flaxlm_env(p, args.flaxlm_env)
    if args.quick:
        args.steps, args.warmup, args.rounds, args.matmul_size = 2, 1, min(args.rounds, 2) or 1, 256
    args.compare = [f for f in args.compare.split(",") if f]
    unknown = [f for f in args.compare if f not in PEERS]
    if unknown:
        p.error(f"--compare: unknown peer(s) {unknown}; choose from {', '.join(PEERS)}")
    if args.steps < 1 or args.warmup < 0 or args.turn_warmup < -1:
        p.error("--steps must be >= 1, --warmup >= 0 and --turn_warmup >= -1")
    return args


HUGEPAGES = ("flaxlm", "all", "none")


def add_hugepages_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--hugepages",
        default="flaxlm",
        choices=HUGEPAGES,
        help="which workers run with glibc's transparent huge pages (flaxlm.hugepages): flaxlm (its "
        "worker, as the `flaxlm` command runs; the peers as a script of theirs runs, with glibc's "
        "defaults), all (every worker: the frameworks then differ by their graphs and kernels "
        "alone) or none",
    )


def add_flaxlm_env_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--flaxlm_env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for flaxlm's worker alone (repeatable; recorded in its JSON rows), "
        "to try a setting against the same peers in the same run: e.g. XLA_FLAGS=... or "
        "GLIBC_TUNABLES=... (merged with --hugepages' tunable)",
    )


def flaxlm_env(p: argparse.ArgumentParser, items: list[str]) -> dict:
    """--flaxlm_env NAME=VALUE items as a dict; a malformed item is a one-line usage error."""
    env = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            p.error(f"--flaxlm_env {item!r}: expected NAME=VALUE, e.g. XLA_FLAGS=--xla_cpu_use_xnnpack=true")
        env[name] = value
    return env


def seen_env(args) -> dict:
    """In a worker: the --flaxlm_env variables as this process sees them (a flaxlm worker), or {}."""
    return {k: os.environ.get(k) for k in args.flaxlm_env} if args.worker.startswith("flaxlm") else {}


def worker_env(framework: str, env: dict, mode: str, flaxlm_env: dict | None = None) -> dict:
    """One framework's worker environment under --hugepages=mode: with glibc's huge-page tunable where
    the mode gives it to that framework (and the machine has it: `flaxlm.hugepages.environment`),
    else without it, even if this shell sets it. A flaxlm worker also gets `flaxlm_env`
    (--flaxlm_env), before the huge-page rule, so its GLIBC_TUNABLES keep the mode's tunable."""
    if framework.startswith("flaxlm") and flaxlm_env:
        env = {**env, **flaxlm_env}
    tunables = [
        t for t in env.get("GLIBC_TUNABLES", "").split(":") if t and not t.startswith("glibc.malloc.hugetlb=")
    ]
    env = {k: v for k, v in env.items() if k != "GLIBC_TUNABLES"}
    if tunables:
        env["GLIBC_TUNABLES"] = ":".join(tunables)
    if mode == "all" or (mode == "flaxlm" and framework.startswith("flaxlm")):
        return hugepages.environment(env) or env
    return env


def recipe(name: str):
    path = os.path.join(REPO, "configs", f"{name}.py")
    if not os.path.exists(path):
        names = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, "configs")) if f.endswith(".py"))
        raise SystemExit(f"benchmark: --model {name!r} is not a recipe in configs/; choose one of {names}")
    spec = importlib.util.spec_from_file_location(f"configs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def apply_overrides(c, items, tool: str = "benchmark"):
    """Applies --set model.FIELD=VALUE / train.FIELD=VALUE items to the config `c` (typed as the field)."""
    for item in items:
        key, _, value = item.partition("=")
        section, _, field = key.partition(".")
        if section not in ("model", "train") or field not in c[section]:
            raise SystemExit(
                f"{tool}: --set {item!r}: expected model.FIELD=VALUE with a field of {list(c.model)} "
                f"or train.FIELD=VALUE with a field of {list(c.train)}"
            )
        old = c[section][field]
        try:
            c[section][field] = value.lower() in ("1", "true") if isinstance(old, bool) else type(old)(value)
        except ValueError:
            raise SystemExit(f"{tool}: --set {item!r}: {value!r} is not a {type(old).__name__}") from None


def bench_config(args):
    """The recipe's flaxlm config at this benchmark's shapes and options (validated)."""
    from flaxlm import config as config_lib
    from flaxlm import errors

    c = recipe(args.model)
    c.model.update(dtype=args.dtype, param_dtype="float32", attention=args.attention, remat=args.remat)
    if args.attention == "dot_product":
        c.model.attention_dropout_rate = 0.0
    apply_overrides(c, args.set)
    c.model.max_len = max(c.model.max_len, args.seq)
    # BERT's recipe: 15% of the positions rounded up to a multiple of 10 (20 at 128, 80 at 512).
    c.data.update(
        seq_len=args.seq, mask_prob=0.15, max_predictions=max(1, math.ceil(0.15 * args.seq / 10) * 10)
    )
    # No warmup: the learning rate starts at its peak in all three frameworks, as torch's AdamW here
    # (constant), so loss_first / loss_last show each one training. The arithmetic is the same.
    c.train.update(batch_size=args.batch, grad_accum_steps=1, warmup_steps=0)
    c.parallelism = "mesh"
    try:
        config_lib.validate(c)
    except errors.FlaxlmError as e:
        raise SystemExit(f"benchmark: {e}") from None
    return c


def scored_positions(config) -> int:
    """Positions per row that go through the vocabulary projection in flaxlm's model."""
    return config.data.seq_len if config.objective == "clm" else config.data.max_predictions


def flops_per_token(config) -> float:
    from flaxlm import flops
    from flaxlm import train as train_lib

    return flops.train_flops_per_token(
        train_lib.model_config(config), config.data.seq_len, scored_positions(config)
    )


def synthetic_batch(config, seed: int = 0):
    """One batch in flaxlm's format, the same for every framework: random ids, all positions real."""
    import numpy as np

    from flaxlm import train as train_lib

    B, T, V = config.train.batch_size, config.data.seq_len, config.model.vocab_size
    r = np.random.RandomState(seed)
    batch = train_lib.dummy_batch(config, B)
    batch["input_ids"][:] = r.randint(5, V, (B, T))  # 0-4 are the special ids
    batch["segment_ids"][:] = 1
    batch["positions"][:] = np.arange(T)
    if config.objective != "clm":
        P = config.data.max_predictions
        positions = np.sort(np.stack([r.choice(T, P, replace=False) for _ in range(B)]), axis=1)
        batch["mlm_positions"][:] = positions
        batch["mlm_targets"][:] = np.take_along_axis(batch["input_ids"], positions, axis=1)
        batch["mlm_weights"][:] = 1.0
        np.put_along_axis(batch["input_ids"], positions, 4, axis=1)  # [MASK]
        batch["token_type_ids"][:, T // 2 :] = 1
        if "pair_label" in batch:
            batch["pair_label"][:] = r.randint(0, 2, B)
    return batch


# --- Workers: one framework each -------------------------------------------------------------


class FlaxlmStep:
    """flaxlm's product train step (`Runner.train_step`) on one device."""

    def __init__(self, config, args, data: bool):
        import jax

        from flaxlm import models
        from flaxlm import optimizer as optimizer_lib
        from flaxlm import train as train_lib

        self.jax = jax
        model = models.get_model(train_lib.model_config(config))
        tx = optimizer_lib.make_optimizer(config.train)
        schedule = optimizer_lib.learning_rate_schedule(config.train)
        self.runner = train_lib.Runner(config, model, tx, schedule, devices=jax.devices()[:1])
        init_rng, self.rng = jax.random.split(jax.random.key(config.train.seed))
        self.state = self.runner.init(model, tx, init_rng)
        self.params = sum(x.size for x in jax.tree.leaves(self.state.params))
        self.batches = self._pipeline(config, args) if data else None
        self.batch = synthetic_batch(config)
        self.device = jax.devices()[0]

    @staticmethod
    def _pipeline(config, args):
        from flaxlm import objectives
        from flaxlm.data import pipeline
        from flaxlm.data import prepare as prepare_lib

        data = prepare_lib.prepare(
            config.data,
            pair_labels=objectives.has_pair_head(config.objective),
            vocab_size=min(config.model.vocab_size, args.data_vocab),
        )
        return pipeline.train_iterator(
            data, global_batch=config.train.batch_size, seed=0, prefetch=config.data.prefetch
        )

    def step(self):
        batch = next(self.batches) if self.batches is not None else self.batch
        self.state, self.metrics = self.runner.train_step(self.state, batch, self.rng)

    def wait(self) -> float:
        self.jax.block_until_ready((self.state, self.metrics))
        return float(self.metrics["loss"])

    def peak_memory(self):
        return jax_peak_memory(self.device)


def jax_peak_memory(device):
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"], f"{device.platform} memory_stats peak_bytes_in_use"
    return process_peak_rss(), "process peak RSS"


def process_peak_rss() -> int:
    """This process's peak resident memory in bytes.

    Linux's VmHWM, not getrusage's ru_maxrss: the latter survives exec, so a worker would
    inherit its parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def hf_labels(config, batch):
    """BERT: MLM labels [B, T] (-100 where nothing is masked), as HF's models take them.

    Only the predictions with mlm_weights > 0 count (the pipeline pads each row's P slots with weight 0).
    """
    import numpy as np

    labels = np.full(batch["input_ids"].shape, -100, np.int64)
    rows, slots = np.nonzero(batch["mlm_weights"] > 0)
    labels[rows, batch["mlm_positions"][rows, slots]] = batch["mlm_targets"][rows, slots]
    return labels


def hf_causal_labels(batch):
    """GPT: labels [B, T] for HF's causal LM (which scores logits[t] against labels[t + 1]): the tokens
    flaxlm scores (`objectives.next_token_weights`: t + 1 in t's document), -100 elsewhere."""
    import numpy as np

    ids, seg = batch["input_ids"], batch["segment_ids"]
    labels = np.full(ids.shape, -100, np.int64)
    scored = (seg[:, 1:] == seg[:, :-1]) & (seg[:, :-1] != 0)
    labels[:, 1:] = np.where(scored, ids[:, 1:], -100)
    return labels


def hf_torch_inputs(config, batch, device: str = "cpu") -> dict:
    """flaxlm's batch as keyword arguments of HF's torch BertForPreTraining / GPT2LMHeadModel, labels
    included: the same tokens, positions, attention and scored targets.

    Rows that hold more than one document or padding (segment_ids other than 1) get flaxlm's
    attention: GPT a [B, 1, T, T] boolean mask (causal within each document; padding sees earlier
    padding only, so no row is empty) and the positions as position_ids. BERT takes only a padding
    mask, so packed BERT rows are refused.
    """
    import numpy as np
    import torch

    t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.long, device=device)  # noqa: E731
    seg = np.asarray(batch["segment_ids"])
    if config.model.arch == "gpt":
        inputs = dict(input_ids=t(batch["input_ids"]), labels=t(hf_causal_labels(batch)))
        if (seg != 1).any():
            T = seg.shape[1]
            mask = (seg[:, :, None] == seg[:, None, :]) & np.tril(np.ones((T, T), bool))
            inputs.update(
                attention_mask=torch.as_tensor(mask[:, None], device=device),
                position_ids=t(batch["positions"]),
            )
        return inputs
    if (seg > 1).any():
        raise SystemExit("benchmark: HF BERT takes one document per row; this batch packs several")
    inputs = dict(
        input_ids=t(batch["input_ids"]),
        token_type_ids=t(batch["token_type_ids"]),
        attention_mask=t(seg > 0),
        position_ids=t(batch["positions"]),
        labels=t(hf_labels(config, batch)),
    )
    if "pair_label" in batch:
        inputs["next_sentence_label"] = t(batch["pair_label"])
    return inputs


def torch_adamw(model, tc):
    """torch.optim.AdamW as flaxlm's optimizer: the recipe's betas, eps and weight decay, no decay on
    biases and LayerNorm weights (`flaxlm.optimizer.wants_decay`), learning rate tc.learning_rate."""
    import torch

    named = list(model.named_parameters())
    no_decay = {id(p) for n, p in named if n.endswith("bias") or "LayerNorm" in n}
    no_decay |= {id(p) for n, p in named if ".ln_" in n and n.endswith("weight")}
    decay = [p for _, p in named if id(p) not in no_decay]
    kept = [p for _, p in named if id(p) in no_decay]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": tc.weight_decay}, {"params": kept, "weight_decay": 0.0}],
        lr=tc.learning_rate,
        betas=(tc.b1, tc.b2),
        eps=tc.eps,
    )


def hf_config(config, framework: str):
    """The HF config of the same architecture (transformers' BertConfig / GPT2Config)."""
    import transformers

    m = config.model
    if m.arch == "gpt":
        return transformers.GPT2Config(
            vocab_size=m.vocab_size,
            n_positions=m.max_len,
            n_embd=m.hidden_size,
            n_layer=m.num_layers,
            n_head=m.num_heads,
            n_inner=m.mlp_dim,
            activation_function={"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}[m.activation],
            resid_pdrop=m.dropout_rate,
            embd_pdrop=m.dropout_rate,
            attn_pdrop=m.attention_dropout_rate,
            layer_norm_epsilon=m.layer_norm_eps,
            initializer_range=m.initializer_range,
        )
    if m.pre_ln or m.position_embedding != "learned":
        raise SystemExit(f"benchmark: {framework} has post-LN BERT with learned positions only")
    return transformers.BertConfig(
        vocab_size=m.vocab_size,
        hidden_size=m.hidden_size,
        num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_heads,
        intermediate_size=m.mlp_dim,
        hidden_act={"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}[m.activation],
        hidden_dropout_prob=m.dropout_rate,
        attention_probs_dropout_prob=m.attention_dropout_rate,
        max_position_embeddings=m.max_len,
        type_vocab_size=m.type_vocab_size,
        layer_norm_eps=m.layer_norm_eps,
        initializer_range=m.initializer_range,
    )


class HfTorchStep:
    """HF transformers' PyTorch model, torch.optim.AdamW (no decay on biases and LayerNorm), clipping."""

    def __init__(self, config, args, data: bool):
        import torch
        import transformers

        torch.manual_seed(0)
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        torch.backends.cuda.matmul.allow_tf32 = True  # as XLA's default float32 matmuls on GPUs
        cls = transformers.GPT2LMHeadModel if config.model.arch == "gpt" else transformers.BertForPreTraining
        self.model = cls(hf_config(config, "hf_torch")).to(self.device)
        self.model.train()
        self.params = sum(p.numel() for p in self.model.parameters())
        tc = config.train
        self.opt = torch_adamw(self.model, tc)
        self.clip = tc.grad_clip_norm
        self.autocast = config.model.dtype == "bfloat16"
        self.inputs = hf_torch_inputs(config, synthetic_batch(config), self.device)

    def step(self):
        torch = self.torch
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.autocast):
            self.loss = self.model(**self.inputs).loss
        self.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()

    def wait(self) -> float:
        if self.device == "cuda":
            self.torch.cuda.synchronize()
        return float(self.loss.detach())

    def peak_memory(self):
        if self.device == "cuda":
            return self.torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"
        return process_peak_rss(), "process peak RSS"


class HfFlaxStep:
    """HF transformers' Flax model with the same optax AdamW chain as flaxlm, jitted, state donated."""

    def __init__(self, config, args, data: bool):
        import jax
        import jax.numpy as jnp
        import optax
        import transformers

        from flaxlm import optimizer as optimizer_lib

        self.jax = jax
        gpt = config.model.arch == "gpt"
        cls = transformers.FlaxGPT2LMHeadModel if gpt else transformers.FlaxBertForPreTraining
        dtype = jnp.bfloat16 if config.model.dtype == "bfloat16" else jnp.float32
        model = cls(hf_config(config, "hf_flax"), seed=0, dtype=dtype, _do_init=True)
        tx = optimizer_lib.make_optimizer(config.train)
        params = model.params
        self.params = sum(x.size for x in jax.tree.leaves(params))
        batch = synthetic_batch(config)
        if gpt:
            inputs = dict(input_ids=batch["input_ids"], attention_mask=batch["segment_ids"] > 0)
        else:
            inputs = dict(
                input_ids=batch["input_ids"],
                token_type_ids=batch["token_type_ids"],
                attention_mask=(batch["segment_ids"] > 0).astype("int32"),
            )
            labels = hf_labels(config, batch)
        pair = batch.get("pair_label")

        def loss_fn(params, rng):
            out = model(**inputs, params=params, dropout_rng=rng, train=True)
            if gpt:
                logits = out.logits[:, :-1].astype(jnp.float32)
                return optax.softmax_cross_entropy_with_integer_labels(
                    logits, inputs["input_ids"][:, 1:]
                ).mean()
            weights = labels != -100
            ce = optax.softmax_cross_entropy_with_integer_labels(
                out.prediction_logits.astype(jnp.float32), jnp.maximum(labels, 0)
            )
            loss = jnp.sum(ce * weights) / jnp.sum(weights)
            if pair is not None:
                loss += optax.softmax_cross_entropy_with_integer_labels(
                    out.seq_relationship_logits.astype(jnp.float32), pair
                ).mean()
            return loss

        def train_step(state, rng):
            params, opt_state = state
            loss, grads = jax.value_and_grad(loss_fn)(params, rng)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        self._step = jax.jit(train_step, donate_argnums=(0,))
        self.state = (params, tx.init(params))
        self.rng = jax.random.PRNGKey(0)
        self.device = jax.devices()[0]

    def step(self):
        self.rng, rng = self.jax.random.split(self.rng)
        self.state, self.loss = self._step(self.state, rng)

    def wait(self) -> float:
        self.jax.block_until_ready((self.state, self.loss))
        return float(self.loss)

    def peak_memory(self):
        return jax_peak_memory(self.device)


def measure_matmul_peak(dtype: str, n: int, repeats: int = 5) -> float:
    """Best FLOP/s of an n x n by n x n matmul in JAX on the default device."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    r = np.random.RandomState(0)
    a, b = (jnp.asarray(r.standard_normal((n, n)), dtype=dtype) for _ in range(2))
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def worker_channel():
    """In a worker: keeps the original stdout for the replies (returned: reply(**msg) writes one JSON
    line) and sends everything else printed to stderr."""
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def reply(**msg):
        proto.write(json.dumps(msg) + "\n")
        proto.flush()

    return reply


def worker_main(args):
    """Builds one framework's step, compiles it, then obeys the parent's commands on stdin.

    Replies go to the original stdout as JSON lines; everything else printed goes to stderr.
    """
    reply = worker_channel()
    framework = args.worker
    for module in {"hf_torch": ("torch", "transformers"), "hf_flax": ("jax", "transformers")}.get(
        framework, ("jax", "flax")
    ):
        __import__(module)
    import_rss = process_peak_rss()  # the framework alone, before any model exists
    config = bench_config(args)
    cls = {"flaxlm": FlaxlmStep, "flaxlm_data": FlaxlmStep, "hf_torch": HfTorchStep, "hf_flax": HfFlaxStep}
    t = time.perf_counter()
    trainer = cls[framework](config, args, data=framework == "flaxlm_data")
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    trainer.step()
    loss_first = trainer.wait()
    compile_s = time.perf_counter() - t
    for _ in range(args.warmup):
        trainer.step()
        trainer.wait()
    reply(
        ready=True,
        build_s=build_s,
        compile_s=compile_s,
        loss_first=loss_first,
        params=trainer.params,
        env=seen_env(args),
    )
    steps_run = 1 + args.warmup  # every step this worker ran, timed or not
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "steps":
            for _ in range(cmd.get("untimed", 0)):  # brings back the memory freed since the last turn
                trainer.step()
                trainer.wait()
            steps_run += cmd.get("untimed", 0) + cmd["n"]
            wall, cpu = [], []
            for _ in range(cmd["n"]):
                t, c = time.perf_counter(), time.process_time()
                trainer.step()
                loss = trainer.wait()
                wall.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
            reply(wall=wall, cpu=cpu, loss=loss)
        elif cmd["cmd"] == "peak":
            reply(**{d: measure_matmul_peak(d, args.matmul_size) for d in ("float32", "bfloat16")})
        elif cmd["cmd"] == "finish":
            peak, source = trainer.peak_memory()
            reply(
                peak_memory_bytes=peak, memory_source=source, import_rss_bytes=import_rss, steps_run=steps_run
            )
            return


# --- The parent: starts the workers, takes turns, reports ------------------------------------


class Worker:
    def __init__(self, framework: str, argv: list[str], env: dict, script: str = __file__):
        """Starts `script` (this tool or a sibling that speaks the same protocol) as a worker."""
        self.framework = framework
        cmd = [sys.executable, os.path.abspath(script), *argv, "--worker", framework]
        self.hugepages = hugepages.TUNABLE in env.get("GLIBC_TUNABLES", "").split(":")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.ready = self.read()
        self.wall: list[float] = []
        self.rounds: list[list[float]] = []  # the step times of each round
        self.cpu: list[float] = []
        self.loss_last = None

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read().strip().splitlines()
            self.proc.wait()
            raise RuntimeError(
                f"{self.framework} worker exited {self.proc.returncode}: " + " | ".join(err[-3:])
            )
        return json.loads(line)

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def run(self, n: int, untimed: int = 0):
        r = self.ask(cmd="steps", n=n, untimed=untimed)
        self.wall += r["wall"]
        self.rounds.append(r["wall"])
        self.cpu += r["cpu"]
        self.loss_last = r["loss"]

    def finish(self) -> dict:
        r = self.ask(cmd="finish")
        self.proc.stdin.close()
        self.proc.wait()
        self.proc.stderr.close()
        self.proc.stdout.close()
        return r


def machine_info() -> dict:
    import jax

    dev = jax.devices()[0]
    info = {
        "what": "machine",
        "backend": jax.default_backend(),
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "jax": jax.__version__,
    }
    for name in ("flax", "torch", "transformers"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            pass
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def summarize(w: Worker, finish: dict, args, config, peak, on_cpu: bool) -> dict:
    import numpy as np

    tokens = args.batch * args.seq
    median = float(np.median(w.wall))
    fpt = flops_per_token(config)
    flaxlm = w.framework.startswith("flaxlm")
    row = {
        "what": "train_step",
        "framework": w.framework,
        "model": args.model,
        "seq": args.seq,
        "batch": args.batch,
        "dtype": args.dtype,
        "attention": args.attention if flaxlm else "hf default",
        "remat": args.remat and flaxlm,
        "dropout_rate": config.model.dropout_rate,
        "attention_dropout_rate": config.model.attention_dropout_rate,
        "steps": len(w.wall),
        "turn_warmup": args.turn_warmup,
        "tokens_per_step": tokens,
        "tokens_per_s": tokens / median,
        "step_s_median": median,
        "step_s_min": float(np.min(w.wall)),
        "step_s_max": float(np.max(w.wall)),
        "flops_per_token": fpt,
        "flops_per_s": fpt * tokens / median,
        "peak_flops_per_s": peak[0] if peak else None,
        "mfu": fpt * tokens / median / peak[0] if peak else None,
        "params": w.ready["params"],
        "compile_s": w.ready["compile_s"],
        "loss_first": w.ready["loss_first"],
        "loss_last": w.loss_last,
        "malloc_hugepages": w.hugepages,
        "flaxlm_env": w.ready["env"],
        **finish,
    }
    if on_cpu:
        row["cpu_s_median"] = float(np.median(w.cpu))
    return row


def ratio_stats(ratios, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0) -> dict:
    """The median of per-round ratios, a bootstrap percentile interval for it, and the min and max.

    The rounds are resampled with replacement `resamples` times (seeded, so the same rounds give
    the same interval); low / high are the (1 -+ confidence) / 2 quantiles of the resamples'
    medians, widened if need be to contain the median itself.
    """
    import numpy as np

    r = np.asarray(ratios, np.float64)
    median = float(np.median(r))
    picks = np.random.default_rng(seed).integers(0, len(r), (resamples, len(r)))
    low, high = np.quantile(np.median(r[picks], axis=1), [(1 - confidence) / 2, (1 + confidence) / 2])
    return {
        "median": median,
        "low": min(float(low), median),
        "high": max(float(high), median),
        "min": float(r.min()),
        "max": float(r.max()),
    }


def round_ratios(base: Worker, peer: Worker) -> list[float]:
    """flaxlm's tokens/s over the peer's, round by round: the peer's median step time over flaxlm's."""
    import numpy as np

    return [float(np.median(p) / np.median(b)) for b, p in zip(base.rounds, peer.rounds) if b and p]


def ratio_row(args, base: dict, row: dict, ratios: list[float]) -> dict:
    stats = ratio_stats(ratios)
    return {
        "what": "ratio",
        "model": args.model,
        "seq": args.seq,
        "batch": args.batch,
        "dtype": args.dtype,
        "flaxlm_over": row["framework"],
        "tokens_per_s": stats["median"],
        "tokens_per_s_low": stats["low"],
        "tokens_per_s_high": stats["high"],
        "tokens_per_s_min": stats["min"],
        "tokens_per_s_max": stats["max"],
        "tokens_per_s_rounds": ratios,
        "interval": "median of per-round ratios; bootstrap 95% over rounds (10000 resamples, seed 0)",
        "peak_memory": base["peak_memory_bytes"] / row["peak_memory_bytes"],
    }


def table(rows, peak, ratios=None) -> str:
    """ratios: {framework: its "ratio" row}, for the last column's median and interval."""
    ratios = ratios or {}

    lines = [
        "| framework | tokens/s | step s: median (min-max) | MFU | peak memory "
        "| flaxlm / this: median (95% interval) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    base = next((r for r in rows if r["framework"] == "flaxlm"), None)
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        ratio = ""
        if r["framework"] in ratios:
            q = ratios[r["framework"]]
            ratio = f"{q['tokens_per_s']:.3f}x ({q['tokens_per_s_low']:.3f}-{q['tokens_per_s_high']:.3f})"
        elif r is base:
            ratio = "1.00x"
        lines.append(
            f"| {r['framework']} | {r['tokens_per_s']:,.0f} | {r['step_s_median']:.3f} "
            f"({r['step_s_min']:.3f}-{r['step_s_max']:.3f}) | {mfu} | "
            f"{r['peak_memory_bytes'] / 2**30:.2f} GiB | {ratio} |"
        )
    if peak:
        lines.append(f"\npeak: {peak[0] / 1e12:.4g} TFLOP/s ({peak[1]})")
    return "\n".join(lines)


def log(message: str):
    print(f"benchmark: {message}", file=sys.stderr, flush=True)


def run_workers(frameworks, args, env, rounds, on_cpu):
    """Starts the workers, runs their timed steps in turns; returns ({framework: (worker, finish)},
    errors, {dtype: [measured peak FLOP/s]})."""
    chunks = [args.steps // rounds + (i < args.steps % rounds) for i in range(rounds)]
    argv = sys.argv[1:]
    measured: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    done, errors, workers = {}, [], {}

    def attempt(f, action, *action_args):
        try:
            action(*action_args)
        except RuntimeError as e:  # a worker died: report it, go on with the others
            errors.append({"what": "error", "framework": f, "error": str(e)})
            workers.pop(f, None)

    def peak(w):  # the CPU's matmul peak, measured by flaxlm's worker around its own steps
        if on_cpu and not args.peak_tflops and w.framework == "flaxlm":
            for dtype, value in w.ask(cmd="peak").items():
                measured[dtype].append(value)

    def start(f):
        w = workers[f] = Worker(f, argv, worker_env(f, env, args.hugepages, args.flaxlm_env))
        log(f"{f}: ready, {w.ready['params']:,} parameters, first step {w.ready['compile_s']:.1f} s")

    def run(w, n):
        peak(w)
        w.run(n, args.turn_warmup)
        log(f"{w.framework}: {n} steps, {' '.join(f'{t:.3f}' for t in w.wall[-n:])} s")

    def finish(w):
        peak(w)
        done[w.framework] = (w, w.finish())
        workers.pop(w.framework)

    if rounds == 1:  # one after another: never two frameworks on the device at once
        for f in frameworks:
            attempt(f, start, f)
            if f in workers:
                attempt(f, run, workers[f], chunks[0])
            if f in workers:
                attempt(f, finish, workers[f])
    else:  # compile one at a time, then take turns
        for f in frameworks:
            attempt(f, start, f)
        for n in chunks:
            for f, w in list(workers.items()):
                attempt(f, run, w, n)
        for f, w in list(workers.items()):
            attempt(f, finish, w)
    return done, errors, measured


def main():
    args = parse_args()
    if args.worker:
        return worker_main(args)
    config = bench_config(args)  # fail fast on a bad model or option, before any worker starts
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_NO_ADVISORY_WARNINGS="1")
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # this process only looks at the device

    def out(row):
        print(json.dumps(row), flush=True)

    info = machine_info()
    out(info)
    on_cpu = info["backend"] == "cpu"
    rounds = min(args.rounds or (args.steps if on_cpu else 1), args.steps)
    if args.turn_warmup < 0:
        args.turn_warmup = 1 if on_cpu and rounds > 1 else 0
    if not on_cpu and rounds > 1:
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # the JAX workers share the device
    frameworks = ["flaxlm"] + (["flaxlm_data"] if args.data else []) + args.compare
    done, errors, measured = run_workers(frameworks, args, env, rounds, on_cpu)

    peak = None
    if args.peak_tflops:
        peak = (args.peak_tflops * 1e12, "--peak_tflops")
    elif on_cpu:
        source = f"measured: best {args.matmul_size}^3 matmul in JAX"
        for dtype, values in measured.items():
            if values:
                out(
                    {
                        "what": "peak",
                        "dtype": dtype,
                        "flops_per_s": max(values),
                        "source": source,
                        "runs": values,
                    }
                )
        if measured[args.dtype]:
            peak = (max(measured[args.dtype]), f"{source}, {args.dtype}")
    else:
        from flaxlm import flops

        peak = flops.published_peak_flops(info["device_kind"], args.dtype)
        source = peak[1] if peak else f"no published peak for {info['device_kind']!r}: pass --peak_tflops"
        out({"what": "peak", "dtype": args.dtype, "flops_per_s": peak[0] if peak else None, "source": source})

    rows = [summarize(w, fin, args, config, peak, on_cpu) for w, fin in done.values()]
    for row in rows + errors:
        out(row)
    base = next((r for r in rows if r["framework"] == "flaxlm"), None)
    ratios = {}
    for r in rows:
        if base and r is not base:
            ratios[r["framework"]] = ratio_row(
                args, base, r, round_ratios(done["flaxlm"][0], done[r["framework"]][0])
            )
            out(ratios[r["framework"]])
    print(table(rows, peak, ratios), file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
