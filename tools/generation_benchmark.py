"""Times generation with and without the KV cache, and sentence scoring, on one model shape.

  python tools/generation_benchmark.py [--config=configs/gpt_tiny.py] [--batch 1 8] [--prompt_len 16]
      [--new_tokens 112] [--repeats 3]

The model is randomly initialised (speed does not depend on the weights) and
no EOS is set, so every row generates exactly --new_tokens tokens. Each
setting is compiled and run once before it is timed; the best of --repeats
runs is reported, as new tokens per second over all rows. Prompts are real
text: the first sentences of the embedded corpus, tokenized with a
sentencepiece model trained on it (cached in $FLAXLM_DATA_DIR).
"""

import argparse
import functools
import importlib.util
import time

import jax
import numpy as np

from flaxlm import generate as gen
from flaxlm import models
from flaxlm import score
from flaxlm.data import corpus as corpus_lib
from flaxlm.data import prepare as prepare_lib


def load_config(path: str):
    spec = importlib.util.spec_from_file_location("benchmark_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def best_time(fn, repeats: int) -> float:
    fn()  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/gpt_tiny.py")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt_len", type=int, default=16)
    parser.add_argument("--new_tokens", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=256, help="scoring: sentences per timed run")
    args = parser.parse_args()

    config = load_config(args.config)
    mc = dict(config.model.to_dict(), pair_head=False)
    model = models.get_model(mc)
    z = np.zeros((1, 8), np.int32)
    params = jax.jit(lambda: model.init(jax.random.key(0), z, z, z, deterministic=True)["params"])()
    tok = prepare_lib.get_tokenizer(config.data, config.model.vocab_size, prepare_lib.default_data_dir())
    sentences = [s for d in corpus_lib.read_corpus("default")[:50] for s in corpus_lib.document_sentences(d)]
    ids = [x for x in tok.encode_batch(sentences) if len(x) >= args.prompt_len]
    n_params = sum(x.size for x in jax.tree.leaves(params))
    print(
        f"{config.model.arch}: {config.model.num_layers} layers, hidden {config.model.hidden_size}, "
        f"vocab {config.model.vocab_size}, {n_params:,} parameters; devices: {jax.devices()[0].device_kind}"
    )
    print(f"generation: prompt {args.prompt_len} tokens, {args.new_tokens} new tokens per row, greedy")
    print("| batch | cached tokens/s | uncached tokens/s | speed-up |")
    print("|---:|---:|---:|---:|")
    for b in args.batch:
        prompts = [x[: args.prompt_len] for x in ids[:b]]
        rates = []
        for use_cache in (True, False):
            run = functools.partial(
                gen.generate,
                model,
                params,
                prompts,
                max_new_tokens=args.new_tokens,
                eos_id=None,
                use_cache=use_cache,
            )
            rates.append(b * args.new_tokens / best_time(run, args.repeats))
        print(f"| {b} | {rates[0]:,.0f} | {rates[1]:,.0f} | {rates[0] / rates[1]:.1f}x |", flush=True)

    fits = lambda text: 2 <= len(tok.encode(text)) <= config.model.max_len - 2  # with [CLS] and [SEP]
    texts = [text for text in sentences if fits(text)][: args.sentences]
    tokens = sum(len(x) for x in tok.encode_batch(texts))
    seconds = best_time(lambda: score.clm_scores(model, params, tok.encode_batch(texts)), args.repeats)
    rate = len(texts) / seconds
    print(
        f"CLM scoring: {len(texts)} sentences ({tokens} tokens) in {seconds:.2f} s: {rate:,.0f} sentences/s"
    )
    bert_cfg = dict(mc, arch="bert", pre_ln=False, type_vocab_size=2, pair_head=False)
    bert = models.get_model(bert_cfg)
    bert_params = jax.jit(lambda: bert.init(jax.random.key(0), z, z, z, z, deterministic=True)["params"])()
    pll = lambda: score.pll_scores(
        bert, bert_params, tok.encode_batch(texts), cls_id=tok.cls_id, sep_id=tok.sep_id, mask_id=tok.mask_id
    )
    seconds = best_time(pll, args.repeats)
    print(
        f"PLL scoring (a BERT of the same shape): {len(texts)} sentences, {tokens} masked copies, "
        f"in {seconds:.2f} s: {len(texts) / seconds:,.0f} sentences/s"
    )


if __name__ == "__main__":
    main()
