"""Data-parallel training on MPI (``pip install fastnn[mpi]``: mpi4py over an installed MPI).

One MPI rank per node (or socket), fastnn's OpenMP threads inside each rank. Every rank holds the
same model and the same data; each global batch (the same seeded shuffle on every rank) is cut
into one contiguous shard per rank; each rank runs the forward and backward pass of its shard
with the model's own step (``Sequential._train_step``), and one in-place ``Allreduce`` (sum) of
the model's flat gradient buffer gives every rank the gradient of the global batch's mean loss,
so every rank applies the identical update. This is the design of Horovod (Sergeev and Del
Balso, "Horovod: fast and easy distributed deep learning in TensorFlow", 2018) and of PyTorch's
``DistributedDataParallel``, on mpi4py's buffer interface (Dalcin and Fang, "mpi4py: Status
Update After 12 Years of Development", CiSE 2021).

Usage (every rank runs the same script)::

    # mpirun -n 2 python train.py
    import fastnn
    from fastnn import distributed
    (X, y), (Xt, yt) = fastnn.datasets.load_fashion_mnist()
    model = fastnn.models.mlp(seed=0).compile(fastnn.Adam(1e-3), fastnn.SoftmaxCrossEntropy())
    distributed.fit(model, X, y, epochs=5, batch_size=256, validation_data=(Xt, yt))

Importing this module does not import mpi4py; the first function that needs MPI does (and so
initialises MPI). ``import fastnn`` never imports this module.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from . import _validation as V

if TYPE_CHECKING:
    from .callbacks import Callback, History
    from .model import Sequential

__all__ = ["fit", "evaluate", "broadcast_model", "average_buffers", "check_weights",
           "weights_digest", "save", "load", "abort_on_error", "shard_bounds",
           "default_threads_per_rank", "get_comm", "cli_train"]


def _mpi() -> Any:
    """The ``mpi4py.MPI`` module (initialises MPI on first use).

    Raises
    ------
    ImportError
        If mpi4py is not installed, with the install command.
    """
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"fastnn.distributed needs mpi4py and an MPI library: pip install "
                          f"'fastnn[mpi]' (with e.g. Debian's openmpi-bin and libopenmpi-dev) "
                          f"({exc})") from None
    return MPI


def get_comm(comm: Any = None) -> Any:
    """``comm``, or ``MPI.COMM_WORLD`` when it is None.

    Raises
    ------
    TypeError
        If ``comm`` is not an ``mpi4py.MPI.Comm``.
    """
    MPI = _mpi()
    if comm is None:
        return MPI.COMM_WORLD
    if not isinstance(comm, MPI.Comm):
        raise TypeError(f"comm must be an mpi4py.MPI.Comm (e.g. MPI.COMM_WORLD), got "
                        f"{type(comm).__name__}")
    return comm


def shard_bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """The contiguous part ``[start, stop)`` of ``n`` rows that ``rank`` of ``size`` takes.

    The first ``n % size`` ranks take ``n // size + 1`` rows, the others ``n // size`` (as
    ``numpy.array_split``), in rank order.

    Examples
    --------
    >>> [shard_bounds(10, r, 3) for r in range(3)]
    [(0, 4), (4, 7), (7, 10)]
    """
    q, extra = divmod(n, size)
    start = rank * q + min(rank, extra)
    return start, start + q + (1 if rank < extra else 0)


def _say(line: str) -> None:
    """Print one line to stdout in one write (mpirun merges the ranks' output by writes)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def weights_digest(model: Sequential) -> str:
    """SHA-256 (64 hex digits) of the bytes of the model's flat parameter buffer: every trainable
    parameter in layer order, 64-byte aligned, the padding zeros included. Equal digests mean
    bit-identical weights."""
    return hashlib.sha256(model._params.params.tobytes()).hexdigest()


# -- failure handling -------------------------------------------------------------------------

@contextlib.contextmanager
def abort_on_error(comm: Any = None, prefix: str = "fastnn.distributed") -> Iterator[None]:
    """Run a block so that an exception on one rank ends the job on every rank.

    An exception (also KeyboardInterrupt, and SystemExit with a non-zero code) raised in the
    block is printed to stderr as ``<prefix>: rank R of P: <traceback>``, then
    ``comm.Abort(1)`` ends every process of the job (``mpirun`` exits with status 1). Without
    this, the other ranks would wait for the failed one in their next collective call for ever.
    On a communicator of one process the exception propagates as usual.

    Checkpoints written atomically (``ModelCheckpoint``, :func:`save`) stay as they were after the
    last completed write.
    """
    comm = get_comm(comm)
    try:
        yield
    except BaseException as exc:
        if comm.Get_size() == 1 or (isinstance(exc, SystemExit) and exc.code in (0, None)):
            raise
        rank, size = comm.Get_rank(), comm.Get_size()
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        sys.stderr.write(f"{prefix}: rank {rank} of {size}: {text.rstrip()}\n{prefix}: rank "
                         f"{rank} aborts the job (MPI_Abort)\n")
        sys.stderr.flush()
        comm.Abort(1)
        raise  # not reached: Abort does not return


# -- the hooks Sequential.fit calls (Sequential._data_parallel) --------------------------------

class _DataParallel:
    """Shard selection and reductions of one ``fit`` on ``comm`` (see :func:`fit`)."""

    def __init__(self, comm: Any, min_batch: int) -> None:
        self.MPI = _mpi()
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.min_batch = min_batch
        self._share = 1.0
        self._scalar = np.zeros(1, dtype=np.float64)

    def shard(self, idx: np.ndarray, weights: np.ndarray | None) -> np.ndarray | None:
        """This rank's contiguous part of the global batch ``idx``; records its share of the
        batch (rows, or weight with sample weights); None if the batch's weights are all 0."""
        start, stop = shard_bounds(idx.shape[0], self.rank, self.size)
        part = idx[start:stop]
        if weights is None:
            self._share = part.shape[0] / idx.shape[0]
        else:
            total = float(np.sum(weights[idx]))
            if not total > 0:
                return None
            self._share = float(np.sum(weights[part])) / total
        return part

    def shard_rows(self, a: np.ndarray) -> np.ndarray:
        start, stop = shard_bounds(a.shape[0], self.rank, self.size)
        return a[start:stop]

    def loss_and_gradients(self, model: Sequential, out: np.ndarray, yb: np.ndarray,
                           wb: np.ndarray | None) -> float:
        """The global batch's mean loss (this shard's mean times its share, summed over the
        ranks), and, in ``model``'s flat gradient buffer, its gradient (this shard's, scaled by
        its share, summed over the ranks by one in-place Allreduce). The loss's sum is a
        non-blocking Iallreduce started before the backward pass and completed after the
        gradients' Allreduce, so a step waits for the other ranks once. Every rank returns the
        same value; a NaN or inf on any rank makes it non-finite (the caller then skips the
        update on every rank)."""
        assert model.loss is not None  # checked by fit
        if wb is not None and self._share == 0.0:
            local = model.loss(out, yb, prepared=True)  # its gradient is scaled by 0
        else:
            local = model.loss(out, yb, prepared=True, sample_weight=wb)
        self._scalar[0] = float(local) * self._share  # NaN stays NaN (inf * 0 is NaN)
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, self._scalar, op=self.MPI.SUM)
        grad = np.asarray(model.loss.backward())
        if self._share != 1.0:  # d(shard mean)/d output times the share: part of d(global mean)
            grad = np.multiply(grad, grad.dtype.type(self._share))
        model.backward(grad)
        self.comm.Allreduce(self.MPI.IN_PLACE, model._params.grads, op=self.MPI.SUM)
        request.Wait()
        return float(self._scalar[0])

    def reduce_sums(self, loss_sum: float, sums: dict[str, float]) -> float:
        """Sum ``loss_sum`` and the metric sums (updated in place) over the ranks."""
        keys = sorted(sums)
        buf = np.array([loss_sum] + [sums[k] for k in keys], dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        for k, v in zip(keys, buf[1:]):
            sums[k] = float(v)
        return float(buf[0])

    def end_epoch(self, model: Sequential, epoch: int, loss_sum: float,
                  metric_sums: dict[str, float], seen: int) -> tuple[float, int]:
        """The epoch's sums over every rank; running statistics averaged; weights checked."""
        metric_sums["\0seen"] = float(seen)
        loss_sum = self.reduce_sums(loss_sum, metric_sums)
        seen = int(round(metric_sums.pop("\0seen")))
        average_buffers(model, self.comm)
        check_weights(model, self.comm, f"the end of epoch {epoch + 1}")
        return loss_sum, seen


def average_buffers(model: Sequential, comm: Any = None) -> None:
    """Replace every layer's non-trainable arrays (``layer.buffers``: BatchNorm's running mean
    and variance) by their mean over the ranks (one Allreduce of all of them, in float64).

    The running statistics are exponential moving averages of each rank's shard statistics; the
    EMA is linear, so averaging them once per epoch gives what averaging them at every step
    would (up to rounding).
    """
    comm = get_comm(comm)
    arrays = [b for layer in model.layers for b in layer.buffers.values()]
    if not arrays or comm.Get_size() == 1:
        return
    MPI = _mpi()
    flat = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])
    comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
    flat /= comm.Get_size()
    at = 0
    for a in arrays:
        a[...] = flat[at:at + a.size].reshape(a.shape)
        at += a.size


def check_weights(model: Sequential, comm: Any = None, when: str = "now") -> str:
    """Check that every rank's weights are bit-identical to rank 0's (their SHA-256); returns
    the digest (:func:`weights_digest`). Collective: every rank of ``comm`` must call it.

    Raises
    ------
    RuntimeError
        On every rank, naming the ranks whose weights differ from rank 0's and ``when``.
    """
    comm = get_comm(comm)
    digest = weights_digest(model)
    digests = comm.allgather(digest)
    bad = [r for r, d in enumerate(digests) if d != digests[0]]
    if bad:
        raise RuntimeError(f"the weights of rank(s) {bad} differ from rank 0's at {when} "
                           f"(sha256 {digests[0][:16]}... on rank 0, "
                           f"{', '.join(digests[r][:16] + '...' for r in bad)}); the ranks no "
                           f"longer train the same model")
    return digest


def _structure(model: Sequential) -> str:
    cfg = model.get_config()
    cfg.pop("seed", None)
    return json.dumps([cfg, int(model._params.params.size), str(model._params.params.dtype)],
                      sort_keys=True, default=str)


def broadcast_model(model: Sequential, comm: Any = None, root: int = 0) -> None:
    """Make every rank's model equal to ``root``'s: the parameters (one Bcast of the flat
    buffer), the non-trainable arrays, the layers' state (Dropout's step), the optimizer's step
    count and slots, and ``epochs_completed``. Collective.

    Raises
    ------
    ValueError
        On every rank, if the ranks' models do not have the same layers and parameter shapes.
    """
    comm = get_comm(comm)
    structures = comm.allgather(_structure(model))
    bad = [r for r, s in enumerate(structures) if s != structures[root]]
    if bad:
        raise ValueError(f"the models of rank(s) {bad} differ in structure from rank {root}'s "
                         f"(layers, shapes or dtype); every rank must build the same model")
    comm.Bcast(model._params.params, root=root)
    extra: dict[str, Any] | None = None
    if comm.Get_rank() == root:
        opt = model.optimizer
        extra = {"buffers": [{k: np.array(v) for k, v in layer.buffers.items()}
                             for layer in model.layers],
                 "states": [layer.get_state() for layer in model.layers],
                 "epochs_completed": int(model.epochs_completed),
                 "optimizer": None if opt is None else {
                     "iterations": int(opt.iterations),
                     "state": {k: {s: np.array(a) for s, a in v.items()}
                               for k, v in opt.state.items()}}}
    extra = comm.bcast(extra, root=root)
    assert extra is not None
    if comm.Get_rank() == root:
        return
    for layer, buffers, state in zip(model.layers, extra["buffers"], extra["states"]):
        for k, v in buffers.items():
            layer.buffers[k] = v
        if state:
            layer.set_state(state)
    model.epochs_completed = extra["epochs_completed"]
    opt_state = extra["optimizer"]
    if model.optimizer is not None and opt_state is not None:
        opt = model.optimizer
        opt.iterations = opt_state["iterations"]
        for key, slots in opt_state["state"].items():
            if opt._group is None or key not in opt.state:
                opt.state[key] = dict(slots)
            else:
                for s, a in slots.items():
                    opt.state[key][s] = a


def _data_digest(a: np.ndarray) -> str:
    """Shape, dtype and SHA-256 of up to 1024 evenly spaced rows (a cheap same-data check)."""
    step = max(1, a.shape[0] // 1024) if a.ndim else 1
    sample = np.ascontiguousarray(a[::step] if a.ndim else a)
    return f"{a.shape} {a.dtype} {hashlib.sha256(sample.tobytes()).hexdigest()}"


def _check_same(comm: Any, what: str, value: str) -> None:
    values = comm.allgather(value)
    bad = [r for r, v in enumerate(values) if v != values[0]]
    if bad:
        raise ValueError(f"{what} differs between ranks (rank(s) {bad} vs rank 0): every rank "
                         f"must pass the same {what}; fastnn.distributed shards each batch "
                         f"itself")


#: Dropout's keys are moved by this odd constant times the rank (rank 0 keeps the layer's)
_RANK_KEY_STEP = 0x9E3779B97F4A7C15


@contextlib.contextmanager
def _rank_dropout_keys(model: Sequential, rank: int) -> Iterator[None]:
    """On rank r > 0, give each Dropout layer the key ``seed + r * 0x9E37...`` (mod 2**64) while
    the block runs, so that the ranks' shards get independent masks."""
    layers = [layer for layer in model.layers if type(layer).__name__ == "Dropout"]
    saved = [layer.seed for layer in layers]  # type: ignore[attr-defined]
    try:
        if rank:
            for layer, seed in zip(layers, saved):
                layer.seed = (int(seed) + rank * _RANK_KEY_STEP) % 2 ** 64  # type: ignore
        yield
    finally:
        for layer, seed in zip(layers, saved):
            layer.seed = seed  # type: ignore[attr-defined]


@contextlib.contextmanager
def _sigint_raises() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt at once (then :func:`abort_on_error` ends the job): fit's
    'stop after this batch' handling would let the ranks stop at different batches."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


#: the callbacks that write files run on rank 0 only (and any with ``rank_zero_only = True``)
_RANK_ZERO_CALLBACKS = ("ModelCheckpoint", "CSVLogger")


def _rank_zero_only(cb: Callback) -> bool:
    return bool(getattr(cb, "rank_zero_only", type(cb).__name__ in _RANK_ZERO_CALLBACKS))


def fit(model: Sequential, X: ArrayLike, y: ArrayLike, epochs: int = 1, batch_size: int = 32,
        comm: Any = None, verbose: int = 1, callbacks: Iterable[Callback] | None = None,
        seed: int | None = None, **fit_kwargs: Any) -> History:
    """Data-parallel ``model.fit`` on the ranks of ``comm``; every rank calls it with the same
    arguments.

    Each global batch of ``batch_size`` rows (the shuffle of ``(seed, epoch)``, the same on every
    rank) is cut into ``P`` contiguous shards, one per rank (:func:`shard_bounds`). Rank ``r``
    computes the gradient of its shard's mean loss ``L_r`` (weighted mean with sample or class
    weights), scales it by its share ``s_r = n_r / n`` (with weights ``s_r = sum w over the shard
    / sum w over the batch``), and one in-place ``Allreduce`` sums the flat gradient buffer:
    ``grad = sum_r s_r grad L_r``, the gradient of the global batch's mean loss, as one process
    computes it. Every rank gets the same sum and applies the same optimizer update.

    Parameters
    ----------
    model : Sequential
        Compiled; every rank builds the same architecture. Rank 0's weights, non-trainable
        arrays, layer state and optimizer state are broadcast to the others first
        (:func:`broadcast_model`), so ranks built with different seeds still start equal.
    X, y : array_like
        The whole training set, identical on every rank (checked on a sample of rows); shapes
        as :meth:`Sequential.fit`.
    epochs : int, default=1
    batch_size : int, default=32
        The global batch (all ranks together), ``>= P`` (``>= 2P`` with BatchNorm). A last batch
        of fewer rows than that is left out of the epoch.
    comm : mpi4py.MPI.Comm, optional
        Default ``MPI.COMM_WORLD``.
    verbose : {0, 1, 2}, default=1
        On rank 0 only (progress bar, epoch lines); with ``verbose > 0`` every rank prints one
        line ``weights sha256: <64 hex digits>`` at the end (:func:`weights_digest`).
    callbacks : list of Callback, optional
        Run on every rank with the same logs (so EarlyStopping, LearningRateScheduler,
        ReduceLROnPlateau and TerminateOnNaN decide the same everywhere), except the ones that
        write files (ModelCheckpoint, CSVLogger, and any callback with an attribute
        ``rank_zero_only = True``), which run on rank 0 only.
    seed : int, optional
        Seed of the shuffling; default the model's seed, else a fresh one from rank 0.
    **fit_kwargs
        The other arguments of :meth:`Sequential.fit` (``validation_data``,
        ``validation_split``, ``sample_weight``, ``class_weight``, ``shuffle``,
        ``initial_epoch``, ``on_nan``, ...).

    Returns
    -------
    History
        The same on every rank: logs are sums over all ranks (``seconds`` is each rank's own).

    Raises
    ------
    ImportError
        Without mpi4py.
    ValueError, TypeError
        As :meth:`Sequential.fit`; a ``batch_size`` below the number of ranks (twice it with
        BatchNorm); ranks passing different data or models.
    RuntimeError
        If the ranks' weights differ at the end of an epoch (checked with SHA-256).

    Notes
    -----
    Exactness: the result equals one process's ``fit`` with the same global batch and seed up
    to float32 rounding, since the sum over the batch is split into per-rank partial sums. It is
    bit-identical where the shards coincide with the kernels' fixed reduction chunks: a Dense
    layer sums its weight and bias gradients over slices of 128 rows (fastnn's GEMM ``KC``),
    so 2 ranks with a global batch of 256 (float32, fastnn's own GEMM kernel) reproduce one
    process exactly, as long as the shares are powers of two. A Conv2D layer cuts the batch
    into 16 chunks whose size depends on the batch, so a CNN agrees to rounding only.

    BatchNorm normalises each shard with the shard's statistics (as PyTorch's
    DistributedDataParallel without SyncBatchNorm); the running statistics are averaged over
    the ranks at the end of each epoch, before validation. Dropout masks: rank r > 0 uses the
    layer's key moved by r (independent masks per shard); rank 0's is the layer's own.

    Validation and :func:`evaluate` are sharded: each rank evaluates its contiguous part and the
    sums are reduced. At the end of each epoch every rank checks that its weights' SHA-256
    equals rank 0's. Ctrl-C, or an exception on any rank, ends the job on every rank
    (:func:`abort_on_error`).
    """
    comm = get_comm(comm)
    with abort_on_error(comm):
        return _fit(model, X, y, epochs, batch_size, comm, verbose, callbacks, seed,
                    fit_kwargs, print_digest=bool(verbose))


def _fit(model: Sequential, X: ArrayLike, y: ArrayLike, epochs: int, batch_size: int, comm: Any,
         verbose: int, callbacks: Iterable[Callback] | None, seed: int | None,
         fit_kwargs: dict[str, Any], print_digest: bool) -> History:
    from .model import Sequential

    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a fastnn Sequential, got {type(model).__name__}")
    model._require_compiled()
    if model._data_parallel is not None:
        raise RuntimeError("this model is already in a fastnn.distributed.fit")
    rank, size = comm.Get_rank(), comm.Get_size()
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
    batch_size = V.check_int(batch_size, "batch_size", minimum=1)
    min_batch = size * (2 if model._drops_single_sample else 1)
    if batch_size < min_batch:
        raise ValueError(f"batch_size ({batch_size}) is the global batch and must be >= "
                         f"{min_batch} ({size} ranks" + (", 2 samples each with BatchNorm)"
                                                         if min_batch > size else ")"))
    Xa = np.asarray(X)
    _check_same(comm, "X", _data_digest(Xa))
    _check_same(comm, "y", _data_digest(np.asarray(y)))
    split = fit_kwargs.get("validation_split", 0.0) or 0.0
    n_train = int(Xa.shape[0] * (1.0 - split)) if split and fit_kwargs.get(
        "validation_data") is None else Xa.shape[0]
    if 0 < n_train < min_batch:
        raise ValueError(f"{n_train} training samples cannot be shared by {size} ranks "
                         f"(at least {min_batch} needed)")
    if seed is None:
        seed = model.seed if isinstance(model.seed, (int, np.integer)) else None
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0]) if rank == 0 else 0
        seed = comm.bcast(seed, root=0)
    broadcast_model(model, comm)
    cbs = [cb for cb in (callbacks or []) if rank == 0 or not _rank_zero_only(cb)]
    model._data_parallel = _DataParallel(comm, min_batch)
    try:
        with _sigint_raises(), _rank_dropout_keys(model, rank):
            history = model.fit(Xa, y, epochs=epochs, batch_size=batch_size,
                                verbose=verbose if rank == 0 else 0, callbacks=cbs, seed=seed,
                                **fit_kwargs)
    finally:
        model._data_parallel = None
    digest = check_weights(model, comm, "the end of training")
    if print_digest:
        _say(f"weights sha256: {digest}")
    return history


def evaluate(model: Sequential, X: ArrayLike, y: ArrayLike, comm: Any = None,
             batch_size: int = 1024) -> dict[str, float]:
    """``model.evaluate`` sharded over the ranks: each evaluates its contiguous part of ``X``
    and the loss and metric sums are reduced; every rank returns the same dict. Collective.

    Raises
    ------
    RuntimeError, ValueError, TypeError
        As :meth:`Sequential.evaluate`.
    """
    comm = get_comm(comm)
    if model._data_parallel is not None:
        raise RuntimeError("this model is already in a fastnn.distributed call")
    model._data_parallel = _DataParallel(comm, comm.Get_size())
    try:
        return model.evaluate(X, y, batch_size=batch_size)
    finally:
        model._data_parallel = None


def save(model: Sequential, path: str | os.PathLike[str], comm: Any = None,
         include_optimizer: bool = True) -> str:
    """Check that every rank's weights equal rank 0's, then rank 0 alone saves ``model`` to
    ``path`` (``model.save``); returns the weights' digest. Collective.

    Raises
    ------
    RuntimeError
        If the ranks' weights differ (on every rank; nothing is written).
    OSError
        On rank 0, if the file cannot be written.
    """
    comm = get_comm(comm)
    digest = check_weights(model, comm, "save")
    if comm.Get_rank() == 0:
        model.save(path, include_optimizer=include_optimizer)
    comm.Barrier()
    return digest


def load(path: str | os.PathLike[str], comm: Any = None) -> Sequential:
    """``fastnn.load(path)`` on every rank from rank 0's file: rank 0 reads it and broadcasts its
    bytes, so the other ranks (other machines) need no copy. Collective.

    Raises
    ------
    OSError, ValueError
        As :func:`fastnn.load` (raised on rank 0, which then ends the job when run inside
        :func:`abort_on_error`).
    """
    from .io import load as load_file

    comm = get_comm(comm)
    data: bytes | None = None
    if comm.Get_rank() == 0:
        with open(path, "rb") as f:
            data = f.read()
    data = comm.bcast(data, root=0)
    assert data is not None
    if comm.Get_rank() == 0:
        return load_file(path)
    fd, tmp = tempfile.mkstemp(suffix=".npz", prefix="fastnn-distributed-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return load_file(tmp)
    finally:
        os.unlink(tmp)


def default_threads_per_rank(comm: Any = None) -> int:
    """OpenMP threads per rank that fill this node's cores: the CPUs this process may run on
    when mpirun bound it (its affinity mask is smaller than the machine), else the machine's
    CPUs divided by the ranks on this node (at least 1). Collective (every rank of ``comm``
    calls it)."""
    comm = get_comm(comm)
    MPI = _mpi()
    cpus = os.cpu_count() or 1
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        allowed = cpus
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        ranks_here = local.Get_size()
    finally:
        local.Free()
    return max(1, allowed if allowed < cpus else cpus // ranks_here)


def cli_train(args: Any, out: IO[str],
              train: Callable[[Any, IO[str], Any], int]) -> int:
    """``python -m fastnn train --distributed``: runs ``train(args, out, session)`` (the
    command's own body) on every rank inside :func:`abort_on_error`; rank 0 alone prints (the
    others' ``out`` is discarded); every rank prints its ``weights sha256`` line at the end."""
    MPI = _mpi()
    comm = MPI.COMM_WORLD
    with abort_on_error(comm, prefix="python -m fastnn train"):
        session = _CLISession(comm, args.threads)
        if comm.Get_rank() != 0:
            with open(os.devnull, "w") as devnull:
                status = train(args, devnull, session)
        else:
            status = train(args, out, session)
        digest = check_weights(session.model, comm, "the end of training") \
            if session.model is not None else None
        if digest is not None:
            _say(f"weights sha256: {digest}")
        return status


class _CLISession:
    """What ``cli._train`` asks of the distributed run: the rank, the threads, fit, save."""

    def __init__(self, comm: Any, threads: int | None) -> None:
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        share = default_threads_per_rank(comm)  # collective: every rank calls it
        if threads is None and not os.environ.get("OMP_NUM_THREADS"):
            threads = share
        self.threads = threads
        self.model: Sequential | None = None

    def describe(self) -> str:
        return f"{self.size} MPI ranks x {self.threads or 'default'} threads"

    def fit(self, model: Sequential, X: np.ndarray, y: np.ndarray, **kwargs: Any) -> History:
        self.model = model
        epochs, batch_size = kwargs.pop("epochs"), kwargs.pop("batch_size")
        verbose, callbacks, seed = kwargs.pop("verbose"), kwargs.pop("callbacks"), \
            kwargs.pop("seed")
        return _fit(model, X, y, epochs, batch_size, self.comm, verbose, callbacks, seed, kwargs,
                    print_digest=False)

    def save(self, model: Sequential, path: str) -> None:
        save(model, path, self.comm)
