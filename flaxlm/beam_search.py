"""Beam search with a length penalty, for GPT decoders and T5, beside flaxlm.generate's sampling.

Letters in names: B prompts, K beams, R = B * K model rows (beam k of prompt b is row b * K + k,
the batch axis of the KV cache), N = max_new_tokens, C = 2K candidates per prompt and step,
V vocabulary, P prompt length, S encoder length, D hidden size.

`search` is the model-free core: it takes a step function (state, token_R, i) -> (logits_RV,
state) whose state (a KV cache) has R rows on axis 0 of every non-scalar leaf, and runs in one
`lax.while_loop`. Each step extends every alive beam by every token, keeps 2K candidates per
prompt, and
  - the K best candidates that did not end become the new alive beams; the state's rows are
    gathered by their parent beams (`jnp.take` on axis 0) before the next token is fed;
  - the candidates that end (eos, or any token at step N - 1) join the finished set, which keeps
    the K best by score (T5X's and flax's examples/wmt beam search keep the same two sets).
The loop stops at N tokens, or once no prompt's best alive beam, even if it went on to N tokens,
could beat its worst finished one (log-probs only fall, and the penalty below grows with length).

Length penalty (GNMT, Wu et al. 2016; T5X's and flax's `brevity_penalty`): a hypothesis of L new
tokens (its eos included) scores log p / ((5 + L) / 6) ** alpha. alpha = 0 ranks by log p;
larger alpha favours longer outputs. (Hugging Face divides by L ** alpha instead.)

`beam_search` runs it on a GPTDecoder (the prompt, left-padded as in `generate`, is prefilled
into a cache of B rows, which is then repeated K times) or on T5ForConditionalGeneration (the
inputs are encoded once and repeated per beam; the decoder starts from `decoder_start_id` and
caches its self-attention). With num_beams=1 and alpha=0 it is greedy decoding.
"""

import dataclasses
import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxlm import generate as gen
from flaxlm.generate import GenerationError
from flaxlm.models.gpt import GPTDecoder
from flaxlm.models.layers import TransformerConfig
from flaxlm.models.t5 import T5ForConditionalGeneration


@dataclasses.dataclass(frozen=True)
class Beams:
    """What `beam_search` returns (numpy arrays; beams best first, N = max_new_tokens).

    tokens: int32 [B, K, N] new ids; a beam that ended at eos_id holds the eos, then pad_id.
    lengths: int32 [B, K] new tokens per beam, eos included.
    scores: float32 [B, K] log_probs / length_penalty(lengths, alpha), descending; -inf marks
      no hypothesis (only when fewer than K sequences exist, e.g. a vocabulary smaller than K).
    log_probs: float32 [B, K] sum of the new tokens' log-probabilities, in nats.
    steps: how many tokens the loop ran for (< N when every prompt's search ended early).
    """

    tokens: np.ndarray
    lengths: np.ndarray
    scores: np.ndarray
    log_probs: np.ndarray
    steps: int


def length_penalty(length, alpha):
    """GNMT's ((5 + length) / 6) ** alpha; a hypothesis scores log p / this (length: new tokens, eos in)."""
    return ((5.0 + length) / 6.0) ** alpha


def repeat_rows(tree, num_beams: int):
    """Each row of every non-scalar leaf repeated num_beams times on axis 0: [B, ...] -> [B * K, ...]."""
    return jax.tree.map(lambda x: x if x.ndim == 0 else jnp.repeat(x, num_beams, axis=0), tree)


def take_rows(tree, rows_R: jax.Array):
    """Rows `rows_R` of every non-scalar leaf (a cache's write index is a scalar and stays)."""
    return jax.tree.map(lambda x: x if x.ndim == 0 else jnp.take(x, rows_R, axis=0), tree)


Step = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, Any]]


def search(
    step: Step,
    state: Any,
    first_logits_BV: jax.Array,
    *,
    num_beams: int,
    max_new_tokens: int,
    eos_id: jax.Array | int,
    pad_id: int,
    alpha: jax.Array | float,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """(tokens_BKN, lengths_BK, scores_BK, log_probs_BK, steps) of the K best hypotheses; see `Beams`.

    first_logits_BV: the logits of new token 0 for each prompt. step(state, token_R, i) feeds new
    token i of every row and returns the logits of token i + 1 and the new state; `state` holds R
    rows (every prompt's row repeated K times: `repeat_rows`). eos_id < 0: no eos.
    """
    b, v = first_logits_BV.shape
    k, n = num_beams, max_new_tokens
    neg_inf = jnp.array(-jnp.inf, jnp.float32)

    def expand(i, logits_BKV, beams):
        """Chooses new token i: -> (parent_BK, token_BK, beams), the alive beams' parents and new tokens."""
        alive_BKN, alive_logp_BK, done_BKN, done_scores_BK, done_logp_BK, done_lengths_BK = beams
        logp_BKV = jax.nn.log_softmax(logits_BKV.astype(jnp.float32), axis=-1) + alive_logp_BK[..., None]
        cand_logp_BC, flat_BC = jax.lax.top_k(logp_BKV.reshape(b, k * v), 2 * k)
        parent_BC, token_BC = flat_BC // v, (flat_BC % v).astype(jnp.int32)
        cand_BCN = jnp.take_along_axis(alive_BKN, parent_BC[..., None], axis=1)
        cand_BCN = jax.lax.dynamic_update_slice(cand_BCN, token_BC[..., None], (0, 0, i))
        ends_BC = (token_BC == eos_id) | (i == n - 1)  # at the last step every candidate ends

        alive_logp_BK, keep_BK = jax.lax.top_k(jnp.where(ends_BC, neg_inf, cand_logp_BC), k)
        alive_BKN = jnp.take_along_axis(cand_BCN, keep_BK[..., None], axis=1)
        parent_BK = jnp.take_along_axis(parent_BC, keep_BK, axis=1)
        token_BK = jnp.take_along_axis(token_BC, keep_BK, axis=1)

        new_scores_BC = jnp.where(ends_BC, cand_logp_BC / length_penalty(i + 1.0, alpha), neg_inf)
        done_scores_BK, pick_BK = jax.lax.top_k(jnp.concatenate([done_scores_BK, new_scores_BC], 1), k)
        pick = lambda old, new: jnp.take_along_axis(
            jnp.concatenate([old, new], 1), pick_BK.reshape(pick_BK.shape + (1,) * (old.ndim - 2)), axis=1
        )
        done_BKN = pick(done_BKN, cand_BCN)
        done_logp_BK = pick(done_logp_BK, cand_logp_BC)
        done_lengths_BK = pick(done_lengths_BK, jnp.full((b, 2 * k), i + 1, jnp.int32))
        beams = (alive_BKN, alive_logp_BK, done_BKN, done_scores_BK, done_logp_BK, done_lengths_BK)
        return parent_BK, token_BK, beams

    def settled_B(beams):
        """Whether no alive beam can still beat the worst of the K finished ones."""
        _, alive_logp_BK, _, done_scores_BK, _, _ = beams
        best_alive_B = alive_logp_BK[:, 0] / length_penalty(float(n), alpha)
        return done_scores_BK[:, -1] >= best_alive_B

    pad_BKN = jnp.full((b, k, n), pad_id, jnp.int32)
    only_first_BK = jnp.where(jnp.arange(k) == 0, 0.0, neg_inf)[None].repeat(b, 0)  # K copies of one start
    beams = (
        pad_BKN,
        only_first_BK,
        pad_BKN,
        jnp.full((b, k), neg_inf),
        jnp.full((b, k), neg_inf),
        jnp.zeros((b, k), jnp.int32),
    )
    first_logits_BKV = jnp.broadcast_to(first_logits_BV[:, None], (b, k, v))
    parent_BK, token_BK, beams = expand(0, first_logits_BKV, beams)

    def cond(carry):
        i, _, _, _, beams = carry
        return (i < n) & ~jnp.all(settled_B(beams))

    def body(carry):
        i, state, parent_BK, token_BK, beams = carry
        state = take_rows(state, (jnp.arange(b)[:, None] * k + parent_BK).reshape(-1))
        logits_RV, state = step(state, token_BK.reshape(-1), i - 1)
        parent_BK, token_BK, beams = expand(i, logits_RV.reshape(b, k, v), beams)
        return i + 1, state, parent_BK, token_BK, beams

    carry = (jnp.ones((), jnp.int32), state, parent_BK, token_BK, beams)
    steps, _, _, _, beams = jax.lax.while_loop(cond, body, carry)
    _, _, done_BKN, done_scores_BK, done_logp_BK, done_lengths_BK = beams
    return done_BKN, done_lengths_BK, done_scores_BK, done_logp_BK, steps


def beam_search(
    model: GPTDecoder | T5ForConditionalGeneration,
    params,
    prompts: Sequence[Sequence[int]],
    *,
    num_beams: int,
    max_new_tokens: int,
    eos_id: int | None,
    pad_id: int = 0,
    alpha: float = 0.6,
    decoder_start_id: int = 0,
) -> Beams:
    """The `num_beams` best continuations of each prompt (lists of token ids) under length penalty `alpha`.

    GPTDecoder: continues the prompt. T5ForConditionalGeneration: the prompts are the encoder's
    inputs (give them their eos, as in training), and the decoder starts from decoder_start_id
    (T5: 0, the padding id). A beam ends at `eos_id` (None: only at max_new_tokens). Compiles
    once per (model, batch size, longest prompt, num_beams, max_new_tokens).
    """
    if num_beams < 1:
        raise GenerationError(f"num_beams={num_beams} must be >= 1")
    if not alpha >= 0.0:
        raise GenerationError(f"length_penalty={alpha} must be >= 0 (0: rank by log-probability)")
    if max_new_tokens < 1:
        raise GenerationError(f"max_new_tokens={max_new_tokens} must be >= 1")
    if not prompts or any(len(p) == 0 for p in prompts):
        raise GenerationError("every prompt needs at least one token")
    statics = dict(num_beams=num_beams, max_new_tokens=max_new_tokens, pad_id=int(pad_id))
    eos = np.int32(-1 if eos_id is None else eos_id)
    if isinstance(model, GPTDecoder):
        gen.check_prompt_lengths(model.config, prompts, max_new_tokens)
        ids, seg, pos = gen.left_pad(prompts, pad_id)
        lengths = np.array([len(p) for p in prompts], np.int32)
        config = dataclasses.replace(model.config, decode=False, remat=False)
        out = _gpt_beams(params, ids, seg, pos, lengths, eos, np.float32(alpha), config=config, **statics)
    elif isinstance(model, T5ForConditionalGeneration):
        ids, seg, pos = right_pad(prompts, pad_id)
        config = dataclasses.replace(model.config, decode=False, remat=False, dropout_rate=0.0)
        start = np.int32(decoder_start_id)
        out = _t5_beams(params, ids, seg, pos, start, eos, np.float32(alpha), config=config, **statics)
    else:
        raise GenerationError(f"beam search needs a GPT decoder or T5, not {type(model).__name__}")
    tokens, lengths, scores, log_probs, steps = jax.device_get(out)
    return Beams(tokens=tokens, lengths=lengths, scores=scores, log_probs=log_probs, steps=int(steps))


def right_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int32 (input_ids, segment_ids, positions) [B, S] of encoder inputs, padding (segment 0) after each."""
    s = max(len(x) for x in prompts)
    ids = np.full((len(prompts), s), pad_id, np.int32)
    seg = np.zeros((len(prompts), s), np.int32)
    for b, prompt in enumerate(prompts):
        ids[b, : len(prompt)] = prompt
        seg[b, : len(prompt)] = 1
    return ids, seg, np.broadcast_to(np.arange(s, dtype=np.int32), ids.shape).copy()


_STATICS = ("config", "num_beams", "max_new_tokens", "pad_id")


@functools.partial(jax.jit, static_argnames=_STATICS)
def _gpt_beams(params, ids_BP, segment_ids_BP, positions_BP, lengths_B, eos_id, alpha, *, config, **statics):
    """`search` over a GPTDecoder: prefill B rows, repeat the cache per beam, feed one token per step."""
    b, p = ids_BP.shape
    k = statics["num_beams"]
    decoder = GPTDecoder(dataclasses.replace(config, decode=True))
    cache = gen.init_cache(config, b, p + statics["max_new_tokens"])
    logits_BPV, cache = decoder.apply(
        {"params": params, "cache": cache},
        ids_BP,
        segment_ids_BP,
        positions_BP,
        deterministic=True,
        prefill=True,
        mutable=["cache"],
    )
    lengths_R = jnp.repeat(lengths_B, k)

    def step(cache, token_R, i):
        """New token i at position length + i -> logits of token i + 1."""
        logits_R1V, cache = decoder.apply(
            {"params": params, "cache": cache},
            token_R[:, None],
            jnp.ones_like(token_R)[:, None],
            (lengths_R + i)[:, None],
            deterministic=True,
            prefill=False,
            mutable=["cache"],
        )
        return logits_R1V[:, 0], cache["cache"]

    return search(
        step, repeat_rows(cache["cache"], k), logits_BPV[:, -1], eos_id=eos_id, alpha=alpha, **statics
    )


def init_t5_cache(config: TransformerConfig, batch: int, length: int, encoder_length: int) -> Any:
    """The zero decoder cache of T5ForConditionalGeneration(config) for `batch` rows of `length` slots."""
    model = T5ForConditionalGeneration(dataclasses.replace(config, decode=True, remat=False))
    z_BT = jnp.zeros((batch, length), jnp.int32)
    z_BS = jnp.zeros((batch, encoder_length), jnp.int32)
    encoded_BSD = jnp.zeros((batch, encoder_length, config.hidden_size), config.dtype)
    init = lambda: model.init(
        jax.random.key(0), encoded_BSD, z_BS, z_BT, z_BT, z_BT, deterministic=True, method="decode"
    )
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(init)["cache"])


@functools.partial(jax.jit, static_argnames=_STATICS)
def _t5_beams(params, ids_BS, segment_ids_BS, positions_BS, start_id, eos_id, alpha, *, config, **statics):
    """`search` over T5: encode once, feed the start token to B rows, then repeat all per beam."""
    b, s = ids_BS.shape
    k = statics["num_beams"]
    model = T5ForConditionalGeneration(dataclasses.replace(config, decode=True))
    encoded_BSD = model.apply(
        {"params": params}, ids_BS, segment_ids_BS, positions_BS, deterministic=True, method="encode"
    )

    def decode(cache, encoded, encoder_segment_ids, token_R, i):
        """Decoder token i (0: the start token) at position i -> logits of the next one."""
        logits_R1V, cache = model.apply(
            {"params": params, "cache": cache},
            encoded,
            encoder_segment_ids,
            token_R[:, None],
            jnp.ones_like(token_R)[:, None],
            jnp.full_like(token_R, i)[:, None],
            deterministic=True,
            method="decode",
            mutable=["cache"],
        )
        return logits_R1V[:, 0], cache["cache"]

    cache = init_t5_cache(config, b, statics["max_new_tokens"], s)
    first_logits_BV, cache = decode(cache, encoded_BSD, segment_ids_BS, jnp.full((b,), start_id), 0)
    encoded_RSD, segment_ids_RS = repeat_rows((encoded_BSD, segment_ids_BS), k)
    step = lambda cache, token_R, i: decode(cache, encoded_RSD, segment_ids_RS, token_R, i + 1)
    return search(step, repeat_rows(cache, k), first_logits_BV, eos_id=eos_id, alpha=alpha, **statics)


# T5's sentinels <extra_id_j> (id vocab_size - 1 - j, beyond the tokenizer's pieces) may appear in
# an input to ask for the span it replaces, and appear in a span-corruption model's output.
_SENTINEL = re.compile(r"<extra_id_(\d+)>")


def encode_t5_input(tok, text: str, vocab_size: int) -> list[int]:
    """Encoder input ids: `text`, each <extra_id_j> as its sentinel id, then eos ([SEP], as in training)."""
    ids = []
    for i, part in enumerate(_SENTINEL.split(text)):
        if i % 2:
            ids.append(vocab_size - 1 - int(part))
        elif part.strip():
            ids += tok.encode(part.strip())
    return ids + [tok.sep_id]


def decode_t5_output(tok, ids: Sequence[int], vocab_size: int) -> str:
    """Text of decoder output ids, sentinels (ids past the tokenizer's pieces) written <extra_id_j>."""
    words, run = [], []
    for i in ids:
        if i < tok.vocab_size:
            run.append(i)
            continue
        words += [tok.decode(run), f"<extra_id_{vocab_size - 1 - i}>"]
        run = []
    return " ".join(w for w in [*words, tok.decode(run)] if w)


def beam_search_texts(
    lm,
    prompts: Sequence[str],
    *,
    num_beams: int,
    alpha: float,
    max_new_tokens: int,
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """The best beam for each text prompt with `lm` (a flaxlm.lm.LM, arch gpt or t5), batch_size at a time.

    Returns one record per prompt, with generate_texts's fields (prompt, sample = 0, completion,
    text, new_tokens, stopped) plus score (log_prob / length_penalty) and log_prob (nats). For
    T5 the prompt is the encoder's input and text is the decoder's output alone.
    """
    if lm.arch not in ("gpt", "t5"):
        raise GenerationError(
            f"{lm.source} is an encoder (arch {lm.arch}); generation needs a decoder (arch gpt) or t5"
        )
    tok, vocab, eos = lm.tokenizer, lm.config.vocab_size, gen.eos_id_of(lm.tokenizer)
    if lm.arch == "t5":
        encoded = [encode_t5_input(tok, p, vocab) for p in prompts]
    else:
        encoded = tok.encode_batch(list(prompts))
    for i, ids in enumerate(encoded):
        if not ids:
            raise GenerationError(f"prompt {i + 1} ({prompts[i]!r}) encodes to no tokens; give some text")
    records = []
    for start in range(0, len(encoded), batch_size):
        rows = encoded[start : start + batch_size]
        out = beam_search(
            lm.model,
            lm.params,
            rows,
            num_beams=num_beams,
            max_new_tokens=max_new_tokens,
            eos_id=eos,
            pad_id=tok.pad_id,
            alpha=alpha,
        )
        for r, ids in enumerate(rows):
            new = out.tokens[r, 0, : out.lengths[r, 0]].tolist()
            if lm.arch == "t5":
                completion = text = decode_t5_output(tok, new, vocab)
            else:
                prompt_text, text = tok.decode(ids), tok.decode(ids + new)
                completion = text[len(prompt_text) :] if text.startswith(prompt_text) else tok.decode(new)
            records.append(
                {
                    "prompt": prompts[start + r],
                    "sample": 0,
                    "completion": completion,
                    "text": text,
                    "new_tokens": len(new),
                    "stopped": "eos" if eos is not None and new and new[-1] == eos else "max_new_tokens",
                    "score": float(out.scores[r, 0]),
                    "log_prob": float(out.log_probs[r, 0]),
                }
            )
    return records
