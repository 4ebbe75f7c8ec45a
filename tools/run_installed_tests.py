"""Run fastnn's test suite against the *installed* package, not the source tree.

The tests (and what they read beside them: bench/, src_cython/, tools/, setup.py,
pyproject.toml) are copied into a temporary folder that has no ``fastnn/`` in it, so
``import fastnn`` can only find the installed wheel; the script checks that before running
pytest. Used by tools/build_wheel.sh and as cibuildwheel's test-command.

Usage::

    python tools/run_installed_tests.py [--project DIR] [--train-epoch] [-- PYTEST ARGS...]

``--train-epoch`` also runs the main job (``python -m fastnn train``) for one epoch when the
Fashion-MNIST data is installed. The exit status is pytest's (or the train run's, if it fails).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DATA_DIR = "/usr/share/datasets/fashion-mnist"
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.c", "*.so", "*.pyd", "*.html",
                                "results", ".pytest_cache", ".hypothesis")


def copy_tests(project, dest):
    project, dest = Path(project), Path(dest)
    for folder in ("tests", "bench", "src_cython", "tools"):
        if (project / folder).is_dir():
            shutil.copytree(project / folder, dest / folder, ignore=IGNORE)
    for name in ("setup.py", "pyproject.toml"):
        if (project / name).is_file():
            shutil.copy2(project / name, dest / name)
    if (dest / "fastnn").exists():  # pragma: no cover - never copied, checked anyway
        raise SystemExit(f"{dest}/fastnn exists: the tests would not use the installed package")


def _env():
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_installed(cwd, project):
    code = ("import fastnn, os; print(os.path.dirname(fastnn.__file__)); "
            "fastnn.show_config()")
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=_env(),
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"import fastnn failed in {cwd}:\n{out.stderr}")
    location = Path(out.stdout.splitlines()[0]).resolve()
    for forbidden in (Path(project).resolve(), Path(cwd).resolve()):
        if forbidden == location or forbidden in location.parents:
            raise SystemExit(f"fastnn was imported from {location}, inside {forbidden}: "
                             "not the installed package")
    print(f"run_installed_tests: fastnn imported from {location}")
    print("\n".join(out.stdout.splitlines()[1:]), flush=True)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args = []
    if "--" in argv:
        i = argv.index("--")
        argv, pytest_args = argv[:i], argv[i + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", default=str(Path(__file__).resolve().parents[1]),
                        help="the source tree whose tests/ to copy (default: this checkout)")
    parser.add_argument("--train-epoch", action="store_true",
                        help="also run `python -m fastnn train --epochs 1` (needs the data)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="fastnn-installed-tests-")
    try:
        copy_tests(args.project, tmp)
        check_installed(tmp, args.project)
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"] + pytest_args
        print("run_installed_tests:", " ".join(cmd), f"(in {tmp})", flush=True)
        rc = subprocess.run(cmd, cwd=tmp, env=_env()).returncode
        if args.train_epoch:
            if os.path.isdir(os.environ.get("FASTNN_DATA", DATA_DIR)):
                cmd = [sys.executable, "-m", "fastnn", "train", "--epochs", "1"]
                print("run_installed_tests:", " ".join(cmd), flush=True)
                env = _env()
                env.setdefault("TQDM_DISABLE", "1")  # no progress bar in CI logs
                train_rc = subprocess.run(cmd, cwd=tmp, env=env).returncode
                rc = rc or train_rc
            else:
                print(f"run_installed_tests: {DATA_DIR} absent, main job skipped", flush=True)
        return rc
    finally:
        if args.keep:
            print(f"run_installed_tests: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
