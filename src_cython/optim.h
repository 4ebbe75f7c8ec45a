/* Inner loops of the optimizer updates (src_cython/optim.pyx), in C so that gcc vectorises them
 * (sqrt and division included), with the same x86-64-v3/v4 clones as simd.h.
 *
 * Formulas follow PyTorch's torch.optim.SGD and torch.optim.Adam (L2 weight decay added to the
 * gradient). One difference: values below the smallest normal number (FLT_MIN = 1.2e-38, DBL_MIN
 * = 2.2e-308) in the gradient and in the optimizer state are flushed to 0. Subnormal arithmetic is
 * about 100x slower on x86 cores, and it is common: the velocity of a unit whose gradient has
 * become zero (a dead ReLU, a memorised sample) decays by the momentum factor through the whole
 * subnormal range. The flushed amounts are below the float resolution of any normal weight.
 */
#ifndef FNN_OPTIM_H
#define FNN_OPTIM_H
#include <float.h>
#include <math.h>
#include "simd.h" /* FNN_CLONES */

#define FNN_FLUSH_F32(x) (fabsf(x) < FLT_MIN ? 0.0f : (x))
#define FNN_FLUSH_F64(x) (fabs(x) < DBL_MIN ? 0.0 : (x))

/* SGD over n elements: g = grad + wd p; v <- mu v + g; p <- p - lr (nesterov ? g + mu v : v).
 * With mu == 0 there is no state: p <- p - lr g (v is not touched and may be NULL). */
#define FNN_DEFINE_SGD(NAME, T, FLUSH)                                                          \
    FNN_CLONES void NAME(T *__restrict p, const T *__restrict grad, T *__restrict v, long n, T lr,    \
                         T mu, int nesterov, T wd) {                                            \
        long i;                                                                                 \
        if (mu == 0) {                                                                          \
            for (i = 0; i < n; i++) {                                                           \
                T g = FLUSH(grad[i]);                                                           \
                p[i] = p[i] - lr * (g + wd * p[i]);                                             \
            }                                                                                   \
        } else if (nesterov) {                                                                  \
            for (i = 0; i < n; i++) {                                                           \
                T g = FLUSH(grad[i]) + wd * p[i];                                               \
                T vi = mu * v[i] + g;                                                           \
                vi = FLUSH(vi);                                                                 \
                v[i] = vi;                                                                      \
                p[i] = p[i] - lr * (g + mu * vi);                                               \
            }                                                                                   \
        } else {                                                                                \
            for (i = 0; i < n; i++) {                                                           \
                T g = FLUSH(grad[i]) + wd * p[i];                                               \
                T vi = mu * v[i] + g;                                                           \
                vi = FLUSH(vi);                                                                 \
                v[i] = vi;                                                                      \
                p[i] = p[i] - lr * vi;                                                          \
            }                                                                                   \
        }                                                                                       \
    }

/* Adam over n elements (Kingma & Ba 2015, Algorithm 1, as torch.optim.Adam):
 * g = grad + wd p; m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2;
 * p <- p - lr_t m / (sqrt(v) * inv_sqrt_bc2 + eps), lr_t = lr / (1 - b1^t),
 * inv_sqrt_bc2 = 1 / sqrt(1 - b2^t). */
#define FNN_DEFINE_ADAM(NAME, T, FLUSH, SQRT)                                                   \
    FNN_CLONES void NAME(T *__restrict p, const T *__restrict grad, T *__restrict m, T *__restrict v,   \
                         long n, T lr_t, T b1, T b2, T eps, T wd, T inv_sqrt_bc2) {             \
        long i;                                                                                 \
        for (i = 0; i < n; i++) {                                                               \
            T g = FLUSH(grad[i]) + wd * p[i];                                                   \
            T mi = b1 * m[i] + (1 - b1) * g;                                                    \
            T vi = b2 * v[i] + (1 - b2) * g * g;                                                \
            mi = FLUSH(mi);                                                                     \
            vi = FLUSH(vi);                                                                     \
            m[i] = mi;                                                                          \
            v[i] = vi;                                                                          \
            p[i] = p[i] - lr_t * mi / (SQRT(vi) * inv_sqrt_bc2 + eps);                          \
        }                                                                                       \
    }

static FNN_DEFINE_SGD(fnn_sgd_f32, float, FNN_FLUSH_F32)
static FNN_DEFINE_SGD(fnn_sgd_f64, double, FNN_FLUSH_F64)
static FNN_DEFINE_ADAM(fnn_adam_f32, float, FNN_FLUSH_F32, sqrtf)
static FNN_DEFINE_ADAM(fnn_adam_f64, double, FNN_FLUSH_F64, sqrt)

#endif
