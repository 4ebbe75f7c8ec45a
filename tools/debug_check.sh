#!/usr/bin/env bash
# Build fastnn with FASTNN_DEBUG=1 (Cython boundscheck/wraparound/initializedcheck on, -O1 -g)
# in a separate copy of the sources and a separate virtual environment, and run the test suite
# there. The exit code is pytest's.
#
# Usage: tools/debug_check.sh [pytest arguments]
#   Default pytest arguments: -q (the whole suite: about 40 s of build and 75 s of tests on the
#   2-core CI machine); e.g. tools/debug_check.sh -q tests/test_fuzz_kernels.py for one file.
# Environment:
#   PYTHON                 interpreter for the venv (default: python3)
#   FASTNN_CHECK_SOURCE    worktree (default: tracked and untracked, not ignored, files of this
#                          work tree, uncommitted changes included) or head (git clone of HEAD)
#   FASTNN_CHECK_DIR       where to build (default: a new temporary folder, removed afterwards)
#   FASTNN_CHECK_KEEP=1    keep the build folder
set -euo pipefail
# shellcheck source=tools/_common.sh
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

check_dirs debug
if [ "$#" -eq 0 ]; then
  set -- -q
fi

start=$(date +%s)
echo "debug_check: sources ($SOURCE) -> $SRC"
copy_sources "$SOURCE" "$SRC"

echo "debug_check: venv and FASTNN_DEBUG=1 build"
new_venv "$VENV" "$WORK/pip.log"
install_editable "$SRC" "$VENV" "$WORK/build.log" FASTNN_DEBUG=1 || { FASTNN_CHECK_KEEP=1; exit 2; }
(cd "$SRC" && "$VENV/bin/python" -) <<'EOF'
import os
import fastnn
assert os.path.dirname(fastnn.__file__) == os.path.join(os.getcwd(), "fastnn"), fastnn.__file__
from fastnn._build_info import BUILD_INFO as b
d = b["cython_directives"]
assert b["debug"] and d["boundscheck"] and d["wraparound"] and d["initializedcheck"], b
assert "-O1" in b["extra_compile_args"] and "-g" in b["extra_compile_args"], b
print("debug_check: build", b["extra_compile_args"], {k: d[k] for k in
      ("boundscheck", "wraparound", "initializedcheck")})
EOF
built=$(date +%s)
echo "debug_check: build took $((built - start)) s; running: pytest $*"

rc=0
pytest_in "$SRC" "$VENV" "$@" || rc=$?
end=$(date +%s)
echo "debug_check: pytest exit code $rc; tests $((end - built)) s, total $((end - start)) s"
exit $rc
