"""The base recipes the BERT experiments share, at two scales and one smoke size.

CPU scale (runs on 2 CPU cores in a few hours): a small BERT, 4 layers,
hidden 256, 4 heads, MLP 1024, sequence 128, batch 32, on the embedded
Shakespeare corpus (flaxlm's default), with 5% of its scenes held out so
evaluations score ~540 sequences. Measured on the project's shared 2-core
AMD EPYC: one train step costs 5.3 CPU-seconds, about 3 s of wall time
when the machine is otherwise idle (experiments/README.md).

Full scale: BERT-base (configs/bert_base.py) with the paper's 128 → 512
recipe: 900k steps at sequence 128, then 100k at 512, batch 256, one
learning-rate schedule over all 1M steps, dupe_factor 10 as BERT's data
preparation. It needs a large corpus (--set data.corpus=...).

`quick(recipe)` is the same recipe shrunk to a tiny model and a few steps
(the multi-phase recipe keeps two short phases), used by the tests.
"""

from experiments.common.runner import Recipe

CPU = Recipe(
    scale="cpu",
    config="configs/bert_tiny.py",
    overrides={
        "model.num_layers": 4,
        "model.hidden_size": 256,
        "model.num_heads": 4,
        "model.mlp_dim": 1024,
        "model.max_len": 128,
        "model.vocab_size": 8000,
        "data.seq_len": 128,
        "data.max_predictions": 20,
        "data.validation_fraction": 0.05,
        "data.dupe_factor": 1,
        "train.batch_size": 32,
        "train.num_steps": 300,
        "train.warmup_steps": 30,
        "train.learning_rate": 1e-3,
        "train.log_every": 10,
        "train.eval_every": 75,
        "train.checkpoint_every": 75,
        "train.keep_checkpoints": 2,
    },
    note="4-layer BERT (hidden 256) on the embedded Shakespeare corpus, 300 steps of 32 × 128",
)

FULL = Recipe(
    scale="full",
    config="configs/bert_base.py",
    overrides={
        "data.dupe_factor": 10,
        "train.batch_size": 256,
        "train.learning_rate": 1e-4,
        "train.warmup_steps": 10_000,
        "train.num_steps": 1_000_000,  # the schedule spans both phases; phase 1 stops at 900k
        "train.log_every": 1_000,
        "train.eval_every": 50_000,
        "train.checkpoint_every": 10_000,
    },
    phases=(
        {"data.seq_len": 128, "data.max_predictions": 20, "train.stop_at_step": 900_000},
        {"data.seq_len": 512, "data.max_predictions": 80, "train.stop_at_step": 0},
    ),
    note="BERT-base, 900k steps at 256 × 128 then 100k at 256 × 512 on one schedule",
)

# The tiny model and data shape of the tests (tests/test_cli.py's SMALL), so a test session prepares
# the shared segment-pair data once.
QUICK_OVERRIDES = {
    "model.num_layers": 2,
    "model.hidden_size": 64,
    "model.num_heads": 2,
    "model.mlp_dim": 256,
    "model.vocab_size": 1000,
    "model.max_len": 64,
    "data.seq_len": 64,
    "data.max_predictions": 10,
    "data.validation_fraction": 0.02,
    "data.dupe_factor": 1,
    "train.batch_size": 16,
    "train.num_steps": 6,
    "train.warmup_steps": 1,
    "train.log_every": 1,
    "train.eval_every": 3,
    "train.checkpoint_every": 3,
    "train.eval_batches": 4,
}


def quick(recipe: Recipe) -> Recipe:
    """`recipe` at smoke size: same code path, tiny model, 6 steps (two phases of 4 + 2 if it has two)."""
    phases = None
    overrides = dict(QUICK_OVERRIDES)
    if len(recipe.phases) > 1:
        phases = (
            {"data.seq_len": 32, "data.max_predictions": 5, "train.stop_at_step": 4},
            {"data.seq_len": 64, "data.max_predictions": 10, "train.stop_at_step": 0},
        )
    return recipe.with_overrides(
        f"{recipe.scale}-quick", overrides, phases, note=f"smoke run of the {recipe.scale} recipe"
    )
