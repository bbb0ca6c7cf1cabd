"""BERT-base (Devlin et al. 2019): 12 layers, hidden 768, 110M parameters, MLM+NSP.

The paper's recipe is 1M steps at batch 256: 90% at sequence length 128,
then 10% at 512. That is two commands on one workdir; the learning-rate
schedule spans all 1M steps:
  flaxlm train --config=configs/bert_base.py --workdir=runs/bert_base \
      --config.train.stop_at_step=900000 --config.data.corpus='/data/corpus/*.txt'
  flaxlm train --config=configs/bert_base.py --workdir=runs/bert_base \
      --config.data.seq_len=512 --config.data.max_predictions=80 --config.data.corpus='/data/corpus/*.txt'
On a TPU pod or a SLURM cluster the same two commands go through
tools/launch/tpu_pod.sh or tools/launch/slurm.sbatch (docs/scaling.md has them).

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
