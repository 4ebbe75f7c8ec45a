"""Tests for fastnn.distributed: data-parallel training on MPI.

Each test launches ``mpirun -n 2 python tests/mpi_scripts/dp_check.py <case>`` (or the command
line) as a subprocess and compares what the ranks print and save with one process's run in this
process. Needs mpi4py and an MPI's ``mpirun`` (CI: Debian's openmpi-bin and libopenmpi-dev, pip's
mpi4py); skipped without them. Each launch takes 2-5 s.
"""
import copy
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py")
if shutil.which("mpirun") is None:
    pytest.skip("mpirun not found (an MPI such as Debian's openmpi-bin)", allow_module_level=True)

import fastnn  # noqa: E402
from fastnn import cli, distributed  # noqa: E402

from conftest import requires_fashion_mnist  # noqa: E402

ROOT = Path(fastnn.__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve().parent / "mpi_scripts" / "dp_check.py"
DIGEST_RE = re.compile(r"weights sha256: ([0-9a-f]{64})")
#: a launch that hangs fails the test instead of the suite
TIMEOUT = 120

_spec = importlib.util.spec_from_file_location("dp_check", SCRIPT)
dp_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dp_check)


def _gemm_kernel():
    """The float32 GEMM kernel both sides use: fastnn's own (its sums over the batch are in fixed
    128-row slices), forced on AVX2 CPUs whose automatic choice sends large GEMMs to BLAS; None
    where there is none (no AVX2/AVX-512: BLAS)."""
    name = fastnn._config.set_gemm_kernel(None)
    return {"avx2+blas": "avx2", "blas": None}.get(name, name)


def mpirun(args, n=2, timeout=TIMEOUT, env=None, python_args=None):
    """Run ``mpirun -n n python <args>`` from ROOT; returns (status, stdout, stderr, seconds)."""
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
                    OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                    # shared memory without ptrace (containers), no network probing
                    OMPI_MCA_btl_vader_single_copy_mechanism="none",
                    OMPI_MCA_btl="self,vader", OMPI_MCA_rmaps_base_oversubscribe="1")
    kernel = _gemm_kernel()
    if kernel:
        full_env["FASTNN_GEMM"] = kernel
    full_env.update(env or {})
    cmd = ["mpirun", "-n", str(n), "--oversubscribe", sys.executable] + (python_args or []) \
        + [str(a) for a in args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - t0


def _reference(kind, batch, steps, weighted=False):
    """One process's fit: the same model (seed 0, rank 0's), data, global batch and shuffle."""
    kernel = _gemm_kernel()
    if kernel:
        fastnn._config.set_gemm_kernel(kernel)  # undone by conftest's reset fixture
    fastnn.set_num_threads(1)
    model, X, y, kw = dp_check.build(kind, batch, steps, seed=0, weighted=weighted)
    model.fit(X, y, epochs=1, batch_size=batch, verbose=0, **kw)
    return model


def _per_array_rel(model, flat):
    """Largest ||a - b|| / ||a|| over the model's parameter arrays a, b read from ``flat`` (a
    flat parameter buffer of the same layout)."""
    other = copy.deepcopy(model)  # its own layers and flat buffers
    other._params.params[:] = flat
    return max(float(np.linalg.norm(a - b) / np.linalg.norm(a))
               for (_, _, a, _), (_, _, b, _) in zip(model._params.entries, other._params.entries))


def _train_case(tmp_path, kind, batch, steps, weighted=False):
    out = tmp_path / "rank0.npy"
    args = [SCRIPT, "train", "--model", kind, "--batch", batch, "--steps", steps, "--out", out]
    if weighted:
        args.append("--weighted")
    rc, stdout, stderr, _ = mpirun(args)
    assert rc == 0, stderr
    digests = DIGEST_RE.findall(stdout)
    assert len(digests) == 2, stdout
    assert digests[0] == digests[1], "the two ranks' weights differ"
    flat = np.load(out)
    ref = _reference(kind, batch, steps, weighted)
    return ref, flat, digests[0]


# -- shards --------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 7, 64, 255, 256])
@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_shard_bounds_cover_the_batch_in_order_as_array_split(n, size):
    parts = np.array_split(np.arange(n), size)
    bounds = [distributed.shard_bounds(n, r, size) for r in range(size)]
    assert [list(range(a, b)) for a, b in bounds] == [list(p) for p in parts]


def test_import_fastnn_and_distributed_do_not_import_mpi4py():
    code = ("import sys, fastnn, fastnn.distributed, fastnn.cli; "
            "print('mpi4py' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True)
    assert out.stdout.strip() == "False"


def test_train_help_lists_distributed(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "--distributed" in capsys.readouterr().out


# -- 2 ranks against one process ----------------------------------------------------------------

@pytest.mark.slow
def test_mlp_two_ranks_equal_one_process_exactly_with_128_row_shards(tmp_path):
    """Global batch 256 = 2 shards of 128 rows: the shards coincide with the Dense layers' fixed
    reduction slices (the GEMM's KC = 128 rows for the weight gradient, the same slices for the
    bias gradient) and the shares are 1/2, so 20 steps give one process's weights bit for bit.
    The ranks built their models from different seeds: rank 0's weights were broadcast."""
    if _gemm_kernel() is None:
        pytest.skip("no fastnn GEMM kernel on this CPU (BLAS sums in its own order)")
    ref, flat, digest = _train_case(tmp_path, "mlp", 256, 20)
    assert digest == distributed.weights_digest(ref)
    np.testing.assert_array_equal(flat, ref._params.params)


@pytest.mark.slow
def test_mlp_two_ranks_match_one_process_with_other_shards(tmp_path):
    """Shards of 32 rows lie inside one reduction slice: rounding only."""
    ref, flat, _ = _train_case(tmp_path, "mlp", 64, 20)
    assert _per_array_rel(ref, flat) <= 1e-5


@pytest.mark.slow
def test_cnn_two_ranks_match_one_process(tmp_path):
    """Conv2D cuts the batch into 16 chunks of a size that depends on the batch, so the shards
    never coincide with them: 20 steps agree to float32 rounding."""
    ref, flat, _ = _train_case(tmp_path, "cnn", 64, 20)
    assert _per_array_rel(ref, flat) <= 1e-5


@pytest.mark.slow
def test_sample_and_class_weights_are_shared_by_weight(tmp_path):
    """With weights, each shard's gradient is scaled by its share of the batch's weight sum
    (class 0 weighs 0, so some shards weigh little or nothing)."""
    ref, flat, _ = _train_case(tmp_path, "mlp", 64, 10, weighted=True)
    assert _per_array_rel(ref, flat) <= 1e-5


@pytest.mark.slow
def test_a_users_loss_and_a_nan_on_one_rank(tmp_path):
    """A Loss subclass of the user's trains as in one process; a NaN loss on rank 1 alone
    (its 4th step) stops every rank before that update (on_nan="stop")."""
    out = tmp_path / "rank0.npy"
    rc, stdout, stderr, _ = mpirun([SCRIPT, "userloss", "--out", out])
    assert rc == 0, stderr
    digests = DIGEST_RE.findall(stdout)
    assert len(digests) == 2 and digests[0] == digests[1]
    fastnn.set_num_threads(1)
    ref, X, y, kw = dp_check.build_user_loss()
    ref.fit(X, y, epochs=1, batch_size=64, verbose=0, **kw)
    assert _per_array_rel(ref, np.load(out)) <= 1e-5
    stops = re.findall(r"rank (\d) stopped after (\d+) steps, (\d) epoch\(s\); nan sha256: (\w+)",
                       stdout)
    assert sorted(r for r, *_ in stops) == ["0", "1"]
    assert stops[0][1:] == stops[1][1:]  # the same steps, epochs and weights on both ranks
    assert stops[0][1:3] == ("3", "1")  # 3 updates, then the NaN step was not applied
    assert "loss became nan at epoch 1, batch 4" in stderr


# -- failures, save and resume, BatchNorm ------------------------------------------------------

@pytest.mark.slow
def test_a_rank_that_raises_ends_the_job_with_its_message(tmp_path):
    ckpt = tmp_path / "ckpt.npz"
    rc, stdout, stderr, seconds = mpirun([SCRIPT, "fail", "--out", ckpt], timeout=60)
    assert rc != 0
    assert "deliberate failure on rank 1 at epoch 2, batch 3" in stderr
    assert "rank 1 of 2" in stderr and "MPI_Abort" in stderr
    assert "not reached" not in stdout
    assert seconds < 30
    # the checkpoint of the last completed epoch, written by rank 0, is intact
    model = fastnn.load(ckpt)
    assert model.epochs_completed == 1


@pytest.mark.slow
def test_save_and_resume_under_mpi_equal_an_uninterrupted_run(tmp_path):
    """Rank 0 checkpoints after epoch 2; every rank loads the file through rank 0
    (``distributed.load``) and resumes: the weights equal 3 epochs in one go, and
    ``distributed.save`` writes them."""
    rc, stdout, stderr, _ = mpirun([SCRIPT, "resume", "--out", tmp_path / "ckpt.npz"])
    assert rc == 0, stderr
    assert stdout.count("resumed from epoch: 2") == 2
    ref = re.findall(r"reference sha256: (\w+)", stdout)
    resumed = re.findall(r"resumed sha256: (\w+)", stdout)
    saved = re.findall(r"saved sha256: (\w+)", stdout)
    assert len(ref) == len(resumed) == 2 and len(saved) == 1
    assert set(ref) == set(resumed) == set(saved)


@pytest.mark.slow
def test_batchnorm_dropout_and_sharded_evaluation(tmp_path):
    rc, stdout, stderr, _ = mpirun([SCRIPT, "misc"])
    assert rc == 0, stderr
    assert stdout.count("running stats equal: True") == 2
    assert stdout.count("running stats moved: True") == 2
    assert "rank 0 rank-zero-only callback epochs: 2" in stdout
    assert "rank 1 rank-zero-only callback epochs: 0" in stdout
    digests = DIGEST_RE.findall(stdout)
    assert len(digests) == 2 and digests[0] == digests[1]
    for line in re.findall(r"^(?:evaluate|val_loss history): .*$", stdout, re.MULTILINE):
        values = [float(v) for v in re.findall(r"\d+\.\d+(?:e-?\d+)?", line)]
        half = len(values) // 2
        np.testing.assert_allclose(values[:half], values[half:], rtol=1e-12)


@requires_fashion_mnist
@pytest.mark.slow
def test_cli_train_distributed_equals_one_process(tmp_path, capsys):
    """``mpirun -n 2 python -m fastnn train --distributed``: rank 0 prints and saves, each rank
    prints its digest; with 2 shards of 128 rows the saved model equals one process's."""
    if _gemm_kernel() is None:
        pytest.skip("no fastnn GEMM kernel on this CPU (BLAS sums in its own order)")
    argv = ["train", "--epochs", "2", "--limit", "1024", "--batch-size", "256", "--seed", "3"]
    dist_path, one_path = tmp_path / "dist.npz", tmp_path / "one.npz"
    rc, stdout, stderr, _ = mpirun(argv + ["--distributed", "--save", dist_path],
                                   python_args=["-m", "fastnn"])
    assert rc == 0, stderr
    assert stdout.count("test accuracy:") == 1 and stdout.count("saved model to") == 1
    assert "2 MPI ranks" in stdout
    digests = DIGEST_RE.findall(stdout)
    assert len(digests) == 2 and digests[0] == digests[1], stdout

    fastnn._config.set_gemm_kernel(_gemm_kernel())
    assert cli.main(argv + ["--threads", "1", "--quiet", "--save", str(one_path)]) == 0
    one_out = capsys.readouterr().out
    acc = re.search(r"test accuracy: .*", stdout).group(0)
    assert acc == re.search(r"test accuracy: .*", one_out).group(0)
    dist, one = fastnn.load(dist_path), fastnn.load(one_path)
    assert distributed.weights_digest(dist) == digests[0] == distributed.weights_digest(one)
