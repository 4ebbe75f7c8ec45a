"""Environments for the DQN: Atari games on the Arcade Learning Environment with the preprocessing
of Mnih et al. 2015 (as CleanRL's ``dqn_atari.py`` wraps it), and gymnasium's vector-observation
environments (CartPole-v1).

Both expose the small interface :class:`~fastnn.rl.DQN` uses: ``reset()``, ``step(action)``,
``frame`` (the newest frame, what the replay buffer stores), ``observation()`` (the agent's
input), ``game_over``, ``episode_return`` / ``episode_length`` (of the whole game, raw rewards),
and ``get_state()`` / ``set_state()`` for exact checkpoints.

The Atari environment drives ``ale_py.ALEInterface`` directly, one emulator frame at a time (so
its complete state, emulator random generator included, can be saved and restored) and does the
preprocessing in NumPy: gymnasium's ``AtariPreprocessing`` needs OpenCV, and ale-py's
``AtariVectorEnv`` cannot save its state; measured here they run at the same speed (the emulator
dominates).
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from .. import _rl
from .. import _validation as V


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(f"fastnn.rl needs {module}: pip install 'fastnn[rl]' "
                          f"(gymnasium and ale-py)") from None


def is_atari(env_id: str) -> bool:
    """Whether ``env_id`` names an ALE game (``"ALE/Breakout-v5"``, ``"Breakout"``...)."""
    return env_id.startswith("ALE/") or env_id.lower().endswith("noframeskip-v4")


def rom_id(env_id: str) -> str:
    """The ALE ROM id: ``"ALE/Breakout-v5"`` -> ``"breakout"``, ``"ALE/SpaceInvaders-v5"`` ->
    ``"space_invaders"``."""
    name = env_id.split("/")[-1]
    name = re.sub(r"(NoFrameskip)?-v\d+$", "", name)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def area_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Area interpolation from ``n_in`` to ``n_out`` pixels (OpenCV's INTER_AREA): output pixel
    ``i`` averages the input interval ``[i s, (i + 1) s)``, ``s = n_in / n_out``. Returns
    ``(index, weight)``, both ``(n_out, k)``: the input pixels and their weights (summing to 1;
    unused entries have weight 0)."""
    s = n_in / n_out
    rows: list[list[tuple[int, float]]] = []
    for i in range(n_out):
        lo, hi = i * s, (i + 1) * s
        rows.append([(j, (min(hi, j + 1) - max(lo, j)) / s)
                     for j in range(int(np.floor(lo)), min(n_in, int(np.ceil(hi))))
                     if min(hi, j + 1) > max(lo, j)])
    k = max(len(r) for r in rows)
    index = np.zeros((n_out, k), dtype=np.int64)
    weight = np.zeros((n_out, k), dtype=np.float32)
    for i, r in enumerate(rows):
        for m, (j, w) in enumerate(r):
            index[i, m], weight[i, m] = j, w
    return index, weight


class AtariEnv:
    """An Atari game with the preprocessing of Mnih et al. 2015 / CleanRL's ``dqn_atari.py``.

    No sticky actions (``repeat_action_probability=0``); on a game reset, 1 to ``noop_max`` NOOP
    frames (uniform), then FIRE (and action 2) where the game has FIRE; each step repeats the
    action for ``frame_skip`` frames, sums the rewards and max-pools the last two grey-scale
    frames, resized to ``screen x screen`` by area interpolation; observations are the last
    ``stack`` frames. A lost life is terminal for the TD target (``step`` returns
    ``terminated=True``) but the game goes on: ``reset()`` after it only starts a new frame
    stack and presses FIRE (CleanRL's EpisodicLifeEnv + FireResetEnv); the game resets at game
    over. Games are cut at ``max_episode_frames`` emulator frames (``truncated``).

    Parameters
    ----------
    env_id : str
        ``"ALE/<Game>-v5"`` (or a ROM id such as ``"breakout"``).
    seed : int, default=0
        Seeds the emulator and the no-op generator.
    noop_max : int, default=30
    frame_skip : int, default=4
    screen : int, default=84
    stack : int, default=4
    terminal_on_life_loss : bool, default=True
    clip_rewards : bool, default=True
        ``step`` returns ``sign(reward)`` for training; ``episode_return`` sums the raw score.
    max_episode_frames : int, default=108000
        Emulator frames per game (30 minutes at 60 Hz).

    Attributes
    ----------
    n_actions : int
        Size of the minimal action set.
    frame : ndarray (screen, screen) uint8
        The newest preprocessed frame.
    stack_frames : ndarray (stack, screen, screen) uint8
        The current observation, oldest frame first.

    Raises
    ------
    ValueError
        An unknown game or bad parameters.
    ImportError
        Without ale-py (``pip install 'fastnn[rl]'``).
    """

    def __init__(self, env_id: str, seed: int = 0, noop_max: int = 30, frame_skip: int = 4,
                 screen: int = 84, stack: int = 4, terminal_on_life_loss: bool = True,
                 clip_rewards: bool = True, max_episode_frames: int = 108000) -> None:
        ale_py = _require("ale_py")
        from ale_py import roms

        self.env_id = env_id
        self.game = rom_id(env_id)
        if self.game not in roms.get_all_rom_ids():
            raise ValueError(f"env_id {env_id!r}: no ALE game {self.game!r} (ale-py has "
                             f"{len(roms.get_all_rom_ids())} games, e.g. breakout, pong)")
        self.seed = V.check_int(seed, "seed", minimum=0)
        self.noop_max = V.check_int(noop_max, "noop_max", minimum=0)
        self.frame_skip = V.check_int(frame_skip, "frame_skip", minimum=1)
        self.screen = V.check_int(screen, "screen", minimum=1)
        self.stack = V.check_int(stack, "stack", minimum=1)
        self.terminal_on_life_loss = bool(terminal_on_life_loss)
        self.clip_rewards = bool(clip_rewards)
        self.max_episode_frames = V.check_int(max_episode_frames, "max_episode_frames",
                                              minimum=1)
        ale = ale_py.ALEInterface()
        ale.setLoggerMode(ale_py.LoggerMode.Error)
        ale.setInt("random_seed", self.seed % (2**31))
        ale.setFloat("repeat_action_probability", 0.0)
        ale.setInt("frame_skip", 1)
        ale.setInt("max_num_frames_per_episode", self.max_episode_frames)
        ale.loadROM(roms.get_rom_path(self.game))
        self.ale = ale
        self._ALEState = ale_py.ALEState
        self.actions = list(ale.getMinimalActionSet())
        self.action_names = [a.name for a in self.actions]
        self.n_actions = len(self.actions)
        self.fire = len(self.actions) >= 3 and self.action_names[1] == "FIRE"
        h, w = ale.getScreenDims()
        self._raw = np.zeros((2, h, w), dtype=np.uint8)
        self._rows = area_weights(h, self.screen)
        self._cols = area_weights(w, self.screen)
        self.frame = np.zeros((self.screen, self.screen), dtype=np.uint8)
        self.stack_frames = np.zeros((self.stack, self.screen, self.screen), dtype=np.uint8)
        self.rng = np.random.default_rng(self.seed)
        self.lives = 0
        self.game_over = True
        self.truncated = False
        self.episode_return = 0.0
        self.episode_length = 0

    @property
    def frame_shape(self) -> tuple[int, int]:
        return (self.screen, self.screen)

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        return (self.screen, self.screen, self.stack)

    def _resize(self, a: np.ndarray, b: np.ndarray) -> None:
        """``frame`` = the max of screens ``a`` and ``b``, resized (one fused kernel)."""
        _rl.max_area_resize(a, b, self._rows[0], self._rows[1], self._cols[0], self._cols[1],
                            self.frame)

    def _skip_step(self, action: int) -> float:
        """One agent step: ``frame_skip`` frames of ``action``, max of the last two screens."""
        a = self.actions[action]
        ale, raw, skip = self.ale, self._raw, self.frame_skip
        total = 0.0
        for k in range(skip):
            total += ale.act(a)
            done = ale.game_over() or ale.game_truncated()
            if k == skip - 2:
                ale.getScreenGrayscale(raw[0])
            if k == skip - 1 or done:
                ale.getScreenGrayscale(raw[1])
                if k < skip - 2 or skip == 1:  # no second-to-last frame: the max of one
                    raw[0] = raw[1]
                break
        self._resize(raw[0], raw[1])
        return total

    def _push(self, fresh: bool) -> None:
        if fresh:
            self.stack_frames[:] = self.frame
        else:
            self.stack_frames[:-1] = self.stack_frames[1:]
            self.stack_frames[-1] = self.frame

    def reset(self) -> None:
        """Start a new game after game over or truncation (no-op start, FIRE); after a lost life
        only a new frame stack (and FIRE)."""
        ale = self.ale
        if self.game_over or self.truncated:
            ale.reset_game()
            noops = int(self.rng.integers(1, self.noop_max + 1)) if self.noop_max else 0
            for _ in range(noops):
                ale.act(self.actions[0])
                if ale.game_over():
                    ale.reset_game()
            self.episode_return = 0.0
            self.episode_length = 0
            self.game_over = self.truncated = False
            ale.getScreenGrayscale(self._raw[0])
            self._resize(self._raw[0], self._raw[0])
        if self.fire:
            for a in (1, 2):
                self.episode_return += self._skip_step(a)
                if ale.game_over():
                    ale.reset_game()
        self.lives = ale.lives()
        self._push(fresh=True)

    def step(self, action: int) -> tuple[float, bool, bool]:
        """Act; returns ``(reward, terminated, truncated)``: the reward for training (clipped to
        its sign by default), whether the TD target ends here (life lost or game over), whether
        the game was cut by the frame limit. Call ``reset()`` after either.

        Raises
        ------
        ValueError
            An action outside ``[0, n_actions)``.
        """
        if not 0 <= action < self.n_actions:
            raise ValueError(f"action must be in [0, {self.n_actions}), got {action}")
        if self.game_over or self.truncated:
            raise RuntimeError("the game is over: call reset() first")
        reward = self._skip_step(action)
        self.episode_return += reward
        self.episode_length += 1
        self._push(fresh=False)
        ale = self.ale
        self.game_over = bool(ale.game_over())
        self.truncated = bool(ale.game_truncated()) and not self.game_over
        lives = ale.lives()
        terminated = self.game_over or (self.terminal_on_life_loss and 0 < lives < self.lives)
        self.lives = lives
        if self.clip_rewards:
            reward = float(np.sign(reward))
        return reward, terminated, self.truncated

    def observation(self, out: np.ndarray | None = None, scale: float = 1.0 / 255.0,
                    dtype: Any = np.float32) -> np.ndarray:
        """The current observation as the network's input ``(1, screen, screen, stack)``."""
        if out is None:
            out = np.empty((1,) + self.obs_shape, dtype=dtype)
        np.multiply(self.stack_frames.transpose(1, 2, 0), scale, out=out[0], casting="unsafe")
        return out

    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``(arrays, meta)`` for a checkpoint: the emulator (random generator included), the
        frame stack, the no-op generator and the game's counters."""
        state = self.ale.cloneState(include_rng=True).serialize()
        arrays = {"ale": np.frombuffer(state, dtype=np.uint8).copy(),
                  "stack": self.stack_frames.copy(), "frame": self.frame.copy()}
        meta = {"env_id": self.env_id, "rng": self.rng.bit_generator.state, "lives": self.lives,
                "game_over": self.game_over, "truncated": self.truncated,
                "episode_return": self.episode_return, "episode_length": self.episode_length}
        return arrays, meta

    def set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` gave."""
        self.ale.restoreState(self._ALEState(np.asarray(arrays["ale"], np.uint8).tobytes()))
        np.copyto(self.stack_frames, arrays["stack"])
        np.copyto(self.frame, arrays["frame"])
        self.rng.bit_generator.state = meta["rng"]
        self.lives = int(meta["lives"])
        self.game_over = bool(meta["game_over"])
        self.truncated = bool(meta["truncated"])
        self.episode_return = float(meta["episode_return"])
        self.episode_length = int(meta["episode_length"])


class GymEnv:
    """A gymnasium environment with vector observations (e.g. ``CartPole-v1``) behind the same
    interface as :class:`AtariEnv` (one frame per observation, rewards not clipped, a truncation
    by the time limit reported as ``truncated``).

    Parameters
    ----------
    env_id : str
        A gymnasium id whose observations are 1-D boxes.
    seed : int, default=0
        Seed of the first ``reset`` (later resets continue its generator).

    Raises
    ------
    ValueError
        If the observations are not 1-D or the actions not discrete.
    ImportError
        Without gymnasium.
    """

    def __init__(self, env_id: str, seed: int = 0) -> None:
        gym = _require("gymnasium")
        self.env_id = env_id
        self.env = gym.make(env_id)
        space = self.env.observation_space
        if len(space.shape or ()) != 1:
            raise ValueError(f"env {env_id!r}: observations must be 1-D vectors, got shape "
                             f"{space.shape}")
        if not hasattr(self.env.action_space, "n"):
            raise ValueError(f"env {env_id!r}: actions must be discrete, got "
                             f"{self.env.action_space}")
        self.n_actions = int(self.env.action_space.n)
        self.seed = V.check_int(seed, "seed", minimum=0)
        self._seeded = False
        self.frame = np.zeros(space.shape, dtype=np.float32)
        self.stack = 1
        self.game_over = True
        self.truncated = False
        self.episode_return = 0.0
        self.episode_length = 0

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return tuple(self.frame.shape)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return tuple(self.frame.shape)

    def reset(self) -> None:
        obs, _ = self.env.reset(seed=None if self._seeded else self.seed)
        self._seeded = True
        self.frame[:] = obs
        self.game_over = self.truncated = False
        self.episode_return = 0.0
        self.episode_length = 0

    def step(self, action: int) -> tuple[float, bool, bool]:
        if not 0 <= action < self.n_actions:
            raise ValueError(f"action must be in [0, {self.n_actions}), got {action}")
        obs, reward, terminated, truncated, _ = self.env.step(action)
        self.frame[:] = obs
        self.episode_return += float(reward)
        self.episode_length += 1
        self.game_over = bool(terminated)
        self.truncated = bool(truncated) and not terminated
        return float(reward), bool(terminated), self.truncated

    def observation(self, out: np.ndarray | None = None, scale: float = 1.0,
                    dtype: Any = np.float32) -> np.ndarray:
        if out is None:
            out = np.empty((1,) + self.obs_shape, dtype=dtype)
        np.multiply(self.frame, scale, out=out[0], casting="unsafe")
        return out

    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The classic-control state (``unwrapped.state``), its generator and the time limit's
        count; environments without ``unwrapped.state`` restart their episode on resume."""
        u = self.env.unwrapped
        arrays = {"frame": self.frame.copy()}
        meta: dict[str, Any] = {"env_id": self.env_id, "seeded": self._seeded,
                                "game_over": self.game_over, "truncated": self.truncated,
                                "episode_return": self.episode_return,
                                "episode_length": self.episode_length,
                                "rng": u.np_random.bit_generator.state if self._seeded else None,
                                "elapsed": getattr(self.env, "_elapsed_steps", None),
                                "beyond": getattr(u, "steps_beyond_terminated", None)}
        if getattr(u, "state", None) is not None:
            arrays["state"] = np.array(u.state)
        return arrays, meta

    def set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        u = self.env.unwrapped
        if meta["seeded"]:
            self.env.reset(seed=self.seed)
            u.np_random.bit_generator.state = meta["rng"]
        self._seeded = bool(meta["seeded"])
        np.copyto(self.frame, arrays["frame"])
        self.game_over = bool(meta["game_over"])
        self.truncated = bool(meta["truncated"])
        self.episode_return = float(meta["episode_return"])
        self.episode_length = int(meta["episode_length"])
        if "state" in arrays and not (self.game_over or self.truncated):
            u.state = np.array(arrays["state"])
            if meta["elapsed"] is not None:
                self.env._elapsed_steps = int(meta["elapsed"])
            u.steps_beyond_terminated = meta["beyond"]
        elif not (self.game_over or self.truncated):
            self.game_over = True  # cannot restore the episode: start a new one


def make_env(env_id: str, seed: int = 0, **kwargs: Any) -> AtariEnv | GymEnv:
    """:class:`AtariEnv` for ``"ALE/..."`` ids, else :class:`GymEnv`."""
    if is_atari(env_id):
        return AtariEnv(env_id, seed=seed, **kwargs)
    return GymEnv(env_id, seed=seed, **kwargs)
