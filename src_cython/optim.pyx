"""Fused optimizer updates over flat parameter arrays (kernels only; inputs checked by fastnn).

fastnn keeps all parameters of a model in one flat buffer (and the gradients and each optimizer
slot in buffers of the same layout), so one call updates the whole model: one parallel region,
fixed blocks of ``BLOCK`` elements, the loops of ``optim.h`` (vectorised, subnormals flushed to 0).
Formulas follow PyTorch's torch.optim.SGD, Adam, AdamW, RMSprop and Adagrad. Elementwise, so
results do not depend on the number of threads.

Gradient clipping is fused into every update: the kernels read ``clamp(grad * grad_scale,
-clip_value, clip_value)`` (defaults 1 and inf: the gradient as it is) and never write the
gradient. ``grad_norm`` is the global L2 norm for norm clipping, a reduction over the same fixed
blocks whose partial sums are added in block order (thread-count independent).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt, INFINITY
from libc.stdlib cimport malloc, free

cdef extern from "optim.h" nogil:
    void fnn_sgd_f32(float *p, const float *grad, float *v, long n, float lr, float mu,
                     int nesterov, float wd, float scale, float cv)
    void fnn_sgd_f64(double *p, const double *grad, double *v, long n, double lr, double mu,
                     int nesterov, double wd, double scale, double cv)
    void fnn_adam_f32(float *p, const float *grad, float *m, float *v, long n, float lr_t,
                      float b1, float b2, float eps, float wd, float inv_sqrt_bc2, float decay,
                      float scale, float cv)
    void fnn_adam_f64(double *p, const double *grad, double *m, double *v, long n, double lr_t,
                      double b1, double b2, double eps, double wd, double inv_sqrt_bc2,
                      double decay, double scale, double cv)
    void fnn_rmsprop_f32(float *p, const float *grad, float *s, float *a, float *b, long n,
                         float lr, float rho, float eps, float wd, float mom, float scale,
                         float cv)
    void fnn_rmsprop_f64(double *p, const double *grad, double *s, double *a, double *b, long n,
                         double lr, double rho, double eps, double wd, double mom, double scale,
                         double cv)
    void fnn_adagrad_f32(float *p, const float *grad, float *s, long n, float clr, float eps,
                         float wd, float scale, float cv)
    void fnn_adagrad_f64(double *p, const double *grad, double *s, long n, double clr,
                         double eps, double wd, double scale, double cv)
    double fnn_sumsq_f32(const float *x, long n)
    double fnn_sumsq_f64(const double *x, long n)

# Below this many elements an update runs on one thread (fork/join costs more than it saves).
cdef Py_ssize_t PAR_MIN = 1 << 15
cdef Py_ssize_t BLOCK = 1 << 14


cdef int _check_common(str name, Py_ssize_t L, Py_ssize_t grad_len, int num_threads,
                       double grad_scale, double clip_value) except -1:
    if grad_len != L:
        raise ValueError(f"{name}: grad has length {grad_len}, param {L}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if not (grad_scale >= 0.0) or grad_scale == INFINITY:
        raise ValueError(f"{name}: grad_scale must be finite and >= 0, got {grad_scale}")
    if not (clip_value > 0.0):
        raise ValueError(f"{name}: clip_value must be > 0 (inf: no clipping), got {clip_value}")
    return 0


def sgd_update(floating[::1] param not None, const floating[::1] grad not None,
               floating[::1] velocity not None, double learning_rate, double momentum,
               bint nesterov, double weight_decay, int num_threads, double grad_scale=1.0,
               double clip_value=INFINITY):
    """g = clip(grad) + wd p; v <- mu v + g; p <- p - lr (g + mu v if nesterov else v).
    With momentum 0, v is unused (may be any length-L array)."""
    cdef Py_ssize_t L = param.shape[0], nb = (L + BLOCK - 1) // BLOCK, b, start, size
    cdef floating lr = <floating>learning_rate, mu = <floating>momentum, wd = <floating>weight_decay
    cdef floating sc = <floating>grad_scale, cv = <floating>clip_value
    cdef floating *vp
    if grad.shape[0] != L or (momentum != 0 and velocity.shape[0] != L):
        raise ValueError("sgd_update: param, grad and velocity must have one length")
    _check_common("sgd_update", L, grad.shape[0], num_threads, grad_scale, clip_value)
    if L == 0:
        return
    with nogil:
        for b in prange(nb, num_threads=num_threads, schedule='static', use_threads_if=L >= PAR_MIN):
            start = b * BLOCK
            size = min(BLOCK, L - start)
            vp = &velocity[start] if mu != 0 else NULL
            if floating is float:
                fnn_sgd_f32(&param[start], &grad[start], vp, size, lr, mu, nesterov, wd, sc, cv)
            else:
                fnn_sgd_f64(&param[start], &grad[start], vp, size, lr, mu, nesterov, wd, sc, cv)


cdef int _adam(floating[::1] param, const floating[::1] grad, floating[::1] m, floating[::1] v,
               double learning_rate, double beta1, double beta2, double eps, double weight_decay,
               double decay, long step, int num_threads, double grad_scale,
               double clip_value, str name) except -1:
    cdef Py_ssize_t L = param.shape[0], nb = (L + BLOCK - 1) // BLOCK, b, start, size
    cdef double bc1, bc2
    cdef floating lr_t, inv_sqrt_bc2
    cdef floating b1 = <floating>beta1, b2 = <floating>beta2, e = <floating>eps
    cdef floating wd = <floating>weight_decay, dc = <floating>decay
    cdef floating sc = <floating>grad_scale, cv = <floating>clip_value
    if grad.shape[0] != L or m.shape[0] != L or v.shape[0] != L:
        raise ValueError(f"{name}: param, grad, m and v must have one length")
    if num_threads < 1 or step < 1:
        raise ValueError(f"{name}: need num_threads >= 1 and step >= 1")
    _check_common(name, L, grad.shape[0], num_threads, grad_scale, clip_value)
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    lr_t = <floating>(learning_rate / bc1)
    inv_sqrt_bc2 = <floating>(1.0 / sqrt(bc2))
    if L == 0:
        return 0
    with nogil:
        for b in prange(nb, num_threads=num_threads, schedule='static', use_threads_if=L >= PAR_MIN):
            start = b * BLOCK
            size = min(BLOCK, L - start)
            if floating is float:
                fnn_adam_f32(&param[start], &grad[start], &m[start], &v[start], size, lr_t,
                             b1, b2, e, wd, inv_sqrt_bc2, dc, sc, cv)
            else:
                fnn_adam_f64(&param[start], &grad[start], &m[start], &v[start], size, lr_t,
                             b1, b2, e, wd, inv_sqrt_bc2, dc, sc, cv)
    return 0


def adam_update(floating[::1] param not None, const floating[::1] grad not None,
                floating[::1] m not None, floating[::1] v not None, double learning_rate,
                double beta1, double beta2, double eps, double weight_decay, long step,
                int num_threads, double grad_scale=1.0, double clip_value=INFINITY):
    """Adam (Kingma & Ba 2015, Algorithm 1), step t >= 1:
    g = clip(grad) + wd p; m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2;
    p <- p - lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)."""
    _adam(param, grad, m, v, learning_rate, beta1, beta2, eps, weight_decay, 1.0, step,
          num_threads, grad_scale, clip_value, "adam_update")


def adamw_update(floating[::1] param not None, const floating[::1] grad not None,
                 floating[::1] m not None, floating[::1] v not None, double learning_rate,
                 double beta1, double beta2, double eps, double weight_decay, long step,
                 int num_threads, double grad_scale=1.0, double clip_value=INFINITY):
    """AdamW (torch.optim.AdamW), step t >= 1: p <- p (1 - lr wd), then the Adam step with
    g = clip(grad) (no L2 term)."""
    _adam(param, grad, m, v, learning_rate, beta1, beta2, eps, 0.0,
          1.0 - learning_rate * weight_decay, step, num_threads, grad_scale, clip_value,
          "adamw_update")


def rmsprop_update(floating[::1] param not None, const floating[::1] grad not None,
                   floating[::1] square_avg not None, floating[::1] grad_avg not None,
                   floating[::1] momentum_buffer not None, double learning_rate, double rho,
                   double eps, double weight_decay, double momentum, bint centered,
                   int num_threads, double grad_scale=1.0, double clip_value=INFINITY):
    """RMSprop (torch.optim.RMSprop, rho = torch's alpha): g = clip(grad) + wd p;
    s <- rho s + (1-rho) g^2; centered: a <- rho a + (1-rho) g, d = sqrt(s - a^2) + eps, else
    d = sqrt(s) + eps; momentum > 0: b <- momentum b + g / d, p <- p - lr b; else
    p <- p - lr g / d. grad_avg is unused unless centered, momentum_buffer unless momentum > 0
    (then they may be any arrays of the dtype)."""
    cdef Py_ssize_t L = param.shape[0], nb = (L + BLOCK - 1) // BLOCK, b, start, size
    cdef floating lr = <floating>learning_rate, r = <floating>rho, e = <floating>eps
    cdef floating wd = <floating>weight_decay, mom = <floating>momentum
    cdef floating sc = <floating>grad_scale, cv = <floating>clip_value
    cdef floating *ap
    cdef floating *bp
    if square_avg.shape[0] != L or (centered and grad_avg.shape[0] != L) \
            or (momentum != 0 and momentum_buffer.shape[0] != L):
        raise ValueError("rmsprop_update: param, grad and the used slots must have one length")
    _check_common("rmsprop_update", L, grad.shape[0], num_threads, grad_scale, clip_value)
    if L == 0:
        return
    with nogil:
        for b in prange(nb, num_threads=num_threads, schedule='static', use_threads_if=L >= PAR_MIN):
            start = b * BLOCK
            size = min(BLOCK, L - start)
            ap = &grad_avg[start] if centered else NULL
            bp = &momentum_buffer[start] if mom != 0 else NULL
            if floating is float:
                fnn_rmsprop_f32(&param[start], &grad[start], &square_avg[start], ap, bp, size,
                                lr, r, e, wd, mom, sc, cv)
            else:
                fnn_rmsprop_f64(&param[start], &grad[start], &square_avg[start], ap, bp, size,
                                lr, r, e, wd, mom, sc, cv)


def adagrad_update(floating[::1] param not None, const floating[::1] grad not None,
                   floating[::1] state_sum not None, double learning_rate, double eps,
                   double weight_decay, double lr_decay, long step, int num_threads,
                   double grad_scale=1.0, double clip_value=INFINITY):
    """Adagrad (torch.optim.Adagrad), step t >= 1: clr = lr / (1 + (t-1) lr_decay);
    g = clip(grad) + wd p; s <- s + g^2; p <- p - clr g / (sqrt(s) + eps)."""
    cdef Py_ssize_t L = param.shape[0], nb = (L + BLOCK - 1) // BLOCK, b, start, size
    cdef floating clr, e = <floating>eps, wd = <floating>weight_decay
    cdef floating sc = <floating>grad_scale, cv = <floating>clip_value
    if state_sum.shape[0] != L:
        raise ValueError("adagrad_update: param, grad and state_sum must have one length")
    if step < 1:
        raise ValueError(f"adagrad_update: step must be >= 1, got {step}")
    _check_common("adagrad_update", L, grad.shape[0], num_threads, grad_scale, clip_value)
    clr = <floating>(learning_rate / (1.0 + (step - 1) * lr_decay))
    if L == 0:
        return
    with nogil:
        for b in prange(nb, num_threads=num_threads, schedule='static', use_threads_if=L >= PAR_MIN):
            start = b * BLOCK
            size = min(BLOCK, L - start)
            if floating is float:
                fnn_adagrad_f32(&param[start], &grad[start], &state_sum[start], size, clr, e, wd,
                                sc, cv)
            else:
                fnn_adagrad_f64(&param[start], &grad[start], &state_sum[start], size, clr, e, wd,
                                sc, cv)


def grad_norm(const floating[::1] grad not None, int num_threads):
    """Global L2 norm ``sqrt(sum(grad**2))`` (float, accumulated in float64; subnormals read as 0
    like the updates do). Blocks of ``BLOCK`` elements are summed in parallel and their sums added
    in block order, so the result does not depend on ``num_threads``."""
    cdef Py_ssize_t L = grad.shape[0], nb = (L + BLOCK - 1) // BLOCK, b, start, size
    cdef double total = 0.0
    cdef double *partial
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if L == 0:
        return 0.0
    partial = <double *>malloc(nb * sizeof(double))
    if partial == NULL:
        raise MemoryError()
    with nogil:
        for b in prange(nb, num_threads=num_threads, schedule='static', use_threads_if=L >= PAR_MIN):
            start = b * BLOCK
            size = min(BLOCK, L - start)
            if floating is float:
                partial[b] = fnn_sumsq_f32(&grad[start], size)
            else:
                partial[b] = fnn_sumsq_f64(&grad[start], size)
        for b in range(nb):
            total = total + partial[b]
    free(partial)
    return sqrt(total)
