"""How fast the input pipeline makes batches, next to how fast a BERT-base train step eats them.

  python tools/data_benchmark.py                 # all builders, the default corpus, seq 128
  python tools/data_benchmark.py --batches 50 --builders segment_pair,causal

Prints one JSON line per pipeline variant (examples/s and tokens/s of the
grain pipeline alone, read in the calling thread, i.e. on one core, after
preparation), one line for the trainer (BERT-base, seq 128, the same
batch, full train step on this machine's default JAX backend), and the
ratio pipeline/trainer for each variant. The preparation itself (tokenize +
build + write ArrayRecord, done once per setting) is timed separately.
"""

import argparse
import json
import os
import sys
import time

import jax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from flaxlm import config as config_lib  # noqa: E402
from flaxlm import models  # noqa: E402
from flaxlm import optimizer as optimizer_lib  # noqa: E402
from flaxlm import train as train_lib  # noqa: E402
from flaxlm.data import pipeline  # noqa: E402

VARIANTS = {  # name: (builder, objective, data overrides)
    "segment_pair+nsp": ("segment_pair", "mlm_nsp", {}),
    "segment_pair+nsp/static": ("segment_pair", "mlm_nsp", {"masking": "static"}),
    "segment_pair+nsp/whole_word": ("segment_pair", "mlm_nsp", {"whole_word": True}),
    "segment_pair+nsp/span": ("segment_pair", "mlm_nsp", {"span": True}),
    "sentence_pair+nsp": ("sentence_pair", "mlm_nsp", {}),
    "full_sentences": ("full_sentences", "mlm", {}),
    "doc_sentences": ("doc_sentences", "mlm", {}),
    "sop": ("sop", "mlm_sop", {}),
    "causal": ("causal", "clm", {}),
}


def variant_config(builder, objective, data_overrides, args):
    c = config_lib.base_config()
    if builder == "causal":
        c.model.update(arch="gpt", type_vocab_size=0, pre_ln=True)
    c.objective = objective
    c.model.vocab_size = args.vocab_size
    c.data.update(
        builder=builder,
        seq_len=args.seq_len,
        max_predictions=args.max_predictions,
        corpus=args.corpus,
        data_dir=args.data_dir,
        **data_overrides,
    )
    return c


def pipeline_rate(config, args):
    t = time.perf_counter()
    data = train_lib.prepare_data(config)
    prep_s = time.perf_counter() - t
    it = pipeline.train_iterator(data, global_batch=args.batch, seed=0, num_threads=0, prefetch=1)
    next(it)  # warm up (opens files)
    t = time.perf_counter()
    tokens = sum(pipeline.batch_tokens(next(it)) for _ in range(args.batches))
    dt = time.perf_counter() - t
    return {
        "examples_per_s": args.batches * args.batch / dt,
        "tokens_per_s": tokens / dt,
        "prepare_s": prep_s,
        "train_examples": len(data.train),
    }


def trainer_rate(args):
    """Examples/s of a full BERT-base train step (fwd, bwd, AdamW) at this batch and seq_len."""
    c = config_lib.base_config()
    c.data.update(seq_len=args.seq_len, max_predictions=args.max_predictions)
    c.train.batch_size = args.batch
    model = models.get_model(train_lib.model_config(c))
    tx = optimizer_lib.make_optimizer(c.train)
    runner = train_lib.Runner(
        c, model, tx, optimizer_lib.learning_rate_schedule(c.train), devices=jax.devices()[:1]
    )
    rng = jax.random.key(0)
    state = runner.init(model, tx, rng)
    batch = train_lib.dummy_batch(c, args.batch)
    batch["segment_ids"][:] = 1
    batch["mlm_weights"][:] = 1.0
    state, m = runner.train_step(state, batch, rng)
    jax.block_until_ready(m)
    t = time.perf_counter()
    for _ in range(args.trainer_steps):
        state, m = runner.train_step(state, batch, rng)
    jax.block_until_ready(m)
    dt = (time.perf_counter() - t) / args.trainer_steps
    return {"examples_per_s": args.batch / dt, "tokens_per_s": args.batch * args.seq_len / dt, "step_s": dt}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default="default")
    p.add_argument("--data_dir", default="")
    p.add_argument(
        "--builders", default=",".join(VARIANTS), help="comma-separated names from: " + ", ".join(VARIANTS)
    )
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--max_predictions", type=int, default=20)
    p.add_argument("--vocab_size", type=int, default=8000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--trainer_steps", type=int, default=3)
    args = p.parse_args()

    machine = {
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "cpu_count": os.cpu_count(),
    }
    trainer = trainer_rate(args)
    print(
        json.dumps(
            {"what": "trainer bert_base", "seq_len": args.seq_len, "batch": args.batch, **trainer, **machine}
        ),
        flush=True,
    )
    for name in args.builders.split(","):
        builder, objective, overrides = VARIANTS[name]
        rate = pipeline_rate(variant_config(builder, objective, overrides, args), args)
        print(
            json.dumps(
                {
                    "what": f"pipeline {name}",
                    "seq_len": args.seq_len,
                    "batch": args.batch,
                    **rate,
                    "x_trainer": rate["examples_per_s"] / trainer["examples_per_s"],
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
