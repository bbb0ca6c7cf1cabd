"""T5-small (6 + 6 layers, hidden 512, 8 heads, vocabulary 32128: 60.5M parameters) with span corruption.

Run:
  flaxlm train --config=configs/t5_small.py --workdir=/tmp/t5_small

The shape of HF's t5-small (transformers.T5Config() defaults): T5.0 blocks (ReLU, tied output
projection scaled by D^-0.5). T5's pretraining setup: span corruption with 15% noise and mean
span 3, inputs of 512 tokens (pieces of 568 raw tokens, targets 114), 100 sentinels; the trained
sentencepiece model has 32028 pieces, so the sentinels are ids 32127 downward. For T5.1.1 set
--config.model.gated_mlp=True --config.model.activation=gelu_tanh --config.model.tie_embeddings=False
--config.model.dropout_rate=0. T5 used Adafactor with an inverse-square-root schedule; this recipe
uses flaxlm's AdamW. Not measured here (it needs an accelerator).
"""

from flaxlm.config import base_config
from flaxlm.models.t5 import T5_SWITCHES


def get_config():
    c = base_config()
    c.model.update(T5_SWITCHES)
    c.model.update(
        arch="t5",
        vocab_size=32128,
        hidden_size=512,
        num_layers=6,
        num_decoder_layers=6,
        num_heads=8,
        head_dim=64,
        mlp_dim=2048,
        max_len=512,
        dropout_rate=0.1,
        attention_dropout_rate=0.1,
    )
    c.objective = "span_corruption"
    c.data.update(builder="span_corruption", seq_len=512, num_sentinels=100)
    c.train.update(
        batch_size=128,
        num_steps=524_288,
        warmup_steps=10_000,
        learning_rate=1e-3,
        log_every=100,
        eval_every=5000,
        checkpoint_every=5000,
    )
    return c
