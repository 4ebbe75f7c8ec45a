"""Experience replay that stores each observation frame once (Mnih et al. 2015's replay memory, the
memory layout of Stable-Baselines3's ``optimize_memory_usage`` and of DeepMind's/Dopamine's
circular buffers).

A transition ``t`` is kept as the newest frame of its observation, the action, the reward, the
``done`` flag of the TD target and a ``first`` flag (the observation starts a new frame stack).
The next observation of ``t`` is the observation of ``t + 1``, and a stack of ``S`` frames is
rebuilt from the ``S - 1`` slots before it (repeating an episode's first frame before the start),
so a 1M-transition Atari buffer takes 1M x 84 x 84 bytes (6.6 GiB) instead of 2 x 4 x that.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .. import _rl
from .. import _validation as V
from .._config import get_num_threads

#: most frames per stack (the kernel's limit)
MAX_STACK = 64


class ReplayBuffer:
    """Circular replay buffer of transitions with frame stacks rebuilt by index.

    Parameters
    ----------
    capacity : int
        Transitions kept, ``>= stack + 1``; the oldest are overwritten.
    frame_shape : tuple of int
        Shape of one stored frame: ``(H, W)`` uint8 frames (Atari), stacked into ``(H, W, S)``
        channels-last observations; or any shape with ``stack=1`` (e.g. ``(4,)`` for CartPole).
    stack : int, default=1
        Frames per observation ``S`` (4 for Atari), ``1 <= S <= 64``; ``S > 1`` needs 2-D uint8
        frames.
    frame_dtype : {"uint8", "float32", "float64"}, default="uint8"
    seed : int or None, default=None
        Seed of the generator that samples the batches (uniformly, with replacement).

    Attributes
    ----------
    size : int
        Transitions that can be sampled now (those whose next observation is stored and whose
        stack has not been overwritten).
    pos : int
        Slot of the next ``add``.
    added : int
        Transitions added in total.

    Shape
    -----
    - ``sample`` returns ``obs`` and ``next_obs`` of ``(B, H, W, S)`` (``S > 1`` or 2-D uint8
      frames) or ``(B, *frame_shape)`` (``S == 1``), in the requested float dtype, uint8 frames
      times ``scale``; ``actions`` (B,) int64; ``rewards`` and ``dones`` (B,) in that dtype;
      ``index`` (B,) int64, the slots sampled.

    Raises
    ------
    ValueError, TypeError
        Bad sizes, dtypes or shapes (of the constructor arguments, or of ``add``'s frame).

    Notes
    -----
    The last transition before a ``first`` observation must be stored with ``done=True`` (its
    next observation is the next episode's first one). A time-limit truncation is therefore
    stored as terminal (as in Mnih et al.'s code; CleanRL bootstraps it instead).
    """

    def __init__(self, capacity: int, frame_shape: tuple[int, ...] | list[int], stack: int = 1,
                 frame_dtype: DTypeLike = "uint8", seed: int | None = None) -> None:
        self.stack = V.check_int(stack, "stack", minimum=1, maximum=MAX_STACK)
        self.capacity = V.check_int(capacity, "capacity", minimum=self.stack + 1)
        self.frame_shape = tuple(V.check_int(s, f"frame_shape[{i}]", minimum=1)
                                 for i, s in enumerate(frame_shape))
        dt = np.dtype(frame_dtype)
        if dt not in (np.dtype(np.uint8), np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"frame_dtype must be uint8, float32 or float64, got {dt}")
        self.frame_dtype = dt
        self._stacked = dt == np.uint8 and len(self.frame_shape) == 2
        if self.stack > 1 and not self._stacked:
            raise ValueError(f"stack > 1 needs 2-D uint8 frames (H, W), got frame_shape "
                             f"{self.frame_shape} of {dt}")
        self.frames = np.zeros((self.capacity,) + self.frame_shape, dtype=dt)
        self.first = np.zeros(self.capacity, dtype=np.uint8)
        self.actions = np.zeros(self.capacity, dtype=np.int64)
        self.rewards = np.zeros(self.capacity, dtype=np.float32)
        self.dones = np.zeros(self.capacity, dtype=np.uint8)
        self.pos = 0
        self.added = 0
        self.rng = np.random.default_rng(seed)

    @property
    def full(self) -> bool:
        return self.added >= self.capacity

    @property
    def size(self) -> int:
        if self.full:
            return self.capacity - self.stack
        return max(0, self.pos - 1)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """Shape of one observation as sampled: ``(H, W, S)`` or ``frame_shape``."""
        return self.frame_shape + (self.stack,) if self._stacked else self.frame_shape

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.frames, self.first, self.actions, self.rewards,
                                      self.dones))

    def add(self, frame: ArrayLike, action: int, reward: float, done: bool,
            first: bool) -> None:
        """Store one transition: ``frame`` the newest frame of the observation the action was
        taken in, ``first`` whether that observation starts a new stack (episode), ``done``
        whether the TD target stops after this transition.

        Raises
        ------
        ValueError
            A frame of the wrong shape, or a first transition that is not ``first``.
        """
        f = np.asarray(frame)
        if f.shape != self.frame_shape:
            raise ValueError(f"frame must have shape {self.frame_shape}, got {f.shape}")
        if self.added == 0 and not first:
            raise ValueError("the first transition added must have first=True")
        p = self.pos
        np.copyto(self.frames[p], f, casting="unsafe" if self._stacked else "same_kind")
        self.first[p] = bool(first)
        self.actions[p] = int(action)
        self.rewards[p] = reward
        self.dones[p] = bool(done)
        self.pos = (p + 1) % self.capacity
        self.added += 1

    def _slots(self, k: np.ndarray) -> np.ndarray:
        """Slot of the k-th sampleable transition (0 = the oldest)."""
        if self.full:
            return (self.pos + self.stack - 1 + k) % self.capacity
        return k

    def observations(self, index: np.ndarray, out: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """The observations of slots ``index`` (int64, valid slots) written to ``out``."""
        if self._stacked:
            _rl.gather_stacks(self.frames, self.first, index, out, scale, get_num_threads())
        else:
            np.multiply(self.frames[index], scale, out=out, casting="unsafe")
        return out

    def sample(self, batch_size: int, dtype: DTypeLike = "float32",
               scale: float | None = None) -> dict[str, np.ndarray]:
        """A uniform batch (with replacement) from the seeded generator.

        Parameters
        ----------
        batch_size : int
            ``B >= 1``.
        dtype : {"float32", "float64"}, default="float32"
            Dtype of the observations, rewards and dones.
        scale : float, optional
            Factor of the observations; default ``1/255`` for uint8 frames, else 1.

        Returns
        -------
        dict with ``obs``, ``actions``, ``rewards``, ``next_obs``, ``dones``, ``index``
            See the class's Shape section.

        Raises
        ------
        ValueError
            If fewer than one transition can be sampled yet.
        """
        batch_size = V.check_int(batch_size, "batch_size", minimum=1)
        dt = V.check_dtype(dtype)
        if scale is None:
            scale = 1.0 / 255.0 if self.frame_dtype == np.uint8 else 1.0
        scale = V.check_float(scale, "scale")
        if self.size < 1:
            raise ValueError(f"the buffer has no transition to sample yet (added {self.added}; "
                             f"a transition needs its next observation)")
        index = np.ascontiguousarray(self._slots(self.rng.integers(0, self.size,
                                                                   size=batch_size)),
                                     dtype=np.int64)
        nxt = (index + 1) % self.capacity
        shape = (batch_size,) + self.obs_shape
        obs = self.observations(index, np.empty(shape, dt), scale)
        next_obs = self.observations(nxt, np.empty(shape, dt), scale)
        return {"obs": obs, "actions": self.actions[index],
                "rewards": self.rewards[index].astype(dt),
                "next_obs": next_obs, "dones": self.dones[index].astype(dt), "index": index}

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``(arrays, meta)``: the stored arrays and the JSON-serialisable rest (position,
        counts, generator state)."""
        arrays = {"frames": self.frames, "first": self.first, "actions": self.actions,
                  "rewards": self.rewards, "dones": self.dones}
        meta = {"capacity": self.capacity, "frame_shape": list(self.frame_shape),
                "stack": self.stack, "frame_dtype": str(self.frame_dtype), "pos": self.pos,
                "added": self.added, "rng": self.rng.bit_generator.state}
        return arrays, meta

    def load_state_dict(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` gave.

        Raises
        ------
        ValueError
            If the capacity, frame shape, stack or dtype differ from this buffer's.
        """
        mine = {"capacity": self.capacity, "frame_shape": list(self.frame_shape),
                "stack": self.stack, "frame_dtype": str(self.frame_dtype)}
        theirs = {k: meta.get(k) for k in mine}
        if mine != theirs:
            raise ValueError(f"the saved replay buffer has {theirs}, this one {mine}")
        for name in ("frames", "first", "actions", "rewards", "dones"):
            target = getattr(self, name)
            a = np.asarray(arrays[name])
            if a.shape != target.shape or a.dtype != target.dtype:
                raise ValueError(f"saved replay array {name!r} is {a.shape} {a.dtype}, "
                                 f"expected {target.shape} {target.dtype}")
            np.copyto(target, a)
        pos, added = int(meta["pos"]), int(meta["added"])
        if not (0 <= pos < self.capacity and added >= 0
                and (added >= self.capacity or pos == added)):
            raise ValueError(f"saved replay position {pos} / count {added} is inconsistent")
        self.pos, self.added = pos, added
        self.rng.bit_generator.state = meta["rng"]
