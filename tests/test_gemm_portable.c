// test_gemm_portable.c — test_gemm.c with gemm.h's plain C kernel (GEMM_PORTABLE), the one
// a compiler without AVX2 or AVX-512 builds.
#define GEMM_PORTABLE
#include "test_gemm.c"  // defines: main
