"""Ctrl-C during ``fit``: the model stays consistent and the last completed epoch is on disk.

* A real SIGINT sent to a training subprocess (ModelCheckpoint every epoch): the process stops
  with KeyboardInterrupt, and the checkpoint it leaves loads, predicts and records at least one
  completed epoch (exactly the ones the interrupted run reported).
* In-process: a callback sends SIGINT to its own process in ``on_batch_end``; ``fit`` must raise
  KeyboardInterrupt after that batch, with the weights of that batch (not half-updated, no later
  batch applied) and ``model.history`` holding the completed epochs only.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fastnn
from fastnn import SGD, Adam, Callback, Dense, ModelCheckpoint, Sequential, SoftmaxCrossEntropy

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGINT") or sys.platform == "win32",
                                reason="POSIX signals")

TRAIN_SCRIPT = r"""
import json, signal, sys, time
# Ctrl-C must raise KeyboardInterrupt here even if the test run ignores SIGINT (nohup, a shell
# background job): an ignored SIGINT is inherited across exec, and fastnn leaves it ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
import numpy as np
import fastnn
from fastnn import Adam, Callback, Dense, ModelCheckpoint, Sequential, SoftmaxCrossEntropy

path = sys.argv[1]
fastnn.set_num_threads(1)
rng = np.random.default_rng(0)
X = rng.standard_normal((512, 20)).astype(np.float32)
y = rng.integers(0, 3, size=512)
model = Sequential([Dense(20, 32, activation="relu"), Dense(32, 3)], seed=0)
model.compile(Adam(1e-3), SoftmaxCrossEntropy())


class Report(Callback):
    def on_batch_end(self, batch, logs=None):
        time.sleep(0.002)  # ~35 ms per epoch: the signal lands in the middle of one

    def on_epoch_end(self, epoch, logs=None):
        print(f"epoch done {epoch + 1}", flush=True)


print("ready", flush=True)
try:
    model.fit(X, y, epochs=100000, batch_size=32, verbose=0,
              callbacks=[ModelCheckpoint(path), Report()])
except KeyboardInterrupt:
    print("interrupted " + json.dumps({"epochs": len(model.history.epoch),
                                       "history_epochs": model.history.epoch[-3:],
                                       "finite": all(bool(np.isfinite(p).all())
                                                     for l in model.get_weights()
                                                     for p in l.values())}), flush=True)
    raise
print("finished without interruption", flush=True)
"""


def _read_lines(stream, lines, done):
    for line in stream:
        lines.append(line.rstrip("\n"))
    done.set()


def test_sigint_to_training_subprocess_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "ckpt.npz"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines, done = [], threading.Event()
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines, done), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        # wait for two completed epochs (the first checkpoint is on disk after the first)
        while sum(line.startswith("epoch done") for line in lines) < 2:
            assert proc.poll() is None, f"training died early: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, f"no epoch finished in time: {lines}"
            time.sleep(0.01)
        assert path.exists()
        time.sleep(0.015)  # into the middle of an epoch
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # pragma: no cover - the failure being tested
            proc.kill()
            pytest.fail("the training process did not stop within 60 s of SIGINT")
    finally:
        if proc.poll() is None:  # pragma: no cover
            proc.kill()
            proc.wait()
    done.wait(10)
    stderr = proc.stderr.read()
    # KeyboardInterrupt propagates: non-zero exit (Python re-raises SIGINT: -2), the traceback
    # names it, and the model was consistent when fit raised it
    assert rc != 0, lines
    assert "KeyboardInterrupt" in stderr and "training interrupted" in stderr, stderr[-2000:]
    assert "finished without interruption" not in lines
    report = [line for line in lines if line.startswith("interrupted ")]
    assert len(report) == 1, lines
    info = json.loads(report[0][len("interrupted "):])
    assert info["finite"]
    epochs_reported = [int(line.split()[-1]) for line in lines if line.startswith("epoch done")]
    assert info["epochs"] == epochs_reported[-1] >= 2
    assert info["history_epochs"] == list(range(info["epochs"]))[-3:]

    # the checkpoint holds the last completed epoch, loads, and predicts
    model = fastnn.load(path)
    assert model.epochs_completed >= 1
    assert model.epochs_completed == info["epochs"]
    assert model.optimizer is not None and model.optimizer.iterations == 16 * info["epochs"]
    X = np.random.default_rng(1).standard_normal((7, 20)).astype(np.float32)
    out = model.predict(X)
    assert out.shape == (7, 3) and np.isfinite(out).all()
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    # nothing but the checkpoint was left in the folder (no temporary file of a save)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz"]


# ---- in-process: a callback sends SIGINT ------------------------------------------------------

class SigintAt(Callback):
    """Send SIGINT to this process at the end of batch ``batch`` of epoch ``epoch`` (0-based),
    after recording the weights and optimizer state the model has then."""

    def __init__(self, epoch, batch, times=1):
        self.epoch, self.batch, self.times = epoch, batch, times
        self.current_epoch = 0
        self.batches_after = 0
        self.sent = False
        self.snapshot = None

    def on_epoch_end(self, epoch, logs=None):
        self.current_epoch = epoch + 1

    def on_batch_end(self, batch, logs=None):
        if self.sent:
            self.batches_after += 1
            return
        if (self.current_epoch, batch) == (self.epoch, self.batch):
            self.snapshot = self.model.get_weights()
            self.iterations = self.model.optimizer.iterations
            self.sent = True
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGINT)


def _problem(n=320, n_in=12, k=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in)).astype(np.float32)
    return X, rng.integers(0, k, size=n)


def _model(opt):
    m = Sequential([Dense(12, 16, activation="tanh"), Dense(16, 4)], seed=3)
    return m.compile(opt, SoftmaxCrossEntropy())


def _bit_equal(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("opt", [lambda: Adam(1e-2), lambda: SGD(0.05, momentum=0.9)],
                         ids=["adam", "sgd_momentum"])
@pytest.mark.parametrize("where", [(0, 0), (0, 4), (2, 0), (2, 6), (1, 9)],
                         ids=lambda w: f"epoch{w[0]}-batch{w[1]}")
def test_callback_sigint_stops_after_the_batch(opt, where):
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    X, y = _problem()
    m = _model(opt())
    cb = SigintAt(*where)
    with pytest.raises(KeyboardInterrupt, match="training interrupted"):
        m.fit(X, y, epochs=5, batch_size=32, verbose=0, callbacks=[cb])
    assert cb.sent and cb.batches_after == 0
    # weights (and optimizer step count) are exactly those after the interrupted batch
    for got, want in zip(m.get_weights(), cb.snapshot):
        for key in want:
            assert _bit_equal(got[key], want[key]), key
    assert m.optimizer.iterations == cb.iterations == where[0] * 10 + where[1] + 1
    # the history holds the completed epochs only, with finite values
    assert m.history is not None
    assert m.history.epoch == list(range(where[0]))
    assert all(len(v) == where[0] for v in m.history.history.values())
    assert all(np.isfinite(v).all() for v in m.history.history.values())
    # Ctrl-C handling is restored after fit
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # the model goes on working: predict, and train again (another fit is not interrupted)
    assert np.isfinite(m.predict(X[:5])).all()
    m.fit(X, y, epochs=1, batch_size=32, verbose=0)
    assert m.optimizer.iterations == cb.iterations + 10


def test_callback_sigint_last_batch_of_an_epoch():
    """Interrupted at the last batch of epoch 1 (10 batches of 32): that epoch's step is kept but
    the epoch is not recorded as completed (no epoch-end callbacks ran for it)."""
    X, y = _problem()
    m = _model(Adam(1e-2))
    cb = SigintAt(1, 9)
    with pytest.raises(KeyboardInterrupt):
        m.fit(X, y, epochs=3, batch_size=32, verbose=0, callbacks=[cb])
    assert m.history.epoch == [0]
    assert m.optimizer.iterations == 20


def test_second_sigint_raises_at_once():
    """A second Ctrl-C while fit is winding down raises KeyboardInterrupt immediately."""
    X, y = _problem()
    m = _model(Adam(1e-2))
    cb = SigintAt(0, 3, times=2)
    with pytest.raises(KeyboardInterrupt):
        m.fit(X, y, epochs=2, batch_size=32, verbose=0, callbacks=[cb])
    assert cb.batches_after == 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    for got, want in zip(m.get_weights(), cb.snapshot):
        for key in want:
            assert _bit_equal(got[key], want[key]), key


def test_sigint_with_checkpoint_keeps_last_completed_epoch(tmp_path):
    """In-process twin of the subprocess test: the checkpoint holds epoch 2 of an interrupted
    epoch 3, and it equals the weights the model had at the end of epoch 2."""
    X, y = _problem()
    path = tmp_path / "m.npz"

    class Keep(Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.last = self.model.get_weights()

    keep = Keep()
    m = _model(Adam(1e-2))
    with pytest.raises(KeyboardInterrupt):
        m.fit(X, y, epochs=5, batch_size=32, verbose=0,
              callbacks=[ModelCheckpoint(path), keep, SigintAt(2, 5)])
    loaded = fastnn.load(path)
    assert loaded.epochs_completed == 2 == len(m.history.epoch)
    for got, want in zip(loaded.get_weights(), keep.last):
        for key in want:
            assert _bit_equal(got[key], want[key]), key
    assert loaded.optimizer.iterations == 20


def test_sigint_outside_fit_is_not_swallowed():
    """fit installs its handler only while it runs."""
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the handler runs at the next bytecode boundary
