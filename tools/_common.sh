# Shared setup of the tools/*.sh checks: a work folder, a copy of the sources, a virtual
# environment, an editable build of fastnn in it, its test suite. Sourced (not run) by
# asan_check.sh, debug_check.sh, test_serial.sh and build_wheel.sh, after their `set -euo pipefail`:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
#
# Sets ROOT (this repository), PYTHON (the interpreter of the venvs: $PYTHON, default python3)
# and TOOL (the calling script's name, for messages).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
TOOL="$(basename "$0" .sh)"

# step MESSAGE...: a blank line, then "=== MESSAGE (HH:MM:SS)".
step() {
  echo
  echo "=== $* ($(date +%H:%M:%S))"
}

# work_dir PREFIX KEEP_VAR [DIR]: sets WORK to DIR, or else to a new folder
# ${TMPDIR:-/tmp}/fastnn-PREFIX.XXXXXX that is removed at exit unless the variable named KEEP_VAR
# is 1 then (a script may set it on failure to keep its logs). A DIR given is never removed.
work_dir() {
  _KEEP_VAR=$2
  if [ -n "${3:-}" ]; then
    WORK=$3
    _WORK_OURS=0
  else
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/fastnn-$1.XXXXXX")"
    _WORK_OURS=1
  fi
  trap _remove_work_dir EXIT
}

_remove_work_dir() {
  if [ "$_WORK_OURS" != "1" ]; then
    return 0
  fi
  if [ "${!_KEEP_VAR:-0}" = "1" ]; then
    echo "kept $WORK"
  else
    rm -rf "$WORK"
  fi
}

# check_dirs PREFIX: the FASTNN_CHECK_* settings of asan_check.sh and debug_check.sh: SOURCE
# (FASTNN_CHECK_SOURCE, default worktree), WORK (FASTNN_CHECK_DIR, or a temporary folder removed
# at exit unless FASTNN_CHECK_KEEP=1), and in it SRC (the sources) and VENV.
check_dirs() {
  SOURCE="${FASTNN_CHECK_SOURCE:-worktree}"
  work_dir "$1" FASTNN_CHECK_KEEP "${FASTNN_CHECK_DIR:-}"
  SRC="$WORK/src"
  VENV="$WORK/venv"
}

# copy_sources worktree|head DEST: DEST (emptied first) gets the sources. head: a clone of the
# committed tree (the current branch). Anything else: the work tree as it is, uncommitted changes
# included, i.e. the files git tracks or would track (ignored ones such as builds and .so left
# out); outside a git checkout, every file but .git, .venv, build and *.so.
copy_sources() {
  local how=$1 dest=$2
  rm -rf "$dest"
  mkdir -p "$dest"
  if [ "$how" = "head" ]; then
    git clone --quiet --no-hardlinks "$ROOT" "$dest"
  elif git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
       | tar --null --ignore-failed-read -T - -cf -) 2>/dev/null | tar -xf - -C "$dest"
  else
    (cd "$ROOT" && tar --exclude=./.git --exclude=./.venv --exclude=./build --exclude='*.so' \
       -cf - .) | tar -xf - -C "$dest"
  fi
}

# new_venv DIR [LOG]: a virtual environment of $PYTHON at DIR, with pip upgraded. Without LOG a
# failed upgrade fails the script; with LOG the upgrade's output goes there and a failure is
# ignored (the venv's own pip installs fastnn too).
new_venv() {
  "$PYTHON" -m venv "$1"
  if [ -n "${2:-}" ]; then
    "$1/bin/python" -m pip install -q --upgrade pip >"$2" 2>&1 || true
  else
    "$1/bin/python" -m pip install -q --upgrade pip
  fi
}

# install_editable SRC VENV LOG [NAME=VALUE...]: pip install -e "SRC[test]" into VENV, the build
# run with the given environment (FASTNN_DEBUG=1, FASTNN_NO_OPENMP=1, CFLAGS=..., ...), its output
# in LOG. On failure: the log's last 60 lines and a line saying so on stderr, and status 2.
install_editable() {
  local src=$1 venv=$2 log=$3
  shift 3
  if ! (cd "$src" && env "$@" "$venv/bin/python" -m pip install -e ".[test]") >"$log" 2>&1; then
    tail -60 "$log" >&2
    echo "$TOOL: the build failed (log: $log)" >&2
    return 2
  fi
}

# pytest_in SRC VENV [PYTEST ARGS...]: VENV's pytest in SRC, without a cache folder; its status.
pytest_in() {
  local src=$1 venv=$2
  shift 2
  (cd "$src" && "$venv/bin/python" -m pytest -p no:cacheprovider "$@")
}
