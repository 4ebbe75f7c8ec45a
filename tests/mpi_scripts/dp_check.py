"""Run under ``mpirun -n P`` by tests/test_distributed.py (every rank runs this file).

``python dp_check.py <case> [options]``; each case prints what the test reads (rank 0 writes
the arrays). ``build`` is also imported by the test for its one-process reference runs.
"""
import argparse
import sys

import numpy as np

import fastnn
from fastnn import models

#: seed of the shuffle in every case
SHUFFLE_SEED = 1


def build(kind, batch, steps, seed=0, weighted=False):
    """(model, X, y, fit kwargs): ``steps`` batches of ``batch`` random samples (one epoch)."""
    rng = np.random.default_rng(42)
    n = batch * steps
    if kind == "mlp":
        model = models.mlp((784, 256, 128, 10), seed=seed)
        X = rng.random((n, 784), dtype=np.float32)
    elif kind == "cnn":
        model = models.small_cnn(seed=seed)
        X = rng.random((n, 28, 28, 1), dtype=np.float32)
    elif kind == "bn":  # BatchNorm and Dropout
        model = fastnn.Sequential([fastnn.Dense(20, 32), fastnn.BatchNorm(32),
                                   fastnn.Activation("relu"), fastnn.Dropout(0.25),
                                   fastnn.Dense(32, 4)], seed=seed)
        X = rng.standard_normal((n, 20)).astype(np.float32)
    else:
        raise ValueError(kind)
    k = model.output_shape(X.shape[1:])[0]
    y = rng.integers(0, k, n)
    model.compile(fastnn.Adam(1e-3), fastnn.SoftmaxCrossEntropy())
    kwargs = {"seed": SHUFFLE_SEED}
    if weighted:
        kwargs["sample_weight"] = rng.random(n) * 2.0
        kwargs["class_weight"] = {0: 0.0, 3: 2.5}
    return model, X, y, kwargs


def say(line):
    """One line in one write: mpirun merges the ranks' output write by write."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class FailAt(fastnn.Callback):
    """Raises on one rank at one batch of one epoch (0-based)."""

    def __init__(self, rank, epoch, batch):
        self.rank, self.epoch, self.batch = rank, epoch, batch
        self.current = 0

    def on_epoch_end(self, epoch, logs=None):
        self.current = epoch + 1

    def on_batch_end(self, batch, logs=None):
        from mpi4py import MPI

        if (MPI.COMM_WORLD.Get_rank(), self.current, batch) == (self.rank, self.epoch,
                                                                  self.batch):
            raise RuntimeError(f"deliberate failure on rank {self.rank} at epoch "
                               f"{self.epoch + 1}, batch {self.batch + 1}")


class HalfSquaredError(fastnn.Loss):
    """A user's loss (NumPy only): mean over samples of ``0.5 * sum_k (out - onehot)^2``; with
    ``nan_at=(rank, step)`` it returns NaN on that rank at that call (counted from 0)."""

    metric = "accuracy"

    def __init__(self, nan_at=None):
        super().__init__()
        self.nan_at = nan_at
        self.calls = 0

    def prepare_target(self, target, output_shape):
        return np.eye(output_shape[1], dtype=np.float32)[np.asarray(target, dtype=np.int64)]

    def forward(self, output, target, prepared=False):
        from mpi4py import MPI

        if not prepared:
            target = self.prepare_target(target, output.shape)
        diff = output.astype(np.float64) - target
        self._grad = (diff / output.shape[0]).astype(output.dtype)
        value = float(0.5 * np.sum(diff * diff) / output.shape[0])
        if self.nan_at == (MPI.COMM_WORLD.Get_rank(), self.calls):
            value = float("nan")
        self.calls += 1
        return value

    def score(self, output, target):
        return float(np.mean(np.argmax(output, axis=1) == np.argmax(target, axis=1)))


def build_user_loss(nan_at=None):
    """The MLP of ``build("mlp", 64, 10)`` compiled with :class:`HalfSquaredError`."""
    model, X, y, kw = build("mlp", 64, 10)
    model.compile(fastnn.SGD(0.01, momentum=0.9), HalfSquaredError(nan_at))
    return model, X, y, kw


class EpochCounter(fastnn.Callback):
    """Counts epochs; runs on rank 0 only under fastnn.distributed."""

    rank_zero_only = True

    def __init__(self):
        self.epochs = 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1


def main():
    from mpi4py import MPI

    from fastnn import distributed

    p = argparse.ArgumentParser()
    p.add_argument("case", choices=("train", "fail", "resume", "misc", "userloss"))
    p.add_argument("--model", default="mlp")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--weighted", action="store_true")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    fastnn.set_num_threads(1)

    if args.case == "train":
        # each rank builds its model from another seed: rank 0's weights are broadcast
        model, X, y, kw = build(args.model, args.batch, args.steps, seed=rank * 7,
                                weighted=args.weighted)
        distributed.fit(model, X, y, epochs=1, batch_size=args.batch, verbose=0, **kw)
        say(f"weights sha256: {distributed.weights_digest(model)}")
        if rank == 0:
            np.save(args.out, model._params.params)

    elif args.case == "fail":
        # epoch 1 completes and is checkpointed; rank 1 raises in epoch 2
        model, X, y, kw = build("mlp", 32, 6)
        ckpt = fastnn.ModelCheckpoint(args.out)
        distributed.fit(model, X, y, epochs=3, batch_size=32, verbose=2,
                        callbacks=[ckpt, FailAt(1, 1, 2)], **kw)
        say("not reached")

    elif args.case == "resume":
        # 3 epochs in one go, against 2 epochs checkpointed by rank 0 and resumed from the file
        ref, X, y, kw = build("mlp", 64, 4)
        distributed.fit(ref, X, y, epochs=3, batch_size=64, verbose=0, **kw)
        model, _, _, _ = build("mlp", 64, 4)
        distributed.fit(model, X, y, epochs=2, batch_size=64, verbose=0,
                        callbacks=[fastnn.ModelCheckpoint(args.out)], **kw)
        resumed = distributed.load(args.out)
        start = resumed.epochs_completed
        distributed.fit(resumed, X, y, epochs=3, batch_size=64, verbose=0, initial_epoch=start,
                        **kw)
        say(f"resumed from epoch: {start}")
        say(f"reference sha256: {distributed.weights_digest(ref)}")
        say(f"resumed sha256: {distributed.weights_digest(resumed)}")
        out2 = args.out + ".final.npz"
        distributed.save(resumed, out2)
        if rank == 0:
            say(f"saved sha256: {distributed.weights_digest(fastnn.load(out2))}")

    elif args.case == "userloss":
        # a user's Loss subclass; then a NaN loss on rank 1 only at step 4 stops every rank there
        model, X, y, kw = build_user_loss()
        distributed.fit(model, X, y, epochs=1, batch_size=64, verbose=0, **kw)
        if rank == 0:
            np.save(args.out, model._params.params)
        say(f"weights sha256: {distributed.weights_digest(model)}")
        model, X, y, kw = build_user_loss(nan_at=(1, 3))
        h = distributed.fit(model, X, y, epochs=2, batch_size=64, verbose=0, on_nan="stop", **kw)
        say(f"rank {rank} stopped after {model.optimizer.iterations} steps, "
            f"{len(h.history['loss'])} epoch(s); nan sha256: "
            f"{distributed.weights_digest(model)}")

    elif args.case == "misc":
        # BatchNorm + Dropout: the ranks stay identical, running statistics included; sharded
        # evaluation equals one process's evaluate
        model, X, y, kw = build("bn", 64, 8)
        counter = EpochCounter()
        h = distributed.fit(model, X, y, epochs=2, batch_size=64, verbose=0,
                            validation_data=(X[:100], y[:100]), callbacks=[counter], **kw)
        say(f"rank {rank} rank-zero-only callback epochs: {counter.epochs}")
        stats = np.concatenate([model.layers[1].running_mean, model.layers[1].running_var])
        same = comm.allgather(stats.tobytes())
        say(f"running stats equal: {all(s == same[0] for s in same)}")
        say(f"running stats moved: {bool(np.any(model.layers[1].running_mean != 0))}")
        local = model.evaluate(X[:100], y[:100])
        say(f"val_loss history: {h.history['val_loss'][-1]!r} local {local['loss']!r}")
        shared = distributed.evaluate(model, X[:100], y[:100])
        say(f"evaluate: {shared['loss']!r} {shared['accuracy']!r} local {local['loss']!r} "
            f"{local['accuracy']!r}")
        say(f"weights sha256: {distributed.weights_digest(model)}")


if __name__ == "__main__":
    sys.exit(main())
