/* The double-precision build of the training kernels: the same source files as the float
 * build, compiled again with real = double, so every function gets an _f64 twin
 * (mt_rmsnorm_backward_f64, ...). Only the finite-difference gradient checks use them; they
 * prove the very text the model runs in float. Float-only code in those files (inference
 * attention, RoPE tables, thread settings) is fenced off with #ifndef MT_REAL_DOUBLE. */
#define MT_REAL_DOUBLE
/* every header the sources use, first: real.h's macros (real, R) must not reach them */
#include "kernels/kernels.h"
#include "core/error.h"
#include <math.h>
#include "kernels/pool.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cblas.h>
#include "kernels/activations.c"
#include "kernels/attention.c"
#include "kernels/cross_entropy.c"
#include "kernels/elementwise.c"
#include "kernels/embedding.c"
#include "kernels/lora.c"
#include "kernels/matmul.c"
#include "kernels/mome.c"
#include "kernels/norm.c"
#include "kernels/rope.c"
