"""Reinforcement learning: a replay buffer that stores each frame once, a DQN agent (Mnih et al.
2015) on fastnn models, Atari and gymnasium environments (optional extra ``rl``: gymnasium,
ale-py; ``import fastnn`` does not import this package).

Example::

    from fastnn import models
    from fastnn.rl import DQN, make_env
    env = make_env("ALE/Breakout-v5", seed=0)
    model = models.dqn(env.n_actions, seed=0)          # Adam(1e-4)
    agent = DQN(model, env, total_steps=1_000_000, buffer_size=100_000)
    while agent.steps < agent.total_steps:
        agent.step()

or ``python -m fastnn dqn --env ALE/Breakout-v5 --steps 1000000``.
"""
from .dqn import DQN, polyak_update, td_huber_loss
from .envs import AtariEnv, GymEnv, make_env
from .replay import ReplayBuffer

__all__ = ["DQN", "ReplayBuffer", "AtariEnv", "GymEnv", "make_env", "polyak_update",
           "td_huber_loss"]
