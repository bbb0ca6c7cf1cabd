"""tools/task_corpus.py: a task's train-split text as a corpus, on the real movie-snippet slice.

The slice (tests/testdata/finetune/movie_snippets.txt, 531 snippets cut from the vaderSentiment
sdist, MIT) is placed in a data dir as the task's cache, so nothing is fetched.
"""

import json
import pathlib
import subprocess
import sys

from flaxlm.data.corpus import read_corpus
from flaxlm.tasks import classification
from flaxlm.tasks import common

REPO = pathlib.Path(__file__).resolve().parents[1]
SNIPPETS = REPO / "tests" / "testdata" / "finetune" / "movie_snippets.txt"
TOOL = REPO / "tools" / "task_corpus.py"
sys.path.insert(0, str(REPO / "tools"))
import task_corpus  # noqa: E402


def _rows() -> list[dict]:
    return classification.parse_movie_snippets(SNIPPETS.read_text(encoding="utf-8"))


def _data_dir(tmp_path) -> pathlib.Path:
    rows = _rows()
    cache = tmp_path / "data" / "finetune" / classification.MOVIE_CACHE
    cache.parent.mkdir(parents=True)
    common.write_jsonl(str(cache), rows + rows[:3])  # a repeated text is written once
    return tmp_path / "data"


def test_only_train_split_text_and_no_label():
    rows = _rows()
    texts = task_corpus.split_texts(rows + rows[:5])
    assert len(texts) == len(set(texts))
    assert all(common.split_of(t) == "train" for t in texts)
    # Every train snippet of the task (labelled) is there; no dev or test snippet is.
    task = common.split_by_key(classification.sentiment_examples(rows), lambda ex: ex["text"])
    assert {ex["text"] for ex in task["train"]} <= set(texts)
    held_out = {ex["text"] for s in ("dev", "test") for ex in task[s]}
    assert held_out and not held_out & set(texts)
    # Neutral snippets (no label) of the train split are kept as text.
    neutral = [r["text"] for r in rows if abs(r["rating"]) < classification.NEUTRAL_BAND]
    assert {t for t in neutral if common.split_of(t) == "train"} <= set(texts)


def test_cli_writes_a_corpus_flaxlm_reads(tmp_path):
    out = tmp_path / "movie_train.jsonl"
    cmd = [sys.executable, str(TOOL), f"--out={out}", "--per_document=7", f"--data_dir={_data_dir(tmp_path)}"]
    run = subprocess.run(cmd, capture_output=True, text=True, check=True)
    texts = task_corpus.split_texts(_rows())
    assert f"{len(texts)} train-split snippets" in run.stdout
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == -(-len(texts) // 7)
    assert "label" not in lines[0] and "rating" not in lines[0]
    docs = read_corpus(str(out))
    assert [d.source for d in docs] == ["movie_snippets_train"] * len(lines)
    assert [p for d in docs for p in d.paragraphs] == [" ".join(t.split()) for t in texts]
    again = tmp_path / "again.jsonl"
    subprocess.run([*cmd[:2], f"--out={again}", *cmd[3:]], capture_output=True, check=True)
    assert again.read_bytes() == out.read_bytes()


def test_cli_help_and_bad_input(tmp_path):
    assert subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True).returncode == 0
    bad = subprocess.run(
        [sys.executable, str(TOOL), f"--out={tmp_path / 'x.jsonl'}", "--per_document=0"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "--per_document=0" in bad.stderr and not (tmp_path / "x.jsonl").exists()
