"""The `flaxlm` command: `flaxlm SUBCOMMAND --config=configs/X.py [--config.a.b=v ...] [flags]`.

Subcommands:
  train      pretrain (resumes from the latest checkpoint in --workdir)
  prepare    tokenize and write the ArrayRecord shards for a config, nothing else
  tokenizer  train (or reuse) the sentencepiece model of a config's corpus
"""
import logging
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

SUBCOMMANDS = ("train", "prepare", "tokenizer")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where metrics, TensorBoard events and checkpoints go.")


def _usage() -> str:
  return (f"usage: flaxlm {{{','.join(SUBCOMMANDS)}}} --config=configs/bert_tiny.py [--workdir=DIR] "
          "[--config.FIELD=VALUE ...]")


def _main(command: str):
  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}; " + _usage())
    from flaxlm import config as config_lib
    from flaxlm import train as train_lib
    from flaxlm.data import prepare as prepare_lib

    config = _CONFIG.value
    if config is None:
      raise app.UsageError("--config is required; " + _usage())
    logging.getLogger().setLevel(logging.INFO)
    try:
      config_lib.validate(config)
      if command == "train":
        if not _WORKDIR.value:
          raise app.UsageError("--workdir is required for train")
        train_lib.train_and_evaluate(config, _WORKDIR.value)
      elif command == "prepare":
        data = train_lib.prepare_data(config)
        print(f"{data.path}: train {len(data.train)} examples, validation {len(data.validation)}")
      elif command == "tokenizer":
        tok = prepare_lib.get_tokenizer(config.data, config.model.vocab_size,
                                        config.data.data_dir or prepare_lib.default_data_dir())
        print(f"tokenizer with {tok.vocab_size} tokens: {getattr(tok, 'path', tok)}")
    except ValueError as e:  # our config/corpus/tokenizer errors: one line, no traceback
      sys.stderr.write(f"flaxlm {command}: error: {e}\n")
      sys.exit(2)
  return main


def run(argv=None):
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] not in SUBCOMMANDS:
    sys.stderr.write(_usage() + "\n" + (__doc__ or ""))
    sys.exit(2)
  command = argv.pop(1)
  app.run(_main(command), argv=argv)


if __name__ == "__main__":
  run()
