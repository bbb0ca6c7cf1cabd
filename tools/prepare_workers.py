"""Preparation throughput of `flaxlm prepare` against the number of Apache Beam workers.

  python tools/prepare_workers.py                      # bert_tiny, 4 copies of the default corpus, 0,1,2
  python tools/prepare_workers.py --workers 1,2,4 --scale 10
  python tools/prepare_workers.py --override=--config.data.builder=causal --override=--config.objective=clm

The corpus is `--scale` copies of the default corpus (tools/prepare_memory.py's: real text, 4 files
per copy, distinct ids), so Beam has 4 x scale units to share out. One sentencepiece model, trained
before anything is timed, serves every run (tokenizer training is not preparation), and each run
prepares from scratch into its own data dir, as `python -m flaxlm prepare` in a child process with
--config.data.prepare_workers=N (0: in process, no Beam). After each run the tool reads the
prepared examples back and hashes them in order (decoded values: the record bytes differ between
processes in protobuf's map order), and stops if two runs differ. Prints one JSON line per run
(seconds, text MiB/s, speedup over 1 worker measured in the same run, peak RSS, load average) and a table.
Issue 16's target: 2 workers >= 1.7x one on 2 idle cores.
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tools"))

from prepare_memory import peak_rss_run, prepare_args, train_tokenizer, write_scaled_corpus  # noqa: E402


def examples_digest(path: str) -> tuple[str, dict[str, int]]:
    """sha256 of every prepared example's decoded arrays, split by split in order; and the counts."""
    import tensorflow_datasets as tfds

    from flaxlm.data.prepare import RecordSource

    digest, counts = hashlib.sha256(), {}
    sources = tfds.builder_from_directory(path).as_data_source()
    for split in ("train", "validation"):
        records = RecordSource(sources[split])
        counts[split] = len(records)
        for ex in records:
            for key in sorted(ex):
                digest.update(key.encode())
                digest.update(np.asarray(ex[key]).tobytes())
    return digest.hexdigest(), counts


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=os.path.join(REPO, "configs", "bert_tiny.py"))
    p.add_argument("--scale", type=int, default=4, help="copies of the default corpus")
    p.add_argument("--workers", default="0,1,2", help="comma-separated data.prepare_workers values")
    p.add_argument("--override", action="append", default=[], help="a --config.FIELD=VALUE for every run")
    p.add_argument("--work_dir", default="", help="keep the corpus and data dirs here (default: a temp dir)")
    args = p.parse_args()
    try:
        workers = [int(w) for w in args.workers.split(",")]
    except ValueError:
        p.error(f"--workers={args.workers!r}: give comma-separated counts such as 0,1,2")
    if any(w < 0 for w in workers):
        p.error(f"--workers={args.workers!r}: counts must be >= 0 (0: in process, without Beam)")

    work = args.work_dir or tempfile.mkdtemp(prefix="prepare_workers_")
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    base = [f"--config={args.config}", *args.override]
    tokenizer = train_tokenizer(base, work, env)
    spec, text_bytes = write_scaled_corpus(os.path.join(work, "corpus"), args.scale)

    rows, first_digest = [], None
    for n in workers:
        data_dir = os.path.join(work, f"data_{n}")
        args_n = [*prepare_args(base, spec, tokenizer, data_dir), f"--config.data.prepare_workers={n}"]
        rss, seconds, said = peak_rss_run(args_n, env)
        path = said.splitlines()[-1].split(": ", 1)[0]  # "PATH: train N examples, validation M"
        digest, counts = examples_digest(path)
        first_digest = first_digest or digest
        if digest != first_digest:
            sys.exit(f"prepare_workers={n} wrote other examples than prepare_workers={workers[0]} ({path})")
        rows.append(
            {
                "prepare_workers": n,
                "seconds": round(seconds, 1),
                "peak_rss_MiB": round(rss, 1),  # the largest of the process and its waited-for children
                "text_MiB_per_s": round(text_bytes / 2**20 / seconds, 3),
                "examples": counts,
                "examples_sha256": digest[:16],
                "loadavg_1m": os.getloadavg()[0],
                "cpu_count": os.cpu_count(),
                "scale": args.scale,
                "overrides": args.override,
            }
        )
    one = next((r["seconds"] for r in rows if r["prepare_workers"] == 1), None)
    for r in rows:
        r["x_1_worker"] = round(one / r["seconds"], 3) if one else None
        print(json.dumps(r), flush=True)
    mib = text_bytes / 2**20
    print(f"\ntext {mib:.1f} MiB; every run wrote the same examples (sha256 {first_digest[:16]})")
    print("| prepare_workers | seconds | text MiB/s | x 1 worker | peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['x_1_worker']:.2f}" if r["x_1_worker"] else "-"
        print(
            f"| {r['prepare_workers']} | {r['seconds']:.1f} | {r['text_MiB_per_s']:.3f} | {ratio} "
            f"| {r['peak_rss_MiB']:.0f} |"
        )


if __name__ == "__main__":
    main()
