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
/* The calling thread, outside any parallel region: BLAS on one thread until fnn_blas_single_end
 * restores the previous count. Inside a parallel region each thread calls fnn_blas_single_enter
 * and nothing is restored there: depending on the OpenBLAS version the "local" setter is
 * thread-local (each OpenMP thread must call it) or process-wide (v0.3.32 calls the global
 * setter), and a thread restoring the count while another is still between its GEMMs let
 * OpenBLAS start its own threads inside the OpenMP region ("Detect OpenMP Loop"). */
static inline int fnn_blas_single_begin(void) { return fnn_blas_set_local ? fnn_blas_set_local(1) : 0; }
static inline void fnn_blas_single_enter(void) { if (fnn_blas_set_local) fnn_blas_set_local(1); }
static inline void fnn_blas_single_end(int previous) { if (fnn_blas_set_local) fnn_blas_set_local(previous > 0 ? previous : 0); }
#endif
