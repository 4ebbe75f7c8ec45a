"""Fused optimizer updates over flat parameter arrays (kernels only; inputs checked by fastnn).

Formulas follow PyTorch's torch.optim.SGD and torch.optim.Adam (L2 weight decay added to the grad).
Elementwise, so results do not depend on the number of threads.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt
from _blas cimport fnn_install_blas_hook

cdef Py_ssize_t PAR_MIN = 1 << 15
cdef Py_ssize_t BLOCK = 1 << 13


def sgd_update(floating[::1] param not None, const floating[::1] grad not None,
               floating[::1] velocity not None, double learning_rate, double momentum,
               bint nesterov, double weight_decay, int num_threads):
    """g = grad + wd p; v <- mu v + g; p <- p - lr (g + mu v if nesterov else v).
    With momentum 0, v is unused (may be any length-L array)."""
    cdef Py_ssize_t L = param.shape[0], nb = (L + BLOCK - 1) // BLOCK, b, i, start, stop
    cdef floating lr = <floating>learning_rate, mu = <floating>momentum, wd = <floating>weight_decay
    cdef floating g, v
    if grad.shape[0] != L or (momentum != 0 and velocity.shape[0] != L):
        raise ValueError("sgd_update: param, grad and velocity must have one length")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    with nogil:
        for b in prange(nb, num_threads=num_threads, schedule='static', use_threads_if=L >= PAR_MIN):
            start = b * BLOCK
            stop = min(L, start + BLOCK)
            if mu == 0:
                for i in range(start, stop):
                    param[i] = param[i] - lr * (grad[i] + wd * param[i])
            elif nesterov:
                for i in range(start, stop):
                    g = grad[i] + wd * param[i]
                    v = mu * velocity[i] + g
                    velocity[i] = v
                    param[i] = param[i] - lr * (g + mu * v)
            else:
                for i in range(start, stop):
                    g = grad[i] + wd * param[i]
                    v = mu * velocity[i] + g
                    velocity[i] = v
                    param[i] = param[i] - lr * v


def adam_update(floating[::1] param not None, const floating[::1] grad not None,
                floating[::1] m not None, floating[::1] v not None, double learning_rate,
                double beta1, double beta2, double eps, double weight_decay, long step,
                int num_threads):
    """Adam (Kingma & Ba 2015, Algorithm 1), step t >= 1:
    g = grad + wd p; m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2;
    p <- p - lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)."""
    cdef Py_ssize_t L = param.shape[0], nb = (L + BLOCK - 1) // BLOCK, b, i, start, stop
    cdef double bc1 = 1.0 - beta1 ** step, bc2 = 1.0 - beta2 ** step
    cdef floating lr_t = <floating>(learning_rate / bc1), inv_sqrt_bc2 = <floating>(1.0 / sqrt(bc2))
    cdef floating b1 = <floating>beta1, b2 = <floating>beta2, e = <floating>eps
    cdef floating wd = <floating>weight_decay
    cdef floating g, mi, vi
    if grad.shape[0] != L or m.shape[0] != L or v.shape[0] != L:
        raise ValueError("adam_update: param, grad, m and v must have one length")
    if num_threads < 1 or step < 1:
        raise ValueError("adam_update: need num_threads >= 1 and step >= 1")
    with nogil:
        for b in prange(nb, num_threads=num_threads, schedule='static', use_threads_if=L >= PAR_MIN):
            start = b * BLOCK
            stop = min(L, start + BLOCK)
            for i in range(start, stop):
                g = grad[i] + wd * param[i]
                mi = b1 * m[i] + (1 - b1) * g
                vi = b2 * v[i] + (1 - b2) * g * g
                m[i] = mi
                v[i] = vi
                param[i] = param[i] - lr_t * mi / (sqrt(vi) * inv_sqrt_bc2 + e)


def install_blas_hook(size_t addr):
    fnn_install_blas_hook(addr)
