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


def _mark_flags_parsed(*_) -> None:
    """grain's worker processes read absl flags (e.g. --grain_enable_multiprocess_worker_profiling),
    which fail unparsed ("Trying to access flag ... before flags were parsed") when the program did
    not parse them through absl (a script, a test, a notebook); take their defaults then."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def train_iterator(
    data: prepare_lib.PreparedData,
    *,
    global_batch: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    prefetch: int = 4,
    num_threads: int = 2,
    num_workers: int = 0,
):
    """Endless iterator of host-local training batches (dicts of numpy arrays).

    `prefetch` batches are prepared ahead by `num_threads` background threads
    (0: in the caller's thread). `num_workers` > 0 reads in that many grain
    worker processes instead (each with `num_threads` threads), worker w making
    batches w, w + num_workers, ... of the same stream, taken in turn: the
    batches are the same whatever the number of workers or threads. Returns a
    grain DatasetIterator: `get_state()`/`set_state()` and the Orbax handler in
    grain.checkpoint save and restore its position.
    """
    _check_batch(len(data.train), global_batch, process_count, "train")
    ds = grain.MapDataset.source(data.train).seed(seed).shuffle().repeat(None)
    # Masks are drawn before the host split, so they do not depend on the number of hosts.
    ds = with_dynamic_masks(ds, data)
    ds = ds.batch(global_batch // process_count, drop_remainder=True)[process_index::process_count]
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    it = ds.to_iter_dataset(options)
    if num_workers:
        _mark_flags_parsed()
        # The workers slice the batched MapDataset above (one-to-one steps only), so the order is kept.
        it = it.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=num_workers), worker_init_fn=_mark_flags_parsed
        )
        return _WorkerBatches(iter(it), num_workers)
    return iter(it)


class _WorkerBatches(grain.DatasetIterator):
    """The batches of grain's worker processes, with the position saved as the one-process reader saves
    it, {"next_index": batches taken}: a checkpoint resumes with any number of workers (or none)."""

    def __init__(self, parent: grain.DatasetIterator, num_workers: int):
        super().__init__(parent)
        self._workers = num_workers

    def __next__(self):
        return next(self._parent)

    def get_state(self) -> dict:
        # grain interleaves the workers' slices in turn; each counts the batches taken from it.
        state = self._parent.get_state()
        return {"next_index": sum(s["next_index"] for s in state["iterators_in_use_states"])}

    def set_state(self, state: dict) -> None:
        taken, n = state["next_index"], self._workers
        inner = dict(self._parent.get_state())
        inner.update(
            next_index_in_cycle=taken % n,
            next_index_in_datasets=n,
            iterators_in_use_indices=list(range(n)),
            # worker w made batches w, w + n, ...: those below `taken` were taken
            iterators_in_use_states=[{"next_index": (taken - w + n - 1) // n} for w in range(n)],
            exhausted=[0] * n,
            future_states={},
        )
        self._parent.set_state(inner)


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
