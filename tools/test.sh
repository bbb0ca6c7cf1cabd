#!/usr/bin/env bash
# Installs flaxlm with its test extras into a fresh virtual environment and runs the whole test suite.
# This is the README's test command, and what CI runs (.ci/run). Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
venv=${FLAXLM_TEST_VENV:-.venv-test}
rm -rf "$venv"
python3 -m venv "$venv" || exit 2
"$venv/bin/python" -m pip install --quiet --upgrade pip || exit 2
# CPU torch first: the local index's torch 2.13.0 is the CPU build, where a plain torch requirement
# would pull a multi-GB CUDA build. Then the test extras and the [hf] extra (transformers parity tests).
"$venv/bin/python" -m pip install --quiet torch==2.13.0 || exit 2
"$venv/bin/python" -m pip install --quiet -e '.[test,hf]' || exit 2
"$venv/bin/python" -m pytest tests "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "tools/test.sh: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$rc"
