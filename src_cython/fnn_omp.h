/* OpenMP wrappers that also compile without OpenMP (FASTNN_NO_OPENMP=1 builds a serial library).
 * Pattern from scikit-learn's sklearn/utils/_openmp_helpers: never call omp_* directly. */
#ifndef FNN_OMP_H
#define FNN_OMP_H
#ifdef _OPENMP
#include <omp.h>
static inline int fnn_omp_enabled(void) { return 1; }
static inline int fnn_omp_max_threads(void) { return omp_get_max_threads(); }
static inline int fnn_omp_version(void) { return _OPENMP; }
#else
static inline int fnn_omp_enabled(void) { return 0; }
static inline int fnn_omp_max_threads(void) { return 1; }
static inline int fnn_omp_version(void) { return 0; }
#endif

/* BLAS is called single-threaded inside fastnn's own OpenMP threads ("one pool").
 * scipy's OpenBLAS exports openblas_set_num_threads_local(int) -> previous value (thread-local).
 * Its address is found from Python (ctypes) and installed once per extension module. */
typedef int (*fnn_blas_set_local_t)(int);
static fnn_blas_set_local_t fnn_blas_set_local = 0;
static inline void fnn_install_blas_hook(size_t addr) { fnn_blas_set_local = (fnn_blas_set_local_t)addr; }
static inline int fnn_blas_single_begin(void) { return fnn_blas_set_local ? fnn_blas_set_local(1) : 0; }
static inline void fnn_blas_single_end(int previous) { if (fnn_blas_set_local) fnn_blas_set_local(previous); }
#endif
