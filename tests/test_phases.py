"""A two-phase recipe (BERT: 90% of the steps at seq 128, then 512) as two runs in one workdir: the
first stops at config.train.stop_at_step, the second resumes it at a longer sequence length and
finishes the one learning-rate schedule."""

import math
import json

import numpy as np
import pytest

from conftest import load_config, write_scenes
from flaxlm import config as config_lib
from flaxlm import metrics as metrics_lib
from flaxlm import optimizer as optimizer_lib
from flaxlm import train as train_lib


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """60 scenes of the embedded Shakespeare as a JSON-lines corpus: quick to prepare twice."""
    return write_scenes(tmp_path_factory.mktemp("corpus") / "scenes.jsonl.gz", 60)


def phase_config(data_dir, corpus, seq_len, stop_at_step):
    c = load_config("bert_tiny")
    c.model.update(num_layers=1, hidden_size=32, num_heads=2, mlp_dim=64, vocab_size=1000, max_len=64)
    c.data.update(
        data_dir=data_dir, corpus=corpus, seq_len=seq_len, max_predictions=math.ceil(seq_len * 0.15)
    )
    c.data.mask_prob = 0.15
    c.data.validation_fraction = 0.1
    c.train.update(
        batch_size=16,
        num_steps=8,
        stop_at_step=stop_at_step,
        warmup_steps=2,
        log_every=1,
        eval_every=1000,
        eval_batches=1,
        checkpoint_every=1000,
    )
    return c


def test_second_phase_resumes_at_a_longer_sequence_on_the_same_schedule(tmp_path, data_dir, scenes):
    workdir = str(tmp_path / "run")
    phase1 = phase_config(data_dir, scenes, seq_len=32, stop_at_step=5)
    train_lib.train_and_evaluate(phase1, workdir)
    rows = metrics_lib.read_metrics(workdir)
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in rows if "eval_loss" in r] == [0, 5]  # each phase ends evaluated and saved

    phase2 = phase_config(data_dir, scenes, seq_len=64, stop_at_step=0)
    train_lib.train_and_evaluate(phase2, workdir)
    rows = metrics_lib.read_metrics(workdir)
    train = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train] == list(range(1, 9))
    # One schedule over num_steps=8 (warmup 2, linear decay), not a fresh one per phase.
    schedule = optimizer_lib.learning_rate_schedule(phase2.train)
    np.testing.assert_allclose(
        [r["learning_rate"] for r in train], [schedule(s - 1) for s in range(1, 9)], rtol=1e-6
    )
    assert train[5]["learning_rate"] < train[4]["learning_rate"]
    with open(f"{workdir}/config.json", encoding="utf-8") as f:
        saved = json.load(f)
    assert saved["data"]["seq_len"] == 64 and saved["train"]["stop_at_step"] == 0


def test_stop_at_step_beyond_num_steps_is_a_config_error():
    c = load_config("bert_tiny")
    c.train.stop_at_step = c.train.num_steps + 1
    with pytest.raises(
        config_lib.ConfigError, match=f"stop_at_step={c.train.num_steps + 1} must be between 0"
    ):
        config_lib.validate(c)
