#!/usr/bin/env bash
# Trains with flaxlm on every worker of a Cloud TPU VM slice, and restarts after preemption.
#
#   tools/launch/tpu_pod.sh --name=NAME --zone=ZONE --accelerator=v4-32 --bucket=BUCKET \
#       [--spot] [--run=RUN] [--dry-run] -- --config=configs/bert_base.py [--config.FIELD=VALUE ...]
#
# Run it from a clone of flaxlm on a machine with the gcloud CLI, logged in to the project.
# In order (every command is printed first; --dry-run only prints them):
#  1. creates the slice unless it exists (gcloud compute tpus tpu-vm create) and waits until READY;
#  2. copies this checkout (git archive HEAD) and tpu_worker_setup.sh to every worker and runs
#     the setup there: a Python 3.11 venv with flaxlm[tpu], and the bucket mounted with Cloud
#     Storage FUSE at --mount (default /mnt/gcs), so data and checkpoints live in the bucket;
#  3. prepares the data once, on worker 0's CPU (flaxlm prepare with JAX_PLATFORMS=cpu);
#  4. runs the same `flaxlm train` on all workers (--worker=all) with
#     --workdir=MOUNT/flaxlm/runs/RUN and --config.data.data_dir=MOUNT/flaxlm/data;
#     jax.distributed finds the other workers by itself (TPU VM metadata);
#  5. until the log shows "flaxlm: done": a preempted slice is deleted and created again, a run
#     stopped by SIGTERM (maintenance) is started again, both resuming from the bucket's last
#     checkpoint; any other failure ends this script with flaxlm's exit code (2: fix the command).
# The train output of every attempt is kept in --log-dir (default ./tpu_logs/RUN).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: tools/launch/tpu_pod.sh --name=NAME --zone=ZONE --accelerator=TYPE --bucket=BUCKET
           [--project=PROJECT] [--version=RUNTIME] [--spot] [--run=RUN] [--mount=DIR]
           [--python=python3.11] [--max-restarts=N] [--log-dir=DIR] [--dry-run]
           -- --config=configs/X.py [--config.FIELD=VALUE ...]

  --name          TPU VM slice to use (created if it does not exist)
  --zone          its zone, e.g. us-central2-b
  --accelerator   slice type, e.g. v4-32, v5litepod-16, v6e-32 (used when creating)
  --bucket        GCS bucket (gs://NAME or NAME) for prepared data and checkpoints
  --version       TPU software version (default tpu-ubuntu2204-base; v5e: v2-alpha-tpuv5-lite,
                  v5p: v2-alpha-tpuv5, v6e: v2-alpha-tpuv6e)
  --spot          create a Spot slice (cheaper, preemptible)
  --run           run name: the workdir is MOUNT/flaxlm/runs/RUN (default: the slice name)
  --mount         where each worker mounts the bucket (default /mnt/gcs)
  --python        Python >= 3.11 to install flaxlm with (default python3.11)
  --max-restarts  give up after this many restarts (default 50)
  --dry-run       print the commands, run nothing
Everything after -- goes to `flaxlm train` (and `flaxlm prepare`); do not pass --workdir.
EOF
}

die() {
  echo "tpu_pod.sh: error: $*" >&2
  echo "run tools/launch/tpu_pod.sh --help for usage" >&2
  exit 2
}

name="" zone="" accelerator="" bucket="" project="" version="tpu-ubuntu2204-base" spot=0
run_name="" mount="/mnt/gcs" python="python3.11" max_restarts=50 log_dir="" dry_run=0
train_args=()
while [[ $# -gt 0 ]]; do
  arg=$1
  case $arg in
    --help | -h) usage; exit 0 ;;
    --dry-run) dry_run=1; shift; continue ;;
    --spot) spot=1; shift; continue ;;
    --) shift; train_args=("$@"); break ;;
    --*=*) key=${arg%%=*}; value=${arg#*=}; shift ;;
    --*)
      [[ $# -ge 2 ]] || die "$arg needs a value"
      key=$arg; value=$2; shift 2 ;;
    *) die "unexpected argument '$arg' (flaxlm's own flags go after --)" ;;
  esac
  case $key in
    --name) name=$value ;;
    --zone) zone=$value ;;
    --accelerator) accelerator=$value ;;
    --bucket) bucket=$value ;;
    --project) project=$value ;;
    --version) version=$value ;;
    --run) run_name=$value ;;
    --mount) mount=$value ;;
    --python) python=$value ;;
    --max-restarts) max_restarts=$value ;;
    --log-dir) log_dir=$value ;;
    *) die "unknown option $key" ;;
  esac
done

[[ -n $name ]] || die "--name is required"
[[ -n $zone ]] || die "--zone is required"
[[ -n $accelerator ]] || die "--accelerator is required (e.g. v4-32)"
[[ -n $bucket ]] || die "--bucket is required"
[[ $max_restarts =~ ^[0-9]+$ ]] || die "--max-restarts must be a number, not '$max_restarts'"
has_config=0
for a in "${train_args[@]}"; do
  case $a in
    --config=*) has_config=1 ;;
    --workdir | --workdir=*) die "do not pass --workdir: it is MOUNT/flaxlm/runs/RUN (set --run)" ;;
  esac
done
[[ $has_config == 1 ]] || die "pass flaxlm's --config=configs/X.py after --"
bucket=${bucket#gs://}
bucket=${bucket%/}
run_name=${run_name:-$name}
log_dir=${log_dir:-tpu_logs/$run_name}
workdir=$mount/flaxlm/runs/$run_name
data_dir=$mount/flaxlm/data
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

tpu=(gcloud compute tpus tpu-vm)
where=(--zone="$zone")
[[ -z $project ]] || where+=(--project="$project")

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

quoted() { # the arguments as one shell-quoted string, for a remote --command
  local out="" a
  for a in "$@"; do out+=" $(printf '%q' "$a")"; done
  printf '%s' "${out# }"
}

get_state() { # sets tpu_state: READY, PREEMPTED, CREATING, ... or NOT_FOUND
  show "${tpu[@]}" describe "$name" "${where[@]}" --format='value(state)'
  if [[ $dry_run == 1 ]]; then
    tpu_state=${assumed_state:-NOT_FOUND}
  else
    tpu_state=$("${tpu[@]}" describe "$name" "${where[@]}" --format='value(state)' 2>/dev/null) ||
      tpu_state=NOT_FOUND
  fi
}

ensure_ready() { # leaves the slice READY; sets needs_setup when it had to create it
  while true; do
    get_state
    case $tpu_state in
      READY) return ;;
      NOT_FOUND | "") ;;
      PREEMPTED | TERMINATED | STOPPED)
        echo "tpu_pod.sh: slice $name is $tpu_state: deleting and creating it again" >&2
        run "${tpu[@]}" delete "$name" "${where[@]}" --quiet ;;
      *)
        echo "tpu_pod.sh: slice $name is $tpu_state; waiting" >&2
        sleep 60
        continue ;;
    esac
    local create=("${tpu[@]}" create "$name" "${where[@]}" --accelerator-type="$accelerator" --version="$version")
    [[ $spot == 0 ]] || create+=(--spot)
    run "${create[@]}"
    needs_setup=1
    assumed_state=READY
  done
}

setup_workers() {
  local archive=${TMPDIR:-/tmp}/flaxlm-$run_name.tar.gz
  run git -C "$repo" archive --format=tar.gz -o "$archive" HEAD
  run "${tpu[@]}" scp "$archive" "$here/tpu_worker_setup.sh" "$name": "${where[@]}" --worker=all
  run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all \
    --command="bash tpu_worker_setup.sh $(quoted "$(basename "$archive")" "$bucket" "$mount" "$python")"
  run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=0 \
    --command="cd ~/flaxlm && JAX_PLATFORMS=cpu ~/flaxlm-venv/bin/flaxlm prepare $(quoted \
      "${train_args[@]}" --config.data.data_dir="$data_dir")"
  needs_setup=0
}

# ~ stays unquoted so that the workers' shell expands it.
train_command="cd ~/flaxlm && ~/flaxlm-venv/bin/flaxlm train $(quoted "${train_args[@]}" \
  --config.data.data_dir="$data_dir" --workdir="$workdir")"
needs_setup=1
restarts=0
[[ $dry_run == 1 ]] || mkdir -p "$log_dir"
while true; do
  ensure_ready
  [[ $needs_setup == 0 ]] || setup_workers
  log=$log_dir/attempt-$restarts.log
  rc=0
  if [[ $dry_run == 1 ]]; then
    run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$train_command"
    exit 0
  fi
  { run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$train_command" 2>&1 | tee "$log"; } ||
    rc=${PIPESTATUS[0]}
  if grep -q "flaxlm: done at step" "$log"; then
    echo "tpu_pod.sh: training finished; metrics and checkpoints in gs://$bucket/flaxlm/runs/$run_name"
    exit 0
  fi
  get_state
  if [[ $tpu_state != READY ]]; then
    why="the slice is $tpu_state (preempted)"
  elif [[ $rc == 0 ]]; then
    why="flaxlm stopped on a signal (maintenance event?)"
  elif [[ $rc == 255 ]]; then
    why="ssh to the workers failed"
  else
    echo "tpu_pod.sh: flaxlm train failed with exit code $rc on a healthy slice; see $log" >&2
    exit "$rc"
  fi
  restarts=$((restarts + 1))
  if [[ $restarts -gt $max_restarts ]]; then
    echo "tpu_pod.sh: $why, and $max_restarts restarts are used up; rerun this script to go on" >&2
    exit 1
  fi
  echo "tpu_pod.sh: $why; restart $restarts of $max_restarts (resumes from the last checkpoint)" >&2
done
