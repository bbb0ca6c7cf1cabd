"""Streams prepared examples into host-local batches with grain.

The global example stream is a seeded shuffle of the prepared records,
reshuffled every epoch, with dynamic masking drawn from (seed, global
index) — so it does not depend on how many hosts read it. Host `i` of `n`
takes the i-th of n equal slices of every global batch (the stream cut
into host-sized chunks, then every n-th chunk): the hosts read disjoint
examples, and the n host-local batches of step k, in host order, are
exactly the 1-host global batch k, row for row. (On the device mesh host
i's rows are rows i*B/n..(i+1)*B/n-1, so per-row randomness such as
dropout, and hence the loss, is that of the 1-host run.) The iterator is
a grain `DatasetIterator`, whose state (the number of batches taken) is
saved in the Orbax checkpoint, so a resumed run continues with the very
next batch, whatever the number of hosts.
"""

import functools
import logging
from typing import Any, Iterator

import grain
import numpy as np

from flaxlm.errors import ConfigError

from flaxlm.data import masking
from flaxlm.data import prepare as prepare_lib

log = logging.getLogger(__name__)


def _mask_example(example, rng, *, cfg, special, vocab_size, word_starts):
    ws = None if word_starts is None else word_starts[example["input_ids"]]
    return masking.apply_masking(example, rng, cfg, special, vocab_size, word_starts=ws)


def with_dynamic_masks(ds: grain.MapDataset, data: prepare_lib.PreparedData) -> grain.MapDataset:
    """Masks each example as it is read (rng from the seed and the element's global index), unless
    masks were fixed at preparation (static masking) or the objective has none (causal LM, T5's
    span corruption, whose noise is drawn at preparation)."""
    s = data.settings
    if s.builder in prepare_lib.PACKED_BUILDERS or s.static_masking:
        return ds
    tok = data.tokenizer
    word_starts = prepare_lib.word_start_table(tok) if prepare_lib.uses_words(s) else None
    return ds.random_map(
        functools.partial(
            _mask_example,
            cfg=prepare_lib.masking_config(s),
            special=prepare_lib.special_ids(tok),
            vocab_size=tok.vocab_size,
            word_starts=word_starts,
        )
    )


def _check_batch(num_examples: int, global_batch: int, process_count: int, split: str):
    if global_batch % process_count:
        raise ConfigError(
            f"global batch size {global_batch} is not divisible by the "
            f"{process_count} processes; change config.train.batch_size"
        )
    if num_examples < global_batch:
        raise ConfigError(
            f"the {split} split has {num_examples} examples, fewer than one batch of "
            f"{global_batch}; use a larger corpus or a smaller config.train.batch_size"
        )


def train_iterator(
    data: prepare_lib.PreparedData,
    *,
    global_batch: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    prefetch: int = 4,
    num_threads: int = 2,
):
    """Endless iterator of host-local training batches (dicts of numpy arrays).

    `prefetch` batches are prepared ahead by `num_threads` background threads
    (0: in the caller's thread). Returns a grain DatasetIterator:
    `get_state()`/`set_state()` and the Orbax handler in grain.checkpoint
    save and restore its position.
    """
    _check_batch(len(data.train), global_batch, process_count, "train")
    ds = grain.MapDataset.source(data.train).seed(seed).shuffle().repeat(None)
    # Masks are drawn before the host split, so they do not depend on the number of hosts.
    ds = with_dynamic_masks(ds, data)
    ds = ds.batch(global_batch // process_count, drop_remainder=True)[process_index::process_count]
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    return iter(ds.to_iter_dataset(options))


def eval_batches(
    data: prepare_lib.PreparedData,
    *,
    global_batch: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    max_batches: int = 0,
) -> list[Any]:
    """The validation split as a fixed list of host-local batches (same masks every evaluation).

    Examples beyond the last full batch are left out and counted in the log.
    """
    n = len(data.validation)
    _check_batch(n, global_batch, process_count, "validation")
    num_batches = n // global_batch
    if max_batches:
        num_batches = min(num_batches, max_batches)
    elif n % global_batch:
        log.info(
            "evaluation uses %d of %d validation examples (%d full batches of %d)",
            num_batches * global_batch,
            n,
            num_batches,
            global_batch,
        )
    ds = with_dynamic_masks(grain.MapDataset.source(data.validation).seed(seed), data)
    ds = ds[: num_batches * global_batch].batch(global_batch // process_count, drop_remainder=True)
    ds = ds[process_index::process_count]
    return [ds[i] for i in range(len(ds))]


def batch_tokens(batch) -> int:
    """Real (non-padding) tokens in a batch, for tokens/s."""
    return int(np.count_nonzero(batch["segment_ids"]))


def take(it: Iterator, n: int) -> list:
    return [next(it) for _ in range(n)]
