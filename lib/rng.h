// rng.h — the random numbers of bitdistill.c: xorshift64* (Marsaglia 2003; Vigna 2016), seeded,
// with uniform and normal draws, and a jump of n draws ahead without drawing them, so that a
// parallel initialisation gives the same weights on any number of threads.
#ifndef RNG_H
#define RNG_H

#include <math.h>
#include <stdint.h>
#include <string.h>

// A small, fast, seedable generator (xorshift64*), so runs are reproducible everywhere.
typedef struct { uint64_t s; } Rng;
static uint64_t rng_u64(Rng *r) {
    r->s ^= r->s >> 12; r->s ^= r->s << 25; r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1DULL;
}
static float rng_uniform(Rng *r) { return (float)((rng_u64(r) >> 40) * (1.0 / 16777216.0)); }
static float rng_normal(Rng *r) {  // Box-Muller
    float u1 = rng_uniform(r), u2 = rng_uniform(r);
    if (u1 < 1e-7f) u1 = 1e-7f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}
static Rng rng_seeded(uint64_t seed) { Rng r = {seed * 0x9E3779B97F4A7C15ULL + 0x1234567ULL}; rng_u64(&r); return r; }

// The generator n draws on, without drawing: xorshift's update is linear over GF(2), s' = A s
// for a 64 x 64 bit matrix A (column j, the update of bit j alone), so the state n draws on is
// A^n s, by squaring (64 squarings of A at most). The output multiply does not touch the state.
static uint64_t gf2_apply(const uint64_t A[64], uint64_t s) {  // A s: the columns of s's set bits
    uint64_t r = 0;
    for (int j = 0; j < 64; j++) if (s >> j & 1) r ^= A[j];
    return r;
}
static Rng rng_jump(Rng r, uint64_t n) {
    uint64_t A[64], A2[64];
    for (int j = 0; j < 64; j++) {
        uint64_t s = 1ULL << j;
        s ^= s >> 12; s ^= s << 25; s ^= s >> 27;
        A[j] = s;
    }
    for (; n; n >>= 1) {  // A holds the update of 2^k draws at bit k of n
        if (n & 1) r.s = gf2_apply(A, r.s);
        for (int j = 0; j < 64; j++) A2[j] = gf2_apply(A, A[j]);
        memcpy(A, A2, sizeof A);
    }
    return r;
}

#endif
