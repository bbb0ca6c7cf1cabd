"""Fine-tuning tasks: each turns its data into padded features and model outputs into scores.

A task object (made by `TaskClass.load(config.task, data_dir)`, or directly from its splits) has:
  head        "sequence" | "token" | "span" | "generation" (which flaxlm.models.heads model it needs)
  num_labels, labels
  splits      {"train", "dev", "test"} -> raw examples (dicts)
  encode(examples, tokenizer, arch) -> common.Features
  loss(outputs, batch) -> (loss, metrics)          pure, runs under jit
  predict(outputs) -> arrays brought to the host   pure, runs under jit
              (generation instead: target_nll(outputs, batch), and the run decodes greedily)
  score(predictions, features, examples) -> {metric: value in [0, 1]}
"""

from flaxlm.errors import ConfigError
from flaxlm.tasks import common
from flaxlm.tasks.classification import ClassificationTask
from flaxlm.tasks.generation import GenerationTask
from flaxlm.tasks.ner import NerTask
from flaxlm.tasks.qa import QaTask

TASKS = {"classification": ClassificationTask, "ner": NerTask, "qa": QaTask, "generation": GenerationTask}


def get_task(task_cfg, data_dir: str):
    """The task of config.task (loading, fetching or building its data)."""
    if task_cfg.kind not in TASKS:
        raise ConfigError(f"config.task.kind={task_cfg.kind!r} is unknown; choose one of {', '.join(TASKS)}")
    files = [task_cfg[f"{s}_file"] for s in ("train", "dev", "test")]
    if any(files) and not all(files):
        raise ConfigError(
            "give all three of config.task.train_file, dev_file and test_file (none: the built-in data)"
        )
    task = TASKS[task_cfg.kind].load(task_cfg, data_dir)
    if 0 < task_cfg.max_train_examples < len(task.splits["train"]):
        task.splits["train"] = common.subsample(task.splits["train"], task_cfg.max_train_examples)
    for split in ("dev", "test"):
        if 0 < task_cfg.max_eval_examples < len(task.splits[split]):
            task.splits[split] = common.subsample(task.splits[split], task_cfg.max_eval_examples)
    return task
