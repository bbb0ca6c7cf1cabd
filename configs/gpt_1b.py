"""A 1.3B-parameter GPT decoder (the GPT-3 XL shape: 24 layers, hidden 2048, 16 heads of 128), causal LM.

The model flaxlm uses to plan multi-device runs of a ~1B decoder; sized like
GPT-2 XL (1.5B) but with GPT-3 XL's wider, shallower blocks. The vocabulary
is 50304 (GPT-2's 50257 padded to a multiple of 128) so that it splits
evenly over a tensor-parallel axis of up to 128 devices. Per-device memory
and FLOPs on a given mesh, without the devices:
  python tools/simulate_mesh.py --model gpt_1b --seq 2048 --batch 512 --mesh 64x1x1,8x8x1,16x4x4

On a TPU pod (see docs/scaling.md):
  tools/launch/tpu_pod.sh --name=gpt1b --zone=ZONE --accelerator=v4-64 --bucket=BUCKET -- \\
      --config=configs/gpt_1b.py --config.mesh.fsdp=8 '--config.data.corpus=/mnt/gcs/corpus/*.txt'

Reaches: not measured by flaxlm yet (GPT-3 XL was trained on 300B tokens). Needs accelerators:
parameters and Adam state take 15.8 GB in float32, so split them with config.mesh.fsdp.
"""

from flaxlm.config import base_config


def get_config():
    c = base_config()
    c.model.update(
        arch="gpt",
        vocab_size=50304,
        hidden_size=2048,
        num_layers=24,
        num_heads=16,
        mlp_dim=8192,
        max_len=2048,
        type_vocab_size=0,
        pre_ln=True,
        layer_norm_eps=1e-5,
        activation="gelu_tanh",
    )
    c.objective = "clm"
    c.data.update(builder="causal", seq_len=2048, tokenizer_type="bpe")
    c.train.update(
        batch_size=512,
        num_steps=300_000,
        warmup_steps=2000,
        learning_rate=2e-4,
        b2=0.95,
        eps=1e-8,
        weight_decay=0.1,
        schedule="cosine",
    )
    return c
