"""One flat buffer behind many arrays: the parameters of a model, their gradients, each optimizer
slot. An optimizer then updates the whole model with one kernel call (one parallel region).

Each array becomes a C-contiguous view of a slice of the buffer; slices start on 64-byte
boundaries, and the padding between them stays 0 (the updates map 0 to 0).
"""
import numpy as np

ALIGN_BYTES = 64


def _layout(shapes, itemsize):
    """Element offsets of arrays of ``shapes`` packed with 64-byte aligned starts, and the total."""
    step = max(1, ALIGN_BYTES // itemsize)
    offsets, total = [], 0
    for shape in shapes:
        offsets.append(total)
        size = int(np.prod(shape, dtype=np.int64))
        total += -(-size // step) * step
    return offsets, total


def empty_like_layout(shapes, dtype):
    """A zeroed, 64-byte aligned 1-D buffer and its C-contiguous views of ``shapes``."""
    dtype = np.dtype(dtype)
    offsets, total = _layout(shapes, dtype.itemsize)
    raw = np.zeros(total * dtype.itemsize + ALIGN_BYTES, dtype=np.uint8)
    start = (-raw.ctypes.data) % ALIGN_BYTES
    flat = raw[start:start + total * dtype.itemsize].view(dtype)
    views = [flat[o:o + int(np.prod(s, dtype=np.int64))].reshape(s)
             for o, s in zip(offsets, shapes)]
    return flat, views


def pack(arrays, dtype):
    """Copy ``arrays`` into one new flat buffer; returns ``(flat, views)``, ``views[i]`` holding
    the values of ``arrays[i]`` with its shape."""
    flat, views = empty_like_layout([a.shape for a in arrays], dtype)
    for v, a in zip(views, arrays):
        np.copyto(v, a, casting="same_kind")
    return flat, views


class ParamGroup:
    """The parameters of ``layers`` in one flat buffer and their gradients in another.

    Building it rebinds every ``layer.params[name]`` and ``layer.grads[name]`` to a view of the
    buffers (values kept). :meth:`matches` tells whether that still holds (a user may have
    replaced an array), in which case a new group must be built.

    Attributes
    ----------
    params, grads : 1-D ndarray
        The flat buffers, of the parameters' dtype.
    entries : list of (layer, name, param view, grad view)
        In layer order, then the order of each layer's ``params``.

    Raises
    ------
    TypeError
        If the parameters do not share one dtype.
    ValueError
        If a gradient does not have its parameter's shape.
    """

    def __init__(self, layers):
        self.layers = tuple(layers)
        names = [(layer, name) for layer in self.layers for name in layer.params]
        params = [layer.params[name] for layer, name in names]
        dtypes = {np.dtype(p.dtype) for p in params}
        if len(dtypes) > 1:
            raise TypeError(f"the parameters must share one dtype, got {sorted(map(str, dtypes))}")
        dtype = dtypes.pop() if dtypes else np.dtype(np.float32)
        grads = []
        for layer, name in names:
            g = layer.grads.get(name)
            if g is None:
                g = np.zeros_like(layer.params[name])
            if np.shape(g) != layer.params[name].shape:
                raise ValueError(f"{type(layer).__name__}: grad {name!r} has shape "
                                 f"{np.shape(g)}, its parameter {layer.params[name].shape}")
            grads.append(g)
        self.params, pviews = pack(params, dtype)
        self.grads, gviews = pack(grads, dtype)
        self._owners = (self.params.base, self.grads.base)  # the memory every view is of
        self.entries = []
        for (layer, name), pv, gv in zip(names, pviews, gviews):
            layer.params[name] = pv
            layer.grads[name] = gv
            self.entries.append((layer, name, pv, gv))
        for layer in self.layers:
            layer._param_group = self

    def matches(self, layers):
        """Whether ``layers`` are this group's layers and their arrays are still its views."""
        if len(layers) != len(self.layers):
            return False
        count = 0
        for a, b in zip(layers, self.layers):
            if a is not b:
                return False
            count += len(a.params)
        if count != len(self.entries):
            return False
        powner, gowner = self._owners
        for layer, name, pv, gv in self.entries:
            # identity, and views of our buffers (a deep copy keeps identities, not memory)
            if (layer.params.get(name) is not pv or layer.grads.get(name) is not gv
                    or pv.base is not powner or gv.base is not gowner):
                return False
        return True


def param_group(layers):
    """The :class:`ParamGroup` of ``layers``: the existing one if it still matches, else a new
    one (which copies the current values into new flat buffers)."""
    group = getattr(layers[0], "_param_group", None) if len(layers) else None
    if group is not None and group.matches(layers):
        return group
    return ParamGroup(layers)
