"""The tokenizer pinned in a workdir (flaxlm/tokenizer_pin.py): an edited corpus cannot swap it.

A 1-layer BERT trains 2 steps on 30 real Shakespeare scenes; then a 31st scene is added to the
corpus file, which would give a new sentencepiece model of the same size. Resume stops with one
line; generate/score/finetune's reader (flaxlm.lm.read) and both exports keep the pinned one.
"""

import json
import os
import shutil

import pytest

from conftest import load_config, write_scenes
from flaxlm import checkpoint as ckpt
from flaxlm import lm as lm_lib
from flaxlm import tokenizer_pin
from flaxlm import train as train_lib
from flaxlm.data import prepare as prepare_lib
from flaxlm.data.tokenizer import TokenizerError


def tiny(data_dir, corpus, **train):
    c = load_config("bert_tiny")
    c.model.update(num_layers=1, hidden_size=32, num_heads=2, mlp_dim=64, vocab_size=1000, max_len=64)
    c.data.update(data_dir=data_dir, corpus=corpus, seq_len=64, max_predictions=10, validation_fraction=0.1)
    c.data.mask_prob = 0.15
    c.train.update(
        **{
            **dict(batch_size=16, num_steps=2, warmup_steps=1, log_every=1, eval_every=2, eval_batches=1),
            **dict(checkpoint_every=2),
            **train,
        }
    )
    return c


def _tokenizer_now(config):
    return prepare_lib.get_tokenizer(config.data, config.model.vocab_size, config.data.data_dir)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(workdir, config, the tokenizer it trained with, the corpus file), before the corpus edit."""
    root = tmp_path_factory.mktemp("pin")
    corpus = write_scenes(root / "scenes.jsonl.gz", 30)
    config = tiny(str(root / "data"), corpus)
    workdir = str(root / "run")
    train_lib.train_and_evaluate(config, workdir)
    return workdir, config, _tokenizer_now(config), corpus


def test_training_pins_its_tokenizer(run):
    workdir, _, tok, _ = run
    with open(tokenizer_pin.pin_path(workdir), encoding="utf-8") as f:
        record = json.load(f)
    assert record == {"file": "spiece.model", "fingerprint": tok.fingerprint}
    with open(tok.path, "rb") as a, open(os.path.join(workdir, "tokenizer", "spiece.model"), "rb") as b:
        assert a.read() == b.read()


def test_an_edited_corpus_cannot_swap_the_tokenizer(run, tmp_path):
    workdir, config, tok, corpus = run
    backup = tmp_path / "scenes.jsonl.gz"
    shutil.copyfile(corpus, backup)
    write_scenes(corpus, 31)  # one more scene: a new tokenizer cache key
    try:
        new_tok = _tokenizer_now(config)
        assert new_tok.fingerprint != tok.fingerprint  # what an unpinned reader would have used

        # Readers (generate, score, finetune --init) and both exports use the pinned copy.
        found = lm_lib.read(workdir)
        assert found.tokenizer.fingerprint == tok.fingerprint
        assert found.tokenizer.path == os.path.join(workdir, "tokenizer", "spiece.model")
        out = str(tmp_path / "export")
        ckpt.export_params(workdir, out)
        assert lm_lib.read(out).tokenizer.fingerprint == tok.fingerprint
        assert lm_lib.read(workdir, tokenizer=found.tokenizer.path).tokenizer.fingerprint == tok.fingerprint

        # A different tokenizer given explicitly is refused, naming the pinned one.
        with pytest.raises(TokenizerError, match="is not the tokenizer .* was trained with") as e:
            lm_lib.read(workdir, tokenizer=new_tok.path, tokenizer_flag="--tokenizer")
        assert "\n" not in str(e.value) and "drop --tokenizer" in str(e.value)

        # Resume stops before any step, in one line that says what changed and the ways on.
        resumed = tiny(config.data.data_dir, corpus, num_steps=4)
        with pytest.raises(TokenizerError, match="corpus or tokenizer file changed since") as e:
            train_lib.train_and_evaluate(resumed, workdir)
        assert "\n" not in str(e.value) and "--config.data.tokenizer=" in str(e.value)
        assert ckpt.manager(workdir, keep=3).latest_step() == 2

        # The way on that keeps the model's vocabulary: the pinned file, on the data as it is now.
        resumed.data.tokenizer = os.path.join(workdir, "tokenizer", "spiece.model")
        train_lib.train_and_evaluate(resumed, workdir)
        assert ckpt.manager(workdir, keep=3).latest_step() == 4
        assert tokenizer_pin.pinned(workdir).fingerprint == tok.fingerprint
    finally:
        shutil.copyfile(backup, corpus)


def test_a_changed_pinned_file_is_one_line(run, tmp_path):
    workdir, _, tok, _ = run
    copy = str(tmp_path / "run")
    shutil.copytree(workdir, copy)
    other = write_scenes(tmp_path / "other.jsonl.gz", 31)
    other_tok = _tokenizer_now(tiny(str(tmp_path / "data"), other))
    shutil.copyfile(other_tok.path, os.path.join(copy, "tokenizer", "spiece.model"))
    with pytest.raises(TokenizerError, match="changed after the run was trained") as e:
        lm_lib.read(copy)
    assert "\n" not in str(e.value)


def test_a_workdir_from_before_pins_is_read_as_before_and_pinned_on_resume(run, tmp_path):
    workdir, config, tok, corpus = run
    copy = str(tmp_path / "run")
    shutil.copytree(workdir, copy)
    shutil.rmtree(os.path.join(copy, "tokenizer"))
    assert lm_lib.read(copy).tokenizer.fingerprint == tok.fingerprint  # rebuilt from the same corpus
    latest = ckpt.manager(copy, keep=3).latest_step()
    train_lib.train_and_evaluate(tiny(config.data.data_dir, corpus, num_steps=latest + 2), copy)
    assert tokenizer_pin.pinned(copy).fingerprint == tok.fingerprint


def test_the_tokenizer_cache_is_per_train_split(run):
    """A sentencepiece model is trained on the train documents: another validation_fraction is another one."""
    _, config, tok, _ = run
    same = _tokenizer_now(config)
    assert same.fingerprint == tok.fingerprint
    assert _tokenizer_now(config).path == same.path  # the same settings reuse the cached model
    other = config.copy_and_resolve_references()
    other.data.validation_fraction = 0.3
    moved = _tokenizer_now(other)
    assert moved.path != same.path and moved.fingerprint != tok.fingerprint
