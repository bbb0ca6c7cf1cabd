"""The `flaxlm` command end to end, in subprocesses, on the embedded corpus (real text)."""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import REPO, write_scenes
from flaxlm.data import corpus as corpus_lib

# A small variant of the default recipes so each run takes well under a minute on 2 cores;
# the same overrides as tests/test_train.py, so the prepared data is shared.
SMALL = [
    "--config.model.vocab_size=1000",
    "--config.data.seq_len=64",
    "--config.model.max_len=64",
    "--config.data.max_predictions=10",
    "--config.data.mask_prob=0.15",  # bert_tiny masks 40% (52 predictions per 128 tokens)
    "--config.train.batch_size=16",
    "--config.model.dropout_rate=0.1",  # bert_tiny trains without dropout; the tests cover its RNG
    "--config.model.attention_dropout_rate=0.1",
]


def flaxlm(*args, data_dir, check=True, cwd=REPO):
    env = dict(os.environ, FLAXLM_DATA_DIR=data_dir)
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's machine
    proc = subprocess.run(
        [sys.executable, "-m", "flaxlm", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"flaxlm {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def read_metrics(workdir):
    rows = [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    evals = {r["step"]: r for r in rows if "eval_loss" in r}
    return train, evals


def train_stop_resume(tmp_path, data_dir, config, *extra, log_every=10):
    """`config` shrunk (vocabulary 600, width 64, sequences of 64, batch 8) on 60 real scenes: trained
    to step 20, stopped, resumed to 40. Checks each step is logged, the loss is finite and falls by
    0.3 nats, the step-40 eval loss is finite and below log(600); returns (train rows, evals by step)."""
    corpus = write_scenes(tmp_path / "scenes.jsonl.gz", 60)
    args = [
        "train",
        f"--config={config}",
        f"--workdir={tmp_path / 'w'}",
        *extra,
        f"--config.data.corpus={corpus}",
        f"--config.data.data_dir={data_dir}",
        "--config.model.vocab_size=600",
        "--config.model.hidden_size=64",
        "--config.model.mlp_dim=128",
        "--config.data.seq_len=64",
        "--config.model.max_len=64",
        "--config.train.batch_size=8",
        "--config.train.learning_rate=5e-3",
        "--config.train.warmup_steps=5",
        f"--config.train.log_every={log_every}",
        "--config.train.eval_every=40",
        "--config.train.eval_batches=1",
        "--config.train.checkpoint_every=20",
    ]
    flaxlm(*args, "--config.train.num_steps=40", "--config.train.stop_at_step=20", data_dir=data_dir)
    flaxlm(*args, "--config.train.num_steps=40", data_dir=data_dir)  # resumes at step 20
    train, evals = read_metrics(tmp_path / "w")
    losses = [r["loss"] for r in train]
    assert [r["step"] for r in train][-1] == 40 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.3, losses
    assert math.isfinite(evals[40]["eval_lm_loss"]) and evals[40]["eval_lm_loss"] < math.log(600)
    return train, evals


def test_bert_tiny_trains_logs_checkpoints_and_resumes(tmp_path, data_dir):
    workdir = str(tmp_path / "bert")
    args = [
        "train",
        "--config=configs/bert_tiny.py",
        f"--workdir={workdir}",
        *SMALL,
        "--config.train.log_every=10",
        "--config.train.eval_every=60",
        "--config.train.checkpoint_every=40",
    ]
    proc = flaxlm(*args, "--config.train.num_steps=120", data_dir=data_dir)
    assert "train:" in proc.stderr  # the progress bar
    train, evals = read_metrics(workdir)
    assert [r["step"] for r in train] == list(range(10, 121, 10))
    for key in (
        "loss",
        "mlm_loss",
        "mlm_accuracy",
        "nsp_loss",
        "nsp_accuracy",
        "tokens_per_s",
        "learning_rate",
        "grad_norm",
    ):
        assert all(isinstance(r[key], float) for r in train), key
    assert sorted(evals) == [0, 60, 120]
    # Held-out MLM loss falls well below its starting point (ln 1000 = 6.9); NSP does not get worse.
    assert evals[120]["eval_mlm_loss"] < evals[0]["eval_mlm_loss"] - 1.0
    assert evals[120]["eval_nsp_loss"] <= evals[0]["eval_nsp_loss"] + 0.01
    # Every evaluation carries the trivial baselines of the same held-out targets (flaxlm/baselines.py).
    assert all(0.3 < r["eval_majority_nsp_accuracy"] < 0.7 for r in evals.values())
    assert len({r["eval_unigram_mlm_loss"] for r in evals.values()}) == 1
    assert evals[0]["eval_mlm_loss"] > evals[0]["eval_unigram_mlm_loss"]  # random init: worse than unigram
    assert "flaxlm: held-out mlm_loss" in proc.stdout and "nats below" in proc.stdout
    assert {"80", "120"} <= set(os.listdir(os.path.join(workdir, "checkpoints")))
    assert any(f.startswith("events.") for f in os.listdir(os.path.join(workdir, "tensorboard")))

    # Asking for more steps in the same workdir continues from the last checkpoint.
    proc = flaxlm(*args, "--config.train.num_steps=140", data_dir=data_dir)
    assert "resuming from step 120" in proc.stdout
    train, _ = read_metrics(workdir)
    assert [r["step"] for r in train][-2:] == [130, 140]


def test_albert_tiny_trains_sop_checkpoints_and_resumes(tmp_path, data_dir):
    """ALBERT's recipe end to end: factorised embeddings, one shared block, SOP, n-gram masking.

    On 40 scenes rather than the default corpus: SOP data of its own is prepared, and this is quick.
    """
    workdir = str(tmp_path / "albert")
    scenes = write_scenes(tmp_path / "scenes.jsonl.gz", 40)
    args = [
        "train",
        "--config=configs/albert_tiny.py",
        f"--workdir={workdir}",
        *SMALL,
        f"--config.data.corpus={scenes}",
        "--config.data.validation_fraction=0.1",
        "--config.train.log_every=10",
        "--config.train.eval_every=40",
        "--config.train.eval_batches=2",
        "--config.train.checkpoint_every=20",
    ]
    flaxlm(*args, "--config.train.num_steps=40", data_dir=data_dir)
    train, evals = read_metrics(workdir)
    assert [r["step"] for r in train] == [10, 20, 30, 40]
    assert all(isinstance(r[k], float) for r in train for k in ("mlm_loss", "sop_loss", "sop_accuracy"))
    assert sorted(evals) == [0, 40] and evals[40]["eval_mlm_loss"] < evals[0]["eval_mlm_loss"]
    assert {"20", "40"} <= set(os.listdir(os.path.join(workdir, "checkpoints")))
    saved = json.loads((pathlib.Path(workdir) / "config.json").read_text())
    assert saved["model"]["share_layers"] == "all" and saved["model"]["embedding_size"] == 64
    assert saved["data"]["ngram"] is True and saved["objective"] == "mlm_sop"

    proc = flaxlm(*args, "--config.train.num_steps=50", data_dir=data_dir)
    assert "resuming from step 40" in proc.stdout
    train, _ = read_metrics(workdir)
    assert [r["step"] for r in train][-1] == 50


def test_spanbert_tiny_trains_mlm_and_sbo(tmp_path, data_dir):
    """SpanBERT's recipe end to end: single segments, span masking, MLM + span-boundary objective."""
    workdir = str(tmp_path / "spanbert")
    scenes = write_scenes(tmp_path / "scenes.jsonl.gz", 40)
    flaxlm(
        "train",
        "--config=configs/spanbert_tiny.py",
        f"--workdir={workdir}",
        *SMALL,
        f"--config.data.corpus={scenes}",
        "--config.data.validation_fraction=0.1",
        "--config.train.log_every=10",
        "--config.train.eval_every=40",
        "--config.train.eval_batches=2",
        "--config.train.warmup_steps=4",
        "--config.train.num_steps=40",
        data_dir=data_dir,
    )
    train, evals = read_metrics(workdir)
    assert [r["step"] for r in train] == [10, 20, 30, 40]
    assert all(isinstance(r[k], float) for r in train for k in ("mlm_loss", "sbo_loss", "sbo_accuracy"))
    for r in train:
        assert r["loss"] == pytest.approx(r["mlm_loss"] + r["sbo_loss"], rel=1e-5)  # summed, as SpanBERT
    assert sorted(evals) == [0, 40]
    for k in ("eval_mlm_loss", "eval_sbo_loss"):
        assert evals[40][k] < evals[0][k] - 0.5, k
    saved = json.loads((pathlib.Path(workdir) / "config.json").read_text())
    assert saved["objective"] == "mlm_sbo" and saved["data"]["span"] is True


def test_gpt_tiny_lowers_causal_lm_loss(tmp_path, data_dir):
    workdir = str(tmp_path / "gpt")
    flaxlm(  # a relative --workdir, as the experiment sweeps pass (orbax itself wants absolute paths)
        "train",
        f"--config={REPO}/configs/gpt_tiny.py",
        "--workdir=gpt",
        *SMALL[:5],
        "--config.train.batch_size=16",
        "--config.train.num_steps=80",
        "--config.train.log_every=10",
        "--config.train.eval_every=80",
        data_dir=data_dir,
        cwd=tmp_path,
    )
    assert os.listdir(os.path.join(workdir, "checkpoints")) == ["80"]
    train, evals = read_metrics(workdir)
    assert evals[80]["eval_lm_loss"] < evals[0]["eval_lm_loss"] - 1.0
    assert evals[80]["eval_perplexity"] < evals[0]["eval_perplexity"] / 3
    assert train[-1]["lm_loss"] < train[0]["lm_loss"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.model.num_layerz=3", "unknown config field 'model.num_layerz'"),
        ("--config.model.num_layers=four", "invalid literal for int()"),
        ("--config.objective=span", "config.objective='span' is unknown"),
        ("--config.data.builder=full_sentences", "needs a pair builder"),
        ("--config.data.seq_len=512", "exceeds config.model.max_len=64"),
        ("--config.data.corpus=/no/such/dir/*.txt", "/no/such/dir/*.txt"),
        ("--config.train.grad_accum_steps=7", "is not divisible by config.train.grad_accum_steps=7"),
        ("--config.data.data_dir=/etc/hostname/data", "cannot create the data dir /etc/hostname/data"),
        (f"--config.data.corpus={REPO}/tests/testdata/empty.txt", "empty.txt: file is empty"),
        (f"--config.data.corpus={REPO}/tests/testdata/latin1.txt", "latin1.txt"),
        ("--config.data.beam_options=--runner=Nope", "--runner=Nope is not a runner Beam can start here"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path, data_dir, override, message):
    proc = flaxlm(
        "train",
        "--config=configs/bert_tiny.py",
        f"--workdir={tmp_path}",
        *SMALL[:5],
        override,
        data_dir=data_dir,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("flaxlm train: error:") and message in last, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


# `flaxlm prepare` (args after the hook's code) with one fault made to happen: the corpus file b.txt
# deleted once the corpus is listed and fingerprinted, just before it is read; no space left on the
# device when the token stores are written.
VANISHING_FILE = """
import os, sys
from flaxlm.data import corpus
read_txt = corpus._read_txt
def vanishing(path, doc_id):
    if path.endswith("b.txt"):
        os.remove(path)
    return read_txt(path, doc_id)
corpus._read_txt = vanishing
from flaxlm import cli
cli.run(["flaxlm", *sys.argv[1:]])
"""
FULL_DISK = """
import errno, os, sys
from flaxlm.data import token_store
def add(self, sentences, source):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(self.folder, "tokens.int32"))
token_store.TokenStoreWriter.add = add
from flaxlm import cli
cli.run(["flaxlm", *sys.argv[1:]])
"""


@pytest.mark.parametrize(
    "hook,message",
    [
        (
            VANISHING_FILE,
            "b.txt: disappeared during preparation (it was listed when the corpus was fingerprinted)",
        ),
        (FULL_DISK, "No space left on device; free space there, or set --config.data.data_dir"),
    ],
)
def test_prepare_fails_in_one_line_and_leaves_no_dataset(tmp_path, hook, message):
    """A corpus file gone while it is prepared, or a full disk: `flaxlm prepare` exits 2 with one line,
    and the data dir holds no dataset (tfds renames its incomplete folder only when done)."""
    scenes = corpus_lib.load_embedded("shakespeare")[:6]
    for name, scene in zip("abc", (scenes[:2], scenes[2:4], scenes[4:])):
        (tmp_path / f"{name}.txt").write_text("\n\n".join(p for d in scene for p in d.paragraphs))
    data_dir = tmp_path / "data"
    env = dict(os.environ, FLAXLM_DATA_DIR=str(data_dir))
    env.pop("XLA_FLAGS", None)
    args = [
        "prepare",
        "--config=configs/bert_tiny.py",
        *SMALL[1:5],
        f"--config.data.corpus={tmp_path / '*.txt'}",
        f"--config.data.tokenizer={REPO / 'tests' / 'testdata' / 'bert_uncased_vocab.txt'}",
    ]
    proc = subprocess.run(
        [sys.executable, "-c", hook, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("flaxlm prepare: error: ") and message in last, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    left = [p for p in data_dir.rglob("*") if p.name.startswith("incomplete") or p.name == "1.0.0"]
    assert left == [], left


def test_no_subcommand_prints_usage(data_dir):
    proc = flaxlm(data_dir=data_dir, check=False)
    assert proc.returncode == 2 and "usage: flaxlm" in proc.stderr


# --help, --version ------------------------------------------------------------------------------------


def run_in_process(capsys, *args):
    """`flaxlm ARGS` in this process (no jax work): (exit code, stdout, stderr)."""
    from flaxlm import cli

    with pytest.raises(SystemExit) as e:
        cli.run(["flaxlm", *args])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_help_lists_every_subcommand_and_version_prints_it(capsys):
    from flaxlm import cli

    for args in (["--help"], ["-h"], ["help"]):
        code, out, _ = run_in_process(capsys, *args)
        assert code == 0 and out.startswith("usage: flaxlm SUBCOMMAND")
        assert all(f"\n  {name} " in out for name in cli.SUBCOMMANDS), out
    code, out, _ = run_in_process(capsys, "--version")
    assert code == 0 and out == f"flaxlm {cli.version()}\n" and cli.version()[0].isdigit()


ALL = ["train", "prepare", "tokenizer", "export", "import-hf", "generate", "score", "finetune"]


@pytest.mark.parametrize("command", ALL)
def test_each_subcommand_help_lists_its_flags_one_line_each_and_an_example(capsys, command):
    from flaxlm import cli

    code, out, err = run_in_process(capsys, command, "--help")
    assert code == 0 and not err, err
    assert out.startswith(f"usage: flaxlm {command} ")
    lines = out.splitlines()
    for name in cli.SUBCOMMANDS[command].flags:
        rows = [l for l in lines if l.startswith(f"  --{name}=")]
        assert len(rows) == 1 and len(rows[0].split(None, 1)) == 2, (name, out)  # flag, then its meaning
    assert lines[lines.index("example:") + 1].startswith(f"  flaxlm {command} ")
    # Any position, other flags given or not: still the help, never a "required" error.
    assert run_in_process(capsys, "help", command)[1] == out
    assert run_in_process(capsys, command, "--config=configs/bert_tiny.py", "-h")[1] == out


def test_every_subcommand_has_its_help_test():
    from flaxlm import cli

    assert list(cli.SUBCOMMANDS) == ALL


def test_missing_argument_is_one_line_with_the_usage(data_dir):
    proc = flaxlm("export", f"--workdir={data_dir}", data_dir=data_dir, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        "flaxlm export: error: --workdir and --out are required; "
        "usage: flaxlm export --workdir=DIR --out=PATH [--step=N] [--format=flaxlm|hf]\n"
    )


def test_tokenizer_prints_its_path(data_dir):
    proc = flaxlm("tokenizer", "--config=configs/bert_tiny.py", *SMALL[:1], data_dir=data_dir)
    size, path = proc.stdout.strip().splitlines()[-1].removeprefix("tokenizer with ").split(" tokens: ")
    assert size == "1000" and path.endswith(".model") and os.path.isfile(path), proc.stdout


def test_readme_shows_the_real_train_help():
    from flaxlm import cli

    assert cli.subcommand_help("train") in (REPO / "README.md").read_text()
