"""The fused DQN loss (TD target, gather, Huber, scatter), the Polyak update and the agent's
training step against NumPy references (no gymnasium needed)."""
import numpy as np
import pytest

import fastnn
from fastnn import _rl, models
from fastnn.rl import DQN, ReplayBuffer, polyak_update, td_huber_loss

from conftest import numerical_grad


def _batch(rng, B=32, A=6, dtype=np.float64, scale=3.0):
    q = rng.normal(size=(B, A)) * scale
    qn = rng.normal(size=(B, A)) * scale
    qo = rng.normal(size=(B, A))
    a = rng.integers(0, A, B)
    r = rng.normal(size=B)
    d = (rng.random(B) < 0.3).astype(np.float64)
    return [x.astype(dtype) for x in (q, qn, qo)] + [a, r.astype(dtype), d.astype(dtype)]


def _reference(q, qn, a, r, d, gamma, delta, qo=None):
    B = q.shape[0]
    v = qn[np.arange(B), qo.argmax(1)] if qo is not None else qn.max(1)
    y = r + gamma * (1 - d) * v
    x = q[np.arange(B), a] - y
    loss = np.where(np.abs(x) <= delta, 0.5 * x * x, delta * (np.abs(x) - 0.5 * delta)).mean()
    g = np.zeros_like(q)
    g[np.arange(B), a] = np.clip(x, -delta, delta) / B
    return loss, g, y


@pytest.mark.parametrize("double", [False, True])
@pytest.mark.parametrize("delta", [1.0, 0.5])
def test_td_huber_matches_numpy(double, delta):
    rng = np.random.default_rng(1)
    q, qn, qo, a, r, d = _batch(rng)
    loss, g, y = td_huber_loss(q, qn, a, r, d, 0.99, delta, qo if double else None)
    rl, rg, ry = _reference(q, qn, a, r, d, 0.99, delta, qo if double else None)
    np.testing.assert_allclose(loss, rl, rtol=1e-13)
    np.testing.assert_allclose(y, ry, rtol=1e-13)
    np.testing.assert_array_equal(g == 0, rg == 0)
    np.testing.assert_allclose(g, rg, rtol=1e-13)
    # both branches of the Huber loss are exercised
    x = q[np.arange(len(a)), a] - ry
    assert (np.abs(x) < delta).any() and (np.abs(x) > delta).any()


def test_td_huber_gradient_by_finite_differences():
    rng = np.random.default_rng(2)
    q, qn, _, a, r, d = _batch(rng, B=8, A=4)
    _, g, _ = td_huber_loss(q, qn, a, r, d, 0.9, 1.0)
    num = numerical_grad(lambda: td_huber_loss(q, qn, a, r, d, 0.9, 1.0)[0], q)
    np.testing.assert_allclose(g, num, atol=1e-8)


def test_td_huber_float32_and_the_pytorch_formula():
    """float32 against the float64 result; the loss is PyTorch's HuberLoss(delta) /
    smooth_l1_loss(beta=1), written out (0.5 x^2 inside, delta (|x| - delta / 2) outside)."""
    rng = np.random.default_rng(3)
    q, qn, qo, a, r, d = _batch(rng, dtype=np.float32)
    loss, g, y = td_huber_loss(q, qn, a, r, d, 0.99, 1.0, qo)
    assert g.dtype == np.float32 and y.dtype == np.float32
    rl, rg, _ = _reference(*(x.astype(np.float64) for x in (q, qn)), a, r.astype(np.float64),
                           d.astype(np.float64), 0.99, 1.0, qo.astype(np.float64))
    np.testing.assert_allclose(loss, rl, rtol=1e-5)
    np.testing.assert_allclose(g, rg, rtol=1e-5, atol=1e-7)


def test_td_huber_rejects_bad_input():
    rng = np.random.default_rng(4)
    q, qn, qo, a, r, d = _batch(rng, B=4, A=3)
    with pytest.raises(ValueError, match=r"actions must be in \[0, 3\)"):
        td_huber_loss(q, qn, a + 3, r, d)
    with pytest.raises(ValueError, match=r"actions must be in \[0, 3\)"):
        td_huber_loss(q, qn, a - 5, r, d)
    with pytest.raises(TypeError, match="actions must be integers"):
        td_huber_loss(q, qn, a.astype(float), r, d)
    with pytest.raises(ValueError, match=r"q_next must have shape \(4, 3\)"):
        td_huber_loss(q, qn[:, :2], a, r, d)
    with pytest.raises(ValueError, match=r"rewards must have shape \(4,\)"):
        td_huber_loss(q, qn, a, r[:3], d)
    with pytest.raises(ValueError, match="gamma"):
        td_huber_loss(q, qn, a, r, d, gamma=1.5)
    with pytest.raises(ValueError, match="delta"):
        td_huber_loss(q, qn, a, r, d, delta=0.0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_polyak_update(dtype):
    online = models.mlp((5, 40, 3), seed=0, dtype=dtype)
    target = models.mlp((5, 40, 3), seed=1, dtype=dtype)
    t0 = target._params.params.copy()
    o = online._params.params.copy()
    polyak_update(target, online, 0.005)
    tau = np.dtype(dtype).type(0.005)
    np.testing.assert_array_equal(target._params.params, (1 - tau) * t0 + tau * o)
    polyak_update(target, online, 1.0)
    np.testing.assert_array_equal(target._params.params, o)
    np.testing.assert_array_equal(target.layers[0].params["weight"],
                                  online.layers[0].params["weight"])
    with pytest.raises(ValueError, match="tau"):
        polyak_update(target, online, 0.0)
    with pytest.raises(ValueError, match="differ"):
        polyak_update(models.mlp((5, 4, 3), dtype=dtype), online, 0.5)


def test_polyak_kernel_same_bits_for_any_thread_count():
    rng = np.random.default_rng(5)
    o = rng.normal(size=200_003).astype(np.float32)
    outs = []
    for n in (1, 2, 3):
        t = rng.normal(size=200_003).astype(np.float32) if not outs else outs[0][1].copy()
        start = t.copy()
        _rl.polyak_update(t, o, 0.01, n)
        outs.append((t, start))
    for t, _ in outs[1:]:
        np.testing.assert_array_equal(t, outs[0][0])


class _ToyEnv:
    """A 1-D corridor for the agent's loop: 3 float features, 2 actions; action 1 moves right,
    reward 1 at the right end (terminal), episodes cut after 20 steps."""

    n_actions = 2

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.frame = np.zeros(3, np.float32)
        self.game_over = True
        self.truncated = False
        self.episode_return = 0.0
        self.episode_length = 0
        self.pos = 0

    frame_shape = obs_shape = (3,)

    def reset(self):
        self.pos = int(self.rng.integers(0, 3))
        self.game_over = self.truncated = False
        self.episode_return, self.episode_length = 0.0, 0
        self._obs()

    def _obs(self):
        self.frame[:] = (self.pos / 5, 1.0, (self.pos == 4) * 1.0)

    def step(self, a):
        self.pos = max(0, self.pos + (1 if a == 1 else -1))
        self.episode_length += 1
        r = 1.0 if self.pos == 5 else 0.0
        self.episode_return += r
        self.game_over = self.pos == 5
        self.truncated = self.episode_length >= 20 and not self.game_over
        self._obs()
        return r, self.game_over, self.truncated

    def observation(self, out=None, scale=1.0, dtype=np.float32):
        out = np.empty((1, 3), dtype) if out is None else out
        out[0] = self.frame
        return out


def test_train_step_is_the_fused_loss_on_a_sampled_batch():
    """One agent training step equals: sample, the NumPy TD target and Huber gradient, backward,
    the optimizer's update (same seed, same batch)."""
    env = _ToyEnv()
    model = models.mlp((3, 16, 2), seed=0, dtype="float64").compile(fastnn.SGD(0.1), "huber")
    agent = DQN(model, env, total_steps=1000, buffer_size=100, learning_starts=10_000,
                batch_size=8, seed=3)
    for _ in range(60):
        agent.step()
    ref_model = models.mlp((3, 16, 2), seed=0, dtype="float64").compile(fastnn.SGD(0.1), "huber")
    ref_model.set_weights(model.get_weights())
    target = models.mlp((3, 16, 2), seed=0, dtype="float64")
    target.set_weights(agent.target.get_weights())
    state = agent.buffer.rng.bit_generator.state
    loss = agent.train_step()
    agent.buffer.rng.bit_generator.state = state
    batch = agent.buffer.sample(8, "float64")
    q = ref_model.forward(batch["obs"], training=True)
    qn = target.predict(batch["next_obs"])
    rl, rg, _ = _reference(q, qn, batch["actions"], batch["rewards"], batch["dones"], 0.99, 1.0)
    ref_model.backward(rg)
    ref_model.optimizer.step(ref_model.layers)
    assert loss == pytest.approx(rl, rel=1e-12)
    for a, b in zip(model.get_weights(), ref_model.get_weights()):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-15)


def test_agent_learns_the_toy_corridor_and_schedules():
    env = _ToyEnv()
    model = models.mlp((3, 32, 2), seed=0).compile(fastnn.Adam(3e-3), "huber")
    agent = DQN(model, env, total_steps=2000, buffer_size=2000, learning_starts=200,
                batch_size=32, train_frequency=1, target_update_interval=50, gamma=0.8,
                exploration_fraction=0.3, end_e=0.05, seed=0)
    assert agent.epsilon(0) == 1.0 and agent.epsilon(600) == pytest.approx(0.05)
    assert agent.epsilon(300) == pytest.approx(1 - 0.95 * 0.5)
    assert agent.epsilon(1900) == pytest.approx(0.05)
    while agent.steps < 2000:
        agent.step()
    assert agent.updates == 2000 - 200
    returns = agent.evaluate(_ToyEnv(seed=9), episodes=10, max_steps=20)
    assert np.mean(returns) == 1.0  # always walks right to the reward


def test_agent_rejects_mismatched_models():
    env = _ToyEnv()
    with pytest.raises(ValueError, match="compiled"):
        DQN(models.mlp((3, 2)), env, total_steps=10)
    with pytest.raises(ValueError, match=r"needs \(2,\) Q values"):
        DQN(models.mlp((3, 4)).compile("sgd", "huber"), env, total_steps=10)
    with pytest.raises(TypeError, match="Sequential"):
        DQN(object(), env, total_steps=10)
    with pytest.raises(ValueError, match="tau"):
        DQN(models.mlp((3, 2)).compile("sgd", "huber"), env, total_steps=10, tau=0.0)


def test_buffer_of_the_agent_holds_frames_once():
    env = _ToyEnv()
    agent = DQN(models.mlp((3, 2)).compile("sgd", "huber"), env, total_steps=10,
                buffer_size=50)
    assert isinstance(agent.buffer, ReplayBuffer) and agent.buffer.frames.shape == (50, 3)
