"""Tests for the command line: python -m fastnn train | evaluate | profile | bench-info.

Training runs use the undocumented ``--limit N`` (first N training samples) and one epoch, so
each takes about a second. They need the real Fashion-MNIST files (Debian's
dataset-fashion-mnist, installed in CI); argument errors are tested without data.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn import cli

from conftest import requires_fashion_mnist

have_data = requires_fashion_mnist

ACC_RE = re.compile(r"test accuracy: (\d\.\d{4}) \(loss (\d+\.\d{4})\)")


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


@pytest.mark.slow
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
    (["train", "--optimizer", "lbfgs"], "argument --optimizer: invalid choice"),
    (["train", "--dtype", "float16"], "argument --dtype: invalid choice"),
    (["train", "--limit", "0"], "argument --limit: must be an integer >= 1"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["evaluate"], "the following arguments are required: MODEL.npz"),
    (["profile", "--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got 0"),
    (["profile", "--batch-size", "-4"], "argument --batch-size: must be an integer >= 1"),
    (["profile", "--threads", "0"], "argument --threads: must be an integer >= 1, got 0"),
    (["profile", "--repeats", "0"], "argument --repeats: must be an integer >= 1, got 0"),
    (["profile", "--repeats", "many"], "argument --repeats: must be an integer >= 1, got 'many'"),
    (["profile", "--warmup", "-1"], "argument --warmup: must be an integer >= 0, got -1"),
    (["profile", "--model", "resnet"], "argument --model: invalid choice: 'resnet'"),
    (["profile", "--dtype", "float16"], "argument --dtype: invalid choice"),
    (["profile", "--optimizer", "lbfgs"], "argument --optimizer: invalid choice"),
    (["profile", "--learning-rate", "0"], "argument --learning-rate: must be a finite number"),
    (["profile", "--model", "cnn", "--model-file", "m.npz"],
     "argument --model-file: not allowed with argument --model"),
    (["profile", "--data", "x"], "unrecognized arguments: --data"),
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
    for cmd in ("train", "evaluate", "profile", "bench-info"):
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


def test_cosine_schedule_is_keras_cosine_decay_per_epoch():
    sched = fastnn.schedules.CosineDecay(1e-3, 10, alpha=cli.FINAL_LR_FRACTION)
    assert sched(0) == pytest.approx(1e-3)
    assert sched(5) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert sched(10) == pytest.approx(1e-4)
    assert sched(12) == pytest.approx(1e-4)  # stays at the floor after decay_steps
    lrs = [sched(e) for e in range(11)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert fastnn.schedules.SCHEDULES["CosineDecay"] is fastnn.schedules.CosineDecay
    assert fastnn.schedules.Constant(0.3)(7) == 0.3


def test_learning_rate_scheduler_sets_optimizer_lr_for_the_next_epoch():
    model = cli.build_model("mlp", "float32", seed=0)
    opt, lr = cli._make_optimizer("adam", None)
    model.compile(optimizer=opt, loss=fastnn.SoftmaxCrossEntropy())
    sched = fastnn.schedules.CosineDecay(lr, 4, alpha=0.1)
    cb = fastnn.callbacks.LearningRateScheduler(sched)
    cb.model = model
    seen = []
    for epoch in range(4):
        seen.append(model.optimizer.learning_rate)
        cb.on_epoch_end(epoch, {})
    assert seen == pytest.approx([sched(e) for e in range(4)])
    assert seen[0] == lr
    with pytest.raises(TypeError, match="callable"):
        fastnn.callbacks.LearningRateScheduler(0.1)


@have_data
def test_lr_schedule_changes_training(capsys):
    base = ["train", "--epochs", "2", "--limit", "256", "--batch-size", "64", "--threads", "1",
            "--quiet"]
    cos = ACC_RE.search(run(base, capsys)[1]).groups()
    const = ACC_RE.search(run(base + ["--lr-schedule", "constant"], capsys)[1]).groups()
    assert cos != const  # the second epoch ran with a smaller learning rate


@pytest.mark.slow
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


@pytest.mark.slow
@have_data
def test_train_cnn_bn_with_plot_and_resaved_statistics(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path, png = tmp_path / "cnnbn.npz", tmp_path / "curves.png"
    rc, out, err = run(["train", "--model", "cnn-bn", "--epochs", "2", "--limit", "96",
                        "--batch-size", "32", "--threads", "1", "--quiet", "--save", str(path),
                        "--plot", str(png)], capsys)
    assert rc == 0, err
    m = ACC_RE.search(out)
    assert m, out
    assert png.read_bytes()[:4] == b"\x89PNG"
    model = fastnn.load(path)
    assert model.layers[1].buffers["running_var"].shape == (32,)
    assert not np.all(model.layers[1].buffers["running_var"] == 1.0)  # trained statistics saved
    rc, out, err = run(["evaluate", str(path), "--threads", "1"], capsys)
    assert rc == 0, err
    assert ACC_RE.search(out).group(1) == m.group(1)  # inference mode: the same test accuracy


def test_plot_without_matplotlib_or_folder_is_an_error(tmp_path, capsys):
    rc, out, err = run(["train", "--plot", str(tmp_path / "no" / "c.png"), "--epochs", "1"],
                       capsys)
    assert rc != 0 and "does not exist" in err


def test_build_mlp_architecture():
    model = cli.build_model("mlp", "float32", seed=0)
    dense = [layer for layer in model.layers if isinstance(layer, fastnn.Dense)]
    assert [(d.in_features, d.out_features) for d in dense] == [(784, 256), (256, 128),
                                                               (128, 10)]
    assert model.count_params() == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    assert model.predict(np.zeros((3, 784), np.float32)).shape == (3, 10)


# -- profile: random data, no dataset needed ---------------------------------------------------

FAST_PROFILE = ["--batch-size", "2", "--repeats", "2", "--warmup", "1", "--threads", "1"]


def _check_profile_table(out, n_layers):
    """Every layer's row, the loss row and the total row are in the printed table."""
    lines = out.splitlines()
    for i in range(n_layers):
        assert sum(ln.startswith(f"| {i}: ") for ln in lines) == 1, out
    assert sum(ln.startswith("| loss: ") for ln in lines) == 1, out
    total = [ln for ln in lines if ln.startswith("| total |")]
    assert len(total) == 1, out
    assert total[0].rstrip().endswith("| 100.0% |")


@pytest.mark.parametrize("name,n_layers,loss", [("mlp", 3, "SoftmaxCrossEntropy"),
                                                ("cnn", 6, "SoftmaxCrossEntropy"),
                                                ("cnn-bn", 18, "SoftmaxCrossEntropy"),
                                                ("dqn", 6, "MeanSquaredError")])
def test_profile_each_model(name, n_layers, loss, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path))  # no dataset there: not needed
    rc, out, err = run(["profile", "--model", name] + FAST_PROFILE, capsys)
    assert rc == 0, err
    header = out.splitlines()[0]
    assert header.startswith(f"fastnn {fastnn.__version__} profile: model {name} ("), header
    for part in ("batch 2,", "1 threads", "float32", "adam lr=", loss, "medians of 2 steps"):
        assert part in header, header
    assert len(cli.build_model(name).layers) == n_layers
    _check_profile_table(out, n_layers)


def test_profile_defaults(capsys):
    args = cli.build_parser().parse_args(["profile"])
    assert (args.model, args.model_file, args.batch_size, args.threads, args.repeats,
            args.dtype, args.optimizer, args.json) == (None, None, 128, None, 20, None, "adam",
                                                      None)
    rc, out, err = run(["profile", "--repeats", "1", "--warmup", "0"], capsys)
    assert rc == 0, err
    assert "model mlp (235,146 params" in out and "batch 128," in out and "float32" in out
    assert f"{fastnn.get_num_threads()} threads" in out
    _check_profile_table(out, 3)


def test_profile_json(tmp_path, capsys):
    path = tmp_path / "prof.json"
    rc, out, err = run(["profile", "--model", "mlp", "--optimizer", "sgd", "--dtype", "float64",
                        "--json", str(path)] + FAST_PROFILE, capsys)
    assert rc == 0, err
    assert "float64" in out and "sgd lr=0.05" in out
    data = json.loads(path.read_text())
    assert data["fastnn_version"] == fastnn.__version__
    assert (data["model"], data["batch_size"], data["threads"], data["dtype"],
            data["optimizer"], data["repeats"], data["loss"]) == (
        "mlp", 2, 1, "float64", "sgd", 2, "SoftmaxCrossEntropy")
    assert data["input_shape"] == [784]
    rows = data["rows"]
    layer_rows = [r for r in rows if r["name"].split(":")[0].isdigit()]
    assert [r["name"].split(":")[0] for r in layer_rows] == ["0", "1", "2"]
    for r in rows:
        assert isinstance(r["forward_ms"], float) and r["forward_ms"] >= 0
        assert isinstance(r["backward_ms"], float) and r["backward_ms"] >= 0
    assert rows[-1]["name"] == "total" and rows[-1]["share"] == pytest.approx(1.0)
    assert rows[-1]["forward_ms"] > 0 and rows[-1]["backward_ms"] > 0
    assert all(r["gflops"] > 0 for r in layer_rows)  # Dense layers: useful FLOPs


def test_profile_json_to_missing_folder_fails_first(tmp_path, capsys):
    rc, out, err = run(["profile", "--json", str(tmp_path / "no" / "p.json")] + FAST_PROFILE,
                       capsys)
    assert rc == 1
    assert err.startswith("fastnn profile: error:") and "does not exist" in err
    assert "| total |" not in out


def test_profile_model_file(tmp_path, capsys):
    """A model saved by Sequential.save, of a shape no built-in network has, keeps its loss."""
    model = fastnn.Sequential([fastnn.Conv2D(2, 4, 3, activation="relu"), fastnn.Flatten(),
                               fastnn.Dense(6 * 6 * 4, 3)], seed=1, input_shape=(8, 8, 2))
    model.compile(fastnn.SGD(0.01), fastnn.MeanSquaredError())
    path = tmp_path / "conv.npz"
    model.save(path)
    rc, out, err = run(["profile", "--model-file", str(path)] + FAST_PROFILE, capsys)
    assert rc == 0, err
    header = out.splitlines()[0]
    assert f"model {path} (" in header and "input (8, 8, 2)" in header, header
    assert "MeanSquaredError" in header and "float32" in header
    _check_profile_table(out, 3)


def test_profile_model_file_from_train_save_format(tmp_path, capsys):
    """The MLP as ``train --save`` writes it (float64, softmax CE): profiled in its dtype."""
    model = cli.build_model("mlp", "float64", seed=0)
    model.compile(fastnn.Adam(1e-3), fastnn.SoftmaxCrossEntropy())
    path = tmp_path / "mlp64.npz"
    model.save(path)
    rc, out, err = run(["profile", "--model-file", str(path), "--json",
                        str(tmp_path / "p.json")] + FAST_PROFILE, capsys)
    assert rc == 0, err
    assert "float64" in out.splitlines()[0] and "SoftmaxCrossEntropy" in out
    _check_profile_table(out, 3)
    assert json.loads((tmp_path / "p.json").read_text())["dtype"] == "float64"
    rc, _, err = run(["profile", "--model-file", str(path), "--dtype", "float32"] + FAST_PROFILE,
                     capsys)
    assert rc == 1
    assert "--dtype float32 differs from the dtype of the model" in err and "float64" in err


def test_profile_model_file_errors(tmp_path, capsys):
    rc, _, err = run(["profile", "--model-file", str(tmp_path / "nope.npz")], capsys)
    assert rc == 1 and "fastnn profile: error:" in err and "not found" in err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    rc, _, err = run(["profile", "--model-file", str(bad)], capsys)
    assert rc == 1 and "could not load a fastnn model" in err
    noshape = fastnn.Sequential([fastnn.Flatten(), fastnn.Dense(4, 2)])
    noshape.compile("sgd", "softmax_cross_entropy")
    noshape.save(tmp_path / "noshape.npz")
    rc, _, err = run(["profile", "--model-file", str(tmp_path / "noshape.npz")], capsys)
    assert rc == 1 and "the model has no input shape" in err


def test_random_batch_fits_each_loss():
    for loss, want in (("softmax_cross_entropy", np.int64), ("binary_cross_entropy", np.float64),
                       ("mse", np.float64)):
        model = fastnn.Sequential([fastnn.Dense(5, 3)], dtype="float64").compile("sgd", loss)
        X, y = cli.random_batch(model, 7, seed=2)
        assert X.shape == (7, 5) and X.dtype == np.float64 and 0 <= X.min() and X.max() < 1
        assert y.dtype == want
        if want is np.int64:
            assert y.shape == (7,) and 0 <= y.min() and y.max() < 3
        else:
            assert y.shape == (7, 3)
        model.train_on_batch(X, y)  # the loss accepts them
        X2, y2 = cli.random_batch(model, 7, seed=2)
        assert np.array_equal(X, X2) and np.array_equal(y, y2)  # seeded


def test_python_dash_m_fastnn_profile():
    """The real entry point, in a subprocess."""
    proc = subprocess.run([sys.executable, "-m", "fastnn", "profile", "--model", "mlp"]
                          + FAST_PROFILE, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("fastnn ") and "profile: model mlp" in proc.stdout
    _check_profile_table(proc.stdout, 3)


def test_profile_help(capsys):
    rc, out, _ = run(["profile", "--help"], capsys)
    assert rc == 0
    for opt in ("--model", "--model-file", "--batch-size", "--threads", "--repeats", "--warmup",
                "--dtype", "--optimizer", "--learning-rate", "--seed", "--json"):
        assert opt in out
    assert "(default: 128)" in out and "(default: 20)" in out and "default: adam" in out
