#!/usr/bin/env bash
# The serial build (FASTNN_NO_OPENMP=1: no OpenMP, one thread, same results; gcc/clang still get
# -fopenmp-simd) passes the whole test suite. It is built in its own clone of this repository and
# its own virtual environment, so the OpenMP extensions of an editable install here stay as they
# are.
#
#   tools/test_serial.sh [-- pytest args]
#
# Environment: PYTHON (default python3); KEEP=1 keeps the work folder.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
PYTEST_ARGS=()
if [ "${1:-}" = "--" ]; then shift; PYTEST_ARGS=("$@"); fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fastnn-serial.XXXXXX")"
cleanup() { if [ "${KEEP:-0}" = "1" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT

echo "=== serial build: clone of the committed tree, FASTNN_NO_OPENMP=1 ($(date +%H:%M:%S))"
git clone -q --no-hardlinks "$ROOT" "$WORK/src"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q --upgrade pip
(cd "$WORK/src" && FASTNN_NO_OPENMP=1 "$VPY" -m pip install -q -e ".[test]")
cd "$WORK/src"
"$VPY" - <<'PYEOF'
import fastnn
from fastnn import _threads
from fastnn._build_info import BUILD_INFO
assert not _threads.openmp_enabled(), "the serial build has OpenMP"
assert "FASTNN_NO_OPENMP=1" in BUILD_INFO["define_macros"], BUILD_INFO
fastnn.set_num_threads(4)
assert fastnn.get_num_threads() == 1
print("serial build:", " ".join(BUILD_INFO["extra_compile_args"]), "| openmp", _threads.openmp_enabled())
PYEOF
echo "=== the test suite against the serial build ($(date +%H:%M:%S))"
"$VPY" -m pytest -q -p no:cacheprovider "${PYTEST_ARGS[@]}"
