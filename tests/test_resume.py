"""Resuming from a checkpoint ends bit-identical to an uninterrupted run.

4 epochs in one go versus 2 epochs + ModelCheckpoint + ``fastnn.load`` +
``fit(initial_epoch=2, epochs=4)``: the same weights and optimizer state to the last bit, for
Adam and SGD with momentum, on 1 and 2 threads (the shuffle order of an epoch depends only on
(seed, epoch), the model file keeps the optimizer state and the seed, and the kernels do not
depend on the thread count). Also across an interruption (Ctrl-C in epoch 3) and across a
change of thread count between the two halves.
"""
import os
import signal

import numpy as np
import pytest

import fastnn
from fastnn import (SGD, Adam, Callback, Conv2D, Dense, Flatten, MaxPool2D, ModelCheckpoint,
                    Sequential, SoftmaxCrossEntropy)

N, N_IN, K = 300, 64, 5  # 300 = 9 full batches of 32 and one of 12; 32x64x64 MACs: parallel


def problem(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, N_IN)).astype(np.float32)
    y = (X[:, :K] + 0.5 * rng.standard_normal((N, K))).argmax(axis=1)
    return X, y


OPTIMIZERS = {
    "adam": lambda: Adam(3e-3, weight_decay=1e-4),
    "sgd_momentum": lambda: SGD(0.05, momentum=0.9),
    "sgd_nesterov": lambda: SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
}


def mlp(opt, seed=7):
    m = Sequential([Dense(N_IN, 64, activation="relu"), Dense(64, 32, activation="tanh"),
                    Dense(32, K)], seed=seed)
    return m.compile(OPTIMIZERS[opt](), SoftmaxCrossEntropy())


def assert_same_state(a, b):
    """Weights, optimizer state and step count equal to the last bit."""
    for i, (la, lb) in enumerate(zip(a.get_weights(), b.get_weights())):
        assert la.keys() == lb.keys()
        for key in la:
            assert la[key].dtype == lb[key].dtype and la[key].shape == lb[key].shape
            assert la[key].tobytes() == lb[key].tobytes(), \
                f"layer {i} {key}: max diff {np.abs(la[key] - lb[key]).max()}"
    assert type(a.optimizer) is type(b.optimizer)
    assert a.optimizer.iterations == b.optimizer.iterations
    assert a.optimizer.state.keys() == b.optimizer.state.keys()
    for key, slots in a.optimizer.state.items():
        for slot, arr in slots.items():
            assert arr.tobytes() == b.optimizer.state[key][slot].tobytes(), f"{key}/{slot}"


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("opt", ["adam", "sgd_momentum", "sgd_nesterov"])
def test_resume_is_bit_identical(tmp_path, opt, threads):
    fastnn.set_num_threads(threads)
    X, y = problem()
    full = mlp(opt)
    h_full = full.fit(X, y, epochs=4, batch_size=32, verbose=0)

    path = tmp_path / "ckpt.npz"
    first = mlp(opt)
    first.fit(X, y, epochs=2, batch_size=32, verbose=0, callbacks=[ModelCheckpoint(path)])
    resumed = fastnn.load(path)
    assert resumed.epochs_completed == 2
    assert resumed.seed == 7
    h_rest = resumed.fit(X, y, epochs=4, batch_size=32, verbose=0,
                         initial_epoch=resumed.epochs_completed)
    assert h_rest.epoch == [2, 3]
    assert_same_state(full, resumed)
    # the per-epoch losses of the second half are the uninterrupted run's too
    assert h_rest.history["loss"] == h_full.history["loss"][2:]


def test_resume_with_validation_and_checkpoint_every_epoch(tmp_path):
    """Resuming from the file written by the second of four per-epoch checkpoints (path with
    {epoch}); validation data does not disturb the order of anything."""
    X, y = problem()
    Xv, yv = problem(seed=1)
    full = mlp("adam")
    full.fit(X, y, epochs=4, batch_size=32, verbose=0, validation_data=(Xv, yv),
             callbacks=[ModelCheckpoint(tmp_path / "e{epoch}.npz")])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"e{i}.npz" for i in (1, 2, 3, 4)]
    resumed = fastnn.load(tmp_path / "e2.npz")
    resumed.fit(X, y, epochs=4, batch_size=32, verbose=0, validation_data=(Xv, yv),
                initial_epoch=2)
    assert_same_state(full, resumed)
    assert_same_state(full, fastnn.load(tmp_path / "e4.npz"))


def test_resume_on_another_thread_count(tmp_path):
    """First half on 2 threads, second half on 1: still the 1-thread uninterrupted result."""
    X, y = problem()
    fastnn.set_num_threads(1)
    full = mlp("adam")
    full.fit(X, y, epochs=4, batch_size=32, verbose=0)
    fastnn.set_num_threads(2)
    first = mlp("adam")
    first.fit(X, y, epochs=2, batch_size=32, verbose=0,
              callbacks=[ModelCheckpoint(tmp_path / "c.npz")])
    fastnn.set_num_threads(1)
    resumed = fastnn.load(tmp_path / "c.npz")
    resumed.fit(X, y, epochs=4, batch_size=32, verbose=0, initial_epoch=2)
    assert_same_state(full, resumed)


class _SigintAt(Callback):
    def __init__(self, epoch, batch):
        self.epoch, self.batch, self.done = epoch, batch, 0

    def on_epoch_end(self, epoch, logs=None):
        self.done = epoch + 1

    def on_batch_end(self, batch, logs=None):
        if (self.done, batch) == (self.epoch, self.batch):
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="POSIX signals")
@pytest.mark.parametrize("threads", [1, 2])
def test_resume_after_ctrl_c_is_bit_identical(tmp_path, threads):
    """Ctrl-C in the middle of epoch 3: the checkpoint holds epoch 2, and resuming from it ends
    where an uninterrupted run ends."""
    fastnn.set_num_threads(threads)
    X, y = problem()
    full = mlp("sgd_momentum")
    full.fit(X, y, epochs=4, batch_size=32, verbose=0)
    path = tmp_path / "ckpt.npz"
    run = mlp("sgd_momentum")
    with pytest.raises(KeyboardInterrupt):
        run.fit(X, y, epochs=4, batch_size=32, verbose=0,
                callbacks=[ModelCheckpoint(path), _SigintAt(2, 4)])
    resumed = fastnn.load(path)
    assert resumed.epochs_completed == 2
    resumed.fit(X, y, epochs=4, batch_size=32, verbose=0, initial_epoch=2)
    assert_same_state(full, resumed)


@pytest.mark.parametrize("threads", [1, 2])
def test_resume_conv_model(tmp_path, threads):
    """A small conv net (Conv2D, MaxPool2D, Flatten, Dense) resumes bit-identically too."""
    fastnn.set_num_threads(threads)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((96, 10, 10, 2)).astype(np.float32)
    y = rng.integers(0, 3, size=96)

    def make():
        m = Sequential([Conv2D(2, 8, 3, padding=1, activation="relu"), MaxPool2D(2),
                        Conv2D(8, 8, 3, activation="relu"), Flatten(), Dense(72, 3)],
                       seed=11, input_shape=(10, 10, 2))
        return m.compile(Adam(2e-3), SoftmaxCrossEntropy())

    full = make()
    full.fit(X, y, epochs=4, batch_size=16, verbose=0)
    first = make()
    first.fit(X, y, epochs=2, batch_size=16, verbose=0,
              callbacks=[ModelCheckpoint(tmp_path / "c.npz")])
    resumed = fastnn.load(tmp_path / "c.npz")
    resumed.fit(X, y, epochs=4, batch_size=16, verbose=0, initial_epoch=2)
    assert_same_state(full, resumed)


def test_resume_differs_without_optimizer_state(tmp_path):
    """The check above is not vacuous: dropping the optimizer state (include_optimizer=False)
    changes the result."""
    X, y = problem()
    full = mlp("adam")
    full.fit(X, y, epochs=4, batch_size=32, verbose=0)
    first = mlp("adam")
    first.fit(X, y, epochs=2, batch_size=32, verbose=0)
    first.epochs_completed = 2
    first.save(tmp_path / "w.npz", include_optimizer=False)
    resumed = fastnn.load(tmp_path / "w.npz")
    resumed.fit(X, y, epochs=4, batch_size=32, verbose=0, initial_epoch=2)
    assert resumed.get_weights()[0]["weight"].tobytes() != full.get_weights()[0]["weight"].tobytes()


def test_save_after_fit_records_completed_epochs(tmp_path):
    X, y = problem()
    m = mlp("adam")
    m.fit(X, y, epochs=2, batch_size=32, verbose=0)
    assert m.epochs_completed == 2
    m.save(tmp_path / "m.npz")
    assert fastnn.load(tmp_path / "m.npz").epochs_completed == 2
