"""Peak memory of `flaxlm prepare` on the default corpus and on one `--scale` times its size.

  python tools/prepare_memory.py                       # bert_tiny (segment pairs + NSP), 10x
  python tools/prepare_memory.py --scale 4 --override=--config.data.builder=causal \\
      --override=--config.objective=clm

The large corpus is real text: `--scale` copies of the four embedded corpora written as
.jsonl.gz files in a temporary folder, each copy's document ids prefixed with its number
(``copy3/austen/...``) so that no two documents share an id, sources kept (the default
spec's four). Both runs use one sentencepiece model, trained on the default corpus before
either is measured (tokenizer training is not preparation and has its own bound, the
sample of data.tokenizer_sample_sentences), and a fresh data dir each, so each prepares
from scratch. Each run is `python -m flaxlm prepare` in a child process; its peak resident
set is the child's ``ru_maxrss`` (os.wait4). Prints one JSON line per run, then one with
the ratio large/default (issue 16's target: <= 1.3), then a table.
"""

import argparse
import gzip
import importlib.resources
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBEDDED = ("shakespeare", "austen", "bible", "pydocs")  # flaxlm.data.corpus.EMBEDDED's order


def write_scaled_corpus(folder: str, copies: int) -> tuple[str, int]:
    """`copies` copies of the default corpus as folder/copyK/NAME.jsonl.gz; (glob spec, bytes of text)."""
    text_bytes = 0
    for k in range(copies):
        os.makedirs(os.path.join(folder, f"copy{k:03d}"), exist_ok=True)
        for name in EMBEDDED:
            src = importlib.resources.files("flaxlm.data").joinpath("corpora", f"{name}.jsonl.gz")
            with (
                src.open("rb") as f_in,
                gzip.open(f_in, "rt", encoding="utf-8") as lines,
                gzip.open(os.path.join(folder, f"copy{k:03d}", f"{name}.jsonl.gz"), "wt") as out,
            ):
                for line in lines:
                    record = json.loads(line)
                    record["id"] = f"copy{k}/{record['id']}"
                    record["source"] = name
                    text_bytes += sum(len(p.encode("utf-8")) for p in record["paragraphs"])
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return os.path.join(folder, "copy*", "*.jsonl.gz"), text_bytes


def peak_rss_run(args: list[str], env: dict) -> tuple[float, float, str]:
    """`python -m flaxlm ARGS` in a child: (its peak resident set in MiB, wall seconds, stdout)."""
    t = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen([sys.executable, "-m", "flaxlm", *args], env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - t
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status):
            sys.exit(f"flaxlm {' '.join(args)} failed:\n{err.read().decode()[-3000:]}")
        return usage.ru_maxrss / 1024, seconds, out.read().decode().strip()  # ru_maxrss: KiB on Linux


def train_tokenizer(base: list[str], work: str, env: dict) -> str:
    """`flaxlm tokenizer` for the config of ``base`` (its flags) in WORK/tokenizer; the model's path.

    Tokenizer training is not preparation: the runs that are measured then all use this model."""
    _, _, said = peak_rss_run(
        ["tokenizer", *base, f"--config.data.data_dir={os.path.join(work, 'tokenizer')}"], env
    )
    return said.rsplit(": ", 1)[1]  # "tokenizer with N tokens: PATH"


def prepare_args(base: list[str], spec: str, tokenizer: str, data_dir: str) -> list[str]:
    """`flaxlm prepare` of ``base``'s config on corpus ``spec`` with ``tokenizer``, into ``data_dir``."""
    return [
        "prepare",
        *base,
        f"--config.data.corpus={spec}",
        f"--config.data.tokenizer={tokenizer}",
        f"--config.data.data_dir={data_dir}",
    ]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=os.path.join(REPO, "configs", "bert_tiny.py"))
    p.add_argument("--scale", type=int, default=10, help="copies of the default corpus in the large one")
    p.add_argument("--override", action="append", default=[], help="a --config.FIELD=VALUE for every run")
    p.add_argument("--work_dir", default="", help="keep the corpus and data dirs here (default: a temp dir)")
    args = p.parse_args()

    work = args.work_dir or tempfile.mkdtemp(prefix="prepare_memory_")
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    base = [f"--config={args.config}", *args.override]
    tokenizer = train_tokenizer(base, work, env)
    large_spec, large_bytes = write_scaled_corpus(os.path.join(work, "corpus"), args.scale)
    default_bytes = large_bytes // args.scale  # each copy is the default corpus's text

    rows = []
    for name, spec, text_bytes in (
        ("default", "default", default_bytes),
        (f"{args.scale}x", large_spec, large_bytes),
    ):
        data_dir = os.path.join(work, f"data_{name}")
        rss, seconds, said = peak_rss_run(prepare_args(base, spec, tokenizer, data_dir), env)
        row = {
            "corpus": name,
            "text_MiB": round(text_bytes / 2**20, 1),
            "peak_rss_MiB": round(rss, 1),
            "seconds": round(seconds, 1),
            "prepared": said.splitlines()[-1],  # "PATH: train N examples, validation M"
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    ratio = rows[1]["peak_rss_MiB"] / rows[0]["peak_rss_MiB"]
    print(
        json.dumps(
            {
                "peak_rss_ratio": round(ratio, 3),
                "target": 1.3,
                "met": ratio <= 1.3,
                "overrides": args.override,
            }
        ),
        flush=True,
    )
    print(f"\n{'corpus':>8} {'text MiB':>9} {'peak RSS MiB':>13} {'seconds':>8}")
    for r in rows:
        print(f"{r['corpus']:>8} {r['text_MiB']:>9} {r['peak_rss_MiB']:>13} {r['seconds']:>8}")
    print(f"ratio {ratio:.3f} (target <= 1.3); work dir {work}")


if __name__ == "__main__":
    main()
