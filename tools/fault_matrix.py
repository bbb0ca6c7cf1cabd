"""Runs the fault matrix on a tiny BERT config through the CLI (subprocesses) and prints a table.

  python tools/fault_matrix.py [--steps=18] [--every=6] [--sigterm_trials=2] [--seed=0]

Faults: SIGTERM/SIGINT at random steps (then resume), kill -9 between checkpoints and in the middle
of an async save (then resume), a corrupted latest checkpoint (truncated array file), NaN injected
at one step with config.train.nonfinite=stop and =skip. For each: whether the workdir recovered
(the rerun finished, or the run stopped cleanly with its last checkpoint intact) and whether the
final parameters are bitwise equal to an uninterrupted run of the same config ("n.a." where they
must differ, e.g. a skipped step). Takes a few minutes on 2 CPU cores; prepared data is cached in
$FLAXLM_DATA_DIR (default: a temporary folder).
"""

import argparse
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

HANG_IN_SAVE = textwrap.dedent(
    """
    import pathlib, sys, time
    from grain._src.python.checkpoint import handler
    step, marker = sys.argv[1], sys.argv[2]
    original = handler.CheckpointHandler.save
    def save(self, directory, *args, **kwargs):
        if f"/{step}.orbax-checkpoint-tmp" in str(directory):
            pathlib.Path(marker).write_text(str(directory))
            time.sleep(600)
        return original(self, directory, *args, **kwargs)
    handler.CheckpointHandler.save = save
    from flaxlm import cli
    cli.run(["flaxlm", *sys.argv[3:]])
    """
)

# The CLI paused right after it logged the training metrics of one step (args: step, marker, CLI
# args). It writes the marker, then waits until the marker is deleted (or is killed): the caller
# signals or kills it at a known step, never at whatever step a poll happens to see. The row is
# written one step late, so the step after it has been dispatched and nothing of a later
# checkpoint has begun while it waits.
PAUSE_AT_STEP = textwrap.dedent(
    """
    import os, sys, time
    from flaxlm import metrics
    step, marker = int(sys.argv[1]), sys.argv[2]
    original = metrics.MetricWriter.write
    def write(self, s, values, prefix=""):
        original(self, s, values, prefix)
        if self.enabled and s == step and not prefix:
            with open(marker, "w") as f:
                f.write(str(s))
            deadline = time.time() + 600
            while os.path.exists(marker) and time.time() < deadline:
                time.sleep(0.01)
    metrics.MetricWriter.write = write
    from flaxlm import cli
    cli.run(["flaxlm", *sys.argv[3:]])
    """
)


def tiny_args(steps: int, every: int) -> list[str]:
    return [
        "train",
        "--config=configs/bert_tiny.py",
        "--config.model.vocab_size=1000",
        "--config.data.seq_len=64",
        "--config.model.max_len=64",
        "--config.data.max_predictions=10",
        "--config.data.mask_prob=0.15",  # bert_tiny masks 40%: more than 10 predictions per 64 tokens
        "--config.train.batch_size=16",
        "--config.model.num_layers=1",
        "--config.model.hidden_size=32",
        "--config.model.mlp_dim=64",
        "--config.train.warmup_steps=2",
        "--config.train.log_every=1",
        "--config.train.eval_every=100000",
        "--config.train.eval_batches=1",
        f"--config.train.checkpoint_every={every}",
        f"--config.train.num_steps={steps}",
    ]


class Harness:
    def __init__(self, root: str, data_dir: str, steps: int, every: int):
        self.root, self.steps, self.every = root, steps, every
        self.env = dict(os.environ, FLAXLM_DATA_DIR=data_dir)
        self.env.pop("XLA_FLAGS", None)
        # A persistent XLA cache: every run after the reference starts in seconds.
        self.env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(root, "jax_cache"))
        self.env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        self.env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
        self.args = tiny_args(steps, every)

    def workdir(self, name: str) -> str:
        return os.path.join(self.root, name)

    def start(self, workdir, extra=(), hook=None, step=None, marker=None):
        """The CLI on `workdir`; with `hook` (HANG_IN_SAVE or PAUSE_AT_STEP), stopped at `step`."""
        args = [*self.args, f"--workdir={workdir}", *extra]
        cmd = [sys.executable, "-m", "flaxlm", *args]
        if hook is not None:
            cmd = [sys.executable, "-c", hook, str(step), str(marker), *args]
        return subprocess.Popen(
            cmd, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def run(self, workdir, extra=()):
        proc = self.start(workdir, extra)
        out, err = proc.communicate(timeout=900)
        return proc.returncode, out, err

    def rows(self, workdir):
        path = pathlib.Path(workdir) / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(l) for l in path.read_text().splitlines() if '"loss"' in l]

    def start_paused(self, workdir, step):
        """The CLI on `workdir` once it has logged `step` and waits there, and the call that resumes it."""
        marker = os.path.join(self.root, f"{os.path.basename(workdir)}.paused")
        proc = self.start(workdir, hook=PAUSE_AT_STEP, step=step, marker=marker)
        wait_for_file(marker, proc)
        return proc, lambda: os.remove(marker)


def wait_for_file(path, proc):
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise RuntimeError(f"run ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)


def params_equal(a_workdir, b_workdir, step) -> bool:
    import jax
    import numpy as np

    from flaxlm import checkpoint as ckpt

    a, _, _ = ckpt.restore_params(a_workdir, step)
    b, _, _ = ckpt.restore_params(b_workdir, step)
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def losses_equal_after(h, ref, workdir, k) -> bool:
    clean = lambda rows: {
        r["step"]: {x: v for x, v in r.items() if x not in ("time", "tokens_per_s")} for r in rows
    }
    a, b = clean(h.rows(ref)), clean(h.rows(workdir))
    return all(a.get(s) == b.get(s) for s in range(k + 1, h.steps + 1))


def yes(b: bool) -> str:
    return "yes" if b else "NO"


def finished(rc, out, steps) -> bool:
    return rc == 0 and f"done at step {steps}" in out


def resumed_step(out: str):
    for line in out.splitlines():
        if "resuming from step" in line:
            return int(line.split("resuming from step ")[1].split()[0])
    return None


def signal_case(h, ref, name, sig, k):
    wd = h.workdir(name)
    proc, resume = h.start_paused(wd, k)
    proc.send_signal(sig)
    resume()
    out, err = proc.communicate(timeout=600)
    stopped = proc.returncode == 0 and "stopped by" in out
    stop_step = int(out.split(" at step ")[1].split(";")[0]) if stopped else None
    rc, out2, _ = h.run(wd)
    ok = stopped and finished(rc, out2, h.steps) and resumed_step(out2) == stop_step
    same = ok and params_equal(ref, wd, h.steps) and losses_equal_after(h, ref, wd, stop_step)
    note = f"sent once step {k} was logged; saved step {stop_step}, exit {proc.returncode}"
    return ok, yes(same), note + ("; losses after it identical" if same else "")


def kill_during_save(h, ref):
    wd, marker = h.workdir("kill9_save"), os.path.join(h.root, "saving")
    proc = h.start(wd, hook=HANG_IN_SAVE, step=2 * h.every, marker=marker)
    wait_for_file(marker, proc)
    proc.kill()
    proc.wait()
    tmp = [n for n in os.listdir(os.path.join(wd, "checkpoints")) if "orbax-checkpoint-tmp" in n]
    rc, out, _ = h.run(wd)
    ok = finished(rc, out, h.steps) and resumed_step(out) == h.every
    same = ok and params_equal(ref, wd, h.steps)
    return (
        ok,
        yes(same),
        f"killed in save of step {2 * h.every} (left {len(tmp)} tmp dir); resumed from {resumed_step(out)}",
    )


def complete_steps(workdir) -> list[int]:
    ck = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(ck) if n.isdigit()) if os.path.isdir(ck) else []


def kill_during_training(h, ref, k):
    wd = h.workdir("kill9_train")
    proc, _ = h.start_paused(wd, k)
    proc.kill()
    proc.wait()
    rows = h.rows(wd)
    complete = complete_steps(wd)  # an async save still under way at the kill is not among them
    expected = complete[-1] if complete else None
    rc, out, _ = h.run(wd)
    r = resumed_step(out)
    ok = finished(rc, out, h.steps) and r == expected
    same = ok and params_equal(ref, wd, h.steps) and losses_equal_after(h, ref, wd, r or 0)
    return (
        ok,
        yes(same),
        f"killed at step {rows[-1]['step']}; complete checkpoints {complete}; resumed from {r}",
    )


def corrupted_latest(h, ref):
    wd = h.workdir("corrupt")
    shutil.copytree(ref, wd)
    ck = pathlib.Path(wd, "checkpoints")
    previous = complete_steps(wd)[-2]
    shutil.rmtree(ck / str(h.steps))
    shutil.copytree(pathlib.Path(ref, "checkpoints", str(h.steps)), ck / str(h.steps - 1))
    files = [p for p in (ck / str(h.steps - 1) / "state").rglob("d/*")]
    biggest = max(files, key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[:100])
    rc, out, err = h.run(wd)
    warned = [l for l in err.splitlines() if "flaxlm: warning:" in l]
    ok = finished(rc, out, h.steps) and resumed_step(out) == previous and len(warned) == 1
    same = ok and params_equal(ref, wd, h.steps)
    return (
        ok,
        yes(same),
        f"truncated step {h.steps - 1}; fell back to {resumed_step(out)}; traceback: {'Traceback' in err}",
    )


def nan_cases(h):
    import jax
    import numpy as np

    from flaxlm import checkpoint as ckpt

    wd, nan_step = h.workdir("nan"), h.every + 2
    extra = [f"--config.train.debug_nan_step={nan_step}"]
    rc, out, err = h.run(wd, extra)
    last = err.strip().splitlines()[-1] if err.strip() else ""
    steps = sorted(int(n) for n in os.listdir(os.path.join(wd, "checkpoints")) if n.isdigit())
    p, _, _ = ckpt.restore_params(wd, steps[-1])
    intact = steps == [h.every] and all(np.isfinite(x).all() for x in jax.tree.leaves(p))
    stop = (rc == 3 and f"at step {nan_step}" in last and intact, "n.a.", f"exit {rc}: {last[:90]}...")

    rc, out, err = h.run(wd, [*extra, "--config.train.nonfinite=skip"])
    rows = {r["step"]: r for r in h.rows(wd)}
    skipped = rows.get(h.steps, {}).get("skipped_steps")
    p, _, _ = ckpt.restore_params(wd, h.steps)
    finite = all(np.isfinite(x).all() for x in jax.tree.leaves(p))
    skip = (
        finished(rc, out, h.steps) and skipped == 1.0 and finite,
        "n.a.",
        f"rerun with skip: resumed from {resumed_step(out)}, skipped_steps={skipped}, finite: {finite}",
    )
    return stop, skip


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=18)
    ap.add_argument("--every", type=int, default=6)
    ap.add_argument("--sigterm_trials", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the workdirs")
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    root = tempfile.mkdtemp(prefix="flaxlm_faults_")
    data_dir = os.environ.get("FLAXLM_DATA_DIR") or os.path.join(root, "data")
    h = Harness(root, data_dir, a.steps, a.every)

    t0 = time.time()
    ref = h.workdir("reference")
    rc, out, err = h.run(ref)
    if rc != 0:
        sys.exit(f"the reference run failed:\n{err[-3000:]}")
    rows = []

    def add(fault, fn, *args):
        try:
            ok, same, note = fn(*args)
        except Exception as e:  # noqa: BLE001 - a row that says what broke, then the next fault
            ok, same, note = False, "NO", f"{type(e).__name__}: {e}"[:120]
        rows.append((fault, yes(ok), same, note))
        print(f"  {fault}: recovered={yes(ok)} equal={same}", file=sys.stderr, flush=True)

    for i in range(a.sigterm_trials):
        k = rnd.randint(2, a.steps // 2)  # the signal lands while step k + 1 runs: it saves k + 1
        add(f"SIGTERM after step {k}", signal_case, h, ref, f"sigterm{i}", signal.SIGTERM, k)
    k = rnd.randint(2, a.steps // 2)
    add(f"SIGINT after step {k}", signal_case, h, ref, "sigint", signal.SIGINT, k)
    k = rnd.randint(2 * a.every + 1, 3 * a.every - 1)  # after step 12's save began, so step 6's is complete
    add(f"kill -9 after step {k}", kill_during_training, h, ref, k)
    add("kill -9 during async save", kill_during_save, h, ref)
    add("corrupted latest checkpoint", corrupted_latest, h, ref)
    try:
        stop, skip = nan_cases(h)
    except Exception as e:  # noqa: BLE001
        stop = skip = (False, "NO", f"{type(e).__name__}: {e}"[:120])
    rows.append(("NaN at step %d, nonfinite=stop" % (a.every + 2), yes(stop[0]), stop[1], stop[2]))
    rows.append(("NaN at step %d, nonfinite=skip" % (a.every + 2), yes(skip[0]), skip[1], skip[2]))

    header = ("fault", "recovered", "params == uninterrupted", "notes")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    print(f"\n{len(rows)} faults, {a.steps} steps each, {time.time() - t0:.0f}s; workdirs in {root}")
    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)
    sys.exit(0 if all(r[1] == "yes" and r[2] in ("yes", "n.a.") for r in rows) else 1)


if __name__ == "__main__":
    main()
