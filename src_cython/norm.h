/* Counter-based random numbers for dropout masks (src_cython/norm.pyx).
 *
 * The mask of element i at training step t of a layer seeded with s depends on (s, t, i) only:
 *   key = mix64(mix64(s) ^ mix64(t + GOLDEN))            once per call
 *   r_i = mix64(key + (i + 1) * GOLDEN)                   per element (mod 2^64)
 * i.e. output i of a SplitMix64 stream started at key (Steele, Lea, Flood, "Fast splittable
 * pseudorandom number generators", OOPSLA 2014; the finaliser constants are Stafford's "Mix13",
 * as in Java's SplittableRandom and Vigna's splitmix64.c). No state is shared between threads,
 * so a mask is the same at any thread count and when training resumes at step t. */
#ifndef FNN_NORM_H
#define FNN_NORM_H
#include <stdint.h>

#define FNN_GOLDEN64 UINT64_C(0x9E3779B97F4A7C15)

static inline uint64_t fnn_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* the per-call key of a (seed, step) pair */
static inline uint64_t fnn_dropout_key(uint64_t seed, uint64_t step) {
    return fnn_mix64(fnn_mix64(seed) ^ fnn_mix64(step + FNN_GOLDEN64));
}

/* 1 (keep) or 0 (drop) for element i: drop when the top 53 bits of r_i are below threshold,
 * threshold = floor(rate * 2^53), so P(drop) = threshold / 2^53 */
static inline uint8_t fnn_dropout_keep(uint64_t key, uint64_t i, uint64_t threshold) {
    return (uint8_t)((fnn_mix64(key + (i + 1) * FNN_GOLDEN64) >> 11) >= threshold);
}
#endif
