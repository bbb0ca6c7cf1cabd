"""BERT-base (Devlin et al. 2019): 12 layers, hidden 768, 110M parameters, MLM+NSP.

The paper's recipe is 1M steps at batch 256: 90% at sequence length 128,
then 10% at 512 on one learning-rate schedule. Run the first phase with
--config.train.num_steps=900000 --config.train.schedule_steps=1000000 and
the second as a second command on the same workdir with
--config.train.num_steps=1000000 --config.train.schedule_steps=1000000
--config.data.seq_len=512 --config.data.max_predictions=80
(experiments/common/recipes.py FULL does exactly this). On a TPU pod or GPU node:
  flaxlm train --config=configs/bert_base.py --workdir=gs://BUCKET/bert_base \
      --config.data.corpus='/data/corpus/*.txt'

With the WordPiece vocabulary of the released checkpoints (30522 tokens):
  --config.data.tokenizer=/path/to/vocab.txt

Reaches: not measured by flaxlm yet (the paper reports MNLI 84.6 after
fine-tuning, with BooksCorpus + English Wikipedia). On this project's
2-core CPU a step of batch 256 takes minutes: use it to check shapes only.
"""

from flaxlm.config import base_config


def get_config():
    c = base_config()  # the schema's defaults are BERT-base
    c.train.update(batch_size=256, num_steps=1_000_000, warmup_steps=10_000, learning_rate=1e-4)
    return c
