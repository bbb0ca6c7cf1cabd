"""Evaluation metrics of the fine-tuning tasks, on the host (numpy and plain Python). All are in [0, 1].

Classification: accuracy, binary F1 of one class, macro-F1.
NER: entity-level micro precision/recall/F1 with exact span and type match;
  chunks are read from BIO (or BIOES) tags with conlleval's rules, as
  seqeval's default mode does (an I-X after O or after another type starts an entity).
QA: SQuAD v1.1's exact match and token F1 after its answer normalisation
  (lowercase, no punctuation, no articles a/an/the, single spaces), each the
  max over the gold answers.
"""

import collections
import re
import string

import numpy as np


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float(np.mean(pred == gold)) if gold.size else 0.0


def _f1(tp: float, fp: float, fn: float) -> float:
    return float(2 * tp / (2 * tp + fp + fn)) if tp else 0.0


def binary_f1(pred: np.ndarray, gold: np.ndarray, positive: int = 1) -> float:
    """F1 of class `positive` (0 when it is never predicted correctly)."""
    pred, gold = np.asarray(pred) == positive, np.asarray(gold) == positive
    return _f1(np.sum(pred & gold), np.sum(pred & ~gold), np.sum(~pred & gold))


def macro_f1(pred: np.ndarray, gold: np.ndarray, num_labels: int) -> float:
    """Unweighted mean over classes 0..num_labels-1 of each class's F1 (classes absent from both count 0)."""
    return float(np.mean([binary_f1(pred, gold, c) for c in range(num_labels)]))


# NER ---------------------------------------------------------------------------------------------------


def _split_tag(tag: str) -> tuple[str, str]:
    """ "B-geo-loc" -> ("B", "geo-loc"); "O" -> ("O", "")."""
    if tag == "O" or "-" not in tag:
        return "O", ""
    prefix, kind = tag.split("-", 1)
    return prefix, kind


def _chunk_ends(prev: str, prev_type: str, tag: str, kind: str) -> bool:
    """conlleval's endOfChunk: does the chunk open at the previous tag end before this one?"""
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev != "O" and prev_type != kind


def _chunk_starts(prev: str, prev_type: str, tag: str, kind: str) -> bool:
    """conlleval's startOfChunk: does a chunk begin at this tag?"""
    if tag in ("B", "S"):
        return True
    if tag in ("E", "I") and prev in ("E", "S", "O"):
        return True
    return tag != "O" and prev_type != kind


def entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """The (type, first, last) word spans (inclusive) of a BIO/BIOES tag sequence."""
    out = []
    prev, prev_type, start = "O", "", None
    for i, tag in enumerate(list(tags) + ["O"]):  # the sentinel closes a chunk at the end
        prefix, kind = _split_tag(tag)
        if start is not None and _chunk_ends(prev, prev_type, prefix, kind):
            out.append((prev_type, start, i - 1))
            start = None
        if _chunk_starts(prev, prev_type, prefix, kind):
            start = i
        prev, prev_type = prefix, kind
    return out


def entity_prf(gold_seqs: list[list[str]], pred_seqs: list[list[str]]) -> dict[str, float]:
    """Micro precision, recall and F1 over entities that match in type, start and end exactly."""
    tp = n_pred = n_gold = 0
    for gold, pred in zip(gold_seqs, pred_seqs, strict=True):
        g, p = set(entities(gold)), set(entities(pred))
        tp += len(g & p)
        n_pred += len(p)
        n_gold += len(g)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


# QA ----------------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD v1.1's normalisation: lowercase, drop punctuation, drop a/an/the, collapse whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, golds: list[str]) -> float:
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(g) for g in golds))


def _token_f1(prediction: str, gold: str) -> float:
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((collections.Counter(p) & collections.Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, golds: list[str]) -> float:
    return max(_token_f1(prediction, g) for g in golds)


def squad_scores(predictions: dict[str, str], golds: dict[str, list[str]]) -> dict[str, float]:
    """Mean exact match and F1 over the questions in `golds` (an unanswered one scores 0)."""
    em = [exact_match(predictions.get(q, ""), answers) for q, answers in golds.items()]
    f1 = [token_f1(predictions.get(q, ""), answers) for q, answers in golds.items()]
    return {"exact_match": float(np.mean(em)), "f1": float(np.mean(f1))}


# Generation ----------------------------------------------------------------------------------------------

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure of each prediction against its reference (Google's rouge-score:
    lower-cased alphanumeric tokens, Porter stemming; ROUGE-L is the sentence-level LCS)."""
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise ImportError(
            "ROUGE needs Google's rouge-score package: pip install 'flaxlm[generation]' (or rouge-score)"
        ) from None
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for pred, ref in zip(predictions, references, strict=True):
        scores = scorer.score(ref, pred)  # (target, prediction)
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    n = max(len(predictions), 1)
    return {name: totals[name] / n for name in ROUGE_TYPES}
