"""Kernels of fastnn.rl (kernels only; every input is checked by fastnn.rl before it gets here).

- ``td_huber``: the DQN loss in one pass over the batch: the TD target (plain or double DQN),
  the gather of the chosen action's Q value, the Huber loss and the scatter of its gradient
  into the ``(B, A)`` output gradient (zero except at the chosen actions). The batch is small
  (32): one thread, the loss summed in row order.
- ``polyak_update``: ``target <- (1 - tau) target + tau online`` over the flat parameter
  buffers, fixed blocks over threads (elementwise: the same bits for any thread count).
- ``gather_stacks``: rebuild ``(B, H, W, S)`` channels-last frame stacks from a replay buffer
  that stores each frame once, converting uint8 to float and scaling on the way; frames from
  before an episode's first frame repeat that first frame (gymnasium's FrameStackObservation
  with ``padding_type="reset"``, as in CleanRL).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint8_t
from libc.math cimport nearbyintf

cdef Py_ssize_t PAR_MIN = 1 << 15
cdef Py_ssize_t BLOCK = 1 << 14


cdef double _td_huber(const floating[:, ::1] q, const floating[:, ::1] q_next,
                      const floating[:, ::1] q_next_online, const int64_t[::1] actions,
                      const floating[::1] rewards, const floating[::1] dones, double gamma,
                      double delta, bint double_dqn, floating[:, ::1] grad,
                      floating[::1] target) noexcept nogil:
    cdef Py_ssize_t B = q.shape[0], A = q.shape[1], i, j, best
    cdef floating best_q, y, diff, g, d = <floating>delta, inv_b = <floating>(1.0 / B)
    cdef floating gm = <floating>gamma, half = <floating>0.5
    cdef double total = 0.0
    for i in range(B):
        best = 0
        if double_dqn:
            # action chosen by the online network (first maximum, as argmax), valued by the target
            best_q = q_next_online[i, 0]
            for j in range(1, A):
                if q_next_online[i, j] > best_q:
                    best_q = q_next_online[i, j]
                    best = j
            best_q = q_next[i, best]
        else:
            best_q = q_next[i, 0]
            for j in range(1, A):
                if q_next[i, j] > best_q:
                    best_q = q_next[i, j]
        y = rewards[i] + gm * (1 - dones[i]) * best_q
        target[i] = y
        diff = q[i, actions[i]] - y
        for j in range(A):
            grad[i, j] = 0
        if diff <= d and diff >= -d:
            total += half * diff * diff
            g = diff
        elif diff > d:
            total += d * (diff - half * d)
            g = d
        else:
            total += d * (-diff - half * d)
            g = -d
        grad[i, actions[i]] = g * inv_b
    return total / B


def td_huber(const floating[:, ::1] q not None, const floating[:, ::1] q_next not None,
             const floating[:, ::1] q_next_online not None, const int64_t[::1] actions not None,
             const floating[::1] rewards not None, const floating[::1] dones not None,
             double gamma, double delta, bint double_dqn, floating[:, ::1] grad not None,
             floating[::1] target not None):
    """Mean Huber loss of ``q[i, actions[i]]`` against ``y_i = r_i + gamma (1 - d_i) V_i``;
    ``V_i = max_j q_next[i, j]``, or with ``double_dqn`` ``q_next[i, argmax_j
    q_next_online[i, j]]``. Writes ``target`` (B,) = y and ``grad`` (B, A) = d loss / d q."""
    cdef double loss
    with nogil:
        loss = _td_huber(q, q_next, q_next_online, actions, rewards, dones, gamma, delta,
                         double_dqn, grad, target)
    return loss


def polyak_update(floating[::1] target not None, const floating[::1] online not None,
                  double tau, int num_threads):
    """``target <- (1 - tau) * target + tau * online`` elementwise (in the buffers' dtype)."""
    cdef Py_ssize_t L = target.shape[0], nb = (L + BLOCK - 1) // BLOCK, b, k, start, stop
    cdef floating t = <floating>tau, keep = <floating>(1.0 - tau)
    with nogil:
        for b in prange(nb, num_threads=num_threads, schedule='static',
                        use_threads_if=L >= PAR_MIN):
            start = b * BLOCK
            stop = min(L, start + BLOCK)
            for k in range(start, stop):
                target[k] = keep * target[k] + t * online[k]


cdef void _one_stack(const uint8_t[:, :, ::1] frames, const uint8_t[::1] first,
                     Py_ssize_t t, floating[:, :, :, ::1] out, Py_ssize_t b,
                     floating sc) noexcept nogil:
    cdef Py_ssize_t H = out.shape[1], W = out.shape[2], S = out.shape[3]
    cdef Py_ssize_t C = frames.shape[0], h, w, k, cur = t
    cdef Py_ssize_t src[64]  # S <= 64, checked by the caller
    for k in range(S - 1, -1, -1):
        src[k] = cur
        if k > 0 and not first[cur]:
            cur = cur - 1 if cur > 0 else C - 1
    for h in range(H):
        for w in range(W):
            for k in range(S):
                out[b, h, w, k] = sc * frames[src[k], h, w]


def gather_stacks(const uint8_t[:, :, ::1] frames not None, const uint8_t[::1] first not None,
                  const int64_t[::1] index not None, floating[:, :, :, ::1] out not None,
                  double scale, int num_threads):
    """``out[b, h, w, k] = scale * frames[src_k, h, w]``: the stack of ``S = out.shape[3]``
    frames (``S <= 64``) ending at slot ``index[b]`` of the circular store ``frames`` (C, H, W);
    walking back from slot ``t``, a slot with ``first[t] == 1`` starts its episode, and the
    frames before it repeat it."""
    cdef Py_ssize_t B = out.shape[0], b
    cdef Py_ssize_t n = B * out.shape[1] * out.shape[2] * out.shape[3]
    cdef floating sc = <floating>scale
    with nogil:
        for b in prange(B, num_threads=num_threads, schedule='static', use_threads_if=n >= PAR_MIN):
            _one_stack(frames, first, index[b], out, b, sc)


def max_area_resize(const uint8_t[:, ::1] a not None, const uint8_t[:, ::1] b not None,
                    const int64_t[:, ::1] row_index not None, const float[:, ::1] row_weight not None,
                    const int64_t[:, ::1] col_index not None, const float[:, ::1] col_weight not None,
                    uint8_t[:, ::1] out not None):
    """``out[i, j] = round(sum_{r, c} row_weight[i, r] col_weight[j, c] max(a, b)[row_index[i, r],
    col_index[j, c]])``: the max of two frames, then area interpolation (separable weights, each
    row of weights summing to 1), rounded half to even and clamped to [0, 255]."""
    cdef Py_ssize_t OH = out.shape[0], OW = out.shape[1], KR = row_index.shape[1]
    cdef Py_ssize_t KC = col_index.shape[1], i, j, r, c, y, x
    cdef float acc, rowacc, v
    with nogil:
        for i in range(OH):
            for j in range(OW):
                acc = 0
                for r in range(KR):
                    y = row_index[i, r]
                    rowacc = 0
                    for c in range(KC):
                        x = col_index[j, c]
                        v = a[y, x] if a[y, x] > b[y, x] else b[y, x]
                        rowacc = rowacc + col_weight[j, c] * v
                    acc = acc + row_weight[i, r] * rowacc
                acc = nearbyintf(acc)
                out[i, j] = <uint8_t>(0 if acc < 0 else (255 if acc > 255 else acc))
