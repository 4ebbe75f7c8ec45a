"""fastnn layers. ``LAYERS`` maps class names to classes (used by ``fastnn.load``)."""
from .activation import Activation
from .base import Layer
from .dense import Dense

LAYERS = {"Dense": Dense, "Activation": Activation}

try:  # the convolution family lives in its own module
    from .conv import Conv2D  # noqa: F401
    from .pooling import AvgPool2D, MaxPool2D  # noqa: F401
    from .flatten import Flatten  # noqa: F401

    LAYERS.update({"Conv2D": Conv2D, "MaxPool2D": MaxPool2D, "AvgPool2D": AvgPool2D,
                   "Flatten": Flatten})
except ImportError:  # pragma: no cover - while the conv layers are being written
    pass

__all__ = ["Layer", "Dense", "Activation"] + [k for k in LAYERS if k not in ("Dense", "Activation")]
