"""The `flaxlm` command: `flaxlm SUBCOMMAND --config=configs/X.py [--config.a.b=v ...] [flags]`.

Subcommands:
  train      pretrain (resumes from the latest checkpoint in --workdir)
  prepare    tokenize and write the ArrayRecord shards for a config, nothing else
  tokenizer  train (or reuse) the sentencepiece model of a config's corpus
  export     write a checkpoint's parameters alone: flaxlm export --workdir=DIR --out=PATH [--step=N]
             (PATH/params.msgpack + PATH/model_config.json; read with flaxlm.checkpoint.load_params);
             with --format=hf a Hugging Face directory instead (config.json, model.safetensors, tokenizer)
  import-hf  a Hugging Face BERT/GPT-2 directory -> the export format (+ tokenizer files):
             flaxlm import-hf --hf_dir=DIR --out=PATH
  generate   continue prompts with a decoder: flaxlm generate --model=PATH --prompt="..." [--prompts_file=F]
             [--max_new_tokens=N --temperature=T --top_k=K --top_p=P --seed=S --num_samples=M]
  score      sentence log-probabilities (decoder) or pseudo-log-likelihoods (encoder):
             flaxlm score --model=PATH --input=FILE.txt|.jsonl [--out=FILE.jsonl] [--mode=clm|pll]
             (generate/score: PATH is a train --workdir, an export or a Hugging Face model dir)
  finetune   fine-tune a pretrained model on a task, over seeds (results.json in --workdir):
             flaxlm finetune --config=configs/finetune_sentiment.py --init=CKPT_OR_EXPORT_OR_HF --workdir=DIR

Exit codes: 0 done (or stopped by SIGTERM/SIGINT after saving a checkpoint: rerun to resume),
2 a problem the message says how to fix (config, data, workdir, checkpoint), 3 training stopped
on a non-finite loss or gradient (config.train.nonfinite='stop'), 130 a second Ctrl-C.
"""

import logging
import sys

from absl import app
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

SUBCOMMANDS = ("train", "prepare", "tokenizer", "export", "import-hf", "generate", "score", "finetune")

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file (configs/*.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where metrics, TensorBoard events and checkpoints go.")
_OUT = flags.DEFINE_string(
    "out", None, "export: the folder to write params.msgpack and model_config.json to; score: a .jsonl."
)
_STEP = flags.DEFINE_integer("step", None, "export: the checkpoint step (default: the latest).")
_FORMAT = flags.DEFINE_enum(
    "format",
    "flaxlm",
    ["flaxlm", "hf"],
    "export: 'flaxlm' (params.msgpack) or 'hf' (a Hugging Face directory).",
)
_HF_DIR = flags.DEFINE_string("hf_dir", None, "import-hf: the Hugging Face model directory to read.")
# generate / score
_MODEL = flags.DEFINE_string(
    "model", None, "generate/score: a train --workdir, an export or an HF model dir."
)
_TOKENIZER = flags.DEFINE_string(
    "tokenizer", None, "generate/score: a .model or vocab.txt (default: the one the model was trained with)."
)
_PROMPT = flags.DEFINE_multi_string("prompt", [], "generate: a prompt (repeat the flag for several).")
_PROMPTS_FILE = flags.DEFINE_string("prompts_file", None, "generate: a file of prompts, one per line.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 50, "generate: new tokens per prompt at most.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "generate: sampling temperature; 0 = greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "generate: sample among the k most likely tokens (0 = all).")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "generate: nucleus sampling mass (1 = all tokens).")
_SEED = flags.DEFINE_integer("seed", 0, "generate: sampling seed (same seed, same text).")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "generate: continuations per prompt.")
_INPUT = flags.DEFINE_string(
    "input", None, "score: sentences, .txt (one per line) or .jsonl ({'text': ...})."
)
_MODE = flags.DEFINE_enum(
    "mode", None, ["clm", "pll"], "score: clm (decoders) or pll (encoders); default by arch."
)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 32, "generate/score: rows (prompt samples, sentences) per batch."
)
_INIT = flags.DEFINE_string(
    "init", None, "finetune: a flaxlm train --workdir, a flaxlm export folder or a Hugging Face model dir."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    None,
    "train on several processes: HOST:PORT of process 0 (see flaxlm/distributed.py).",
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "train on several processes: how many.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "train on several processes: this one's id, 0..N-1.")


def _usage() -> str:
    return (
        f"usage: flaxlm {{{','.join(SUBCOMMANDS)}}} --config=configs/bert_tiny.py [--workdir=DIR] "
        "[--config.FIELD=VALUE ...]"
    )


def _main(command: str):
    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments {argv[1:]}; " + _usage())
        from flaxlm import config as config_lib
        from flaxlm import errors
        from flaxlm import train as train_lib
        from flaxlm.data import prepare as prepare_lib

        # Our progress at INFO; the libraries' (orbax, tfds, jax) only from WARNING up.
        absl_logging.set_verbosity(absl_logging.WARNING)
        logging.getLogger("flaxlm").setLevel(logging.INFO)
        config = _CONFIG.value
        try:
            if command == "import-hf":
                if not _HF_DIR.value or not _OUT.value:
                    raise app.UsageError("usage: flaxlm import-hf --hf_dir=DIR --out=PATH")
                from flaxlm import hf

                meta = hf.import_hf(_HF_DIR.value, _OUT.value)
                tok = f"tokenizer {meta['tokenizer']}" if meta["tokenizer"] else "no tokenizer files found"
                heads = ", ".join(meta["heads"]) or "none"
                print(f"flaxlm: imported {meta['model']['arch']} (heads: {heads}; {tok}) to {_OUT.value}")
                return
            if command == "export" and _FORMAT.value == "hf":
                if not _WORKDIR.value or not _OUT.value:
                    raise app.UsageError(
                        "usage: flaxlm export --workdir=DIR --out=PATH --format=hf [--step=N]"
                    )
                from flaxlm import hf

                step, tok = hf.export_workdir(_WORKDIR.value, _OUT.value, _STEP.value)
                note = "" if tok else " (the run's tokenizer was not found on this machine: none written)"
                print(
                    f"flaxlm: exported step {step} in Hugging Face format to {_OUT.value}{note}", flush=True
                )
                return
            if command == "export":  # the checkpoint holds its own config
                if not _WORKDIR.value or not _OUT.value:
                    raise app.UsageError("usage: flaxlm export --workdir=DIR --out=PATH [--step=N]")
                from flaxlm import checkpoint as ckpt

                path, step = ckpt.export_params(_WORKDIR.value, _OUT.value, _STEP.value)
                print(f"flaxlm: exported the parameters of step {step} to {path}", flush=True)
                return
            if command in ("generate", "score"):  # the model path holds its own config
                if command == "generate":
                    _generate()
                else:
                    _score()
                return
            if config is None:
                raise app.UsageError("--config is required; " + _usage())
            if command == "finetune":  # its own config schema (flaxlm.finetune.base_config)
                if not _INIT.value or not _WORKDIR.value:
                    raise app.UsageError("--init and --workdir are required for finetune")
                from flaxlm import finetune as finetune_lib

                finetune_lib.finetune(config, _INIT.value, _WORKDIR.value)
                return
            config_lib.validate(config)
            if command == "train":
                if not _WORKDIR.value:
                    raise app.UsageError("--workdir is required for train")
                from flaxlm import distributed

                # Before anything touches a device: several processes (flags or a detected
                # SLURM/Open MPI/TPU VM cluster) become one run.
                distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
                train_lib.train_and_evaluate(config, _WORKDIR.value)
            elif command == "prepare":
                data = train_lib.prepare_data(config)
                print(f"{data.path}: train {len(data.train)} examples, validation {len(data.validation)}")
            elif command == "tokenizer":
                tok = prepare_lib.get_tokenizer(
                    config.data,
                    config.model.vocab_size,
                    config.data.data_dir or prepare_lib.default_data_dir(),
                )
                print(f"tokenizer with {tok.vocab_size} tokens: {getattr(tok, 'path', tok)}")
        except errors.FlaxlmError as e:  # config/corpus/data/workdir problems: one line, no traceback
            sys.stderr.write(f"flaxlm {command}: error: {_one_line(e)}\n")
            sys.exit(e.exit_code)
        except KeyboardInterrupt:  # a second Ctrl-C while the first one's checkpoint was being written
            sys.stderr.write(
                f"flaxlm {command}: interrupted; rerun to resume from the last complete checkpoint\n"
            )
            sys.exit(130)

    return main


def _load_lm():
    from flaxlm import lm as lm_lib

    lm = lm_lib.load(_MODEL.value, _TOKENIZER.value or "")
    sys.stderr.write(f"flaxlm: {lm.source}, arch {lm.arch}, tokenizer {lm.tokenizer}\n")
    return lm


def _generate():
    from flaxlm import generate

    prompts = list(_PROMPT.value)
    if _PROMPTS_FILE.value:
        try:
            with open(_PROMPTS_FILE.value, encoding="utf-8") as f:
                prompts += [line.strip() for line in f if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise generate.GenerationError(f"cannot read --prompts_file={_PROMPTS_FILE.value}: {e}") from None
    if not _MODEL.value or not prompts:
        raise app.UsageError('usage: flaxlm generate --model=PATH --prompt="..." [--prompts_file=FILE] [...]')
    sampling = generate.Sampling(temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value)
    lm = _load_lm()
    records = generate.generate_texts(
        lm,
        prompts,
        max_new_tokens=_MAX_NEW_TOKENS.value,
        sampling=sampling,
        seed=_SEED.value,
        num_samples=_NUM_SAMPLES.value,
        batch_size=_BATCH_SIZE.value,
    )
    for i, r in enumerate(records):
        print(
            f"--- prompt {i // _NUM_SAMPLES.value + 1}, sample {r['sample'] + 1} "
            f"({r['new_tokens']} new tokens, stopped at {r['stopped']})"
        )
        print(r["text"], flush=True)


def _score():
    from flaxlm import score

    if not _MODEL.value or not _INPUT.value:
        raise app.UsageError("usage: flaxlm score --model=PATH --input=FILE.txt|.jsonl [--out=FILE.jsonl]")
    sentences = score.read_sentences(_INPUT.value)
    lm = _load_lm()
    records = score.score_texts(lm, sentences, _MODE.value, batch_size=_BATCH_SIZE.value)
    name, ppl = score.FIELDS["clm" if "log_prob" in records[0] else "pll"]
    print(f"{name}\ttokens\t{ppl}\ttext")
    for r in records:
        value = "-" if r[ppl] is None else f"{r[ppl]:.2f}"
        print(f"{r[name]:.4f}\t{r['tokens']}\t{value}\t{r['text']}")
    if _OUT.value:
        score.write_jsonl(_OUT.value, records)
    summary = score.summarize(records)
    print(
        "summary: "
        + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items())
    )


def run(argv=None):
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] not in SUBCOMMANDS:
        sys.stderr.write(_usage() + "\n" + (__doc__ or ""))
        sys.exit(2)
    command = argv.pop(1)
    try:  # parse here, once, so that a bad flag or override is one line, not a traceback
        remaining = flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
        sys.stderr.write(f"flaxlm {command}: error: {_override_problem(argv) or _one_line(e)}\n")
        sys.exit(2)
    app.run(_main(command), argv=argv, flags_parser=lambda _: remaining)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).replace("\\n", "\n").split())


def _override_problem(argv) -> str | None:
    """Names the first --config.a.b override whose field does not exist, with the fields that do."""
    import difflib
    import importlib.util

    paths = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    if not paths:
        return "--config=PATH is required; " + _usage()
    try:
        spec = importlib.util.spec_from_file_location("flaxlm_user_config", paths[-1])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.get_config()
    except Exception as e:  # noqa: BLE001 - any failure to load the file is the user's to fix
        return f"cannot load --config={paths[-1]}: {_one_line(e)}"
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        path = arg[len("--config.") :].split("=", 1)[0]
        node = config
        for i, key in enumerate(path.split(".")):
            fields = list(node.keys()) if hasattr(node, "keys") else []
            if key not in fields:
                where = ".".join(path.split(".")[:i]) or "config"
                close = difflib.get_close_matches(key, fields, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                return (
                    f"unknown config field {path!r}: {where} has no field {key!r}{hint}; "
                    f"its fields are {', '.join(sorted(fields)) or 'none'}"
                )
            node = node[key]
    return None
