"""Pure-NumPy MLP train step: the honest baseline fastnn is measured against.

What a competent engineer writes without a compiler: vectorised, BLAS through ``np.matmul(...,
out=...)`` (transposed operands are views, passed to BLAS with a transpose flag, not copied),
every buffer preallocated once per batch size, every elementwise op in place, and all parameters
(and their gradients and velocities) living in one flat array so the optimizer update is four
vectorised calls over the whole model rather than four per parameter.

Inference (:meth:`NumpyMLP.forward`) is the same forward pass into the same buffers.

The math is fastnn's: dense layers ``Z = X @ W + b`` with ReLU on hidden layers, mean softmax
cross-entropy over integer labels, backward without the gradient with respect to the input data,
then SGD with momentum in PyTorch's form (``v <- mu v + g``, ``p <- p - lr v``).
NumPy's elementwise ops run on one thread; BLAS follows ``OPENBLAS_NUM_THREADS``.
"""
import numpy as np


class NumpyMLP:
    """An MLP with ReLU hidden layers, softmax-CE loss and SGD momentum, over preallocated buffers.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths, input first, e.g. ``(784, 256, 128, 10)``.
    batch : int
        Batch size the buffers are allocated for.
    dtype : numpy dtype
    seed : int
        Seed of the He-normal weight initialisation (biases start at zero).
    learning_rate, momentum : float
    """

    def __init__(self, sizes, batch, dtype=np.float32, seed=0, learning_rate=0.01, momentum=0.9):
        self.sizes = tuple(int(s) for s in sizes)
        self.batch = int(batch)
        self.dtype = np.dtype(dtype)
        self.lr = self.dtype.type(learning_rate)
        self.mu = self.dtype.type(momentum)
        n_layers = len(self.sizes) - 1
        shapes = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            shapes += [(fan_in, fan_out), (fan_out,)]
        total = sum(int(np.prod(s)) for s in shapes)
        # One flat array each for parameters, gradients, velocities, and a scratch for lr * v.
        self.flat_params = np.zeros(total, dtype=self.dtype)
        self.flat_grads = np.zeros(total, dtype=self.dtype)
        self.flat_velocity = np.zeros(total, dtype=self.dtype)
        self.flat_scratch = np.empty(total, dtype=self.dtype)

        def views(flat):
            out, offset = [], 0
            for shape in shapes:
                size = int(np.prod(shape))
                out.append(flat[offset:offset + size].reshape(shape))
                offset += size
            return out

        p, g = views(self.flat_params), views(self.flat_grads)
        self.W, self.b = p[0::2], p[1::2]
        self.dW, self.db = g[0::2], g[1::2]
        rng = np.random.default_rng(seed)
        for W in self.W:
            W[...] = rng.standard_normal(W.shape) * np.sqrt(2.0 / W.shape[0])

        N = self.batch
        # A[i]: output of layer i (post-activation; logits, then probabilities, for the last).
        self.A = [np.empty((N, m), dtype=self.dtype) for m in self.sizes[1:]]
        # dA[i]: gradient w.r.t. the output of hidden layer i (becomes dZ in place).
        self.dA = [np.empty((N, m), dtype=self.dtype) for m in self.sizes[1:-1]]
        self.mask = [np.empty((N, m), dtype=bool) for m in self.sizes[1:-1]]
        self.row_max = np.empty(N, dtype=self.dtype)
        self.row_sum = np.empty(N, dtype=self.dtype)
        self.rows = np.arange(N)
        self.n_layers = n_layers

    def forward(self, X):
        """The logits of ``X`` (N, sizes[0]): the last layer's buffer, overwritten by the next
        call (inference, and the first half of :meth:`train_step`)."""
        W, b, A = self.W, self.b, self.A
        L = self.n_layers
        inp = X
        for i in range(L):
            np.matmul(inp, W[i], out=A[i])
            A[i] += b[i]
            if i < L - 1:
                np.maximum(A[i], 0, out=A[i])
            inp = A[i]
        return A[-1]

    def train_step(self, X, y):
        """One step on ``X`` (N, sizes[0]) and int labels ``y`` (N,); returns the mean loss."""
        W, A, dA, dW, db = self.W, self.A, self.dA, self.dW, self.db
        L = self.n_layers
        N = X.shape[0]
        Z = self.forward(X)
        # -- softmax cross-entropy; A[-1] becomes dZ of the last layer ----------------------
        np.max(Z, axis=1, out=self.row_max)
        Z -= self.row_max[:, None]
        target = Z[self.rows, y]                  # shifted logit of the true class, (N,)
        np.exp(Z, out=Z)
        np.sum(Z, axis=1, out=self.row_sum)
        loss = float(np.mean(np.log(self.row_sum) - target))
        np.reciprocal(self.row_sum, out=self.row_sum)
        self.row_sum *= self.dtype.type(1.0 / N)
        Z *= self.row_sum[:, None]                # softmax / N
        Z[self.rows, y] -= self.dtype.type(1.0 / N)
        # -- backward -----------------------------------------------------------------------
        dZ = Z
        for i in range(L - 1, -1, -1):
            prev = A[i - 1] if i > 0 else X
            np.matmul(prev.T, dZ, out=dW[i])
            np.sum(dZ, axis=0, out=db[i])
            if i == 0:
                break                             # no gradient w.r.t. the input data
            np.matmul(dZ, W[i].T, out=dA[i - 1])
            np.greater(A[i - 1], 0, out=self.mask[i - 1])
            np.multiply(dA[i - 1], self.mask[i - 1], out=dA[i - 1])
            dZ = dA[i - 1]
        # -- SGD momentum over the flat arrays: v <- mu v + g; p <- p - lr v -----------------
        v = self.flat_velocity
        v *= self.mu
        v += self.flat_grads
        np.multiply(v, self.lr, out=self.flat_scratch)
        self.flat_params -= self.flat_scratch
        return loss


def build(spec, batch, seed=0):
    """Return a zero-argument callable doing one train step on a fixed random batch."""
    dtype = np.dtype(spec.get("dtype", "float32"))
    sizes = spec["sizes"]
    rng = np.random.default_rng(seed + 1)
    X = np.ascontiguousarray(rng.standard_normal((batch, sizes[0])), dtype=dtype)
    y = rng.integers(0, sizes[-1], size=batch, dtype=np.int64)
    net = NumpyMLP(sizes, batch, dtype=dtype, seed=seed,
                   learning_rate=spec.get("learning_rate", 0.01),
                   momentum=spec.get("momentum", 0.9))
    return lambda: net.train_step(X, y)


def build_predict(spec, batch, seed=0):
    """Return a zero-argument callable doing one inference call (the forward pass to the
    logits, into the net's preallocated buffers) on a fixed random batch."""
    dtype = np.dtype(spec.get("dtype", "float32"))
    sizes = spec["sizes"]
    rng = np.random.default_rng(seed + 1)
    X = np.ascontiguousarray(rng.standard_normal((batch, sizes[0])), dtype=dtype)
    net = NumpyMLP(sizes, batch, dtype=dtype, seed=seed)
    return lambda: net.forward(X)


def configure_threads(n):
    """NumPy's BLAS threads are set through OPENBLAS_NUM_THREADS before import; nothing to do."""


def versions():
    return {"numpy": np.__version__}
