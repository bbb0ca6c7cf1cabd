"""The trivial baselines logged beside every evaluation: a unigram model of the training tokens on the
same held-out targets, and the majority pair label. Checked against counts made here by hand."""

import collections

import numpy as np
import pytest

from flaxlm import baselines
from flaxlm import train as train_lib
from flaxlm.data import pipeline
from test_pipeline import config_for, small_corpus  # noqa: F401  (a module fixture)

BATCH = 8


@pytest.mark.parametrize("masking", ["dynamic", "static"])
def test_unigram_counts_are_the_training_tokens_before_masking(masking, data_dir, small_corpus):  # noqa: F811
    data = train_lib.prepare_data(config_for("segment_pair", data_dir, small_corpus, masking=masking))
    tok = data.tokenizer
    stats = baselines.train_statistics(data)
    expected, labels = collections.Counter(), collections.Counter()
    for i in range(len(data.train)):
        ex = data.train[i]
        ids = baselines.original_ids(ex)[ex["segment_ids"] > 0]
        assert ids[0] == tok.cls_id and not np.any(ids == tok.mask_id)  # static masks undone
        expected.update(int(t) for t in ids if t not in (tok.cls_id, tok.sep_id, tok.pad_id, tok.mask_id))
        labels[int(ex["pair_label"])] += 1
    counts = np.asarray(stats["token_counts"])
    assert {i: int(c) for i, c in enumerate(counts) if c} == dict(expected)
    assert stats["pair_label_counts"] == [labels[0], labels[1]]
    assert baselines.train_statistics(data) == stats  # read back from its cache


def test_unigram_and_majority_scores_on_the_evaluation_targets(data_dir, small_corpus):  # noqa: F811
    data = train_lib.prepare_data(config_for("segment_pair", data_dir, small_corpus))
    stats = baselines.train_statistics(data)
    batches = pipeline.eval_batches(data, global_batch=BATCH, seed=1)
    got = baselines.evaluate(stats, batches, "mlm_nsp")

    counts = np.asarray(stats["token_counts"], np.float64) + 1
    logp = np.log(counts / counts.sum())
    targets = np.concatenate([b["mlm_targets"][b["mlm_weights"] > 0] for b in batches])
    assert got["unigram_mlm_loss"] == pytest.approx(-logp[targets].mean(), rel=1e-12)
    assert got["unigram_mlm_accuracy"] == pytest.approx(np.mean(targets == np.argmax(counts)), rel=1e-12)
    # A unigram model is what a model that learned only token frequencies scores: well below uniform.
    assert got["unigram_mlm_loss"] < np.log(data.tokenizer.vocab_size) - 0.5
    labels = np.concatenate([b["pair_label"] for b in batches])
    majority = int(np.argmax(stats["pair_label_counts"]))
    assert got["majority_nsp_accuracy"] == pytest.approx(np.mean(labels == majority))
    assert 0.3 < got["majority_nsp_accuracy"] < 0.7  # NSP's labels are balanced by construction


def test_causal_unigram_scores_the_next_tokens_the_loss_counts(data_dir, small_corpus):  # noqa: F811
    data = train_lib.prepare_data(config_for("causal", data_dir, small_corpus))
    stats = baselines.train_statistics(data)
    assert stats["token_counts"][data.tokenizer.sep_id] > 0  # end of document is a target of causal LM
    batches = pipeline.eval_batches(data, global_batch=BATCH, seed=1)
    got = baselines.evaluate(stats, batches, "clm")
    logp = baselines.unigram_log_probs(stats["token_counts"])
    nll = []
    for b in batches:
        for ids, seg in zip(b["input_ids"], b["segment_ids"]):
            nll += [-logp[ids[t + 1]] for t in range(len(ids) - 1) if seg[t] != 0 and seg[t + 1] == seg[t]]
    assert got["unigram_lm_loss"] == pytest.approx(np.mean(nll), rel=1e-12)
    assert set(got) == {"unigram_lm_loss", "unigram_lm_accuracy"}


def test_summary_line():
    line = baselines.summary(
        {"mlm_loss": 5.1, "nsp_accuracy": 0.812},
        {"unigram_mlm_loss": 6.67, "majority_nsp_accuracy": 0.516, "unigram_mlm_accuracy": 0.05},
    )
    assert line == (
        "mlm_loss 5.100 (unigram 6.670, 1.57 nats below), nsp_accuracy 0.812 (majority label 0.516)"
    )
