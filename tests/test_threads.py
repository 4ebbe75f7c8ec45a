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
from fastnn.models import mlp

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


# ---- ThreadTuner: fit's choice between the default thread count and one thread ---------------

def _fake_training(tuner, seconds_at, steps):
    """Feed the tuner ``steps`` steps whose duration is ``seconds_at(threads)``; returns the
    thread count of every step."""
    used = []
    for i in range(steps):
        t = tuner.threads
        used.append(t)
        tuner.step_done(seconds_at(t, i))
    return used


needs_two = pytest.mark.skipif(
    fastnn.get_num_threads() < 2 or not _config._threads.openmp_enabled(),
    reason="needs OpenMP and 2 default threads")


@needs_two
def test_tuner_moves_to_one_thread_when_it_is_faster():
    with _config.ThreadTuner() as tuner:
        default = tuner.choices[0]
        assert tuner.threads == default
        # one thread is twice as fast (a busy machine): after the first probe fit stays there
        used = _fake_training(tuner, lambda t, i: 0.02 if t == 1 else 0.04, 400)
    assert tuner.switches == 1 and tuner.current == 1
    assert used[-200:].count(1) >= 180  # the default only in short probes
    assert fastnn.get_num_threads() == default  # the default is back after fit


@needs_two
def test_tuner_keeps_the_default_when_it_is_faster_and_follows_a_change():
    def seconds_at(t, i):
        busy = i >= 300  # another process starts at step 300
        if busy:
            return 0.02 if t == 1 else 0.05
        return 0.02 if t > 1 else 0.035

    with _config.ThreadTuner() as tuner:
        used = _fake_training(tuner, seconds_at, 900)
    assert used[:300].count(1) <= 30  # probes only
    assert used[-200:].count(1) >= 180
    assert tuner.switches == 1 and tuner.current == 1


@needs_two
def test_tuner_probes_rarely_while_the_choice_holds():
    with _config.ThreadTuner() as tuner:
        used = _fake_training(tuner, lambda t, i: 0.01 if t > 1 else 0.03, 5000)
    # 50 s of training: probes after 0.1, 0.2, 0.4, ..., 6.4, 8, 8, ... s, each 0.2 s long
    assert tuner.probes <= 15
    assert used.count(1) * 0.03 <= 0.05 * 50  # under 5% of the time at the slower count
    assert tuner.switches == 0


def test_tuner_is_off_when_the_count_is_fixed():
    fastnn.set_num_threads(2)
    fixed = fastnn.get_num_threads()  # 2, or 1 in a build without OpenMP
    with _config.ThreadTuner() as tuner:
        used = _fake_training(tuner, lambda t, i: 0.01 if t == 1 else 1.0, 500)
    assert not tuner.active and set(used) == {fixed}
    assert fastnn.get_num_threads() == fixed


@needs_two
def test_fit_results_do_not_depend_on_the_tuner(monkeypatch):
    """The tuner switching every few steps trains the same weights, bit for bit, as one thread."""
    monkeypatch.setattr(_config.ThreadTuner, "MIN_INTERVAL_S", 0.0)
    monkeypatch.setattr(_config.ThreadTuner, "MIN_INTERVAL_STEPS", 1)
    monkeypatch.setattr(_config.ThreadTuner, "MIN_INTERVAL_MEANS", 0)
    monkeypatch.setattr(_config.ThreadTuner, "PROBE_S", 0.0)
    monkeypatch.setattr(_config.ThreadTuner, "MARGIN", 0.0)  # switch at every probe
    monkeypatch.setattr(_config.ThreadTuner, "PROBE_STEPS", 2)
    monkeypatch.setattr(_config.ThreadTuner, "WINDOW", 16)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 40)).astype(np.float32)
    y = rng.integers(0, 5, 600)
    weights = []
    switches = []
    for fixed in (None, 1):
        fastnn.set_num_threads(fixed)
        model = mlp((40, 64, 32, 5), seed=3)
        model.compile(fastnn.SGD(0.05, momentum=0.9), fastnn.SoftmaxCrossEntropy())
        orig = _config.ThreadTuner.step_done

        def spy(self, seconds, _orig=orig):
            _orig(self, seconds)
            switches.append(self.switches)

        monkeypatch.setattr(_config.ThreadTuner, "step_done", spy)
        model.fit(X, y, epochs=3, batch_size=16, verbose=0, seed=1)
        monkeypatch.setattr(_config.ThreadTuner, "step_done", orig)
        weights.append([w for layer in model.get_weights() for w in layer.values()])
    fastnn.set_num_threads(None)
    assert max(switches) >= 3  # it did switch, several times
    for a, b in zip(*weights):
        assert np.array_equal(a, b)


OMP_LOOP_SCRIPT = r"""
import numpy as np, fastnn
from fastnn import _config
from fastnn.models import small_cnn
_config.set_gemm_kernel("blas")  # float32 through OpenBLAS too, as on CPUs without AVX-512
fastnn.set_num_threads(2)
for dtype in ("float32", "float64"):
    m = small_cnn(dtype=dtype, seed=0)
    m.compile(fastnn.SGD(0.01, momentum=0.9), fastnn.SoftmaxCrossEntropy())
    rng = np.random.default_rng(0)
    X = rng.random((64, 28, 28, 1)).astype(dtype)
    y = rng.integers(0, 10, 64)
    for i in range(15):
        m.train_on_batch(X, y)
    m.predict(X)
print("done")
"""


def test_no_openblas_threads_inside_openmp_regions():
    """OpenBLAS prints "Detect OpenMP Loop and this application may hang" when it starts its own
    threads inside an OpenMP parallel region: fastnn's BLAS calls run with 2 OpenMP threads and
    every GEMM going through OpenBLAS (src_cython/fnn_omp.h keeps it on one thread there)."""
    env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-c", OMP_LOOP_SCRIPT], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "done" in proc.stdout
    assert "OpenMP Loop" not in proc.stderr + proc.stdout
