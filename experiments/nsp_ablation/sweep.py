"""NSP ablation: does next-sentence prediction help BERT, and what input format should replace it?

Seven runs per pretraining seed at matched compute (same model, batch,
sequence length and steps; tokens seen differ with how densely each format
packs real tokens, and the report gives them):
  1. segpair_nsp         SEGMENT-PAIR + NSP (BERT)
  2. segpair             SEGMENT-PAIR, no NSP (B is always the true continuation)
  3. full_sentences      FULL-SENTENCES, no NSP (RoBERTa; packs across documents)
  4. doc_sentences       DOC-SENTENCES, no NSP (RoBERTa; never crosses a document)
  5. sop                 SEGMENT-PAIR + SOP (ALBERT sentence-order prediction)
  6. segpair_nsp_static  (1) with static masks (fixed when the data is prepared)
  7. full_sentences_static  (3) with static masks

  python -m experiments.nsp_ablation.sweep --quick           # smoke run, ~2 min on 2 cores
  python -m experiments.nsp_ablation.sweep                   # CPU scale: experiments/nsp_ablation/REPORT.md
  python -m experiments.nsp_ablation.sweep --scale=full --set data.corpus='/data/*.txt' --dry_run

Scored by held-out MLM loss/accuracy (its own validation split, and one
common DOC-SENTENCES split for every run), NSP and SOP accuracy for both
pair-head models on both tasks (the cross-evaluation), and downstream
fine-tuning where flaxlm has it. See experiments/README.md.
"""

import os
import sys

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from experiments.common import main as main_lib  # noqa: E402
from experiments.common import recipes  # noqa: E402
from experiments.common.runner import EvalSpec, Variant  # noqa: E402
from flaxlm import objectives  # noqa: E402

VARIANTS = (
    Variant(
        "segpair_nsp",
        "SEGMENT-PAIR + NSP",
        {"objective": "mlm_nsp", "data.builder": "segment_pair"},
        "BERT: two segments of contiguous sentences; half the B segments from another document, NSP head",
    ),
    Variant(
        "segpair",
        "SEGMENT-PAIR",
        {"objective": "mlm", "data.builder": "segment_pair"},
        "BERT's segment pairs with NSP removed: B always continues A; no pair head",
    ),
    Variant(
        "full_sentences",
        "FULL-SENTENCES",
        # dupe_factor 1 at every scale: with dynamic masks the copies would be identical (RoBERTa masks
        # each epoch anew instead of duplicating the data), and flaxlm refuses identical copies.
        {"objective": "mlm", "data.builder": "full_sentences", "data.dupe_factor": 1},
        "RoBERTa: contiguous sentences packed to the full length, crossing document boundaries",
    ),
    Variant(
        "doc_sentences",
        "DOC-SENTENCES",
        {"objective": "mlm", "data.builder": "doc_sentences", "data.dupe_factor": 1},
        "RoBERTa: as FULL-SENTENCES but never crossing a document (shorter sequences at ends)",
    ),
    Variant(
        "sop",
        "SEGMENT-PAIR + SOP",
        {"objective": "mlm_sop", "data.builder": "sop"},
        "ALBERT: two consecutive segments of one document, swapped half the time, SOP head",
    ),
    Variant(
        "segpair_nsp_static",
        "SEGMENT-PAIR + NSP, static",
        {"objective": "mlm_nsp", "data.builder": "segment_pair", "data.masking": "static"},
        "(1) with masks fixed when the data is prepared (BERT's original static masking)",
    ),
    Variant(
        "full_sentences_static",
        "FULL-SENTENCES, static",
        {"objective": "mlm", "data.builder": "full_sentences", "data.masking": "static"},
        "(3) with static masks",
    ),
)
BASELINE = "segpair_nsp"
STATIC_PAIRS = (("segpair_nsp_static", "segpair_nsp"), ("full_sentences_static", "full_sentences"))

EVALS = (
    EvalSpec(
        "common_mlm",
        {"objective": "mlm", "data.builder": "doc_sentences", "data.dupe_factor": 1},
        lambda objective: objective != "clm",
        "MLM on the common DOC-SENTENCES validation split",
    ),
    EvalSpec(
        "nsp",
        {"objective": "mlm_nsp", "data.builder": "segment_pair"},
        objectives.has_pair_head,
        "NSP accuracy on SEGMENT-PAIR + NSP validation data",
    ),
    EvalSpec(
        "sop",
        {"objective": "mlm_sop", "data.builder": "sop"},
        objectives.has_pair_head,
        "SOP accuracy on SOP validation data",
    ),
    # NSP's NotNext segments drawn from the same kind of text as A, or from another kind (the corpus
    # has several sources, e.g. the default's four): how much of NSP is topic (Lan et al. 2019, §4.2).
    EvalSpec(
        "nsp_same_source",
        {"objective": "mlm_nsp", "data.builder": "segment_pair", "data.nsp_negatives": "same_source"},
        objectives.has_pair_head,
        "NSP accuracy, NotNext from the same source as A",
    ),
    EvalSpec(
        "nsp_other_source",
        {"objective": "mlm_nsp", "data.builder": "segment_pair", "data.nsp_negatives": "other_source"},
        objectives.has_pair_head,
        "NSP accuracy, NotNext from another source",
    ),
)


def _write_report(runs_dir: str, report_dir: str) -> str:
    from experiments.nsp_ablation import report

    return report.write_report(runs_dir, report_dir)


EXPERIMENT = main_lib.Experiment(
    name="nsp_ablation",
    title="NSP ablation: SEGMENT-PAIR+NSP vs no NSP, FULL-/DOC-SENTENCES, SOP; static vs dynamic masks",
    variants=VARIANTS,
    recipes={"cpu": recipes.CPU, "full": recipes.FULL},
    quick=recipes.quick,
    evals=EVALS,
    default_seeds={"cpu": (0, 1, 2), "full": (0,)},
    # At CPU scale each example is seen at most once (600 steps of 32 cover 0.4 epochs), so static and
    # dynamic masks are the same random process: the static variants run at full scale or when named.
    default_variants={"cpu": ("segpair_nsp", "segpair", "full_sentences", "doc_sentences", "sop")},
    write_report=_write_report,
)

if __name__ == "__main__":
    sys.exit(main_lib.main(EXPERIMENT))
