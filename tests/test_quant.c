// test_quant.c — quant.h against hand-computed cases, finite differences and brute force.
//
// Every check prints one row: what was compared, the error found, the tolerance, ok/FAIL.
// The program exits 1 if any row failed. Sections:
//   1. specs: names, bit widths and groups accepted or rejected
//   2. hand-computed groups for every quantizer (ties at .5, constant, all-zero, all-negative,
//      g = -1, bits 1..8), NaN/Inf rejected
//   3. gradients: finite differences of the learned scales (sign: alpha, beta; onebit: h, g),
//      the straight-through rules checked element by element, and a self-test showing that a
//      deliberately wrong gradient is caught; BitDistiller's backward of int and nf against
//      hand-computed groups (ties, a clamped weight), finite differences of the forward with its
//      rounding frozen, and PyTorch autograd of BitDistiller's quantizers
//      (tests/fixtures/ste/reference.json, made by dev/make_ste_reference.py)
//   4. clipping search: brute force agreement, never worse than no clipping, better on
//      heavy-tailed random weights
//   5. packing: bit layouts by hand, round trips at every width, dequantize(pack(quantize(W)))
//      equal to the fake-quantized W, corrupt input rejected
//   6. flip-flop counting
#include "../lib/util.h"  // defines: die, malloc_or_die, read_file_or_die, file_exists
#include "../lib/json.h"  // defines: json_parse, json_get, json_at
#include "../quant.h"

static int g_failed = 0, g_rows = 0;

// One table row. err is compared with tol; `expect` describes the comparison.
static void report(const char *what, double err, double tol) {
    int bad = !(err <= tol);  // NaN fails too
    g_failed += bad;
    g_rows++;
    printf("  %-62s %10.3e %9.1e  %s\n", what, err, tol, bad ? "FAIL" : "ok");
}

// A yes/no condition as a row (error 0 when it holds, 1 when it does not).
static void report_true(const char *what, int cond) { report(what, cond ? 0.0 : 1.0, 0.0); }

static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d;  // keeps NaN
    }
    return m;
}

static double max_abs(const float *a, int64_t n) {
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

// --- a small deterministic RNG (splitmix64) -------------------------------------------------
static uint64_t g_seed = 0x9e3779b97f4a7c15ull;
static uint64_t rng_u64(void) {
    uint64_t z = (g_seed += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float rng_uniform(void) { return (float)((rng_u64() >> 40) + 0.5) / 16777216.0f; }  // (0,1)
static float rng_normal(void) {
    return sqrtf(-2.0f * logf(rng_uniform())) * cosf(6.2831853f * rng_uniform());
}
// Student-t with 2 degrees of freedom: heavy tails, like the outliers of LLM weights.
static float rng_t2(void) {
    float a = rng_normal(), b = rng_normal(), c = rng_normal();
    return a / sqrtf(0.5f * (b * b + c * c) + 1e-12f);
}
static float *randn(int64_t n, float scale) {
    float *p = malloc_or_die((size_t)n * sizeof(float), "test");
    for (int64_t i = 0; i < n; i++) p[i] = scale * rng_normal();
    return p;
}

// =============================================================================================
// 1. specs

static void test_specs(void) {
    printf("\n1. specs (name, -b, -g, input dim) accepted or rejected\n");
    struct { const char *name; int bits, group, in; int ok, method_after, bits_after; } cases[] = {
        {"int", 2, 128, 4096, 1, QUANT_INT, 2},
        {"int", 1, 64, 4096, 1, QUANT_INT, 1},
        {"int", 8, -1, 4096, 1, QUANT_INT, 8},
        {"int", 16, 128, 4096, 1, QUANT_NONE, 16},  // -b 16: no quantization
        {"int", 5, 128, 4096, 0, 0, 0},
        {"int", 0, 128, 4096, 0, 0, 0},
        {"int", 2, 100, 4096, 0, 0, 0},             // 100 does not divide 4096
        {"int", 2, 0, 4096, 0, 0, 0},
        {"int", 2, -2, 4096, 0, 0, 0},
        {"nf3", 0, 128, 4096, 1, QUANT_NF3, 3},
        {"nf3", 3, 128, 4096, 1, QUANT_NF3, 3},
        {"nf3", 4, 128, 4096, 0, 0, 0},
        {"nf3", 3, 96, 4096, 0, 0, 0},
        {"nf4", 16, 64, 4096, 1, QUANT_NF4, 4},
        {"nf4", 3, 64, 4096, 0, 0, 0},
        {"sign", 0, 128, 100, 1, QUANT_SIGN, 1},     // sign ignores the group
        {"sign", 2, 128, 100, 0, 0, 0},
        {"onebit", 1, 0, 100, 1, QUANT_ONEBIT, 1},
        {"onebit", 4, 0, 100, 0, 0, 0},
        {"ternary", 0, 128, 100, 1, QUANT_TERNARY, 2},
        {"ternary", 16, 128, 100, 1, QUANT_TERNARY, 2},
        {"ternary", 1, 128, 100, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        QuantSpec s = {quant_method_from_name(cases[i].name), cases[i].bits, cases[i].group};
        const char *err = quant_spec_check(&s, cases[i].in);
        int good = cases[i].ok ? err == NULL && s.method == cases[i].method_after && s.bits == cases[i].bits_after
                               : err != NULL;
        char what[160];
        snprintf(what, sizeof what, "-q %s -b %d -g %d (in %d): %s", cases[i].name, cases[i].bits,
                 cases[i].group, cases[i].in, cases[i].ok ? "accepted" : "rejected");
        report_true(what, good);
        if (!good) printf("      got: %s\n", err ? err : "accepted");
    }
    report_true("unknown names rejected (int4, NF3, \"\")",
                quant_method_from_name("int4") < 0 && quant_method_from_name("NF3") < 0 &&
                    quant_method_from_name("") < 0);
    QuantSpec bad = {42, 2, 128};
    report_true("unknown method id rejected", quant_spec_check(&bad, 4096) != NULL);
}

// =============================================================================================
// 2. hand-computed cases

// Quantizes one matrix with `s` and compares ŵ (and codes when given) with the expected values.
static void hand_case(const char *what, QuantSpec s, const float *w, int out, int in, const float *want,
                      const uint8_t *want_codes) {
    int64_t n = (int64_t)out * in, n0, n1;
    quant_param_sizes(&n0, &n1, s, out, in);
    float *wq = malloc_or_die(n * sizeof(float), "test"), *p0 = calloc_or_die(n0 + 1, 4, "t"),
          *p1 = calloc_or_die(n1 + 1, 4, "t");
    uint8_t *codes = malloc_or_die(n, "test");
    quant_init_params(p0, p1, w, s, out, in);
    int rc = quant_forward(wq, codes, p0, p1, w, s, out, in);
    double err = rc ? INFINITY : max_abs_diff(wq, want, n);
    if (want_codes && memcmp(codes, want_codes, n) != 0) err = INFINITY;
    report(what, err, 1e-6);
    if (err > 1e-6) {
        printf("      got:");
        for (int64_t i = 0; i < n; i++) printf(" %.8g(%d)", wq[i], codes[i]);
        printf("\n");
    }
    free(wq), free(p0), free(p1), free(codes);
}

static void test_int_hand(void) {
    printf("\n2a. INT-Asym by hand: s = max(mx-mn,1e-5)/qmax, z = clamp(-round_even(mn/s)),\n"
           "    q = clamp(round_away(w/s) + z), ŵ = (q - z) s\n");
    QuantSpec b2 = {QUANT_INT, 2, 4};
    // [0,1,2,3], b=2: s = 3/3 = 1, z = 0, q = w, ŵ = w
    hand_case("int b=2 ramp [0,1,2,3] -> itself", b2, (float[]){0, 1, 2, 3}, 1, 4, (float[]){0, 1, 2, 3},
              (uint8_t[]){0, 1, 2, 3});
    // ties in q: [-1.5,-0.5,0.5,1.5], s = 1, mn/s = -1.5 -> round_even -2 -> z = 2;
    // round_away: -1.5 -> -2, -0.5 -> -1, 0.5 -> 1, 1.5 -> 2; q = [0,1,3,4->3]; ŵ = q-2 = [-2,-1,1,1]
    // (round_even for q would give q = [0,2,2,3], ŵ = [-2,0,0,1]: the test tells them apart)
    hand_case("int b=2 ties in q [-1.5,-0.5,0.5,1.5] -> [-2,-1,1,1]", b2, (float[]){-1.5f, -0.5f, 0.5f, 1.5f}, 1, 4,
              (float[]){-2, -1, 1, 1}, (uint8_t[]){0, 1, 3, 3});
    // tie in z: [-0.5,0.5,1.5,2.5], s = 1, mn/s = -0.5 -> round_even -0 -> z = 0;
    // q = round_away(w) = [-1->0, 1, 2, 3]; ŵ = [0,1,2,3]  (round_away for z would give z = 1)
    hand_case("int b=2 tie in z [-0.5,0.5,1.5,2.5] -> [0,1,2,3]", b2, (float[]){-0.5f, 0.5f, 1.5f, 2.5f}, 1, 4,
              (float[]){0, 1, 2, 3}, (uint8_t[]){0, 1, 2, 3});
    // constant 2: s = 1e-5/3, z = clamp(-round(6e5)) = 0, q = clamp(6e5) = 3, ŵ = 3 s = 1e-5
    float c = 3.0f * (1e-5f / 3.0f);
    hand_case("int b=2 constant [2,2,2,2] -> 1e-5 (grid holds 0)", b2, (float[]){2, 2, 2, 2}, 1, 4,
              (float[]){c, c, c, c}, (uint8_t[]){3, 3, 3, 3});
    hand_case("int b=2 all-zero -> 0", b2, (float[]){0, 0, 0, 0}, 1, 4, (float[]){0, 0, 0, 0},
              (uint8_t[]){0, 0, 0, 0});
    // all-negative [-4,-3,-2,-1]: s = 1, z = clamp(4) = 3, q = clamp(round_away(w)+3) = [0,0,1,2],
    // ŵ = q - 3 = [-3,-3,-2,-1]
    hand_case("int b=2 all-negative [-4,-3,-2,-1] -> [-3,-3,-2,-1]", b2, (float[]){-4, -3, -2, -1}, 1, 4,
              (float[]){-3, -3, -2, -1}, (uint8_t[]){0, 0, 1, 2});
    // all-positive [1,2,3,4]: z = clamp(-1) = 0, q = [1,2,3,4->3]
    hand_case("int b=2 all-positive [1,2,3,4] -> [1,2,3,3]", b2, (float[]){1, 2, 3, 4}, 1, 4,
              (float[]){1, 2, 3, 3}, (uint8_t[]){1, 2, 3, 3});
    // b=1 [-3,-1,1,2]: s = 5, mn/s = -0.6 -> z = 1; w/s = [-.6,-.2,.2,.4] -> round_away [-1,0,0,0];
    // q = [0,1,1,1]; ŵ = (q-1)*5 = [-5,0,0,0]
    hand_case("int b=1 [-3,-1,1,2] -> [-5,0,0,0]", (QuantSpec){QUANT_INT, 1, 4}, (float[]){-3, -1, 1, 2}, 1, 4,
              (float[]){-5, 0, 0, 0}, (uint8_t[]){0, 1, 1, 1});
    // b=3, 4, 8: the ramp 0..qmax has s = 1, z = 0 and quantizes to itself
    int widths[3] = {3, 4, 8};
    for (int k = 0; k < 3; k++) {
        int b = widths[k], n = 1 << b;
        float w[256];
        uint8_t cd[256];
        for (int i = 0; i < n; i++) w[i] = (float)i, cd[i] = (uint8_t)i;
        char what[80];
        snprintf(what, sizeof what, "int b=%d ramp 0..%d, g = -1 -> itself", b, n - 1);
        hand_case(what, (QuantSpec){QUANT_INT, b, -1}, w, 1, n, w, cd);
    }
    // b=3, half steps: [0, 0.5, ..., 3.5], s = 0.5, codes 0..7, itself
    hand_case("int b=3 [0,0.5,...,3.5] -> itself", (QuantSpec){QUANT_INT, 3, 8},
              (float[]){0, .5f, 1, 1.5f, 2, 2.5f, 3, 3.5f}, 1, 8, (float[]){0, .5f, 1, 1.5f, 2, 2.5f, 3, 3.5f}, NULL);
    // g = -1 versus g = 2 on a 2x4 matrix, b = 1
    // rows [0,1,2,3] and [-4,-3,-2,-1]; g=-1: row 0: s = 3, z = 0, w/s = [0,.33,.67,1] -> q [0,0,1,1]
    // -> [0,0,3,3]; row 1: s = 3, mn/s = -1.33 -> z = 1, round_away(w/3) = [-1,-1,-1,0] -> q [0,0,0,1]
    // -> [-3,-3,-3,0]
    float m24[8] = {0, 1, 2, 3, -4, -3, -2, -1};
    hand_case("int b=1 g=-1 on 2x4 rows", (QuantSpec){QUANT_INT, 1, -1}, m24, 2, 4,
              (float[]){0, 0, 3, 3, -3, -3, -3, 0}, NULL);
    // g=2: [0,1] s=1 z=0 -> [0,1]; [2,3] s=1 z=0 q=[1,1] -> [1,1]; [-4,-3] s=1 z=1 q=[0,0] -> [-1,-1];
    // [-2,-1] s=1 z=1 q=[0,0] -> [-1,-1]
    hand_case("int b=1 g=2 on 2x4 (4 groups)", (QuantSpec){QUANT_INT, 1, 2}, m24, 2, 4,
              (float[]){0, 1, 1, 1, -1, -1, -1, -1}, NULL);
}

static void test_nf_hand(void) {
    printf("\n2b. NF-Asym by hand: w>=0 -> w/|mx|, w<0 -> w/|mn|, snapped to the NF levels\n");
    QuantSpec nf3 = {QUANT_NF3, 3, 4}, nf4 = {QUANT_NF4, 4, 4};
    // [0,0.1,0.5,1]: s+ = 1, s- = 0. 0 -> level 0 (code 3); 0.1 >= 0.0917 -> 0.1833 (4);
    // 0.5 < 0.5025 -> 0.3820 (5); 1 -> 1 (7). s- = 0 is harmless (no 0/0).
    hand_case("nf3 [0,0.1,0.5,1] -> [0,.1833,.3820,1]", nf3, (float[]){0, 0.1f, 0.5f, 1}, 1, 4,
              (float[]){0, 0.1833375245332718f, 0.3819939494132996f, 1}, (uint8_t[]){3, 4, 5, 7});
    // ties exactly on thresholds go up: +0.0916687... -> 0.1833; -0.1234657... -> 0
    hand_case("nf3 ties on thresholds go up", nf3, (float[]){1, 0.0916687622666359f, -1, -0.1234657019376755f}, 1, 4,
              (float[]){1, 0.1833375245332718f, -1, 0}, (uint8_t[]){7, 4, 0, 3});
    hand_case("nf3 just below the same thresholds go down", nf3,
              (float[]){1, nextafterf(0.0916687622666359f, 0), -1, nextafterf(-0.1234657019376755f, -1)}, 1, 4,
              (float[]){1, 0, -1, -0.2469314038753510f}, (uint8_t[]){7, 3, 0, 2});
    hand_case("nf3 all-zero -> 0 (reference: NaN)", nf3, (float[]){0, 0, 0, 0}, 1, 4, (float[]){0, 0, 0, 0},
              (uint8_t[]){3, 3, 3, 3});
    // all-negative [-1,-2,-3,-4]: s- = 4, x = [-.25,-.5,-.75,-1] -> levels [-.2469,-.5350,-.5350,-1]
    hand_case("nf3 all-negative [-1,-2,-3,-4]", nf3, (float[]){-1, -2, -3, -4}, 1, 4,
              (float[]){-0.2469314038753510f * 4, -0.5350227355957031f * 4, -0.5350227355957031f * 4, -4},
              (uint8_t[]){2, 1, 1, 0});
    hand_case("nf3 constant 2 and constant -3 are exact", (QuantSpec){QUANT_NF3, 3, 2}, (float[]){2, 2, -3, -3}, 1,
              4, (float[]){2, 2, -3, -3}, (uint8_t[]){7, 7, 0, 0});
    // nf4 [-2,0,0.5,1]: s- = 2 -> -1 (code 0); 0 -> code 7; 0.5 < 0.50166 -> 0.44071 (12); 1 -> 15
    hand_case("nf4 [-2,0,0.5,1] -> [-2,0,.4407,1]", nf4, (float[]){-2, 0, 0.5f, 1}, 1, 4,
              (float[]){-2, 0, 0.44070982933044434f, 1}, (uint8_t[]){0, 7, 12, 15});
    hand_case("nf4 tie at midpoint 0.50166 goes up to 0.5626", nf4, (float[]){-1, 0, 0.5016634166240692f, 1}, 1, 4,
              (float[]){-1, 0, 0.5626170039176941f, 1}, (uint8_t[]){0, 7, 13, 15});
    hand_case("nf4 all-zero and all-negative, g = -1", (QuantSpec){QUANT_NF4, 4, -1},
              (float[]){0, 0, 0, 0, -1, -1, -1, -1}, 2, 4, (float[]){0, 0, 0, 0, -1, -1, -1, -1}, NULL);
}

static void test_binary_ternary_hand(void) {
    printf("\n2c. sign, onebit, ternary, 8-bit activations by hand\n");
    // sign: row [1,-1,3,0]: beta = 0.75, alpha = mean|w - 0.75| = (0.25+1.75+2.25+0.75)/4 = 1.25,
    // sign = [+,-,+,+] (sign(0) = +1): ŵ = [2, -0.5, 2, 2].
    // Row [-1,0,0,5]: beta = 1, alpha = (2+1+1+4)/4 = 2 (mean |w| would be 1.5), ŵ = [-1,3,3,3].
    // All-zero row: alpha = beta = 0 -> 0.
    QuantSpec sg = {QUANT_SIGN, 1, -1};
    hand_case("sign rows [1,-1,3,0], [-1,0,0,5], [0,0,0,0]", sg, (float[]){1, -1, 3, 0, -1, 0, 0, 5, 0, 0, 0, 0},
              3, 4, (float[]){2, -0.5f, 2, 2, -1, 3, 3, 3, 0, 0, 0, 0},
              (uint8_t[]){1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1});
    // onebit: |W| = [[1,2],[3,6]] = [1,3]^T [1,2] is rank 1, so SVID reconstructs W exactly
    QuantSpec ob = {QUANT_ONEBIT, 1, -1};
    hand_case("onebit on rank-1 |W| [[1,-2],[-3,6]] -> W", ob, (float[]){1, -2, -3, 6}, 2, 2,
              (float[]){1, -2, -3, 6}, (uint8_t[]){1, 0, 0, 1});
    // a larger rank-1 |W| with random signs, 16 x 24
    {
        int out = 16, in = 24;
        float a[16], b[24], w[16 * 24];
        for (int i = 0; i < out; i++) a[i] = 0.1f + rng_uniform();
        for (int j = 0; j < in; j++) b[j] = 0.1f + rng_uniform();
        for (int i = 0; i < out; i++)
            for (int j = 0; j < in; j++) w[i * in + j] = a[i] * b[j] * (rng_uniform() < 0.5f ? -1.0f : 1.0f);
        float wq[16 * 24], h[16], g[24];
        onebit_init(h, g, w, out, in, 50);
        onebit_quantize(wq, NULL, w, h, g, out, in);
        report("onebit SVID on random rank-1 |W| 16x24: max |ŵ - w|", max_abs_diff(wq, w, out * in), 1e-5);
    }
    hand_case("onebit all-zero W -> h = g = 0, ŵ = 0", ob, (float[]){0, 0, 0, 0}, 2, 2, (float[]){0, 0, 0, 0},
              NULL);
    // ternary [1,-1,0.4,-0.6]: gamma = 3/4 = 0.75; w/0.75001 = [1.33,-1.33,0.53,-0.8] -> [1,-1,1,-1]
    QuantSpec te = {QUANT_TERNARY, 2, -1};
    hand_case("ternary [1,-1,.4,-.6] -> gamma 0.75 * [1,-1,1,-1]", te, (float[]){1, -1, 0.4f, -0.6f}, 1, 4,
              (float[]){0.75f, -0.75f, 0.75f, -0.75f}, (uint8_t[]){2, 0, 2, 0});
    // [0.2,-0.2,2,0]: gamma = 0.6; 0.2/0.60001 = 0.33 -> 0; 2/0.60001 = 3.3 -> 1
    hand_case("ternary [.2,-.2,2,0] -> [0,0,.6,0]", te, (float[]){0.2f, -0.2f, 2, 0}, 1, 4,
              (float[]){0, 0, 0.6f, 0}, (uint8_t[]){1, 1, 2, 1});
    hand_case("ternary all-zero -> 0", te, (float[]){0, 0, 0, 0}, 2, 2, (float[]){0, 0, 0, 0},
              (uint8_t[]){1, 1, 1, 1});
    // 8-bit absmax activations: row [127,-63.5,0.5,1.5]: scale = 127/127 = 1, round_even ->
    // [127,-64,0,2]; row [-254,1,3,0]: scale = 0.5 -> round_even([-127,.5,1.5,0]) = [-127,0,2,0] -> x2
    {
        float x[12] = {127, -63.5f, 0.5f, 1.5f, -254, 1, 3, 0, 0, 0, 0, 0}, xq[12];
        float want[12] = {127, -64, 0, 2, -254, 0, 4, 0, 0, 0, 0, 0};
        int rc = act_absmax_quantize(xq, x, 3, 4);
        report("act absmax 8-bit: ties to even, all-zero token", rc ? INFINITY : max_abs_diff(xq, want, 12), 0);
    }
}

static void test_nonfinite(void) {
    printf("\n2d. NaN / Inf in the weights give QUANT_ERR_NONFINITE\n");
    QuantSpec specs[6] = {{QUANT_INT, 2, 4}, {QUANT_NF3, 3, 4}, {QUANT_NF4, 4, -1},
                          {QUANT_SIGN, 1, -1}, {QUANT_ONEBIT, 1, -1}, {QUANT_TERNARY, 2, -1}};
    float bads[2] = {NAN, INFINITY};
    for (int m = 0; m < 6; m++)
        for (int b = 0; b < 2; b++) {
            float w[8] = {0.1f, -0.2f, 0.3f, 0.4f, 0.5f, -0.6f, 0.7f, 0.8f}, wq[8], p0[8] = {1, 1}, p1[8] = {1, 1};
            w[5] = bads[b];
            int rc = quant_forward(wq, NULL, p0, p1, w, specs[m], 2, 4);
            int rc_init = quant_init_params(p0, p1, w, specs[m], 2, 4);
            int want_init = specs[m].method == QUANT_SIGN || specs[m].method == QUANT_ONEBIT;
            char what[100];
            snprintf(what, sizeof what, "%s with %s: forward%s rejected", quant_method_name(specs[m].method),
                     b ? "Inf" : "NaN", want_init ? " and init" : "");
            report_true(what, rc == QUANT_ERR_NONFINITE && (!want_init || rc_init == QUANT_ERR_NONFINITE));
        }
    float x[4] = {1, NAN, 0, 0}, xq[4];
    report_true("act absmax with NaN rejected", act_absmax_quantize(xq, x, 1, 4) == QUANT_ERR_NONFINITE);
}

// =============================================================================================
// 3. gradients

// The scalar L = Σ r ŵ in double, for the learned-scale methods.
typedef struct {
    QuantSpec s;
    int out, in;
    float *w, *p0, *p1, *r, *wq;
} GradCase;

static double objective(GradCase *c) {
    quant_forward(c->wq, NULL, c->p0, c->p1, c->w, c->s, c->out, c->in);
    double L = 0.0;
    for (int64_t i = 0; i < (int64_t)c->out * c->in; i++) L += (double)c->r[i] * c->wq[i];
    return L;
}

// Central differences on every element of param[n] (float perturbation +-eps, double L) against
// the analytic gradient. Returns max |numeric - analytic| / max |analytic|.
static double fd_check(GradCase *c, float *param, const float *grad, int64_t n, float eps) {
    double max_err = 0.0, max_ana = 0.0;
    for (int64_t i = 0; i < n; i++) {
        float orig = param[i];
        param[i] = orig + eps;
        double lp = objective(c);
        param[i] = orig - eps;
        double lm = objective(c);
        param[i] = orig;
        double num = (lp - lm) / ((double)(orig + eps) - (double)(orig - eps));
        max_err = fmax(max_err, fabs(num - grad[i]));
        max_ana = fmax(max_ana, fabs(grad[i]));
    }
    return max_ana > 0 ? max_err / max_ana : max_err;
}

// A deliberately wrong sign backward: dalpha forgets the sign, dalpha = Σ dŵ.
static void sign_backward_wrong(float *dalpha, const float *dwq, int out, int in) {
    for (int r = 0; r < out; r++)
        for (int j = 0; j < in; j++) dalpha[r] += dwq[(int64_t)r * in + j];
}

static void test_gradients(void) {
    printf("\n3. gradients: L = Σ r ŵ (r random); finite differences of the learned scales,\n"
           "   straight-through rules element by element (dw starts at 0.5 to check +=)\n");
    int out = 6, in = 40;
    int64_t n = (int64_t)out * in;
    GradCase c = {{QUANT_SIGN, 1, -1}, out, in, randn(n, 0.7f), NULL, NULL, randn(n, 1.0f), NULL};
    c.wq = malloc_or_die(n * sizeof(float), "test");
    float *dw = malloc_or_die(n * sizeof(float), "test"), *want = malloc_or_die(n * sizeof(float), "test");
    int n_clipped = 0;
    for (int64_t i = 0; i < n; i++) n_clipped += fabsf(c.w[i]) > 1.0f;

    // sign: alpha, beta
    c.p0 = calloc_or_die(out, 4, "t"), c.p1 = calloc_or_die(out, 4, "t");
    float *da = calloc_or_die(out, 4, "t"), *db = calloc_or_die(out, 4, "t");
    sign_init(c.p0, c.p1, c.w, out, in);
    for (int64_t i = 0; i < n; i++) dw[i] = 0.5f;
    quant_backward(dw, da, db, c.r, c.w, c.p0, c.p1, c.s, QUANT_STE_PLAIN, out, in);
    report("sign dalpha vs finite differences", fd_check(&c, c.p0, da, out, 1e-2f), 1e-3);
    report("sign dbeta vs finite differences", fd_check(&c, c.p1, db, out, 1e-2f), 1e-3);
    for (int64_t i = 0; i < n; i++) want[i] = 0.5f + (fabsf(c.w[i]) <= 1.0f ? c.r[i] * c.p0[i / in] : 0.0f);
    char what[120];
    snprintf(what, sizeof what, "sign dw = 0.5 + dŵ alpha 1{|w|<=1} (%d of %lld clipped)", n_clipped, (long long)n);
    report(what, max_abs_diff(dw, want, n), 1e-6);

    // self-test: the wrong dalpha must be caught
    float *da_wrong = calloc_or_die(out, 4, "t");
    sign_backward_wrong(da_wrong, c.r, out, in);
    double rel = fd_check(&c, c.p0, da_wrong, out, 1e-2f);
    printf("  %-62s %10.3e %9.1e  %s\n", "self-test: wrong sign dalpha (no sign factor) vs FD", rel, 1e-3,
           rel > 1e-3 ? "caught (expected)" : "NOT CAUGHT");
    g_failed += !(rel > 1e-3);
    g_rows++;

    // onebit: h [out], g [in]
    free(c.p0), free(c.p1);
    c.s = (QuantSpec){QUANT_ONEBIT, 1, -1};
    c.p0 = calloc_or_die(out, 4, "t"), c.p1 = calloc_or_die(in, 4, "t");
    float *dh = calloc_or_die(out, 4, "t"), *dg = calloc_or_die(in, 4, "t");
    onebit_init(c.p0, c.p1, c.w, out, in, 50);
    for (int64_t i = 0; i < n; i++) dw[i] = 0.5f;
    quant_backward(dw, dh, dg, c.r, c.w, c.p0, c.p1, c.s, QUANT_STE_PLAIN, out, in);
    report("onebit dh vs finite differences", fd_check(&c, c.p0, dh, out, 1e-2f), 1e-3);
    report("onebit dg vs finite differences", fd_check(&c, c.p1, dg, in, 1e-2f), 1e-3);
    for (int64_t i = 0; i < n; i++)
        want[i] = 0.5f + (fabsf(c.w[i]) <= 1.0f ? c.r[i] * c.p0[i / in] * c.p1[i % in] : 0.0f);
    report("onebit dw = 0.5 + dŵ h g 1{|w|<=1}", max_abs_diff(dw, want, n), 1e-6);

    // straight-through: dw = dŵ exactly for int, nf3, nf4, ternary
    QuantSpec ste[4] = {{QUANT_INT, 2, 8}, {QUANT_NF3, 3, 8}, {QUANT_NF4, 4, -1}, {QUANT_TERNARY, 2, -1}};
    for (int m = 0; m < 4; m++) {
        for (int64_t i = 0; i < n; i++) dw[i] = 0.5f, want[i] = 0.5f + c.r[i];
        quant_backward(dw, NULL, NULL, c.r, c.w, NULL, NULL, ste[m], QUANT_STE_PLAIN, out, in);
        snprintf(what, sizeof what, "%s straight-through dw = 0.5 + dŵ", quant_method_name(ste[m].method));
        report(what, max_abs_diff(dw, want, n), 0);
    }
    free(c.w), free(c.r), free(c.wq), free(c.p0), free(c.p1), free(dw), free(want);
    free(da), free(db), free(da_wrong), free(dh), free(dg);
}

// --- BitDistiller's backward (quant.h: int_asym_group_backward, nf_asym_group_backward) -----

// One group by hand, dw starting at 0, dŵ = 1..8. int 2-bit, w = [-1.5, 1.5, .2, -1.5, 1.5, .7, -.3, 1]:
// s = 3/3 = 1, z = -round_even(-1.5) = 2; the two 1.5s give R(1.5) + 2 = 4 > 3 (clamped, no
// straight-through, dŵ/ds = q - z = 1); the -1.5s give -2 + 2 = 0 (inside, the end included).
// dŵ_j/ds = q - z - w/s for the inside ones: -.5, -.2, .3, .3, 0, so
// ds = -.5 + 2 - .6 - 2 + 5 + 1.8 + 2.1 + 0 = 7.8, dmx = 7.8/3 = 2.6 split over the two maxima,
// dmn = -2.6 over the two minima.
// nf3, w = [2, -.5, .3, 2, -.5, 0, 1.1, -.1]: s+ = 2, s- = .5, x = w/s±, levels L(x);
// ds+ = 3 (L(.15) - .15) + 7 (L(.55) - .55), ds- = 8 (L(-.2) + .2) (the extremes have L = x,
// 0 has L = 0); dmx = ds+ (mx > 0) over the two 2s, dmn = -ds- (mn < 0) over the two -.5s.
static void test_bitdistiller_hand(void) {
    const float w_int[8] = {-1.5f, 1.5f, 0.2f, -1.5f, 1.5f, 0.7f, -0.3f, 1.0f};
    const float w_nf[8] = {2.0f, -0.5f, 0.3f, 2.0f, -0.5f, 0.0f, 1.1f, -0.1f};
    float dwq[8], dw[8], wq[8], s, z;
    for (int j = 0; j < 8; j++) dwq[j] = (float)(j + 1);
    int_asym_group(wq, NULL, &s, &z, w_int, 8, 2);
    memset(dw, 0, sizeof dw);
    int_asym_group_backward(dw, dwq, w_int, s, z, 8, 2);
    const double want_int[8] = {1 - 1.3, 1.3, 3, 4 - 1.3, 1.3, 6, 7, 8};
    double err = 0;
    for (int j = 0; j < 8; j++) err = fmax(err, fabs(dw[j] - want_int[j]));
    report("bd int2 by hand: 2 clamped, tied max and min", err, 1e-6);

    const double L1 = 0.1833375245332718, L2 = 0.6229856610298157, L3 = -0.2469314038753510;
    double dsp = 3 * (L1 - 0.3f / 2.0f) + 7 * (L2 - 1.1f / 2.0f), dsn = 8 * (L3 + 0.1f / 0.5f);
    const double want_nf[8] = {1 + dsp / 2, 2 - dsn / 2, 3, 4 + dsp / 2, 5 - dsn / 2, 6, 7, 8};
    nf_asym_group(wq, NULL, &s, &z, w_nf, 8, 3);
    memset(dw, 0, sizeof dw);
    nf_asym_group_backward(dw, dwq, w_nf, s, z, 8, 3);
    err = 0;
    for (int j = 0; j < 8; j++) err = fmax(err, fabs(dw[j] - want_nf[j]));
    report("bd nf3 by hand: tied max and min, a zero", err, 1e-6);
}

// The function autograd differentiates: BitDistiller's forward with each weight's rounding
// offset R(u) - u (int) or level L - x (nf), and int's clamped-or-not, frozen at w0, in double.
// Smooth in w away from ties of the max or min, so central differences of Σ r ŵ must give the
// backward's dw. fz: the frozen choices, filled (fill = 1) at w0.
typedef struct { double off[64]; int inside[64]; double z; } Frozen;

static double frozen_objective(const double *w, const float *r, int g, QuantSpec q, Frozen *fz, int fill) {
    double mn = w[0], mx = w[0], L = 0;
    for (int j = 1; j < g; j++) { mn = fmin(mn, w[j]); mx = fmax(mx, w[j]); }
    if (q.method == QUANT_INT) {
        double qmax = (1 << q.bits) - 1, s = fmax(mx - mn, 1e-5) / qmax;
        if (fill) fz->z = fmin(fmax(-rint(mn / s), 0), qmax);
        for (int j = 0; j < g; j++) {
            double x = w[j] / s;
            if (fill) {
                double u = copysign(floor(fabs(x) + 0.5), x) + fz->z;
                fz->inside[j] = u >= 0 && u <= qmax;
                fz->off[j] = fz->inside[j] ? u - fz->z - x : fmin(fmax(u, 0), qmax) - fz->z;
            }
            double v = fz->inside[j] ? x + fz->off[j] : fz->off[j];  // (q - z), straight-through or constant
            L += r[j] * v * s;
        }
        return L;
    }
    double sp = fabs(mx), sn = fabs(mn);
    for (int j = 0; j < g; j++) {
        double s = w[j] >= 0 ? sp : sn, x = w[j] / s;
        if (fill) fz->off[j] = nf_level(q.bits, nf_asym_code((float)w[j], (float)sp, (float)sn, q.bits)) - x;
        L += r[j] * (x + fz->off[j]) * s;
    }
    return L;
}

static double frozen_fd_check(const float *w, QuantSpec q, int g) {
    float r[64], dw[64] = {0}, wq[64], s = 0, z = 0;
    double wd[64] = {0}, worst = 0, top = 0;
    Frozen fz;
    for (int j = 0; j < g; j++) { r[j] = rng_normal(); wd[j] = w[j]; }
    frozen_objective(wd, r, g, q, &fz, 1);
    if (q.method == QUANT_INT) {
        int_asym_group(wq, NULL, &s, &z, w, g, q.bits);
        int_asym_group_backward(dw, r, w, s, z, g, q.bits);
    } else {
        nf_asym_group(wq, NULL, &s, &z, w, g, q.bits);
        nf_asym_group_backward(dw, r, w, s, z, g, q.bits);
    }
    for (int j = 0; j < g; j++) {
        double h = 1e-6 * fmax(fabs(wd[j]), 1e-3), keep = wd[j];
        wd[j] = keep + h;
        double lp = frozen_objective(wd, r, g, q, &fz, 0);
        wd[j] = keep - h;
        double lm = frozen_objective(wd, r, g, q, &fz, 0);
        wd[j] = keep;
        double fd = (lp - lm) / (2 * h);
        worst = fmax(worst, fabs(fd - dw[j]));
        top = fmax(top, fabs(fd));
    }
    return worst / fmax(top, 1e-12);
}

static void test_bitdistiller_fd(void) {
    struct { QuantSpec q; int g; float lo, hi; const char *what; } cases[] = {
        {{QUANT_INT, 2, 8}, 8, 0, 0, "int2 g8"},
        {{QUANT_INT, 3, 16}, 16, 0, 0, "int3 g16"},
        {{QUANT_INT, 4, -1}, 48, 0, 0, "int4 per row of 48"},
        {{QUANT_INT, 2, 8}, 8, 1.0f, 2.0f, "int2 g8 in [1,2]"},
        {{QUANT_INT, 2, 8}, 8, -2.0f, -1.0f, "int2 g8 in [-2,-1]"},
        {{QUANT_NF3, 3, 8}, 8, 0, 0, "nf3 g8"},
        {{QUANT_NF4, 4, 16}, 16, 0, 0, "nf4 g16"},
        {{QUANT_NF3, 3, 8}, 8, -2.0f, -1.0f, "nf3 g8 in [-2,-1]"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        double worst = 0;
        int clamped = 0;
        for (int rep = 0; rep < 20; rep++) {
            float w[64] = {0};
            for (int j = 0; j < cases[c].g; j++)
                w[j] = cases[c].lo == cases[c].hi ? rng_normal() : cases[c].lo + (cases[c].hi - cases[c].lo) * rng_uniform();
            if (cases[c].q.method == QUANT_INT) {
                float wq[64], s = 0, z = 0, qmax = (float)((1 << cases[c].q.bits) - 1);
                int_asym_group(wq, NULL, &s, &z, w, cases[c].g, cases[c].q.bits);
                for (int j = 0; j < cases[c].g; j++) {
                    float u = round_away(w[j] / s) + z;
                    clamped += u < 0 || u > qmax;
                }
            }
            worst = fmax(worst, frozen_fd_check(w, cases[c].q, cases[c].g));
        }
        char what[120];
        snprintf(what, sizeof what, "bd %s: FD, rounding frozen (%d clamped)", cases[c].what, clamped);
        report(what, worst, 1e-4);
    }
}

// The fixture: per case, w, dŵ, PyTorch's ŵ and autograd's dL/dw of BitDistiller's quantizer
// classes re-implemented by dev/make_ste_reference.py.
static void json_floats(float *dst, const Json *arr, int n, const char *what) {
    if (!arr || arr->type != JSON_ARRAY || arr->n != n) die("tests/fixtures/ste/reference.json: '%s' is not an array of %d numbers", what, n);
    for (int i = 0; i < n; i++) dst[i] = (float)arr->items[i].number;
}

static void test_bitdistiller_fixture(void) {
    const char *path = "tests/fixtures/ste/reference.json";
    if (!file_exists(path)) {
        printf("  skipped: %s absent (make it with dev/make_ste_reference.py)\n", path);
        return;
    }
    size_t len;
    char *text = read_file_or_die(path, &len), err[256];
    Json *root = json_parse(text, len, err, sizeof err);
    if (!root) die("%s: malformed JSON: %s", path, err);
    const Json *cases = json_get(root, "cases");
    if (!cases || cases->type != JSON_ARRAY || cases->n == 0) die("%s: no \"cases\" array", path);
    printf("  (%s: %d cases from PyTorch %s)\n", path, cases->n, json_get_string(root, "torch") ? json_get_string(root, "torch") : "?");
    for (int k = 0; k < cases->n; k++) {
        const Json *c = &cases->items[k];
        const char *name = json_get_string(c, "name"), *method = json_get_string(c, "method");
        QuantSpec q = {method ? quant_method_from_name(method) : -1, (int)json_get_number(c, "bits", 0), (int)json_get_number(c, "group", 0)};
        int out = (int)json_get_number(c, "out", 0), in = (int)json_get_number(c, "in", 0);
        if (!name || (q.method != QUANT_INT && q.method != QUANT_NF3) || out < 1 || in < 1 || quant_spec_check(&q, in))
            die("%s: case %d: bad name, method, bits, group or shape", path, k);
        int64_t n = (int64_t)out * in, ng = (int64_t)out * (in / quant_group_len(q, in));
        float *w = malloc_or_die(n * 4, "t"), *dwq = malloc_or_die(n * 4, "t"), *wq_ref = malloc_or_die(n * 4, "t");
        float *dw_ref = malloc_or_die(n * 4, "t"), *wq = malloc_or_die(n * 4, "t"), *dw = calloc_or_die(n, 4, "t");
        float *p0 = malloc_or_die(ng * 4, "t"), *p1 = malloc_or_die(ng * 4, "t");
        json_floats(w, json_get(c, "w"), (int)n, "w");
        json_floats(dwq, json_get(c, "dwq"), (int)n, "dwq");
        json_floats(wq_ref, json_get(c, "wq"), (int)n, "wq");
        json_floats(dw_ref, json_get(c, "dw"), (int)n, "dw");
        if (quant_forward(wq, NULL, p0, p1, w, q, out, in)) die("%s: case %d: non-finite weights", path, k);
        char what[120];
        snprintf(what, sizeof what, "forward ŵ vs PyTorch, %s", name);
        report(what, max_abs_diff(wq, wq_ref, n) / fmax(max_abs(wq_ref, n), 1e-30), 1e-6);
        quant_backward(dw, NULL, NULL, dwq, w, p0, p1, q, QUANT_STE_BITDISTILLER, out, in);
        snprintf(what, sizeof what, "bd dw vs autograd, %s", name);
        report(what, max_abs_diff(dw, dw_ref, n) / fmax(max_abs(dw_ref, n), 1e-30), 1e-5);
        free(w), free(dwq), free(wq_ref), free(dw_ref), free(wq), free(dw), free(p0), free(p1);
    }
    json_free(root);
    free(text);
}

static void test_bitdistiller(void) {
    printf("\n3b. BitDistiller's backward (bd, --ste bitdistiller): straight through the rounding, exact\n"
           "    through each group's scale into its max and min weights (L = Σ r ŵ, dw from 0)\n");
    test_bitdistiller_hand();
    test_bitdistiller_fd();
    test_bitdistiller_fixture();
}

// =============================================================================================
// 4. clipping search

// mean_t (X[t,C] · (ŵ - w))² over tokens, straight from X (no Gram matrix), in double.
static double direct_error(const float *x, const float *wq, const float *w, int c0, int g, int n, int in) {
    double e = 0.0;
    for (int t = 0; t < n; t++) {
        double y = 0.0;
        for (int j = 0; j < g; j++) y += (double)x[(int64_t)t * in + c0 + j] * ((double)wq[j] - w[j]);
        e += y * y;
    }
    return e / n;
}

static void clip_case(QuantSpec s, int out, int in, int n) {
    int64_t nw = (int64_t)out * in;
    int g = quant_group_len(s, in), G = in / g;
    int64_t ng = (int64_t)out * G;
    // heavy-tailed weights; inputs with a few outlier channels
    float *w = malloc_or_die(nw * sizeof(float), "t"), *x = malloc_or_die((int64_t)n * in * sizeof(float), "t");
    for (int64_t i = 0; i < nw; i++) w[i] = 0.02f * rng_t2();
    for (int64_t t = 0; t < n; t++)
        for (int j = 0; j < in; j++) x[t * in + j] = rng_normal() * (j % 13 == 0 ? 5.0f : 1.0f);
    float *wc = malloc_or_die(nw * sizeof(float), "t"), *err0 = malloc_or_die(ng * 4, "t"),
          *err1 = malloc_or_die(ng * 4, "t");
    int rc = clip_search_asym(wc, err0, err1, w, x, s, out, in, n);
    char what[160], name[64];
    snprintf(name, sizeof name, "%s b=%d g=%d, %dx%d, %d tokens (%s)", quant_method_name(s.method), s.bits,
             s.group, out, in, n, g <= n ? "Gram" : "direct");
    if (rc) { snprintf(what, sizeof what, "clip %s: returned an error", name); report_true(what, 0); return; }

    // (a) never worse than no clipping, per group; (b) better in total
    double worst = 0.0, sum0 = 0.0, sum1 = 0.0;
    for (int64_t k = 0; k < ng; k++) {
        worst = fmax(worst, (err1[k] - err0[k]) / (err0[k] + 1e-30));
        sum0 += err0[k], sum1 += err1[k];
    }
    snprintf(what, sizeof what, "clip %s: max (err1-err0)/err0", name);
    report(what, fmax(worst, 0.0), 0.0);
    snprintf(what, sizeof what, "  total error after/before (must be < 1)");
    report(what, sum1 / sum0, 0.999);

    // (c) the reported errors recomputed from X directly: quantize w and wclip as whole matrices
    float *wq0 = malloc_or_die(nw * 4, "t"), *wq1 = malloc_or_die(nw * 4, "t"), p0[4096], p1[4096];
    quant_forward(wq0, NULL, p0, p1, w, s, out, in);
    quant_forward(wq1, NULL, p0, p1, wc, s, out, in);
    double rel = 0.0;
    for (int64_t k = 0; k < ng; k++) {
        int c0 = (int)(k % G) * g;
        double e0 = direct_error(x, wq0 + k * g, w + k * g, c0, g, n, in);
        double e1 = direct_error(x, wq1 + k * g, w + k * g, c0, g, n, in);
        rel = fmax(rel, fabs(e0 - err0[k]) / (e0 + 1e-30));
        rel = fmax(rel, fabs(e1 - err1[k]) / (e1 + 1e-30));
    }
    snprintf(what, sizeof what, "  err0, err1 vs direct X (ŵ - w) recomputation, rel");
    report(what, rel, 1e-4);

    // (d) brute force on the first groups: err1 is the minimum over all 100 pairs
    double gap = 0.0;
    float *wcl = malloc_or_die(g * 4, "t"), *wqg = malloc_or_die(g * 4, "t");
    for (int64_t k = 0; k < 3 && k < ng; k++) {
        const float *wk = w + k * g;
        float mn = wk[0], mx = wk[0], a, b;
        for (int j = 0; j < g; j++) mn = fminf(mn, wk[j]), mx = fmaxf(mx, wk[j]);
        double best = INFINITY;
        for (int i = 0; i < 10; i++)
            for (int j = 0; j < 10; j++) {
                float hi = mx * (1.0f - i / 20.0f), lo = mn * (1.0f - j / 20.0f);
                for (int e = 0; e < g; e++) wcl[e] = wk[e] > hi ? hi : wk[e] < lo ? lo : wk[e];
                quant_forward(wqg, NULL, &a, &b, wcl, (QuantSpec){s.method, s.bits, -1}, 1, g);
                best = fmin(best, direct_error(x, wqg, wk, (int)(k % G) * g, g, n, in));
            }
        gap = fmax(gap, fabs(best - err1[k]) / (best + 1e-30));
    }
    report("  err1 = brute-force min over the 10x10 grid (3 groups), rel", gap, 1e-4);

    // (e) clipped weights stay inside each group's original range
    int inside = 1;
    for (int64_t k = 0; k < ng; k++) {
        float mn = w[k * g], mx = w[k * g];
        for (int j = 0; j < g; j++) mn = fminf(mn, w[k * g + j]), mx = fmaxf(mx, w[k * g + j]);
        for (int j = 0; j < g; j++) inside &= wc[k * g + j] >= mn && wc[k * g + j] <= mx;
    }
    report_true("  clipped weights inside [mn, mx] of their group", inside);
    free(w), free(x), free(wc), free(err0), free(err1), free(wq0), free(wq1), free(wcl), free(wqg);
}

static void test_clip(void) {
    printf("\n4. clipping search: w' = clamp(w, mn(1-j/20), mx(1-i/20)), min over 10x10 of mean (X ŵ - X w)²\n");
    clip_case((QuantSpec){QUANT_INT, 2, 16}, 8, 64, 96);
    clip_case((QuantSpec){QUANT_INT, 3, -1}, 6, 64, 32);
    clip_case((QuantSpec){QUANT_INT, 4, 32}, 8, 64, 64);
    clip_case((QuantSpec){QUANT_NF3, 3, 16}, 8, 64, 48);
    float w[8] = {0}, x[8] = {0}, wc[8];
    report_true("clip with sign (no group range) rejected",
                clip_search_asym(wc, NULL, NULL, w, x, (QuantSpec){QUANT_SIGN, 1, -1}, 2, 4, 2) == QUANT_ERR_METHOD);
    x[3] = NAN;
    report_true("clip with NaN in X rejected",
                clip_search_asym(wc, NULL, NULL, w, x, (QuantSpec){QUANT_INT, 2, 4}, 2, 4, 2) == QUANT_ERR_NONFINITE);
}

// =============================================================================================
// 5. packing

static void test_pack_layout(void) {
    printf("\n5a. packed layouts by hand (little-endian bit stream; 5 trits per byte)\n");
    struct { const char *what; int width, n; uint8_t codes[8]; int n_bytes; uint8_t bytes[2]; } cases[] = {
        // 1-bit [1,0,1,1,0,0,0,1]: bit i = code i -> 0b10001101 = 0x8d
        {"1-bit [1,0,1,1,0,0,0,1] -> 0x8d", 1, 8, {1, 0, 1, 1, 0, 0, 0, 1}, 1, {0x8d}},
        // 2-bit [3,0,1,2] -> 3 | 0<<2 | 1<<4 | 2<<6 = 147
        {"2-bit [3,0,1,2] -> 147", 2, 4, {3, 0, 1, 2}, 1, {147}},
        // 3-bit [5,3,7]: 5 | 3<<3 | (7&3)<<6 = 221, then 7>>2 = 1
        {"3-bit [5,3,7] -> [221,1] (straddles a byte)", 3, 3, {5, 3, 7}, 2, {221, 1}},
        {"4-bit [10,3] -> 0x3a (code 0 in the low nibble)", 4, 2, {10, 3}, 1, {0x3a}},
        {"8-bit [200] -> 200", 8, 1, {200}, 1, {200}},
        // trits [2,1,0,2,1] -> 2 + 1*3 + 0*9 + 2*27 + 1*81 = 140
        {"trits [2,1,0,2,1] -> 140", QUANT_PACK_TRITS, 5, {2, 1, 0, 2, 1}, 1, {140}},
        {"trits [2,2] -> 8 (missing trits are 0)", QUANT_PACK_TRITS, 2, {2, 2}, 1, {8}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t dst[4] = {0xff, 0xff, 0xff, 0xff}, back[8];
        int64_t nb = quant_packed_bytes(cases[i].n, cases[i].width);
        int rc = pack_codes(dst, cases[i].codes, cases[i].n, cases[i].width);
        int rc2 = unpack_codes(back, dst, cases[i].n, cases[i].width);
        report_true(cases[i].what, rc == 0 && rc2 == 0 && nb == cases[i].n_bytes &&
                                       memcmp(dst, cases[i].bytes, nb) == 0 &&
                                       memcmp(back, cases[i].codes, cases[i].n) == 0);
    }
    uint8_t dst[4], bad_byte[1] = {243}, codes[8];
    report_true("pack rejects code 4 at width 2", pack_codes(dst, (uint8_t[]){1, 4}, 2, 2) == QUANT_ERR_CODES);
    report_true("pack rejects trit 3", pack_codes(dst, (uint8_t[]){3}, 1, QUANT_PACK_TRITS) == QUANT_ERR_CODES);
    report_true("unpack rejects trit byte 243 (corrupt file)",
                unpack_codes(codes, bad_byte, 5, QUANT_PACK_TRITS) == QUANT_ERR_CODES);
}

static void test_pack_roundtrip(void) {
    printf("\n5b. pack/unpack round trip of 1003 random codes at every width\n");
    int widths[6] = {1, 2, 3, 4, 8, QUANT_PACK_TRITS};
    int n = 1003;
    uint8_t codes[1003], back[1003], packed[1003];
    for (int k = 0; k < 6; k++) {
        int w = widths[k], levels = w == QUANT_PACK_TRITS ? 3 : 1 << w;
        for (int i = 0; i < n; i++) codes[i] = (uint8_t)(rng_u64() % levels);
        int64_t nb = quant_packed_bytes(n, w);
        int64_t want_nb = w == QUANT_PACK_TRITS ? 201 : (n * w + 7) / 8;
        int rc = pack_codes(packed, codes, n, w) | unpack_codes(back, packed, n, w);
        int64_t wrong = 0;
        for (int i = 0; i < n; i++) wrong += codes[i] != back[i];
        char what[100];
        snprintf(what, sizeof what, "%s: %lld bytes = %.3f bits/weight, codes differing",
                 w == QUANT_PACK_TRITS ? "trits" : (char[]){(char)('0' + w), '-', 'b', 'i', 't', 0},
                 (long long)nb, 8.0 * nb / n);
        report(what, rc || nb != want_nb ? INFINITY : (double)wrong, 0);
    }
}

// Scales through fp16 and back, as the packed file stores them (util.h's conversion).
static void through_fp16(float *dst, const float *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = fp16_to_f32(f32_to_fp16(src[i]));
}
static float fp16_round(float x) { return fp16_to_f32(f32_to_fp16(x)); }

// quantize -> pack codes, scales to fp16 -> unpack -> dequantize; compare with the fake-quantized ŵ.
// representable = 1 builds W so that every scale is an fp16 number: then equality must be exact.
static void packed_path(QuantSpec s, int representable) {
    int out = 8, in = 64;
    int64_t n = (int64_t)out * in, n0, n1;
    quant_param_sizes(&n0, &n1, s, out, in);
    int g = quant_group_len(s, in);
    float *w = malloc_or_die(n * 4, "t"), *wq = malloc_or_die(n * 4, "t"), *back = malloc_or_die(n * 4, "t");
    float *p0 = calloc_or_die(n0 + 1, 4, "t"), *p1 = calloc_or_die(n1 + 1, 4, "t");
    float *q0 = calloc_or_die(n0 + 1, 4, "t"), *q1 = calloc_or_die(n1 + 1, 4, "t");
    uint8_t *codes = malloc_or_die(n, "t"), *codes2 = malloc_or_die(n, "t"), *packed = malloc_or_die(n, "t");
    for (int64_t i = 0; i < n; i++) w[i] = 0.05f * rng_normal();
    if (representable) {
        for (int64_t k = 0; k < n / g; k++) {
            float *wk = w + k * g;
            if (s.method == QUANT_INT) {
                // mn = -m 2^-6, mx = mn + qmax 2^-6: s = 2^-6 exactly, z an integer
                int qmax = (1 << s.bits) - 1, m = (int)(rng_u64() % (qmax + 1));
                float mn = -m / 64.0f, mx = mn + qmax / 64.0f;
                for (int j = 0; j < g; j++) wk[j] = mn + (mx - mn) * rng_uniform();
                wk[0] = mn, wk[g - 1] = mx;
            } else if (s.method == QUANT_NF3 || s.method == QUANT_NF4) {
                float mn = -fp16_round(0.01f + 0.1f * rng_uniform()), mx = fp16_round(0.01f + 0.1f * rng_uniform());
                for (int j = 0; j < g; j++) wk[j] = mn + (mx - mn) * rng_uniform();
                wk[0] = mn, wk[g - 1] = mx;
            }
        }
        if (s.method == QUANT_TERNARY)  // half the weights ±0.5, half 0: gamma = 0.25
            for (int64_t i = 0; i < n; i++) w[i] = i % 2 ? 0.0f : (rng_uniform() < 0.5f ? -0.5f : 0.5f);
    }
    // learned scales: from init, then moved as training would; fp16-rounded when representable
    quant_init_params(p0, p1, w, s, out, in);
    if (s.method == QUANT_SIGN || s.method == QUANT_ONEBIT) {
        for (int64_t i = 0; i < n0; i++) p0[i] *= 1.0f + 0.1f * rng_normal();
        for (int64_t i = 0; i < n1; i++) p1[i] *= 1.0f + 0.1f * rng_normal();
        if (representable) through_fp16(p0, p0, n0), through_fp16(p1, p1, n1);
    }
    int rc = quant_forward(wq, codes, p0, p1, w, s, out, in);
    int width = quant_pack_width(s);
    rc |= pack_codes(packed, codes, n, width);
    through_fp16(q0, p0, n0), through_fp16(q1, p1, n1);  // what the file holds
    rc |= unpack_codes(codes2, packed, n, width);
    quant_dequantize(back, codes2, q0, q1, s, out, in);

    char what[140];
    double bpw = 8.0 * quant_packed_bytes(n, width) / n;
    if (representable) {
        snprintf(what, sizeof what, "%s b=%d g=%d fp16-exact scales: max |deq - ŵ| (%.2f bits/w)",
                 quant_method_name(s.method), s.bits, s.group, bpw);
        report(what, rc ? INFINITY : max_abs_diff(back, wq, n), 0);
    } else {
        // ŵ and the dequantized weight share the code; only the scales moved, by <= 2^-11 relative
        snprintf(what, sizeof what, "%s b=%d g=%d random: max |deq - ŵ| / max |ŵ|", quant_method_name(s.method),
                 s.bits, s.group);
        report(what, rc ? INFINITY : max_abs_diff(back, wq, n) / max_abs(wq, n), 1.0 / 1024);
    }
    free(w), free(wq), free(back), free(p0), free(p1), free(q0), free(q1), free(codes), free(codes2), free(packed);
}

static void test_packed_path(void) {
    printf("\n5c. dequantize(unpack(pack(quantize(W))), fp16 scales) vs the fake-quantized ŵ\n");
    QuantSpec specs[9] = {{QUANT_INT, 1, 16}, {QUANT_INT, 2, 16}, {QUANT_INT, 3, 32}, {QUANT_INT, 4, 16},
                          {QUANT_INT, 8, -1}, {QUANT_NF3, 3, 16}, {QUANT_NF4, 4, -1}, {QUANT_SIGN, 1, -1},
                          {QUANT_ONEBIT, 1, -1}};
    QuantSpec te = {QUANT_TERNARY, 2, -1};
    for (int k = 0; k < 9; k++) packed_path(specs[k], 1);
    packed_path(te, 1);
    for (int k = 0; k < 9; k++) packed_path(specs[k], 0);
    packed_path(te, 0);
}

// =============================================================================================
// 6. flip-flop

static void test_flipflop(void) {
    printf("\n6. flip-flop: codes that changed between two snapshots\n");
    report("hand: [0,1,2,3] vs [0,2,2,0] -> 2", fabs((double)count_flips((uint8_t[]){0, 1, 2, 3},
                                                                       (uint8_t[]){0, 2, 2, 0}, 4) - 2), 0);
    // quantize W, then move 37 chosen weights across the whole range: exactly those codes change
    int out = 16, in = 64;
    int64_t n = (int64_t)out * in;
    float *w = randn(n, 1.0f), *wq = malloc_or_die(n * 4, "t"), s[1024], z[1024];
    uint8_t *a = malloc_or_die(n, "t"), *b = malloc_or_die(n, "t");
    for (int64_t i = 0; i < n; i++) w[i] = fminf(fmaxf(w[i], -2.0f), 2.0f);
    for (int r = 0; r < out; r++) w[r * in] = -3.0f, w[r * in + 1] = 3.0f;  // pin each row's range
    QuantSpec sp = {QUANT_INT, 2, -1};
    quant_forward(wq, a, s, z, w, sp, out, in);
    int moved = 0;
    for (int64_t i = 0; i < n; i++) {
        if (i % in < 2 || i % 27 != 5) continue;
        // s = 2, z = 2: -3 -> round_away(-1.5) + 2 = code 0, +3 -> 2 + 2 -> code 3
        w[i] = a[i] == 0 ? 3.0f : -3.0f;
        moved++;
    }
    quant_forward(wq, b, s, z, w, sp, out, in);
    char what[100];
    snprintf(what, sizeof what, "int2: %d weights moved across the range -> %d flips", moved, moved);
    report(what, fabs((double)count_flips(a, b, n) - moved), 0);
    free(w), free(wq), free(a), free(b);
}

int main(void) {
    printf("test_quant: quant.h against hand-computed values, finite differences and brute force\n");
    printf("  %-62s %10s %9s\n", "compared", "error", "tol");
    test_specs();
    test_int_hand();
    test_nf_hand();
    test_binary_ternary_hand();
    test_nonfinite();
    test_gradients();
    test_bitdistiller();
    test_clip();
    test_pack_layout();
    test_pack_roundtrip();
    test_packed_path();
    test_flipflop();
    printf("\n%d of %d checks failed\n", g_failed, g_rows);
    return g_failed ? 1 : 0;
}
