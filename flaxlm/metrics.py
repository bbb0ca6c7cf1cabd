"""Metrics to WORKDIR/metrics.jsonl (one JSON object per logged step) and TensorBoard events.

Only process 0 writes; the other hosts get a writer that does nothing.

A run that resumes from a checkpoint redoes the steps after it, so the rows an
earlier run logged for those steps (it went on past its last checkpoint, then
was killed) are dropped when the writer opens, and TensorBoard is told to
hide their events: each step is logged once.
"""

import json
import math
import os
import time

import numpy as np

from flaxlm import files


def _plain(v):
    v = np.asarray(v).item() if not isinstance(v, (int, float, str)) else v
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep them visible as strings
    return v


class MetricWriter:
    """`start`: the step the run starts from (0 = from scratch, or the resumed checkpoint's step);
    rows after it are dropped, and with 0 all of them. None keeps every row there is."""

    def __init__(self, workdir: str, enabled: bool = True, start: int | None = None):
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, "metrics.jsonl")
        if start is not None:
            _keep_rows_up_to(path, start)
        self._file = open(path, "a", encoding="utf-8")
        try:
            from tensorboardX import SummaryWriter

            # TensorBoard hides the events of earlier files from purge_step on.
            purge = None if start is None else start + 1
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge)
        except ImportError:  # TensorBoard events are a convenience, the JSON lines are the record
            self._tb = None

    def write(self, step: int, metrics: dict, prefix: str = ""):
        if not self.enabled:
            return
        row = {
            "step": int(step),
            **{prefix + k: _plain(v) for k, v in sorted(metrics.items())},
            "time": round(time.time(), 3),
        }
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k not in ("step", "time") and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, int(step))

    def close(self):
        if self.enabled:
            self._file.close()
            if self._tb is not None:
                self._tb.close()


def _keep_rows_up_to(path: str, start: int) -> None:
    """Rewrites metrics.jsonl with only the rows of steps <= start (none if start is 0), and without
    a last line cut short by a kill."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        return
    kept = []
    for line in lines:
        try:
            if 0 < start and json.loads(line)["step"] <= start:
                kept.append(line.rstrip("\n") + "\n")
        except (ValueError, TypeError, KeyError):  # a torn line, or not a metrics row
            continue
    if kept != lines:
        files.write_atomic(path, "".join(kept))


def read_metrics(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
