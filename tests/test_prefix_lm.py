"""Prefix LM on the GPT stack (objective and builder "prefix_lm"): the attention mask, the model
with and without a prefix, the loss over continuation targets only, the builder's splits, and a
CLI run that resumes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxlm import models, objectives
from flaxlm import train_step as step_lib
from flaxlm.data import builders
from flaxlm.models import layers

TINY_GPT = dict(
    arch="gpt", vocab_size=64, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64, max_len=16,
    dropout_rate=0.0, attention_dropout_rate=0.0, pre_ln=True, activation="gelu_tanh",
)  # fmt: skip

# Two packed documents and padding: document 1 has a 3-token prefix, document 2 a 1-token one.
SEG = np.array([[1, 1, 1, 1, 1, 2, 2, 2, 0, 0]], np.int32)
PREFIX = np.array([[1, 1, 1, 0, 0, 1, 0, 0, 0, 0]], np.int32)
POS = np.array([[0, 1, 2, 3, 4, 0, 1, 2, 0, 0]], np.int32)


def test_prefix_mask_is_bidirectional_in_the_prefix_causal_after_and_per_document():
    mask = np.asarray(layers.make_attention_mask(jnp.asarray(SEG), causal=True, prefix_BT=PREFIX))[0, 0]
    t = SEG.shape[1]
    seg, prefix = SEG[0], PREFIX[0]
    for i in range(t):
        for j in range(t):
            same = seg[i] == seg[j] != 0
            assert mask[i, j] == (same and (j <= i or prefix[j] == 1)), (i, j)
    assert mask[0, 2] and mask[1, 2]  # the prefix sees its later tokens
    assert not mask[3, 4] and mask[4, 3] and mask[3, 0]  # the continuation is causal, sees the prefix
    assert not mask[5, :5].any() and not mask[:5, 5:].any()  # never across documents
    assert not mask[8:].any() and not mask[:, 8:].any()  # padding sees and is seen by nothing


def test_no_prefix_is_the_causal_mask_bitwise():
    seg = jnp.asarray(SEG)
    causal = layers.make_attention_mask(seg, causal=True)
    np.testing.assert_array_equal(causal, layers.make_attention_mask(seg, True, jnp.zeros_like(seg)))
    np.testing.assert_array_equal(causal, np.tril(causal[0, 0])[None, None] & causal)


def _gpt():
    model = models.get_model(TINY_GPT)
    ids = jnp.asarray(np.random.default_rng(0).integers(5, 64, SEG.shape), jnp.int32)
    params = model.init(jax.random.key(0), ids, SEG, POS, deterministic=True)["params"]
    return model, params, ids


def test_gpt_without_prefix_is_unchanged_and_with_prefix_sees_the_whole_prefix():
    model, params, ids = _gpt()

    def logits(ids, prefix=None):
        return np.asarray(model.apply({"params": params}, ids, SEG, POS, prefix, deterministic=True))

    base = logits(ids)
    np.testing.assert_array_equal(base, logits(ids, jnp.zeros_like(ids)))  # bitwise: an empty prefix
    with_prefix = logits(ids, PREFIX)
    changed = ids.at[0, 2].set((ids[0, 2] + 1) % 64)  # the last prefix token of document 1
    assert not np.allclose(logits(changed, PREFIX)[0, 0], with_prefix[0, 0])  # seen by position 0
    np.testing.assert_array_equal(logits(changed)[0, :2], base[0, :2])  # not without the prefix
    changed = ids.at[0, 4].set((ids[0, 4] + 1) % 64)  # a continuation token: nothing before sees it
    np.testing.assert_allclose(logits(changed, PREFIX)[0, :4], with_prefix[0, :4], atol=1e-6)
    np.testing.assert_allclose(logits(changed, PREFIX)[0, 5:8], with_prefix[0, 5:8], atol=1e-6)


def test_loss_counts_only_continuation_targets():
    _, _, ids = _gpt()
    weights = np.asarray(objectives.prefix_lm_weights(jnp.asarray(SEG), jnp.asarray(PREFIX)))
    # Position t scores token t + 1: document 1's tokens 3, 4 (from positions 2, 3), document 2's 6, 7.
    np.testing.assert_array_equal(weights[0], [0, 0, 1, 1, 0, 1, 1, 0, 0, 0])
    logits = jax.random.normal(jax.random.key(1), (*SEG.shape, 64))
    loss, m = objectives.causal_lm_loss(logits, ids, jnp.asarray(SEG), jnp.asarray(PREFIX))
    logp = jax.nn.log_softmax(logits[0])
    expected = -np.mean([logp[t, ids[0, t + 1]] for t in (2, 3, 5, 6)])
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert m["lm_tokens"] == 4
    batch = {"input_ids": ids, "segment_ids": SEG, "positions": POS, "prefix_mask": PREFIX}
    terms = objectives.loss_terms(logits, batch, objective="prefix_lm")
    assert [t.name for t in terms] == ["lm"] and terms[0].count == 4
    assert step_lib.batch_totals(batch, "prefix_lm") == {"lm": 4}


def test_builder_splits_each_piece_once_uniformly_and_keeps_causal_packing():
    rng = np.random.default_rng(0)
    docs = [
        [rng.integers(10, 90, n).astype(np.int32) for n in lengths]
        for lengths in rng.integers(1, 60, (40, 3))
    ]
    causal = list(builders.pack_causal(docs, 32, eos_id=3))
    rows = list(builders.prefix_lm(docs, 32, np.random.default_rng(1), eos_id=3))
    again = list(builders.prefix_lm(docs, 32, np.random.default_rng(1), eos_id=3))
    assert len(rows) == len(causal)
    fractions = []
    for row, plain, same in zip(rows, causal, again):
        for k in ("input_ids", "segment_ids", "positions"):
            np.testing.assert_array_equal(row[k], plain[k])
        np.testing.assert_array_equal(row["prefix_mask"], same["prefix_mask"])  # seeded
        seg, prefix = row["segment_ids"], row["prefix_mask"]
        assert not prefix[seg == 0].any()
        for k in range(1, seg.max() + 1):
            piece = prefix[seg == k]
            n, p = len(piece), int(piece.sum())
            np.testing.assert_array_equal(piece, np.arange(n) < p)  # a run from the piece's start
            assert 1 <= p <= n - 1 if n >= 2 else p == 0
            if n >= 8:
                fractions.append((p - 1) / (n - 2))  # uniform on [0, 1] for p uniform in 1 .. n - 1
    assert len(fractions) > 50 and abs(np.mean(fractions) - 0.5) < 0.08


def test_prefix_lm_tiny_trains_from_the_cli_and_resumes(tmp_path, data_dir):
    """configs/prefix_lm_tiny.py (shrunk) trains with a finite, decreasing loss, evaluates and resumes."""
    from test_cli import train_stop_resume

    _, evals = train_stop_resume(tmp_path, data_dir, "configs/prefix_lm_tiny.py", log_every=5)
    assert np.isfinite(evals[40]["eval_unigram_lm_loss"])  # the baseline scores the same targets


if __name__ == "__main__":
    pytest.main([__file__])
