"""Throughput of K seeds as one program (config.train.num_seeds=K) against K single-seed runs in turn.

  python tools/seeds_benchmark.py                          # bert_tiny at seq 128, batch 32, K = 3
  python tools/seeds_benchmark.py --model gpt_tiny --seeds 4 --steps 20
  python tools/seeds_benchmark.py --quick                  # a smoke test: 2 steps, 1 round

--model names a recipe in configs/; --seq, --batch and --set model.FIELD=VALUE as in
tools/benchmark.py, whose config builder this tool uses (peak learning rate from the first step).

What is timed: flaxlm's product train step (`flaxlm.train.Runner.train_step`, the step `flaxlm
train` runs) on this machine's first device, after compilation and --warmup untimed steps, each
step waited for before the next:
- "one_program": the Runner of num_seeds=K: one step trains the K seeds, each on its own batch;
- "sequential": the Runner of num_seeds=1: one seed's step. K single-seed runs one after another
  (or K processes taking turns on the same cores) train at this step's rate.
Batches are synthetic (tools/benchmark.py's: random ids, every position real; seed i's differ
from seed j's), so the input pipeline is not timed.

Both take turns in this process: --rounds rounds of --steps/--rounds steps each, so a machine
shared with other jobs slows them alike and the ratio stays meaningful.

Output: JSON lines on stdout: "machine", one "train_step" per mode (tokens_per_s: batch x seq
positions per second summed over the seeds trained; step_s_median / step_s_min / step_s_max: one
step of that mode; compile_s: its first step; loss_first / loss_last: seed 0's), then "ratio":
one_program tokens/s over sequential tokens/s (the speed-up of training K seeds as one program);
then a Markdown table on stderr.
"""

import argparse
import json
import os
import statistics
import sys
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchmark  # noqa: E402  (tools/benchmark.py: recipe configs, synthetic batches, machine info)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="bert_tiny", help="a recipe in configs/ (without .py)")
    p.add_argument("--seq", type=int, default=128, help="sequence length")
    p.add_argument("--batch", type=int, default=32, help="sequences per step and seed")
    p.add_argument("--seeds", type=int, default=3, help="K: seeds trained as one program")
    p.add_argument("--set", action="append", default=[], metavar="model.FIELD=VALUE", help="override a field")
    p.add_argument("--steps", type=int, default=10, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after the compiling one")
    p.add_argument("--rounds", type=int, default=5, help="turns the two modes take")
    p.add_argument("--quick", action="store_true", help="2 steps, 1 warmup, 1 round")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.rounds = 2, 1, 1
    if args.seeds < 2 or args.steps < 1 or args.warmup < 0 or args.rounds < 1:
        p.error("--seeds must be >= 2, --steps and --rounds >= 1, --warmup >= 0")
    args.rounds = min(args.rounds, args.steps)
    # What tools/benchmark.py's bench_config reads besides the above.
    args.dtype, args.attention, args.remat = "float32", "xla", False
    return args


class Mode:
    """One Runner (num_seeds seeds as one program) on the first device, with its state and batch."""

    def __init__(self, config, num_seeds: int):
        import jax

        from flaxlm import models
        from flaxlm import optimizer as optimizer_lib
        from flaxlm import seeds as seeds_lib
        from flaxlm import train as train_lib

        config = config.copy_and_resolve_references()
        config.train.num_seeds = num_seeds
        model = models.get_model(train_lib.model_config(config))
        tx = optimizer_lib.make_optimizer(config.train)
        schedule = optimizer_lib.learning_rate_schedule(config.train)
        self.runner = train_lib.Runner(config, model, tx, schedule, devices=jax.devices()[:1])
        keys = seeds_lib.stack([jax.random.split(jax.random.key(i)) for i in range(num_seeds)])
        self.state = self.runner.init(model, tx, keys[..., 0])
        self.rng = keys[..., 1]
        self.batch = seeds_lib.stack([benchmark.synthetic_batch(config, seed=i) for i in range(num_seeds)])
        self.num_seeds, self.times, self.losses = num_seeds, [], []
        self.tokens = num_seeds * config.train.batch_size * config.data.seq_len
        self.compile_s = self._step()

    def _step(self) -> float:
        t = time.perf_counter()
        self.state, metrics = self.runner.train_step(self.state, self.batch, self.rng)
        loss = float(metrics["loss"].reshape(-1)[0])  # waits for the step; seed 0's loss
        self.losses.append(loss)
        return time.perf_counter() - t

    def run(self, steps: int, timed: bool = True):
        for _ in range(steps):
            dt = self._step()
            if timed:
                self.times.append(dt)


def main():
    args = parse_args()
    config = benchmark.bench_config(args)
    out = lambda row: print(json.dumps(row), flush=True)
    out(benchmark.machine_info())

    modes = {"one_program": Mode(config, args.seeds), "sequential": Mode(config, 1)}
    for m in modes.values():
        m.run(args.warmup, timed=False)
    for r in range(args.rounds):  # turns: a shared machine slows both alike
        n = args.steps // args.rounds + (r < args.steps % args.rounds)
        for m in modes.values():
            m.run(n)

    rows = {}
    for name, m in modes.items():
        med = statistics.median(m.times)
        rows[name] = {
            "what": "train_step",
            "mode": name,
            "model": args.model,
            "seq": args.seq,
            "batch": args.batch,
            "seeds_per_step": m.num_seeds,
            "tokens_per_s": m.tokens / med,
            "step_s_median": med,
            "step_s_min": min(m.times),
            "step_s_max": max(m.times),
            "compile_s": m.compile_s,
            "loss_first": m.losses[0],
            "loss_last": m.losses[-1],
        }
        out(rows[name])
    one, seq = rows["one_program"], rows["sequential"]
    ratio = one["tokens_per_s"] / seq["tokens_per_s"]
    out({"what": "ratio", "seeds": args.seeds, "one_program_over_sequential": ratio})
    lines = [
        f"{args.seeds} seeds of {args.model} (seq {args.seq}, batch {args.batch} per seed), "
        f"{args.steps} timed steps per mode in {args.rounds} rounds",
        "| mode | seeds per step | step s (median) | tokens/s | compile s |",
        "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['seeds_per_step']} | {row['step_s_median']:.3f} | "
            f"{row['tokens_per_s']:,.0f} | {row['compile_s']:.1f} |"
        )
    lines.append(f"one program / {args.seeds} sequential runs: {ratio:.2f}x the tokens per second")
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    main()
