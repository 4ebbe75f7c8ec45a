"""The DQN agent (Mnih et al. 2015; the loop of CleanRL's ``dqn_atari.py``), on fastnn models."""
from __future__ import annotations

import copy
import json
import os
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike

from .. import _rl
from .. import _validation as V
from .._config import get_num_threads
from ..io import load as load_model
from ..model import Sequential
from .replay import ReplayBuffer

#: checkpoint format of :meth:`DQN.save`
CHECKPOINT_FORMAT = "fastnn-dqn"
CHECKPOINT_VERSION = 1


class Env(Protocol):
    """What :class:`DQN` needs of an environment (see :mod:`fastnn.rl.envs`)."""

    n_actions: int
    frame: np.ndarray
    game_over: bool
    truncated: bool
    episode_return: float
    episode_length: int

    @property
    def frame_shape(self) -> tuple[int, ...]: ...
    @property
    def obs_shape(self) -> tuple[int, ...]: ...
    def reset(self) -> None: ...
    def step(self, action: int) -> tuple[float, bool, bool]: ...
    def observation(self, out: np.ndarray | None = None, scale: float = ...,
                    dtype: Any = ...) -> np.ndarray: ...
    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]: ...
    def set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None: ...


def td_huber_loss(q: ArrayLike, q_next: ArrayLike, actions: ArrayLike, rewards: ArrayLike,
                  dones: ArrayLike, gamma: float = 0.99, delta: float = 1.0,
                  q_next_online: ArrayLike | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """The DQN loss and its gradient in one fused pass: TD target, gather of the chosen action's
    Q value, Huber loss, scatter of the gradient.

    ``y_i = r_i + gamma (1 - d_i) max_a q_next[i, a]`` (with ``q_next_online``, double DQN:
    ``y_i = r_i + gamma (1 - d_i) q_next[i, argmax_a q_next_online[i, a]]``, van Hasselt et al.
    2016); ``loss = mean_i huber(q[i, actions[i]] - y_i)`` with ``huber(x) = x^2 / 2`` for
    ``|x| <= delta``, else ``delta (|x| - delta / 2)`` (PyTorch's ``HuberLoss(delta)``,
    ``smooth_l1_loss`` at ``delta=1``; Mnih et al. 2015's error clipping).

    Parameters
    ----------
    q : array_like (B, A), float32 or float64
        Online network's Q values of the observations.
    q_next : array_like (B, A), same dtype
        Target network's Q values of the next observations.
    actions : array_like (B,), int
        Actions taken, in ``[0, A)``.
    rewards, dones : array_like (B,)
        Rewards; 1 where the TD target stops (terminal), else 0.
    gamma : float, default=0.99
        Discount, in ``[0, 1]``.
    delta : float, default=1.0
        Huber threshold, ``> 0``.
    q_next_online : array_like (B, A), optional
        Online network's Q values of the next observations (double DQN).

    Returns
    -------
    loss : float
    grad : ndarray (B, A)
        ``d loss / d q``: ``clip(q[i, a_i] - y_i, -delta, delta) / B`` at ``(i, a_i)``, else 0.
    target : ndarray (B,)
        ``y``.

    Raises
    ------
    ValueError, TypeError
        Shapes that disagree, actions out of range, a float dtype that is neither float32 nor
        float64, NaN or inf, a bad ``gamma`` or ``delta``.
    """
    qa = V.as_float_array(q, "q", np.asarray(q).dtype if np.asarray(q).dtype in V.FLOAT_DTYPES
                          else np.float32, ndim=2)
    dt = qa.dtype
    B, A = qa.shape
    qn = _matching(q_next, "q_next", dt, (B, A))
    qo = qn if q_next_online is None else _matching(q_next_online, "q_next_online", dt, (B, A))
    acts = _actions(actions, B, A)
    r = _matching(rewards, "rewards", dt, (B,))
    d = _matching(dones, "dones", dt, (B,))
    gamma = V.check_float(gamma, "gamma", minimum=0.0, maximum=1.0)
    delta = V.check_float(delta, "delta", minimum=0.0, min_inclusive=False)
    grad = np.empty((B, A), dtype=dt)
    target = np.empty(B, dtype=dt)
    loss = _rl.td_huber(qa, qn, qo, acts, r, d, gamma, delta, q_next_online is not None, grad,
                        target)
    return float(loss), grad, target


def _matching(x: ArrayLike, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    a = V.as_float_array(x, name, dtype, ndim=len(shape))
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    return a


def _actions(actions: ArrayLike, B: int, A: int) -> np.ndarray:
    a = np.asarray(actions)
    if a.dtype.kind not in "iu":
        raise TypeError(f"actions must be integers, got dtype {a.dtype}")
    if a.shape != (B,):
        raise ValueError(f"actions must have shape ({B},), got {a.shape}")
    if a.size and (a.min() < 0 or a.max() >= A):
        raise ValueError(f"actions must be in [0, {A}), got values in [{a.min()}, {a.max()}]")
    return np.ascontiguousarray(a, dtype=np.int64)


def polyak_update(target: Sequential, online: Sequential, tau: float) -> None:
    """``target <- (1 - tau) target + tau online`` over the flat parameter buffers, one fused
    call (``tau=1``: a copy). As Stable-Baselines3's ``polyak_update`` / CleanRL's soft update.

    Raises
    ------
    ValueError
        If the models' parameter layouts differ or ``tau`` is not in ``(0, 1]``.
    """
    tau = V.check_float(tau, "tau", minimum=0.0, maximum=1.0, min_inclusive=False)
    t, o = target._params.params, online._params.params
    if t.shape != o.shape or t.dtype != o.dtype:
        raise ValueError(f"target and online networks differ: {t.shape} {t.dtype} vs "
                         f"{o.shape} {o.dtype} parameters")
    if tau == 1.0:
        np.copyto(t, o)
    else:
        _rl.polyak_update(t, o, tau, get_num_threads())


class DQN:
    """Deep Q-learning with experience replay and a target network (Mnih et al. 2015), the loop
    of CleanRL's ``dqn_atari.py``.

    Each :meth:`step` acts once (epsilon-greedy with epsilon linear from ``start_e`` to
    ``end_e`` over ``exploration_fraction * total_steps`` steps), stores the transition; after
    ``learning_starts`` steps it trains every ``train_frequency`` steps on a batch of
    ``batch_size`` (Huber loss on the taken action's Q value, the model's optimizer, its
    clipping) and updates the target network every ``target_update_interval`` steps (copy, or
    Polyak averaging with ``tau < 1``).

    Parameters
    ----------
    model : Sequential
        The online network, compiled (its optimizer is used; its loss is not: the loss is the
        fused Huber TD loss). Output ``(N, n_actions)``.
    env : Env
        See :mod:`fastnn.rl.envs`.
    total_steps : int
        Planned environment steps (sets the exploration schedule).
    buffer_size : int, default=1_000_000
    learning_starts : int, default=80_000
    batch_size : int, default=32
    gamma : float, default=0.99
    train_frequency : int, default=4
    target_update_interval : int, default=1000
    tau : float, default=1.0
    start_e, end_e : float, default=1.0, 0.01
    exploration_fraction : float, default=0.10
    double_dqn : bool, default=False
        Double DQN targets (van Hasselt et al. 2016).
    huber_delta : float, default=1.0
    seed : int, default=0
        Seeds the exploration and the replay sampling.

    Attributes
    ----------
    target : Sequential
        The target network (a copy of ``model``).
    buffer : ReplayBuffer
    steps, updates : int
        Environment steps and training steps so far.
    episodes : list of (step, return, length)
        Finished games (raw score).
    last_loss : float or None

    Raises
    ------
    ValueError, TypeError
        Bad parameters, an uncompiled model, or a model whose input/output does not fit ``env``.
    """

    def __init__(self, model: Sequential, env: Env, total_steps: int,
                 buffer_size: int = 1_000_000, learning_starts: int = 80_000,
                 batch_size: int = 32, gamma: float = 0.99, train_frequency: int = 4,
                 target_update_interval: int = 1000, tau: float = 1.0, start_e: float = 1.0,
                 end_e: float = 0.01, exploration_fraction: float = 0.10,
                 double_dqn: bool = False, huber_delta: float = 1.0, seed: int = 0) -> None:
        if not isinstance(model, Sequential):
            raise TypeError(f"model must be a fastnn Sequential, got {type(model).__name__}")
        if model.optimizer is None:
            raise ValueError("model must be compiled (DQN uses its optimizer)")
        self.model = model
        self.env = env
        self.total_steps = V.check_int(total_steps, "total_steps", minimum=1)
        self.learning_starts = V.check_int(learning_starts, "learning_starts", minimum=0)
        self.batch_size = V.check_int(batch_size, "batch_size", minimum=1)
        self.gamma = V.check_float(gamma, "gamma", minimum=0.0, maximum=1.0)
        self.train_frequency = V.check_int(train_frequency, "train_frequency", minimum=1)
        self.target_update_interval = V.check_int(target_update_interval,
                                                  "target_update_interval", minimum=1)
        self.tau = V.check_float(tau, "tau", minimum=0.0, maximum=1.0, min_inclusive=False)
        self.start_e = V.check_float(start_e, "start_e", minimum=0.0, maximum=1.0)
        self.end_e = V.check_float(end_e, "end_e", minimum=0.0, maximum=1.0)
        self.exploration_fraction = V.check_float(exploration_fraction, "exploration_fraction",
                                                  minimum=0.0, maximum=1.0)
        self.double_dqn = bool(double_dqn)
        self.huber_delta = V.check_float(huber_delta, "huber_delta", minimum=0.0,
                                         min_inclusive=False)
        self.seed = V.check_int(seed, "seed", minimum=0)
        self.n_actions = int(env.n_actions)
        self.dtype = model.dtype
        obs_shape = tuple(env.obs_shape)
        out = model.output_shape(obs_shape)
        if out != (self.n_actions,):
            raise ValueError(f"the model maps {obs_shape} to {out}; the env needs "
                             f"({self.n_actions},) Q values")
        frame_dtype = np.uint8 if env.frame.dtype == np.uint8 else np.float32
        stack = obs_shape[-1] if frame_dtype == np.uint8 else 1
        self.scale = 1.0 / 255.0 if frame_dtype == np.uint8 else 1.0
        self.buffer = ReplayBuffer(V.check_int(buffer_size, "buffer_size", minimum=stack + 1),
                                   env.frame_shape, stack=stack, frame_dtype=frame_dtype,
                                   seed=self.seed + 1)
        self.target = copy.deepcopy(model)
        self.target.optimizer = None
        self.rng = np.random.default_rng(self.seed)
        self.steps = 0
        self.updates = 0
        self.episodes: list[tuple[int, float, int]] = []
        self.last_loss: float | None = None
        self._first = True
        self._obs = np.empty((1,) + obs_shape, dtype=self.dtype)
        self._frame = np.empty_like(env.frame)

    # -- acting -----------------------------------------------------------------------------------
    def epsilon(self, step: int | None = None) -> float:
        """Exploration rate at ``step`` (default: now): linear from ``start_e`` to ``end_e``
        over ``exploration_fraction * total_steps`` steps, then ``end_e``."""
        step = self.steps if step is None else step
        duration = self.exploration_fraction * self.total_steps
        if duration <= 0:
            return self.end_e
        slope = (self.end_e - self.start_e) / duration
        return max(slope * step + self.start_e, self.end_e)

    def greedy_action(self, obs: np.ndarray) -> int:
        """``argmax_a Q(obs, a)`` of the online network for one observation ``(1, *obs_shape)``
        in the model's dtype (not checked: the agent's own buffer)."""
        q = self.model._forward(obs, training=False)
        return int(np.argmax(q[0]))

    def act(self, epsilon: float) -> int:
        """Epsilon-greedy action in the env's current observation."""
        if self.rng.random() < epsilon:
            return int(self.rng.integers(self.n_actions))
        return self.greedy_action(self.env.observation(self._obs, self.scale))

    # -- learning ---------------------------------------------------------------------------------
    def step(self) -> tuple[float, int] | None:
        """One environment step (and a training step and a target update when due). Returns
        ``(return, length)`` of a game that just ended, else None."""
        env = self.env
        if env.game_over or env.truncated:
            env.reset()
            self._first = True
        action = self.act(self.epsilon())
        np.copyto(self._frame, env.frame)
        reward, terminated, truncated = env.step(action)
        done = terminated or truncated
        self.buffer.add(self._frame, action, reward, done, self._first)
        self.steps += 1
        self._first = False
        ended = None
        if env.game_over or env.truncated:
            ended = (float(env.episode_return), int(env.episode_length))
            self.episodes.append((self.steps, ended[0], ended[1]))
        elif done:  # a life lost: a new stack, FIRE; the game goes on
            env.reset()
            self._first = True
        if self.steps > self.learning_starts:
            if self.steps % self.train_frequency == 0 and self.buffer.size > 0:
                self.last_loss = self.train_step()
            if self.steps % self.target_update_interval == 0:
                polyak_update(self.target, self.model, self.tau)
        return ended

    def train_step(self) -> float:
        """One gradient step on a sampled batch; returns the loss."""
        batch = self.buffer.sample(self.batch_size, self.dtype, self.scale)
        q_next = self.target._forward(batch["next_obs"], training=False)
        q_next_online = None
        if self.double_dqn:
            q_next_online = self.model._forward(batch["next_obs"], training=False).copy()
        q = self.model._forward(batch["obs"], training=True)
        B, A = q.shape
        grad = np.empty((B, A), dtype=self.dtype)
        target = np.empty(B, dtype=self.dtype)
        loss = _rl.td_huber(q, q_next, q_next if q_next_online is None else q_next_online,
                            batch["actions"], batch["rewards"], batch["dones"], self.gamma,
                            self.huber_delta, self.double_dqn, grad, target)
        self.model.backward(grad)
        assert self.model.optimizer is not None
        self.model.optimizer.step(self.model.layers)
        self.updates += 1
        return float(loss)

    def evaluate(self, env: Env, episodes: int = 10, epsilon: float = 0.0,
                 max_steps: int = 108_000) -> list[float]:
        """Returns of ``episodes`` games played on ``env`` (a separate environment) with
        epsilon-greedy actions (greedy by default; Mnih et al. evaluate with 0.05), each cut at
        ``max_steps`` agent steps."""
        episodes = V.check_int(episodes, "episodes", minimum=1)
        scale = self.scale
        obs = np.empty_like(self._obs)
        returns = []
        rng = np.random.default_rng(self.seed + 2)
        for _ in range(episodes):
            env.game_over = True
            env.reset()
            for _ in range(max_steps):
                if epsilon > 0 and rng.random() < epsilon:
                    a = int(rng.integers(self.n_actions))
                else:
                    a = self.greedy_action(env.observation(obs, scale))
                _, terminated, truncated = env.step(a)
                if env.game_over or env.truncated:
                    break
                if terminated:
                    env.reset()
            returns.append(float(env.episode_return))
        return returns

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a checkpoint folder ``path``: ``online.npz`` (the model with its optimizer, a
        fastnn model file) and ``agent.npz`` (target parameters, replay buffer, environment and
        generator states, counters; no pickles)."""
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        self.model.save(os.path.join(path, "online.npz"))
        buf_arrays, buf_meta = self.buffer.state_dict()
        env_arrays, env_meta = self.env.get_state()
        meta = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "steps": self.steps, "updates": self.updates, "episodes": self.episodes,
                "last_loss": self.last_loss, "first": self._first,
                "rng": self.rng.bit_generator.state, "buffer": buf_meta, "env": env_meta,
                "config": self.config()}
        arrays: dict[str, Any] = {"__meta__": np.array(json.dumps(meta)),
                                  "target": self.target._params.params}
        arrays.update({f"buffer/{k}": v for k, v in buf_arrays.items()})
        arrays.update({f"env/{k}": v for k, v in env_arrays.items()})
        tmp = os.path.join(path, "agent.npz.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, os.path.join(path, "agent.npz"))

    def config(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "total_steps", "learning_starts", "batch_size", "gamma", "train_frequency",
            "target_update_interval", "tau", "start_e", "end_e", "exploration_fraction",
            "double_dqn", "huber_delta", "seed")} | {"buffer_size": self.buffer.capacity}

    @classmethod
    def load(cls, path: str | os.PathLike[str], env: Env,
             total_steps: int | None = None) -> DQN:
        """Rebuild the agent saved by :meth:`save` around ``env`` (built as the saved one was),
        restoring the environment's state, so that training continues exactly as it would have.
        ``total_steps`` replaces the saved plan (the exploration schedule stretches with it).

        Raises
        ------
        ValueError
            Not a DQN checkpoint, or one that does not fit ``env``.
        OSError
            Missing files.
        """
        path = os.fspath(path)
        model = load_model(os.path.join(path, "online.npz"))
        if not isinstance(model, Sequential):
            raise ValueError(f"{path}: online.npz is not a Sequential model")
        with np.load(os.path.join(path, "agent.npz"), allow_pickle=False) as z:
            meta = json.loads(str(z["__meta__"]))
            arrays = {k: z[k] for k in z.files if k != "__meta__"}
        if meta.get("format") != CHECKPOINT_FORMAT or meta.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{path}: not a fastnn DQN checkpoint (version "
                             f"{CHECKPOINT_VERSION})")
        cfg = dict(meta["config"])
        if total_steps is not None:
            cfg["total_steps"] = total_steps
        agent = cls(model, env, **cfg)
        target = arrays["target"]
        if target.shape != agent.target._params.params.shape:
            raise ValueError(f"{path}: the target network has {target.shape} parameters, the "
                             f"model {agent.target._params.params.shape}")
        np.copyto(agent.target._params.params, target)
        agent.buffer.load_state_dict({k[7:]: v for k, v in arrays.items()
                                      if k.startswith("buffer/")}, meta["buffer"])
        env.set_state({k[4:]: v for k, v in arrays.items() if k.startswith("env/")},
                      meta["env"])
        agent.steps, agent.updates = int(meta["steps"]), int(meta["updates"])
        agent.episodes = [(int(s), float(r), int(n)) for s, r, n in meta["episodes"]]
        agent.last_loss = meta["last_loss"]
        agent._first = bool(meta["first"])
        agent.rng.bit_generator.state = meta["rng"]
        return agent
