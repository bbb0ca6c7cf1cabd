"""T5-tiny (2 + 2 layers, hidden 128) with span corruption on the default corpus: the CPU seq2seq recipe.

Run:
  flaxlm train --config=configs/t5_tiny.py --workdir=/tmp/t5

T5's span corruption (Raffel et al., 2020): 15% of each piece's tokens in spans of mean length 3,
each span replaced by a sentinel in the encoder inputs; the decoder predicts the sentinels and the
spans (lm_loss / perplexity are over those decoder targets). Inputs of seq_len 128 hold pieces of
141 tokens; the targets are 29 long (flaxlm.data.builders.random_spans_helper). The trained
sentencepiece model has 7900 pieces; ids 7900..7999 are the 100 sentinels (<extra_id_0> = 7999).
Blocks are T5's (RMS norm, no biases, relative position bias, ReLU MLP, tied output).

T5's BERT-style objective (its Table 4) on the same model and vocabulary:
  flaxlm train --config=configs/t5_tiny.py --workdir=/tmp/t5_iid \
    --config.objective=iid_denoising --config.data.builder=iid_denoising
Each token is noise with probability 0.15 (data.noise_density), 90% of it replaced by the sentinel
<extra_id_0>, 10% by a random token; the decoder predicts the whole original piece, so its targets are
128 long (not 29) and a step costs more (experiments/common/flops.py counts it).
Measured in the T5 objectives study (experiments/t5_objectives/REPORT.md; this recipe at 600 of its
900 steps with 5% of the documents held out; 2026-12-07, this project's shared 2-core Xeon VM, about
3-6 minutes a run): span corruption reaches held-out loss 5.25 / 5.28 / 5.30 (pretraining seeds
0 / 1 / 2; accuracy 0.28 / 0.27 / 0.27) on its decoder targets, whose unigram model has 5.99; the
BERT-style objective (247 FLOPs-matched steps) 6.44 / 6.40 / 6.45 on the whole piece, unigram 6.67. T5's own
initialisation (model.init="t5", in T5_SWITCHES) matters here: with N(0, 0.02) everywhere, span
corruption was still at 7.08 after 150 steps, where T5's init gets to 5.98.
"""

from flaxlm.config import base_config
from flaxlm.models.t5 import T5_SWITCHES


def get_config():
    c = base_config()
    c.model.update(T5_SWITCHES)
    c.model.update(
        arch="t5",
        vocab_size=8000,
        hidden_size=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        head_dim=64,
        mlp_dim=512,
        max_len=128,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
    )
    c.objective = "span_corruption"
    c.data.update(builder="span_corruption", seq_len=128, num_sentinels=100)
    c.train.update(
        batch_size=32,
        num_steps=900,
        warmup_steps=90,
        learning_rate=2e-3,
        log_every=20,
        eval_every=300,
        checkpoint_every=300,
    )
    return c
