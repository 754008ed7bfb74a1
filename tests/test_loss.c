// test_loss.c — the losses of loss.h against finite differences, hand-computed values and
// their identities; their stability; the batch reduction; gamma; and a self-test.
//
// Gradients: for each student logit, perturb it by +-eps in float, recompute the loss (a
// double), and compare (L+ - L-) / (z+ - z-) (the perturbation actually stored in float) with
// the analytic gradient. Error = max |numeric - analytic| / max |analytic|.
// Every check prints one row; the program exits 1 if any fails.
#include <stdint.h>
#include <stdio.h>

#include "../loss.h"

static int g_failures = 0;

static void row(const char *name, double err, double tol, int expect_fail) {
    int bad = !(err <= tol);  // NaN is bad
    int failed = expect_fail ? !bad : bad;
    g_failures += failed;
    printf("  %-58s %10.2e %9.1e  %s\n", name, err, tol,
           expect_fail ? (bad ? "caught (expected)" : "NOT CAUGHT") : (bad ? "FAIL" : "ok"));
}

// --- a small deterministic generator (xorshift64*, Box-Muller) -------------------------------
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static double uniform(void) {
    g_rng ^= g_rng >> 12; g_rng ^= g_rng << 25; g_rng ^= g_rng >> 27;
    return ((g_rng * 0x2545f4914f6cdd1dull) >> 11) * (1.0 / 9007199254740992.0);
}
static float randn(void) {
    double u = uniform(), v = uniform();
    return (float)(sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v));
}
static void fill_randn(float *z, int n, float sd) { for (int i = 0; i < n; i++) z[i] = sd * randn(); }

// --- finite differences ---------------------------------------------------------------------

// The function under test has the signature of distill_loss_position.
typedef double (*LossFn)(float *dzs, float *scratch, const float *zs, const float *zt, int label, int V,
                         int Vt, DistillLoss loss, float scale);

#define VMAX 64
static float g_scratch[VMAX];

static double max_abs(const float *a, int n) {
    double m = 0.0;
    for (int i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

// scale = 0.75 checks that the gradient is scaled and the value is not.
static void gradcheck(const char *name, LossFn fn, const float *zs_in, const float *zt, int label, int V, int Vt,
                      DistillLoss loss, float eps, double tol, int expect_fail) {
    const float scale = 0.75f;
    float zs[VMAX], dzs[VMAX], junk[VMAX];
    memcpy(zs, zs_in, (size_t)V * sizeof(float));
    fn(dzs, g_scratch, zs, zt, label, V, Vt, loss, scale);
    double max_err = 0.0;
    for (int i = 0; i < V; i++) {
        float orig = zs[i];
        zs[i] = orig + eps;
        double h = zs[i];
        double lp = fn(junk, g_scratch, zs, zt, label, V, Vt, loss, scale);
        zs[i] = orig - eps;
        h -= zs[i];
        double lm = fn(junk, g_scratch, zs, zt, label, V, Vt, loss, scale);
        zs[i] = orig;
        max_err = fmax(max_err, fabs(scale * (lp - lm) / h - dzs[i]));
    }
    char title[128];
    snprintf(title, sizeof title, "grad  %s", name);
    row(title, max_err / max_abs(dzs, V), tol, expect_fail);
}

// The bug the self-test plants: the reverse KL's gradient without its "- KL" centring,
// i.e. P_S(j) a_j instead of P_S(j) (a_j - L).
static double rkl_uncentred(float *dzs, float *scratch, const float *zs, const float *zt, int label, int V, int Vt,
                            DistillLoss loss, float scale) {
    double L = rkl_loss(dzs, zs, zt, V, scale);
    double lse = logsumexp_tempered(zs, V, 1.0);
    for (int v = 0; v < V; v++) dzs[v] += (float)(scale * exp(zs[v] - lse) * L);
    return L;
}

// How far the Wasserstein test point is from a kink, relative to the largest probability
// change the perturbation eps can cause: min over ranks of |S_r - T_r| and of the gaps
// between consecutive S_r (where the student's order would change).
static double wasserstein_margin(const float *zs, const float *zt, int V, int Vt, float eps) {
    float s[VMAX], t[VMAX];
    double ls = logsumexp_tempered(zs, V, 1.0), lt = logsumexp_tempered(zt, Vt, 1.0);
    memcpy(s, zs, (size_t)V * sizeof(float));
    memcpy(t, zt, (size_t)Vt * sizeof(float));
    sort_descending(s, V, NULL);
    sort_descending(t, Vt, NULL);
    int W = V > Vt ? V : Vt;
    double margin = INFINITY;
    for (int r = 0; r < W; r++) {
        double S = r < V ? exp(s[r] - ls) : 0.0, T = r < Vt ? exp(t[r] - lt) : 0.0;
        if (r < V) margin = fmin(margin, fabs(S - T));
        if (r + 1 < V) margin = fmin(margin, S - exp(s[r + 1] - ls));
    }
    return margin / (2.0 * eps * exp(s[0] - ls));  // > 1: no kink within reach
}

// --- hand-computed values -------------------------------------------------------------------
static void hand(const char *name, double got, double want, const float *dz, const double *dwant, int V) {
    double err = fabs(got - want);
    for (int v = 0; v < V; v++) err = fmax(err, fabs(dz[v] - dwant[v]));
    char title[128];
    snprintf(title, sizeof title, "hand  %s", name);
    row(title, err, 1e-6, 0);
}

static double max_diff(const float *a, const float *b, int n) {
    double m = 0.0;
    for (int i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

int main(void) {
    printf("test_loss: loss.h (every loss, its gradient, the batch reduction, gamma)\n");
    printf("  %-58s %10s %9s\n", "check", "error", "tol");
    DistillLoss CE = {LOSS_CE, 0, 1}, FKL = {LOSS_FKL, 0, 1}, RKL = {LOSS_RKL, 0, 1};
    DistillLoss WD = {LOSS_WASSERSTEIN, 0, 1};

    // ---- 1. gradients by finite differences -------------------------------------------------
    {
        enum { V = 37 };
        float zs[V], zt[V];
        fill_randn(zs, V, 2.0f);
        fill_randn(zt, V, 2.0f);
        struct { const char *name; DistillLoss loss; } cases[] = {
            {"ce (label 5)", CE},
            {"fkl", FKL},
            {"rkl", RKL},
            {"cakld gamma=0.37", {LOSS_CAKLD, 0.37f, 1}},
            {"cakld_ce gamma=0.6 T=1", {LOSS_CAKLD_CE, 0.6f, 1}},
            {"cakld_ce gamma=0.6 T=2.5", {LOSS_CAKLD_CE, 0.6f, 2.5f}},
            {"cakld_ce gamma=0.6 T=20", {LOSS_CAKLD_CE, 0.6f, 20}},
        };
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
            gradcheck(cases[k].name, distill_loss_position, zs, zt, 5, V, V, cases[k].loss, 1e-3f, 1e-5, 0);
    }
    // Wasserstein, away from kinks: distinct, well spaced logits, teacher spaced differently.
    {
        int sizes[][2] = {{9, 9}, {9, 13}, {9, 6}};
        for (int k = 0; k < 3; k++) {
            int V = sizes[k][0], Vt = sizes[k][1];
            float zs[VMAX] = {0}, zt[VMAX] = {0};
            for (int i = 0; i < V; i++) zs[(i * 4) % V] = 0.5f * i + 0.1f * randn();   // 4 is prime to 9
            for (int i = 0; i < Vt; i++) zt[(i * 5) % Vt] = 0.8f * i + 0.1f * randn(); // 5 to 13 and 6
            float eps = 1e-3f;
            double margin = wasserstein_margin(zs, zt, V, Vt, eps);
            char name[96];
            snprintf(name, sizeof name, "test point of wasserstein V=%d Vt=%d: kink margin %.0f (>1)", V, Vt, margin);
            row(name, 1.0 / margin, 1.0, 0);
            snprintf(name, sizeof name, "wasserstein V=%d Vt=%d", V, Vt);
            gradcheck(name, distill_loss_position, zs, zt, -1, V, Vt, WD, eps, 1e-5, 0);
        }
    }

    // ---- 2. a 3-token example by hand --------------------------------------------------------
    // Student P_S = (1/2, 1/4, 1/4) from zs = (ln 2, 0, 0); teacher P_T = (1/8, 1/8, 3/4) from
    // zt = (0, 0, ln 6). With ln = natural log:
    //   ce(label 2)  = -ln(1/4) = 2 ln 2;                  grad = P_S - onehot = (1/2, 1/4, -3/4)
    //   fkl = 1/8 ln(1/4) + 1/8 ln(1/2) + 3/4 ln 3 = -3/8 ln 2 + 3/4 ln 3   (= 0.56403)
    //                                                     grad = P_S - P_T = (3/8, 1/8, -1/2)
    //   rkl = 1/2 ln 4 + 1/4 ln 2 + 1/4 ln(1/3) = 5/4 ln 2 - 1/4 ln 3       (= 0.59178)
    //         a = ln(P_S/P_T) = (2 ln 2, ln 2, -ln 3),    grad = P_S (a - rkl)
    //   cakld(gamma = 1/4) = 1/4 rkl + 3/4 fkl,          grad = 1/4 grad rkl + 3/4 grad fkl
    //   wasserstein: S = (1/2, 1/4, 1/4), T sorted = (3/4, 1/8, 1/8):
    //         L = 1/4 + 1/8 + 1/8 = 1/2;  g = (-1, +1, +1), gbar = sum S g = 0,
    //         grad = P_S (g - gbar) = (-1/2, 1/4, 1/4)
    //   wasserstein against a 4-token teacher P_T = (2, 3, 6, 5) / 16, zt = ln(2, 3, 6, 5):
    //         S padded = (1/2, 1/4, 1/4, 0), T sorted = (6, 5, 3, 2) / 16,
    //         S - T = (2, -1, 1, -2) / 16: L = 6/16 = 3/8;
    //         g by rank = (+1, -1, +1); tokens 1 and 2 tie (ranks 1, 2) so both get the mean 0,
    //         gbar = 1/2 * 1 + 1/4 * 0 + 1/4 * 0 = 1/2,
    //         grad = (1/2 (1 - 1/2), 1/4 (0 - 1/2), 1/4 (0 - 1/2)) = (1/4, -1/8, -1/8)
    //   (no S_r equals T_r here: in floating point such a kink would get an arbitrary sign)
    {
        const double l2 = log(2.0), l3 = log(3.0);
        float zs[3] = {(float)l2, 0, 0}, zt[3] = {0, 0, (float)log(6.0)};
        float zt4[4] = {(float)l2, (float)l3, (float)log(6.0), (float)log(5.0)};
        float dz[4];
        double ps[3] = {0.5, 0.25, 0.25}, a[3] = {2 * l2, l2, -l3};
        double fkl = -3.0 / 8 * l2 + 3.0 / 4 * l3, rkl = 5.0 / 4 * l2 - l3 / 4;
        double d_ce[3] = {0.5, 0.25, -0.75}, d_fkl[3] = {3.0 / 8, 1.0 / 8, -0.5}, d_rkl[3], d_cakld[3];
        for (int v = 0; v < 3; v++) d_rkl[v] = ps[v] * (a[v] - rkl);
        for (int v = 0; v < 3; v++) d_cakld[v] = 0.25 * d_rkl[v] + 0.75 * d_fkl[v];
        double d_w3[3] = {-0.5, 0.25, 0.25}, d_w4[3] = {0.25, -0.125, -0.125};
        DistillLoss cak = {LOSS_CAKLD, 0.25f, 1};
        hand("ce = 2 ln 2", distill_loss_position(dz, NULL, zs, zt, 2, 3, 3, CE, 1), 2 * l2, dz, d_ce, 3);
        hand("fkl = 3/4 ln 3 - 3/8 ln 2", distill_loss_position(dz, NULL, zs, zt, 2, 3, 3, FKL, 1), fkl, dz, d_fkl, 3);
        hand("rkl = 5/4 ln 2 - 1/4 ln 3", distill_loss_position(dz, NULL, zs, zt, 2, 3, 3, RKL, 1), rkl, dz, d_rkl, 3);
        hand("cakld gamma=1/4", distill_loss_position(dz, NULL, zs, zt, 2, 3, 3, cak, 1), 0.25 * rkl + 0.75 * fkl, dz,
             d_cakld, 3);
        hand("wasserstein = 1/2", distill_loss_position(dz, g_scratch, zs, zt, -1, 3, 3, WD, 1), 0.5, dz, d_w3, 3);
        hand("wasserstein Vt=4 (padding, tie) = 3/8", distill_loss_position(dz, g_scratch, zs, zt4, -1, 3, 4, WD, 1),
             0.375, dz, d_w4, 3);
    }

    // ---- 3. identities -------------------------------------------------------------------------
    {
        enum { V = 37 };
        float zs[V], zt[V], d1[V], d2[V], d3[V], zero[V] = {0};
        fill_randn(zs, V, 2.0f);
        fill_randn(zt, V, 2.0f);
        // identical logits: every divergence is 0 with a zero gradient
        DistillLoss ident[] = {FKL, RKL, {LOSS_CAKLD, 0.4f, 1}, WD};
        for (int k = 0; k < 4; k++) {
            double L = distill_loss_position(d1, g_scratch, zs, zs, -1, V, V, ident[k], 1);
            char name[96];
            snprintf(name, sizeof name, "identical logits: %s = 0, grad = 0", LOSS_NAMES[ident[k].kind]);
            row(name, fmax(fabs(L), max_abs(d1, V)), 1e-12, 0);
        }
        {   // all-equal logits: every student token ties
            double L = distill_loss_position(d1, g_scratch, zero, zero, -1, V, V, WD, 1);
            row("identical all-tied logits: wasserstein = 0, grad = 0", fmax(fabs(L), max_abs(d1, V)), 1e-12, 0);
        }
        {   // cakld_ce with identical logits is its CE term alone
            DistillLoss cc = {LOSS_CAKLD_CE, 0.4f, 20};
            double L = distill_loss_position(d1, NULL, zs, zs, 7, V, V, cc, 1);
            double C = distill_loss_position(d2, NULL, zs, zs, 7, V, V, CE, 1);
            row("identical logits: cakld_ce T=20 = ce", fmax(fabs(L - C), max_diff(d1, d2, V)), 1e-6, 0);
        }
        {   // gamma = 0 is the forward KL, gamma = 1 the reverse KL
            DistillLoss c0 = {LOSS_CAKLD, 0, 1}, c1 = {LOSS_CAKLD, 1, 1};
            double a = distill_loss_position(d1, NULL, zs, zt, -1, V, V, c0, 1);
            double b = distill_loss_position(d2, NULL, zs, zt, -1, V, V, FKL, 1);
            row("cakld gamma=0 = fkl", fmax(fabs(a - b), max_diff(d1, d2, V)), 1e-12, 0);
            a = distill_loss_position(d1, NULL, zs, zt, -1, V, V, c1, 1);
            b = distill_loss_position(d2, NULL, zs, zt, -1, V, V, RKL, 1);
            row("cakld gamma=1 = rkl", fmax(fabs(a - b), max_diff(d1, d2, V)), 1e-12, 0);
        }
        {   // cakld_ce at T = 1 is cakld + ce
            DistillLoss cc = {LOSS_CAKLD_CE, 0.3f, 1}, ck = {LOSS_CAKLD, 0.3f, 1};
            double a = distill_loss_position(d1, NULL, zs, zt, 11, V, V, cc, 1);
            double b = distill_loss_position(d2, NULL, zs, zt, 11, V, V, ck, 1);
            double c = distill_loss_position(d3, NULL, zs, zt, 11, V, V, CE, 1);
            for (int v = 0; v < V; v++) d2[v] += d3[v];
            row("cakld_ce T=1 = cakld + ce", fmax(fabs(a - (b + c)), max_diff(d1, d2, V)), 1e-6, 0);
        }
        {   // cakld_ce at T = 3 is 9 cakld(zs/3, zt/3) + ce(zs), gradient 3 grad cakld(zs/3) + grad ce
            DistillLoss cc = {LOSS_CAKLD_CE, 0.3f, 3}, ck = {LOSS_CAKLD, 0.3f, 1};
            float us[V], ut[V];
            for (int v = 0; v < V; v++) us[v] = zs[v] / 3, ut[v] = zt[v] / 3;
            double a = distill_loss_position(d1, NULL, zs, zt, 11, V, V, cc, 1);
            double b = distill_loss_position(d2, NULL, us, ut, 11, V, V, ck, 1);
            double c = distill_loss_position(d3, NULL, zs, zt, 11, V, V, CE, 1);
            for (int v = 0; v < V; v++) d2[v] = 3 * d2[v] + d3[v];
            row("cakld_ce T=3 = 9 cakld(z/3) + ce", fmax(fabs(a - (9 * b + c)) / fabs(a), max_diff(d1, d2, V)), 1e-5, 0);
        }
        {   // names, and what is refused
            int ok = 1;
            for (int k = 0; k < N_LOSSES; k++) ok &= loss_from_name(LOSS_NAMES[k]) == k;
            ok &= loss_from_name("kl") == -1 && loss_from_name("") == -1;
            row("loss names parse back; unknown names give -1", !ok, 0, 0);
            double a = distill_loss_position(d1, NULL, zs, zt, -1, V, V - 1, FKL, 1);
            double b = distill_loss_position(d1, NULL, zs, zt, V, V, V, CE, 1);
            row("NaN for Vt != V (fkl) and for label >= V (ce)", !(isnan(a) && isnan(b)), 0, 0);
        }
    }

    // ---- 4. stability: logits of +-1e4 ---------------------------------------------------------
    {
        enum { V = 40, Vt = 45 };
        float zs[V], zt[Vt], dz[V];
        for (int i = 0; i < V; i++) zs[i] = (i % 3 == 0 ? 1e4f : -1e4f) * (float)uniform();
        for (int i = 0; i < Vt; i++) zt[i] = (i % 2 == 0 ? 1e4f : -1e4f) * (float)uniform();
        zs[1] = -1e4f, zs[3] = 1e4f, zt[4] = 1e4f;
        for (int k = 0; k < N_LOSSES; k++) {
            DistillLoss loss = {(LossKind)k, 0.5f, k == LOSS_CAKLD_CE ? 20.0f : 1.0f};
            double L = distill_loss_position(dz, g_scratch, zs, zt, 1, V, k == LOSS_WASSERSTEIN ? Vt : V, loss, 1);
            int finite = isfinite(L) && L >= 0;
            for (int v = 0; v < V; v++) finite &= isfinite(dz[v]);
            char name[96];
            snprintf(name, sizeof name, "logits +-1e4: %s = %.4g finite, >= 0, finite grad", LOSS_NAMES[k], L);
            row(name, !finite, 0, 0);
        }
        // the CE value there is known: -log P_S(1) = logsumexp(zs) - zs[1] = 1e4 + 1e4 (+ log 1)
        double L = distill_loss_position(dz, NULL, zs, zt, 1, V, V, CE, 1);
        row("logits +-1e4: ce(label at -1e4, max 1e4) = 2e4", fabs(L - 2e4) / 2e4, 1e-6, 0);
    }

    // ---- 5. the batch reduction ----------------------------------------------------------------
    // B = 3 sequences of T = 5; sequence 2 is padding after its first token.
    {
        enum { B = 3, T = 5, V = 7, Vt = 9, N = B * T, W = 9 };
        int labels[N] = {3, 1, -1, 6, 0, -1, -1, 2, 2, 5, 4, -1, -1, -1, -1};
        float logits[N * V], teacher[N * Vt], dl[N * V], dl2[N * V], dz[V], scratch[4 * W];
        fill_randn(logits, N * V, 1.5f);
        fill_randn(teacher, N * Vt, 1.5f);
        for (int k = 0; k < N_LOSSES; k++) {
            DistillLoss loss = {(LossKind)k, 0.3f, 2.0f};
            int vt = k == LOSS_WASSERSTEIN ? Vt : V;
            for (int i = 0; i < N * V; i++) dl[i] = 123.0f;  // must be overwritten everywhere
            double L = distill_loss_batch(dl, scratch, 3, logits, teacher, labels, B, T, V, vt, loss);
            // independent: per position with scale 1, summed, then / B
            double want = 0.0, gerr = 0.0, masked = 0.0;
            for (int n = 0; n < N; n++) {
                if (labels[n] < 0) { masked = fmax(masked, max_abs(dl + n * V, V)); continue; }
                want += distill_loss_position(dz, scratch, logits + n * V, teacher + n * vt, labels[n], V, vt, loss, 1);
                for (int v = 0; v < V; v++) gerr = fmax(gerr, fabs(dl[n * V + v] - dz[v] / B));
            }
            want /= B;
            char name[96];
            snprintf(name, sizeof name, "batch %s: sum over positions / B (value, grad)", LOSS_NAMES[k]);
            row(name, fmax(fabs(L - want) / fabs(want), gerr), 1e-6, 0);
            snprintf(name, sizeof name, "batch %s: masked positions get gradient 0", LOSS_NAMES[k]);
            row(name, masked, 0, 0);
            // the split into scratch rows does not change the gradient, bit for bit
            double split = 0.0;
            for (int rows = 1; rows <= 4; rows++) {
                distill_loss_batch(dl2, scratch, rows, logits, teacher, labels, B, T, V, vt, loss);
                split = fmax(split, max_diff(dl, dl2, N * V));
            }
            snprintf(name, sizeof name, "batch %s: same gradient with 1..4 scratch rows", LOSS_NAMES[k]);
            row(name, split, 0, 0);
            // finite differences of the batch value, masked positions included (they must read 0)
            double ferr = 0.0;
            for (int i = 0; i < N * V; i += 3) {
                float orig = logits[i];
                logits[i] = orig + 1e-3f;
                double h = logits[i];
                double lp = distill_loss_batch(dl2, scratch, 2, logits, teacher, labels, B, T, V, vt, loss);
                logits[i] = orig - 1e-3f;
                h -= logits[i];
                double lm = distill_loss_batch(dl2, scratch, 2, logits, teacher, labels, B, T, V, vt, loss);
                logits[i] = orig;
                ferr = fmax(ferr, fabs((lp - lm) / h - dl[i]));
            }
            snprintf(name, sizeof name, "batch %s: finite differences of the batch value", LOSS_NAMES[k]);
            row(name, ferr / max_abs(dl, N * V), k == LOSS_WASSERSTEIN ? 1e-4 : 1e-5, 0);
        }
    }

    // ---- 6. gamma ------------------------------------------------------------------------------
    // Teacher rows with known max_v P_T(v): ln(3,1,1) -> 3/5, (0,0,0) -> 1/3, ln(1,1,2) -> 1/2,
    // ln(8,1,1) -> 4/5, ln(1,4,5) -> 1/2, ln(2,1,1) -> 1/2. Labels mark positions 2, 4, 5 as
    // padding: real tokens give (3/5 + 1/3 + 4/5) / 3, all positions (sum of all six) / 6.
    {
        enum { B = 2, T = 3, Vt = 3 };
        double rows[6][3] = {{3, 1, 1}, {1, 1, 1}, {1, 1, 2}, {8, 1, 1}, {1, 4, 5}, {2, 1, 1}};
        float teacher[B * T * Vt];
        for (int n = 0; n < 6; n++)
            for (int v = 0; v < 3; v++) teacher[n * 3 + v] = (float)log(rows[n][v]);
        int labels[B * T] = {5, 2, -1, 1, -1, -1};
        double sum = 0.0;
        long long count = 0;
        gamma_accumulate(&sum, &count, teacher, labels, B, T, Vt, 0);
        double want = (3.0 / 5 + 1.0 / 3 + 4.0 / 5) / 3;
        row("gamma, real tokens only = (3/5 + 1/3 + 4/5) / 3", count == 3 ? fabs(sum / count - want) : 1, 1e-6, 0);
        double sum2 = 0.0;
        long long count2 = 0;
        gamma_accumulate(&sum2, &count2, teacher, labels, B, T, Vt, 1);
        want = (3.0 / 5 + 1.0 / 3 + 1.0 / 2 + 4.0 / 5 + 1.0 / 2 + 1.0 / 2) / 6;
        row("gamma, padding included = (sum of six) / 6", count2 == 6 ? fabs(sum2 / count2 - want) : 1, 1e-6, 0);
        gamma_accumulate(&sum, &count, teacher, labels, B, T, Vt, 0);  // a second batch accumulates
        want = (3.0 / 5 + 1.0 / 3 + 4.0 / 5) / 3;
        row("gamma over two batches (sum and count accumulate)", count == 6 ? fabs(sum / count - want) : 1, 1e-6, 0);
    }

    // ---- 7. self-test: a wrong gradient must be caught -----------------------------------------
    {
        enum { V = 37 };
        float zs[V], zt[V];
        fill_randn(zs, V, 2.0f);
        fill_randn(zt, V, 2.0f);
        gradcheck("self-test: rkl without its -KL centring", rkl_uncentred, zs, zt, -1, V, V, RKL, 1e-3f, 1e-5, 1);
    }

    printf("test_loss: %s (%d failure%s)\n", g_failures ? "FAILED" : "passed", g_failures, g_failures == 1 ? "" : "s");
    return g_failures ? 1 : 0;
}
