"""RoBERTa-base (Liu et al. 2019): BERT-base's encoder (12 layers, hidden 768, 125M parameters) trained
with MLM alone on FULL-SENTENCES inputs, dynamic masking, a byte-level BPE vocabulary and a big batch.

The paper's recipe (its Table 9): 500k steps at batch 8192, sequence length 512, peak learning rate
6e-4 after 24k warmup steps then linear decay, AdamW with beta2 0.98 and epsilon 1e-6, weight decay
0.01, dropout 0.1. The batch of 8192 sequences is one optimizer step of grad_accum_steps = 32
micro-batches of 256 (256 x 32 = 8192); on more devices lower grad_accum_steps and keep batch_size:
  flaxlm train --config=configs/roberta_base.py --workdir=runs/roberta_base \
      --config.data.corpus='/data/corpus/*.txt' --config.data.tokenizer=/path/to/roberta-base/vocab.json
On a TPU pod or a SLURM cluster the command goes through tools/launch/tpu_pod.sh
or tools/launch/slurm.sbatch (docs/scaling.md has them).

The vocabulary is RoBERTa's (vocab.json + merges.txt, 50265 entries: GPT-2's byte-level BPE with
<s> <pad> </s> <unk> <mask>, which flaxlm uses as [CLS] [PAD] [SEP] [UNK] [MASK]). Positions read the
table from row 2 (position_offset=2: HF RoBERTa numbers tokens from padding_idx + 1 = 2), so the table
has 514 rows like roberta-base's, and `flaxlm export --format=hf` writes a RobertaForMaskedLM (that
needs the tokenizer's <pad> at id 1, as in RoBERTa's vocab.json). A released checkpoint is imported
with `flaxlm import-hf --hf_dir=roberta-base --out=...`. One difference from the paper: flaxlm clips
gradients at global norm 1.0 (Table 9 lists no clipping; --config.train.grad_clip_norm=1e9 to follow).

Reaches: not measured by flaxlm (the paper reports MNLI 87.6 for RoBERTa-base, trained on 160GB of
text). On this project's 2-core CPU a step of batch 8192 takes hours: use it to check shapes only.
"""

from flaxlm.config import base_config


def get_config():
    c = base_config()  # the schema's defaults are BERT-base: post-LN, gelu, dropout 0.1
    c.model.update(
        vocab_size=50265,
        max_len=512,
        position_offset=2,
        type_vocab_size=1,
        layer_norm_eps=1e-5,  # fairseq's, as roberta-base's config.json
        pooler=False,  # HF RobertaForMaskedLM has none; no objective here reads [CLS]
    )
    c.objective = "mlm"  # no NSP
    c.data.update(
        builder="full_sentences", seq_len=512, max_predictions=80, masking="dynamic", mask_prob=0.15
    )
    c.train.update(
        batch_size=8192,  # per optimizer step: 256 sequences x grad_accum_steps 32
        grad_accum_steps=32,
        num_steps=500_000,
        warmup_steps=24_000,
        learning_rate=6e-4,
        b2=0.98,
        eps=1e-6,
        weight_decay=0.01,
    )
    return c
