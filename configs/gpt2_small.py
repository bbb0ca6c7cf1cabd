"""GPT-2 small (Radford et al. 2019): 12 layers, hidden 768, 124M parameters, causal LM.

  flaxlm train --config=configs/gpt2_small.py --workdir=runs/gpt2_small \
      --config.data.corpus='/data/corpus/*.txt'
(on a TPU pod: tools/launch/tpu_pod.sh, see docs/scaling.md)

Documents are packed into rows of 1024 tokens with per-document positions
and segment ids, so attention and the loss never cross a document.
Reaches: not measured by flaxlm yet. GPT-2's own BPE vocabulary is 50257
tokens; by default flaxlm trains a sentencepiece BPE model of that size.
"""

from flaxlm.config import base_config


def get_config():
    c = base_config()
    c.model.update(
        arch="gpt",
        vocab_size=50257,
        hidden_size=768,
        num_layers=12,
        num_heads=12,
        mlp_dim=3072,
        max_len=1024,
        type_vocab_size=0,
        pre_ln=True,
        layer_norm_eps=1e-5,
        activation="gelu_tanh",
    )
    c.objective = "clm"
    c.data.update(builder="causal", seq_len=1024, tokenizer_type="bpe")
    c.train.update(
        batch_size=512,
        num_steps=600_000,
        warmup_steps=2000,
        learning_rate=6e-4,
        b2=0.95,
        eps=1e-8,
        weight_decay=0.1,
        schedule="cosine",
    )
    return c
