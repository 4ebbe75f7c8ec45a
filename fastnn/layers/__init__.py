"""fastnn layers. ``LAYERS`` maps class names to classes (every Layer subclass registers itself
there when it is defined; ``fastnn.load`` rebuilds layers through it)."""
from .activation import Activation
from .base import LAYERS, Layer, ParamDict, ParamLayer
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .flatten import Flatten
from .normalization import BatchNorm, LayerNorm
from .pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D

__all__ = ["LAYERS", "Layer", "ParamLayer", "ParamDict", "Dense", "Activation", "Conv2D",
           "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "Flatten", "Dropout", "BatchNorm",
           "LayerNorm"]
