"""ALBERT-base (Lan et al. 2020; albert-base-v2's shapes): 12 layers sharing one block, hidden 768,
embeddings factorised to 128, 12M parameters, MLM+SOP.

The paper trains 125k steps at batch 4096, sequence length 512 (10% of the
sequences shorter), with LAMB at learning rate 0.00176 and n-gram masking
(n <= 3, p(n) ∝ 1/n). flaxlm's optimizer is AdamW, so the batch and rate here
are BERT's; to follow the paper's batch on a pod:
  flaxlm train --config=configs/albert_base.py --workdir=runs/albert_base \
      --config.data.corpus='/data/corpus/*.txt' \
      --config.train.batch_size=4096 --config.train.num_steps=125000 --config.train.learning_rate=1.76e-3
On a TPU pod or a SLURM cluster the command goes through tools/launch/tpu_pod.sh
or tools/launch/slurm.sbatch (docs/scaling.md has them).

With the sentencepiece vocabulary of the released checkpoints (30000 pieces):
  --config.data.tokenizer=/path/to/spiece.model
(transformers' AlbertTokenizer lowercases text before it; flaxlm's tokenizer does not.)
A released checkpoint is imported with `flaxlm import-hf --hf_dir=albert-base-v2 --out=...`.

Reaches: not measured by flaxlm yet (the paper reports an average of 82.3 over
SQuAD1.1/2.0, MNLI, SST-2 and RACE for ALBERT-base). On this project's 2-core
CPU a step takes minutes: use it to check shapes only.
"""

from flaxlm.config import base_config


def get_config():
    c = base_config()
    c.model.update(
        vocab_size=30000,
        embedding_size=128,
        share_layers="all",
        activation="gelu_tanh",  # HF's gelu_new, ALBERT's default
        dropout_rate=0.0,  # ALBERT v2 trains without dropout
        attention_dropout_rate=0.0,
    )
    c.objective = "mlm_sop"
    c.data.update(builder="sop", seq_len=512, max_predictions=80, ngram=True)
    c.train.update(batch_size=256, num_steps=125_000, warmup_steps=3125, learning_rate=1e-4)
    return c
