"""T5's comparison of pretraining objectives (Raffel et al. 2020, §3.3 and Table 4) at matched FLOPs.

Four runs per pretraining seed on one corpus, tokenizer (7,900 pieces + 100 sentinels), batch,
sequence length, optimizer and learning rate:
  iid_denoising    T5 2+2, T5's "BERT-style" objective: 15% of the tokens corrupted (90% to one
                   sentinel, 10% to a random token), the decoder predicts the whole original piece
  span_corruption  T5 2+2, T5's span corruption: 15% in spans of mean length 3, each span one
                   sentinel; the decoder predicts the sentinels and the spans (targets 29 long)
  prefix_lm        GPT 4 layers, prefix LM: each document piece split at a uniform point, the prefix
                   attended bidirectionally and not scored, the continuation predicted left to right
  clm              GPT 4 layers, causal LM: every next token, packed documents

Architecture choice. Table 4 compares its objectives on T5's encoder-decoder; Table 2 compares
encoder-decoder and decoder-only stacks (a prefix LM and an LM among them) and pairs an encoder-
decoder of L + L layers with a decoder-only stack of 2L layers at the same parameters (its "2P"
rows). We follow that pairing: the denoising objectives run on configs/t5_tiny.py's T5 (2 encoder +
2 decoder layers, hidden 128, 2 heads of 64, MLP 512, T5's blocks), the two language-model
objectives on the GPT stack of configs/prefix_lm_tiny.py with 4 layers of the same shape (GPT's
blocks: pre-LN LayerNorm, GELU, learned positions), so that the block parameters are about equal
(flaxlm's parameter counts are in the report). Compute is matched separately, in steps: a GPT
step over 128 positions × 4 layers costs more than a span-corruption step (2 layers over 128 inputs,
2 over 29 targets), and i.i.d. denoising's 128 decoder positions cost more still, so each variant's
steps (and its warmup, eval and checkpoint intervals) are scaled by FLOPs(span corruption run) /
FLOPs(its run) (experiments/common/flops.py). Span corruption, T5's final choice, is the budget.

Downstream, every pretrained run is fine-tuned as text to text, as T5 fine-tunes all its models:
sentiment with the label word as the target (configs/finetune_sentiment_t2t.py, exact match) and
WordNet definitions (configs/finetune_definitions.py, ROUGE-L). T5 and GPT thus share the
fine-tuning code and the scoring; the classification head (configs/finetune_sentiment.py) needs an
encoder's [CLS] or a GPT and is not used, so that no architecture is scored differently.

  python -m experiments.t5_objectives.sweep --quick     # smoke run (experiments/t5_objectives/runs_quick)
  python -m experiments.t5_objectives.sweep             # CPU scale -> experiments/t5_objectives/REPORT.md
"""

import dataclasses
import os
import sys
from typing import Sequence

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from experiments.common import flops as flops_lib  # noqa: E402
from experiments.common import main as main_lib  # noqa: E402
from experiments.common import recipes  # noqa: E402
from experiments.common import runner  # noqa: E402
from experiments.common.runner import Variant  # noqa: E402

# configs/t5_tiny.py's model is the recipe's; the decoder-only variants switch to GPT's blocks
# (configs/prefix_lm_tiny.py) with twice the layers: 4 × 128 wide, 2 heads of 64, MLP 512.
GPT = {
    "model.arch": "gpt",
    "model.num_layers": 4,
    "model.num_decoder_layers": 0,
    "model.norm": "layer",
    "model.use_bias": True,
    "model.scale_attention": True,
    "model.position_embedding": "learned",
    "model.layer_norm_eps": 1e-5,
    "model.activation": "gelu_tanh",
    "model.head_dim": 0,
    "model.init": "normal",  # GPT-2's N(0, 0.02), not T5's fan-in scaled normals
    # T5_SWITCHES drop BERT's pooler; GPT builds none either way, but flaxlm finetune rebuilds the
    # backbone with TransformerConfig's default pair_head, which needs pooler=True (prefix_lm_tiny's).
    "model.pooler": True,
}

VARIANTS = (
    Variant(
        "iid_denoising",
        "BERT-style (i.i.d. denoising, T5)",
        {"objective": "iid_denoising", "data.builder": "iid_denoising"},
        "encoder-decoder; 15% of tokens corrupted (90% one sentinel, 10% random), the decoder "
        "predicts the original piece",
    ),
    Variant(
        "span_corruption",
        "span corruption (T5)",
        {"objective": "span_corruption", "data.builder": "span_corruption"},
        "encoder-decoder; 15% in spans of mean length 3, each replaced by a sentinel, the decoder "
        "predicts sentinels and spans",
    ),
    Variant(
        "prefix_lm",
        "prefix LM (decoder-only)",
        {**GPT, "objective": "prefix_lm", "data.builder": "prefix_lm"},
        "4-layer GPT; a uniform prefix of each document piece attended bidirectionally, the rest "
        "predicted left to right",
    ),
    Variant(
        "clm",
        "LM (decoder-only)",
        {**GPT, "objective": "clm", "data.builder": "causal"},
        "4-layer GPT predicting every next token of packed documents",
    ),
)
REFERENCE = "span_corruption"  # its steps are the budget; the others get the same FLOPs

# The CPU recipe: configs/t5_tiny.py on the default corpus at the BERT studies' batch, length and
# step count (experiments/common/recipes.py: 600 steps of 32 × 128 at lr 2e-3 with 60 warmup steps,
# 5% of the documents held out).
# Fine-tuning: both text-to-text tasks with the same flags (2000 training examples of at most 64
# tokens, 2 epochs at lr 1e-3, 2 seeds), scored on fixed 300-example dev and test subsets: greedy
# decoding on 2 CPU cores is what a fine-tuning run spends most on, so the subsets stay small.
CPU = runner.Recipe(
    scale="cpu",
    config="configs/t5_tiny.py",
    overrides={
        "model.max_len": 128,
        "data.corpus": "default",
        "data.seq_len": 128,
        "data.validation_fraction": 0.05,
        "data.dupe_factor": 1,
        "train.batch_size": 32,
        "train.num_steps": 600,
        "train.warmup_steps": 60,
        "train.learning_rate": 2e-3,
        "train.log_every": 10,
        "train.eval_every": 150,
        "train.checkpoint_every": 300,
        "train.keep_checkpoints": 2,
    },
    note="T5 2+2 / GPT 4 layers (hidden 128) on the 4 embedded corpora, span corruption's 600 steps "
    "of 32 × 128 as the FLOPs budget",
    finetune=(
        "--config.task.max_train_examples=2000",
        "--config.task.max_eval_examples=300",
        "--config.task.max_seq_len=64",
        "--config.train.epochs=2",
        "--config.learning_rate.full=1e-3",
        "--config.seeds=0,1",
        "--config.save_params=false",
    ),
    tasks=("sentiment_t2t", "definitions"),
)


def quick(recipe: runner.Recipe) -> runner.Recipe:
    """recipes.quick's smoke size; decoding scored on 16 examples so the generation tasks stay short."""
    small = recipes.quick(recipe)
    return dataclasses.replace(
        small, finetune=(*small.finetune, "--config.task.max_eval_examples=16", "--config.save_params=false")
    )


def matched_flops(recipe: runner.Recipe, variants: Sequence[Variant]) -> list[Variant]:
    """Each variant with its steps scaled to the span-corruption run's training FLOPs."""
    ref = next(v for v in VARIANTS if v.name == REFERENCE)
    return flops_lib.matched_flops(recipe, variants, reference=ref)


def _write_report(runs_dir: str, report_dir: str) -> str:
    from experiments.t5_objectives import report

    return report.write_report(runs_dir, report_dir)


EXPERIMENT = main_lib.Experiment(
    name="t5_objectives",
    title="T5's objectives: BERT-style, span corruption, prefix LM and LM at matched training FLOPs",
    variants=VARIANTS,
    recipes={"cpu": CPU},
    quick=quick,
    evals=(),
    default_seeds={"cpu": (0, 1, 2)},
    write_report=_write_report,
    adapt=matched_flops,
)

if __name__ == "__main__":
    sys.exit(main_lib.main(EXPERIMENT))
