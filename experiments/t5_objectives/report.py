"""Writes the T5 objectives study's REPORT.md and figures/ from its runs.

  python -m experiments.t5_objectives.report                 # experiments/t5_objectives/{runs -> REPORT.md}
  python -m experiments.t5_objectives.report --runs=DIR --out=DIR

Tables: each run's steps, tokens and training FLOPs; each objective's own held-out loss and
perplexity with the unigram model of the training tokens beside it (the four objectives score
different targets, so these are not compared with each other); the text-to-text fine-tuning tables
(sentiment exact match, definitions ROUGE-L) with every pair of objectives and the random-init
control; and Raffel et al.'s directions set against ours.
"""

import math
import os
import sys

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from experiments.common import report as R  # noqa: E402
from experiments.t5_objectives import sweep  # noqa: E402

LABELS = {v.name: v.label for v in sweep.VARIANTS}


def _exp(x: float | None) -> float | None:
    """A unigram loss (nats/token) as a perplexity."""
    return None if x is None else math.exp(x)


MEASURES = (
    R.Measure(
        "lm_loss",
        "held-out loss of each objective's own targets (nats/token; decoder targets for T5, the "
        "continuation for the prefix LM, every next token for the LM)",
        R.final_eval_metric("lm_loss"),
        higher_is_better=False,
        baseline=(R.UNIGRAM, R.final_eval_metric("unigram_lm_loss")),
    ),
    R.Measure(
        "lm_accuracy",
        "held-out accuracy of the same targets (the argmax is the target token)",
        R.final_eval_metric("lm_accuracy"),
        baseline=(R.UNIGRAM, R.final_eval_metric("unigram_lm_accuracy")),
    ),
    R.Measure(
        "perplexity",
        "held-out perplexity of the same targets",
        R.final_eval_metric("perplexity"),
        higher_is_better=False,
        digits=2,
        baseline=(R.UNIGRAM, lambda r: _exp(r.final_eval().get("eval_unigram_lm_loss"))),
    ),
)
# Every pair, first minus second: the denoising objectives against each other and against both LMs.
PAIRS = [
    ("span_corruption", "iid_denoising"),
    ("iid_denoising", "prefix_lm"),
    ("iid_denoising", "clm"),
    ("span_corruption", "prefix_lm"),
    ("span_corruption", "clm"),
    ("prefix_lm", "clm"),
]

# The published figures, transcribed from Raffel et al. (2020): the GLUE and SuperGLUE averages and
# CNN/DM ROUGE-2-F of T5-base-sized models pretrained on C4 and fine-tuned per task. Table 4 ran its
# objectives on the encoder-decoder; Table 2 crossed architectures (encoder-decoder 2P, decoder-only
# "language model" and "prefix LM" P) with a denoising and an LM objective; Table 5's denoising
# variants include BERT-style and "replace corrupted spans" (i.i.d. noise, each run of corrupted tokens
# one sentinel), which is also Table 2's denoising objective; Table 7 varies the span length.
T4 = "Raffel et al. 2020, Table 4 (§3.3.1)"
T2 = "Raffel et al. 2020, Table 2 (§3.2)"
T5_SPANS = "Raffel et al. 2020, Table 5 (§3.3.2)"
ENC_DEC_DENOISING = "encoder-decoder, denoising: GLUE 83.28, SuperGLUE 71.36, CNN/DM 19.24"
LM_LM = "decoder-only language model, LM objective: 73.78, 56.51, 17.54"
PREFIX_LM_LM = "decoder-only prefix LM, LM objective: 79.68, 64.86, 17.84"
CLAIMS = (
    R.Claim(
        T4,
        "BERT-style denoising beats prefix language modeling: GLUE 82.96 vs 80.69, SuperGLUE 69.85 vs "
        "65.27, CNN/DM 19.17 vs 18.94 (both on the encoder-decoder)",
        "iid_denoising",
        "prefix_lm",
        ">",
        "",
    ),
    R.Claim(
        T2,
        f"a denoising objective beats a language-modeling one, every architecture: {ENC_DEC_DENOISING} "
        f"vs {LM_LM} (Table 4's BERT-style: 82.96, 69.85, 19.17)",
        "iid_denoising",
        "clm",
        ">",
        "",
    ),
    R.Claim(
        T2,
        f"span corruption beats language modeling: {ENC_DEC_DENOISING} vs {LM_LM}",
        "span_corruption",
        "clm",
        ">",
        "",
    ),
    R.Claim(
        T2,
        f"encoder-decoder denoising beats a decoder-only prefix LM: {ENC_DEC_DENOISING} vs {PREFIX_LM_LM}",
        "span_corruption",
        "prefix_lm",
        ">",
        "",
    ),
    R.Claim(
        T5_SPANS,
        "replacing corrupted spans ≈ BERT-style (slightly better, shorter targets so cheaper per step): "
        "GLUE 83.28 vs 82.96, SuperGLUE 71.36 vs 69.85, CNN/DM 19.24 vs 19.17",
        "span_corruption",
        "iid_denoising",
        "≈",
        "",
    ),
    R.Claim(
        T2,
        f"a prefix LM (bidirectional over its prefix) beats a causal LM on the decoder-only stack: "
        f"{PREFIX_LM_LM} vs {LM_LM}",
        "prefix_lm",
        "clm",
        ">",
        "",
    ),
)

CURVES = (
    ("eval_lm_loss", "held-out loss of each objective's targets"),
    ("eval_perplexity", "held-out perplexity of each objective's targets"),
)


def scale_lines(ctx: R.Context) -> list[str]:
    runs = [r for rs in ctx.grouped.values() for r in rs]
    tokens = [r.analysis.get("totals", {}).get("tokens_seen") for r in runs]
    tokens = [t for t in tokens if t]
    params = [r.analysis.get("parameters", {}).get("total") for r in runs]
    params = [p for p in params if p]
    out = []
    if tokens and params:
        out.append(
            f"- **Scale.** Each run trained a model of at most {max(params) / 1e6:.1f}M parameters on "
            f"{sum(tokens) / len(tokens) / 1e6:.2f}M real tokens on average. Raffel et al.'s comparisons "
            "used a T5-base-sized encoder-decoder (about 220M parameters) pretrained on C4 for 2^35 ≈ 34B "
            "tokens (§3.1.2), orders of magnitude more; effects that appear "
            "only once a model has learned the easy statistics of its data cannot show up here."
        )
    n = min((len(rs) for rs in ctx.grouped.values()), default=0)
    out += [
        R._data_line({"default"}).replace(
            "instead of BooksCorpus + English Wikipedia (3.3B words)", "instead of C4"
        ),
        f"- **Noise.** {n} pretraining seed(s) per variant: a difference smaller than the seed-to-seed "
        "spread cannot be resolved, and with one seed no test is possible.",
        "- **Architectures.** Table 4 ran its prefix LM on the encoder-decoder (prefix in the encoder); "
        "ours is Table 2's decoder-only prefix LM, on GPT's blocks (LayerNorm, GELU, learned positions) "
        "rather than T5's (RMS norm, ReLU, relative position bias). So the denoising-vs-LM rows compare "
        "objective and architecture together, as Table 2's rows across architectures do; the "
        "span-corruption-vs-BERT-style and prefix-LM-vs-LM rows compare objectives on one stack.",
        "- **Tasks.** T5 fine-tuned on GLUE, SuperGLUE, SQuAD, CNN/DM and WMT; ours are movie-review "
        "sentiment and WordNet definitions, both as text to text (the first stands in for the "
        "classification benchmarks, the second for generation such as CNN/DM summaries), with one "
        "small fine-tuning budget for all variants and no per-variant tuning.",
    ]
    return out


def write_report(runs_dir: str, report_dir: str) -> str:
    ctx = R.context("t5_objectives", runs_dir, report_dir, sweep.VARIANTS)
    values = {m.key: R.measure_values(ctx.grouped, m) for m in MEASURES}
    out = R.header_lines(
        ctx,
        "T5's objectives: BERT-style, span corruption, prefix LM and LM",
        "The runs are matched on training FLOPs: one corpus, tokenizer, batch and sequence length, a "
        "T5 of 2 + 2 layers for the denoising objectives and a GPT of 4 layers for the language models "
        "(hidden 128 in both), with each objective's steps scaled so that steps × FLOPs per step is "
        "span corruption's.",
    )
    out += R.setup_lines(ctx)
    out += [
        "## Variants: what each run saw",
        "",
        R.variants_table(sweep.VARIANTS, ctx.grouped),
        "",
        "*Training FLOPs* = forward + backward matrix-product FLOPs (experiments/common/flops.py): T5's "
        "encoder over the inputs, its decoder and cross-attention over the targets (29 positions for "
        "span corruption, 128 for BERT-style), GPT's 4 layers and vocabulary projection over all 128 "
        "positions (a prefix LM computes every position, scoring only the continuation). *Targets / "
        "seq*: scored tokens per sequence. *Tokens seen*: steps × batch × real tokens per sequence.",
        "",
        "## Pretraining results",
        "",
        "Final checkpoint of each run; n = pretraining seeds. Each objective predicts different targets "
        "from different context (the corrupted spans, the whole piece, a continuation, every next "
        "token), so these losses are not compared between variants: each is meaningful only against "
        "the unigram model of the same targets beside it. Only fine-tuning compares the variants.",
        "",
    ]
    out += R.measure_lines(ctx, MEASURES, values)
    lines, downstream_comps = R.downstream_lines(ctx, PAIRS)
    out += lines
    out += [
        "Every variant is fine-tuned as text to text, as T5 fine-tunes, so that the encoder-decoder and "
        "the decoder-only models are trained and scored by the same code: sentiment with the label word "
        "as the target (exact match; `sentiment_t2t`) and WordNet definitions (ROUGE-L). The "
        "classification-head sentiment task (`sentiment`) reads an encoder's [CLS] or a GPT's last token "
        "and flaxlm has no such head for T5; NER is left out as in the BERT studies (recipes.py).",
        "",
    ]
    out += R.curve_lines(ctx, CURVES, x=R.flops_at, xlabel="training FLOPs")
    rows = R.claim_rows(CLAIMS, downstream_comps, LABELS)
    out += [
        "## Published directions and ours",
        "",
        "Raffel et al.'s claims are about fine-tuned scores on GLUE, SuperGLUE, SQuAD, CNN/DM and WMT; "
        "ours are the two text-to-text tasks above, each row once per task. The published figures are "
        "the paper's (GLUE and SuperGLUE averages, CNN/DM ROUGE-2-F, T5-base-sized models on C4), "
        "given so that the size of each published gap can be read beside ours; only directions can be "
        "compared, since the tasks and scales differ. "
        "*Consistent* means our data cannot reject the claim of no difference: it supports it only as "
        "far as the interval in *ours* is narrow.",
        "",
        R.md_table(["source", "published", "our comparison", "ours", "verdict"], rows),
        "",
        "### Why ours may differ",
        "",
        *scale_lines(ctx),
        "",
    ]
    out += R.commands_lines(ctx)
    return R.write(ctx, report_dir, out)


def main(argv=None) -> int:
    return R.report_main("t5_objectives", write_report, argv)


if __name__ == "__main__":
    sys.exit(main())
