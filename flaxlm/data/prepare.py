"""Prepares a corpus once into ArrayRecord shards through a tfds builder.

corpus → documents → train/validation split by document → sentences →
token ids → examples of the configured builder (segment pairs, full
sentences, causal-LM rows, ...) → padded records written by
`tfds.core.GeneratorBasedBuilder.download_and_prepare(file_format="array_record")`
and read back with `as_data_source()` (random access, no TensorFlow).

Memory is bounded, not proportional to the corpus: a first pass streams the documents
(`corpus.iter_corpus`) through the split, the sentence splitter and the tokenizer into one
on-disk `token_store.TokenStore` per split, in tfds's ``incomplete.*`` folder (deleted when the
split files are written); the builders then read the documents from the stores, one at a time,
and the examples go to tfds in the order they always did, so the records are the same bytes.
tfds sorts the examples by a hash of their keys in memory up to `SHUFFLE_BUFFER_BYTES` and in
1000 bucket files on disk beyond it (the same order either way); what still grows with the
corpus is the per-document index of the stores and the list of ids kept for the duplicate check.

Examples are built per chunk of a split's documents (`num_chunks`, `build_chunk`), each with its
own seeded draws and keys, so the work divides without changing a record. On Apache Beam
(`data.prepare_workers` > 0 or `data.beam_options`), pass 1 is one task per corpus unit (each
unit's own stores, `beam_tokenize_to_stores`) and pass 2 one task per chunk, and tfds's Beam
writer orders the examples by the same key hash: the records of any number of workers are the
in-process ones, in the same order.

The builder config name is a hash of everything that decides the records
(corpus fingerprint, tokenizer fingerprint, builder settings), so changing
the sources or a setting prepares a new dataset and an unchanged setup
reuses the cached one. tfds writes into an `incomplete.*` folder and renames
it when done, so an interrupted preparation is never read.
"""

import collections
import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import shlex
import shutil
import tempfile
import types
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from flaxlm import files
from flaxlm.data import builders
from flaxlm.data import corpus as corpus_lib
from flaxlm.data import masking
from flaxlm.data import token_store
from flaxlm.data import tokenizer as tokenizer_lib
from flaxlm.errors import DataError

# Bump when the record layout or the preparation code changes meaning.
FORMAT_VERSION = 2  # 2: examples built in chunks of documents (num_chunks), keyed copy-chunk-index
# Documents per chunk (about): the unit of parallel example building, and NSP's pool of negatives.
CHUNK_DOCUMENTS = 256
# Serialized examples tfds keeps in memory before it sorts the rest in bucket files on disk (its own
# default is 1 GB, which a corpus of a few hundred MB of text reaches: memory would grow with it).
SHUFFLE_BUFFER_BYTES = 64 << 20

log = logging.getLogger(__name__)


def default_data_dir() -> str:
    return os.environ.get("FLAXLM_DATA_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "flaxlm")


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """Everything that decides the prepared records (and so the cache key)."""

    builder: str
    seq_len: int
    max_predictions: int
    pair_labels: bool  # NSP/SOP labels wanted (objective has a pair head)
    static_masking: bool
    mask_prob: float
    whole_word: bool
    span: bool
    dupe_factor: int
    short_seq_prob: float
    validation_fraction: float
    seed: int
    nsp_negatives: str = "any"
    ngram: bool = False
    max_ngram: int = 3
    sbo: bool = False  # SpanBERT's span-boundary targets wanted (objective mlm_sbo)
    # span_corruption, iid_denoising (T5): sentinels are the last num_sentinels ids of model_vocab_size
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0
    num_sentinels: int = 0
    model_vocab_size: int = 0


def settings_from_config(
    data_cfg, pair_labels: bool, sbo: bool = False, model_vocab_size: int = 0
) -> DataSettings:
    spans = data_cfg.builder in builders.SEQ2SEQ_BUILDERS
    return DataSettings(
        noise_density=data_cfg.noise_density,
        mean_noise_span_length=data_cfg.mean_noise_span_length,
        num_sentinels=data_cfg.num_sentinels if spans else 0,
        model_vocab_size=model_vocab_size if spans else 0,
        builder=data_cfg.builder,
        seq_len=data_cfg.seq_len,
        max_predictions=data_cfg.max_predictions,
        pair_labels=pair_labels,
        static_masking=data_cfg.masking == "static",
        mask_prob=data_cfg.mask_prob,
        whole_word=data_cfg.whole_word,
        span=data_cfg.span,
        dupe_factor=data_cfg.dupe_factor,
        short_seq_prob=data_cfg.short_seq_prob,
        validation_fraction=data_cfg.validation_fraction,
        seed=data_cfg.seed,
        nsp_negatives=data_cfg.nsp_negatives,
        ngram=data_cfg.ngram,
        max_ngram=data_cfg.max_ngram,
        sbo=sbo,
    )


# Builders whose rows are packed and complete as prepared: no padding step, no MLM masks.
PACKED_BUILDERS = ("causal", "prefix_lm", *builders.SEQ2SEQ_BUILDERS)


def masking_config(s: DataSettings) -> masking.MaskingConfig:
    return masking.MaskingConfig(
        mask_prob=s.mask_prob,
        max_predictions=s.max_predictions,
        whole_word=s.whole_word,
        span=s.span,
        ngram=s.ngram,
        max_ngram=s.max_ngram,
        sbo=s.sbo,
    )


def special_ids(tok) -> builders.SpecialIds:
    return builders.SpecialIds(
        pad=tok.pad_id, cls=tok.cls_id, sep=tok.sep_id, mask=tok.mask_id, unk=tok.unk_id
    )


def uses_words(s: DataSettings) -> bool:
    """Whether the masking picks whole words (whole-word, span or n-gram masking), so needs word starts."""
    return s.whole_word or s.span or s.ngram


def word_start_table(tok) -> np.ndarray:
    """[vocab] bool: does token id i begin a word (for whole-word / span / n-gram masking)."""
    return np.asarray(tok.word_start_mask(np.arange(tok.vocab_size)), dtype=bool)


def _tokenize_stats() -> dict[str, int]:
    return {"documents": 0, "sentences": 0, "tokens": 0, "empty_sentences": 0, "empty_documents": 0}


def tokenize_document(doc, tok, stats: dict[str, int]) -> list[np.ndarray]:
    """One document → its non-empty sentences' int32 token-id arrays ([] if none), counted in ``stats``."""
    ids = [np.asarray(x, np.int32) for x in tok.encode_batch(corpus_lib.document_sentences(doc))]
    kept = [x for x in ids if x.size]
    stats["empty_sentences"] += len(ids) - len(kept)
    if not kept:
        stats["empty_documents"] += 1
        return kept
    stats["documents"] += 1
    stats["sentences"] += len(kept)
    stats["tokens"] += sum(x.size for x in kept)
    return kept


def tokenize_documents(docs, tok) -> tuple[list[list[np.ndarray]], list[str], dict[str, int]]:
    """Documents → lists of sentence token-id arrays, the source of each, and counts.

    A document that tokenizes to nothing (e.g. only zero-width spaces) is dropped and counted, not
    hidden; the sources stay aligned with the documents kept.
    """
    out, sources, stats = [], [], _tokenize_stats()
    for doc in docs:
        kept = tokenize_document(doc, tok, stats)
        if kept:
            out.append(kept)
            sources.append(doc.source)
    return out, sources, stats


@dataclasses.dataclass
class SplitStores:
    """Pass 1's result: each split's token store, its tokenization counts and its documents' sources."""

    stores: dict[str, token_store.TokenStore]
    tokenized: dict[str, dict[str, int]]
    sources: dict[str, collections.Counter]  # per split: documents (as read, before tokenizing) per source
    documents: int
    fraction_for_two: float  # corpus.validation_fraction_for(all documents, 2)


SPLITS = ("train", "validation")


def tokenize_to_stores(documents_fn, tok, validation_fraction: float, folder: str) -> SplitStores:
    """Pass 1: documents → held-out split → tokens, into ``folder``/train and ``folder``/validation.

    ``documents_fn()`` streams the corpus; it is called a second time only in the rare case that
    hashing leaves a split empty (see `corpus.HeldOutSplit`). Each store holds exactly
    `tokenize_documents` of its side of `corpus.split_train_validation`, in corpus order.
    """
    held_out = corpus_lib.HeldOutSplit(validation_fraction)
    split = _write_stores(documents_fn(), held_out, tok, folder)
    moved = held_out.moved()
    if moved is None:
        return split
    for store in split.stores.values():
        store.close()
    return _write_stores(documents_fn(), corpus_lib.HeldOutSplit(validation_fraction, moved), tok, folder)


def _write_stores(documents, held_out: corpus_lib.HeldOutSplit, tok, folder: str) -> SplitStores:
    writers = {split: token_store.TokenStoreWriter(os.path.join(folder, split)) for split in SPLITS}
    tokenized = {split: _tokenize_stats() for split in SPLITS}
    sources = {split: collections.Counter() for split in SPLITS}
    for doc in documents:
        split = "validation" if held_out.is_validation(doc) else "train"
        sources[split][doc.source] += 1
        sentences = tokenize_document(doc, tok, tokenized[split])
        if sentences:
            writers[split].add(sentences, doc.source)
    stores = {split: writer.close() for split, writer in writers.items()}
    return SplitStores(stores, tokenized, sources, held_out.documents, held_out.fraction_for_two())


def beam_tokenize_to_stores(
    corpus_spec, tok, validation_fraction: float, folder: str, options
) -> SplitStores:
    """`tokenize_to_stores` on Apache Beam: one task per corpus unit (`corpus.spec_units`: an embedded
    corpus, a matched file, a tfds spec), each writing its own train and validation stores under
    ``folder``/unitNNNNNN; a split is then their `token_store.StoreView`, whose documents are the
    in-process path's in the same order. Duplicate ids across units are found by Beam (a count
    per id). The folder must be one every worker can write and read (a local runner's disk, or a
    shared mount on a cluster).
    """
    units = corpus_lib.spec_units(corpus_spec)
    tallies = _beam_tokenize(units, tok, validation_fraction, None, folder, options)
    documents = sum(t["tally"]["documents"] for t in tallies)
    if not documents:
        raise corpus_lib.CorpusError(f"{corpus_spec}: no non-empty documents; check the corpus files")
    held_out = corpus_lib.HeldOutSplit.merged(validation_fraction, [t["tally"] for t in tallies])
    moved = held_out.moved()
    if moved is not None:  # hashing left a side empty: a second pass puts that document across
        tallies = _beam_tokenize(units, tok, validation_fraction, moved, folder, options)
    stores, tokenized, sources = {}, {}, {}
    for split in SPLITS:
        stores[split] = token_store.StoreView(
            [token_store.TokenStore(os.path.join(t["folder"], split)) for t in tallies]
        )
        tokenized[split] = _tokenize_stats()
        sources[split] = collections.Counter()
        for t in tallies:
            for name, count in t["tokenized"][split].items():
                tokenized[split][name] += count
            sources[split].update(t["sources"][split])
    return SplitStores(stores, tokenized, sources, documents, held_out.fraction_for_two())


def _beam_tokenize(units, tok, validation_fraction, moved, folder, options) -> list[dict]:
    """One Beam pipeline of pass 1; returns each unit's summary (`_tokenize_unit`), in unit order."""
    import apache_beam as beam

    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    duplicates_path = os.path.join(folder, "duplicate_ids.json")
    with beam.Pipeline(options=options) as pipeline:
        ids = (
            pipeline
            | "Units" >> beam.Create(list(enumerate(units)))
            | "Spread" >> beam.Reshuffle()
            | "Tokenize" >> beam.FlatMap(_tokenize_unit, tok, validation_fraction, moved, folder)
        )
        _ = (
            ids
            | "CountIds" >> beam.combiners.Count.PerElement()
            | "Duplicates" >> beam.Filter(lambda id_count: id_count[1] > 1)
            | "Ids" >> beam.Keys()
            | "First3" >> beam.combiners.Top.Smallest(3)
            | "Write" >> beam.Map(_write_json, duplicates_path)
        )
    with open(duplicates_path, encoding="utf-8") as f:
        duplicates = json.load(f)
    if duplicates:
        raise corpus_lib.CorpusError(
            f"duplicate document ids {duplicates}; ids must be unique "
            "(give jsonl lines distinct 'id's or avoid listing a file twice)"
        )
    out = []
    for index in range(len(units)):
        with open(os.path.join(folder, _unit_folder(index), "summary.json"), encoding="utf-8") as f:
            out.append(json.load(f))
    return out


def _unit_folder(index: int) -> str:
    return f"unit{index:06d}"


def _write_json(value, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f)


def _tokenize_unit(index_unit, tok, validation_fraction, moved, folder):
    """Beam task of pass 1: one unit's documents into its own stores, a summary.json beside them;
    yields the unit's document ids (for the duplicate check)."""
    index, unit = index_unit
    out = os.path.join(folder, _unit_folder(index))
    shutil.rmtree(out, ignore_errors=True)  # a retried task starts over
    ids = []

    def documents():
        for doc in corpus_lib.unit_documents(unit):
            ids.append(doc.id)
            yield doc

    held_out = corpus_lib.HeldOutSplit(validation_fraction, moved)
    split = _write_stores(documents(), held_out, tok, out)
    for store in split.stores.values():
        store.close()
    summary = {
        "folder": out,
        "tally": held_out.tally(),
        "tokenized": split.tokenized,
        "sources": {name: dict(counts) for name, counts in split.sources.items()},
    }
    _write_json(summary, os.path.join(out, "summary.json"))
    return ids


_OPEN_VIEWS: dict[tuple[str, ...], token_store.StoreView] = {}


def _chunk_examples(task, settings: DataSettings, tok, folders: list[str], split: str, tally_dir: str):
    """Beam task of pass 2: the examples of one (copy, chunk, number of chunks) of a split; once they
    are all handed on, their count goes to ``tally_dir`` (`check_beam_counts` holds tfds's written
    splits against these counts)."""
    dupe, chunk, k = task
    view = _OPEN_VIEWS.get(tuple(folders))
    if view is None:  # a worker opens a split's stores once
        if len(_OPEN_VIEWS) >= 4:  # another preparation's: dropped, closed when no task reads them
            _OPEN_VIEWS.clear()
        view = _OPEN_VIEWS[tuple(folders)] = token_store.StoreView(
            [token_store.TokenStore(f) for f in folders]
        )
    docs, sources = chunk_documents(view, view.sources, chunk, k)
    built = 0
    for key_example in build_chunk(settings, tok, docs, sources, split, dupe, chunk, builders.BuildStats()):
        built += 1
        yield key_example
    path = os.path.join(tally_dir, f"{dupe}-{chunk}.json")  # a retried task writes the same file
    _write_json(built, path + ".tmp")
    os.replace(path + ".tmp", path)


def check_beam_counts(tally_dirs: dict[str, str], written: dict[str, int]) -> None:
    """Raises DataError unless tfds wrote every example that pass 2's Beam tasks built, split by
    split: Beam's local multi-process runner was seen to drop part of a split between the build and
    tfds's shard assignment (2 workers, 10 copies of the default corpus), without an error. The
    dataset is then left incomplete (tfds deletes its incomplete.* folder), never read as prepared."""
    for split, folder in tally_dirs.items():
        built = 0
        for name in os.listdir(folder):
            if name.endswith(".json"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    built += json.load(f)
        if written.get(split) != built:
            raise DataError(
                f"Apache Beam wrote {written.get(split)} of the {built} examples built for the {split} "
                "split (lost inside its runner); nothing was kept. Prepare again, or in process with "
                "--config.data.prepare_workers=0 --config.data.beam_options=''"
            )


@contextlib.contextmanager
def _shuffle_buffer(max_bytes: int):
    """tfds's in-memory shuffle buffer capped at ``max_bytes`` while in the block.

    Beyond it tfds sorts in bucket files, through tf.io.gfile: without TensorFlow installed, its
    shuffle module gets `_local_gfile` instead (the sorted order, and so the records, are the same).
    """
    from tensorflow_datasets.core import shuffle

    saved = shuffle.MAX_MEM_BUFFER_SIZE, shuffle.tf
    shuffle.MAX_MEM_BUFFER_SIZE = max_bytes
    if importlib.util.find_spec("tensorflow") is None:
        shuffle.tf = _local_gfile()
    try:
        yield
    finally:
        shuffle.MAX_MEM_BUFFER_SIZE, shuffle.tf = saved


def _local_gfile() -> types.SimpleNamespace:
    """What tfds's bucket files use of TensorFlow (tf.io.gfile and one error type), for local paths."""

    class ResourceExhaustedError(Exception):  # never raised: an OSError says "too many open files"
        message = ""

    gfile = types.SimpleNamespace(GFile=open, exists=os.path.exists, remove=os.remove)
    return types.SimpleNamespace(
        io=types.SimpleNamespace(gfile=gfile),
        errors=types.SimpleNamespace(ResourceExhaustedError=ResourceExhaustedError),
    )


class FlaxlmPretraining(tfds.core.GeneratorBasedBuilder):
    """Pretraining examples of one (corpus, tokenizer, settings) triple."""

    VERSION = tfds.core.Version("1.0.0")

    def __init__(
        self,
        *,
        corpus_spec,
        tok,
        settings: DataSettings,
        fingerprint: str,
        tokenizer_info=None,
        beam_options=None,
        **kwargs,
    ):
        self._corpus_spec = corpus_spec
        self._beam_options = beam_options  # None: in this process; else Beam's PipelineOptions
        self._tok = tok
        self._tokenizer_info = tokenizer_info or {}
        self._settings = settings
        self._fingerprint = fingerprint
        super().__init__(config=tfds.core.BuilderConfig(name=fingerprint), **kwargs)

    def _info(self):
        s = self._settings
        T, P = s.seq_len, s.max_predictions
        if s.builder in ("causal", "prefix_lm"):
            fields = ("input_ids", "segment_ids", "positions") + (
                ("prefix_mask",) if s.builder == "prefix_lm" else ()
            )
            features = {k: tfds.features.Tensor(shape=(T,), dtype=np.int32) for k in fields}
        elif s.builder in builders.SEQ2SEQ_BUILDERS:
            targets_length = builders.targets_length(s.builder, T, s.noise_density, s.mean_noise_span_length)
            features = {
                k: tfds.features.Tensor(shape=(T,), dtype=np.int32)
                for k in ("input_ids", "segment_ids", "positions")
            }
            for k in ("targets", "decoder_input_ids", "decoder_segment_ids", "decoder_positions"):
                features[k] = tfds.features.Tensor(shape=(targets_length,), dtype=np.int32)
        else:
            features = {
                k: tfds.features.Tensor(shape=(T,), dtype=np.int32)
                for k in ("input_ids", "token_type_ids", "segment_ids", "positions")
            }
            features["pair_label"] = tfds.features.Scalar(dtype=np.int32)
            if s.static_masking:
                features["mlm_positions"] = tfds.features.Tensor(shape=(P,), dtype=np.int32)
                features["mlm_targets"] = tfds.features.Tensor(shape=(P,), dtype=np.int32)
                features["mlm_weights"] = tfds.features.Tensor(shape=(P,), dtype=np.float32)
                if s.sbo:
                    for k in ("sbo_left", "sbo_right", "sbo_offset"):
                        features[k] = tfds.features.Tensor(shape=(P,), dtype=np.int32)
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"flaxlm pretraining examples: corpus={self._corpus_spec!r} {s}",
            features=tfds.features.FeaturesDict(features),
            metadata=tfds.core.MetadataDict(
                settings=dataclasses.asdict(s),
                corpus=str(self._corpus_spec),
                tokenizer={"fingerprint": self._tok.fingerprint, **self._tokenizer_info},
            ),
        )

    def _download_and_prepare(self, dl_manager, download_config):
        # self.data_dir is tfds's incomplete.* folder here: the token stores live and die in it
        # (in a local temporary folder when the data dir is remote, e.g. gs://, which os cannot write).
        local = "://" not in os.fspath(self.data_dir)
        self._token_dir = os.path.join(self.data_dir, "token_stores.tmp") if local else tempfile.mkdtemp()
        self._tally_dirs = {}  # split: the folder of its Beam tasks' example counts
        try:
            with _shuffle_buffer(SHUFFLE_BUFFER_BYTES):
                super()._download_and_prepare(dl_manager, download_config)
            if self._tally_dirs:
                written = {name: self.info.splits[name].num_examples for name in self._tally_dirs}
                check_beam_counts(self._tally_dirs, written)
        finally:
            shutil.rmtree(self._token_dir, ignore_errors=True)

    def _split_generators(self, dl_manager):
        del dl_manager
        if self._beam_options is None:
            split = tokenize_to_stores(
                lambda: corpus_lib.iter_corpus(self._corpus_spec),
                self._tok,
                self._settings.validation_fraction,
                self._token_dir,
            )
        else:
            split = beam_tokenize_to_stores(
                self._corpus_spec,
                self._tok,
                self._settings.validation_fraction,
                self._token_dir,
                self._beam_options,
            )
        check_pair_documents(self._settings, split.sources, split.documents, split.fraction_for_two)
        if self._beam_options is None:
            return {
                name: self._generate_examples(
                    split.stores[name], split.stores[name].sources, split.tokenized[name], name
                )
                for name in SPLITS
            }
        return {name: self._beam_examples(split.stores[name], split.tokenized[name], name) for name in SPLITS}

    def _beam_examples(self, view: token_store.StoreView, stats, split: str):
        """The examples of one split as a Beam transform: one task per (copy, chunk), built where it runs."""
        import apache_beam as beam

        k = num_chunks(self._settings, view.sources)
        log.info("preparing %s split with Beam: %d chunks, tokenized %s", split, k, json.dumps(stats))
        tasks = [(dupe, chunk, k) for dupe in range(copies(self._settings, split)) for chunk in range(k)]
        folders = [store.folder for store in view.stores]
        tally_dir = self._tally_dirs[split] = os.path.join(self._token_dir, f"built_{split}")
        os.makedirs(tally_dir, exist_ok=True)
        return (
            beam.Create(tasks)
            | "Spread" >> beam.Reshuffle()
            | "Build" >> beam.FlatMap(_chunk_examples, self._settings, self._tok, folders, split, tally_dir)
        )

    def _generate_examples(self, tok_docs, sources, stats, split):
        """The examples of one split from its tokenized documents (a list or a store), in process."""
        build_stats = builders.BuildStats()
        k = num_chunks(self._settings, sources)
        examples = 0
        for dupe in range(copies(self._settings, split)):
            for chunk in range(k):
                docs, chunk_sources = chunk_documents(tok_docs, sources, chunk, k)
                for key, ex in build_chunk(
                    self._settings, self._tok, docs, chunk_sources, split, dupe, chunk, build_stats
                ):
                    examples += 1
                    yield key, ex
        # Tokenization and example-building counts side by side (both have e.g. "tokens").
        stats = {"examples": examples, "chunks": k, "tokenized": stats, "built": build_stats.as_dict()}
        log.info("prepared %s split: %s", split, json.dumps(stats))


def copies(s: DataSettings, split: str) -> int:
    """Copies of a split's examples: data.dupe_factor of the training split (each with its own
    segmentation, pairs and static masks: more training data); the validation split is evaluated as
    it is."""
    return s.dupe_factor if split == "train" else 1


def num_chunks(s: DataSettings, sources: Sequence[str]) -> int:
    """How many chunks a split of documents with these ``sources`` is built in.

    Chunk c of k holds documents c, c + k, c + 2k, ...: each samples the whole split (its sources
    in their proportions), and examples never cross chunks (NSP draws NotNext within its chunk, as
    BERT's create_pretraining_data draws within the input files it is run on). k is about
    len / CHUNK_DOCUMENTS, fewer where a chunk would lack what NSP's negatives need (2 documents; 2
    of each source for nsp_negatives="same_source", 2 sources for "other_source"). The chunks
    depend on the documents alone, never on how many workers build them.
    """
    if isinstance(sources, token_store.Sources):
        codes = sources.codes
    else:
        codes = np.unique(np.asarray([str(x) for x in sources]), return_inverse=True)[1].reshape(-1)
    n = len(codes)
    k = max(1, -(-n // CHUNK_DOCUMENTS))
    if not (s.pair_labels and s.builder in ("segment_pair", "sentence_pair")):
        return k
    k = max(1, min(k, n // 2))
    while k > 1 and not _nsp_chunks_ok(codes, k, s.nsp_negatives):
        k -= 1
    return k


def _nsp_chunks_ok(codes: np.ndarray, k: int, negatives: str) -> bool:
    for c in range(k):
        counts = np.bincount(codes[c::k])
        counts = counts[counts > 0]
        if counts.sum() < 2 or (negatives == "same_source" and counts.min() < 2):
            return False
        if negatives == "other_source" and len(counts) < 2:
            return False
    return True


def chunk_documents(docs, sources, chunk: int, k: int):
    """Chunk ``chunk`` of ``k`` of a split: its documents and their sources (see `num_chunks`)."""
    if isinstance(docs, token_store.TokenStore):
        docs = token_store.StoreView([docs])
    if isinstance(docs, token_store.StoreView):
        view = docs.select(np.arange(chunk, len(docs), k))
        return view, view.sources
    return list(docs[chunk::k]), list(sources[chunk::k])


def build_chunk(s: DataSettings, tok, tok_docs, sources, split: str, dupe: int, chunk: int, build_stats):
    """The examples of one chunk of one copy of a split, keyed "copy-chunk-index".

    The random draws (segment lengths, pairs, noise, static masks) come from a generator seeded with
    (data.seed, split, copy, chunk), so a chunk's examples are the same whoever builds them and in
    whatever order. tfds writes the examples ordered by a hash of their keys.
    """
    special = special_ids(tok)
    word_starts = word_start_table(tok) if uses_words(s) else None
    split_id = 0 if split == "train" else 1
    rng = np.random.default_rng([s.seed, split_id, dupe, chunk])
    if s.builder == "causal":
        examples = builders.pack_causal(
            tok_docs, s.seq_len, eos_id=tok.sep_id, pad_id=tok.pad_id, stats=build_stats
        )
    elif s.builder == "prefix_lm":
        examples = builders.prefix_lm(
            tok_docs, s.seq_len, rng, eos_id=tok.sep_id, pad_id=tok.pad_id, stats=build_stats
        )
    elif s.builder == "iid_denoising":
        # T5's mask token is its single sentinel, the model's last id (<extra_id_0>).
        examples = builders.iid_denoising(
            tok_docs,
            s.seq_len,
            rng,
            eos_id=tok.sep_id,
            mask_id=int(builders.sentinel_ids(s.model_vocab_size, 1)[0]),
            random_ids=np.setdiff1d(np.arange(tok.vocab_size), special.all_ids()),
            noise_density=s.noise_density,
            stats=build_stats,
        )
    elif s.builder == "span_corruption":
        examples = builders.span_corruption(
            tok_docs,
            s.seq_len,
            rng,
            eos_id=tok.sep_id,
            sentinels=builders.sentinel_ids(s.model_vocab_size, s.num_sentinels),
            noise_density=s.noise_density,
            mean_noise_span_length=s.mean_noise_span_length,
            stats=build_stats,
        )
    else:
        options = {"short_seq_prob": s.short_seq_prob} if s.builder == "segment_pair" else {}
        if s.builder in ("segment_pair", "sentence_pair"):
            options["nsp"] = s.pair_labels
            options.update(negatives=s.nsp_negatives, sources=sources)
        examples = builders.build_examples(
            s.builder, tok_docs, s.seq_len, rng, special, stats=build_stats, **options
        )
    for i, ex in enumerate(examples):
        if s.builder not in PACKED_BUILDERS:
            ex = builders.pad_encoder_example(ex, s.seq_len, tok.pad_id)
            if s.static_masking:
                ex = masking.apply_masking(
                    ex,
                    rng,
                    masking_config(s),
                    special,
                    tok.vocab_size,
                    word_starts=None if word_starts is None else word_starts[ex["input_ids"]],
                )
        yield f"{dupe}-{chunk}-{i}", ex


def check_pair_documents(
    s: DataSettings, sources: dict[str, collections.Counter], documents: int, fraction_for_two: float
) -> None:
    """NSP draws NotNext segments from a second document, so each split needs two; a one-line
    DataError names the split and the fix (the builders' own check cannot name the split).

    sources: per split ("train", "validation"), its documents per source; documents: in the corpus;
    fraction_for_two: ``corpus.validation_fraction_for(all documents, 2)``.
    """
    if not (s.pair_labels and s.builder in ("segment_pair", "sentence_pair")):
        return
    train, validation = (sum(sources[split].values()) for split in SPLITS)
    if train >= 2 and validation >= 2:
        _check_sources(s, sources["train"], "training")
        _check_sources(s, sources["validation"], "validation")
        return
    fraction = fraction_for_two
    if validation < 2 and documents >= 4 and fraction < 1:  # holding out 2 leaves 2 to train on
        raise DataError(
            f"the validation split has {validation} of the corpus's {documents} documents, but "
            f"{s.builder} with NSP needs 2 in each split (NotNext segments come from another document); "
            f"set --config.data.validation_fraction={fraction} (it holds out 2), or add documents"
        )
    raise DataError(
        f"the corpus has {documents} documents ({train} train, {validation} validation) but "
        f"{s.builder} with NSP needs 2 in each split (NotNext segments come from another document); "
        "add documents (a long .txt file is one document: split it into several files)"
    )


def _check_sources(s: DataSettings, counts: collections.Counter, split: str) -> None:
    """nsp_negatives other than "any" needs 2 documents of each source (same) or 2 sources (other)."""
    if s.nsp_negatives == "same_source" and min(counts.values()) < 2:
        source = min(counts, key=counts.get)
        raise DataError(
            f"the {split} split has 1 document of source {source!r}, but data.nsp_negatives='same_source' "
            "needs 2 of each (NotNext comes from another document of the same source); "
            "set --config.data.nsp_negatives=any or add documents to that source"
        )
    if s.nsp_negatives == "other_source" and len(counts) < 2:
        raise DataError(
            f"the {split} split has one source ({next(iter(counts))!r}), but data.nsp_negatives="
            "'other_source' draws NotNext from another; list several corpora (e.g. --config.data.corpus="
            "default) or set --config.data.nsp_negatives=any"
        )


class RecordSource:
    """One prepared split, random access: ``len()`` and ``[i]`` → dict of numpy arrays.

    tfds's own source pickles its dataset builder, which cannot be rebuilt from what it pickles
    (our builder needs the corpus, tokenizer and settings); this one carries only the ArrayRecord
    reader and the features that decode its records, so grain's worker processes can have a copy.
    """

    def __init__(self, tfds_source):
        self._records = tfds_source.data_source  # array_record's source: pickles as its file list
        self._features = tfds_source.dataset_info.features

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i):
        return self._features.deserialize_example_np(self._records[i])

    def __iter__(self):
        return (self[i] for i in range(len(self)))


@dataclasses.dataclass
class PreparedData:
    train: Any  # random-access source: len() and [i] → dict of numpy arrays
    validation: Any
    tokenizer: Any
    settings: DataSettings
    path: str


def get_tokenizer(data_cfg, vocab_size: int, data_dir: str):
    """The configured tokenizer file, or a sentencepiece model trained (once, cached) on the corpus.

    A trained one sees a seeded sample of the training sentences (`tokenizer_training`).
    """
    if data_cfg.tokenizer:
        return tokenizer_lib.load_tokenizer(data_cfg.tokenizer)

    def train_sentences():
        # A first pass over the ids alone settles the split (a second one is needed only when
        # hashing leaves a side empty, but the sample cannot take back what it has seen).
        held_out = corpus_lib.held_out_split(
            corpus_lib.iter_corpus(data_cfg.corpus), data_cfg.validation_fraction
        )
        for doc in corpus_lib.iter_corpus(data_cfg.corpus):
            if not held_out.is_validation(doc):
                yield from corpus_lib.document_sentences(doc)

    training = tokenizer_training(data_cfg)
    return tokenizer_lib.get_or_train_tokenizer(
        train_sentences,
        os.path.join(data_dir, "tokenizers"),
        vocab_size,
        data_cfg.tokenizer_type,
        tokenizer_cache_key(data_cfg.corpus, data_cfg.validation_fraction, **training),
        max_sentences=training["sample_sentences"],
        seed=training["seed"],
    )


def tokenizer_training(data_cfg) -> dict[str, int]:
    """What a sentencepiece model trained for this data config is trained on, beyond the corpus and
    split: a sample of `sample_sentences` training sentences (0: all) drawn with `seed`.

    The seed is data.tokenizer_seed, not data.seed: the seeds of a study vary the data's order,
    pairs and masks, and all of its runs keep one vocabulary, so their losses count the same pieces.
    """
    return {"sample_sentences": data_cfg.tokenizer_sample_sentences, "seed": data_cfg.tokenizer_seed}


def tokenizer_cache_key(
    corpus_spec, validation_fraction: float, sample_sentences: int | None = None, seed: int = 0
) -> str:
    """16 hex chars naming the sentencepiece model trained on this corpus's train split.

    The split is part of it: the model is trained on the train documents only, so another
    validation_fraction is another model (the same one would have seen now-held-out text). So are
    the sample size and its seed (a corpus with more sentences than the sample gives another model
    for each). sample_sentences=None: the key of the models trained before the sample was a setting
    (a fixed sample of 2M, another sampler), which a config saved by such a run still names.
    """
    key = f"{corpus_lib.corpus_fingerprint(corpus_spec)}:validation_fraction={float(validation_fraction)!r}"
    if sample_sentences is not None:
        key += f":sample_sentences={int(sample_sentences)}:seed={int(seed)}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def tokenizer_vocab_size(data_cfg, model_vocab_size: int) -> int:
    """Pieces of the sentencepiece model to train: the model's vocabulary, less T5's sentinels
    (span_corruption, iid_denoising), which are its last ids (<extra_id_0> = vocab_size - 1, as HF
    T5's tokenizer has them)."""
    if data_cfg.builder in builders.SEQ2SEQ_BUILDERS:
        return model_vocab_size - data_cfg.num_sentinels
    return model_vocab_size


def _remove_stale_incomplete(dataset_dir: str) -> None:
    """Deletes the `incomplete.*` folders a killed preparation left in `dataset_dir` (tfds writes there
    and renames only when done, so they were never read). Called under the dataset's lock: no live run
    is writing one."""
    if not os.path.isdir(dataset_dir):
        return
    for name in sorted(os.listdir(dataset_dir)):
        if name.startswith("incomplete."):
            log.info("removing %s, left by an interrupted preparation", os.path.join(dataset_dir, name))
            shutil.rmtree(os.path.join(dataset_dir, name), ignore_errors=True)


def beam_options(data_cfg):
    """Apache Beam's pipeline options for preparing with this data config, or None to prepare in this
    process: data.beam_options (Beam's own flags, e.g. a cluster runner's) if set, else Beam's local
    runner with data.prepare_workers processes if > 0. The records are the same either way."""
    if not data_cfg.beam_options and not data_cfg.prepare_workers:
        return None
    setting = (
        f"data.beam_options={data_cfg.beam_options!r}"
        if data_cfg.beam_options
        else f"data.prepare_workers={data_cfg.prepare_workers}"
    )
    try:
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError:
        raise DataError(
            f"{setting} prepares with Apache Beam, which is not installed; pip install 'flaxlm[beam]' "
            "or set --config.data.prepare_workers=0 --config.data.beam_options=''"
        ) from None
    if data_cfg.beam_options:
        return checked_beam_options(data_cfg.beam_options)
    return PipelineOptions(
        runner="DirectRunner",
        direct_num_workers=data_cfg.prepare_workers,
        direct_running_mode="multi_processing",
    )


def checked_beam_options(flags: str):
    """Beam's PipelineOptions from data.beam_options, or one-line DataError if Beam would not run them:
    flags that do not split as a shell would, flags no Beam option knows (Beam itself only warns and
    drops them) or a runner Beam cannot create (not a runner, or its extra not installed)."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.runners.runner import create_runner

    setting = f"data.beam_options={flags!r}"
    try:
        options = PipelineOptions(shlex.split(flags))
    except ValueError as e:
        raise DataError(f"{setting} does not split into flags ({e}); quote it as a shell would") from None
    known = options.get_all_options()
    unknown = sorted(set(options.get_all_options(retain_unknown_options=True)) - set(known))
    if unknown:
        raise DataError(
            f"{setting}: Apache Beam has no option {', '.join('--' + u for u in unknown)} (Beam would "
            "drop it and run without it); check the spelling against apache_beam.options.pipeline_options"
        )
    runner = options.view_as(StandardOptions).runner
    if runner:
        try:
            create_runner(runner)
        except (ValueError, ImportError, AttributeError) as e:
            raise DataError(
                f"{setting}: --runner={runner} is not a runner Beam can start here ({e})"
            ) from None
    return options


def prepare(data_cfg, *, pair_labels: bool, vocab_size: int, sbo: bool = False) -> PreparedData:
    """Prepares (or reuses) the ArrayRecord shards for this data config; returns their sources.

    pair_labels: whether examples carry NSP/SOP labels (the objective has a pair head).
    sbo: whether masks carry SpanBERT's span-boundary targets (the objective is mlm_sbo).
    vocab_size: the model's; the sentencepiece model trained when `data_cfg.tokenizer` is empty has
    `tokenizer_vocab_size` pieces.
    """
    data_dir = data_cfg.data_dir or default_data_dir()
    try:
        os.makedirs(data_dir, exist_ok=True)
    except OSError as e:
        raise DataError(
            f"cannot create the data dir {data_dir} ({e.strerror}); set config.data.data_dir or "
            "$FLAXLM_DATA_DIR to a writable folder"
        ) from None
    options = beam_options(data_cfg)

    def full_disk(words: str) -> DataError:
        # Nothing half-written is left to be read as complete: tfds deletes its incomplete.* folder on
        # the way out (and the next run one that a kill left), the tokenizer is written whole or not.
        return DataError(
            f"cannot prepare data in {data_dir}: {words}; free space there, or set --config.data.data_dir "
            "(or $FLAXLM_DATA_DIR) to a folder on a disk with room, then rerun"
        )

    with files.full_disk_raises(full_disk):
        tok = get_tokenizer(data_cfg, tokenizer_vocab_size(data_cfg, vocab_size), data_dir)
    settings = settings_from_config(data_cfg, pair_labels, sbo, vocab_size)
    corpus_fingerprint = corpus_lib.corpus_fingerprint(data_cfg.corpus)
    key = {
        "format": FORMAT_VERSION,
        "corpus": corpus_fingerprint,
        "tokenizer": tok.fingerprint,
        "settings": dataclasses.asdict(settings),
    }
    if settings.nsp_negatives == "any":  # BERT's draw, as before the option existed: keep those caches
        del key["settings"]["nsp_negatives"]
    if not settings.ngram:  # n-gram masking off: the datasets of before the option existed
        del key["settings"]["ngram"], key["settings"]["max_ngram"]
    if not settings.sbo:  # no span-boundary targets: the datasets of before the option existed
        del key["settings"]["sbo"]
    if settings.builder not in builders.SEQ2SEQ_BUILDERS:  # T5's noise settings: the datasets of before them
        for k in ("noise_density", "mean_noise_span_length", "num_sentinels", "model_vocab_size"):
            del key["settings"][k]
    if settings.dupe_factor > 1:
        # dupe_factor once copied the validation split too: those datasets must not be reused
        # (a key of its own, rather than a FORMAT_VERSION bump, keeps the dupe_factor=1 caches).
        key["copies"] = "train only"
    key = json.dumps(key, sort_keys=True)
    fingerprint = f"{settings.builder}_{settings.seq_len}_{hashlib.sha1(key.encode()).hexdigest()[:12]}"
    # Two runs that start together on one data dir (a study's seeds, a launcher's processes) would both
    # write this dataset and the second rename would fail: the second waits, then reuses the first's
    # (the builder is made inside the lock: it reads what is prepared when it is made).
    with files.full_disk_raises(full_disk), files.exclusive(os.path.join(data_dir, f".{fingerprint}.lock")):
        builder = FlaxlmPretraining(
            corpus_spec=data_cfg.corpus,
            tok=tok,
            settings=settings,
            fingerprint=fingerprint,
            tokenizer_info=(
                {"file": data_cfg.tokenizer}
                if data_cfg.tokenizer
                else {
                    "trained_on": {
                        "validation_fraction": data_cfg.validation_fraction,
                        **tokenizer_training(data_cfg),
                    }
                }
            ),
            data_dir=data_dir,
            file_format="array_record",
            beam_options=options,
        )
        _remove_stale_incomplete(os.path.dirname(str(builder.data_dir)))
        reused = builder.is_prepared()
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(beam_options=options))
        # Records read from files that changed after the key was made would be reused under a key
        # that does not describe them (a file changing while it is read is the corpus reader's error).
        if not reused and corpus_lib.corpus_fingerprint(data_cfg.corpus) != corpus_fingerprint:
            builder.data_path.rmtree()
            raise DataError(
                f"the corpus {data_cfg.corpus} changed while it was prepared (a file's size or time, or the "
                "files a glob matches); its records were deleted; let whatever writes it finish, then rerun"
            )
    sources = builder.as_data_source()
    return PreparedData(
        train=RecordSource(sources["train"]),
        validation=RecordSource(sources["validation"]),
        tokenizer=tok,
        settings=settings,
        path=str(builder.data_dir),
    )
