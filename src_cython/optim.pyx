"""Fused optimizer updates over flat parameter arrays (kernels only; inputs checked by fastnn).

fastnn keeps all parameters of a model in one flat buffer (and the gradients and each optimizer
slot in buffers of the same layout), so one call updates the whole model: one parallel region,
fixed blocks of ``BLOCK`` elements, the loops of ``optim.h`` (vectorised, subnormals flushed to 0).
Formulas follow PyTorch's torch.optim.SGD and torch.optim.Adam (L2 weight decay added to the grad).
Elementwise, so results do not depend on the number of threads.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt

cdef extern from "optim.h" nogil:
    void fnn_sgd_f32(float *p, const float *grad, float *v, long n, float lr, float mu,
                     int nesterov, float wd)
    void fnn_sgd_f64(double *p, const double *grad, double *v, long n, double lr, double mu,
                     int nesterov, double wd)
    void fnn_adam_f32(float *p, const float *grad, float *m, float *v, long n, float lr_t,
                      float b1, float b2, float eps, float wd, float inv_sqrt_bc2)
    void fnn_adam_f64(double *p, const double *grad, double *m, double *v, long n, double lr_t,
                      double b1, double b2, double eps, double wd, double inv_sqrt_bc2)

# Below this many elements an update runs on one thread (fork/join costs more than it saves).
cdef Py_ssize_t PAR_MIN = 1 << 15
cdef Py_ssize_t BLOCK = 1 << 14


def sgd_update(floating[::1] param not None, const floating[::1] grad not None,
               floating[::1] velocity not None, double learning_rate, double momentum,
               bint nesterov, double weight_decay, int num_threads):
    """g = grad + wd p; v <- mu v + g; p <- p - lr (g + mu v if nesterov else v).
    With momentum 0, v is unused (may be any length-L array)."""
    cdef Py_ssize_t L = param.shape[0], nb = (L + BLOCK - 1) // BLOCK, b, start, size
    cdef floating lr = <floating>learning_rate, mu = <floating>momentum, wd = <floating>weight_decay
    cdef floating *vp
    if grad.shape[0] != L or (momentum != 0 and velocity.shape[0] != L):
        raise ValueError("sgd_update: param, grad and velocity must have one length")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if L == 0:
        return
    with nogil:
        for b in prange(nb, num_threads=num_threads, schedule='static', use_threads_if=L >= PAR_MIN):
            start = b * BLOCK
            size = min(BLOCK, L - start)
            vp = &velocity[start] if mu != 0 else NULL
            if floating is float:
                fnn_sgd_f32(&param[start], &grad[start], vp, size, lr, mu, nesterov, wd)
            else:
                fnn_sgd_f64(&param[start], &grad[start], vp, size, lr, mu, nesterov, wd)


def adam_update(floating[::1] param not None, const floating[::1] grad not None,
                floating[::1] m not None, floating[::1] v not None, double learning_rate,
                double beta1, double beta2, double eps, double weight_decay, long step,
                int num_threads):
    """Adam (Kingma & Ba 2015, Algorithm 1), step t >= 1:
    g = grad + wd p; m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2;
    p <- p - lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)."""
    cdef Py_ssize_t L = param.shape[0], nb = (L + BLOCK - 1) // BLOCK, b, start, size
    cdef double bc1 = 1.0 - beta1 ** step, bc2 = 1.0 - beta2 ** step
    cdef floating lr_t = <floating>(learning_rate / bc1), inv_sqrt_bc2 = <floating>(1.0 / sqrt(bc2))
    cdef floating b1 = <floating>beta1, b2 = <floating>beta2, e = <floating>eps
    cdef floating wd = <floating>weight_decay
    if grad.shape[0] != L or m.shape[0] != L or v.shape[0] != L:
        raise ValueError("adam_update: param, grad, m and v must have one length")
    if num_threads < 1 or step < 1:
        raise ValueError("adam_update: need num_threads >= 1 and step >= 1")
    if L == 0:
        return
    with nogil:
        for b in prange(nb, num_threads=num_threads, schedule='static', use_threads_if=L >= PAR_MIN):
            start = b * BLOCK
            size = min(BLOCK, L - start)
            if floating is float:
                fnn_adam_f32(&param[start], &grad[start], &m[start], &v[start], size, lr_t,
                             b1, b2, e, wd, inv_sqrt_bc2)
            else:
                fnn_adam_f64(&param[start], &grad[start], &m[start], &v[start], size, lr_t,
                             b1, b2, e, wd, inv_sqrt_bc2)
