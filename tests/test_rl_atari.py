"""Atari (ale-py): the preprocessing of Mnih et al. 2015 and a DQN smoke run on Breakout that is
saved, resumed and continued bit-identically against the uninterrupted run."""
import numpy as np
import pytest

pytest.importorskip("ale_py")

import fastnn  # noqa: E402
from fastnn import _rl, models  # noqa: E402
from fastnn.rl import DQN, AtariEnv, make_env  # noqa: E402
from fastnn.rl.envs import area_weights, rom_id  # noqa: E402


def test_rom_ids_and_env_basics():
    assert rom_id("ALE/Breakout-v5") == "breakout"
    assert rom_id("ALE/SpaceInvaders-v5") == "space_invaders"
    assert rom_id("PongNoFrameskip-v4") == "pong"
    with pytest.raises(ValueError, match="no ALE game"):
        AtariEnv("ALE/NoSuchGame-v5")
    env = make_env("ALE/Breakout-v5", seed=0)
    assert isinstance(env, AtariEnv)
    assert env.n_actions == 4 and env.action_names[:2] == ["NOOP", "FIRE"] and env.fire
    env.reset()
    assert env.lives == 5 and env.obs_shape == (84, 84, 4)
    # a fresh stack repeats the first frame
    assert all((env.stack_frames[k] == env.frame).all() for k in range(4))
    obs = env.observation()
    assert obs.shape == (1, 84, 84, 4) and obs.dtype == np.float32
    np.testing.assert_allclose(obs[0, :, :, 3], env.frame / np.float32(255), rtol=1e-6)
    with pytest.raises(ValueError, match=r"action must be in \[0, 4\)"):
        env.step(4)


def test_life_loss_is_terminal_but_the_game_goes_on():
    env = make_env("ALE/Breakout-v5", seed=1)
    env.reset()
    rng = np.random.default_rng(0)
    events = []
    for _ in range(5000):
        r, terminated, truncated = env.step(int(rng.integers(4)))
        assert r in (0.0, 1.0)  # clipped
        if terminated:
            events.append((env.lives, env.game_over))
            if env.game_over:
                break
            env.reset()  # a new stack + FIRE, same game
    assert [e[0] for e in events] == [4, 3, 2, 1, 0]
    assert [e[1] for e in events] == [False] * 4 + [True]
    assert env.episode_return >= 0 and env.episode_length > 50


def test_resize_kernel_is_area_interpolation_of_the_max():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, size=(210, 160), dtype=np.uint8)
    b = rng.integers(0, 256, size=(210, 160), dtype=np.uint8)
    (ri, rw), (ci, cw) = area_weights(210, 84), area_weights(160, 84)
    out = np.empty((84, 84), np.uint8)
    _rl.max_area_resize(a, b, ri, rw, ci, cw, out)
    # dense reference: R (84, 210) @ max (210, 160) @ C^T (160, 84)
    R = np.zeros((84, 210))
    C = np.zeros((84, 160))
    np.add.at(R, (np.repeat(np.arange(84), ri.shape[1]), ri.ravel()), rw.ravel())
    np.add.at(C, (np.repeat(np.arange(84), ci.shape[1]), ci.ravel()), cw.ravel())
    np.testing.assert_allclose(R.sum(1), 1, rtol=1e-6)
    np.testing.assert_allclose(C.sum(1), 1, rtol=1e-6)
    ref = R @ np.maximum(a, b).astype(np.float64) @ C.T
    assert np.abs(out.astype(np.float64) - ref).max() <= 0.5 + 1e-3
    # a constant image stays constant
    c = np.full((210, 160), 77, np.uint8)
    _rl.max_area_resize(c, c, ri, rw, ci, cw, out)
    assert (out == 77).all()


def _agent(env, total):
    model = models.dqn(env.n_actions, seed=0)
    return DQN(model, env, total_steps=total, buffer_size=1500, learning_starts=1200,
               batch_size=8, train_frequency=4, target_update_interval=100, seed=0)


def _assert_same(a, b):
    np.testing.assert_array_equal(a.model._params.params, b.model._params.params)
    np.testing.assert_array_equal(a.target._params.params, b.target._params.params)
    for key in a.model.optimizer.state:
        for slot in a.model.optimizer.state[key]:
            np.testing.assert_array_equal(a.model.optimizer.state[key][slot],
                                          b.model.optimizer.state[key][slot])
    assert a.model.optimizer.iterations == b.model.optimizer.iterations
    for name in ("frames", "first", "actions", "rewards", "dones"):
        np.testing.assert_array_equal(getattr(a.buffer, name), getattr(b.buffer, name))
    assert (a.steps, a.updates, a.episodes, a.last_loss) == \
        (b.steps, b.updates, b.episodes, b.last_loss)
    np.testing.assert_array_equal(a.env.stack_frames, b.env.stack_frames)


@pytest.mark.slow
def test_breakout_smoke_save_resume_bit_identical(tmp_path):
    """2,000 steps (random until 1,200, then a batch-8 train step every 4): the run is saved at
    1,600 steps and continued; the resumed copy goes on to the same weights, optimizer state,
    buffer, episodes and frames as the uninterrupted run."""
    fastnn.set_num_threads(1)  # (2 threads on a loaded 2-core machine spin-wait)
    env = make_env("ALE/Breakout-v5", seed=0)
    agent = _agent(env, 2000)
    while agent.steps < 1600:
        agent.step()
    assert agent.updates == 100 and agent.episodes  # trained, and games ended
    agent.save(tmp_path / "ck")
    while agent.steps < 2000:
        agent.step()
    resumed = DQN.load(tmp_path / "ck", make_env("ALE/Breakout-v5", seed=0))
    assert resumed.steps == 1600
    while resumed.steps < 2000:
        resumed.step()
    _assert_same(agent, resumed)
    assert agent.updates == 200 and np.isfinite(agent.last_loss)
    # the resumed agent plays on from the restored emulator state, not from a new game
    r1 = [agent.step() for _ in range(50)]
    r2 = [resumed.step() for _ in range(50)]
    assert r1 == r2
    _assert_same(agent, resumed)


@pytest.mark.slow
def test_bench_dqn_runs_the_fastnn_side(tmp_path):
    """bench/dqn.py's driver and fastnn worker (the PyTorch side needs torch, a bench-only
    dependency), a few steps: the table and the JSON."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(root / "bench" / "dqn.py"), "--impls", "fastnn", "--threads", "1",
         "--blocks", "2", "--block-steps", "8", "--fill", "100", "--json",
         str(tmp_path / "r.json")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "| 1 | " in out.stdout
    res = json.loads((tmp_path / "r.json").read_text())
    assert len(res["1"]["fastnn"]["blocks"]) == 2 and res["1"]["fastnn"]["median"] > 0
