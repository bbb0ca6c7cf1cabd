"""One split's tokenized documents on disk: written a document at a time, read a document at a time.

Preparation's first pass (flaxlm.data.prepare) streams the corpus through cleaning, the held-out
split, sentence splitting and the tokenizer into one store per split; the example builders then
read the documents back from it (`TokenStore` is a `builders.CleanDocuments`: a lazy sequence
whose items are the lists of sentence arrays they take from a list), so memory holds a document
and the per-document index, never the corpus's tokens.

A store is a folder of raw native-endian numpy files:

* ``tokens.int32``           [num_tokens]        every sentence's token ids, end to end
* ``sentence_starts.int64``  [num_sentences + 1] token offset of each sentence, then num_tokens
* ``document_starts.int64``  [num_documents + 1] sentence offset of each document, then num_sentences
* ``document_sources.int32`` [num_documents]     index into ``sources.json`` (the documents' sources)

Documents are read with ``os.preadv`` into fresh arrays rather than through a memory map: a map's
touched pages count in the process's resident set until the kernel drops them, so reading a
large store through one would grow the peak RSS with the corpus.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from flaxlm.data import builders

TOKENS, SENTENCE_STARTS, DOCUMENT_STARTS = "tokens.int32", "sentence_starts.int64", "document_starts.int64"
DOCUMENT_SOURCES, SOURCES = "document_sources.int32", "sources.json"


class TokenStoreWriter:
    """Appends documents (lists of non-empty int32 sentence arrays) to a new store in ``folder``."""

    def __init__(self, folder: str):
        os.makedirs(folder, exist_ok=True)
        self.folder = folder
        self._files = {
            name: open(os.path.join(folder, name), "wb")  # noqa: SIM115 (closed by close())
            for name in (TOKENS, SENTENCE_STARTS, DOCUMENT_STARTS, DOCUMENT_SOURCES)
        }
        self._sources: dict[str, int] = {}
        self.num_tokens = self.num_sentences = self.num_documents = 0
        self._files[SENTENCE_STARTS].write(np.zeros(1, np.int64).tobytes())
        self._files[DOCUMENT_STARTS].write(np.zeros(1, np.int64).tobytes())

    def add(self, sentences: Sequence[np.ndarray], source: str) -> None:
        if not sentences or not all(len(x) for x in sentences):
            raise ValueError("a stored document has at least one sentence and no empty one")
        lengths = np.fromiter((len(x) for x in sentences), np.int64, len(sentences))
        self._files[TOKENS].write(np.concatenate(sentences).astype(np.int32, copy=False).tobytes())
        self._files[SENTENCE_STARTS].write((self.num_tokens + np.cumsum(lengths)).tobytes())
        self.num_tokens += int(lengths.sum())
        self.num_sentences += len(sentences)
        self.num_documents += 1
        self._files[DOCUMENT_STARTS].write(np.int64(self.num_sentences).tobytes())
        code = self._sources.setdefault(source, len(self._sources))
        self._files[DOCUMENT_SOURCES].write(np.int32(code).tobytes())

    def close(self) -> TokenStore:
        for f in self._files.values():
            f.close()
        with open(os.path.join(self.folder, SOURCES), "w", encoding="utf-8") as f:
            json.dump(list(self._sources), f)
        return TokenStore(self.folder)


def _read(fd: int, dtype, start: int, stop: int) -> np.ndarray:
    """Items [start, stop) of a raw file of ``dtype`` items, read into a new (writeable) array."""
    out = np.empty(stop - start, dtype)
    want = out.nbytes
    got = os.preadv(fd, [memoryview(out).cast("B")], start * out.itemsize) if want else 0
    if got != want:
        raise OSError(f"short read of a token store file: {got} of {want} bytes")
    return out


class TokenStore(builders.CleanDocuments):
    """A written store, read lazily: ``store[i]`` is document i's list of int32 sentence arrays.

    In memory: the per-document index (two int64 and one int32 per document) and the source names.
    """

    def __init__(self, folder: str):
        self.folder = folder
        self._document_starts = np.fromfile(os.path.join(folder, DOCUMENT_STARTS), np.int64)
        codes = np.fromfile(os.path.join(folder, DOCUMENT_SOURCES), np.int32)
        with open(os.path.join(folder, SOURCES), encoding="utf-8") as f:
            names = json.load(f)
        self.sources = Sources(names, codes)
        self._tokens = os.open(os.path.join(folder, TOKENS), os.O_RDONLY)
        self._sentence_starts = os.open(os.path.join(folder, SENTENCE_STARTS), os.O_RDONLY)

    def __len__(self) -> int:
        return len(self._document_starts) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"document {i} of a store of {n}")
        i %= n
        first, last = int(self._document_starts[i]), int(self._document_starts[i + 1])
        starts = _read(self._sentence_starts, np.int64, first, last + 1)  # [sentences + 1] token offsets
        tokens = _read(self._tokens, np.int32, int(starts[0]), int(starts[-1]))
        offsets = (starts - starts[0]).tolist()  # slicing by Python ints: np.split took ~4x as long
        return [tokens[a:b] for a, b in zip(offsets[:-1], offsets[1:])]

    def sentence_counts(self) -> np.ndarray:
        return np.diff(self._document_starts)

    @property
    def num_tokens(self) -> int:
        return os.fstat(self._tokens).st_size // 4

    def close(self) -> None:
        for fd in (self._tokens, self._sentence_starts):
            os.close(fd)
        self._tokens = self._sentence_starts = -1

    def __del__(self):
        if getattr(self, "_tokens", -1) >= 0:
            self.close()


class StoreView(builders.CleanDocuments):
    """Documents ``indices`` (default: all) of several stores end to end, as one lazy sequence.

    A split prepared in parallel is written as one store per corpus unit; a chunk of a split (the
    documents one task builds examples from) is a `select` of it. ``sources`` and
    `sentence_counts` follow the view's documents.
    """

    def __init__(self, stores: Sequence[TokenStore], indices: np.ndarray | None = None):
        self.stores = list(stores)
        self._offsets = np.cumsum([0, *(len(s) for s in self.stores)])
        self._indices = np.arange(self._offsets[-1]) if indices is None else np.asarray(indices, np.int64)
        names: dict[str, int] = {}
        codes = [np.zeros(0, np.int32)]
        for store in self.stores:
            remap = np.array([names.setdefault(n, len(names)) for n in store.sources.names], np.int32)
            codes.append(remap[store.sources.codes])
        self.sources = Sources(list(names), np.concatenate(codes)[self._indices])
        counts = [np.zeros(0, np.int64), *(s.sentence_counts() for s in self.stores)]
        self._counts = np.concatenate(counts)[self._indices]

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        j = int(self._indices[i])
        k = int(np.searchsorted(self._offsets, j, side="right")) - 1
        return self.stores[k][j - int(self._offsets[k])]

    def select(self, indices) -> StoreView:
        """The view of this one's documents ``indices`` (in that order)."""
        return StoreView(self.stores, self._indices[np.asarray(indices, np.int64)])

    def sentence_counts(self) -> np.ndarray:
        return self._counts

    def close(self) -> None:
        for store in self.stores:
            store.close()


class Sources(Sequence):
    """The documents' source names (``sources[i]``: document i's), stored as one int32 code each."""

    def __init__(self, names: list[str], codes: np.ndarray):
        self.names, self.codes = names, codes

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.names[c] for c in self.codes[i]]
        return self.names[self.codes[i]]
