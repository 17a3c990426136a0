/* The double-precision build of the training pass: train_model.c compiled again with
 * real = double (mt_train_create_f64, mt_train_forward_f64, ...), on an owned double copy of
 * the parameters. Only the finite-difference check of the whole model's gradient uses it;
 * it runs the very text the float model runs. */
#define MT_REAL_DOUBLE
#include "model/train_model.c"
