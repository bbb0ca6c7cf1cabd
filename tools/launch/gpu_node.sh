#!/usr/bin/env bash
# Trains with flaxlm on the GPUs of one machine: one process drives them all (jax.devices() lists
# every visible GPU, and config.mesh spreads the batch and the parameters over them). No
# jax.distributed is needed for one process.
#
#   tools/launch/gpu_node.sh [--gpus=0,1,2,3] [--install] [--dry-run] -- \
#       --config=configs/bert_base.py --workdir=runs/bert_base [--config.FIELD=VALUE ...]
#
# --install first runs `pip install -e '.[cuda]'` (JAX with its CUDA 12 wheels) in the current
# Python environment. Rerun the same command after a crash or Ctrl-C: training resumes from the
# last checkpoint in the workdir.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: tools/launch/gpu_node.sh [--gpus=LIST] [--install] [--python=PYTHON] [--dry-run]
           -- --config=configs/X.py --workdir=DIR [--config.FIELD=VALUE ...]

  --gpus      which GPUs to use, e.g. 0,1,2,3 (default: all; sets CUDA_VISIBLE_DEVICES)
  --install   pip install -e '.[cuda]' into PYTHON's environment first
  --python    the Python whose environment has (or gets) flaxlm (default: python3)
  --dry-run   print the commands, run nothing
Everything after -- goes to `flaxlm train`.
EOF
}

die() {
  echo "gpu_node.sh: error: $*" >&2
  echo "run tools/launch/gpu_node.sh --help for usage" >&2
  exit 2
}

gpus="" install=0 python=python3 dry_run=0
train_args=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --help | -h) usage; exit 0 ;;
    --install) install=1 ;;
    --dry-run) dry_run=1 ;;
    --gpus=*) gpus=${1#*=} ;;
    --python=*) python=${1#*=} ;;
    --) shift; train_args=("$@"); break ;;
    *) die "unexpected argument '$1' (flaxlm's own flags go after --)" ;;
  esac
  shift
done
[[ -z $gpus || $gpus =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--gpus must be a comma-separated list of GPU numbers, not '$gpus'"
has_config=0 has_workdir=0
for a in "${train_args[@]}"; do
  case $a in
    --config=*) has_config=1 ;;
    --workdir=*) has_workdir=1 ;;
  esac
done
[[ $has_config == 1 ]] || die "pass flaxlm's --config=configs/X.py after --"
[[ $has_workdir == 1 ]] || die "pass flaxlm's --workdir=DIR after --"
repo=$(cd "$(dirname "$0")/../.." && pwd)

show() { # prints a command, each argument quoted only if the shell needs it (ready to paste)
  local out="+" a
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then out+=" $a"; else out+=" ${a@Q}"; fi
  done
  printf '%s\n' "$out"
}

run() { # shows a command, then runs it unless --dry-run
  show "$@"
  [[ $dry_run == 1 ]] || "$@"
}

[[ $install == 0 ]] || run "$python" -m pip install -e "${repo}[cuda]"
env_args=()
[[ -z $gpus ]] || env_args=(env CUDA_VISIBLE_DEVICES="$gpus")
cd "$repo"
run "${env_args[@]}" "$python" -m flaxlm train "${train_args[@]}"
