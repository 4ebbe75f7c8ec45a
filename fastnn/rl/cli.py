"""``python -m fastnn dqn``: train a DQN on an Atari game (``--env ALE/Breakout-v5``) or on a
gymnasium vector environment (``--env CartPole-v1``, an MLP).

Registered by :mod:`fastnn.cli`; gymnasium / ale-py are imported only when the command runs.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from typing import IO, Any

import numpy as np

#: defaults that differ between Atari (CleanRL's dqn_atari.py, Mnih et al. 2015) and the
#: vector environments (CartPole: tuned here to pass 400 within 100k steps)
ATARI_DEFAULTS = {"learning_rate": 1e-4, "buffer_size": 1_000_000, "learning_starts": 80_000,
                  "batch_size": 32, "train_frequency": 4, "target_update": 1000,
                  "exploration_fraction": 0.10, "end_e": 0.01}
VECTOR_DEFAULTS = {"learning_rate": 1e-3, "buffer_size": 50_000, "learning_starts": 1000,
                   "batch_size": 64, "train_frequency": 1, "target_update": 500,
                   "exploration_fraction": 0.20, "end_e": 0.05}
#: hidden layers of the MLP used for vector observations
MLP_HIDDEN = (128, 128)
#: rolling window of the learning curve and of the progress bar's mean return
WINDOW = 100


def add_parser(sub: Any, parents: list[argparse.ArgumentParser], positive_int: Any,
               nonnegative_int: Any, positive_float: Any) -> argparse.ArgumentParser:
    """Add the ``dqn`` subcommand to ``sub`` (an argparse subparsers object)."""
    p = sub.add_parser(
        "dqn", parents=parents, help="train a DQN agent (Atari or CartPole; extra 'rl')",
        description="Train a DQN (Mnih et al. 2015, CleanRL's dqn_atari.py) on an Atari game "
                    "(the Nature network, 84x84x4 frames) or on a gymnasium environment with "
                    "vector observations (an MLP). Prints progress, then 'steps/s: X' and "
                    "'eval mean return: R over N episodes'. Needs pip install 'fastnn[rl]'.")
    p.add_argument("--env", default="ALE/Breakout-v5",
                   help="ALE/<Game>-v5 or a gymnasium id such as CartPole-v1 (default: "
                        "%(default)s)")
    p.add_argument("--steps", type=positive_int, default=10_000_000,
                   help="environment (agent) steps of training in total, a resumed run "
                        "included (default: %(default)s)")
    p.add_argument("--learning-starts", type=nonnegative_int, default=None, metavar="N",
                   help="random steps before training (default: 80000 Atari, 1000 otherwise)")
    p.add_argument("--buffer-size", type=positive_int, default=None, metavar="N",
                   help="replay capacity in transitions (default: 1000000 Atari, ~6.6 GiB; "
                        "50000 otherwise)")
    p.add_argument("--batch-size", type=positive_int, default=None, metavar="B")
    p.add_argument("--optimizer", choices=("adam", "rmsprop"), default="adam",
                   help="Adam (CleanRL) or RMSprop (Mnih et al.; rho 0.95, eps 0.01)")
    p.add_argument("--learning-rate", type=positive_float, default=None, metavar="LR",
                   help="default 1e-4 Atari, 1e-3 otherwise")
    p.add_argument("--clipnorm", type=positive_float, default=None,
                   help="clip the gradients' global norm (default: no clipping)")
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--train-frequency", type=positive_int, default=None, metavar="N",
                   help="a training step every N agent steps (default 4 Atari, 1 otherwise)")
    p.add_argument("--target-update", type=positive_int, default=None, metavar="N",
                   help="update the target network every N steps (default 1000 Atari, 500)")
    p.add_argument("--tau", type=float, default=1.0,
                   help="1: copy the online network (hard update); < 1: Polyak averaging")
    p.add_argument("--double-dqn", action="store_true", help="double-DQN targets")
    p.add_argument("--exploration-fraction", type=float, default=None,
                   help="fraction of --steps over which epsilon falls from 1 to --end-e "
                        "(default 0.1 Atari, 0.2 otherwise)")
    p.add_argument("--end-e", type=float, default=None, help="final epsilon (0.01 / 0.05)")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--eval-episodes", type=positive_int, default=10,
                   help="greedy games of the final evaluation (default: %(default)s)")
    p.add_argument("--save", default=None, metavar="DIR",
                   help="write a checkpoint folder at the end (and on Ctrl-C)")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="continue from a checkpoint folder (same --env; --steps is the total)")
    p.add_argument("--csv", default=None, metavar="PATH",
                   help="episode returns as CSV (step,episode,return,length)")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="learning curve (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def build_model(env: Any, args: argparse.Namespace, lr: float) -> Any:
    """The Nature DQN for Atari, an MLP otherwise, compiled with the chosen optimizer."""
    from .. import models
    from ..optimizers import Adam, RMSprop

    if args.optimizer == "adam":
        opt: Any = Adam(lr, clipnorm=args.clipnorm)
    else:  # Mnih et al. 2015: RMSProp, squared-gradient momentum 0.95, min squared gradient 0.01
        opt = RMSprop(lr, rho=0.95, eps=0.01, clipnorm=args.clipnorm)
    if len(env.obs_shape) == 3:
        model = models.dqn(env.n_actions, seed=args.seed)
    else:
        model = models.mlp((env.obs_shape[0],) + MLP_HIDDEN + (env.n_actions,), seed=args.seed)
    return model.compile(opt, "huber")


def write_csv(path: str, episodes: list[tuple[int, float, int]]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "episode", "return", "length"])
        for i, (step, ret, length) in enumerate(episodes, start=1):
            w.writerow([step, i, f"{ret:g}", length])
    os.replace(tmp, path)


def plot_curve(path: str, episodes: list[tuple[int, float, int]], title: str,
               reference: float | None = None) -> None:
    """Episode returns against agent steps, with their rolling mean over ``WINDOW`` episodes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([e[0] for e in episodes], dtype=np.float64)
    rets = np.array([e[1] for e in episodes], dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    ax.plot(steps, rets, ".", ms=2, alpha=0.35, color="tab:blue", label="episode return")
    if len(rets):
        k = min(WINDOW, len(rets))
        mean = np.convolve(rets, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], mean, color="tab:red", lw=1.5, label=f"mean of last {k}")
    if reference is not None:
        ax.axhline(reference, color="gray", ls="--", lw=1, label="random policy")
    ax.set_xlabel("agent steps")
    ax.set_ylabel("return (game score)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def cmd_dqn(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    """Run ``python -m fastnn dqn``; returns the exit status."""
    from ..cli import CLIError, _set_threads
    from ..model import _SigintFlag

    out = out or sys.stdout
    _set_threads(args.threads)
    try:
        from . import DQN, make_env
        from .envs import is_atari
        env = make_env(args.env, seed=args.seed)
        eval_env = make_env(args.env, seed=args.seed + 10_000)
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    except Exception as exc:  # gymnasium's unknown-id errors and our ValueErrors
        raise CLIError(f"cannot make env {args.env!r}: {exc}") from None
    defaults = ATARI_DEFAULTS if is_atari(args.env) else VECTOR_DEFAULTS

    def pick(name: str) -> Any:
        value = getattr(args, name)
        return defaults[name] if value is None else value

    for name in ("gamma", "tau"):
        if not 0 <= getattr(args, name) <= 1:
            raise CLIError(f"--{name} must be in [0, 1], got {getattr(args, name)}")
    if args.resume:
        try:
            agent = DQN.load(args.resume, env, total_steps=args.steps)
        except (OSError, ValueError, KeyError) as exc:
            raise CLIError(f"cannot resume from {args.resume!r}: {exc}") from None
    else:
        model = build_model(env, args, pick("learning_rate"))
        try:
            agent = DQN(model, env, total_steps=args.steps, buffer_size=pick("buffer_size"),
                        learning_starts=pick("learning_starts"), batch_size=pick("batch_size"),
                        gamma=args.gamma, train_frequency=pick("train_frequency"),
                        target_update_interval=pick("target_update"), tau=args.tau,
                        end_e=pick("end_e"), exploration_fraction=pick("exploration_fraction"),
                        double_dqn=args.double_dqn, seed=args.seed)
        except (ValueError, TypeError) as exc:
            raise CLIError(str(exc)) from None
    print(f"dqn: {args.env}, {env.n_actions} actions, observations {env.obs_shape}; "
          f"{agent.model.count_params():,} parameters; buffer {agent.buffer.capacity:,} "
          f"transitions ({agent.buffer.nbytes / 2**20:,.0f} MiB); steps {agent.steps:,} -> "
          f"{agent.total_steps:,}", file=out, flush=True)

    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm
        bar = tqdm(total=agent.total_steps, initial=agent.steps, unit="step", smoothing=0.05,
                   file=sys.stderr, mininterval=1.0)
    t_learn: float | None = None
    steps_learn = 0
    t_last = time.perf_counter()
    last_episodes = len(agent.episodes)
    # Ctrl-C stops between two agent steps (a consistent checkpoint); a second one at once
    with _SigintFlag() as sigint:
        while agent.steps < agent.total_steps and not sigint.hit:
            if t_learn is None and agent.steps >= agent.learning_starts:
                t_learn, steps_learn = time.perf_counter(), agent.steps
            agent.step()
            if agent.steps % 1000 == 0:
                now = time.perf_counter()
                if bar is not None:
                    bar.update(agent.steps - bar.n)
                    recent = [e[1] for e in agent.episodes[-WINDOW:]]
                    bar.set_postfix({
                        "return": f"{np.mean(recent):.1f}" if recent else "-",
                        "eps": f"{agent.epsilon():.3f}",
                        "loss": f"{agent.last_loss:.4f}" if agent.last_loss is not None else "-",
                        "episodes": len(agent.episodes)}, refresh=False)
                if args.csv and len(agent.episodes) != last_episodes and now - t_last > 30:
                    write_csv(args.csv, agent.episodes)
                    t_last, last_episodes = now, len(agent.episodes)
    interrupted = sigint.hit
    if bar is not None:
        bar.update(agent.steps - bar.n)
        bar.close()
    end = time.perf_counter()
    if args.save:
        agent.save(args.save)
        print(f"saved checkpoint {args.save} at step {agent.steps:,}", file=out)
    if args.csv:
        write_csv(args.csv, agent.episodes)
    if interrupted:
        raise KeyboardInterrupt
    if t_learn is not None and agent.steps > steps_learn:
        print(f"steps/s: {(agent.steps - steps_learn) / (end - t_learn):.1f}", file=out)
    recent = [e[1] for e in agent.episodes[-WINDOW:]]
    if recent:
        print(f"train mean return (last {len(recent)} episodes): {np.mean(recent):.2f}",
              file=out)
    returns = agent.evaluate(eval_env, args.eval_episodes)
    print(f"eval mean return: {np.mean(returns):.2f} over {len(returns)} episodes", file=out,
          flush=True)
    if args.plot:
        try:
            plot_curve(args.plot, agent.episodes, f"fastnn DQN, {args.env}")
        except ImportError:
            raise CLIError("--plot needs matplotlib (pip install matplotlib)") from None
    return 0
