"""metrics.jsonl and TensorBoard events after a resume: each step once."""

import json
import struct

from tensorboardX.proto import event_pb2

from flaxlm import metrics as metrics_lib


def write_steps(workdir, steps, start=None):
    writer = metrics_lib.MetricWriter(str(workdir), start=start)
    for step in steps:
        writer.write(step, {"loss": float(step)})
        if step % 5 == 0:
            writer.write(step, {"loss": 0.5}, prefix="eval_")
    writer.close()


def logged(workdir):
    return [(r["step"], "eval_loss" in r) for r in metrics_lib.read_metrics(str(workdir))]


def events(path):
    """The (step, kind) of each event in a TensorBoard events file (TFRecord framing)."""
    data, out, i = path.read_bytes(), [], 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i : i + 8])
        event = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
        out.append((event.step, event.WhichOneof("what")))
        i += 12 + n + 4
    return out


def test_a_resumed_run_drops_the_rows_after_its_checkpoint(tmp_path):
    write_steps(tmp_path, range(0, 9))  # checkpointed at 5, then went on to 8 and was killed ...
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "lo')  # ... mid-line
    write_steps(tmp_path, range(6, 11), start=5)  # resumed from the checkpoint of step 5
    rows = logged(tmp_path)
    assert [s for s, is_eval in rows if not is_eval] == list(range(0, 11))
    assert [s for s, is_eval in rows if is_eval] == [0, 5, 10]
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line)

    # TensorBoard: the resumed run's events file hides the earlier files' events after step 5.
    newest = sorted((tmp_path / "tensorboard").iterdir(), key=lambda p: p.stat().st_mtime_ns)[-1]
    assert (6, "session_log") in events(newest)


def test_a_run_from_scratch_starts_a_new_file_and_none_keeps_everything(tmp_path):
    write_steps(tmp_path, range(0, 4))
    write_steps(tmp_path, range(0, 3), start=0)  # no checkpoint was left: the run starts over
    assert logged(tmp_path) == [(0, False), (0, True), (1, False), (2, False)]
    write_steps(tmp_path, [7])  # start=None (fine-tuning): appended
    assert logged(tmp_path)[-1] == (7, False)
