"""The `flaxlm` command: `flaxlm SUBCOMMAND --config=configs/X.py [--config.a.b=v ...] [flags]`.

Subcommands:
  train      pretrain (resumes from the latest checkpoint in --workdir)
  prepare    tokenize and write the ArrayRecord shards for a config, nothing else
  tokenizer  train (or reuse) the sentencepiece model of a config's corpus
  export     write a checkpoint's parameters alone: flaxlm export --workdir=DIR --out=PATH [--step=N]
             (PATH/params.msgpack + PATH/model_config.json; read with flaxlm.checkpoint.load_params)

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

SUBCOMMANDS = ("train", "prepare", "tokenizer", "export")

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file (configs/*.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where metrics, TensorBoard events and checkpoints go.")
_OUT = flags.DEFINE_string(
    "out", None, "export: the folder to write params.msgpack and model_config.json to."
)
_STEP = flags.DEFINE_integer("step", None, "export: the checkpoint step (default: the latest).")
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
            if command == "export":  # the checkpoint holds its own config
                if not _WORKDIR.value or not _OUT.value:
                    raise app.UsageError("usage: flaxlm export --workdir=DIR --out=PATH [--step=N]")
                from flaxlm import checkpoint as ckpt

                path, step = ckpt.export_params(_WORKDIR.value, _OUT.value, _STEP.value)
                print(f"flaxlm: exported the parameters of step {step} to {path}", flush=True)
                return
            if config is None:
                raise app.UsageError("--config is required; " + _usage())
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
