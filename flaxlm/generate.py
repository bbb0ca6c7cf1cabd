"""Text generation with a GPT decoder: feed the prompt once, then one new token per step, under jit.

`generate` works on token ids: a batch of prompts (lists of ids, any
lengths) -> up to `max_new_tokens` new ids per prompt. It is one
`jax.jit`-compiled function: a prefill call writes the prompt's keys and
values into the decoder's cache (`config.decode`, see flaxlm.models.gpt;
a prompt-tuned model's soft prompt goes into the first cache slots), then
a `lax.while_loop` samples a token, feeds it back and stops once every
row has produced `eos_id` or `max_new_tokens` tokens.

Prompts of different lengths share one batch by **left-padding**: every row
ends at the same slot, so each step writes all rows' new keys at the same
cache slot. Padding has segment id 0 (never attended to) and positions are
counted from each row's first real token, so a left-padded row computes what
the same prompt alone would (up to float rounding).

`use_cache=False` recomputes the whole sequence at every step (same tokens,
same logits up to float rounding); it exists to check and to time the cache.

End of sequence: flaxlm's causal-LM data (`builders.pack_causal`) ends
every document with [SEP], so [SEP] is the EOS of our sentencepiece and
WordPiece tokenizers; GPT-2's is <|endoftext|> (`eos_id_of`).
"""

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxlm.errors import FlaxlmError
from flaxlm.models.gpt import GPTDecoder
from flaxlm.models.layers import TransformerConfig


class GenerationError(FlaxlmError):
    """A generation request that cannot run (prompt too long, bad sampling setting, encoder model)."""


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How each new token is chosen from the next-token logits.

    temperature: 0 picks the most likely token (greedy); otherwise sample from
      softmax(logits / temperature).
    top_k: sample among the k most likely tokens only (0: no limit).
    top_p: nucleus sampling: among the fewest most likely tokens whose
      probabilities (after temperature and top-k) add up to at least top_p (1.0: no limit).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        if not self.temperature >= 0.0:
            raise GenerationError(f"temperature={self.temperature} must be >= 0 (0 = greedy)")
        if self.top_k < 0:
            raise GenerationError(f"top_k={self.top_k} must be >= 0 (0 = no top-k limit)")
        if not 0.0 < self.top_p <= 1.0:
            raise GenerationError(f"top_p={self.top_p} must be in (0, 1] (1 = no nucleus limit)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def filter_logits(logits_BV: jax.Array, sampling: Sampling) -> jax.Array:
    """float32 logits / temperature, with -inf outside the top-k and the top-p nucleus.

    Ties at the cut-off are kept (a few more than k tokens when logits tie).
    """
    logits_BV = logits_BV.astype(jnp.float32) / sampling.temperature
    if sampling.top_k and sampling.top_k < logits_BV.shape[-1]:
        kth_B1 = jax.lax.top_k(logits_BV, sampling.top_k)[0][:, -1:]
        logits_BV = jnp.where(logits_BV < kth_B1, -jnp.inf, logits_BV)
    if sampling.top_p < 1.0:
        sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
        probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
        mass_before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
        # The most likely token always stays (its mass before is 0 < top_p).
        cutoff_B1 = jnp.min(jnp.where(mass_before_BV < sampling.top_p, sorted_BV, jnp.inf), -1, keepdims=True)
        logits_BV = jnp.where(logits_BV < cutoff_B1, -jnp.inf, logits_BV)
    return logits_BV


def sample_next(logits_BV: jax.Array, rngs_B: jax.Array, sampling: Sampling) -> jax.Array:
    """One token id per row (int32 [B]) from next-token logits_BV, row b drawn with key rngs_B[b]."""
    if sampling.greedy:
        return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
    draw = lambda rng, logits_V: jax.random.categorical(rng, logits_V)
    return jax.vmap(draw)(rngs_B, filter_logits(logits_BV, sampling)).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class Generation:
    """What `generate` returns (numpy arrays; B rows in the prompts' order, N = max_new_tokens).

    tokens: int32 [B, N] new ids; a row that stopped at eos_id holds the eos and then pad_id.
    lengths: int32 [B] new tokens per row, eos included.
    steps: how many tokens the loop ran for (< N when every row stopped early).
    logits: float32 [B, N, V] the logits each new token was chosen from (return_logits only).
    """

    tokens: np.ndarray
    lengths: np.ndarray
    steps: int
    logits: np.ndarray | None = None


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int32 (input_ids, segment_ids, positions), each [B, P] with P the longest prompt.

    Row b is prompt b right-aligned: padding first (segment 0, position 0),
    then the prompt (segment 1, positions 0..len-1).
    """
    p = max(len(x) for x in prompts)
    ids = np.full((len(prompts), p), pad_id, np.int32)
    seg = np.zeros((len(prompts), p), np.int32)
    pos = np.zeros((len(prompts), p), np.int32)
    for b, prompt in enumerate(prompts):
        n = len(prompt)
        ids[b, p - n :] = prompt
        seg[b, p - n :] = 1
        pos[b, p - n :] = np.arange(n)
    return ids, seg, pos


def init_cache(config: TransformerConfig, batch: int, length: int) -> Any:
    """The zero decoding cache of GPTDecoder(config) for `batch` rows of `length` slots (+ the soft
    prompt's config.prompt_length, which the prefill writes first)."""
    decoder = GPTDecoder(dataclasses.replace(config, decode=True, remat=False))
    z = jnp.zeros((batch, length), jnp.int32)
    shapes = jax.eval_shape(lambda: decoder.init(jax.random.key(0), z, z, z, deterministic=True))["cache"]
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def check_prompt_lengths(config: TransformerConfig, prompts: Sequence[Sequence[int]], max_new_tokens: int):
    """GenerationError unless every prompt has tokens and the longest plus max_new_tokens fits max_len."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise GenerationError(
            "every prompt needs at least one token (an empty prompt has nothing to continue)"
        )
    if max_new_tokens < 1:
        raise GenerationError(f"max_new_tokens={max_new_tokens} must be >= 1")
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > config.max_len:
        raise GenerationError(
            f"a prompt of {longest} tokens plus max_new_tokens={max_new_tokens} exceeds the model's "
            f"max_len={config.max_len} positions; "
            + (
                f"lower max_new_tokens to {config.max_len - longest}"
                if longest < config.max_len
                else f"shorten the prompt to fewer than {config.max_len} tokens"
            )
        )


def generate(
    model: GPTDecoder,
    params,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos_id: int | None,
    pad_id: int = 0,
    sampling: Sampling = Sampling(temperature=0.0),
    seed: int = 0,
    use_cache: bool = True,
    return_logits: bool = False,
    first_row: int = 0,
) -> Generation:
    """Continues each prompt (a list of token ids) by up to `max_new_tokens` tokens.

    A row stops after it produces `eos_id` (None: never). Row b's tokens are
    drawn with random keys derived from (seed, first_row + b, step) alone, so
    the same seed gives the same tokens, and the prompt in row b gets the same
    samples whatever the other rows hold (up to float rounding of a
    differently padded batch); `first_row` lets a long list of prompts be cut
    into batches that sample as one batch would. Compiles once per (batch
    size, longest prompt, max_new_tokens, sampling, use_cache) combination.
    """
    if not isinstance(model, GPTDecoder):
        raise GenerationError(f"generation needs a GPT decoder, not {type(model).__name__}")
    config = model.config
    check_prompt_lengths(config, prompts, max_new_tokens)
    ids, seg, pos = left_pad(prompts, pad_id)
    lengths = np.array([len(p) for p in prompts], np.int32)
    tokens, steps, logits = _generate(
        params,
        ids,
        seg,
        pos,
        lengths,
        jax.random.key(seed),
        np.int32(-1 if eos_id is None else eos_id),
        np.int32(first_row),
        config=dataclasses.replace(config, decode=False, remat=False),
        max_new_tokens=max_new_tokens,
        pad_id=int(pad_id),
        sampling=sampling,
        use_cache=use_cache,
        return_logits=return_logits,
    )
    tokens = np.asarray(tokens)
    is_eos = tokens == eos_id if eos_id is not None else np.zeros(tokens.shape, bool)
    new_lengths = np.where(is_eos.any(1), is_eos.argmax(1) + 1, max_new_tokens).astype(np.int32)
    return Generation(
        tokens=tokens,
        lengths=new_lengths,
        steps=int(steps),
        logits=None if logits is None else np.asarray(logits),
    )


@functools.partial(
    jax.jit,
    static_argnames=(
        "config",
        "max_new_tokens",
        "pad_id",
        "sampling",
        "use_cache",
        "return_logits",
    ),
)
def _generate(
    params,
    ids_BP,
    segment_ids_BP,
    positions_BP,
    lengths_B,
    rng,
    eos_id,
    first_row,
    *,
    config: TransformerConfig,
    max_new_tokens: int,
    pad_id: int,
    sampling: Sampling,
    use_cache: bool,
    return_logits: bool,
):
    """(tokens_BN, steps, logits_BNV or None); see `generate`."""
    b, p = ids_BP.shape
    n = max_new_tokens
    variables = {"params": params}

    if use_cache:
        decoder = GPTDecoder(dataclasses.replace(config, decode=True))
        logits_BPV, cache = decoder.apply(
            {**variables, "cache": init_cache(config, b, p + n)},
            ids_BP,
            segment_ids_BP,
            positions_BP,
            deterministic=True,
            prefill=True,
            mutable=["cache"],
        )
        state = cache["cache"]
        first_logits_BV = logits_BPV[:, -1]

        def feed(cache, token_B, i):
            """Token i - 1 at position length + i - 1 -> logits of token i."""
            one_B1 = jnp.ones((b, 1), jnp.int32)
            logits_B1V, cache = decoder.apply(
                {**variables, "cache": cache},
                token_B[:, None],
                one_B1,
                (lengths_B + i - 1)[:, None],
                deterministic=True,
                prefill=False,
                mutable=["cache"],
            )
            return logits_B1V[:, 0], cache["cache"]

    else:  # the whole sequence, every step
        decoder = GPTDecoder(config)
        ids_BS = jnp.concatenate([ids_BP, jnp.full((b, n), pad_id, jnp.int32)], axis=1)
        seg_BS = jnp.concatenate([segment_ids_BP, jnp.zeros((b, n), jnp.int32)], axis=1)
        pos_BS = jnp.concatenate([positions_BP, lengths_B[:, None] + jnp.arange(n)[None, :]], axis=1)
        forward = lambda ids, seg: decoder.apply(variables, ids, seg, pos_BS, deterministic=True)
        state = (ids_BS, seg_BS)
        first_logits_BV = forward(ids_BS, seg_BS)[:, p - 1]

        def feed(state, token_B, i):
            ids_BS, seg_BS = state
            slot = p + i - 1
            ids_BS = jax.lax.dynamic_update_slice(ids_BS, token_B[:, None], (0, slot))
            seg_BS = jax.lax.dynamic_update_slice(seg_BS, jnp.ones((b, 1), jnp.int32), (0, slot))
            logits_BSV = forward(ids_BS, seg_BS)
            return jax.lax.dynamic_index_in_dim(logits_BSV, slot, axis=1, keepdims=False), (ids_BS, seg_BS)

    vocab = first_logits_BV.shape[-1]

    # Row b's i-th token is drawn with key (seed, b, i): its samples do not depend on what the other
    # rows hold.
    row_rngs_B = jax.vmap(lambda r: jax.random.fold_in(rng, r))(first_row + jnp.arange(b))

    def choose(i, logits_BV, done_B, tokens_BN, logits_BNV):
        step_rngs_B = jax.vmap(lambda r: jax.random.fold_in(r, i))(row_rngs_B)
        token_B = sample_next(logits_BV, step_rngs_B, sampling)
        token_B = jnp.where(done_B, pad_id, token_B)
        tokens_BN = jax.lax.dynamic_update_slice(tokens_BN, token_B[:, None], (0, i))
        if return_logits:
            update = logits_BV.astype(jnp.float32)[:, None]
            logits_BNV = jax.lax.dynamic_update_slice(logits_BNV, update, (0, i, 0))
        return token_B, done_B | (token_B == eos_id), tokens_BN, logits_BNV

    tokens_BN = jnp.full((b, n), pad_id, jnp.int32)
    logits_BNV = jnp.zeros((b, n, vocab), jnp.float32) if return_logits else jnp.zeros((), jnp.float32)
    token_B, done_B, tokens_BN, logits_BNV = choose(
        0, first_logits_BV, jnp.zeros((b,), jnp.bool_), tokens_BN, logits_BNV
    )

    def cond(carry):
        i, _, _, done_B, _, _ = carry
        return (i < n) & ~jnp.all(done_B)

    def body(carry):
        i, state, token_B, done_B, tokens_BN, logits_BNV = carry
        logits_BV, state = feed(state, token_B, i)
        token_B, done_B, tokens_BN, logits_BNV = choose(i, logits_BV, done_B, tokens_BN, logits_BNV)
        return i + 1, state, token_B, done_B, tokens_BN, logits_BNV

    carry = (jnp.ones((), jnp.int32), state, token_B, done_B, tokens_BN, logits_BNV)
    steps, _, _, _, tokens_BN, logits_BNV = jax.lax.while_loop(cond, body, carry)
    return tokens_BN, steps, logits_BNV if return_logits else None


def eos_id_of(tokenizer) -> int | None:
    """The id that ends a document: `tokenizer.eos_id` when it has one (GPT-2: <|endoftext|>),
    else [SEP], which `builders.pack_causal` puts after every document of our causal-LM data."""
    for name in ("eos_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return getattr(tokenizer, "sep_id", None)


def generate_texts(
    lm,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    sampling: Sampling,
    seed: int = 0,
    num_samples: int = 1,
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """Continues each text prompt `num_samples` times with `lm` (a flaxlm.lm.LM decoder).

    Rows (prompt x sample) run `batch_size` at a time; the samples do not depend on batch_size.

    Returns one record per (prompt, sample), prompt-major: prompt, sample,
    completion (the new text), text (prompt and completion decoded together, so
    word spacing at the seam is the tokenizer's), new_tokens, and stopped:
    "eos" or "max_new_tokens".

    A T5 (arch t5) decodes greedily only: flaxlm.beam_search with one beam and no length penalty
    (the same tokens as greedy decoding); its prompts are the encoder's inputs.
    """
    if lm.arch == "t5":
        if not sampling.greedy or num_samples != 1:
            raise GenerationError(
                f"{lm.source} is a T5 (arch t5): it decodes greedily (temperature 0, one sample) "
                "or by beam search (num_beams), not by sampling"
            )
        from flaxlm import beam_search

        return beam_search.beam_search_texts(
            lm, prompts, num_beams=1, alpha=0.0, max_new_tokens=max_new_tokens, batch_size=batch_size
        )
    if lm.arch != "gpt":
        raise GenerationError(
            f"{lm.source} is an encoder (arch {lm.arch}); generation needs a decoder (arch gpt) or t5"
        )
    if num_samples < 1:
        raise GenerationError(f"num_samples={num_samples} must be >= 1")
    tok = lm.tokenizer
    encoded = tok.encode_batch(list(prompts))
    for i, ids in enumerate(encoded):
        if not ids:
            raise GenerationError(f"prompt {i + 1} ({prompts[i]!r}) encodes to no tokens; give some text")
    rows = [ids for ids in encoded for _ in range(num_samples)]
    eos = eos_id_of(tok)
    new_ids = []
    for start in range(0, len(rows), batch_size):
        out = generate(
            lm.model,
            lm.params,
            rows[start : start + batch_size],
            max_new_tokens=max_new_tokens,
            eos_id=eos,
            pad_id=tok.pad_id,
            sampling=sampling,
            seed=seed,
            first_row=start,
        )
        new_ids += [t[:n].tolist() for t, n in zip(out.tokens, out.lengths)]
    records = []
    for r, (ids, new) in enumerate(zip(rows, new_ids)):
        prompt_text = tok.decode(ids)
        text = tok.decode(ids + new)
        completion = text[len(prompt_text) :] if text.startswith(prompt_text) else tok.decode(new)
        records.append(
            {
                "prompt": prompts[r // num_samples],
                "sample": r % num_samples,
                "completion": completion,
                "text": text,
                "new_tokens": len(new),
                "stopped": "eos" if eos is not None and new and new[-1] == eos else "max_new_tokens",
            }
        )
    return records
