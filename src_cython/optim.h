/* Inner loops of the optimizer updates (src_cython/optim.pyx), in C so that gcc vectorises them
 * (sqrt and division included), with the same x86-64-v3/v4 clones as simd.h.
 *
 * Formulas follow PyTorch's torch.optim.SGD, Adam, AdamW, RMSprop and Adagrad (L2 weight decay
 * added to the gradient, except AdamW's decoupled decay). One difference: values below the
 * smallest normal number (FLT_MIN = 1.2e-38, DBL_MIN = 2.2e-308) in the gradient and in the
 * optimizer state are flushed to 0. Subnormal arithmetic is about 100x slower on x86 cores, and it
 * is common: the velocity of a unit whose gradient has become zero (a dead ReLU, a memorised
 * sample) decays by the momentum factor through the whole subnormal range. The flushed amounts are
 * below the float resolution of any normal weight.
 *
 * Gradient clipping is fused into every update: each kernel reads the gradient as
 * g = clamp(flush(grad) * scale, -cv, cv), scale being the global-norm factor (1 without norm
 * clipping, computed beforehand by fnn_sumsq_*) and cv the clip value (INFINITY without value
 * clipping; a NaN gradient stays NaN). With scale = 1 and cv = inf the gradient is used exactly
 * as it is. The gradient buffer itself is never written.
 */
#ifndef FNN_OPTIM_H
#define FNN_OPTIM_H
#include <float.h>
#include <math.h>
#include "simd.h" /* FNN_CLONES */

#define FNN_FLUSH_F32(x) (fabsf(x) < FLT_MIN ? 0.0f : (x))
#define FNN_FLUSH_F64(x) (fabs(x) < DBL_MIN ? 0.0 : (x))
/* the clipped gradient; comparisons with NaN are false, so NaN passes through */
#define FNN_CLIP(x, scale, cv) ((x) * (scale) < -(cv) ? -(cv) : ((x) * (scale) > (cv) ? (cv) : (x) * (scale)))

/* SGD over n elements: g = clip(grad) + wd p; v <- mu v + g; p <- p - lr (nesterov ? g + mu v : v).
 * With mu == 0 there is no state: p <- p - lr g (v is not touched and may be NULL). */
#define FNN_DEFINE_SGD(NAME, T, FLUSH)                                                          \
    FNN_CLONES void NAME(T *__restrict p, const T *__restrict grad, T *__restrict v, long n, T lr,    \
                         T mu, int nesterov, T wd, T scale, T cv) {                             \
        long i;                                                                                 \
        if (mu == 0) {                                                                          \
            for (i = 0; i < n; i++) {                                                           \
                T g0 = FLUSH(grad[i]);                                                          \
                T g = FNN_CLIP(g0, scale, cv);                                                  \
                p[i] = p[i] - lr * (g + wd * p[i]);                                             \
            }                                                                                   \
        } else if (nesterov) {                                                                  \
            for (i = 0; i < n; i++) {                                                           \
                T g0 = FLUSH(grad[i]);                                                          \
                T g = FNN_CLIP(g0, scale, cv) + wd * p[i];                                      \
                T vi = mu * v[i] + g;                                                           \
                vi = FLUSH(vi);                                                                 \
                v[i] = vi;                                                                      \
                p[i] = p[i] - lr * (g + mu * vi);                                               \
            }                                                                                   \
        } else {                                                                                \
            for (i = 0; i < n; i++) {                                                           \
                T g0 = FLUSH(grad[i]);                                                          \
                T g = FNN_CLIP(g0, scale, cv) + wd * p[i];                                      \
                T vi = mu * v[i] + g;                                                           \
                vi = FLUSH(vi);                                                                 \
                v[i] = vi;                                                                      \
                p[i] = p[i] - lr * vi;                                                          \
            }                                                                                   \
        }                                                                                       \
    }

/* Adam over n elements (Kingma & Ba 2015, Algorithm 1, as torch.optim.Adam / AdamW):
 * g = clip(grad) + wd p; m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2;
 * p <- decay p - lr_t m / (sqrt(v) * inv_sqrt_bc2 + eps), lr_t = lr / (1 - b1^t),
 * inv_sqrt_bc2 = 1 / sqrt(1 - b2^t). Adam: decay = 1 (exact); AdamW: wd = 0 and
 * decay = 1 - lr * weight_decay (decoupled weight decay, Loshchilov & Hutter 2019). */
#define FNN_DEFINE_ADAM(NAME, T, FLUSH, SQRT)                                                   \
    FNN_CLONES void NAME(T *__restrict p, const T *__restrict grad, T *__restrict m, T *__restrict v,   \
                         long n, T lr_t, T b1, T b2, T eps, T wd, T inv_sqrt_bc2, T decay,      \
                         T scale, T cv) {                                                       \
        long i;                                                                                 \
        for (i = 0; i < n; i++) {                                                               \
            T g0 = FLUSH(grad[i]);                                                              \
            T g = FNN_CLIP(g0, scale, cv) + wd * p[i];                                          \
            T mi = b1 * m[i] + (1 - b1) * g;                                                    \
            T vi = b2 * v[i] + (1 - b2) * g * g;                                                \
            mi = FLUSH(mi);                                                                     \
            vi = FLUSH(vi);                                                                     \
            m[i] = mi;                                                                          \
            v[i] = vi;                                                                          \
            p[i] = p[i] * decay - lr_t * mi / (SQRT(vi) * inv_sqrt_bc2 + eps);                  \
        }                                                                                       \
    }

/* RMSprop over n elements (torch.optim.RMSprop; rho is torch's alpha):
 * g = clip(grad) + wd p; s <- rho s + (1 - rho) g^2;
 * centered (a != NULL): a <- rho a + (1 - rho) g, d = sqrt(max(s - a^2, 0)) + eps; else
 * d = sqrt(s) + eps; momentum (b != NULL): b <- mom b + g / d, p <- p - lr b; else
 * p <- p - lr g / d. (max(., 0) only guards against rounding: s >= a^2 in exact arithmetic.) */
#define FNN_DEFINE_RMSPROP(NAME, T, FLUSH, SQRT)                                                \
    FNN_CLONES void NAME(T *__restrict p, const T *__restrict grad, T *__restrict s,            \
                         T *__restrict a, T *__restrict b, long n, T lr, T rho, T eps, T wd,    \
                         T mom, T scale, T cv) {                                                \
        long i;                                                                                 \
        for (i = 0; i < n; i++) {                                                               \
            T g0 = FLUSH(grad[i]);                                                              \
            T g = FNN_CLIP(g0, scale, cv) + wd * p[i];                                          \
            T si = rho * s[i] + (1 - rho) * g * g;                                              \
            T d;                                                                                \
            si = FLUSH(si);                                                                     \
            s[i] = si;                                                                          \
            if (a != NULL) {                                                                    \
                T ai = rho * a[i] + (1 - rho) * g;                                              \
                T c;                                                                            \
                ai = FLUSH(ai);                                                                 \
                a[i] = ai;                                                                      \
                c = si - ai * ai;                                                               \
                c = c < 0 ? (T)0 : c;                                                           \
                d = SQRT(c) + eps;                                                              \
            } else {                                                                            \
                d = SQRT(si) + eps;                                                             \
            }                                                                                   \
            if (b != NULL) {                                                                    \
                T bi = mom * b[i] + g / d;                                                      \
                bi = FLUSH(bi);                                                                 \
                b[i] = bi;                                                                      \
                p[i] = p[i] - lr * bi;                                                          \
            } else {                                                                            \
                p[i] = p[i] - lr * (g / d);                                                     \
            }                                                                                   \
        }                                                                                       \
    }

/* Adagrad over n elements (Duchi et al. 2011, as torch.optim.Adagrad):
 * g = clip(grad) + wd p; s <- s + g^2; p <- p - clr g / (sqrt(s) + eps),
 * clr = lr / (1 + (t - 1) lr_decay) computed by the caller. */
#define FNN_DEFINE_ADAGRAD(NAME, T, FLUSH, SQRT)                                                \
    FNN_CLONES void NAME(T *__restrict p, const T *__restrict grad, T *__restrict s, long n,    \
                         T clr, T eps, T wd, T scale, T cv) {                                   \
        long i;                                                                                 \
        for (i = 0; i < n; i++) {                                                               \
            T g0 = FLUSH(grad[i]);                                                              \
            T g = FNN_CLIP(g0, scale, cv) + wd * p[i];                                          \
            T si = s[i] + g * g;                                                                \
            si = FLUSH(si);                                                                     \
            s[i] = si;                                                                          \
            p[i] = p[i] - clr * (g / (SQRT(si) + eps));                                         \
        }                                                                                       \
    }

/* Sum of squares of n elements (subnormals flushed, as the updates read them), accumulated in
 * double in 8 interleaved partial sums combined in a fixed order: the result depends on n and
 * the values only (callers split long arrays into fixed blocks, so not on the thread count). */
#define FNN_DEFINE_SUMSQ(NAME, T, FLUSH)                                                        \
    FNN_CLONES double NAME(const T *__restrict x, long n) {                                     \
        double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                               \
        long i = 0;                                                                             \
        int k;                                                                                  \
        for (; i + 8 <= n; i += 8) {                                                            \
            for (k = 0; k < 8; k++) {                                                           \
                double xi = (double)FLUSH(x[i + k]);                                            \
                acc[k] += xi * xi;                                                              \
            }                                                                                   \
        }                                                                                       \
        for (k = 0; i < n; i++, k++) {                                                          \
            double xi = (double)FLUSH(x[i]);                                                    \
            acc[k] += xi * xi;                                                                  \
        }                                                                                       \
        return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])); \
    }

static FNN_DEFINE_SGD(fnn_sgd_f32, float, FNN_FLUSH_F32)
static FNN_DEFINE_SGD(fnn_sgd_f64, double, FNN_FLUSH_F64)
static FNN_DEFINE_ADAM(fnn_adam_f32, float, FNN_FLUSH_F32, sqrtf)
static FNN_DEFINE_ADAM(fnn_adam_f64, double, FNN_FLUSH_F64, sqrt)
static FNN_DEFINE_RMSPROP(fnn_rmsprop_f32, float, FNN_FLUSH_F32, sqrtf)
static FNN_DEFINE_RMSPROP(fnn_rmsprop_f64, double, FNN_FLUSH_F64, sqrt)
static FNN_DEFINE_ADAGRAD(fnn_adagrad_f32, float, FNN_FLUSH_F32, sqrtf)
static FNN_DEFINE_ADAGRAD(fnn_adagrad_f64, double, FNN_FLUSH_F64, sqrt)
static FNN_DEFINE_SUMSQ(fnn_sumsq_f32, float, FNN_FLUSH_F32)
static FNN_DEFINE_SUMSQ(fnn_sumsq_f64, double, FNN_FLUSH_F64)

#endif
