#!/usr/bin/env bash
# Runs on every worker of a TPU VM slice (tpu_pod.sh copies it there and runs it): installs flaxlm
# from the copied checkout into ~/flaxlm-venv with the TPU extra, and mounts the GCS bucket with
# Cloud Storage FUSE so that every worker sees the same data dir and workdir. Safe to run again.
#
#   bash tpu_worker_setup.sh ARCHIVE BUCKET MOUNT PYTHON
#   e.g. bash tpu_worker_setup.sh flaxlm-run.tar.gz my-bucket /mnt/gcs python3.11
set -euo pipefail

usage="usage: bash tpu_worker_setup.sh ARCHIVE BUCKET MOUNT PYTHON (tpu_pod.sh runs it on each worker)"
if [[ $# -eq 1 && ($1 == --help || $1 == -h) ]]; then
  echo "$usage"
  exit 0
fi
if [[ $# -ne 4 ]]; then
  echo "tpu_worker_setup.sh: error: expected 4 arguments, got $#; $usage" >&2
  exit 2
fi
archive=$1 bucket=$2 mount=$3 python=$4

# Python >= 3.11 (JAX's minimum); Ubuntu 22.04 images ship 3.10, with 3.11 one apt package away.
if ! command -v "$python" >/dev/null || ! "$python" -m venv --help >/dev/null 2>&1; then
  sudo apt-get update -q
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$python" "$python-venv"
fi
[[ -x ~/flaxlm-venv/bin/python ]] || "$python" -m venv ~/flaxlm-venv
rm -rf ~/flaxlm
mkdir -p ~/flaxlm
tar -xzf ~/"$archive" -C ~/flaxlm
~/flaxlm-venv/bin/python -m pip install -q --upgrade pip
~/flaxlm-venv/bin/python -m pip install -q -e ~/flaxlm'[tpu]'

# The bucket at $mount. Hierarchical-namespace buckets rename folders atomically, which Orbax's
# write-to-temporary-folder-then-rename checkpoints rely on (see docs/scaling.md).
if ! mountpoint -q "$mount"; then
  if ! command -v gcsfuse >/dev/null; then
    echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -c -s) main" |
      sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null
    curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null
    sudo apt-get update -q
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcsfuse
  fi
  sudo mkdir -p "$mount"
  sudo chown "$(id -u):$(id -g)" "$mount"
  gcsfuse --implicit-dirs "$bucket" "$mount"
fi
echo "worker $(hostname): flaxlm installed in ~/flaxlm-venv, gs://$bucket mounted at $mount"
