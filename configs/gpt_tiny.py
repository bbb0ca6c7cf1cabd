"""GPT-tiny (2 layers, hidden 128) with causal LM on the embedded Shakespeare corpus: the CPU decoder recipe.

Run:
  flaxlm train --config=configs/gpt_tiny.py --workdir=/tmp/gpt_tiny

Reaches (measured on 2 cores of an AMD EPYC, see README): 10.3 minutes end
to end at ~4,100 tokens/s; held-out perplexity 8064 (uniform over the
8000-token vocabulary) -> 244 in 600 steps.
"""

from flaxlm.config import base_config


def get_config():
    c = base_config()
    c.model.update(
        arch="gpt",
        vocab_size=8000,
        hidden_size=128,
        num_layers=2,
        num_heads=2,
        mlp_dim=512,
        max_len=128,
        type_vocab_size=0,
        pre_ln=True,
        layer_norm_eps=1e-5,
        activation="gelu_tanh",
    )
    c.objective = "clm"
    c.data.update(corpus="shakespeare", builder="causal", seq_len=128)
    c.train.update(
        batch_size=32,
        num_steps=600,
        warmup_steps=60,
        learning_rate=1e-3,
        b2=0.95,
        log_every=20,
        eval_every=200,
        checkpoint_every=200,
    )
    return c
