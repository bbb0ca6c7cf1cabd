"""Extractive QA: SQuAD-format data, windowed features, start/end loss and best-span decoding.

Your own data: SQuAD v1.1 JSON files ({"data": [{"paragraphs": [{"context",
"qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}),
one per split. Training uses each question's first answer; scoring takes
the best over all answers.

Built-in data: "shakespeare_cloze", made from real text because no QA set can
be downloaded offline (`build_cloze`). Each passage is a run of consecutive
sentences of one scene of the embedded Shakespeare corpus (or any corpus
spec); the question is one of its sentences with a span of 1-2 words blanked
out ("_____"); the answer is that span, a content word that occurs only once
in the passage. Scenes are split 80/10/10 by the hash of their id, so no
passage of a test scene is trained on. Note that flaxlm's default
pretraining corpus is this same text: a model pretrained on it has read the
passages (not the questions), so this set checks the QA machinery and
compares methods; it is not a clean reading-comprehension benchmark.

Features (as BERT's run_squad): the context is split on whitespace into
words, each word is tokenized on its own, and the context tokens are cut
into windows of at most max_seq_len - len(question) - specials tokens,
`doc_stride` apart. Input: [CLS] question [SEP] window [SEP] (GPT: no
[CLS]). A window that does not contain the answer is labelled start = end
= 0. Decoding scores every span of context tokens (start <= end, at most
max_answer_len tokens) by start_logit + end_logit over all windows of the
question, and returns the context text of the words the best span covers.
"""

import collections
import hashlib
import json
import random

import jax
import jax.numpy as jnp
import numpy as np

from flaxlm.data import corpus as corpus_lib
from flaxlm.errors import DataError
from flaxlm.tasks import common
from flaxlm.tasks import metrics

GAP = "_____"  # what replaces the answer in a cloze question
QUESTION_WORDS = (6, 25)  # question sentences are this long (so max_query_len rarely cuts the gap off)
_STOPWORDS = frozenset(
    """
    about above after again against also among another because been before being below between both
    cannot come could does doing done down during each even ever every from have having hath hast doth
    dost here hers herself himself into itself just least less like made make many more most much must
    myself never none nor not now often once only other ought ours ourselves over same shall should
    shalt some such than that their theirs them themselves then there these they thee thou thine this
    those though through thus till unto upon very well were what when where whether which while whom
    whose will with within without would your yours yourself yourselves come good know
    """.split()
)


# Reading SQuAD JSON --------------------------------------------------------------------------------------


def squad_examples(data: dict, source: str = "SQuAD data") -> list[dict]:
    """SQuAD v1.1 JSON -> [{"id", "question", "context", "answers": [{"text", "answer_start"}]}]."""
    out = []
    try:
        for article in data["data"]:
            for para in article["paragraphs"]:
                context = para["context"]
                for qa in para["qas"]:
                    answers = [
                        {"text": a["text"], "answer_start": int(a["answer_start"])} for a in qa["answers"]
                    ]
                    for a in answers:
                        if context[a["answer_start"] : a["answer_start"] + len(a["text"])] != a["text"]:
                            raise DataError(
                                f"{source}: question {qa['id']}: answer {a['text']!r} is not at "
                                f"answer_start {a['answer_start']} of its context"
                            )
                    if not answers:
                        raise DataError(
                            f"{source}: question {qa['id']} has no answers (SQuAD v1.1 needs one)"
                        )
                    out.append(
                        {
                            "id": str(qa["id"]),
                            "question": qa["question"],
                            "context": context,
                            "answers": answers,
                        }
                    )
    except (KeyError, TypeError) as e:
        raise DataError(
            f"{source}: not SQuAD v1.1 JSON (missing {e}); expected data/paragraphs/context/qas/answers"
        ) from None
    if not out:
        raise DataError(f"{source}: no questions")
    return out


def read_squad(path: str) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
    return squad_examples(data, path)


def to_squad(examples: list[dict], title: str = "flaxlm") -> dict:
    """Examples back to SQuAD v1.1 JSON (one paragraph per example)."""
    paragraphs = [
        {
            "context": ex["context"],
            "qas": [{"id": ex["id"], "question": ex["question"], "answers": ex["answers"]}],
        }
        for ex in examples
    ]
    return {"version": "1.1", "data": [{"title": title, "paragraphs": paragraphs}]}


# Building cloze QA from real text ------------------------------------------------------------------------


_PUNCT = ".,;:!?'\"()[]{}-"


def _strip(word: str) -> str:
    return word.strip(_PUNCT).lower()


def _candidate(word: str) -> bool:
    """A content word with no punctuation attached: alphabetic, >= 4 letters, not a stopword."""
    return word.isalpha() and len(word) >= 4 and word.lower() not in _STOPWORDS


def _passages(sentences: list[str], min_words: int, max_words: int) -> list[list[str]]:
    """Consecutive sentences grouped into passages of min_words..max_words words (others dropped)."""
    out, cur, n = [], [], 0
    for s in sentences:
        k = len(s.split())
        if cur and n + k > max_words:
            if n >= min_words:
                out.append(cur)
            cur, n = [], 0
        if k > max_words:
            continue
        cur.append(s)
        n += k
        if n >= min_words:
            out.append(cur)
            cur, n = [], 0
    return out


def cloze_question(passage: list[str], rng: random.Random):
    """(question, answer, answer_start) for one passage (list of sentences), or None if none fits.

    The question sentence has QUESTION_WORDS words; the answer is 1-2 adjacent
    words of it, each a content word (alphabetic, >= 4 letters, not a
    stopword, no punctuation attached) that occurs once in the passage.
    """
    counts = collections.Counter(map(_strip, " ".join(passage).split()))
    order = list(range(len(passage)))
    rng.shuffle(order)
    for si in order:
        sent = passage[si].split()
        if not QUESTION_WORDS[0] <= len(sent) <= QUESTION_WORDS[1]:
            continue
        good = [i for i, w in enumerate(sent) if _candidate(w) and counts[w.lower()] == 1]
        if not good:
            continue
        i = rng.choice(good)
        j = i + 1 if (i + 1 in good and rng.random() < 0.3) else i  # sometimes a 2-word span
        answer = " ".join(sent[i : j + 1])
        question = " ".join(sent[:i] + [GAP] + sent[j + 1 :])
        # Character offset: sentences are joined by single spaces; the span starts at word i.
        offset = sum(len(s) + 1 for s in passage[:si]) + sum(len(w) + 1 for w in sent[:i])
        return question, answer, offset
    return None


def build_cloze(
    corpus_spec="shakespeare", *, min_words: int = 25, max_words: int = 60, seed: int = 0
) -> dict[str, list[dict]]:
    """Cloze QA examples of a corpus, split by document: {"train": [...], "dev": [...], "test": [...]}.

    Deterministic: each passage's choices come from a generator seeded by the
    hash of its document id and index (and `seed`).
    """
    splits = {s: [] for s in common.SPLITS}
    for doc in corpus_lib.read_corpus(corpus_spec):
        split = common.split_of(doc.id)
        for k, passage in enumerate(_passages(corpus_lib.document_sentences(doc), min_words, max_words)):
            key = hashlib.sha1(f"{seed}:{doc.id}:{k}".encode()).digest()
            made = cloze_question(passage, random.Random(int.from_bytes(key[:8], "big")))
            if made is None:
                continue
            question, answer, start = made
            context = " ".join(passage)
            splits[split].append(
                {
                    "id": f"{doc.id}#{k}",
                    "question": question,
                    "context": context,
                    "answers": [{"text": answer, "answer_start": start}],
                }
            )
    return splits


# Features ------------------------------------------------------------------------------------------------


def context_words(context: str) -> tuple[list[str], list[int], np.ndarray]:
    """Whitespace words of `context`, each word's start character, and char -> word index [len(context)]."""
    words, starts = [], []
    char_word = np.full(len(context), -1, np.int64)
    in_word = False
    for i, ch in enumerate(context):
        if ch.isspace():
            in_word = False
            continue
        if not in_word:
            words.append("")
            starts.append(i)
            in_word = True
        words[-1] += ch
        char_word[i] = len(words) - 1
    return words, starts, char_word


def best_span(start_T: np.ndarray, end_T: np.ndarray, valid_T: np.ndarray, max_len: int):
    """(score, s, e) of the best span s <= e < s + max_len over valid tokens; None if none is valid."""
    idx = np.nonzero(valid_T)[0]
    if idx.size == 0:
        return None
    scores = start_T[idx][:, None] + end_T[idx][None, :]
    gap = idx[None, :] - idx[:, None]
    scores = np.where((gap >= 0) & (gap < max_len), scores, -np.inf)
    flat = int(np.argmax(scores))
    i, j = divmod(flat, idx.size)
    return float(scores[i, j]), int(idx[i]), int(idx[j])


class QaTask:
    """Extractive QA: start/end logits over the passage; exact match and F1 (SQuAD normalisation)."""

    head = "span"
    num_labels = 2
    labels = ("start", "end")

    def __init__(self, task_cfg, splits: dict[str, list[dict]]):
        """splits: {"train", "dev", "test"} -> [{"id", "question", "context", "answers"}]."""
        for s, exs in splits.items():
            if not exs:
                raise DataError(f"the QA {s} split is empty; give more text or your own SQuAD files")
        self.cfg = task_cfg
        self.splits = splits

    @classmethod
    def load(cls, task_cfg, data_dir: str) -> "QaTask":
        """The user's SQuAD files (config.task.*_file), or the cloze set built from the corpus (seconds)."""
        del data_dir  # nothing to download
        if task_cfg.train_file:
            return cls(task_cfg, {s: read_squad(task_cfg[f"{s}_file"]) for s in common.SPLITS})
        if task_cfg.dataset == "shakespeare_cloze":
            return cls(task_cfg, build_cloze(task_cfg.corpus or "shakespeare"))
        raise DataError(
            f"config.task.dataset={task_cfg.dataset!r} is not a QA set; "
            "use 'shakespeare_cloze' or give --config.task.train_file/dev_file/test_file (SQuAD JSON)"
        )

    def encode(self, examples: list[dict], tok, arch: str) -> common.Features:
        cfg = self.cfg
        T = cfg.max_seq_len
        rows, starts, ends, feature_example, token_word = [], [], [], [], []
        for n, ex in enumerate(examples):
            words, _, char_word = context_words(ex["context"])
            ctx_ids, ctx_word = [], []
            for w, pieces in enumerate(tok.encode_batch(words)):
                ctx_ids += pieces
                ctx_word += [w] * len(pieces)
            answer = ex["answers"][0]
            a_first = char_word[answer["answer_start"]]
            a_last = char_word[answer["answer_start"] + len(answer["text"]) - 1]
            tok_first = ctx_word.index(a_first) if a_first in ctx_word else -1
            tok_last = len(ctx_word) - 1 - ctx_word[::-1].index(a_last) if a_last in ctx_word else -1
            q_ids = tok.encode(ex["question"])[: cfg.max_query_len]
            budget = T - common.special_count(arch, pair=True) - len(q_ids)
            if budget < 1:
                raise DataError(f"config.task.max_seq_len={T} leaves no room for the passage; raise it")
            offset = len(q_ids) + (2 if arch == "bert" else 1)  # [CLS] q [SEP] (GPT: q [SEP])
            start = 0
            while True:
                length = min(budget, len(ctx_ids) - start)
                rows.append(common.join_pair(tok, arch, q_ids, ctx_ids[start : start + length]))
                words_T = np.full(T, -1, np.int64)
                words_T[offset : offset + length] = ctx_word[start : start + length]
                token_word.append(words_T)
                feature_example.append(n)
                inside = tok_first >= start and 0 <= tok_last < start + length
                starts.append(offset + tok_first - start if inside else 0)
                ends.append(offset + tok_last - start if inside else 0)
                if start + length >= len(ctx_ids):
                    break
                start += min(length, cfg.doc_stride)
        arrays = common.pad_rows(rows, T, tok.pad_id)
        arrays["start_position"] = np.asarray(starts, np.int32)
        arrays["end_position"] = np.asarray(ends, np.int32)
        meta = {"feature_example": np.asarray(feature_example), "token_word": np.stack(token_word)}
        return common.Features(arrays, meta)

    def loss(self, outputs, batch) -> tuple[jax.Array, dict]:
        start_logits_BT, end_logits_BT = outputs
        ce_B = 0.5 * (
            common.cross_entropy(start_logits_BT, batch["start_position"])
            + common.cross_entropy(end_logits_BT, batch["end_position"])
        )
        w_B = batch["weight"]
        loss = jnp.sum(ce_B * w_B) / jnp.maximum(jnp.sum(w_B), 1.0)
        return loss, {"loss": loss}

    def predict(self, outputs):
        start_logits_BT, end_logits_BT = outputs
        return jnp.stack([start_logits_BT, end_logits_BT], axis=-1).astype(jnp.float32)

    def answers(self, logits_NT2: np.ndarray, features: common.Features, examples) -> dict[str, str]:
        """Each question's predicted answer text (the best span over its windows)."""
        best: dict[int, tuple[float, int, int, int]] = {}
        for f, (logits_T2, words_T) in enumerate(zip(logits_NT2, features.meta["token_word"], strict=True)):
            found = best_span(logits_T2[:, 0], logits_T2[:, 1], words_T >= 0, self.cfg.max_answer_len)
            n = int(features.meta["feature_example"][f])
            if found is not None and (n not in best or found[0] > best[n][0]):
                best[n] = (found[0], int(words_T[found[1]]), int(words_T[found[2]]), f)
        out = {}
        for n, ex in enumerate(examples):
            if n not in best:
                out[ex["id"]] = ""
                continue
            _, w_first, w_last, _ = best[n]
            words, word_starts, _ = context_words(ex["context"])
            out[ex["id"]] = ex["context"][word_starts[w_first] : word_starts[w_last] + len(words[w_last])]
        return out

    def score(self, logits_NT2: np.ndarray, features: common.Features, examples) -> dict[str, float]:
        predictions = self.answers(logits_NT2, features, examples)
        golds = {ex["id"]: [a["text"] for a in ex["answers"]] for ex in examples}
        return metrics.squad_scores(predictions, golds)
