"""ELECTRA-Small (Clark et al. 2020, Table 6 / the released ELECTRA code) on the configured corpus.

Run (an accelerator's job, not a CPU's: 1M steps of batch 128):
  flaxlm train --config=configs/electra_small.py --workdir=/tmp/electra_small --config.data.corpus=...

The discriminator is HF's electra-small-discriminator shape (embeddings 128 wide projected to
hidden 256, 12 layers, 4 heads, MLP 1024, vocabulary 30522: 13,549,057 parameters, as transformers'
ElectraForPreTraining); the generator is 1/4 of its width (hidden 64, 1 head, MLP 256, 12 layers;
the code's generator_hidden_size 0.25) on the shared embeddings. λ = 50, 15% masking, sequence
length 128, peak learning rate 5e-4 with 10k warm-up steps and linear decay, weight decay 0.01,
Adam eps 1e-6, dropout 0.1, single segments without NSP. Give it the WordPiece vocabulary of
30522 (--config.data.tokenizer=vocab.txt) to be the paper's model; HF export writes the
discriminator (flaxlm export --format=hf).

Reaches: not measured here (nothing of this size runs on the project's CPU machines).
"""

from flaxlm.config import base_config


def get_config():
    c = base_config()
    c.model.update(
        vocab_size=30522,
        embedding_size=128,
        hidden_size=256,
        num_layers=12,
        num_heads=4,
        mlp_dim=1024,
        max_len=512,
        pooler=False,
        generator_size=0.25,
    )
    c.objective = "electra"
    c.rtd_weight = 50.0
    c.data.update(builder="doc_sentences", seq_len=128, mask_prob=0.15, max_predictions=20)
    c.train.update(
        batch_size=128,
        num_steps=1_000_000,
        warmup_steps=10_000,
        learning_rate=5e-4,
        weight_decay=0.01,
    )
    return c
