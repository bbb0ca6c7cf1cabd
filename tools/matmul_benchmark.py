"""The matmuls of a recipe's train step in XLA (JAX) and in torch, on this CPU, in the same run.

  python tools/matmul_benchmark.py --model bert_base --seq 128 --batch 8
  python tools/matmul_benchmark.py --model gpt2_small --seq 256 --batch 8

tools/benchmark.py says how a whole step of flaxlm compares with HF torch's; this tool says how much of
a difference comes from the matrix-multiply kernels alone, which no model code changes: XLA:CPU's
(what flaxlm and HF Flax run) against torch's (oneDNN / MKL), on the shapes the step multiplies:

- the projections of every position (q, k, v and the attention output: [B*T, D] x [D, D]), the MLP's
  ([B*T, D] x [D, F] and back), and two of their gradients (the weight's, [D, B*T] x [B*T, F], and
  the input's, [B*T, F] x [F, D] transposed);
- attention's batched matmuls, one [T, D/H] x [D/H, T] and one [T, T] x [T, D/H] per head and row;
- the vocabulary projection of the scored positions ([P, D] x [D, V]: BERT's masked positions, a GPT's
  every position).

Each shape is timed as one jitted `jnp.einsum` and one `torch.einsum` on the same random float32
(or --dtype bfloat16) operands, enough calls per timing to last --min_time, the two taking turns
for --rounds rounds with a short pause between turns (so that torch's OpenMP threads, which spin
a moment after their work, are asleep when XLA's start). Prints one JSON line per shape (GFLOP/s
of each: the best round; "xla_over_torch": the median over rounds of torch's time over XLA's,
with a 95% bootstrap interval, tools/benchmark.py's `ratio_stats`: below 1.0, XLA's kernel is
slower) and a Markdown table on stderr.
Needs torch (`pip install torch`).
"""

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark  # noqa: E402


def shapes(config, args) -> list[tuple[str, str, tuple, tuple]]:
    """(what, einsum spec, lhs shape, rhs shape) of the step's matmuls at these shapes."""
    m = config.model
    bt, d, f, h = args.batch * args.seq, m.hidden_size, m.mlp_dim, m.num_heads
    bh, scored = args.batch * h, args.batch * benchmark.scored_positions(config)
    return [
        ("q/k/v/output projection", "md,de->me", (bt, d), (d, d)),
        ("MLP up", "md,df->mf", (bt, d), (d, f)),
        ("MLP down", "mf,fd->md", (bt, f), (f, d)),
        ("MLP up: weight gradient", "md,mf->df", (bt, d), (bt, f)),
        ("MLP up: input gradient", "mf,df->md", (bt, f), (d, f)),
        ("attention scores", "btk,bsk->bts", (bh, args.seq, d // h), (bh, args.seq, d // h)),
        ("attention values", "bts,bsk->btk", (bh, args.seq, args.seq), (bh, args.seq, d // h)),
        ("vocabulary projection", "pd,dv->pv", (scored, d), (d, m.vocab_size)),
    ]


def flops(spec: str, lhs: tuple, rhs: tuple) -> int:
    """2 x the product of every dimension the einsum names (each named once)."""
    lhs_names, rhs_names = spec.split("->")[0].split(",")
    names = dict(zip(lhs_names, lhs)) | dict(zip(rhs_names, rhs))
    n = 2
    for size in names.values():
        n *= size
    return n


def time_shape(spec: str, lhs: tuple, rhs: tuple, args, rng) -> tuple[dict[str, list[float]], int]:
    """Seconds per call of XLA's and torch's einsum, one entry per round; and the calls per timing."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    a, b = rng.standard_normal(lhs).astype(np.float32), rng.standard_normal(rhs).astype(np.float32)
    xa, xb = jnp.asarray(a, args.dtype), jnp.asarray(b, args.dtype)
    tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    ta, tb = torch.from_numpy(a).to(tdtype), torch.from_numpy(b).to(tdtype)
    xla = jax.jit(lambda x, y: jnp.einsum(spec, x, y))

    def run_xla(calls):
        for _ in range(calls):
            xla(xa, xb).block_until_ready()

    def run_torch(calls):
        with torch.no_grad():
            for _ in range(calls):
                torch.einsum(spec, ta, tb)

    run_xla(1)  # compiles
    run_torch(1)
    t = time.perf_counter()
    run_xla(1)
    calls = max(1, math.ceil(args.min_time / (time.perf_counter() - t)))
    times = {"xla": [], "torch": []}
    for _ in range(args.rounds):
        for name, run in (("xla", run_xla), ("torch", run_torch)):
            time.sleep(args.pause)
            t = time.perf_counter()
            run(calls)
            times[name].append((time.perf_counter() - t) / calls)
    return times, calls


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="bert_base", help="a recipe in configs/ (without .py)")
    p.add_argument("--seq", type=int, default=128, help="sequence length")
    p.add_argument("--batch", type=int, default=8, help="sequences per step")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--rounds", type=int, default=7, help="turns each framework takes per shape")
    p.add_argument("--min_time", type=float, default=0.1, help="seconds a timing lasts at least")
    p.add_argument("--pause", type=float, default=0.05, help="seconds between turns")
    args = p.parse_args()
    if args.rounds < 1 or args.min_time <= 0:
        p.error("--rounds must be >= 1 and --min_time > 0")
    config = benchmark.bench_config(
        benchmark.parse_args(["--model", args.model, "--seq", str(args.seq), "--batch", str(args.batch)])
    )
    try:
        import torch
    except ImportError:
        raise SystemExit("matmul_benchmark: needs torch; pip install torch") from None
    import numpy as np

    print(json.dumps(benchmark.machine_info() | {"torch": torch.__version__}), flush=True)
    rng = np.random.RandomState(0)
    rows = []
    for what, spec, lhs, rhs in shapes(config, args):
        times, calls = time_shape(spec, lhs, rhs, args, rng)
        n = flops(spec, lhs, rhs)
        stats = benchmark.ratio_stats([t / x for x, t in zip(times["xla"], times["torch"])])
        row = {
            "what": "matmul",
            "op": what,
            "einsum": spec,
            "lhs": list(lhs),
            "rhs": list(rhs),
            "dtype": args.dtype,
            "flops": n,
            "calls_per_timing": calls,
            "xla_gflops": n / min(times["xla"]) / 1e9,
            "torch_gflops": n / min(times["torch"]) / 1e9,
            "xla_over_torch": stats["median"],
            "xla_over_torch_low": stats["low"],
            "xla_over_torch_high": stats["high"],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    lines = [
        f"| matmul ({args.model}, seq {args.seq}, batch {args.batch}, {args.dtype}) | shapes "
        "| XLA GFLOP/s | torch GFLOP/s | XLA / torch speed: median (95%) |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['op']} | {r['lhs']} x {r['rhs']} | {r['xla_gflops']:.0f} | {r['torch_gflops']:.0f} "
            f"| {r['xla_over_torch']:.2f}x ({r['xla_over_torch_low']:.2f}-{r['xla_over_torch_high']:.2f}) |"
        )
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    main()
