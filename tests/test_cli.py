"""Tests for the command line: python -m fastnn train | evaluate | bench-info.

Training runs use the undocumented ``--limit N`` (first N training samples) and one epoch, so
each takes about a second. They need the real Fashion-MNIST files (Debian's
dataset-fashion-mnist, installed in CI); argument errors are tested without data.
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn import cli

DATA_DIR = "/usr/share/datasets/fashion-mnist"
have_data = pytest.mark.skipif(
    not os.path.isdir(DATA_DIR) and not os.environ.get("FASTNN_DATA"),
    reason="Fashion-MNIST absent (sudo apt-get install dataset-fashion-mnist)")

ACC_RE = re.compile(r"test accuracy: (\d\.\d{4}) \(loss (\d+\.\d{4})\)")


@pytest.fixture(autouse=True)
def _restore_threads():
    yield
    fastnn.set_num_threads(None)


def run(argv, capsys):
    """Run main in-process; returns (exit status, stdout, stderr)."""
    try:
        rc = cli.main(argv, prog="fastnn")
    except SystemExit as exc:  # argparse: 2 for bad arguments, 0 for --help/--version
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


# -- train / evaluate on a small subset ------------------------------------------------------

@have_data
def test_train_save_then_evaluate(tmp_path, capsys):
    path = tmp_path / "model.npz"
    rc, out, err = run(["train", "--epochs", "1", "--limit", "256", "--batch-size", "64",
                        "--threads", "1", "--quiet", "--save", str(path)], capsys)
    assert rc == 0, err
    m = ACC_RE.search(out)
    assert m, out
    acc, loss = float(m.group(1)), float(m.group(2))
    assert 0.2 < acc <= 1.0  # well above chance (0.1) after 4 steps of Adam
    assert np.isfinite(loss)
    assert "epoch" not in out  # --quiet: only the final line
    assert path.is_file()

    rc, out2, err = run(["evaluate", str(path), "--threads", "1"], capsys)
    assert rc == 0, err
    m2 = ACC_RE.search(out2)
    assert m2, out2
    assert m2.group(1) == m.group(1)  # the saved model is the trained one
    assert "10000" in out2


@have_data
def test_train_verbose_reports_every_epoch(capsys):
    rc, out, err = run(["train", "--epochs", "2", "--limit", "128", "--batch-size", "32",
                        "--optimizer", "sgd", "--threads", "1"], capsys)
    assert rc == 0, err
    assert "sgd lr=0.05 momentum=0.9 (cosine to 0.005)" in out
    assert "batch 32, 2 epochs, 1 threads, seed 0" in out
    for e in (1, 2):
        line = next(ln for ln in out.splitlines() if ln.startswith(f"epoch {e}/2 "))
        for key in ("loss=", "accuracy=", "val_loss=", "val_accuracy=", "seconds="):
            assert key in line, line
    assert "s/epoch" in out
    assert ACC_RE.search(out)


@have_data
def test_train_is_reproducible_with_seed(capsys):
    argv = ["train", "--epochs", "1", "--limit", "192", "--batch-size", "64", "--threads", "1",
            "--quiet", "--seed", "3", "--learning-rate", "0.002"]
    outs = [run(argv, capsys)[1] for _ in range(2)]
    assert ACC_RE.search(outs[0]).groups() == ACC_RE.search(outs[1]).groups()


@have_data
def test_train_float64(tmp_path, capsys):
    path = tmp_path / "m64.npz"
    rc, out, err = run(["train", "--epochs", "1", "--limit", "128", "--dtype", "float64",
                        "--threads", "1", "--quiet", "--save", str(path)], capsys)
    assert rc == 0, err
    assert fastnn.load(path).dtype == np.float64
    rc, out, err = run(["evaluate", str(path), "--threads", "1"], capsys)
    assert rc == 0, err and ACC_RE.search(out)


@have_data
def test_threads_option_sets_thread_count(capsys):
    rc, _, err = run(["train", "--epochs", "1", "--limit", "64", "--threads", "1", "--quiet"],
                     capsys)
    assert rc == 0, err
    assert fastnn.get_num_threads() == 1


@have_data
def test_python_dash_m_fastnn(tmp_path):
    """The real entry point, in a subprocess: train --save, then evaluate."""
    path = tmp_path / "sub.npz"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "fastnn", "train", "--epochs", "1", "--limit",
                           "200", "--quiet", "--save", str(path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    m = ACC_RE.search(proc.stdout)
    assert m, proc.stdout
    proc = subprocess.run([sys.executable, "-m", "fastnn", "evaluate", str(path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert ACC_RE.search(proc.stdout).group(1) == m.group(1)


def test_python_dash_m_bad_args_subprocess():
    proc = subprocess.run([sys.executable, "-m", "fastnn", "train", "--epochs", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "python -m fastnn train: error: argument --epochs: must be an integer >= 1, got 0" \
        in proc.stderr


# -- argument errors: exit status 2 with argparse's message, before any data is loaded ---------

@pytest.mark.parametrize("argv,needle", [
    (["train", "--epochs", "0"], "argument --epochs: must be an integer >= 1, got 0"),
    (["train", "--epochs", "-3"], "argument --epochs: must be an integer >= 1, got -3"),
    (["train", "--epochs", "2.5"], "argument --epochs: must be an integer >= 1, got '2.5'"),
    (["train", "--batch-size", "-1"], "argument --batch-size: must be an integer >= 1, got -1"),
    (["train", "--batch-size", "0"], "argument --batch-size: must be an integer >= 1"),
    (["train", "--threads", "0"], "argument --threads: must be an integer >= 1"),
    (["train", "--learning-rate", "0"], "argument --learning-rate: must be a finite number > 0"),
    (["train", "--learning-rate", "-0.1"], "argument --learning-rate: must be a finite number"),
    (["train", "--learning-rate", "nan"], "argument --learning-rate: must be a finite number"),
    (["train", "--learning-rate", "fast"], "argument --learning-rate: must be a number > 0"),
    (["train", "--lr-schedule", "step"], "argument --lr-schedule: invalid choice: 'step'"),
    (["train", "--seed", "-1"], "argument --seed: must be an integer >= 0"),
    (["train", "--model", "resnet"], "argument --model: invalid choice: 'resnet'"),
    (["train", "--optimizer", "rmsprop"], "argument --optimizer: invalid choice"),
    (["train", "--dtype", "float16"], "argument --dtype: invalid choice"),
    (["train", "--limit", "0"], "argument --limit: must be an integer >= 1"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["evaluate"], "the following arguments are required: MODEL.npz"),
    ([], "the following arguments are required"),
    (["fly"], "invalid choice: 'fly'"),
])
def test_bad_arguments_exit_2(argv, needle, capsys):
    rc, out, err = run(argv, capsys)
    assert rc == 2
    assert needle in err, err
    assert "usage: fastnn" in err


def test_help_and_version(capsys):
    rc, out, _ = run(["--help"], capsys)
    assert rc == 0
    for cmd in ("train", "evaluate", "bench-info"):
        assert cmd in out
    rc, out, _ = run(["train", "--help"], capsys)
    assert rc == 0
    for opt in ("--model", "--epochs", "--batch-size", "--optimizer", "--learning-rate",
                "--threads", "--seed", "--save", "--dtype", "--quiet", "--lr-schedule"):
        assert opt in out
    assert "--limit" not in out  # undocumented
    assert "(default: 10)" in out and "(default: 64)" in out and "default: adam" in out
    rc, out, _ = run(["--version"], capsys)
    assert rc == 0 and out.strip() == f"fastnn {fastnn.__version__}"


# -- run-time errors: exit status 1 and one clear line on stderr -------------------------------

def test_missing_data_gives_install_hint(tmp_path, capsys):
    rc, out, err = run(["train", "--data", str(tmp_path), "--epochs", "1"], capsys)
    assert rc == 1
    assert err.startswith("fastnn train: error:")
    assert "sudo apt-get install dataset-fashion-mnist" in err and "FASTNN_DATA" in err


def test_missing_data_via_env(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path))
    rc, _, err = run(["train", "--epochs", "1"], capsys)
    assert rc == 1 and "dataset-fashion-mnist" in err


def test_save_to_missing_folder_fails_before_training(tmp_path, capsys):
    target = tmp_path / "no" / "such" / "m.npz"
    rc, out, err = run(["train", "--save", str(target)], capsys)
    assert rc == 1
    assert "does not exist" in err
    assert "test accuracy" not in out


@have_data
def test_batch_size_larger_than_limit(capsys):
    rc, _, err = run(["train", "--limit", "10", "--batch-size", "64", "--quiet"], capsys)
    assert rc == 1
    assert "--batch-size 64 is larger than the number of training samples (10)" in err


def test_evaluate_missing_file(tmp_path, capsys):
    rc, _, err = run(["evaluate", str(tmp_path / "nope.npz")], capsys)
    assert rc == 1
    assert "fastnn evaluate: error:" in err and "not found" in err


def test_evaluate_not_a_model(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip file")
    rc, _, err = run(["evaluate", str(bad)], capsys)
    assert rc == 1
    assert "could not load a fastnn model" in err


def test_cnn_unavailable_message(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastnn.models", None)  # import fails
    rc, out, err = run(["train", "--model", "cnn", "--epochs", "1"], capsys)
    assert rc == 1
    assert "--model cnn is not available" in err and "--model mlp" in err


def test_bench_info(capsys):
    rc, out, err = run(["bench-info"], capsys)
    assert rc == 0, err
    assert "fastnn" in out and "openmp" in out and "num_threads" in out


# -- building blocks --------------------------------------------------------------------------

def test_default_learning_rates():
    opt, lr = cli._make_optimizer("adam", None)
    assert isinstance(opt, fastnn.Adam) and lr == 1e-3 and opt.learning_rate == 1e-3
    opt, lr = cli._make_optimizer("sgd", None)
    assert isinstance(opt, fastnn.SGD) and lr == 0.05 and opt.momentum == 0.9
    opt, lr = cli._make_optimizer("sgd", 0.2)
    assert lr == 0.2 and opt.learning_rate == 0.2


def test_cosine_lr_schedule():
    assert cli.cosine_lr(1e-3, 0, 10) == pytest.approx(1e-3)
    assert cli.cosine_lr(1e-3, 5, 10) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert cli.cosine_lr(1e-3, 10, 10) == pytest.approx(1e-4)
    lrs = [cli.cosine_lr(0.05, e, 10) for e in range(11)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_cosine_callback_sets_optimizer_lr():
    model = cli.build_mlp("float32", seed=0)
    opt, lr = cli._make_optimizer("adam", None)
    model.compile(optimizer=opt, loss=fastnn.SoftmaxCrossEntropy())
    cb = cli._cosine_callback(lr, 4)
    cb.model = model
    seen = []
    for epoch in range(4):
        seen.append(model.optimizer.learning_rate)
        cb.on_epoch_end(epoch, {})
    assert seen == pytest.approx([cli.cosine_lr(lr, e, 4) for e in range(4)])
    assert seen[0] == lr


@have_data
def test_lr_schedule_changes_training(capsys):
    base = ["train", "--epochs", "2", "--limit", "256", "--batch-size", "64", "--threads", "1",
            "--quiet"]
    cos = ACC_RE.search(run(base, capsys)[1]).groups()
    const = ACC_RE.search(run(base + ["--lr-schedule", "constant"], capsys)[1]).groups()
    assert cos != const  # the second epoch ran with a smaller learning rate


@have_data
def test_train_cnn_when_available(tmp_path, capsys):
    if not hasattr(pytest.importorskip("fastnn.models"), "small_cnn"):
        pytest.skip("fastnn.models.small_cnn not written yet")
    path = tmp_path / "cnn.npz"
    rc, out, err = run(["train", "--model", "cnn", "--epochs", "1", "--limit", "128",
                        "--threads", "1", "--quiet", "--save", str(path)], capsys)
    assert rc == 0, err
    m = ACC_RE.search(out)
    assert m, out
    rc, out, err = run(["evaluate", str(path), "--threads", "1"], capsys)  # (N, 28, 28, 1) input
    assert rc == 0, err
    assert ACC_RE.search(out).group(1) == m.group(1)


def test_build_mlp_architecture():
    model = cli.build_mlp("float32", seed=0)
    dense = [layer for layer in model.layers if isinstance(layer, fastnn.Dense)]
    assert [(d.in_features, d.out_features) for d in dense] == [(784, 256), (256, 128),
                                                               (128, 10)]
    assert model.count_params() == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    assert model.predict(np.zeros((3, 784), np.float32)).shape == (3, 10)
