"""Metrics to WORKDIR/metrics.jsonl (one JSON object per logged step) and TensorBoard events.

Only process 0 writes; the other hosts get a writer that does nothing.
"""

import json
import math
import os
import time

import numpy as np


def _plain(v):
    v = np.asarray(v).item() if not isinstance(v, (int, float, str)) else v
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep them visible as strings
    return v


class MetricWriter:
    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self._file = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
        try:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
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


def read_metrics(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
