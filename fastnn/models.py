"""Ready-made networks: the Fashion-MNIST MLP, a small Fashion-MNIST CNN and the DQN of Mnih et
al. 2015.

The convolutional ones are channels-last ``Sequential`` models built from
:class:`~fastnn.layers.Conv2D`, :class:`~fastnn.layers.MaxPool2D`, :class:`~fastnn.layers.Flatten`
and :class:`~fastnn.layers.Dense`.
"""
from __future__ import annotations

from collections.abc import Sequence

from numpy.typing import DTypeLike

from . import _validation as V
from .layers import Activation, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D
from .losses import MeanSquaredError
from .model import Sequential
from .optimizers import Adam


def mlp(sizes: Sequence[int] = (784, 256, 128, 10), activation: str | None = "relu",
        dtype: DTypeLike = "float32", seed: int | None = None) -> Sequential:
    """A multilayer perceptron: ``Dense(sizes[i], sizes[i+1])`` with ``activation`` after every
    layer but the last (logits out). The default is the command line's Fashion-MNIST MLP
    784-256-128-10 with ReLU (235,146 parameters).

    Parameters
    ----------
    sizes : sequence of int, default=(784, 256, 128, 10)
        Input size, hidden sizes, output size; at least two entries, each ``>= 1``.
    activation : str, default="relu"
    dtype : {"float32", "float64"}, default="float32"
    seed : int or None, default=None
        Seed of the initial weights.

    Returns
    -------
    Sequential
        Not compiled.

    Shape
    -----
    - Input: ``(N, sizes[0])``; Output: ``(N, sizes[-1])`` logits.

    Raises
    ------
    ValueError
        Fewer than two sizes, or a bad size or activation.
    """
    sizes = [V.check_int(s, f"sizes[{i}]", minimum=1) for i, s in enumerate(sizes)]
    if len(sizes) < 2:
        raise ValueError(f"sizes needs an input and an output size, got {sizes}")
    last = len(sizes) - 2
    layers = [Dense(a, b, activation=None if i == last else activation)
              for i, (a, b) in enumerate(zip(sizes, sizes[1:]))]
    return Sequential(layers, dtype=dtype, seed=seed)


def small_cnn(dtype: DTypeLike = "float32", seed: int | None = None) -> Sequential:
    """A small CNN for 28x28 grey images (Fashion-MNIST), 10 classes, logits out.

    ``Conv2D(1, 32, 3, padding=1, relu) -> MaxPool2D(2) -> Conv2D(32, 64, 3, stride=2, padding=1,
    relu) -> Flatten -> Dense(3136, 128, relu) -> Dense(128, 10)``; 421,642 parameters.

    Parameters
    ----------
    dtype : {"float32", "float64"}, default="float32"
    seed : int or None, default=None
        Seed of the initial weights.

    Returns
    -------
    Sequential
        Not compiled: use e.g. ``model.compile(Adam(1e-3), SoftmaxCrossEntropy())``.

    Shape
    -----
    - Input: ``(N, 28, 28, 1)`` (channels-last; ``load_fashion_mnist(flatten=False)``).
    - Output: ``(N, 10)`` logits.
    """
    layers = [
        Conv2D(1, 32, 3, padding=1, activation="relu"),    # 28x28x32
        MaxPool2D(2),                                       # 14x14x32
        Conv2D(32, 64, 3, stride=2, padding=1, activation="relu"),  # 7x7x64
        Flatten(),                                          # 3136
        Dense(7 * 7 * 64, 128, activation="relu"),
        Dense(128, 10),
    ]
    return Sequential(layers, dtype=dtype, seed=seed, input_shape=(28, 28, 1))


def cnn_bn(dtype: DTypeLike = "float32", seed: int | None = None) -> Sequential:
    """A CNN with batch normalisation and dropout for 28x28 grey images (Fashion-MNIST), 10
    classes, logits out (``python -m fastnn train --model cnn-bn``).

    ``Conv2D(1, 32, 3, padding=1) -> BatchNorm -> relu -> MaxPool2D(2)`` (14x14x32),
    ``Conv2D(32, 64, 3, padding=1) -> BatchNorm -> relu``,
    ``Conv2D(64, 64, 3, padding=1) -> BatchNorm -> relu -> MaxPool2D(2)`` (7x7x64),
    ``Dropout(0.25) -> Flatten -> Dense(3136, 256) -> BatchNorm -> relu -> Dropout(0.5) ->
    Dense(256, 10)``; the layers before a BatchNorm have no activation (it follows the
    normalisation, as in Ioffe & Szegedy). 862,218 trainable parameters and 832 running
    statistics.

    Parameters
    ----------
    dtype : {"float32", "float64"}, default="float32"
    seed : int or None, default=None
        Seed of the initial weights and of the dropout masks.

    Returns
    -------
    Sequential
        Not compiled: use e.g. ``model.compile(Adam(1e-3), SoftmaxCrossEntropy())``.

    Shape
    -----
    - Input: ``(N, 28, 28, 1)`` (channels-last; ``load_fashion_mnist(flatten=False)``).
    - Output: ``(N, 10)`` logits.

    References
    ----------
    Ioffe & Szegedy, "Batch Normalization", ICML 2015; Srivastava et al., "Dropout", JMLR 2014.
    """
    layers = [
        Conv2D(1, 32, 3, padding=1), BatchNorm(32), Activation("relu"),     # 28x28x32
        MaxPool2D(2),                                                       # 14x14x32
        Conv2D(32, 64, 3, padding=1), BatchNorm(64), Activation("relu"),    # 14x14x64
        Conv2D(64, 64, 3, padding=1), BatchNorm(64), Activation("relu"),
        MaxPool2D(2),                                                       # 7x7x64
        Dropout(0.25),
        Flatten(),                                                          # 3136
        Dense(7 * 7 * 64, 256), BatchNorm(256), Activation("relu"),
        Dropout(0.5),
        Dense(256, 10),
    ]
    return Sequential(layers, dtype=dtype, seed=seed, input_shape=(28, 28, 1))


def dqn(n_actions: int, dtype: DTypeLike = "float32", seed: int | None = None,
        learning_rate: float = 1e-4) -> Sequential:
    """The deep Q-network of Mnih et al. 2015: 84x84x4 frames in, one Q-value per action out.

    ``Conv2D(4, 32, 8, stride=4) -> Conv2D(32, 64, 4, stride=2) -> Conv2D(64, 64, 3, stride=1)
    -> Flatten -> Dense(3136, 512) -> Dense(512, n_actions)``, ReLU after every layer but the
    last; 1,684,128 + 513 n_actions parameters. Compiled with the mean squared error and Adam.

    Parameters
    ----------
    n_actions : int
        Number of actions (outputs), ``>= 1``.
    dtype : {"float32", "float64"}, default="float32"
    seed : int or None, default=None
        Seed of the initial weights.
    learning_rate : float, default=1e-4
        Adam's learning rate (call ``compile`` again for another optimizer or loss).

    Returns
    -------
    Sequential
        Compiled with ``Adam(learning_rate)`` and ``MeanSquaredError()``.

    Shape
    -----
    - Input: ``(N, 84, 84, 4)``: four stacked 84x84 frames, channels-last.
    - Output: ``(N, n_actions)`` Q-values.

    Raises
    ------
    ValueError, TypeError
        If ``n_actions`` is not an int ``>= 1``.

    References
    ----------
    Mnih et al., "Human-level control through deep reinforcement learning", Nature 518, 2015
    (Methods, "Model architecture").
    """
    n_actions = V.check_int(n_actions, "n_actions", minimum=1)
    layers = [
        Conv2D(4, 32, 8, stride=4, activation="relu"),     # 20x20x32
        Conv2D(32, 64, 4, stride=2, activation="relu"),    # 9x9x64
        Conv2D(64, 64, 3, stride=1, activation="relu"),    # 7x7x64
        Flatten(),                                         # 3136
        Dense(7 * 7 * 64, 512, activation="relu"),
        Dense(512, n_actions),
    ]
    model = Sequential(layers, dtype=dtype, seed=seed, input_shape=(84, 84, 4))
    return model.compile(optimizer=Adam(learning_rate=learning_rate), loss=MeanSquaredError())
