"""Command line: ``python -m fastnn train | evaluate | profile | dqn | bench-info`` (also the
``fastnn`` script; ``dqn`` is :mod:`fastnn.rl.cli`, extra ``rl``).

Examples
--------
::

    python -m fastnn train                           # MLP 784-256-128-10, Adam, 10 epochs
    python -m fastnn train --optimizer sgd --epochs 5 --threads 2 --save mlp.npz
    python -m fastnn evaluate mlp.npz
    python -m fastnn profile --model cnn --threads 1 # per-layer times of one training step
    python -m fastnn profile --model-file mlp.npz --json profile.json
    python -m fastnn bench-info                      # version, OpenMP, threads, BLAS, SIMD path
    python -m fastnn dqn --env ALE/Breakout-v5 --steps 1000000 --save ck  # pip install fastnn[rl]

Exit status: 0 on success, 2 for bad command-line arguments (argparse's convention), 1 for other
errors (missing data files, unreadable model file, ...), 130 when interrupted with Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import IO, TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .model import Sequential
    from .optimizers import Optimizer

#: Learning rates used when ``--learning-rate`` is not given.
DEFAULT_LEARNING_RATES = {"adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3, "sgd": 0.05}
#: ``--lr-schedule cosine`` ends at this fraction of the initial learning rate.
FINAL_LR_FRACTION = 0.1
#: Momentum of SGD from the command line.
SGD_MOMENTUM = 0.9

MLP_SIZES = (784, 256, 128, 10)
#: Outputs (actions) of the DQN that ``profile --model dqn`` builds (as in bench/).
DQN_ACTIONS = 6
#: the dtype (policy) choices of --dtype: Sequential's dtypes
DTYPES = ("float32", "float64", "mixed_bfloat16")
#: Loss of each built-in network: softmax cross-entropy on labels, the DQN's MSE on Q-targets.
MODEL_LOSSES = {"mlp": "softmax_cross_entropy", "cnn": "softmax_cross_entropy",
                "cnn-bn": "softmax_cross_entropy", "dqn": "mse"}
#: Learning rates of ``profile`` per network when ``--learning-rate`` is not given (the DQN
#: diverges with SGD at 0.05 on random targets; 1e-4 is ``fastnn.models.dqn``'s default).
PROFILE_LEARNING_RATES = {"dqn": {"adam": 1e-4, "sgd": 1e-4}}


class CLIError(Exception):
    """An error reported as ``fastnn <command>: error: <message>`` with exit status 1."""


# -- argument types ---------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


_seed = _nonnegative_int


# -- parser -----------------------------------------------------------------------------------

def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argparse parser of ``python -m fastnn``."""
    parser = argparse.ArgumentParser(
        prog=prog or "python -m fastnn",
        description="fastnn: train, evaluate and profile neural networks on the CPU "
                    "(Fashion-MNIST; profile needs no data).",
        epilog="Data: Fashion-MNIST from FASTNN_DATA or /usr/share/datasets/fashion-mnist "
               "(sudo apt-get install dataset-fashion-mnist).",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"fastnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{train,evaluate,profile,dqn,bench-info}")
    sub.required = True

    threads = argparse.ArgumentParser(add_help=False)
    threads.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                         help="OpenMP threads for fastnn's kernels (default: OMP_NUM_THREADS or "
                              "all cores)")
    common = argparse.ArgumentParser(add_help=False, parents=[threads])
    common.add_argument("--data", default=None, metavar="DIR",
                        help="folder with the Fashion-MNIST .gz files (default: FASTNN_DATA, "
                             "then /usr/share/datasets/fashion-mnist)")

    train = sub.add_parser(
        "train", parents=[common], help="train a model on Fashion-MNIST",
        description="Train on the 60,000 Fashion-MNIST training images, reporting loss, train "
                    "accuracy, test accuracy and seconds per epoch, then the final test accuracy.")
    train.add_argument("--model", choices=("mlp", "cnn", "cnn-bn"), default="mlp",
                       help="mlp: Dense 784-256-128-10 with ReLU; cnn: fastnn.models.small_cnn; "
                            "cnn-bn: fastnn.models.cnn_bn (three convolutions with BatchNorm, "
                            "Dropout) (default: %(default)s)")
    train.add_argument("--epochs", type=_positive_int, default=10, metavar="N",
                       help="passes over the training set (default: %(default)s)")
    train.add_argument("--batch-size", type=_positive_int, default=64, metavar="N",
                       help="samples per optimisation step (default: %(default)s)")
    train.add_argument("--optimizer", choices=_optimizer_names(), default="adam",
                       help="default: %(default)s")
    train.add_argument("--learning-rate", type=_positive_float, default=None, metavar="LR",
                       help="default: 1e-3 for adam, 0.05 for sgd (momentum 0.9)")
    train.add_argument("--lr-schedule", choices=("cosine", "constant"), default="cosine",
                       help="cosine: decay the learning rate per epoch along a half cosine from "
                            "LR to LR/10; constant: keep LR (default: %(default)s)")
    train.add_argument("--seed", type=_seed, default=0,
                       help="seed of the initial weights and of the shuffling (default: "
                            "%(default)s)")
    train.add_argument("--dtype", choices=DTYPES, default="float32",
                       help="dtype of the weights and computations; mixed_bfloat16: float32 "
                            "weights, bfloat16 inputs to the matrix products (default: "
                            "%(default)s)")
    train.add_argument("--save", default=None, metavar="PATH",
                       help="save the trained model (.npz) to PATH")
    train.add_argument("--plot", default=None, metavar="PNG",
                       help="write the learning curves (loss and accuracy per epoch, training and "
                            "test) to this PNG file (needs matplotlib: pip install fastnn[plot])")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel training on MPI, one process per rank: run as "
                            "`mpirun -n P python -m fastnn train --distributed` (needs mpi4py: "
                            "pip install fastnn[mpi]); --batch-size is the global batch, "
                            "--threads per rank (default: the rank's share of the cores); rank "
                            "0 prints and saves, every rank prints its weights' sha256")
    train.add_argument("--quiet", action="store_true",
                       help="no progress bar and no per-epoch lines; print the final result only")
    # undocumented: train on the first N training samples only (fast tests, quick experiments)
    train.add_argument("--limit", type=_positive_int, default=None, help=argparse.SUPPRESS)

    evaluate = sub.add_parser(
        "evaluate", parents=[common], help="test accuracy and loss of a saved model",
        description="Load a model saved with `train --save` (or model.save) and print its loss "
                    "and accuracy on the 10,000 Fashion-MNIST test images.")
    evaluate.add_argument("model_path", metavar="MODEL.npz", help="a model saved by fastnn")
    evaluate.add_argument("--limit", type=_positive_int, default=None, help=argparse.SUPPRESS)

    prof = sub.add_parser(
        "profile", parents=[threads], help="per-layer times of one training step",
        description="Time each layer's forward and backward, the loss and the optimizer step of "
                    "train_on_batch on one random batch (medians over --repeats steps, after "
                    "--warmup steps; fastnn.profile), and print them with the useful GFLOP/s "
                    "and each part's share of the step. Needs no dataset.",
        epilog="mlp and cnn are trained with softmax cross-entropy on random labels, dqn with the "
               "mean squared error on random Q-targets; a --model-file keeps its saved loss "
               "(softmax cross-entropy if it has none). Inputs are uniform in [0, 1).")
    which = prof.add_mutually_exclusive_group()
    which.add_argument("--model", choices=("mlp", "cnn", "cnn-bn", "dqn"), default=None,
                       help="mlp: Dense 784-256-128-10 with ReLU; cnn: fastnn.models.small_cnn; "
                            f"dqn: fastnn.models.dqn with {DQN_ACTIONS} actions (default: mlp)")
    which.add_argument("--model-file", default=None, metavar="PATH",
                       help="profile a model saved by fastnn (model.save or train --save) "
                            "instead; the input shape comes from the model")
    prof.add_argument("--batch-size", type=_positive_int, default=128, metavar="N",
                      help="samples in the batch (default: %(default)s)")
    prof.add_argument("--repeats", type=_positive_int, default=20, metavar="R",
                      help="timed steps; the table shows medians (default: %(default)s)")
    prof.add_argument("--warmup", type=_nonnegative_int, default=3, metavar="W",
                      help="untimed steps before them (default: %(default)s)")
    prof.add_argument("--dtype", choices=DTYPES, default=None,
                      help="dtype of the built model (default: float32; a --model-file keeps "
                           "its own)")
    prof.add_argument("--optimizer", choices=_optimizer_names(), default="adam",
                      help="default: %(default)s")
    prof.add_argument("--learning-rate", type=_positive_float, default=None, metavar="LR",
                      help="default: 1e-3 for adam, 0.05 for sgd (momentum 0.9); 1e-4 for dqn")
    prof.add_argument("--seed", type=_seed, default=0,
                      help="seed of the initial weights and of the random batch (default: "
                           "%(default)s)")
    prof.add_argument("--json", default=None, metavar="PATH",
                      help="also write the settings and the rows to PATH as JSON")

    from .rl.cli import add_parser as add_dqn_parser  # fastnn.rl: its extra is imported on use

    add_dqn_parser(sub, [threads], _positive_int, _nonnegative_int, _positive_float)
    sub.add_parser("bench-info", help="print fastnn's build and run-time configuration",
                   description="Print the fastnn version, OpenMP status and thread count, the "
                               "BLAS library and its thread control, and the SIMD path in use.")
    return parser


# -- helpers ----------------------------------------------------------------------------------

def _set_threads(n: int | None) -> None:
    if n is not None:
        import fastnn

        fastnn.set_num_threads(n)


def _load_data(flatten: bool, dtype: str, data_dir: str | None) -> tuple[
        tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    from .datasets import load_fashion_mnist

    try:
        return load_fashion_mnist(flatten=flatten, path=data_dir, dtype=dtype)
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc)) from None


def build_model(name: str, dtype: str = "float32", seed: int = 0) -> Sequential:
    """The network ``--model name`` of ``train`` and ``profile`` builds.

    Parameters
    ----------
    name : {"mlp", "cnn", "cnn-bn", "dqn"}
        ``fastnn.models.mlp`` (784-256-128-10), ``small_cnn``, ``cnn_bn`` or ``dqn``
        (:data:`DQN_ACTIONS`).
    dtype : {"float32", "float64", "mixed_bfloat16"}, default="float32"
        Sequential's dtype (policy).
    seed : int, default=0
        Seed of the initial weights.

    Returns
    -------
    Sequential
        Its ``input_shape`` is set: ``(784,)``, ``(28, 28, 1)`` or ``(84, 84, 4)``. Compile it
        (with e.g. the loss :data:`MODEL_LOSSES` names) before training.

    Raises
    ------
    CLIError
        If the network cannot be built in this fastnn build.
    ValueError
        If ``name`` is unknown.
    """
    from . import models

    builders: dict[str, Callable[..., Sequential]]
    builders = {"mlp": lambda **kw: models.mlp(MLP_SIZES, **kw), "cnn": models.small_cnn,
                "cnn-bn": models.cnn_bn, "dqn": lambda **kw: models.dqn(DQN_ACTIONS, **kw)}
    if name not in builders:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(builders)}")
    return builders[name](dtype=dtype, seed=seed)


def random_batch(model: Sequential, batch_size: int,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fastnn.datasets.random_batch`, its ValueError as a :class:`CLIError`."""
    from .datasets import random_batch as make

    try:
        return make(model, batch_size, seed)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _optimizer_names() -> list[str]:
    from .optimizers import OPTIMIZERS

    return sorted({cls.__name__.lower() for cls in OPTIMIZERS.values()})


def _make_optimizer(name: str, learning_rate: float | None) -> tuple[Optimizer, float]:
    """The optimizer ``--optimizer name`` selects (from the registry) and its learning rate:
    ``learning_rate``, else :data:`DEFAULT_LEARNING_RATES` or the class's own default."""
    import inspect

    from .optimizers import OPTIMIZERS

    cls = OPTIMIZERS.get_class(name)
    lr = learning_rate
    if lr is None:
        lr = DEFAULT_LEARNING_RATES.get(
            name, inspect.signature(cls).parameters["learning_rate"].default)
    extra = {"momentum": SGD_MOMENTUM} if name == "sgd" else {}
    return cls(learning_rate=lr, **extra), lr


def _load_model(path: str) -> Sequential:
    if not os.path.isfile(path):
        raise CLIError(f"model file {path!r} not found")
    from . import load

    try:
        return load(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CLIError(f"could not load a fastnn model from {path!r}: {exc}") from None


def _model_wants_flat_input(model: Sequential) -> bool:
    shape = getattr(model, "input_shape", None)
    if shape is not None:
        shape = tuple(shape)
        if shape == (784,):
            return True
        if shape == (28, 28, 1):
            return False
        raise CLIError(f"the model expects inputs of shape {shape}, not Fashion-MNIST images "
                       f"(784,) or (28, 28, 1)")
    return hasattr(model.layers[0], "in_features")


def _check_save_path(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CLIError(f"cannot save to {path!r}: folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise CLIError(f"cannot save to {path!r}: folder {folder!r} is not writable")


# -- commands ---------------------------------------------------------------------------------

def cmd_train(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    """``train``: returns the exit status (``--distributed``: :func:`fastnn.distributed.cli_train`
    runs the same steps on every MPI rank)."""
    out = out or sys.stdout
    if getattr(args, "distributed", False):
        try:
            from .distributed import _mpi, cli_train
            _mpi()
        except ImportError as exc:
            raise CLIError(str(exc)) from None
        return cli_train(args, out, _train)
    return _train(args, out)


def _train(args: argparse.Namespace, out: IO[str], session: Any = None) -> int:
    """The body of ``train``; ``session``: the MPI run of ``--distributed`` (its fit and save;
    rank 0 writes the files)."""
    writes = session is None or session.rank == 0
    if args.save and writes:
        _check_save_path(args.save)  # fail before training, not after
    if args.plot and writes:
        _check_save_path(args.plot)
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CLIError("--plot needs matplotlib: pip install fastnn[plot]") from None
    _set_threads(args.threads if session is None else session.threads)
    import fastnn
    from .losses import SoftmaxCrossEntropy

    flatten = args.model == "mlp"
    model = build_model(args.model, args.dtype, args.seed)
    (X, y), (Xt, yt) = _load_data(flatten, str(model.dtype), args.data)
    if args.limit is not None:
        X, y = X[:args.limit], y[:args.limit]
    if args.batch_size > X.shape[0]:
        raise CLIError(f"--batch-size {args.batch_size} is larger than the number of training "
                       f"samples ({X.shape[0]})")
    optimizer, lr = _make_optimizer(args.optimizer, args.learning_rate)
    model.compile(optimizer=optimizer, loss=SoftmaxCrossEntropy())

    if not args.quiet:
        n_params = model.count_params() if hasattr(model, "count_params") else "?"
        opt_desc = f"{args.optimizer} lr={lr:g}" + (
            f" momentum={SGD_MOMENTUM:g}" if args.optimizer == "sgd" else "") + (
            f" (cosine to {lr * FINAL_LR_FRACTION:g})" if args.lr_schedule == "cosine" else "")
        print(f"fastnn {fastnn.__version__}: model {args.model} ({n_params} params, "
              f"{args.dtype}), {opt_desc}, batch {args.batch_size}, {args.epochs} epochs, "
              f"{fastnn.get_num_threads()} threads" + (
                  f" per rank, {session.size} MPI ranks" if session else "") +
              f", seed {args.seed}", file=out)
        print(f"data: {X.shape[0]} training samples; val_* = Fashion-MNIST test set "
              f"({Xt.shape[0]} samples)", file=out, flush=True)

    callbacks = []
    if args.lr_schedule == "cosine":
        from .callbacks import LearningRateScheduler
        from .schedules import CosineDecay

        callbacks.append(LearningRateScheduler(CosineDecay(lr, args.epochs,
                                                           alpha=FINAL_LR_FRACTION)))
    t0 = time.perf_counter()
    fit: Callable[..., Any] = model.fit if session is None else partial(session.fit, model)
    history = fit(X, y, epochs=args.epochs, batch_size=args.batch_size,
                  validation_data=(Xt, yt), shuffle=True, seed=args.seed,
                  verbose=0 if args.quiet else 1, callbacks=callbacks)
    total = time.perf_counter() - t0
    h = history.history
    test_acc, test_loss = h["val_accuracy"][-1], h["val_loss"][-1]
    epochs_run = len(h["loss"])
    if not args.quiet:
        print(f"training time: {total:.1f} s ({total / max(epochs_run, 1):.2f} s/epoch)",
              file=out)
    print(f"test accuracy: {test_acc:.4f} (loss {test_loss:.4f})", file=out, flush=True)
    if args.plot and writes:
        history.plot(args.plot)
        if not args.quiet:
            print(f"wrote learning curves to {args.plot}", file=out)
    if args.save:
        try:
            if session is None:
                model.save(args.save)
            else:  # every rank checks its weights, rank 0 writes
                session.save(model, args.save)
        except OSError as exc:
            raise CLIError(f"could not save the model to {args.save!r}: {exc}") from None
        if not args.quiet:
            print(f"saved model to {args.save}", file=out)
    return 0


def cmd_evaluate(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    """``evaluate``: returns the exit status."""
    out = out or sys.stdout
    _set_threads(args.threads)
    model = _load_model(args.model_path)
    if getattr(model, "loss", None) is None:
        from .losses import SoftmaxCrossEntropy

        model.compile(optimizer="sgd", loss=SoftmaxCrossEntropy())
    flatten = _model_wants_flat_input(model)
    dtype = str(getattr(model, "dtype", "float32"))
    _, (Xt, yt) = _load_data(flatten, dtype, args.data)
    if args.limit is not None:
        Xt, yt = Xt[:args.limit], yt[:args.limit]
    try:
        res = model.evaluate(Xt, yt)
    except (ValueError, TypeError) as exc:
        raise CLIError(f"the model in {args.model_path!r} does not fit Fashion-MNIST: {exc}"
                       ) from None
    if "accuracy" not in res:
        raise CLIError(f"the model in {args.model_path!r} has loss {type(model.loss).__name__}, "
                       f"which has no accuracy; expected a classifier")
    print(f"test accuracy: {res['accuracy']:.4f} (loss {res['loss']:.4f}) on {Xt.shape[0]} "
          f"Fashion-MNIST test images", file=out)
    return 0


def _jsonable(value: Any) -> Any:
    """``value`` with NumPy scalars as Python numbers, for ``json.dump``."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def cmd_profile(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    """``profile``: per-layer times of one training step (:func:`fastnn.profile`).

    Builds ``--model`` (or loads ``--model-file``), compiles it with ``--optimizer`` and the
    network's loss, makes a random batch with :func:`random_batch`, prints a header line and
    :func:`fastnn.format_profile`'s table and, with ``--json``, writes the settings and rows.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by :func:`build_parser`.
    out : file, optional
        Where to print (default ``sys.stdout``).

    Returns
    -------
    int
        The exit status, 0.

    Raises
    ------
    CLIError
        Unreadable model file, a ``--dtype`` that differs from the file's, a model no random batch
        fits, or a ``--json`` path in a missing or read-only folder.
    """
    out = out or sys.stdout
    if args.json:
        _check_save_path(args.json)  # fail before profiling, not after
    _set_threads(args.threads)
    import fastnn
    from .losses import SoftmaxCrossEntropy
    from .losses import get as get_loss

    if args.model_file is not None:
        model = _load_model(args.model_file)
        label = args.model_file
        dtype = model.dtype_policy
        if args.dtype is not None and args.dtype != dtype:
            raise CLIError(f"--dtype {args.dtype} differs from the dtype of the model in "
                           f"{args.model_file!r} ({dtype}); omit --dtype")
        loss = model.loss if model.loss is not None else SoftmaxCrossEntropy()
        lrs = {}
    else:
        label = args.model or "mlp"
        dtype = args.dtype or "float32"
        model = build_model(label, dtype, args.seed)
        loss = get_loss(MODEL_LOSSES[label])
        lrs = PROFILE_LEARNING_RATES.get(label, {})
    optimizer, lr = _make_optimizer(args.optimizer,
                                    args.learning_rate or lrs.get(args.optimizer))
    model.compile(optimizer=optimizer, loss=loss)
    X, y = random_batch(model, args.batch_size, args.seed)
    assert model.input_shape is not None  # random_batch refuses a model without one
    try:
        rows = fastnn.profile(model, X, y, repeats=args.repeats, warmup=args.warmup)
    except (ValueError, TypeError) as exc:
        raise CLIError(f"cannot profile the model {label!r}: {exc}") from None

    threads = fastnn.get_num_threads()
    settings = {
        "fastnn_version": fastnn.__version__, "model": label,
        "params": int(model.count_params()),
        "input_shape": list(model.input_shape), "batch_size": args.batch_size,
        "threads": threads, "dtype": dtype, "optimizer": args.optimizer,
        "learning_rate": lr, "loss": type(model.loss).__name__, "repeats": args.repeats,
        "warmup": args.warmup, "seed": args.seed,
    }
    print(f"fastnn {fastnn.__version__} profile: model {label} ({settings['params']:,} params, "
          f"input {tuple(model.input_shape)}), batch {args.batch_size}, {threads} threads, "
          f"{dtype}, {args.optimizer} lr={lr:g}, {settings['loss']}; medians of "
          f"{args.repeats} steps after {args.warmup} warm-up", file=out)
    print(fastnn.format_profile(rows), file=out, flush=True)
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(_jsonable(dict(settings, rows=rows)), f, indent=1)
                f.write("\n")
        except OSError as exc:
            raise CLIError(f"could not write {args.json!r}: {exc}") from None
    return 0


def cmd_bench_info(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    """``bench-info``: prints ``fastnn.show_config()``."""
    out = out or sys.stdout
    import fastnn

    fastnn.show_config(file=out)
    return 0


def _cmd_dqn(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    from .rl.cli import cmd_dqn

    return cmd_dqn(args, out)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]]
COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "profile": cmd_profile,
            "bench-info": cmd_bench_info, "dqn": _cmd_dqn}


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Entry point of ``python -m fastnn`` and of the ``fastnn`` script; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default ``sys.argv[1:]``).
    prog : str, optional
        Program name shown in usage and error messages.

    Raises
    ------
    SystemExit
        From argparse, with status 2, for bad arguments (and 0 for ``--help``).
    """
    if prog is None:
        prog = "fastnn" if os.path.basename(sys.argv[0] or "") == "fastnn" else "python -m fastnn"
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except CLIError as exc:
        print(f"{prog} {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{prog} {args.command}: interrupted", file=sys.stderr)
        return 130
