"""The `flaxlm` command: `flaxlm SUBCOMMAND [--config=configs/X.py] [--config.a.b=v ...] [flags]`.

`flaxlm --help` lists the subcommands (`SUBCOMMANDS`) and the exit codes (`EXIT_CODES`),
`flaxlm SUBCOMMAND --help` a subcommand's flags and an example, `flaxlm --version` the version.
"""

import dataclasses
import logging
import sys

from absl import app
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from flaxlm import hugepages

ENVIRONMENT = """\
environment: FLAXLM_DATA_DIR prepared data and tokenizers (default ~/.cache/flaxlm); FLAXLM_HUGEPAGES=0
runs without glibc's transparent huge pages, which the command asks for by default (GLIBC_TUNABLES).
"""
EXIT_CODES = """\
exit codes: 0 done (or stopped by SIGTERM/SIGINT after saving a checkpoint: rerun to resume),
2 a problem the message says how to fix (command line, config, data, workdir, checkpoint), 3 training
stopped on a non-finite loss or gradient (config.train.nonfinite='stop'), 130 a second Ctrl-C."""


@dataclasses.dataclass(frozen=True)
class Subcommand:
    summary: str  # one line in `flaxlm --help`
    usage: str  # the arguments after `flaxlm SUBCOMMAND`
    flags: tuple[str, ...]  # the flags it reads, as `--help` lists them
    example: str
    help: dict[str, str] = dataclasses.field(
        default_factory=dict
    )  # flag -> its meaning here, if not the flag's own


SUBCOMMANDS = {
    "train": Subcommand(
        "pretrain a model; resumes from the latest checkpoint in --workdir",
        "--config=PATH --workdir=DIR [--config.FIELD=VALUE ...]",
        ("config", "workdir", "coordinator_address", "num_processes", "process_id"),
        "flaxlm train --config=configs/bert_tiny.py --workdir=runs/bert_tiny --config.train.num_steps=1000",
    ),
    "prepare": Subcommand(
        "tokenize a config's corpus and write its ArrayRecord shards, nothing else",
        "--config=PATH [--config.FIELD=VALUE ...]",
        ("config",),
        "flaxlm prepare --config=configs/bert_tiny.py --config.data.seq_len=512",
    ),
    "tokenizer": Subcommand(
        "train (or reuse) the sentencepiece model of a config's corpus",
        "--config=PATH [--config.FIELD=VALUE ...]",
        ("config",),
        "flaxlm tokenizer --config=configs/bert_tiny.py --config.model.vocab_size=16000",
    ),
    "export": Subcommand(
        "write a checkpoint's parameters alone: params.msgpack + model_config.json, or a Hugging Face dir",
        "--workdir=DIR --out=PATH [--step=N] [--format=flaxlm|hf]",
        ("workdir", "out", "step", "format"),
        "flaxlm export --workdir=runs/bert_tiny --out=exports/bert_tiny --format=hf",
        {
            "workdir": "the `flaxlm train` --workdir to read",
            "out": "the folder to write (read back with flaxlm.checkpoint.load_params or transformers)",
        },
    ),
    "import-hf": Subcommand(
        "a Hugging Face BERT/GPT-2 directory to the export format (with its tokenizer files)",
        "--hf_dir=DIR --out=PATH",
        ("hf_dir", "out"),
        "flaxlm import-hf --hf_dir=models/bert-base-uncased --out=exports/bert_base",
        {"out": "the folder to write params.msgpack, model_config.json and the tokenizer to"},
    ),
    "generate": Subcommand(
        "continue prompts with a decoder, or a T5's inputs (sampling, or beam search)",
        '--model=PATH --prompt="..." [--prompts_file=FILE] [sampling flags | --num_beams=K]',
        (
            "model",
            "tokenizer",
            "prompt",
            "prompts_file",
            "max_new_tokens",
            "temperature",
            "top_k",
            "top_p",
            "seed",
            "num_samples",
            "num_beams",
            "length_penalty",
            "batch_size",
        ),
        'flaxlm generate --model=runs/gpt_tiny --prompt="To be, or not to be" --top_p=0.9 --num_samples=3',
    ),
    "score": Subcommand(
        "sentence log-probabilities (decoder) or pseudo-log-likelihoods (encoder)",
        "--model=PATH --input=FILE.txt|.jsonl [--out=FILE.jsonl] [--mode=clm|pll]",
        ("model", "tokenizer", "input", "out", "mode", "batch_size"),
        "flaxlm score --model=runs/gpt_tiny --input=sentences.txt --out=scores.jsonl",
        {"out": "also write one JSON object per sentence to this .jsonl file"},
    ),
    "finetune": Subcommand(
        "fine-tune a pretrained model on a task, over seeds (results.json in --workdir)",
        "--config=PATH --init=PATH --workdir=DIR [--config.FIELD=VALUE ...]",
        ("config", "init", "workdir"),
        "flaxlm finetune --config=configs/finetune_sentiment.py --init=runs/bert_tiny --workdir=runs/ft",
        {
            "config": "a fine-tuning config (configs/finetune_*.py)",
            "workdir": "where results.json and each seed's metrics go",
        },
    ),
}

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "a pretraining config (configs/*.py)", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "the run's folder: metrics, TensorBoard events, checkpoints")
_OUT = flags.DEFINE_string("out", None, "where to write the output")
_STEP = flags.DEFINE_integer("step", None, "the checkpoint step (default: the latest)")
_FORMAT = flags.DEFINE_enum(
    "format", "flaxlm", ["flaxlm", "hf"], "'flaxlm' (params.msgpack) or 'hf' (a Hugging Face directory)"
)
_HF_DIR = flags.DEFINE_string("hf_dir", None, "the Hugging Face model directory to read")
_MODEL = flags.DEFINE_string(
    "model", None, "a `flaxlm train` --workdir, an export or a Hugging Face model dir"
)
_TOKENIZER = flags.DEFINE_string(
    "tokenizer", None, "a .model or vocab.txt (default: the one the model was trained with)"
)
_PROMPT = flags.DEFINE_multi_string("prompt", [], "a prompt (repeat the flag for several)")
_PROMPTS_FILE = flags.DEFINE_string("prompts_file", None, "a file of prompts, one per line")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 50, "new tokens per prompt at most")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "sampling temperature; 0 = greedy")
_TOP_K = flags.DEFINE_integer("top_k", 0, "sample among the k most likely tokens (0 = all)")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "nucleus sampling mass (1 = all tokens)")
_SEED = flags.DEFINE_integer("seed", 0, "sampling seed (same seed, same text)")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "continuations per prompt")
_NUM_BEAMS = flags.DEFINE_integer(
    "num_beams", None, "beam search with this many beams, instead of sampling (prints the best beam)"
)
_LENGTH_PENALTY = flags.DEFINE_float(
    "length_penalty", 0.6, "beam search: alpha of GNMT's ((5 + length) / 6) ** alpha (0 = rank by log-prob)"
)
_INPUT = flags.DEFINE_string("input", None, "sentences: .txt (one per line) or .jsonl ({'text': ...})")
_MODE = flags.DEFINE_enum("mode", None, ["clm", "pll"], "clm (decoders) or pll (encoders); default by arch")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "rows (prompt samples, sentences) per batch")
_INIT = flags.DEFINE_string(
    "init", None, "the pretrained model: a `flaxlm train` --workdir, an export or a Hugging Face model dir"
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "several processes: HOST:PORT of process 0 (see docs/scaling.md)"
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "several processes: how many")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "several processes: this one's id, 0..N-1")

_METAVARS = {
    "config": "PATH",
    "workdir": "DIR",
    "out": "PATH",
    "hf_dir": "DIR",
    "model": "PATH",
    "tokenizer": "FILE",
    "prompt": "TEXT",
    "prompts_file": "FILE",
    "input": "FILE",
    "init": "PATH",
    "coordinator_address": "HOST:PORT",
}


def _usage(command: str | None = None) -> str:
    if command is None:
        return f"usage: flaxlm {{{','.join(SUBCOMMANDS)}}} [flags] (flaxlm --help explains them)"
    return f"usage: flaxlm {command} {SUBCOMMANDS[command].usage}"


def overview() -> str:
    """What `flaxlm --help` prints."""
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: flaxlm SUBCOMMAND [flags]", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {sub.summary}" for name, sub in SUBCOMMANDS.items()]
    lines += ["", "flaxlm SUBCOMMAND --help: its flags and an example; flaxlm --version: the version", ""]
    return "\n".join(lines + [ENVIRONMENT, EXIT_CODES]) + "\n"


def _metavar(name: str, flag) -> str:
    if name in _METAVARS:
        return _METAVARS[name]
    enum = getattr(flag.parser, "enum_values", None)
    if enum:
        return "|".join(enum)
    return "X" if flag.flag_type() == "float" else "N"


def subcommand_help(command: str) -> str:
    """What `flaxlm COMMAND --help` prints: usage, its flags one line each, an example."""
    sub = SUBCOMMANDS[command]
    rows = []
    for name in sub.flags:
        flag = flags.FLAGS[name]
        metavar = _metavar(name, flag)
        # absl adds "<a|b>: " to an enum's help and a second line to a multi flag's; ours is one line.
        text = sub.help.get(name) or flag.help.split(";\n")[0].removeprefix(f"<{metavar}>: ")
        default = "" if flag.default in (None, []) else f" (default: {flag.default})"
        rows.append((f"--{name}={metavar}", text + default))
        if name == "config":
            rows.append(
                ("--config.FIELD=VALUE", "set one field of the config, e.g. --config.train.batch_size=64")
            )
    width = max(len(left) for left, _ in rows)
    lines = [_usage(command), "", sub.summary[0].upper() + sub.summary[1:] + ".", "", "flags:"]
    lines += [f"  {left:<{width}}  {right}" for left, right in rows]
    lines += ["", "example:", f"  {sub.example}"]
    return "\n".join(lines) + "\n"


def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("flaxlm")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"


def _main(command: str):
    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments {argv[1:]}; " + _usage(command))
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
                    raise app.UsageError("--hf_dir and --out are required; " + _usage(command))
                from flaxlm import hf

                meta = hf.import_hf(_HF_DIR.value, _OUT.value)
                tok = f"tokenizer {meta['tokenizer']}" if meta["tokenizer"] else "no tokenizer files found"
                heads = ", ".join(meta["heads"]) or "none"
                print(f"flaxlm: imported {meta['model']['arch']} (heads: {heads}; {tok}) to {_OUT.value}")
                return
            if command == "export" and _FORMAT.value == "hf":
                if not _WORKDIR.value or not _OUT.value:
                    raise app.UsageError("--workdir and --out are required; " + _usage(command))
                from flaxlm import hf

                step, tok = hf.export_workdir(_WORKDIR.value, _OUT.value, _STEP.value)
                note = "" if tok else " (the run's tokenizer was not found on this machine: none written)"
                print(
                    f"flaxlm: exported step {step} in Hugging Face format to {_OUT.value}{note}", flush=True
                )
                return
            if command == "export":  # the checkpoint holds its own config
                if not _WORKDIR.value or not _OUT.value:
                    raise app.UsageError("--workdir and --out are required; " + _usage(command))
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
                raise app.UsageError("--config is required; " + _usage(command))
            if command == "finetune":  # its own config schema (flaxlm.finetune.base_config)
                if not _INIT.value or not _WORKDIR.value:
                    raise app.UsageError("--init and --workdir are required; " + _usage(command))
                from flaxlm import finetune as finetune_lib

                finetune_lib.finetune(config, _INIT.value, _WORKDIR.value)
                return
            config_lib.validate(config)
            if command == "train":
                if not _WORKDIR.value:
                    raise app.UsageError("--workdir is required; " + _usage(command))
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
                print(f"tokenizer with {tok.vocab_size} tokens: {tok.path}")
        except errors.FlaxlmError as e:  # config/corpus/data/workdir problems: one line, no traceback
            sys.stderr.write(f"flaxlm {command}: error: {_one_line(e)}\n")
            sys.exit(e.exit_code)
        except app.UsageError as e:  # a missing or stray argument
            sys.stderr.write(f"flaxlm {command}: error: {_one_line(e)}\n")
            sys.exit(2)
        except KeyboardInterrupt:  # a second Ctrl-C while the first one's checkpoint was being written
            sys.stderr.write(
                f"flaxlm {command}: interrupted; rerun to resume from the last complete checkpoint\n"
            )
            sys.exit(130)

    return main


def _load_lm():
    from flaxlm import lm as lm_lib

    lm = lm_lib.load(_MODEL.value, _TOKENIZER.value or "")
    sys.stderr.write(f"flaxlm: {lm.source}, arch {lm.arch}, tokenizer {lm.tokenizer.path}\n")
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
        raise app.UsageError("--model and a --prompt or --prompts_file are required; " + _usage("generate"))
    sampling_flags = [f"--{f}" for f in _SAMPLING_FLAGS if flags.FLAGS[f].present]
    if _NUM_BEAMS.value is not None:
        if sampling_flags:
            raise app.UsageError(
                f"--num_beams (beam search) and {', '.join(sampling_flags)} (sampling) exclude each other"
            )
        _beam_search(prompts)
        return
    if flags.FLAGS["length_penalty"].present:
        raise app.UsageError("--length_penalty is for beam search; give --num_beams too")
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


_SAMPLING_FLAGS = ("temperature", "top_k", "top_p", "seed", "num_samples")


def _beam_search(prompts: list[str]):
    from flaxlm import beam_search

    lm = _load_lm()
    records = beam_search.beam_search_texts(
        lm,
        prompts,
        num_beams=_NUM_BEAMS.value,
        alpha=_LENGTH_PENALTY.value,
        max_new_tokens=_MAX_NEW_TOKENS.value,
        batch_size=_BATCH_SIZE.value,
    )
    for i, r in enumerate(records):
        print(
            f"--- prompt {i + 1}, best of {_NUM_BEAMS.value} beams (score {r['score']:.4f}, "
            f"log-prob {r['log_prob']:.4f}, {r['new_tokens']} new tokens, stopped at {r['stopped']})"
        )
        print(r["text"], flush=True)


def _score():
    from flaxlm import score

    if not _MODEL.value or not _INPUT.value:
        raise app.UsageError("--model and --input are required; " + _usage("score"))
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
    """The command: run() is the process's own (the `flaxlm` script, `python -m flaxlm`), run(argv) a call."""
    own_process = argv is None
    argv = list(sys.argv if argv is None else argv)
    first = argv[1] if len(argv) > 1 else None
    if first in ("--help", "-h", "help"):
        command = argv[2] if first == "help" and len(argv) > 2 else None
        print(subcommand_help(command) if command in SUBCOMMANDS else overview(), end="")
        sys.exit(0)
    if first == "--version":
        print(f"flaxlm {version()}")
        sys.exit(0)
    if first not in SUBCOMMANDS:
        what = f"unknown subcommand {first!r}; " if first else ""
        sys.stderr.write(f"flaxlm: error: {what}{_usage()}\n")
        sys.exit(2)
    command = argv.pop(1)
    if any(a in ("--help", "-h") for a in argv[1:]):
        print(subcommand_help(command), end="")
        sys.exit(0)
    if own_process:  # before JAX is imported: glibc's huge pages for the host memory (flaxlm.hugepages)
        hugepages.reexec()
    try:  # parse here, once, so that a bad flag or override is one line, not a traceback
        remaining = flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
        sys.stderr.write(f"flaxlm {command}: error: {_override_problem(argv, command) or _one_line(e)}\n")
        sys.exit(2)
    app.run(_main(command), argv=argv, flags_parser=lambda _: remaining)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).replace("\\n", "\n").split())


def _override_problem(argv, command: str) -> str | None:
    """Names the first --config.a.b override whose field does not exist, with the fields that do."""
    import difflib
    import importlib.util

    paths = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    if not paths:
        return "--config=PATH is required; " + _usage(command)
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
