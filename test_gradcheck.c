// test_gradcheck.c — every backward of train.c against central finite differences.
//
// For an op y = f(x), pick a fixed random r and the scalar L = sum(r * y), accumulated in
// double. The backward given dy = r yields dL/dx; the check perturbs each (sampled) input
// element by +-eps in float and compares (L(x + eps) - L(x - eps)) / 2 eps with it. The error
// of a tensor is max |numeric - analytic| / max |analytic| over the checked elements.
//
// The last check is a self-test: a deliberately wrong backward must be caught.
#define TRAIN_NO_MAIN
#include "train.c"

typedef struct Check Check;
struct Check {
    const char *name;
    int n_inputs;
    const char *input_names[4];
    float *x[4], *dx[4];
    int64_t n[4];
    float *y, *r;          // output and the random weights of L = sum r*y
    int64_t n_y;
    void (*forward)(Check *);
    void (*backward)(Check *);  // dy = r; accumulates into dx[] (zeroed by the checker)
    // the op's sizes and extra state
    int B, T, H, KV, hd, N, C, I, O, V;
    float eps_norm;
    int *tok;
    float *aux[6];
};

static Rng g_rng;
static float *randn(int64_t n, float scale) {
    float *p = malloc_or_die((size_t)n * sizeof(float), "test");
    for (int64_t i = 0; i < n; i++) p[i] = scale * rng_normal(&g_rng);
    return p;
}

static double objective(Check *c) {
    c->forward(c);
    double L = 0.0;
    for (int64_t i = 0; i < c->n_y; i++) L += (double)c->r[i] * c->y[i];
    return L;
}

static int g_failures = 0;

// Returns the worst relative error over the inputs; prints one row per input.
static double check(Check *c, float eps, int max_elems, double tol, int expect_fail) {
    for (int k = 0; k < c->n_inputs; k++) memset(c->dx[k], 0, (size_t)c->n[k] * sizeof(float));
    c->forward(c);
    c->backward(c);
    double worst = 0.0;
    for (int k = 0; k < c->n_inputs; k++) {
        double max_ana = 0.0, max_err = 0.0;
        for (int64_t i = 0; i < c->n[k]; i++) max_ana = fmax(max_ana, fabs(c->dx[k][i]));
        int64_t stride = c->n[k] > max_elems ? c->n[k] / max_elems : 1;
        for (int64_t i = 0; i < c->n[k]; i += stride) {
            float orig = c->x[k][i];
            c->x[k][i] = orig + eps;
            double lp = objective(c);
            c->x[k][i] = orig - eps;
            double lm = objective(c);
            c->x[k][i] = orig;
            double num = (lp - lm) / (2.0 * (double)eps);
            max_err = fmax(max_err, fabs(num - c->dx[k][i]));
        }
        double rel = max_ana > 0 ? max_err / max_ana : max_err;
        worst = fmax(worst, rel);
        int bad = rel > tol;
        printf("  %-22s %-10s %8lld  %.2e  %s\n", c->name, c->input_names[k], (long long)c->n[k], rel,
               expect_fail ? (bad ? "caught (expected)" : "correct here") : (bad ? "FAIL" : "ok"));
    }
    int failed = expect_fail ? worst <= tol : worst > tol;
    g_failures += failed;
    return worst;
}

// --- the ops ---------------------------------------------------------------------------------

static void rms_f(Check *c) { rmsnorm_forward(c->y, c->aux[0], c->x[0], c->x[1], c->N, c->C, c->eps_norm); }
static void rms_b(Check *c) { rmsnorm_backward(c->dx[0], c->dx[1], c->r, c->x[0], c->x[1], c->aux[0], c->N, c->C); }

static void mm_f(Check *c) { matmul_forward(c->y, c->x[0], c->x[1], c->N, c->I, c->O); }
static void mm_b(Check *c) { matmul_backward(c->dx[0], c->dx[1], c->r, c->x[0], c->x[1], c->N, c->I, c->O); }

// RoPE works in place: copy x to y, then rotate y.
static void rope_f(Check *c) {
    memcpy(c->y, c->x[0], (size_t)c->n_y * sizeof(float));
    rope_forward(c->y, c->aux[0], c->aux[1], c->B, c->T, c->H, c->hd);
}
static void rope_b(Check *c) {
    memcpy(c->aux[2], c->r, (size_t)c->n_y * sizeof(float));
    rope_backward(c->aux[2], c->aux[0], c->aux[1], c->B, c->T, c->H, c->hd);
    for (int64_t i = 0; i < c->n_y; i++) c->dx[0][i] += c->aux[2][i];
}

static void att_f(Check *c) {
    attention_forward(c->y, c->aux[0], c->x[0], c->x[1], c->x[2], c->B, c->T, c->H, c->KV, c->hd);
}
static void att_b(Check *c) {
    attention_backward(c->dx[0], c->dx[1], c->dx[2], c->r, c->x[0], c->x[1], c->x[2], c->y, c->aux[0], c->B, c->T,
                       c->H, c->KV, c->hd);
}

static void swi_f(Check *c) { swiglu_forward(c->y, c->x[0], c->x[1], c->n_y); }
static void swi_b(Check *c) { swiglu_backward(c->dx[0], c->dx[1], c->r, c->x[0], c->x[1], c->n_y); }

// A deliberately wrong SwiGLU backward: it forgets the sigmoid's own derivative,
// dg = dh * u * sigmoid(g). The checker must catch it.
static void swi_wrong_b(Check *c) {
    for (int64_t i = 0; i < c->n_y; i++) {
        float sg = 1.0f / (1.0f + expf(-c->x[0][i]));
        c->dx[0][i] += c->r[i] * c->x[1][i] * sg;
        c->dx[1][i] += c->r[i] * c->x[0][i] * sg;
    }
}

static void emb_f(Check *c) { embedding_forward(c->y, c->tok, c->x[0], c->N, c->C); }
static void emb_b(Check *c) { embedding_backward(c->dx[0], c->r, c->tok, c->N, c->C); }

static void res_f(Check *c) { residual_forward(c->y, c->x[0], c->x[1], c->n_y); }
static void res_b(Check *c) {  // the residual's backward is the identity to both inputs
    for (int64_t i = 0; i < c->n_y; i++) { c->dx[0][i] += c->r[i]; c->dx[1][i] += c->r[i]; }
}

static void ce_f(Check *c) { c->y[0] = crossentropy_forward(c->x[0], c->tok, c->N, c->V); }
static void ce_b(Check *c) { crossentropy_backward(c->dx[0], c->x[0], c->tok, c->N, c->V, c->r[0]); }

// --- the whole model: L = mean cross-entropy, every parameter tensor ------------------------

static Model g_model;
static int g_inputs[64], g_targets[64];
static void model_f(Check *c) {
    // a perturbed learned scale changes W^: quantize again (a no-op for a full-precision model)
    if (g_model.quant.method != QUANT_NONE) g_model.quant_stale = 1;
    c->y[0] = model_forward(&g_model, g_inputs, g_targets, c->B, c->T);
}
static void model_b(Check *c) { model_backward_scaled(&g_model, c->r[0]); }

static void check_model(const char *name, ModelHeader cfg, int B, int T) {
    float *p = malloc_or_die((size_t)tensor_sizes(&cfg, (int64_t[N_TENSORS]){0}) * sizeof(float), "params");
    model_setup(&g_model, &cfg, p);
    // weights larger than a real init's, so gradients are well above float noise
    for (int64_t i = 0; i < g_model.n_params; i++) p[i] = 0.3f * rng_normal(&g_rng);
    for (int l = 0; l < cfg.n_layers; l++)
        for (int i = 0; i < cfg.dim; i++) {
            layer_tensor(g_model.params_t, &g_model, T_ATTN_NORM, l)[i] = 1.0f + 0.2f * rng_normal(&g_rng);
            layer_tensor(g_model.params_t, &g_model, T_MLP_NORM, l)[i] = 1.0f + 0.2f * rng_normal(&g_rng);
        }
    model_alloc_training(&g_model);
    for (int i = 0; i < B * T; i++) {
        g_inputs[i] = (int)(rng_u64(&g_rng) % cfg.vocab_size);
        g_targets[i] = i % T == T - 1 ? -1 : (int)(rng_u64(&g_rng) % cfg.vocab_size);
    }
    float loss = 0, r = 1.0f;
    Check c = {.name = name, .y = &loss, .r = &r, .n_y = 1, .forward = model_f, .backward = model_b, .B = B, .T = T};
    // one check per tensor, each with the model's own gradient buffer
    for (int t = 0; t < N_TENSORS; t++) {
        if (!g_model.params_t[t]) continue;
        c.n_inputs = 1;
        c.input_names[0] = TENSOR_NAMES[t];
        c.x[0] = g_model.params_t[t];
        c.dx[0] = g_model.grads_t[t];
        c.n[0] = g_model.slice[t] * (tensor_is_per_layer(t) ? cfg.n_layers : 1);
        check(&c, 1e-2f, 48, 2e-2, 0);
    }
    model_free(&g_model);
}

static ModelHeader small_config(int tied, int kv, int rope) {
    ModelHeader c = header_defaults();
    c.dim = 16; c.hidden_dim = 24; c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = kv; c.head_dim = 6;
    c.vocab_size = 32; c.max_seq_len = 16; c.tied = tied;
    if (rope) {
        c.rope_scaling = ROPE_LLAMA3; c.rope_theta = 500000.0f; c.rope_factor = 8.0f;
        c.rope_low_freq_factor = 1.0f; c.rope_high_freq_factor = 4.0f; c.rope_original_max_pos = 4;
    }
    return c;
}

// --- quantized models ------------------------------------------------------------------------
// The learned scales of sign (alpha, beta per row) and onebit (h per row, g per column) enter
// W^ smoothly, so finite differences check their gradients through the whole model.
static void random_model_params(const ModelHeader *cfg, int B, int T) {
    float *p = malloc_or_die((size_t)tensor_sizes(cfg, (int64_t[N_TENSORS]){0}) * sizeof(float), "params");
    model_setup(&g_model, cfg, p);
    for (int64_t i = 0; i < g_model.n_params; i++) p[i] = 0.3f * rng_normal(&g_rng);
    for (int i = 0; i < B * T; i++) {
        g_inputs[i] = (int)(rng_u64(&g_rng) % cfg->vocab_size);
        g_targets[i] = i % T == T - 1 ? -1 : (int)(rng_u64(&g_rng) % cfg->vocab_size);
    }
}

static void check_learned_scales(const char *name, int method, int B, int T) {
    ModelHeader cfg = small_config(0, 2, 0);
    random_model_params(&cfg, B, T);
    model_apply_quant(&g_model, (QuantSpec){method, 0, -1});
    model_alloc_training(&g_model);
    float loss = 0, r = 1.0f;
    Check c = {.name = name, .y = &loss, .r = &r, .n_y = 1, .forward = model_f, .backward = model_b, .B = B, .T = T};
    c.n_inputs = 1;
    c.input_names[0] = method == QUANT_SIGN ? "alpha,beta" : "h,g";
    c.x[0] = g_model.params + g_model.n_table;
    c.dx[0] = g_model.grads + g_model.n_table;
    c.n[0] = g_model.n_params - g_model.n_table;
    check(&c, 1e-2f, 96, 2e-2, 0);
    model_free(&g_model);
}

// The straight-through rule, checked directly: a quantized model's gradient of its latent
// linear weights must be what quant.h's backward makes of dL/dW^, where dL/dW^ is the gradient
// of a full-precision model whose weights ARE W^. For int (--ste plain) and ternary that is
// dL/dW^ itself; for sign it is dL/dW^ * alpha_row on |w| <= 1 and 0 elsewhere (quant.h's
// hardtanh STE); for int and nf3 under --ste bitdistiller, what quant.h's
// ste_bitdistiller_backward makes of dL/dW^ (test_quant checks that function on its own).
static void check_ste(const char *name, QuantSpec q, int ste) {
    ModelHeader cfg = small_config(0, 2, 0);
    int B = 2, T = 6;
    random_model_params(&cfg, B, T);
    for (int64_t i = 0; i < g_model.n_params; i++) g_model.params[i] *= 4.0f;  // some |w| > 1
    model_apply_quant(&g_model, q);
    g_model.ste = ste;
    model_alloc_training(&g_model);
    model_zero_grad(&g_model);
    model_forward(&g_model, g_inputs, g_targets, B, T);
    model_backward(&g_model);
    // the same network in full precision, with W^ as its weights
    Model fp;
    float *p = malloc_or_die((size_t)g_model.n_table * sizeof(float), "params");
    memcpy(p, g_model.params, (size_t)g_model.n_table * sizeof(float));
    ModelHeader fc = cfg;
    model_setup(&fp, &fc, p);
    for (int t = 0; t < N_TENSORS; t++)
        if (tensor_is_linear(t)) memcpy(fp.params_t[t], g_model.fwd_t[t], (size_t)(g_model.slice[t] * cfg.n_layers) * sizeof(float));
    model_alloc_training(&fp);
    model_zero_grad(&fp);
    model_forward(&fp, g_inputs, g_targets, B, T);
    model_backward(&fp);
    double worst = 0, mx = 0;
    for (int t = 0; t < N_TENSORS; t++) {
        int64_t n = g_model.slice[t] * (tensor_is_per_layer(t) ? cfg.n_layers : 1);
        int64_t rows, cols;
        tensor_slice_shape(&cfg, t, &rows, &cols);
        float *bd = NULL;  // --ste bitdistiller: quant.h's backward of the full-precision dL/dW^
        if (tensor_is_linear(t) && ste == QUANT_STE_BITDISTILLER && q.method != QUANT_SIGN && q.method != QUANT_TERNARY) {
            bd = calloc_or_die((size_t)n, sizeof(float), "bd");
            for (int l = 0; l < cfg.n_layers; l++) {
                int64_t o = l * g_model.slice[t];
                quant_backward(bd + o, NULL, NULL, fp.grads_t[t] + o, g_model.params_t[t] + o, g_model.qp0[t] + l * g_model.qn0[t],
                               g_model.qp1[t] + l * g_model.qn1[t], q, ste, (int)rows, (int)cols);
            }
        }
        for (int64_t i = 0; i < n; i++) {
            double want = bd ? bd[i] : fp.grads_t[t][i];
            if (tensor_is_linear(t) && q.method == QUANT_SIGN) {
                int64_t row = i / cols;  // rows of all layers are consecutive: row index over layers
                int l = (int)(row / rows);
                float alpha = g_model.qp0[t][l * g_model.qn0[t] + row % rows];
                want = fabsf(g_model.params_t[t][i]) <= 1.0f ? want * alpha : 0.0;
            }
            worst = fmax(worst, fabs(g_model.grads_t[t][i] - want));
            mx = fmax(mx, fabs(want));
        }
        free(bd);
    }
    int bad = worst > 1e-6 * mx;
    printf("  %-22s %-10s %8s  %.2e  %s\n", name, "latent W", "all", worst / mx, bad ? "FAIL" : "ok");
    g_failures += bad;
    model_free(&fp);
    model_free(&g_model);
}

int main(void) {
    g_rng = rng_seeded(1234);
    printf("finite differences: eps perturbs one element at a time; error = max|num - ana| / max|ana|\n");
    printf("  %-22s %-10s %8s  %s\n", "op", "input", "elements", "rel. error");
    const double tol = 1e-2;
    const float eps = 1e-2f;

    int N = 6, C = 10;
    { // RMSNorm
        Check c = {.name = "rmsnorm", .n_inputs = 2, .input_names = {"x", "w"}, .N = N, .C = C, .eps_norm = 1e-5f};
        c.x[0] = randn(N * C, 1.0f); c.x[1] = randn(C, 1.0f); c.n[0] = N * C; c.n[1] = C;
        c.dx[0] = randn(N * C, 0); c.dx[1] = randn(C, 0);
        c.y = randn(N * C, 0); c.r = randn(N * C, 1.0f); c.n_y = N * C; c.aux[0] = randn(N, 0);
        c.forward = rms_f; c.backward = rms_b;
        check(&c, eps, 1 << 20, tol, 0);
    }
    { // matmul, all of it in edge tiles (N, O below gemm.h's micro-tile MR x NR)
        int I = 13, O = 7;
        Check c = {.name = "matmul", .n_inputs = 2, .input_names = {"x", "w"}, .N = N, .I = I, .O = O};
        c.x[0] = randn(N * I, 1.0f); c.x[1] = randn(O * I, 1.0f); c.n[0] = N * I; c.n[1] = O * I;
        c.dx[0] = randn(N * I, 0); c.dx[1] = randn(O * I, 0);
        c.y = randn(N * O, 0); c.r = randn(N * O, 1.0f); c.n_y = N * O;
        c.forward = mm_f; c.backward = mm_b;
        check(&c, eps, 1 << 20, tol, 0);
    }
    { // matmul on a larger shape, sampled: full micro-tiles and edge tiles
        int N2 = GEMM_MR + 2, I = 37, O = GEMM_NR + 5;
        Check c = {.name = "matmul (tiled)", .n_inputs = 2, .input_names = {"x", "w"}, .N = N2, .I = I, .O = O};
        c.x[0] = randn(N2 * I, 1.0f); c.x[1] = randn(O * I, 1.0f); c.n[0] = N2 * I; c.n[1] = O * I;
        c.dx[0] = randn(N2 * I, 0); c.dx[1] = randn(O * I, 0);
        c.y = randn(N2 * O, 0); c.r = randn(N2 * O, 1.0f); c.n_y = N2 * O;
        c.forward = mm_f; c.backward = mm_b;
        check(&c, eps, 200, tol, 0);
    }
    int B = 2, T = 5, H = 4, KV = 2, hd = 6;
    { // RoPE (plain and Llama-3 scaled tables)
        for (int scaled = 0; scaled <= 1; scaled++) {
            ModelHeader cfg = small_config(0, KV, scaled);
            cfg.head_dim = hd;
            Check c = {.name = scaled ? "rope (llama3 scaling)" : "rope", .n_inputs = 1, .input_names = {"x"},
                       .B = B, .T = T, .H = H, .hd = hd};
            int64_t n = (int64_t)B * T * H * hd;
            c.x[0] = randn(n, 1.0f); c.n[0] = n; c.dx[0] = randn(n, 0);
            c.y = randn(n, 0); c.r = randn(n, 1.0f); c.n_y = n;
            c.aux[0] = randn(T * hd / 2, 0); c.aux[1] = randn(T * hd / 2, 0); c.aux[2] = randn(n, 0);
            rope_tables(c.aux[0], c.aux[1], &cfg, T);
            c.forward = rope_f; c.backward = rope_b;
            check(&c, eps, 1 << 20, tol, 0);
        }
    }
    { // causal grouped-query attention
        Check c = {.name = "attention (GQA)", .n_inputs = 3, .input_names = {"q", "k", "v"},
                   .B = B, .T = T, .H = H, .KV = KV, .hd = hd};
        int64_t nq = (int64_t)B * T * H * hd, nkv = (int64_t)B * T * KV * hd;
        c.x[0] = randn(nq, 1.0f); c.x[1] = randn(nkv, 1.0f); c.x[2] = randn(nkv, 1.0f);
        c.n[0] = nq; c.n[1] = nkv; c.n[2] = nkv;
        c.dx[0] = randn(nq, 0); c.dx[1] = randn(nkv, 0); c.dx[2] = randn(nkv, 0);
        c.y = randn(nq, 0); c.r = randn(nq, 1.0f); c.n_y = nq;
        c.aux[0] = randn(B * H * T, 0);  // lse
        c.forward = att_f; c.backward = att_b;
        check(&c, eps, 1 << 20, tol, 0);
    }
    int64_t n = 40;
    { // SwiGLU
        Check c = {.name = "swiglu", .n_inputs = 2, .input_names = {"gate", "up"}};
        c.x[0] = randn(n, 2.0f); c.x[1] = randn(n, 1.0f); c.n[0] = n; c.n[1] = n;
        c.dx[0] = randn(n, 0); c.dx[1] = randn(n, 0);
        c.y = randn(n, 0); c.r = randn(n, 1.0f); c.n_y = n;
        c.forward = swi_f; c.backward = swi_b;
        check(&c, eps, 1 << 20, tol, 0);
        // self-test: the same check must flag a wrong backward
        c.name = "swiglu, wrong backward";
        c.backward = swi_wrong_b;
        check(&c, eps, 1 << 20, tol, 1);
    }
    { // residual
        Check c = {.name = "residual", .n_inputs = 2, .input_names = {"a", "b"}};
        c.x[0] = randn(n, 1.0f); c.x[1] = randn(n, 1.0f); c.n[0] = n; c.n[1] = n;
        c.dx[0] = randn(n, 0); c.dx[1] = randn(n, 0);
        c.y = randn(n, 0); c.r = randn(n, 1.0f); c.n_y = n;
        c.forward = res_f; c.backward = res_b;
        check(&c, eps, 1 << 20, tol, 0);
    }
    { // embedding, with a repeated token
        int tok[6] = {3, 1, 3, 0, 4, 3};
        int V = 5;
        Check c = {.name = "embedding", .n_inputs = 1, .input_names = {"E"}, .N = 6, .C = C, .tok = tok};
        c.x[0] = randn(V * C, 1.0f); c.n[0] = V * C; c.dx[0] = randn(V * C, 0);
        c.y = randn(6 * C, 0); c.r = randn(6 * C, 1.0f); c.n_y = 6 * C;
        c.forward = emb_f; c.backward = emb_b;
        check(&c, eps, 1 << 20, tol, 0);
    }
    { // cross-entropy, one ignored row
        int V = 7, tgt[6] = {2, -1, 6, 0, 3, 3};
        float loss = 0, r = 1.7f;
        Check c = {.name = "cross-entropy", .n_inputs = 1, .input_names = {"logits"}, .N = 6, .V = V, .tok = tgt};
        c.x[0] = randn(6 * V, 2.0f); c.n[0] = 6 * V; c.dx[0] = randn(6 * V, 0);
        c.y = &loss; c.r = &r; c.n_y = 1;
        c.forward = ce_f; c.backward = ce_b;
        check(&c, eps, 1 << 20, tol, 0);
    }
    // the whole model, three shapes
    check_model("model (untied, GQA)", small_config(0, 2, 0), 2, 6);
    check_model("model (tied, MHA)", small_config(1, 4, 0), 2, 6);
    check_model("model (llama3 rope)", small_config(0, 1, 1), 1, 8);
    // quantized models: learned scales by finite differences, the STE rule directly
    check_learned_scales("model, sign scales", QUANT_SIGN, 2, 6);
    check_learned_scales("model, onebit scales", QUANT_ONEBIT, 2, 6);
    check_ste("STE, int 2-bit g=8", (QuantSpec){QUANT_INT, 2, 8}, QUANT_STE_PLAIN);
    check_ste("bitdistiller, int2 g=8", (QuantSpec){QUANT_INT, 2, 8}, QUANT_STE_BITDISTILLER);
    check_ste("bitdistiller, nf3 row", (QuantSpec){QUANT_NF3, 3, -1}, QUANT_STE_BITDISTILLER);
    check_ste("STE, ternary", (QuantSpec){QUANT_TERNARY, 2, -1}, QUANT_STE_PLAIN);
    check_ste("STE, sign (hardtanh)", (QuantSpec){QUANT_SIGN, 1, -1}, QUANT_STE_PLAIN);

    printf("%s: %d check(s) beyond tolerance %.0e\n", g_failures ? "FAILED" : "passed", g_failures, tol);
    return g_failures ? 1 : 0;
}
