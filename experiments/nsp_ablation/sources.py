"""How much of a model's NSP is topic: its NSP accuracy with NotNext from any, the same or another source.

  python -m experiments.nsp_ablation.sources --workdir=/tmp/bert_tiny

Restores the latest checkpoint of a `flaxlm train` workdir whose model has a pair head (NSP or SOP)
and scores it three times on NSP examples built from the run's own held-out documents, with the
NotNext segment B drawn from any other document (BERT, `data.nsp_negatives=any`), from a document of
the same source as A, or of another source (a source is one corpus of the spec: the default has
four kinds of text). Each line gives the accuracy, the majority-label rate of those examples and
the exact binomial p against it. The NSP ablation's report has the same table over its seeds.
"""

import argparse
import os
import sys

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from experiments.common import evaluation  # noqa: E402
from experiments.common import stats  # noqa: E402
from flaxlm import objectives  # noqa: E402
from flaxlm.data.builders import NSP_NEGATIVES  # noqa: E402
from flaxlm.errors import FlaxlmError  # noqa: E402


def nsp_by_source(workdir: str) -> dict[str, dict]:
    """{negatives: flaxlm's NSP eval metrics, examples and majority_rate} for the run's latest checkpoint."""
    params, _, config = evaluation.restore(workdir)
    if not objectives.has_pair_head(config.objective):
        raise FlaxlmError(
            f"{workdir} was trained with objective {config.objective!r}, which has no pair head to score "
            "NSP with; give a run trained with mlm_nsp or mlm_sop"
        )
    return {
        negatives: evaluation.cross_evaluate(
            params,
            config,
            {"objective": "mlm_nsp", "data.builder": "segment_pair", "data.nsp_negatives": negatives},
        )
        for negatives in NSP_NEGATIVES
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.nsp_ablation.sources", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--workdir", required=True, help="a `flaxlm train` workdir of a model with a pair head")
    a = ap.parse_args(argv)
    if not os.path.isdir(a.workdir):
        ap.exit(2, f"{ap.prog}: --workdir={a.workdir} is not a folder; give a `flaxlm train` workdir\n")
    try:
        results = nsp_by_source(os.path.abspath(a.workdir))
    except FlaxlmError as e:
        ap.exit(2, f"{ap.prog}: {e}\n")
    for negatives, r in results.items():
        correct = round(r["nsp_accuracy"] * r["examples"])
        p = stats.binomial_vs_chance(correct, r["examples"], r["majority_rate"])
        print(
            f"NotNext from {negatives.replace('_', ' '):12s}  nsp_accuracy {r['nsp_accuracy']:.4f}  "
            f"({correct}/{r['examples']}; majority label {r['majority_rate']:.4f}, p = {p:.2g})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
