"""DQN agent steps per second on Breakout: fastnn's agent (``fastnn.rl.DQN``) against the same loop
written in PyTorch the way CleanRL's ``dqn_atari.py`` writes it.

Run ``python bench/dqn.py`` (``--help`` for the options); under the shared lock on a shared
machine: ``flock /tmp/fastnn-bench.lock python bench/dqn.py``.

What is timed: agent steps in the learning phase, each = epsilon-greedy action (epsilon 0.01:
almost always a batch-1 forward pass of the Nature DQN), one environment step (frame skip 4, max
pool, 84x84 grey, 4-frame stack: the same ``fastnn.rl.AtariEnv`` for both), storing the
transition, and every 4th step a training step on a batch of 32 (sample, target network on the
next observations, online forward, Huber TD loss, backward, Adam 1e-4), a hard target copy every
1,000 steps. Same hyperparameters as CleanRL's ``dqn_atari.py`` (Huber loss instead of its MSE,
as Mnih et al. and the fastnn agent).

Method: one worker process per (implementation, thread count), ``OMP_NUM_THREADS`` etc. set
before anything is imported (and ``fastnn.set_num_threads`` / ``torch.set_num_threads``). Each
worker fills its replay buffer with ``--fill`` random steps and warms up (not timed); then the
driver asks the workers of one thread count for blocks of ``--block-steps`` steps in turn
(A B, B A, ...), so a shared machine's drifts hit both alike. Reported: the median of the
blocks' steps/s, their interquartile range, and the ratio of the medians from this one run.

The PyTorch side (``_TorchAgent``) follows CleanRL: ``QNetwork`` with ``x / 255.0`` on NCHW
uint8 stacks, a replay buffer storing the stacked observations (SB3's ``ReplayBuffer`` with
``optimize_memory_usage=True``: next observation = the next slot), ``torch.no_grad()`` for the
target and for acting, ``F.smooth_l1_loss``, ``optimizer.zero_grad(); loss.backward();
optimizer.step()``. PyTorch is a benchmark-only dependency.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ENV_ID = "ALE/Breakout-v5"
BUFFER = 10_000
GAMMA = 0.99
LR = 1e-4
BATCH = 32
TRAIN_EVERY = 4
TARGET_EVERY = 1000
EPS = 0.01


# -- workers ----------------------------------------------------------------------------------

class _FastnnAgent:
    def __init__(self, seed: int, fill: int) -> None:
        from fastnn import models
        from fastnn.rl import DQN, make_env

        env = make_env(ENV_ID, seed=seed)
        model = models.dqn(env.n_actions, seed=seed, learning_rate=LR)
        model.compile(model.optimizer, "huber")
        # epsilon: 1 while filling, then 0.01 (a schedule that ends at the fill)
        self.agent = DQN(model, env, total_steps=fill * 10, buffer_size=BUFFER,
                         learning_starts=fill, batch_size=BATCH, gamma=GAMMA,
                         train_frequency=TRAIN_EVERY, target_update_interval=TARGET_EVERY,
                         start_e=1.0, end_e=EPS, exploration_fraction=0.1, seed=seed)

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.agent.step()


class _TorchAgent:
    """CleanRL's dqn_atari.py loop on the same environment."""

    def __init__(self, seed: int, fill: int) -> None:
        import torch
        import torch.nn as nn

        from fastnn.rl import make_env

        torch.manual_seed(seed)
        self.torch = torch
        self.F = torch.nn.functional
        self.env = make_env(ENV_ID, seed=seed)
        A = self.env.n_actions

        class QNetwork(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.network = nn.Sequential(
                    nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(),
                    nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
                    nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
                    nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(), nn.Linear(512, A))

            def forward(self, x):  # type: ignore[no-untyped-def]
                return self.network(x / 255.0)

        self.q = QNetwork()
        self.target = QNetwork()
        self.target.load_state_dict(self.q.state_dict())
        self.opt = torch.optim.Adam(self.q.parameters(), lr=LR)
        self.obs = np.zeros((BUFFER, 4, 84, 84), np.uint8)
        self.actions = np.zeros(BUFFER, np.int64)
        self.rewards = np.zeros(BUFFER, np.float32)
        self.dones = np.zeros(BUFFER, np.float32)
        self.pos, self.full = 0, False
        self.rng = np.random.default_rng(seed)
        self.step_count = 0
        self.fill = fill
        self.A = A

    def _store(self, obs: np.ndarray, a: int, r: float, d: bool) -> None:
        self.obs[self.pos] = obs
        self.actions[self.pos], self.rewards[self.pos], self.dones[self.pos] = a, r, d
        self.pos = (self.pos + 1) % BUFFER
        self.full = self.full or self.pos == 0

    def _train(self) -> None:
        torch, F = self.torch, self.F
        upper = BUFFER if self.full else self.pos
        idx = (self.rng.integers(1, upper, size=BATCH) + self.pos) % upper if self.full \
            else self.rng.integers(0, upper - 1, size=BATCH)
        obs = torch.as_tensor(self.obs[idx]).float()
        nxt = torch.as_tensor(self.obs[(idx + 1) % BUFFER]).float()
        a = torch.as_tensor(self.actions[idx])
        r = torch.as_tensor(self.rewards[idx])
        d = torch.as_tensor(self.dones[idx])
        with torch.no_grad():
            target_max, _ = self.target(nxt).max(dim=1)
            td_target = r + GAMMA * target_max * (1 - d)
        old_val = self.q(obs).gather(1, a.unsqueeze(1)).squeeze()
        loss = F.smooth_l1_loss(old_val, td_target)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def run(self, steps: int) -> None:
        torch, env = self.torch, self.env
        for _ in range(steps):
            if env.game_over or env.truncated:
                env.reset()
            eps = 1.0 if self.step_count < self.fill else EPS
            if self.rng.random() < eps:
                a = int(self.rng.integers(self.A))
            else:
                with torch.no_grad():
                    q = self.q(torch.as_tensor(env.stack_frames[None]).float())
                a = int(q.argmax(dim=1)[0])
            obs = env.stack_frames.copy()
            r, terminated, truncated = env.step(a)
            self._store(obs, a, r, terminated or truncated)
            if terminated and not env.game_over:
                env.reset()
            self.step_count += 1
            if self.step_count > self.fill:
                if self.step_count % TRAIN_EVERY == 0:
                    self._train()
                if self.step_count % TARGET_EVERY == 0:
                    self.target.load_state_dict(self.q.state_dict())


def worker(impl: str, threads: int, seed: int, fill: int) -> None:
    if impl == "fastnn":
        import fastnn

        fastnn.set_num_threads(threads)
        agent: _FastnnAgent | _TorchAgent = _FastnnAgent(seed, fill)
    else:
        import torch

        torch.set_num_threads(threads)
        agent = _TorchAgent(seed, fill)
    agent.run(fill + 2 * TRAIN_EVERY * 4)  # fill the buffer, then a few training steps
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] != "run":
            break
        t = time.perf_counter()
        agent.run(int(cmd[1]))
        print(json.dumps({"seconds": time.perf_counter() - t}), flush=True)


# -- driver -----------------------------------------------------------------------------------

def _start(impl: str, threads: int, args: argparse.Namespace) -> subprocess.Popen:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--worker", impl, "--threads", str(threads),
         "--seed", str(args.seed), "--fill", str(args.fill)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=env)


def _ask(p: subprocess.Popen, steps: int) -> float:
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(f"run {steps}\n")
    p.stdin.flush()
    return float(json.loads(p.stdout.readline())["seconds"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated (default: 1,2)")
    parser.add_argument("--impls", default="fastnn,torch")
    parser.add_argument("--blocks", type=int, default=6, help="timed blocks per worker")
    parser.add_argument("--block-steps", type=int, default=200, help="agent steps per block")
    parser.add_argument("--fill", type=int, default=2000, help="random steps before learning")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    if args.worker:
        worker(args.worker, threads[0], args.seed, args.fill)
        return 0
    impls = args.impls.split(",")
    results = {}
    print(f"DQN agent steps/s on {ENV_ID} (train batch {BATCH} every {TRAIN_EVERY} steps, "
          f"epsilon {EPS}); {args.blocks} blocks of {args.block_steps} steps, interleaved")
    for n in threads:
        procs = {impl: _start(impl, n, args) for impl in impls}
        for p in procs.values():
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise SystemExit("a worker failed to start")
        rates: dict[str, list[float]] = {impl: [] for impl in impls}
        for b in range(args.blocks):
            order = impls if b % 2 == 0 else impls[::-1]
            for impl in order:
                rates[impl].append(args.block_steps / _ask(procs[impl], args.block_steps))
        for p in procs.values():
            assert p.stdin is not None
            p.stdin.write("stop\n")
            p.stdin.close()
            p.wait()
        results[n] = {impl: {"median": float(np.median(r)),
                             "q1": float(np.percentile(r, 25)),
                             "q3": float(np.percentile(r, 75)), "blocks": r}
                      for impl, r in rates.items()}
    head = "| threads | " + " | ".join(f"{i} steps/s (IQR)" for i in impls)
    if "fastnn" in impls and "torch" in impls:
        head += " | fastnn / torch"
    print(head + " |")
    print("|" + "---|" * (len(impls) + 1 + ("torch" in impls and "fastnn" in impls)))
    for n, res in results.items():
        cells = [f"{res[i]['median']:.1f} ({res[i]['q1']:.1f}-{res[i]['q3']:.1f})"
                 for i in impls]
        if "fastnn" in res and "torch" in res:
            cells.append(f"{res['fastnn']['median'] / res['torch']['median']:.2f}x")
        print(f"| {n} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({str(k): v for k, v in results.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
