"""fastnn.rl.ReplayBuffer against a naive buffer that keeps every stacked observation, and the
frame-stack gather kernel (no gymnasium needed)."""
from collections import Counter

import numpy as np
import pytest

import fastnn
from fastnn import _rl
from fastnn.rl import ReplayBuffer


def _episodes(rng, n_steps, H=6, W=5, stack=4, p_end=0.08, p_life=0.05):
    """A random stream of (frame, action, reward, done, first) and, for each, the stacked
    observation (H, W, stack) built the naive way: a deque of frames, refilled with the first
    frame at each episode start or after each lost life (as the Atari env does)."""
    stream = []
    stack_frames = None
    first = True
    for _ in range(n_steps):
        frame = rng.integers(0, 256, size=(H, W), dtype=np.uint8)
        if first:
            stack_frames = [frame] * stack
        else:
            stack_frames = stack_frames[1:] + [frame]
        obs = np.stack(stack_frames, axis=-1)
        u = rng.random()
        done = u < p_end + p_life
        stream.append((frame, int(rng.integers(4)), float(rng.normal()), done, first, obs))
        first = done
    return stream


@pytest.mark.parametrize("capacity,n_steps", [(200, 150), (23, 150), (9, 40)])
def test_samples_match_the_naive_stacked_buffer(capacity, n_steps):
    rng = np.random.default_rng(capacity)
    stream = _episodes(rng, n_steps)
    buf = ReplayBuffer(capacity, (6, 5), stack=4, seed=1)
    ref = {}  # slot -> (obs, action, reward, done, next obs or None)
    last_slot = None
    for frame, a, r, done, first, obs in stream:
        slot = buf.pos
        buf.add(frame, a, r, done, first)
        if last_slot is not None:
            o, a0, r0, d0, _ = ref[last_slot]
            ref[last_slot] = (o, a0, r0, d0, obs)
        ref[slot] = (obs, a, r, done, None)
        last_slot = slot
    assert buf.added == n_steps
    assert buf.size == (capacity - 4 if n_steps >= capacity else n_steps - 1)
    seen = Counter()
    for _ in range(40):
        batch = buf.sample(32, dtype="float64", scale=1.0)
        assert batch["obs"].shape == (32, 6, 5, 4) and batch["obs"].dtype == np.float64
        for i, slot in enumerate(batch["index"]):
            obs, a, r, done, nxt = ref[int(slot)]
            assert nxt is not None, "sampled the newest transition (no next observation yet)"
            np.testing.assert_array_equal(batch["obs"][i], obs)
            assert batch["actions"][i] == a
            assert batch["rewards"][i] == np.float32(r)
            assert batch["dones"][i] == float(done)
            # the next observation is the stored one of the next slot; across an episode
            # boundary (done) it is the next episode's first, which the TD target ignores
            np.testing.assert_array_equal(batch["next_obs"][i], nxt)
            seen[int(slot)] += 1
    # every sampleable slot is drawn (uniform over buf.size slots; 1280 draws)
    assert len(seen) == buf.size
    if n_steps >= capacity:  # the oldest stack - 1 slots lost their history: never drawn
        oldest = {(buf.pos + k) % capacity for k in range(3)}
        assert not oldest & set(seen)


def test_float_observations_and_default_scale():
    buf = ReplayBuffer(10, (3,), frame_dtype="float32", seed=0)
    for t in range(12):
        buf.add(np.full(3, t, np.float32), t % 2, t, t % 5 == 4, t == 0)
    b = buf.sample(64)
    # slots hold t = 2..11 (10 and 11 in slots 0 and 1); transition t's next observation is
    # t + 1; with one frame per observation only the newest (11) cannot be sampled
    np.testing.assert_array_equal(b["next_obs"][:, 0], b["obs"][:, 0] + 1)
    np.testing.assert_array_equal(b["rewards"], b["obs"][:, 0])
    assert set(b["obs"][:, 0].astype(int)) == set(range(2, 11))
    ub = ReplayBuffer(5, (2, 2), stack=1)
    ub.add(np.full((2, 2), 255, np.uint8), 0, 0.0, False, True)
    ub.add(np.zeros((2, 2), np.uint8), 0, 0.0, False, False)
    np.testing.assert_allclose(ub.sample(1)["obs"], np.ones((1, 2, 2, 1), np.float32))


def test_same_seed_same_samples_and_state_roundtrip():
    def filled(seed):
        buf = ReplayBuffer(30, (4, 4), stack=4, seed=seed)
        rng = np.random.default_rng(0)
        for frame, a, r, d, f, _ in _episodes(rng, 45, H=4, W=4):
            buf.add(frame, a, r, d, f)
        return buf

    a, b = filled(7), filled(7)
    for key in ("obs", "next_obs", "index"):
        np.testing.assert_array_equal(a.sample(8)[key], b.sample(8)[key])
    arrays, meta = a.state_dict()
    c = ReplayBuffer(30, (4, 4), stack=4, seed=123)
    c.load_state_dict({k: v.copy() for k, v in arrays.items()}, meta)
    x, y = a.sample(16), c.sample(16)
    for key in x:
        np.testing.assert_array_equal(x[key], y[key])
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(31, (4, 4), stack=4).load_state_dict(arrays, meta)


def test_memory_is_one_frame_per_transition():
    buf = ReplayBuffer(1000, (84, 84), stack=4)
    assert buf.frames.nbytes == 1000 * 84 * 84
    assert buf.nbytes < 1000 * 84 * 84 * 1.01


def test_bad_arguments():
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(4, (84, 84), stack=4)
    with pytest.raises(ValueError, match="stack > 1 needs 2-D uint8"):
        ReplayBuffer(10, (4,), stack=4, frame_dtype="float32")
    with pytest.raises(TypeError, match="frame_dtype"):
        ReplayBuffer(10, (4,), frame_dtype="int32")
    buf = ReplayBuffer(10, (2, 2), stack=2)
    with pytest.raises(ValueError, match="first transition"):
        buf.add(np.zeros((2, 2)), 0, 0.0, False, False)
    with pytest.raises(ValueError, match=r"frame must have shape \(2, 2\)"):
        buf.add(np.zeros((3, 2)), 0, 0.0, False, True)
    with pytest.raises(ValueError, match="no transition to sample"):
        buf.sample(4)
    buf.add(np.zeros((2, 2)), 0, 0.0, False, True)
    with pytest.raises(ValueError, match="no transition to sample"):
        buf.sample(4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gather_kernel_same_bits_for_any_thread_count(dtype):
    rng = np.random.default_rng(3)
    C, H, W, S, B = 50, 84, 84, 4, 32
    frames = rng.integers(0, 256, size=(C, H, W), dtype=np.uint8)
    first = (rng.random(C) < 0.2).astype(np.uint8)
    index = rng.integers(0, C, size=B).astype(np.int64)
    outs = []
    for n in (1, 2, 3):
        out = np.empty((B, H, W, S), dtype)
        _rl.gather_stacks(frames, first, index, out, 1 / 255, n)
        outs.append(out)
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    # naive: walk back, repeating the frame of a slot that starts its episode
    for b in range(B):
        src = [int(index[b])]
        for _ in range(S - 1):
            cur = src[0]
            src.insert(0, cur if first[cur] else (cur - 1) % C)
        ref = np.stack([frames[s] for s in src], axis=-1).astype(dtype) * dtype(1 / 255)
        np.testing.assert_array_equal(outs[0][b], ref)
    assert fastnn.get_num_threads() >= 1
