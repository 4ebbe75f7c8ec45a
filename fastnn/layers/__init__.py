"""fastnn layers. ``LAYERS`` maps class names to classes (used by ``fastnn.load``)."""
from .activation import Activation
from .base import Layer
from .dense import Dense

LAYERS = {"Dense": Dense, "Activation": Activation}

from .conv import Conv2D  # noqa: E402
from .flatten import Flatten  # noqa: E402
from .pooling import AvgPool2D, MaxPool2D  # noqa: E402

LAYERS.update({"Conv2D": Conv2D, "MaxPool2D": MaxPool2D, "AvgPool2D": AvgPool2D,
               "Flatten": Flatten})

__all__ = ["Layer", "Dense", "Activation"] + [k for k in LAYERS if k not in ("Dense", "Activation")]
