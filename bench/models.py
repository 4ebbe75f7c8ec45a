"""Benchmark models: the spec every implementation builds, and its useful FLOPs per train step.

A spec is a plain JSON-serialisable dict sent to the worker processes; ``kind`` selects the
module ``bench/<impl>_<kind>.py`` that builds it. New kinds (e.g. ``"cnn"``) add an entry here
and one module per implementation.
"""

MODELS = {
    "mlp": {
        "kind": "mlp",
        "sizes": [784, 256, 128, 10],
        "activation": "relu",
        "dtype": "float32",
        "learning_rate": 0.01,
        "momentum": 0.9,
        "description": "MLP 784-256-128-10 ReLU, softmax-CE, SGD momentum 0.9, float32",
    },
}


def dense_flops(n, k, m, first):
    """Useful FLOPs of one dense layer (N,K)->(M) in a train step.

    Forward ``2NKM``; backward ``4NKM`` (dW and dX), or ``2NKM`` for the first layer, which
    skips dX. Bias, activation, loss and optimizer work is not counted.
    """
    return 2 * n * k * m + (2 if first else 4) * n * k * m


def train_step_flops(spec, batch):
    """Useful FLOPs of one train step of ``spec`` at batch size ``batch``."""
    if spec["kind"] == "mlp":
        sizes = spec["sizes"]
        return sum(dense_flops(batch, k, m, i == 0)
                   for i, (k, m) in enumerate(zip(sizes[:-1], sizes[1:])))
    raise ValueError(f"no FLOP count for model kind {spec['kind']!r}")
