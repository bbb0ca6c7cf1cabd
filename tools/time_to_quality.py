"""Time to a given model quality: flaxlm next to HF transformers' torch model, trained alike in one run.

  python tools/time_to_quality.py --model bert_tiny                      # the whole recipe (1800 steps)
  python tools/time_to_quality.py --model gpt_tiny --steps 200 --eval_every 50
  python tools/time_to_quality.py --model bert_tiny --quick              # a smoke test: 4 steps

Both frameworks train the recipe (configs/MODEL.py) from the same weights on the same batches and
are scored on the same held-out targets at the same steps; the tool reports the train-step wall
time each needs to reach the held-out loss that the worse of them reaches at the end.

flaxlm runs its product train step (`flaxlm.train.Runner.train_step`, as `flaxlm train`). HF torch
runs BertForPreTraining / GPT2LMHeadModel (eager, HF's default "sdpa" attention) loaded with
from_pretrained from flaxlm's initial parameters exported by `flaxlm.hf.save_hf`, so both start from
the same weights (a test checks the step-0 held-out loss agrees to 1e-4).

Batches: each worker reads flaxlm's input pipeline (the recipe's embedded corpus, prepared once and
cached) with the train loop's seeds: the training stream (`pipeline.train_iterator`, data.seed) and
the held-out batches (`pipeline.eval_batches`, data.seed + 1, --eval_batches of them). Every reply
carries a SHA-256 of the batches the worker consumed; the tool stops if the frameworks' differ.
HF's inputs are the same batch converted (`benchmark.hf_torch_inputs`): BERT's masked-LM labels at
the masked positions (-100 elsewhere) and the NSP label; GPT's next-token labels within a document
(-100 across packed documents and in padding), with flaxlm's per-document causal attention mask and
positions where a row packs several documents.

Recipe: the same for both: AdamW with the recipe's betas, eps and weight decay (not on biases and
LayerNorm), its learning-rate schedule (warmup, then linear decay: torch's learning rate is set to
flaxlm's schedule value before each step), gradient clipping at its norm, its dropout (0 in both
recipes: the frameworks then compute the same function and differ only by float rounding).
--steps N shortens the run: the schedule spans N steps with warmup scaled alike
(warmup_steps x N / num_steps), so it is the recipe compressed, not cut off.

Losses: flaxlm's: the masked-LM mean cross-entropy over the masked positions plus pair_weight x NSP
(BERT, HF's BertForPreTraining sums the same two; the recipes' pair_weight is 1), or the next-token
mean cross-entropy (GPT). Held-out: averaged over the eval batches weighted by their target counts,
as `flaxlm train` reports eval_loss; HF's from its logits on the same targets.

Timing: only train steps count (wall time of each chunk of steps, flaxlm's waited for at the chunk's
end); evaluation does not, nor flaxlm's compilation (its step is compiled on a copy of the state
before the run and reported as compile_s). Each framework runs in its own worker process
(tools/benchmark.py's protocol); they take turns in chunks of --chunk steps (flaxlm 10, torch 10,
flaxlm 10, ...) so a machine shared with other jobs slows both alike. Torch uses all the cores
(torch.set_num_threads(os.cpu_count()), or --torch_threads), as XLA does. HF's inputs are converted
from flaxlm's batch before the clock starts. Each turn opens, off the clock, with a pass that
changes nothing (--turn_warmup 1): flaxlm runs its step on a copy of the state, torch a forward and
backward whose gradients it drops (its random state put back). On a VM that hands memory freed for
a few seconds back to its host, the first steps after the other framework's turn would otherwise
pay to get it back, which a training run, whose steps follow each other, never does: with glibc's
huge pages, BERT-tiny's step took 0.113 s back to back and 0.142 s after 3.7-s pauses on a 2-core
AMD EPYC (docs/performance.md, "Huge pages"). --hugepages as in tools/benchmark.py: by default
flaxlm's worker runs with glibc's transparent huge pages, as the `flaxlm` command does, and torch's
as a torch script does, without. --flaxlm_env NAME=VALUE (repeatable) sets a variable in
flaxlm's worker alone, as in tools/benchmark.py.

Target and ratio: the common target is the worst final held-out loss among the frameworks. Each
framework's time to it is its cumulative train seconds at the first evaluation at or below it,
interpolated linearly in loss from the evaluation before. The ratio is peer time / flaxlm time
(how many times sooner flaxlm gets there). Next to it, "step_time": the per-chunk ratios of the
peer's train seconds over flaxlm's in the same turn, their median and 95% bootstrap interval
(`benchmark.ratio_stats`).

Output: JSON lines on stdout: "machine", "load" (the load average at the start and at the end), one
"worker" per framework (params, build_s, compile_s, eval_batches_sha256), one "eval" per framework
and evaluation (step, loss and its terms, train_s: cumulative train seconds, batches_sha256 of the
training batches consumed so far), one "time_to_target" per framework, one "ratio" per peer; then a
Markdown table on stderr.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tools"))

import benchmark  # noqa: E402

PEERS = ("hf_torch",)
OBJECTIVES = ("mlm", "mlm_nsp", "clm")  # what HF's BertForPreTraining / GPT2LMHeadModel train


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="bert_tiny", help="a recipe in configs/: bert_tiny, gpt_tiny, ...")
    p.add_argument("--steps", type=int, default=0, help="train steps (0: the recipe's num_steps)")
    p.add_argument("--eval_every", type=int, default=0, help="steps between evaluations (0: the recipe's)")
    p.add_argument("--eval_batches", type=int, default=0, help="held-out batches (0: the recipe's)")
    p.add_argument("--chunk", type=int, default=10, help="steps per turn of each framework")
    p.add_argument("--torch_threads", type=int, default=0, help="torch's threads (0: every core)")
    p.add_argument("--compare", default="hf_torch", help="comma-separated peers: hf_torch")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="model.FIELD=VALUE",
        help="override a model or train field (after --steps)",
    )
    p.add_argument(
        "--turn_warmup",
        type=int,
        default=1,
        choices=(0, 1),
        help="1: each turn opens with an untimed pass that leaves the model as it was (see Timing)",
    )
    p.add_argument("--quick", action="store_true", help="4 steps, evaluated every 2, 2 held-out batches")
    benchmark.add_hugepages_flag(p)
    benchmark.add_flaxlm_env_flag(p)
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--init_dir", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.flaxlm_env = benchmark.flaxlm_env(p, args.flaxlm_env)
    if args.quick:
        args.steps, args.eval_every, args.chunk = args.steps or 4, args.eval_every or 2, min(args.chunk, 2)
        args.eval_batches = args.eval_batches or 2
    args.compare = [f for f in args.compare.split(",") if f]
    unknown = [f for f in args.compare if f not in PEERS]
    if unknown:
        p.error(f"--compare: unknown peer(s) {unknown}; choose from {', '.join(PEERS)}")
    if args.steps < 0 or args.eval_every < 0 or args.chunk < 1 or args.eval_batches < 0:
        p.error("--steps, --eval_every and --eval_batches must be >= 0, --chunk >= 1")
    return args


def ttq_config(args):
    """The recipe's flaxlm config, shortened to --steps (warmup scaled alike), with --set applied."""
    from flaxlm import config as config_lib
    from flaxlm import errors

    c = benchmark.recipe(args.model)
    if args.steps and args.steps != c.train.num_steps:
        c.train.warmup_steps = round(c.train.warmup_steps * args.steps / c.train.num_steps)
        c.train.num_steps = args.steps
    benchmark.apply_overrides(c, args.set, tool="time_to_quality")
    if c.objective not in OBJECTIVES or (c.model.arch == "bert" and c.model.pre_ln):
        raise SystemExit(
            f"time_to_quality: --model {args.model}: objective {c.objective!r} "
            f"({'pre-LN ' if c.model.pre_ln else ''}{c.model.arch}) has no HF torch twin here; "
            f"choose a post-LN BERT with one of {OBJECTIVES[:2]} or a GPT with 'clm' (bert_tiny, gpt_tiny)"
        )
    if c.objective == "mlm_nsp" and c.pair_weight != 1.0:
        raise SystemExit("time_to_quality: HF's BertForPreTraining sums MLM and NSP: pair_weight must be 1")
    c.train.update(grad_accum_steps=1, num_seeds=1)
    c.parallelism = "mesh"
    try:
        config_lib.validate(c)
    except errors.FlaxlmError as e:
        raise SystemExit(f"time_to_quality: {e}") from None
    return c


def eval_every(args, config) -> int:
    return min(args.eval_every or config.train.eval_every, config.train.num_steps)


# --- Workers ---------------------------------------------------------------------------------


def batch_digest(h, batch):
    """Feeds one batch (every field, in name order) into the hash `h`."""
    import numpy as np

    for k in sorted(batch):
        a = np.ascontiguousarray(batch[k])
        h.update(f"{k}:{a.dtype}:{a.shape}".encode())
        h.update(a.tobytes())


class Data:
    """The recipe's prepared data: the training stream and the held-out batches, as `flaxlm train`
    reads them (same seeds), read in the caller's thread (no prefetching threads during the timing)."""

    def __init__(self, config, args):
        from flaxlm import train as train_lib
        from flaxlm.data import pipeline

        data = train_lib.prepare_data(config)
        tc = config.train
        self.train = pipeline.train_iterator(
            data, global_batch=tc.batch_size, seed=config.data.seed, prefetch=0, num_threads=0
        )
        self.eval = pipeline.eval_batches(
            data,
            global_batch=tc.batch_size,
            seed=config.data.seed + 1,
            max_batches=args.eval_batches or tc.eval_batches,
        )
        self.train_hash = hashlib.sha256()
        eval_hash = hashlib.sha256()
        for b in self.eval:
            batch_digest(eval_hash, b)
        self.eval_sha256 = eval_hash.hexdigest()

    def take(self, n: int) -> list:
        batches = [next(self.train) for _ in range(n)]
        for b in batches:
            batch_digest(self.train_hash, b)
        return batches


class FlaxlmSide:
    """flaxlm's product train step and its evaluation (`flaxlm.train.evaluate`)."""

    def __init__(self, config, data: Data, args):
        import jax

        from flaxlm import hf
        from flaxlm import models
        from flaxlm import optimizer as optimizer_lib
        from flaxlm import train as train_lib

        self.jax, self.train_lib, self.config = jax, train_lib, config
        model_cfg = train_lib.model_config(config)
        model = models.get_model(model_cfg)
        tx = optimizer_lib.make_optimizer(config.train)
        schedule = optimizer_lib.learning_rate_schedule(config.train)
        self.runner = train_lib.Runner(config, model, tx, schedule, devices=jax.devices()[:1])
        init_rng, self.rng = jax.random.split(jax.random.key(config.train.seed))  # as train_and_evaluate
        self.state = self.runner.init(model, tx, init_rng)
        self.params = sum(x.size for x in jax.tree.leaves(self.state.params))
        hf.save_hf(args.init_dir, model_cfg.to_dict(), self.state.params)  # the peers start from these
        # Compile the train step on a copy of the state (the step donates it) and a batch of zeros.
        t = time.perf_counter()
        self.warm(train_lib.dummy_batch(config, config.train.batch_size))
        self.compile_s = time.perf_counter() - t

    def prepare(self, batches) -> list:
        return batches  # placed on the device by train_step, as in `flaxlm train`

    def warm(self, batch) -> None:
        """One train step on a copy of the state (the step donates it), thrown away: the run's state
        does not change."""
        copy = self.jax.tree.map(lambda x: x.copy(), self.state)
        self.jax.block_until_ready(self.runner.train_step(copy, batch, self.rng))

    def train(self, batches) -> float:
        for batch in batches:
            self.state, metrics = self.runner.train_step(self.state, batch, self.rng)
        self.jax.block_until_ready((self.state, metrics))
        return float(metrics["loss"])

    def evaluate(self, batches) -> dict:
        return self.train_lib.evaluate(self.runner, self.state.params, [batches], self.config.pair_weight)[0]


class TorchSide:
    """HF transformers' torch model from flaxlm's initial weights, AdamW on flaxlm's schedule."""

    def __init__(self, config, data: Data, args):
        import numpy as np
        import torch
        import transformers

        from flaxlm import optimizer as optimizer_lib

        torch.set_num_threads(args.torch_threads or os.cpu_count())
        torch.manual_seed(config.train.seed)
        self.torch, self.config = torch, config
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        gpt = config.model.arch == "gpt"
        cls = transformers.GPT2LMHeadModel if gpt else transformers.BertForPreTraining
        self.model, info = cls.from_pretrained(
            args.init_dir, config=benchmark.hf_config(config, "hf_torch"), output_loading_info=True
        )
        if info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]:
            raise RuntimeError(f"hf_torch: flaxlm's export does not fill {cls.__name__}: {info}")
        self.model.to(self.device).train()
        self.params = sum(p.numel() for p in self.model.parameters())
        tc = config.train
        self.opt = benchmark.torch_adamw(self.model, tc)
        schedule = optimizer_lib.learning_rate_schedule(tc)
        self.lrs = np.asarray([schedule(i) for i in range(tc.num_steps)], np.float64)  # optax's, per step
        self.clip = tc.grad_clip_norm
        self.step = 0
        self.compile_s = 0.0

    def inputs(self, batch):
        return benchmark.hf_torch_inputs(self.config, batch, self.device)

    def prepare(self, batches) -> list:
        return [self.inputs(b) for b in batches]

    def warm(self, inputs) -> None:
        """Forward and backward on a batch, then the gradients dropped and the random state put back:
        no parameter, optimizer moment or draw of the run changes."""
        torch = self.torch
        rng = torch.random.get_rng_state()
        self.model(**inputs).loss.backward()
        self.opt.zero_grad(set_to_none=True)
        torch.random.set_rng_state(rng)

    def train(self, batches) -> float:
        torch = self.torch
        for inputs in batches:
            lr = float(self.lrs[min(self.step, len(self.lrs) - 1)])
            for group in self.opt.param_groups:
                group["lr"] = lr
            self.opt.zero_grad(set_to_none=True)
            loss = self.model(**inputs).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            self.opt.step()
            self.step += 1
        if self.device == "cuda":
            torch.cuda.synchronize()
        return float(loss.detach())

    def evaluate(self, batches) -> dict:
        """flaxlm's eval metrics (`EvalAccumulator`'s averaging) from HF's logits on the same targets."""
        torch = self.torch
        F = torch.nn.functional
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}

        def add(name, ce_sum, n):
            sums[name] = sums.get(name, 0.0) + float(ce_sum)
            counts[name] = counts.get(name, 0.0) + float(n)

        self.model.eval()
        with torch.no_grad():
            for batch in batches:
                inputs = self.inputs(batch)
                labels = inputs.pop("labels")
                pair = inputs.pop("next_sentence_label", None)
                out = self.model(**inputs)
                if self.config.model.arch == "gpt":
                    logits, targets = out.logits[:, :-1], labels[:, 1:]
                    name = "lm_loss"
                else:
                    logits, targets = out.prediction_logits, labels
                    name = "mlm_loss"
                keep = targets != -100
                add(name, F.cross_entropy(logits[keep].float(), targets[keep], reduction="sum"), keep.sum())
                if pair is not None:
                    ce = F.cross_entropy(out.seq_relationship_logits.float(), pair, reduction="sum")
                    add("nsp_loss", ce, len(pair))
        self.model.train()
        out = {k: sums[k] / max(counts[k], 1e-9) for k in sums}
        out["loss"] = out.get("mlm_loss", 0.0) + out.get("lm_loss", 0.0)
        out["loss"] += self.config.pair_weight * out.get("nsp_loss", 0.0)
        return out


def worker_main(args):
    reply = benchmark.worker_channel()
    framework = args.worker
    __import__("torch" if framework == "hf_torch" else "jax")
    config = ttq_config(args)
    t = time.perf_counter()
    data = Data(config, args)
    side = {"flaxlm": FlaxlmSide, "hf_torch": TorchSide}[framework](config, data, args)
    build_s = time.perf_counter() - t
    reply(
        ready=True,
        params=side.params,
        build_s=build_s,
        compile_s=side.compile_s,
        eval_batches=len(data.eval),
        eval_batches_sha256=data.eval_sha256,
        flaxlm_env=benchmark.seen_env(args),
    )
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "train":
            batches = side.prepare(data.take(cmd["n"]))  # read and converted before the clock starts
            if cmd.get("untimed"):
                side.warm(batches[0])
            t = time.perf_counter()
            loss = side.train(batches)
            reply(seconds=time.perf_counter() - t, loss=loss, batches_sha256=data.train_hash.hexdigest())
        elif cmd["cmd"] == "eval":
            t = time.perf_counter()
            metrics = side.evaluate(data.eval)
            reply(metrics=metrics, eval_s=time.perf_counter() - t)
        elif cmd["cmd"] == "finish":
            reply(done=True)
            return


# --- The parent ----------------------------------------------------------------------------


def time_to(curve, target: float):
    """Train seconds to reach `target` on curve [(step, loss, train_s)]: the first evaluation at or
    below it, interpolated linearly in loss from the one before; (seconds, step) or (None, None)."""
    for i, (step, loss, secs) in enumerate(curve):
        if loss <= target:
            if i == 0:
                return secs, float(step)
            s0, l0, t0 = curve[i - 1]
            f = (l0 - target) / (l0 - loss)
            return t0 + f * (secs - t0), s0 + f * (step - s0)
    return None, None


def schedule_of_turns(steps: int, every: int, chunk: int) -> list[tuple[int, bool]]:
    """[(steps in this turn, evaluate after it)]: turns of `chunk` steps that end at every evaluation."""
    turns, done = [], 0
    while done < steps:
        nxt = min((done // every + 1) * every, steps)
        n = min(chunk, nxt - done)
        done += n
        turns.append((n, done == nxt))
    return turns


def table(summary: dict, ratios: dict, target: float) -> str:
    lines = [
        f"held-out loss target (the worst final loss): {target:.4f}\n",
        "| framework | loss step 0 | final loss | train s | s / step | compile s "
        "| train s to target (step) | this / flaxlm: time to target | step time: median (95%) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f, s in summary.items():
        tt = (
            f"{s['train_s_to_target']:.1f} ({s['step_at_target']:.0f})"
            if s["train_s_to_target"] is not None
            else "n/a"
        )
        q = ratios.get(f)
        ratio = (
            f"{q['time_to_target']:.2f}x"
            if q and q["time_to_target"]
            else ("1.00x" if f == "flaxlm" else "n/a")
        )
        st = q["step_time"] if q else None
        step = (
            f"{st['median']:.2f}x ({st['low']:.2f}-{st['high']:.2f})"
            if st
            else ("1.00x" if f == "flaxlm" else "")
        )
        lines.append(
            f"| {f} | {s['loss_first']:.4f} | {s['loss_last']:.4f} | {s['train_s']:.1f} | "
            f"{s['train_s'] / max(s['steps'], 1):.3f} | {s['compile_s']:.1f} | {tt} | {ratio} | {step} |"
        )
    return "\n".join(lines)


def log(message: str):
    print(f"time_to_quality: {message}", file=sys.stderr, flush=True)


def main():
    args = parse_args()
    if args.worker:
        return worker_main(args)
    config = ttq_config(args)  # fail fast on a bad model or option, before any worker starts
    steps, every = config.train.num_steps, eval_every(args, config)

    def out(row):
        print(json.dumps(row), flush=True)

    out(benchmark.machine_info())
    out({"what": "load", "when": "start", "loadavg_1_5_15": os.getloadavg()})
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_NO_ADVISORY_WARNINGS="1")
    init_dir = tempfile.mkdtemp(prefix="flaxlm_ttq_")
    argv = [*sys.argv[1:], "--init_dir", init_dir]
    frameworks = ["flaxlm", *args.compare]
    workers = {}
    try:
        for f in frameworks:  # flaxlm first: it writes the initial weights the peers load
            w = workers[f] = benchmark.Worker(
                f, argv, benchmark.worker_env(f, env, args.hugepages, args.flaxlm_env), script=__file__
            )
            r = w.ready
            log(
                f"{f}: ready, {r['params']:,} parameters, built in {r['build_s']:.1f} s, "
                f"compile {r['compile_s']:.1f} s"
            )
            out(
                {
                    "what": "worker",
                    "framework": f,
                    "model": args.model,
                    "malloc_hugepages": w.hugepages,
                    **{k: v for k, v in r.items() if k != "ready"},
                }
            )
        if len({w.ready["eval_batches_sha256"] for w in workers.values()}) != 1:
            raise SystemExit("time_to_quality: the frameworks' held-out batches differ")
        curves = {f: [] for f in frameworks}
        train_s = dict.fromkeys(frameworks, 0.0)
        turn_s: dict[str, list[float]] = {f: [] for f in frameworks}
        sha = dict.fromkeys(frameworks, hashlib.sha256().hexdigest())  # of the training batches so far
        done = 0

        def evaluate():
            for f, w in workers.items():
                m = w.ask(cmd="eval")["metrics"]
                curves[f].append((done, m["loss"], train_s[f]))
                out(
                    {
                        "what": "eval",
                        "framework": f,
                        "model": args.model,
                        "step": done,
                        "train_s": train_s[f],
                        **m,
                        "batches_sha256": sha[f],
                    }
                )
            log(
                f"step {done}: "
                + ", ".join(f"{f} {curves[f][-1][1]:.4f} ({train_s[f]:.1f} s)" for f in frameworks)
            )

        evaluate()
        for n, then_eval in schedule_of_turns(steps, every, args.chunk):
            for f, w in workers.items():
                r = w.ask(cmd="train", n=n, untimed=args.turn_warmup)
                train_s[f] += r["seconds"]
                turn_s[f].append(r["seconds"])
                sha[f] = r["batches_sha256"]
            if len(set(sha.values())) != 1:
                raise SystemExit(
                    f"time_to_quality: the frameworks' training batches differ by step {done + n}"
                )
            done += n
            if then_eval:
                evaluate()
        for w in workers.values():
            w.ask(cmd="finish")
            w.proc.stdin.close()
            w.proc.wait()
    except RuntimeError as e:  # a worker died: its last lines of stderr, in one line
        raise SystemExit(f"time_to_quality: {e}") from None
    finally:
        for w in workers.values():
            if w.proc.poll() is None:
                w.proc.kill()
        shutil.rmtree(init_dir, ignore_errors=True)

    out({"what": "load", "when": "end", "loadavg_1_5_15": os.getloadavg()})
    target = max(c[-1][1] for c in curves.values())
    summary = {}
    for f in frameworks:
        secs, at = time_to(curves[f], target)
        summary[f] = row = {
            "what": "time_to_target",
            "framework": f,
            "model": args.model,
            "target_loss": target,
            "train_s_to_target": secs,
            "step_at_target": at,
            "steps": steps,
            "train_s": train_s[f],
            "compile_s": workers[f].ready["compile_s"],
            "loss_first": curves[f][0][1],
            "loss_last": curves[f][-1][1],
        }
        out(row)
    ratios = {}
    base = summary["flaxlm"]
    for f in args.compare:
        per_turn = [p / b for p, b in zip(turn_s[f], turn_s["flaxlm"]) if b > 0]
        s = summary[f]
        ratios[f] = {
            "what": "ratio",
            "model": args.model,
            "flaxlm_over": f,
            "target_loss": target,
            "time_to_target": s["train_s_to_target"] / base["train_s_to_target"]
            if s["train_s_to_target"] is not None and base["train_s_to_target"]
            else None,
            "step_time": benchmark.ratio_stats(per_turn) if per_turn else None,
            "turns": len(per_turn),
            "loss_first_diff": s["loss_first"] - base["loss_first"],
            "loss_last_diff": s["loss_last"] - base["loss_last"],
            "steps": steps,
            "eval_every": every,
            "chunk": args.chunk,
        }
        out(ratios[f])
    print(table(summary, ratios, target), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
