"""Extractive QA (start/end logits, best-span decoding), 3 seeds; SQuAD-style exact match and F1.

Run on the cloze questions built from the embedded Shakespeare corpus:
  flaxlm finetune --config=configs/finetune_qa.py --init=/tmp/bert_tiny --workdir=/tmp/ft_qa
On your own SQuAD v1.1 JSON:
  ... --config.task.train_file=train.json --config.task.dev_file=dev.json --config.task.test_file=test.json

Reaches: see docs/finetuning.md (measured).
"""

from flaxlm.finetune import base_config


def get_config():
    c = base_config()
    c.task.update(
        kind="qa",
        dataset="shakespeare_cloze",
        max_seq_len=128,
        max_query_len=40,
        doc_stride=64,
        max_answer_len=8,
    )
    c.task.max_train_examples = 4000  # of 10,865: keeps a CPU run short; 0 trains on all
    c.train.update(batch_size=32, epochs=3)
    c.seeds = (0, 1, 2)
    return c
