"""Pure-NumPy train step (channels-last) of any spec of :mod:`bench.models`: the honest
baseline fastnn is measured against.

What a competent engineer writes without a compiler: vectorised, BLAS through ``np.matmul(...,
out=...)`` (transposed operands are views, passed to BLAS with a transpose flag, not copied),
every buffer preallocated once per batch size, every elementwise op in place, and all parameters
(and their gradients and velocities) living in one flat array so the optimizer update is four
vectorised calls over the whole model rather than four per parameter:

* Conv2D forward: copy the (zero-padded) input into a preallocated padded buffer whose border
  stays zero, take ``numpy.lib.stride_tricks.sliding_window_view`` over H and W, subsample it by
  the stride, and copy it once (``np.copyto``) into a preallocated column matrix
  ``(N Ho Wo, kh kw Cin)`` in the weight's ``(kh, kw, Cin)`` order: in NHWC each ``kw Cin`` run
  is contiguous in the source, so NumPy copies runs, not single floats. Then one BLAS GEMM
  ``col @ W`` straight into the NHWC output, bias and ReLU in place.
* Conv2D backward: ``dZ = dA * (A > 0)``; ``dW = col^T dZ`` (GEMM on the column matrix kept from
  the forward pass), ``db`` a column sum; ``dX``: one GEMM ``dcol = dZ W^T``, then col2im as a
  loop over the ``kh kw`` kernel offsets, each adding one strided slice of ``dcol`` into the
  padded gradient buffer (``kh kw`` vectorised adds instead of ``np.add.at``'s scattered ones).
  The first layer skips dX.
* MaxPool2D: the maximum over the window offsets of strided slices; backward routes the gradient
  to the first maximum of each window (as fastnn), offset by offset.
* Dense layers ``Z = X @ W + b`` with optional ReLU; the first layer skips dX (no gradient with
  respect to the input data). An MLP is a spec of dense layers only.
* Mean softmax cross-entropy over integer labels; mean squared error ``mean((out - t)^2)`` over
  all elements (gradient ``2 (out - t) / (N K)``), as fastnn's and torch's.
* SGD with momentum in PyTorch's form (``v <- mu v + g``, ``p <- p - lr v``) over the flat arrays.

Inference (:meth:`NumpyNet.forward`) is the forward pass alone, into the same buffers.

NumPy's elementwise ops run on one thread; BLAS follows ``OPENBLAS_NUM_THREADS``.
"""
import time

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .models import layer_name, layer_shapes


class _Output:
    """What ends a conv or dense layer: its output ``A`` (bias ``b`` and optional ReLU applied in
    place) and the ReLU's gradient ``dZ = dA * (A > 0)``, over preallocated buffers."""

    def _init_output(self, cfg, shape, dtype):
        self.relu = cfg["activation"] == "relu"
        if cfg["activation"] not in ("relu", None):
            raise ValueError(f"unsupported activation {cfg['activation']!r}")
        self.A = np.empty(shape, dtype=dtype)
        self.dZ = np.empty_like(self.A)
        self.mask = np.empty(self.A.shape, dtype=bool)

    def _bias_relu(self, Z2):
        """Add the bias to ``Z2`` (``A`` as (rows, channels)), then the ReLU; returns ``A``."""
        Z2 += self.b
        if self.relu:
            np.maximum(self.A, 0, out=self.A)
        return self.A

    def _relu_grad(self, dA):
        """``dA * (A > 0)`` into ``dZ``, returned; None without a ReLU."""
        if not self.relu:
            return None
        np.greater(self.A, 0, out=self.mask)
        np.multiply(dA, self.mask, out=self.dZ)
        return self.dZ


class Conv2D(_Output):
    """Channels-last convolution over preallocated buffers (see the module docstring)."""

    def __init__(self, cfg, in_shape, out_shape, batch, dtype, W, b, dW, db, need_dX):
        self.H, self.W_in, self.C = in_shape
        self.Ho, self.Wo, self.M = out_shape
        (self.kh, self.kw), (self.sh, self.sw), (self.ph, self.pw) = (
            cfg["kernel_size"], cfg["stride"], cfg["padding"])
        N, H, Wd, C, kh, kw = batch, self.H, self.W_in, self.C, self.kh, self.kw
        K = kh * kw * C
        self.Wm, self.b = W.reshape(K, self.M), b          # views into the flat parameters
        self.dWm, self.db = dW.reshape(K, self.M), db
        padded = (N, H + 2 * self.ph, Wd + 2 * self.pw, C)
        self.padded = self.ph > 0 or self.pw > 0
        # the padded input: the border is zeroed once and never written again
        self.Xp = np.zeros(padded, dtype=dtype) if self.padded else None
        self.col = np.empty((N, self.Ho, self.Wo, kh, kw, C), dtype=dtype)
        self.col2 = self.col.reshape(N * self.Ho * self.Wo, K)
        self._init_output(cfg, (N, self.Ho, self.Wo, self.M), dtype)
        self.A2 = self.A.reshape(-1, self.M)
        self.dZ2 = self.dZ.reshape(-1, self.M)
        self.need_dX = need_dX
        if need_dX:
            self.dcol = np.empty_like(self.col)
            self.dcol2 = self.dcol.reshape(self.col2.shape)
            self.dXp = np.zeros(padded, dtype=dtype)
            self.dX = self.dXp[:, self.ph:self.ph + H, self.pw:self.pw + Wd]  # a view

    def forward(self, X):
        if self.padded:
            self.Xp[:, self.ph:self.ph + self.H, self.pw:self.pw + self.W_in] = X
            X = self.Xp
        # (N, H', W', C, kh, kw) -> stride -> (N, Ho, Wo, kh, kw, C), copied once, runs of kw*C
        win = sliding_window_view(X, (self.kh, self.kw), axis=(1, 2))
        win = win[:, ::self.sh, ::self.sw][:, :self.Ho, :self.Wo]
        np.copyto(self.col, win.transpose(0, 1, 2, 4, 5, 3))
        np.matmul(self.col2, self.Wm, out=self.A2)
        return self._bias_relu(self.A2)

    def backward(self, dA):
        if self._relu_grad(dA) is None:
            np.copyto(self.dZ, dA)
        np.matmul(self.col2.T, self.dZ2, out=self.dWm)
        np.sum(self.dZ2, axis=0, out=self.db)
        if not self.need_dX:
            return None
        np.matmul(self.dZ2, self.Wm.T, out=self.dcol2)
        # col2im: one strided add per kernel offset (a, b)
        dXp, dcol = self.dXp, self.dcol
        dXp.fill(0)
        hs, ws = self.sh * (self.Ho - 1) + 1, self.sw * (self.Wo - 1) + 1
        for a in range(self.kh):
            for b in range(self.kw):
                dXp[:, a:a + hs:self.sh, b:b + ws:self.sw] += dcol[:, :, :, a, b]
        return self.dX


class MaxPool2D:
    """Max pooling, channels-last, no padding; backward to the first maximum of each window."""

    def __init__(self, cfg, in_shape, out_shape, batch, dtype, need_dX):
        (self.kh, self.kw), (self.sh, self.sw) = cfg["kernel_size"], cfg["stride"]
        Ho, Wo, C = out_shape
        self.hs, self.ws = self.sh * (Ho - 1) + 1, self.sw * (Wo - 1) + 1
        self.Y = np.empty((batch, Ho, Wo, C), dtype=dtype)
        self.disjoint = self.sh >= self.kh and self.sw >= self.kw
        # the windows cover the input exactly once: every element of dX is written
        self.tiles = ((self.sh, self.sw) == (self.kh, self.kw)
                      and (Ho * self.sh, Wo * self.sw) == tuple(in_shape[:2]))
        self.need_dX = need_dX
        if need_dX:
            self.dX = np.empty((batch,) + tuple(in_shape), dtype=dtype)
            self.hit = np.empty(self.Y.shape, dtype=bool)
            self.taken = np.empty(self.Y.shape, dtype=bool)
            self.tmp = np.empty_like(self.Y)

    def _slice(self, X, a, b):
        return X[:, a:a + self.hs:self.sh, b:b + self.ws:self.sw]

    def forward(self, X):
        self.X = X
        np.copyto(self.Y, self._slice(X, 0, 0))
        for a in range(self.kh):
            for b in range(self.kw):
                if a or b:
                    np.maximum(self.Y, self._slice(X, a, b), out=self.Y)
        return self.Y

    def backward(self, dY):
        if not self.need_dX:
            return None
        dX, hit, taken = self.dX, self.hit, self.taken
        if not self.tiles:
            dX.fill(0)
        last = (self.kh - 1, self.kw - 1)
        for a in range(self.kh):
            for b in range(self.kw):
                np.equal(self._slice(self.X, a, b), self.Y, out=hit)
                if a or b:
                    np.greater(hit, taken, out=hit)   # hit and not taken: the first maximum
                    if (a, b) != last:
                        np.bitwise_or(taken, hit, out=taken)
                else:
                    np.copyto(taken, hit)
                if self.disjoint:  # windows do not overlap: each slice is written once
                    np.multiply(dY, hit, out=self._slice(dX, a, b))
                else:
                    np.multiply(dY, hit, out=self.tmp)
                    self._slice(dX, a, b)[...] += self.tmp
        return dX


class Flatten:
    def __init__(self, in_shape, batch):
        self.shape = (batch,) + tuple(in_shape)
        self.need_dX = True

    def forward(self, X):
        return X.reshape(X.shape[0], -1)

    def backward(self, dY):
        return dY.reshape(self.shape)


class Dense(_Output):
    """``Z = X W + b`` with optional ReLU, over preallocated buffers."""

    def __init__(self, cfg, batch, dtype, W, b, dW, db, need_dX):
        self.W, self.b, self.dW, self.db = W, b, dW, db
        self._init_output(cfg, (batch, cfg["out_features"]), dtype)
        self.need_dX = need_dX
        if need_dX:
            self.dX = np.empty((batch, cfg["in_features"]), dtype=dtype)

    def forward(self, X):
        self.X = X
        np.matmul(X, self.W, out=self.A)
        return self._bias_relu(self.A)

    def backward(self, dA):
        dZ = self._relu_grad(dA)
        if dZ is None:
            dZ = dA  # the loss's gradient buffer
        np.matmul(self.X.T, dZ, out=self.dW)
        np.sum(dZ, axis=0, out=self.db)
        if not self.need_dX:
            return None
        np.matmul(dZ, self.W.T, out=self.dX)
        return self.dX


class NumpyNet:
    """A channels-last network given by a spec, with its loss and SGD momentum.

    Parameters
    ----------
    spec : dict
        A spec of :mod:`bench.models` (``input_shape``, ``layers``, ``loss``).
    batch : int
        Batch size the buffers are allocated for.
    dtype : numpy dtype
    seed : int
        Seed of the He-normal weight initialisation (biases start at zero).
    learning_rate, momentum : float

    Attributes
    ----------
    flat_params, flat_grads : ndarray
        Every parameter (gradient), layer by layer, weight then bias; ``params`` and ``grads``
        are lists of views into them.
    """

    def __init__(self, spec, batch, dtype=np.float32, seed=0, learning_rate=0.01, momentum=0.9):
        self.spec = spec
        self.batch = N = int(batch)
        self.dtype = np.dtype(dtype)
        self.lr = self.dtype.type(learning_rate)
        self.mu = self.dtype.type(momentum)
        shapes_io = layer_shapes(spec)
        pshapes = []
        for cfg in spec["layers"]:
            if cfg["type"] == "conv":
                kh, kw = cfg["kernel_size"]
                pshapes.append(((kh, kw, cfg["in_channels"], cfg["out_channels"]),
                                (cfg["out_channels"],)))
            elif cfg["type"] == "dense":
                pshapes.append(((cfg["in_features"], cfg["out_features"]),
                                (cfg["out_features"],)))
            else:
                pshapes.append(())
        total = sum(int(np.prod(s)) for ps in pshapes for s in ps)
        self.flat_params = np.zeros(total, dtype=self.dtype)
        self.flat_grads = np.zeros(total, dtype=self.dtype)
        self.flat_velocity = np.zeros(total, dtype=self.dtype)
        self.flat_scratch = np.empty(total, dtype=self.dtype)
        rng = np.random.default_rng(seed)
        self.params, self.grads, self.layers = [], [], []
        offset = 0
        for i, (cfg, ps, (in_shape, out_shape)) in enumerate(
                zip(spec["layers"], pshapes, shapes_io)):
            views = []
            for s in ps:
                size = int(np.prod(s))
                views.append((self.flat_params[offset:offset + size].reshape(s),
                              self.flat_grads[offset:offset + size].reshape(s)))
                offset += size
            if views:
                (W, dW), (b, db) = views
                W[...] = rng.standard_normal(W.shape) * np.sqrt(2.0 / np.prod(W.shape[:-1]))
                self.params += [W, b]
                self.grads += [dW, db]
            need_dX = i > 0
            t = cfg["type"]
            if t == "conv":
                layer = Conv2D(cfg, in_shape, out_shape, N, self.dtype, W, b, dW, db, need_dX)
            elif t == "dense":
                layer = Dense(cfg, N, self.dtype, W, b, dW, db, need_dX)
            elif t == "maxpool":
                layer = MaxPool2D(cfg, in_shape, out_shape, N, self.dtype, need_dX)
            else:
                layer = Flatten(in_shape, N)
            self.layers.append(layer)
        self.names = [layer_name(cfg) for cfg in spec["layers"]]
        self.loss_kind = spec["loss"]
        n_out = shapes_io[-1][1][0]
        self.grad = np.empty((N, n_out), dtype=self.dtype)  # d loss / d output
        self.row_max = np.empty(N, dtype=self.dtype)
        self.row_sum = np.empty(N, dtype=self.dtype)
        self.rows = np.arange(N)

    def _loss(self, Z, y):
        """Mean loss of the output ``Z``; leaves d loss / d Z in ``self.grad``."""
        N = Z.shape[0]
        G = self.grad
        if self.loss_kind == "mse":
            np.subtract(Z, y, out=G)
            flat = G.reshape(-1)
            loss = float(np.dot(flat, flat)) / flat.size
            G *= self.dtype.type(2.0 / flat.size)
            return loss
        # softmax cross-entropy over integer labels
        np.max(Z, axis=1, out=self.row_max)
        np.subtract(Z, self.row_max[:, None], out=G)
        target = G[self.rows, y]
        np.exp(G, out=G)
        np.sum(G, axis=1, out=self.row_sum)
        loss = float(np.mean(np.log(self.row_sum) - target))
        np.reciprocal(self.row_sum, out=self.row_sum)
        self.row_sum *= self.dtype.type(1.0 / N)
        G *= self.row_sum[:, None]
        G[self.rows, y] -= self.dtype.type(1.0 / N)
        return loss

    def forward(self, X):
        """The network's output for ``X`` (N, H, W, C): the last layer's buffer, overwritten by
        the next call (inference)."""
        out = X
        for layer in self.layers:
            out = layer.forward(out)
        return out

    def train_step(self, X, y, times=None):
        """One step on ``X`` (N, H, W, C) and targets ``y``; returns the mean loss.

        ``y``: integer labels (N,) for softmax-CE, floats (N, K) for MSE. If ``times`` is given
        (an array of shape ``(L + 2, 2)``), each layer's forward and backward seconds are added to
        its rows, then the loss's and the optimizer's.
        """
        clock = time.perf_counter if times is not None else None
        out = X
        for i, layer in enumerate(self.layers):
            if clock:
                t = clock()
            out = layer.forward(out)
            if clock:
                times[i, 0] += clock() - t
        if clock:
            t = clock()
        loss = self._loss(out, y)
        if clock:
            times[-2, 0] += clock() - t
        grad = self.grad
        for i in range(len(self.layers) - 1, -1, -1):
            if clock:
                t = clock()
            grad = self.layers[i].backward(grad)
            if clock:
                times[i, 1] += clock() - t
        if clock:
            t = clock()
        # SGD momentum over the flat arrays: v <- mu v + g; p <- p - lr v
        v = self.flat_velocity
        v *= self.mu
        v += self.flat_grads
        np.multiply(v, self.lr, out=self.flat_scratch)
        self.flat_params -= self.flat_scratch
        if clock:
            times[-1, 1] += clock() - t
        return loss

    def profile(self, X, y, repeats=10, warmup=2):
        """Median forward/backward ms of each layer, the loss and the update over ``repeats``
        timed steps; rows as :func:`bench.fastnn_net.profile_rows` returns."""
        L = len(self.layers)
        runs = np.zeros((repeats, L + 2, 2))
        for r in range(-warmup, repeats):
            times = np.zeros((L + 2, 2))
            self.train_step(X, y, times)
            if r >= 0:
                runs[r] = times
        med = np.median(runs, axis=0) * 1e3
        names = self.names + ["loss", "optimizer"]
        return [{"name": n, "forward_ms": float(f), "backward_ms": float(b)}
                for n, (f, b) in zip(names, med)]


def make_data(spec, batch, seed, dtype):
    """The fixed random batch every implementation trains on (same seed, same data)."""
    rng = np.random.default_rng(seed + 1)
    shape = (batch,) + tuple(spec["input_shape"])
    if spec.get("inputs") == "uniform":
        X = rng.random(shape)
    else:
        X = rng.standard_normal(shape)
    X = np.ascontiguousarray(X, dtype=dtype)
    n_out = layer_shapes(spec)[-1][1][0]
    if spec["loss"] == "mse":
        y = np.ascontiguousarray(rng.standard_normal((batch, n_out)), dtype=dtype)
    else:
        y = rng.integers(0, n_out, size=batch, dtype=np.int64)
    return X, y


def build(spec, batch, seed=0):
    """Return a zero-argument callable doing one train step on a fixed random batch; its
    ``profile(repeats)`` attribute gives per-layer times."""
    dtype = np.dtype(spec.get("dtype", "float32"))
    X, y = make_data(spec, batch, seed, dtype)
    net = NumpyNet(spec, batch, dtype=dtype, seed=seed,
                   learning_rate=spec.get("learning_rate", 0.01),
                   momentum=spec.get("momentum", 0.9))

    def step():
        return net.train_step(X, y)

    step.profile = lambda repeats=10: net.profile(X, y, repeats=repeats)
    return step


def build_predict(spec, batch, seed=0):
    """Return a zero-argument callable doing one inference call (:meth:`NumpyNet.forward`) on a
    fixed random batch."""
    dtype = np.dtype(spec.get("dtype", "float32"))
    X, _ = make_data(spec, batch, seed, dtype)
    net = NumpyNet(spec, batch, dtype=dtype, seed=seed)
    return lambda: net.forward(X)


def configure_threads(n):
    """NumPy's BLAS threads are set through OPENBLAS_NUM_THREADS before import; nothing to do."""


def versions():
    return {"numpy": np.__version__}


def epoch_data(spec, batch, dtype=np.float32):
    """Fashion-MNIST's training set for an end-to-end epoch: ``X`` shaped as the spec's input,
    labels, and the number of samples used (a multiple of ``batch``: every implementation trains
    the same full batches; 60,000 // 128 * 128 = 59,904 at batch 128)."""
    from fastnn.datasets import load_fashion_mnist

    if spec["loss"] == "mse":
        raise ValueError("the end-to-end epoch needs a classification net (mlp or cnn)")
    flat = len(spec["input_shape"]) == 1
    (X, y), _ = load_fashion_mnist(flatten=flat, dtype=dtype)
    n = X.shape[0] // batch * batch
    return np.ascontiguousarray(X[:n]), np.ascontiguousarray(y[:n]), n


def build_epoch(spec, batch, seed=0):
    """Return a callable training one epoch of Fashion-MNIST the way a NumPy user writes it: a
    seeded permutation, each batch gathered with fancy indexing, a train step."""
    dtype = np.dtype(spec.get("dtype", "float32"))
    X, y, n = epoch_data(spec, batch, dtype)
    net = NumpyNet(spec, batch, dtype=dtype, seed=seed,
                   learning_rate=spec.get("learning_rate", 0.01),
                   momentum=spec.get("momentum", 0.9))
    rng = np.random.default_rng(seed)
    for b in range(3):  # warm-up
        net.train_step(X[b * batch:(b + 1) * batch], y[b * batch:(b + 1) * batch])

    def epoch():
        order = rng.permutation(n)
        loss = 0.0
        for b in range(n // batch):
            idx = order[b * batch:(b + 1) * batch]
            loss = net.train_step(X[idx], y[idx])
        return loss

    return epoch
