/* One source text, two precisions. The training kernels (and the model's training pass) are
 * written once in terms of `real` and compiled twice: as float, which is what the model
 * runs, and as double, which is what the finite-difference gradient checks run (in double a
 * central difference is accurate to ~1e-9, so a wrong derivative cannot hide behind
 * rounding). A file compiled in double defines MT_REAL_DOUBLE before including its sources;
 * see kernels_f64.c. Functions are named through R(): R(mt_foo) is mt_foo in float and
 * mt_foo_f64 in double.
 *
 * Include this last, after every other header: it defines the macros `real` and `R`. (The
 * declarations in kernels.h use their own macro names, so the two never collide.) */
#ifndef MT_KERNELS_REAL_H
#define MT_KERNELS_REAL_H
#include <cblas.h>
#include <math.h>
#include "kernels/simd.h"

#ifdef MT_REAL_DOUBLE
#define real double
#define R(name) name##_f64
#define r_exp exp
#define r_expv exp /* exp in vectorised loops: exact in double */
#define r_sqrt sqrt
#define r_blas_gemm cblas_dgemm
#else
#define real float
#define R(name) name
#define r_exp expf
#define r_expv mt_exp_approx
#define r_sqrt sqrtf
#define r_blas_gemm cblas_sgemm
#endif

/* GEMMs go through R(mt_gemm) (matmul.c): r_blas_gemm's arguments, split over the pool */
#define r_gemm R(mt_gemm)
void R(mt_gemm)(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, real alpha,
                const real *A, int lda, const real *B, int ldb, real beta, real *C, int ldc);

#endif
