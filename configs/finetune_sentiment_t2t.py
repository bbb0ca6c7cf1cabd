"""The sentiment task as text to text (T5's classification, Raffel et al. 2020 §2.4), 3 seeds.

Run (INIT: a GPT or T5 `flaxlm train` workdir or `flaxlm export` folder; the model generates the label):
  flaxlm finetune --config=configs/finetune_sentiment_t2t.py --init=/tmp/t5 --workdir=/tmp/ft_sentiment_t2t

Data: configs/finetune_sentiment.py's movie-review snippets and splits; source = the snippet, target =
"negative" or "positive" (flaxlm/tasks/generation.py). Headline: test exact match of the greedy decode,
the accuracy of a model that answers with a label word (52.2% of the test split is the majority label).
The same task trains a T5 (encoder: the snippet; decoder: the word) and a GPT (snippet [SEP] word),
so encoder-decoder and decoder-only models are fine-tuned and scored alike, as in T5's comparisons;
configs/finetune_sentiment.py is the classification-head version for BERT and GPT.

Not yet measured end to end (experiments/t5_objectives runs it).
"""

from flaxlm.finetune import base_config


def get_config():
    c = base_config()
    c.task.update(
        kind="generation",
        dataset="movie_sentiment",
        max_seq_len=64,
        max_target_len=4,  # a label word (one or two pieces) and [SEP]
        max_new_tokens=4,
    )
    c.train.update(batch_size=32, epochs=3)
    c.seeds = (0, 1, 2)
    return c
