"""How fast the input pipeline makes batches, next to how fast a BERT-base train step eats them.

  python tools/data_benchmark.py                 # all builders, the default corpus, seq 128
  python tools/data_benchmark.py --batches 50 --builders segment_pair+nsp,causal
  python tools/data_benchmark.py --workers 1,2   # reader mode: examples/s per number of workers

Reader mode (--workers N,M,...) times the training reader as `flaxlm train` runs it with
--config.data.reader_workers=N (grain worker processes, each making batches on
--reader_threads threads; 0: in the calling thread), for each builder asked, and prints one
JSON line per count with its ratio to 1 worker measured in the same run, then a table. No
trainer is timed. The load average is printed with each line: on a shared machine the
ratios are only as good as the idle cores.

Prints one JSON line per pipeline variant (examples/s and tokens/s of the
grain pipeline alone, read in the calling thread, i.e. on one core, after
preparation), one line for the trainer (BERT-base, seq 128, the same
batch, full train step on this machine's default JAX backend), and the
ratio pipeline/trainer for each variant. The preparation itself (tokenize +
build + write ArrayRecord, done once per setting) is timed separately.
"""

import argparse
import json
import os
import sys
import time

import jax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from flaxlm import config as config_lib  # noqa: E402
from flaxlm import models  # noqa: E402
from flaxlm import optimizer as optimizer_lib  # noqa: E402
from flaxlm import train as train_lib  # noqa: E402
from flaxlm.data import pipeline  # noqa: E402

VARIANTS = {  # name: (builder, objective, data overrides)
    "segment_pair+nsp": ("segment_pair", "mlm_nsp", {}),
    "segment_pair+nsp/static": ("segment_pair", "mlm_nsp", {"masking": "static"}),
    "segment_pair+nsp/whole_word": ("segment_pair", "mlm_nsp", {"whole_word": True}),
    "segment_pair+nsp/span": ("segment_pair", "mlm_nsp", {"span": True}),
    "sentence_pair+nsp": ("sentence_pair", "mlm_nsp", {}),
    "full_sentences": ("full_sentences", "mlm", {}),
    "doc_sentences": ("doc_sentences", "mlm", {}),
    "sop": ("sop", "mlm_sop", {}),
    "causal": ("causal", "clm", {}),
}


def variant_config(builder, objective, data_overrides, args):
    c = config_lib.base_config()
    if builder == "causal":
        c.model.update(arch="gpt", type_vocab_size=0, pre_ln=True)
    c.objective = objective
    c.model.vocab_size = args.vocab_size
    c.data.update(
        builder=builder,
        seq_len=args.seq_len,
        max_predictions=args.max_predictions,
        corpus=args.corpus,
        data_dir=args.data_dir,
        **data_overrides,
    )
    return c


def pipeline_rate(config, args):
    t = time.perf_counter()
    data = train_lib.prepare_data(config)
    prep_s = time.perf_counter() - t
    it = pipeline.train_iterator(data, global_batch=args.batch, seed=0, num_threads=0, prefetch=1)
    next(it)  # warm up (opens files)
    t = time.perf_counter()
    tokens = sum(pipeline.batch_tokens(next(it)) for _ in range(args.batches))
    dt = time.perf_counter() - t
    return {
        "examples_per_s": args.batches * args.batch / dt,
        "tokens_per_s": tokens / dt,
        "prepare_s": prep_s,
        "train_examples": len(data.train),
    }


def reader_rate(data, workers, args):
    """Examples/s of the training reader with `workers` worker processes (after they have started)."""
    it = pipeline.train_iterator(
        data,
        global_batch=args.batch,
        seed=0,
        num_threads=args.reader_threads,
        num_workers=workers,
        prefetch=max(1, args.reader_threads),
    )
    pipeline.take(it, 2 * max(1, workers))  # workers start (import, open files) and fill their buffers
    windows = []  # (seconds, tokens) of --repeats consecutive windows of --batches batches
    for _ in range(args.repeats):
        t = time.perf_counter()
        tokens = sum(pipeline.batch_tokens(next(it)) for _ in range(args.batches))
        windows.append((time.perf_counter() - t, tokens))
    if workers:
        it.close()
    dt, tokens = sorted(windows)[len(windows) // 2]  # the median window: other load comes and goes
    return {
        "examples_per_s": args.batches * args.batch / dt,
        "tokens_per_s": tokens / dt,
        "windows_examples_per_s": [round(args.batches * args.batch / w, 1) for w, _ in windows],
    }


def reader_mode(args):
    """One JSON line per (builder, worker count), ratios against 1 worker in the same run, then a table."""
    counts = [int(n) for n in args.workers.split(",")]
    rows = []
    for name in args.builders.split(","):
        builder, objective, overrides = VARIANTS[name]
        data = train_lib.prepare_data(variant_config(builder, objective, overrides, args))
        rates = {n: reader_rate(data, n, args) for n in counts}
        one = rates.get(1)
        for n, rate in rates.items():
            row = {
                "what": f"reader {name}",
                "workers": n,
                "reader_threads": args.reader_threads,
                "seq_len": args.seq_len,
                "batch": args.batch,
                **rate,
                "x_1_worker": rate["examples_per_s"] / one["examples_per_s"] if one else None,
                "cpu_count": os.cpu_count(),
                "loadavg_1m": os.getloadavg()[0],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| reader | workers | examples/s | tokens/s | x 1 worker |\n|---|---:|---:|---:|---:|")
    for r in rows:
        ratio = "" if r["x_1_worker"] is None else f"{r['x_1_worker']:.2f}"
        print(
            f"| {r['what'][len('reader ') :]} | {r['workers']} | {r['examples_per_s']:,.0f} | "
            f"{r['tokens_per_s']:,.0f} | {ratio} |"
        )


def trainer_rate(args):
    """Examples/s of a full BERT-base train step (fwd, bwd, AdamW) at this batch and seq_len."""
    c = config_lib.base_config()
    c.data.update(seq_len=args.seq_len, max_predictions=args.max_predictions)
    c.train.batch_size = args.batch
    model = models.get_model(train_lib.model_config(c))
    tx = optimizer_lib.make_optimizer(c.train)
    runner = train_lib.Runner(
        c, model, tx, optimizer_lib.learning_rate_schedule(c.train), devices=jax.devices()[:1]
    )
    rng = jax.random.key(0)
    state = runner.init(model, tx, rng)
    batch = train_lib.dummy_batch(c, args.batch)
    batch["segment_ids"][:] = 1
    batch["mlm_weights"][:] = 1.0
    state, m = runner.train_step(state, batch, rng)
    jax.block_until_ready(m)
    t = time.perf_counter()
    for _ in range(args.trainer_steps):
        state, m = runner.train_step(state, batch, rng)
    jax.block_until_ready(m)
    dt = (time.perf_counter() - t) / args.trainer_steps
    return {"examples_per_s": args.batch / dt, "tokens_per_s": args.batch * args.seq_len / dt, "step_s": dt}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default="default")
    p.add_argument("--data_dir", default="")
    p.add_argument(
        "--builders", default=",".join(VARIANTS), help="comma-separated names from: " + ", ".join(VARIANTS)
    )
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--max_predictions", type=int, default=20)
    p.add_argument("--vocab_size", type=int, default=8000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--trainer_steps", type=int, default=3)
    p.add_argument(
        "--workers",
        default="",
        help="reader mode: comma-separated worker counts (e.g. 1,2; 0: the calling thread); no trainer",
    )
    p.add_argument("--reader_threads", type=int, default=0, help="reader mode: threads in each worker")
    p.add_argument("--repeats", type=int, default=3, help="reader mode: timed windows per count (median)")
    args = p.parse_args()
    for name in args.builders.split(","):
        if name not in VARIANTS:
            p.error(f"--builders: unknown {name!r}; choose from {', '.join(VARIANTS)}")
    if args.workers:
        reader_mode(args)
        return

    machine = {
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "cpu_count": os.cpu_count(),
    }
    trainer = trainer_rate(args)
    print(
        json.dumps(
            {"what": "trainer bert_base", "seq_len": args.seq_len, "batch": args.batch, **trainer, **machine}
        ),
        flush=True,
    )
    for name in args.builders.split(","):
        builder, objective, overrides = VARIANTS[name]
        rate = pipeline_rate(variant_config(builder, objective, overrides, args), args)
        print(
            json.dumps(
                {
                    "what": f"pipeline {name}",
                    "seq_len": args.seq_len,
                    "batch": args.batch,
                    **rate,
                    "x_trainer": rate["examples_per_s"] / trainer["examples_per_s"],
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
