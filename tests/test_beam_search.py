"""Beam search: the core on hand-made Markov chains (where greedy fails, the length penalty, EOS),
and on tiny random GPT and T5 models (beam 1 == greedy, cached scores == rescoring, batching)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxlm import beam_search as bs
from flaxlm import generate as gen
from flaxlm.models import T5ForConditionalGeneration
from flaxlm.models import t5 as t5_lib
from test_generate import _random_gpt

PAD, EOS, START = 0, 1, 0  # the chains' ids: the start state is token 0 (as T5's decoder start)


def _chain(probs: dict[int, dict[int, float]], vocab: int = 6) -> np.ndarray:
    """logits_VV of a Markov chain: row t = log p(next | t); unlisted transitions get 1e-6."""
    p = np.full((vocab, vocab), 1e-6)
    for prev, row in probs.items():
        for nxt, q in row.items():
            p[prev, nxt] = q
    return np.log(p / p.sum(1, keepdims=True)).astype(np.float32)


def _search_chain(logits_VV, *, num_beams, max_new_tokens, alpha=0.0, eos_id=EOS):
    """`bs.search` with the chain as step function (no state: the logits depend on the last token only)."""
    table = jnp.asarray(logits_VV)
    step = lambda state, token_R, i: (table[token_R], state)
    state = jnp.zeros((num_beams,))  # one prompt's K rows
    out = jax.jit(
        lambda: bs.search(
            step,
            state,
            table[START][None],
            num_beams=num_beams,
            max_new_tokens=max_new_tokens,
            eos_id=eos_id,
            pad_id=PAD,
            alpha=alpha,
        )
    )()
    tokens, lengths, scores, log_probs, steps = jax.device_get(out)
    return tokens[0], lengths[0], scores[0], log_probs[0], int(steps)


def _chain_log_prob(logits_VV, tokens) -> float:
    """log p(tokens | start) summed step by step in float64, independently of the search."""
    lp = logits_VV.astype(np.float64)
    lp = lp - np.log(np.exp(lp).sum(1, keepdims=True))
    prev, total = START, 0.0
    for t in tokens:
        total += lp[prev, t]
        prev = t
    return total


# 2 -> {4, 5} is a fork of two halves; 3 -> 4 is almost certain. Greedy takes 2 (0.55) and ends with
# p = 0.55 * 0.5 = 0.275; the path through 3 has p = 0.45 * 1.0 = 0.45.
GREEDY_TRAP = _chain({0: {2: 0.55, 3: 0.45}, 2: {4: 0.5, 5: 0.5}, 3: {4: 1.0}, 4: {EOS: 1.0}, 5: {EOS: 1.0}})


def test_beam_search_finds_the_likelier_sequence_where_greedy_fails():
    greedy = _search_chain(GREEDY_TRAP, num_beams=1, max_new_tokens=4)
    beams = _search_chain(GREEDY_TRAP, num_beams=2, max_new_tokens=4)
    assert greedy[0][0].tolist() == [2, 4, EOS, PAD]
    assert beams[0][0].tolist() == [3, 4, EOS, PAD] and beams[1][0] == 3
    exact = _chain_log_prob(GREEDY_TRAP, [3, 4, EOS])
    np.testing.assert_allclose(beams[3][0], exact, atol=1e-5)
    np.testing.assert_allclose(beams[2][0], exact, atol=1e-5)  # alpha = 0: the score is the log-prob
    assert exact > _chain_log_prob(GREEDY_TRAP, [2, 4, EOS]) + 0.4
    np.testing.assert_allclose(greedy[3][0], _chain_log_prob(GREEDY_TRAP, [2, 4, EOS]), atol=1e-5)
    # The second beam is the next best finished sequence (2, 4 and 2, 5 tie at 0.275).
    np.testing.assert_allclose(beams[3][1], np.log(0.55 * 0.5), atol=1e-4)


def test_length_penalty_is_gnmt_and_picks_the_sequence_its_formula_prefers():
    assert bs.length_penalty(1, 0.6) == 1.0 and bs.length_penalty(7, 1.0) == 2.0
    np.testing.assert_allclose(bs.length_penalty(3, 0.6), (8 / 6) ** 0.6)
    # Ending at once (p 0.5, 1 token) vs 2, 3, EOS (p 0.5 * 0.7, 3 tokens).
    logits = _chain({0: {EOS: 0.5, 2: 0.5}, 2: {3: 0.7, 4: 0.3}, 3: {EOS: 1.0}, 4: {EOS: 1.0}})
    short, long = [EOS], [2, 3, EOS]
    chosen = {}
    for alpha in (0.0, 1.0, 2.0):
        tokens, lengths, scores, log_probs, _ = _search_chain(
            logits, num_beams=2, max_new_tokens=4, alpha=alpha
        )
        formula = {
            tuple(seq): _chain_log_prob(logits, seq) / ((5 + len(seq)) / 6) ** alpha for seq in (short, long)
        }
        best = max(formula, key=formula.get)
        assert tuple(tokens[0, : lengths[0]].tolist()) == best, alpha
        np.testing.assert_allclose(scores[0], formula[best], atol=1e-5)
        np.testing.assert_allclose(scores, log_probs / bs.length_penalty(lengths, alpha), atol=1e-6)
        chosen[alpha] = best
    assert chosen[0.0] == chosen[1.0] == tuple(short) and chosen[2.0] == tuple(long)  # the penalty flips it


def test_finished_beams_stop_growing_and_are_padded():
    # From 2, EOS is likely, else a long walk 3 -> 3 -> ... that never ends.
    logits = _chain({0: {2: 0.9, 3: 0.1}, 2: {EOS: 0.6, 3: 0.4}, 3: {3: 0.99}})
    tokens, lengths, scores, log_probs, steps = _search_chain(logits, num_beams=3, max_new_tokens=6)
    assert tokens[0].tolist() == [2, EOS, PAD, PAD, PAD, PAD] and lengths[0] == 2
    for seq, n in zip(tokens, lengths):
        assert (seq[n:] == PAD).all() and EOS not in seq[: n - 1].tolist()
        assert seq[n - 1] == EOS or n == 6  # ended at eos, or still alive at max_new_tokens
    assert np.all(np.diff(scores) <= 0)
    for seq, n, lp in zip(tokens, lengths, log_probs):
        np.testing.assert_allclose(lp, _chain_log_prob(logits, seq[:n]), atol=1e-4)
    # No eos at all: every beam runs to max_new_tokens.
    tokens, lengths, *_ = _search_chain(logits, num_beams=2, max_new_tokens=5, eos_id=-1)
    assert lengths.tolist() == [5, 5] and PAD not in tokens.tolist()


def test_search_stops_once_no_alive_beam_can_win():
    # Token 2 ends at once with p 0.99; the alive beams' log-probs are below the finished ones.
    logits = _chain({0: {2: 0.98, 3: 0.01, 4: 0.01}, 2: {EOS: 0.999}, 3: {EOS: 0.999}, 4: {EOS: 0.999}})
    tokens, lengths, _, _, steps = _search_chain(logits, num_beams=2, max_new_tokens=20)
    assert tokens[0, :2].tolist() == [2, EOS] and steps < 20, steps


# ----------------------------------------------------------------------------- models


T5_TINY = t5_lib.t5_config(
    vocab_size=64, hidden_size=32, num_layers=2, num_decoder_layers=2, num_heads=2, mlp_dim=64,
    head_dim=16, dropout_rate=0.0, max_len=32,
)  # fmt: skip


@functools.lru_cache(maxsize=None)
def _random_t5():
    model = T5ForConditionalGeneration(T5_TINY)
    z = np.zeros((1, 8), np.int32)
    return model, model.init(jax.random.key(1), z, z, z, z, z, z, deterministic=True)["params"]


def _gpt_log_prob(model, params, prompt, new) -> float:
    """log p(new | prompt) from one uncached forward pass over prompt + new."""
    ids = np.array([list(prompt) + list(new)], np.int32)
    pos = np.arange(ids.shape[1], dtype=np.int32)[None]
    logits = model.apply({"params": params}, ids, np.ones_like(ids), pos, deterministic=True)
    lp = jax.nn.log_softmax(np.asarray(logits, np.float64)[0], -1)
    return float(sum(lp[len(prompt) - 1 + t, tok] for t, tok in enumerate(new)))


def _t5_log_prob(model, params, inputs, new) -> float:
    """log p(new | inputs) from one uncached encoder + decoder pass (teacher forcing)."""
    ids = np.array([inputs], np.int32)
    targets = np.array([new], np.int32)
    dec_in = t5_lib.shift_right(targets, np.ones_like(targets))
    pos = lambda x: np.arange(x.shape[1], dtype=np.int32)[None]
    logits = model.apply(
        {"params": params}, ids, np.ones_like(ids), pos(ids), dec_in, np.ones_like(targets), pos(targets),
        deterministic=True,
    )  # fmt: skip
    lp = jax.nn.log_softmax(np.asarray(logits, np.float64)[0], -1)
    return float(sum(lp[t, tok] for t, tok in enumerate(new)))


def _t5_greedy(model, params, inputs, n, eos_id):
    """Greedy decoding by full recomputation: the reference for one beam.

    Every pass decodes n target slots (the tokens so far, then zeros): the decoder is causal, so
    the logits at slot len(out) see only the tokens so far, and one compiled shape serves all steps.
    """
    out = []
    for _ in range(n):
        logits = np.asarray(_t5_full_logits(model, params, inputs, out + [0] * (n - len(out))))
        out.append(int(np.argmax(logits[len(out)])))
        if out[-1] == eos_id:
            break
    return out


@functools.lru_cache(maxsize=None)
def _jitted_apply(model):
    return jax.jit(functools.partial(model.apply, deterministic=True))


def _t5_full_logits(model, params, inputs, targets):
    ids, tgt = np.array([inputs], np.int32), np.array([targets], np.int32)
    dec_in = t5_lib.shift_right(tgt, np.ones_like(tgt))
    pos = lambda x: np.arange(x.shape[1], dtype=np.int32)[None]
    return _jitted_apply(model)(
        {"params": params}, ids, np.ones_like(ids), pos(ids), dec_in, np.ones_like(tgt), pos(tgt)
    )[0]


PROMPTS = [[5, 9, 17, 33], [40, 2], [7, 7, 8, 12, 60, 3]]


def test_one_beam_is_greedy_decoding_for_gpt():
    model, params = _random_gpt()
    greedy = gen.generate(model, params, PROMPTS, max_new_tokens=8, eos_id=None, pad_id=0)
    # An eos that greedy emits mid-way in row 0, so that the one beam's ending is checked too.
    eos = int(greedy.tokens[0, 4])
    greedy_eos = gen.generate(model, params, PROMPTS, max_new_tokens=8, eos_id=eos, pad_id=0)
    for eos_id, ref in ((None, greedy), (eos, greedy_eos)):
        beams = bs.beam_search(
            model, params, PROMPTS, num_beams=1, max_new_tokens=8, eos_id=eos_id, alpha=0.0
        )
        assert beams.tokens.shape == (3, 1, 8)
        np.testing.assert_array_equal(beams.tokens[:, 0], ref.tokens)
        np.testing.assert_array_equal(beams.lengths[:, 0], ref.lengths)
    assert greedy_eos.lengths[0] <= 5


def test_one_beam_is_greedy_decoding_for_t5():
    model, params = _random_t5()
    eos = 1
    beams = bs.beam_search(model, params, PROMPTS, num_beams=1, max_new_tokens=6, eos_id=eos, alpha=0.0)
    for b, inputs in enumerate(PROMPTS):
        ref = _t5_greedy(model, params, inputs, 6, eos)
        assert beams.tokens[b, 0, : beams.lengths[b, 0]].tolist() == ref


@pytest.mark.parametrize("arch", ["gpt", "t5"])
def test_cached_beam_scores_equal_uncached_rescoring(arch):
    model, params = _random_gpt() if arch == "gpt" else _random_t5()
    rescore = _gpt_log_prob if arch == "gpt" else _t5_log_prob
    alpha, n = 0.6, 6
    beams = bs.beam_search(model, params, PROMPTS, num_beams=4, max_new_tokens=n, eos_id=3, alpha=alpha)
    assert np.all(np.diff(beams.scores, axis=1) <= 0)
    for b, prompt in enumerate(PROMPTS):
        for k in range(4):
            new = beams.tokens[b, k, : beams.lengths[b, k]].tolist()
            exact = rescore(model, params, prompt, new)
            np.testing.assert_allclose(beams.log_probs[b, k], exact, atol=1e-5, err_msg=f"{arch} {b} {k}")
            np.testing.assert_allclose(
                beams.scores[b, k], exact / ((5 + len(new)) / 6) ** alpha, atol=1e-5, rtol=0
            )
    # Beam search's best is at least as likely (under the penalty) as greedy's sequence.
    greedy = bs.beam_search(model, params, PROMPTS, num_beams=1, max_new_tokens=n, eos_id=3, alpha=alpha)
    assert np.all(beams.scores[:, 0] >= greedy.scores[:, 0] - 1e-6)


@pytest.mark.parametrize("arch", ["gpt", "t5"])
def test_a_batch_of_prompts_gives_each_prompt_alone(arch):
    model, params = _random_gpt() if arch == "gpt" else _random_t5()
    kwargs = dict(num_beams=3, max_new_tokens=5, eos_id=3, alpha=0.6)
    batch = bs.beam_search(model, params, PROMPTS[:2], **kwargs)
    for b, prompt in enumerate(PROMPTS[:2]):
        alone = bs.beam_search(model, params, [prompt], **kwargs)
        np.testing.assert_array_equal(batch.tokens[b], alone.tokens[0])
        np.testing.assert_array_equal(batch.lengths[b], alone.lengths[0])
        np.testing.assert_allclose(batch.scores[b], alone.scores[0], atol=1e-5)


def test_bad_requests_are_generation_errors():
    model, params = _random_gpt()
    for kwargs in (dict(num_beams=0), dict(alpha=-1.0), dict(max_new_tokens=0)):
        with pytest.raises(gen.GenerationError):
            bs.beam_search(
                model, params, PROMPTS, **{"num_beams": 2, "max_new_tokens": 4, "eos_id": 3, **kwargs}
            )
    with pytest.raises(gen.GenerationError, match="max_len"):
        bs.beam_search(model, params, [[5] * 30], num_beams=2, max_new_tokens=4, eos_id=3)


# ----------------------------------------------------------------------------- texts and the CLI


def _t5_export(tok, out) -> str:
    """A random-weight T5 export (T5_TINY's shape) with `tok` and 10 sentinels after its pieces."""
    from flaxlm import checkpoint

    cfg = dataclasses.replace(T5_TINY, vocab_size=tok.vocab_size + 10)
    model = T5ForConditionalGeneration(cfg)
    z = np.zeros((1, 8), np.int32)
    params = model.init(jax.random.key(2), z, z, z, z, z, z, deterministic=True)["params"]
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    fields = {k: v for k, v in fields.items() if isinstance(v, (bool, int, float, str))}
    meta = {"model": {**fields, "arch": "t5"}, "objective": "span_corruption", "step": 0}
    checkpoint.add_tokenizer(str(out), tok, meta)
    checkpoint.write_export(str(out), jax.device_get(params), meta)
    return str(out)


def test_t5_inputs_and_outputs_write_sentinels_as_text(tiny_gpt_workdir):
    from flaxlm import lm as lm_lib

    tok = lm_lib.load(tiny_gpt_workdir).tokenizer
    ids = bs.encode_t5_input(tok, "To be, or <extra_id_0> to be", 1010)
    assert ids[-1] == tok.sep_id and 1009 in ids and ids.index(1009) == len(tok.encode("To be, or"))
    assert bs.decode_t5_output(tok, [1009, *tok.encode("not"), 1008, tok.sep_id], 1010) == (
        "<extra_id_0> not <extra_id_1>"
    )


def test_generate_cli_beam_search_for_gpt_and_t5(tiny_gpt_workdir, data_dir, tmp_path):
    from flaxlm import lm as lm_lib
    from test_cli import flaxlm

    gpt = lm_lib.load(tiny_gpt_workdir)
    prompts = ["Who's there?", "Long live the king!"]
    beam_args = ["generate", f"--model={tiny_gpt_workdir}", "--max_new_tokens=8", "--num_beams=3"]
    proc = flaxlm(*beam_args, "--length_penalty=0.6", *(f"--prompt={p}" for p in prompts), data_dir=data_dir)
    want = bs.beam_search_texts(gpt, prompts, num_beams=3, alpha=0.6, max_new_tokens=8)
    blocks = proc.stdout.split("--- prompt ")[1:]
    assert [b.splitlines()[1] for b in blocks] == [r["text"] for r in want]
    assert blocks[0].startswith(f"1, best of 3 beams (score {want[0]['score']:.4f}, ")

    # Sampling flags and beams together, or a length penalty without beams: one line, exit 2.
    for extra, message in (
        (
            ["--num_beams=2", "--top_k=5"],
            "--num_beams (beam search) and --top_k (sampling) exclude each other",
        ),
        (["--length_penalty=1.0"], "--length_penalty is for beam search; give --num_beams too"),
    ):
        proc = flaxlm(
            "generate", f"--model={tiny_gpt_workdir}", "--prompt=a", *extra, data_dir=data_dir, check=False
        )
        assert proc.returncode == 2 and _last_line(proc) == f"flaxlm generate: error: {message}"

    # A T5: beam search, greedy (= one beam) through --temperature=0, and no sampling.
    t5_dir = _t5_export(gpt.tokenizer, tmp_path / "t5")
    t5 = lm_lib.load(t5_dir)
    t5_args = ["generate", f"--model={t5_dir}", "--max_new_tokens=6", "--prompt=To be, or <extra_id_0> to be"]
    proc = flaxlm(*t5_args, "--num_beams=2", data_dir=data_dir)
    want = bs.beam_search_texts(t5, [t5_args[-1][9:]], num_beams=2, alpha=0.6, max_new_tokens=6)
    assert proc.stdout.splitlines()[1] == want[0]["text"] and want[0]["new_tokens"] > 0
    greedy = gen.generate_texts(t5, [t5_args[-1][9:]], max_new_tokens=6, sampling=gen.Sampling(temperature=0))
    proc = flaxlm(*t5_args, "--temperature=0", data_dir=data_dir)
    assert proc.stdout.splitlines()[1] == greedy[0]["text"]
    proc = flaxlm(*t5_args, data_dir=data_dir, check=False)
    assert proc.returncode == 2 and "T5 (arch t5): it decodes greedily" in _last_line(proc)


def _last_line(proc) -> str:
    return proc.stderr.strip().splitlines()[-1]
