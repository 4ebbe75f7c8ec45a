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
# shellcheck source=tools/_common.sh
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
PYTEST_ARGS=()
if [ "${1:-}" = "--" ]; then shift; PYTEST_ARGS=("$@"); fi
work_dir serial KEEP

step "serial build: clone of the committed tree, FASTNN_NO_OPENMP=1"
copy_sources head "$WORK/src"
new_venv "$WORK/venv"
install_editable "$WORK/src" "$WORK/venv" "$WORK/build.log" FASTNN_NO_OPENMP=1 || exit 1
(cd "$WORK/src" && "$WORK/venv/bin/python" -) <<'PYEOF'
import fastnn
from fastnn import _threads
from fastnn._build_info import BUILD_INFO
assert not _threads.openmp_enabled(), "the serial build has OpenMP"
assert "FASTNN_NO_OPENMP=1" in BUILD_INFO["define_macros"], BUILD_INFO
fastnn.set_num_threads(4)
assert fastnn.get_num_threads() == 1
print("serial build:", " ".join(BUILD_INFO["extra_compile_args"]), "| openmp", _threads.openmp_enabled())
PYEOF
step "the test suite against the serial build"
pytest_in "$WORK/src" "$WORK/venv" -q "${PYTEST_ARGS[@]}"
