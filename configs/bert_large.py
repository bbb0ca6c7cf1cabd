"""BERT-large (Devlin et al. 2019): 24 layers, hidden 1024, 16 heads, 335M parameters, MLM+NSP.

  flaxlm train --config=configs/bert_large.py --workdir=runs/bert_large \
      --config.data.corpus='/data/corpus/*.txt' --config.mesh.fsdp=8
(on a TPU pod: tools/launch/tpu_pod.sh, see docs/scaling.md; per-device memory and FLOPs on a
mesh: python tools/simulate_mesh.py --model bert_large --seq 512 --batch 256 --mesh 64x4x1)

Reaches: not measured by flaxlm yet (the paper: MNLI 86.7, SQuAD v1.1 F1 90.9).
Needs accelerators; on CPU use it only to check shapes and memory.
"""

from flaxlm.config import base_config


def get_config():
    c = base_config()
    c.model.update(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096)
    c.train.update(batch_size=256, num_steps=1_000_000, warmup_steps=10_000, learning_rate=1e-4)
    return c
