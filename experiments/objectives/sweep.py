"""Objective comparison: masked LM, masked LM + NSP, and left-to-right causal LM at matched FLOPs.

Three runs per pretraining seed, the same Transformer (layers, width, heads,
MLP, pre-LN blocks, GELU, optimizer, learning rate), corpus and tokenizer:
  mlm      BERT encoder, masked LM on segment pairs (no NSP)
  mlm_nsp  BERT encoder, masked LM + next-sentence prediction (BERT)
  clm      GPT decoder, next-token prediction on packed documents (BERT's "LTR & No NSP")

Matched training FLOPs, not matched steps: a causal LM projects every
position onto the vocabulary, a masked LM only the positions it masked, so
a CLM step costs more (1.68× at the CPU recipe's shapes: 52 of 128 scored). Each variant's
steps (and its warmup, eval and checkpoint intervals) are scaled by
FLOPs(mlm step) / FLOPs(its step) (experiments/common/flops.py); the
report gives each run's FLOPs.

  python -m experiments.objectives.sweep --quick     # smoke run
  python -m experiments.objectives.sweep             # CPU scale, writes experiments/objectives/REPORT.md
  python -m experiments.objectives.sweep --scale=full --set data.corpus='/data/*.txt' --dry_run

Scored by held-out MLM loss/accuracy (MLM models; also on one common
DOC-SENTENCES split), perplexity (CLM), NSP accuracy (MLM+NSP) and
downstream fine-tuning where flaxlm has it.
"""

import os
import sys
from typing import Sequence

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from experiments.common import flops as flops_lib  # noqa: E402
from experiments.common import main as main_lib  # noqa: E402
from experiments.common import recipes  # noqa: E402
from experiments.common import runner  # noqa: E402
from experiments.common.runner import EvalSpec, Variant  # noqa: E402

# The same blocks for all three: GPT's are pre-LN, so the encoders are too.
SHARED = {"model.pre_ln": True}

VARIANTS = (
    Variant(
        "mlm",
        "MLM",
        {**SHARED, "objective": "mlm", "data.builder": "segment_pair"},
        "bidirectional encoder, masked tokens predicted (the recipe's rate); segment pairs without NSP",
    ),
    Variant(
        "mlm_nsp",
        "MLM + NSP",
        {**SHARED, "objective": "mlm_nsp", "data.builder": "segment_pair"},
        "as MLM plus next-sentence prediction on the [CLS] vector (BERT)",
    ),
    Variant(
        "clm",
        "CLM (left-to-right)",
        # dupe_factor 1 at every scale: packed causal rows have no randomness to vary between copies.
        {**SHARED, "model.arch": "gpt", "objective": "clm", "data.builder": "causal", "data.dupe_factor": 1},
        "causal decoder predicting every next token; documents packed into rows, never attended across",
    ),
    Variant(
        "roberta",
        "RoBERTa (FULL-SENTENCES)",
        # Dynamic masking is the recipe's already (data.masking="dynamic"); β2 0.98 and ε 1e-6 as RoBERTa.
        # dupe_factor 1 at every scale: dynamic masks replace BERT's copies, and FULL-SENTENCES rows have
        # no randomness to vary between copies.
        {
            **SHARED,
            "objective": "mlm",
            "data.builder": "full_sentences",
            "data.dupe_factor": 1,
            "train.b2": 0.98,
            "train.eps": 1e-6,
        },
        "MLM without NSP on FULL-SENTENCES inputs (contiguous sentences, crossing documents), "
        "β2 0.98, dynamic masks",
    ),
    Variant(
        "albert",
        "ALBERT (E=64, shared, SOP)",
        {
            **SHARED,
            "objective": "mlm_sop",
            "data.builder": "sop",
            "data.ngram": True,
            "model.embedding_size": 64,
            "model.share_layers": "all",
        },
        "embeddings factorised to 64, one block shared by both layers, sentence-order prediction, "
        "n-gram masks (n ≤ 3)",
    ),
    Variant(
        "spanbert",
        "SpanBERT (spans + SBO)",
        # dupe_factor 1 at every scale, as RoBERTa's: dynamic span masks, single segments without randomness.
        {
            **SHARED,
            "objective": "mlm_sbo",
            "data.builder": "doc_sentences",
            "data.span": True,
            "data.dupe_factor": 1,
        },
        "geometric whole-word span masks, MLM + span-boundary objective, single segments without NSP",
    ),
    Variant(
        "electra",
        "ELECTRA (RTD, generator 1/2)",
        # configs/electra_tiny.py's: ELECTRA's 15% masks, single segments, a generator half as wide on
        # the shared embeddings, no pooler (fine-tuning adds one); its FLOPs include the generator's.
        {
            **SHARED,
            "objective": "electra",
            "model.generator_size": 0.5,
            "model.pooler": False,
            "data.builder": "doc_sentences",
            "data.mask_prob": 0.15,
            "data.max_predictions": 20,
            "data.dupe_factor": 1,
            "train.loss_chunk_size": 0,  # the generator samples from its full logits
        },
        "a 1/2-width MLM generator fills 15% masked positions with samples; the discriminator (the model "
        "fine-tuned) tells replaced from original at every token, λ = 50",
    ),
)
REFERENCE = "mlm"  # its steps are the budget; the others get the same FLOPs

EVALS = (
    EvalSpec(
        "common_mlm",
        # Single-token masks for every model, whatever masking it trained with (spans, n-grams). Not
        # ELECTRA: its discriminator predicts no tokens (its generator would, at half the width).
        {"objective": "mlm", "data.builder": "doc_sentences", "data.span": False, "data.ngram": False},
        lambda objective: objective not in ("clm", "electra"),
        "MLM on the common DOC-SENTENCES validation split",
    ),
)


def matched_flops(recipe: runner.Recipe, variants: Sequence[Variant]) -> list[Variant]:
    """Each variant with its steps scaled to the MLM run's training FLOPs."""
    ref = next(v for v in VARIANTS if v.name == REFERENCE)
    return flops_lib.matched_flops(recipe, variants, reference=ref)


def _write_report(runs_dir: str, report_dir: str) -> str:
    from experiments.objectives import report

    return report.write_report(runs_dir, report_dir)


EXPERIMENT = main_lib.Experiment(
    name="objectives",
    title="Objective comparison: MLM vs MLM+NSP vs causal LM at matched training FLOPs",
    variants=VARIANTS,
    recipes={"cpu": recipes.CPU, "full": recipes.FULL},
    quick=recipes.quick,
    evals=EVALS,
    default_seeds={"cpu": (0, 1, 2), "full": (0,)},
    write_report=_write_report,
    adapt=matched_flops,
)

if __name__ == "__main__":
    sys.exit(main_lib.main(EXPERIMENT))
