"""Binary sentiment of movie-review snippets (sequence classification on [CLS]), 3 seeds.

Run (INIT: a `flaxlm train` workdir, a `flaxlm export` folder or a Hugging Face model dir):
  flaxlm finetune --config=configs/finetune_sentiment.py --init=/tmp/bert_tiny --workdir=/tmp/ft_sentiment
LoRA / adapters / head only instead of full fine-tuning:
  ... --config.method=lora    (rank 8, alpha 16 on attention q/k/v/out; --config.lora.mlp=True: MLP too)
  ... --config.method=adapter (bottleneck 64 after attention and MLP, plus LayerNorms)

Data: the 10,605 rated snippets of vaderSentiment==3.3.2 (fetched with pip on
first use, flaxlm/tasks/classification.py), |mean rating| >= 0.5, 10,070
snippets, 80/10/10 by text hash.

Reaches: see docs/finetuning.md (measured).
"""

from flaxlm.finetune import base_config


def get_config():
    c = base_config()
    c.task.update(kind="classification", dataset="movie_sentiment", max_seq_len=64)
    c.train.update(batch_size=32, epochs=3)
    c.seeds = (0, 1, 2)
    return c
