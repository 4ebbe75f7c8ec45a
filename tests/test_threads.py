"""Thread control: fastnn.set_num_threads / get_num_threads / show_config (fastnn/_config.py)."""
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn import _config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def restore_thread_setting():
    """Every test here starts from, and returns to, the user's setting."""
    saved = _config._num_threads
    yield
    _config._num_threads = saved


@pytest.mark.parametrize("bad, exc", [
    (0, ValueError),
    (-1, ValueError),
    (-8, ValueError),
    (1.5, TypeError),
    (2.0, TypeError),
    (True, TypeError),
    (False, TypeError),
    ("2", TypeError),
    (np.float64(2.0), TypeError),
    (np.bool_(True), TypeError),
], ids=repr)
def test_set_num_threads_rejects_bad_values(bad, exc):
    fastnn.set_num_threads(3)
    with pytest.raises(exc):
        fastnn.set_num_threads(bad)
    # a refused value leaves the setting as it was
    assert fastnn.get_num_threads() == (3 if fastnn._threads.openmp_enabled() else 1)


@pytest.mark.parametrize("n", [1, 2, 3, 7, np.int64(2), np.int32(1)], ids=repr)
def test_get_num_threads_after_set(n):
    fastnn.set_num_threads(n)
    got = fastnn.get_num_threads()
    assert type(got) is int
    expected = int(n) if fastnn._threads.openmp_enabled() else 1
    assert got == expected


def test_set_none_returns_to_default():
    default = _default_threads()
    fastnn.set_num_threads(1)
    assert fastnn.get_num_threads() == 1
    fastnn.set_num_threads(None)
    assert fastnn.get_num_threads() == default


def _default_threads():
    saved = _config._num_threads
    _config._num_threads = None
    try:
        return fastnn.get_num_threads()
    finally:
        _config._num_threads = saved


def test_default_follows_omp_max_threads():
    fastnn.set_num_threads(None)
    n = fastnn.get_num_threads()
    assert isinstance(n, int) and n >= 1
    assert n == max(1, fastnn._threads.omp_max_threads())


def _run_python(code, **env_overrides):
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    env.update(env_overrides)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(ROOT),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.skipif(not fastnn._threads.openmp_enabled(), reason="built without OpenMP")
def test_omp_num_threads_is_respected():
    code = ("import fastnn; print(fastnn.get_num_threads()); "
            "fastnn.set_num_threads(2); print(fastnn.get_num_threads()); "
            "fastnn.set_num_threads(None); print(fastnn.get_num_threads())")
    assert _run_python(code, OMP_NUM_THREADS="1") == ["1", "2", "1"]
    assert _run_python(code, OMP_NUM_THREADS="3") == ["3", "2", "3"]


@pytest.mark.skipif(not fastnn._threads.openmp_enabled(), reason="built without OpenMP")
def test_threadpoolctl_openmp_limit_is_seen():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    fastnn.set_num_threads(None)
    before = fastnn.get_num_threads()
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert fastnn.get_num_threads() == 1
        # an explicit setting wins over the limit
        fastnn.set_num_threads(2)
        assert fastnn.get_num_threads() == 2
        fastnn.set_num_threads(None)
        assert fastnn.get_num_threads() == 1
    assert fastnn.get_num_threads() == before


def test_show_config_prints_the_facts(capsys):
    fastnn.show_config()
    printed = capsys.readouterr().out
    buf = io.StringIO()
    fastnn.show_config(file=buf)
    assert buf.getvalue() == printed
    lines = printed.splitlines()
    for key in ("openmp", "simd_path", "blas", "num_threads"):
        assert any(key in line for line in lines), f"no line with {key!r} in:\n{printed}"
    simd = [line for line in lines if line.startswith("simd_path")]
    assert simd and simd[0].split(None, 1)[1].strip()
    n_line = [line for line in lines if line.split()[0] == "num_threads"]
    assert n_line and int(n_line[0].split()[1]) == fastnn.get_num_threads()


def test_show_config_reports_explicit_setting():
    fastnn.set_num_threads(1)
    buf = io.StringIO()
    fastnn.show_config(file=buf)
    n_line = [line for line in buf.getvalue().splitlines() if line.split()[0] == "num_threads"]
    assert int(n_line[0].split()[1]) == 1
