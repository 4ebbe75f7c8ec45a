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

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
SOURCE="${FASTNN_CHECK_SOURCE:-worktree}"
WORK="${FASTNN_CHECK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/fastnn-debug.XXXXXX")}"
SRC="$WORK/src"
VENV="$WORK/venv"
if [ "$#" -eq 0 ]; then
  set -- -q
fi

cleanup() {
  if [ "${FASTNN_CHECK_KEEP:-0}" != "1" ] && [ -z "${FASTNN_CHECK_DIR:-}" ]; then
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

start=$(date +%s)
echo "debug_check: sources ($SOURCE) -> $SRC"
rm -rf "$SRC"
mkdir -p "$SRC"
if [ "$SOURCE" = "head" ]; then
  git clone --quiet "$ROOT" "$SRC"
elif git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # the work tree as it is (uncommitted changes included), without ignored files (builds, .so)
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
     | tar --null --ignore-failed-read -T - -cf -) 2>/dev/null | tar -xf - -C "$SRC"
else
  (cd "$ROOT" && tar --exclude=./.git --exclude=./.venv --exclude=./build --exclude='*.so' \
     -cf - .) | tar -xf - -C "$SRC"
fi

echo "debug_check: venv and FASTNN_DEBUG=1 build"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >"$WORK/pip.log" 2>&1 || true
if ! (cd "$SRC" && FASTNN_DEBUG=1 "$VENV/bin/python" -m pip install -e ".[test]") \
     > "$WORK/build.log" 2>&1; then
  tail -60 "$WORK/build.log" >&2
  echo "debug_check: the build failed (log kept: $WORK/build.log)" >&2
  FASTNN_CHECK_KEEP=1
  exit 2
fi
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

set +e
(cd "$SRC" && "$VENV/bin/python" -m pytest -p no:cacheprovider "$@")
rc=$?
set -e
end=$(date +%s)
echo "debug_check: pytest exit code $rc; tests $((end - built)) s, total $((end - start)) s"
exit $rc
