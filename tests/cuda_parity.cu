// tests/cuda_parity.cu — train.cu against train.c, on the same random models and tokens.
//
// train.c is the independent reference here: it is tested against finite differences and
// transformers (test_gradcheck, test_reference). Each check prints what it compared and the
// error it found:
//   - forward: logits and loss; backward: the gradient of every tensor (plain fp32 matmuls, so
//     the only differences are summation orders): relative error max|gpu - cpu| / max|cpu|
//   - every quantizer of quant.h: the fake-quantized weights and the codes, bit for bit; the
//     same made one layer at a time from the codes (layered W^), and training steps with it
//   - quantized backward (STE; sign's and onebit's learned scales; BitDistiller's through the
//     group scales, --ste bitdistiller): gradients
//   - every loss of loss.h through distill_step: loss, dL/dlogits, gradients; the teacher's gamma
//   - AdamW on identical gradients; TF32 matmuls against fp32
//   - generation: the decode step through the KV cache against the full forward; the scoring
//     path's log softmax(z)[target]
//   - --matmul bf16: the bf16 cast bit for bit against a host rounding; the RMSNorm backward (dx,
//     its bf16 copy, dw) against the formulas in double; the activations written in bf16 by their
//     producers (and the matmuls on them) bit for bit against fp32 + cast, and the residual add in
//     the matmul's epilogue against the host's fp32 add; then
//     the forward, every gradient and every loss against train.c's fp32 at bf16 tolerances (bf16
//     keeps 8 significant bits: a rounding error of 2^-9 per operand), with the teacher stored in
//     bf16 alone
//   - --attention flash (bf16 tensor cores): its kernels against the fp32 fused kernels on random
//     inputs of many shapes; the model's forward and gradients against train.c at bf16 tolerances
//   - --attention cudnn (built with cuDNN): cuDNN's fused attention against the flash kernels on
//     random inputs; the model's forward and gradients against train.c at bf16 tolerances
// Ends with "N passed, M failed"; exit 1 on any failure. Needs a GPU.
#define TRAIN_CU_NO_MAIN
#include "../train.cu"

static int g_pass, g_fail;

// The tolerances of the model tests: fp32 matmuls (only summation orders differ), or bf16.
static struct { double loss, logits, grads, dloss, dlogits, gamma; } g_tol = {2e-6, 2e-5, 2e-4, 1e-5, 1e-4, 1e-6};

static void check(const char *what, double err, double tol) {
    int ok = err <= tol;  // NaN fails
    printf("  %s  %-58s error %.3e (tolerance %.1e)\n", ok ? "ok  " : "FAIL", what, err, tol);
    ok ? g_pass++ : g_fail++;
}

static double rel_err(const float *a, const float *b, int64_t n) {
    double d = 0.0, s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (!(e <= d)) d = e;  // NaN propagates
        if (fabs(b[i]) > s) s = fabs(b[i]);
    }
    return d / (s > 0 ? s : 1.0);
}

// A finite float rounded to bf16, to nearest even, on the bits: what every bf16 the GPU writes
// is checked against.
static uint16_t host_bf16_rne(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

static float *download(const float *d, int64_t n) {
    float *h = (float *)malloc((size_t)n * sizeof(float));
    if (!h) fail("out of host memory");
    cudaCheck(cudaMemcpy(h, d, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}

static uint64_t g_rng = 88172645463325252ULL;
static uint64_t next_u64(void) { g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17; return g_rng; }

static void random_tokens(int *inputs, int *targets, int N, int V, int masked) {
    for (int i = 0; i < N; i++) {
        inputs[i] = (int)(next_u64() % V);
        targets[i] = masked && i % 7 == 3 ? -1 : (int)(next_u64() % V);
    }
}

// Gradients of every tensor (and the learned scales) after the backward both just ran.
static void compare_grads(const char *label, HostModel *h, Model *g, double tol) {
    float *gg = download(g->grads, g->n_params);
    const float *gc = host_cpu_grads(h);
    char what[160];
    for (int t = 0; t < N_TENSORS; t++) {
        if (h->offset[t] < 0) continue;
        int64_t n = h->slice[t] * (h->per_layer[t] ? h->n_layers : 1);
        snprintf(what, sizeof what, "%s: d%s", label, t == T_EMBED ? "embed" : t == T_LM_HEAD ? "lm_head" :
                 t == T_WQ ? "wq" : t == T_WK ? "wk" : t == T_WV ? "wv" : t == T_WO ? "wo" : t == T_WGATE ? "wgate" :
                 t == T_WUP ? "wup" : t == T_WDOWN ? "wdown" : t == T_ATTN_NORM ? "attn_norm" : t == T_MLP_NORM ? "mlp_norm" : "final_norm");
        check(what, rel_err(gg + h->offset[t], gc + h->offset[t], n), tol);
    }
    if (h->n_params > h->n_table) {
        snprintf(what, sizeof what, "%s: d(learned quantizer scales)", label);
        check(what, rel_err(gg + h->n_table, gc + h->n_table, h->n_params - h->n_table), tol);
    }
    free(gg);
}

// Forward (logits, loss) and CE backward of a model, CPU against GPU.
static void test_forward_backward(const char *label, const char *shape, int vocab, int untied, int q, int bits, int group,
                                  int B, int T) {
    HostModel h;
    host_model_init(&h, shape, vocab, untied, 7, q, bits, group);
    Model g;
    model_setup(&g, &h, "parameters");
    model_alloc_training(&g);
    int N = B * T, V = h.vocab_size;
    int *inputs = (int *)malloc(N * sizeof(int)), *targets = (int *)malloc(N * sizeof(int));
    random_tokens(inputs, targets, N, V, 1);
    printf("%s: %s, %d layers, dim %d, heads %d/%d x %d, vocab %d, %s, -q %s -b %d -g %d, %d x %d tokens\n", label, shape,
           h.n_layers, h.dim, h.n_heads, h.n_kv_heads, h.head_dim, V, h.tied ? "tied" : "untied", quant_method_name(q), bits,
           group, B, T);
    float lc = host_cpu_forward(&h, inputs, targets, B, T);
    float lg = model_forward(&g, inputs, targets, B, T);
    char what[160];
    snprintf(what, sizeof what, "%s: loss (cpu %.6f, gpu %.6f), relative", label, lc, lg);
    check(what, fabs((double)lc - lg) / fabs((double)lc), g_tol.loss);
    float *zg = download(g.logits, (int64_t)N * V);
    snprintf(what, sizeof what, "%s: logits", label);
    check(what, rel_err(zg, host_cpu_logits(&h), (int64_t)N * V), g_tol.logits);
    host_cpu_backward(&h);
    model_zero_grad(&g);
    model_backward_scaled(&g, targets, 1.0f);
    compare_grads(label, &h, &g, g_tol.grads);
    free(zg); free(inputs); free(targets);
    model_free(&g);
    host_model_free(&h);
}

// BitDistiller's backward (--ste bitdistiller): the CE backward of a quantized model, the GPU's
// dL/dW^ mapped in place by model_ste_backward, against train.c's quant_backward under the same rule.
static void test_ste_bitdistiller(const char *label, int q, int bits, int group) {
    HostModel h;
    host_model_init(&h, "tiny", 0, 0, 7, q, bits, group);
    host_set_ste(&h, QUANT_STE_BITDISTILLER);
    Model g;
    model_setup(&g, &h, "parameters");
    model_alloc_training(&g);
    int B = 2, T = 64, N = B * T;
    int *inputs = (int *)malloc(N * sizeof(int)), *targets = (int *)malloc(N * sizeof(int));
    random_tokens(inputs, targets, N, h.vocab_size, 5);
    host_cpu_forward(&h, inputs, targets, B, T);
    host_cpu_backward(&h);
    model_zero_grad(&g);
    model_forward(&g, inputs, targets, B, T);
    model_backward_scaled(&g, targets, 1.0f);
    model_ste_backward(&g);
    compare_grads(label, &h, &g, g_tol.grads);
    free(inputs); free(targets);
    model_free(&g);
    host_model_free(&h);
}

// Generation and scoring (train.cu section 10): the decode step, fed the tokens of inputs[B,T]
// one position at a time through the KV cache, against train.c's full causal forward of the
// same tokens (the logits at position t may only depend on tokens 0..t); then the scoring
// path's log softmax(z)[target] against the same CPU logits, in double. bf16_only: the model is
// stored in bf16 alone (model_setup_teacher), as a frozen teacher.
static void test_decode(const char *label, const char *shape, int vocab, int q, int bits, int group, int B, int T,
                        int bf16_only) {
    HostModel h;
    host_model_init(&h, shape, vocab, 0, 11, q, bits, group);
    Model g;
    if (bf16_only) model_setup_teacher(&g, &h);
    else model_setup(&g, &h, "parameters");
    int N = B * T, V = h.vocab_size;
    int *inputs = (int *)malloc(N * sizeof(int)), *targets = (int *)malloc(N * sizeof(int)), *tok = (int *)malloc(B * sizeof(int));
    double *lp = (double *)malloc(N * sizeof(double));
    random_tokens(inputs, targets, N, V, 1);
    host_cpu_forward(&h, inputs, NULL, B, T);
    const float *zc = host_cpu_logits(&h);
    g_infer = &g;
    gpu_decode_begin(B, T);
    double err = 0.0, scale = 0.0;
    for (int pos = 0; pos < T; pos++) {
        for (int b = 0; b < B; b++) tok[b] = inputs[b * T + pos];
        const float *zg = gpu_decode_step(tok, pos);
        for (int b = 0; b < B; b++)
            for (int i = 0; i < V; i++) {
                double c = zc[((int64_t)b * T + pos) * V + i], e = fabs(zg[(int64_t)b * V + i] - c);
                if (!(e <= err)) err = e;
                if (fabs(c) > scale) scale = fabs(c);
            }
    }
    gpu_decode_end();
    char what[160];
    snprintf(what, sizeof what, "%s: decode logits, %d positions through the KV cache", label, T);
    check(what, err / (scale > 0 ? scale : 1.0), g_tol.logits);
    gpu_target_logprobs(inputs, targets, B, T, lp);
    err = 0.0;
    for (int n = 0; n < N; n++) {
        if (targets[n] < 0) continue;
        const float *z = zc + (int64_t)n * V;
        double mx = z[0], s = 0.0;
        for (int i = 1; i < V; i++) mx = z[i] > mx ? z[i] : mx;
        for (int i = 0; i < V; i++) s += exp(z[i] - mx);
        double e = fabs(lp[n] - (z[targets[n]] - mx - log(s)));
        if (!(e <= err)) err = e;
    }
    snprintf(what, sizeof what, "%s: log softmax(z)[target], max absolute", label);
    check(what, err, g_tol.logits * 10);
    free(inputs); free(targets); free(tok); free(lp);
    model_free(&g);
    host_model_free(&h);
}

// Device arrays a and b of n elements of `size` bytes: how many differ in their bits.
static int64_t bits_differing(const void *a, const void *b, int64_t n, size_t size) {
    char *ha = (char *)malloc((size_t)n * size), *hb = (char *)malloc((size_t)n * size);
    if (!ha || !hb) fail("out of host memory");
    cudaCheck(cudaMemcpy(ha, a, (size_t)n * size, cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(hb, b, (size_t)n * size, cudaMemcpyDeviceToHost));
    int64_t d = 0;
    for (int64_t i = 0; i < n; i++) d += memcmp(ha + i * size, hb + i * size, size) != 0;
    free(ha); free(hb);
    return d;
}

// quant.h on the GPU: the same latent weights must give the same W^ and codes, bit for bit.
static void test_quantizer(int q, int bits, int group) {
    HostModel h;
    host_model_init(&h, "tiny", 0, 0, 11, q, bits, group);
    Model g;
    model_setup(&g, &h, "parameters");
    const uint8_t *cc;
    const float *wc = host_cpu_quantized(&h, &cc);
    model_quantize(&g);
    uint8_t *cg = (uint8_t *)malloc((size_t)g.n_codes);
    cudaCheck(cudaMemcpy(cg, g.codes, (size_t)g.n_codes, cudaMemcpyDeviceToHost));
    int64_t wdiff = 0, cdiff = 0;
    for (int64_t i = 0; i < g.n_codes; i++) cdiff += cg[i] != cc[i];
    float *wg = NULL;
    if (g_bf16) {  // W^ in the bf16 copies alone: the host's fp32 W^ rounded to nearest even, on the bits
        uint16_t *hb = (uint16_t *)malloc((size_t)g.n_codes * 2);
        for (int t = 0; t < N_TENSORS; t++)
            if (h.is_linear[t])
                cudaCheck(cudaMemcpy(hb + g.qoff[t], g.wbf_t[t], (size_t)tensor_numel(&g, t) * 2, cudaMemcpyDeviceToHost));
        for (int64_t i = 0; i < g.n_codes; i++) wdiff += hb[i] != host_bf16_rne(wc[i]);
        free(hb);
    } else {
        wg = download(g.wq, g.n_codes);
        for (int64_t i = 0; i < g.n_codes; i++) wdiff += memcmp(&wg[i], &wc[i], sizeof(float)) != 0;
    }
    char what[160];
    snprintf(what, sizeof what, "quantizer -q %s -b %d -g %d: W^%s bits differing (of %lld)", quant_method_name(q), bits, group,
             g_bf16 ? " (bf16)" : "", (long long)g.n_codes);
    check(what, (double)wdiff, 0);
    snprintf(what, sizeof what, "quantizer -q %s -b %d -g %d: codes differing", quant_method_name(q), bits, group);
    check(what, (double)cdiff, 0);
    // layered W^ (--layered-wq): the same model's quantizer's pass (codes and scales, no W^), then
    // each layer's W^ made from them (last layer first, as the backward asks, and the last again
    // after layer 0, over another layer's): bit for bit the whole pass's W^, and its codes
    g_wq_layers = 1;
    Model y;
    model_setup(&y, &h, "parameters");
    g_wq_layers = 0;
    model_quantize(&y);
    int L = h.n_layers;
    int64_t ldiff = bits_differing(y.codes, g.codes, g.n_codes, 1);
    for (int i = 0; i <= L; i++) {
        int l = i < L ? L - 1 - i : L - 1;
        model_layer_weights(&y, l);
        for (int t = 0; t < N_TENSORS; t++) {
            if (!h.is_linear[t]) continue;
            int64_t at = (int64_t)l * g.slice[t];
            ldiff += g_bf16 ? bits_differing(y.wbf_t[t], g.wbf_t[t] + at, g.slice[t], 2)
                            : bits_differing(y.fwd_t[t], g.fwd_t[t] + at, g.slice[t], 4);
        }
    }
    snprintf(what, sizeof what, "quantizer -q %s -b %d -g %d: layered W^ (from codes), codes: bits differing", quant_method_name(q),
             bits, group);
    check(what, (double)ldiff, 0);
    model_free(&y);
    free(wg); free(cg);
    model_free(&g);
    host_model_free(&h);
}

// Two training steps (forward, backward, AdamW after the first) of models w and y, set up from the
// same HostModel, on the same B x T random tokens (some targets masked); before each model's
// turn, set(0) for w and set(1) for y when set is given (the switch under test). Returns the bits
// that differ in their gradients and parameters after it, plus the steps whose losses differ.
static int64_t two_steps_differing(Model *w, Model *y, int vocab, int B, int T, void (*set)(int)) {
    Model *ms[2] = {w, y};
    int N = B * T;
    int *inputs = (int *)malloc(N * sizeof(int)), *targets = (int *)malloc(N * sizeof(int));
    random_tokens(inputs, targets, N, vocab, 1);
    OptConfig opt = {1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    float loss[2][2];
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < 2; i++) {
            Model *m = ms[i];
            if (set) set(i);
            model_alloc_training(m);
            model_zero_grad(m);
            loss[s][i] = model_forward(m, inputs, targets, B, T);
            model_backward_scaled(m, targets, 1.0f);
            if (s == 0) adamw_update(m, &opt, opt.lr, 1.0f);
        }
    free(inputs); free(targets);
    return bits_differing(y->grads, w->grads, w->n_params, 4) + bits_differing(y->params, w->params, w->n_params, 4) +
           (loss[0][0] != loss[0][1]) + (loss[1][0] != loss[1][1]);
}

// A training step with layered W^ (as a run that trains has) against whole W^ (as the tests above):
// the same model and tokens, two steps of forward, backward and AdamW: losses, every gradient,
// every parameter and the flips of the second step's quantizer's pass, bit for bit.
static void test_layered_training(int q, int bits, int group) {
    HostModel h;
    host_model_init(&h, "tiny", 0, 1, 13, q, bits, group);
    Model w, y;
    model_setup(&w, &h, "parameters");
    g_wq_layers = 1;
    model_setup(&y, &h, "parameters");
    g_wq_layers = 0;
    int64_t d = two_steps_differing(&w, &y, h.vocab_size, 2, 16, NULL);
    char what[160];
    snprintf(what, sizeof what, "layered W^ -q %s -b %d: 2 steps' losses, gradients, parameters, flips differing",
             quant_method_name(q), bits);
    check(what, (double)(d + (w.flips_total != y.flips_total)), 0);
    model_free(&w); model_free(&y);
    host_model_free(&h);
}

// --recompute (mid, gate and up remade in the backward) against keeping them: two training steps of
// the same quantized model, losses, gradients and parameters bit for bit, and fewer bytes of
// activations kept per layer.
static void set_recompute(int on) { g_recompute = on; }
static void test_recompute(void) {
    HostModel h;
    host_model_init(&h, "tiny", 0, 1, 17, QUANT_INT, 2, 32);
    Model w, y;
    model_setup(&w, &h, "parameters");
    model_setup(&y, &h, "parameters");
    int64_t d = two_steps_differing(&w, &y, h.vocab_size, 2, 32, set_recompute);
    g_recompute = 0;
    char what[160];
    snprintf(what, sizeof what, "--recompute%s: 2 steps' losses, gradients, parameters differing", g_bf16 ? " (bf16)" : "");
    check(what, (double)d, 0);
    int kept = 0, remade[3] = {A_RESID_MID, A_GATE, A_UP};
    for (int i = 0; i < 3; i++) kept += (y.act_layer_stride[remade[i]] != 0) + (w.act_layer_stride[remade[i]] == 0);
    snprintf(what, sizeof what, "--recompute%s: mid, gate and up kept per layer without it, not with it (wrong of 6)",
             g_bf16 ? " (bf16)" : "");
    check(what, (double)kept, 0);
    model_free(&w); model_free(&y);
    host_model_free(&h);
}

// quantize_group4_kernel (a lane owns 4 weights, vector loads and stores) against the scalar
// quantize_group_kernel on the same random weights and previous codes, for W^ in fp32 and bf16:
// W^, codes, scales and flip counts must be the same bits. 3 layers of 8192 weights: at g 128 a
// block's run of groups (8 warps of QG4_RUN) crosses layers, at g 32 it ends with one.
template <typename W>
static void test_group4_kernel(int method, int bits, int g) {
    int64_t n = 4 * 2048, L = 3, groups = n * L / g, nw = n * L;  // 3 "layers" of n weights
    float *hw = (float *)malloc((size_t)nw * sizeof(float));
    uint8_t *hc = (uint8_t *)malloc((size_t)nw);
    for (int64_t i = 0; i < nw; i++) {
        hw[i] = (float)((int64_t)(next_u64() % 2000001) - 1000000) * 1e-7f;
        if (i % 97 == 5) hw[i] = 0.0f;
        hc[i] = (uint8_t)(next_u64() % (1u << bits));
    }
    float *w = (float *)gpu_malloc((size_t)nw * sizeof(float), "scratch");
    float *par = (float *)gpu_malloc((size_t)groups * 4 * sizeof(float), "scratch");
    W *wq = (W *)gpu_malloc((size_t)nw * 2 * sizeof(W), "scratch");
    uint8_t *codes = (uint8_t *)gpu_malloc((size_t)nw * 2, "scratch");
    unsigned long long *fl = (unsigned long long *)gpu_malloc(2 * L * sizeof(unsigned long long), "scratch");
    int *bad = (int *)gpu_malloc(sizeof(int), "scratch");
    cudaCheck(cudaMemcpy(w, hw, (size_t)nw * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(codes, hc, (size_t)nw, cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(codes + nw, hc, (size_t)nw, cudaMemcpyHostToDevice));
    cudaCheck(cudaMemset(fl, 0, 2 * L * sizeof(unsigned long long)));
    quantize_group_kernel<<<blocks_for(groups, 8), 256>>>(wq, codes, fl, 1, par, par + groups, w, groups, g, n, method, bits, bad);
    quantize_group4(wq + nw, codes + nw, fl + L, 1, par + 2 * groups, par + 3 * groups, w, groups, g, n, method, bits, bad);
    launchCheck();
    unsigned long long hf[6];
    cudaCheck(cudaMemcpy(hf, fl, 2 * L * sizeof(unsigned long long), cudaMemcpyDeviceToHost));
    int64_t d = bits_differing(wq, wq + nw, nw, sizeof(W)) + bits_differing(codes, codes + nw, nw, 1) +
                bits_differing(par, par + 2 * groups, 2 * groups, 4), df = 0, flips = 0;
    for (int l = 0; l < L; l++) { df += hf[l] != hf[L + l]; flips += hf[l]; }
    char what[160];
    snprintf(what, sizeof what, "group4 kernel -q %s -b %d -g %d, W^ %s: W^, codes, scales differing (%lld flips)",
             quant_method_name(method), bits, g, sizeof(W) == 4 ? "fp32" : "bf16", (long long)flips);
    check(what, (double)(d + df + (flips == 0)), 0);
    gpu_free(w); gpu_free(par); gpu_free(wq); gpu_free(codes); gpu_free(fl); gpu_free(bad);
    free(hw); free(hc);
}

// ste_bitdistiller alone on a matrix of 6 x 2048 weights in groups of g (g of 128, 256 or 512:
// the kernel that keeps a group in registers; others: the one that strides), against quant.h's
// ste_bitdistiller_backward from zero; scales from quant.h's quantizer. Every group's max and
// min are tied twice (#mx, #mn of 2), and a weight in 97 is 0.
static void test_ste_kernel(int method, int bits, int g) {
    int out = 6, in = 2048, n = out * in;
    QuantSpec spec = {method, bits, g};
    int64_t n0, n1;
    quant_param_sizes(&n0, &n1, spec, out, in);
    float *hw = (float *)malloc((size_t)n * sizeof(float)), *hd = (float *)malloc((size_t)n * sizeof(float)),
          *hq = (float *)malloc((size_t)n * sizeof(float)), *ref = (float *)calloc((size_t)n, sizeof(float)),
          *hp = (float *)malloc((size_t)(n0 + n1) * sizeof(float));
    uint8_t *hc = (uint8_t *)malloc((size_t)n);
    for (int i = 0; i < n; i++) {
        hw[i] = (float)((int64_t)(next_u64() % 2000001) - 1000000) * 1e-7f;
        hd[i] = (float)((int64_t)(next_u64() % 2000001) - 1000000) * 1e-6f;
        if (i % 97 == 5) hw[i] = 0.0f;
    }
    for (int k = 0; k < n / g; k++) {  // ties: two weights at 0.2 and two at -0.2 a group
        hw[k * g + 1] = hw[k * g + g - 3] = 0.2f;
        hw[k * g + 2] = hw[k * g + g / 2] = -0.2f;
    }
    if (quant_forward(hq, hc, hp, hp + n0, hw, spec, out, in) != QUANT_OK) fail("ste kernel test: quantizer failed");
    ste_bitdistiller_backward(ref, hd, hw, hp, hp + n0, spec, out, in);
    float *w = (float *)gpu_malloc((size_t)n * sizeof(float), "scratch"), *d = (float *)gpu_malloc((size_t)n * sizeof(float), "scratch"),
          *par = (float *)gpu_malloc((size_t)(n0 + n1) * sizeof(float), "scratch");
    cudaCheck(cudaMemcpy(w, hw, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(d, hd, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(par, hp, (size_t)(n0 + n1) * sizeof(float), cudaMemcpyHostToDevice));
    ste_bitdistiller(d, w, par, par + n0, n / g, g, method, bits);
    float *got = download(d, n);
    char what[160];
    snprintf(what, sizeof what, "ste_bitdistiller kernel -q %s -b %d -g %d: dL/dW", quant_method_name(method), bits, g);
    check(what, rel_err(got, ref, n), 1e-5);
    gpu_free(w); gpu_free(d); gpu_free(par);
    free(hw); free(hd); free(hq); free(ref); free(hp); free(hc); free(got);
}

// distill_step with every loss: student int 2-bit, teacher its full-precision self. chunk: the
// rows of a loss chunk (head_loss); the whole batch in one chunk leaves every row's dL/dlogits in
// the chunk buffer, where the test reads it; fewer rows (uneven chunks) must give the same loss
// and gradients.
static void test_distill(int loss_kind, int chunk) {
    HostModel hs, ht;
    host_model_init(&hs, "tiny", 0, 0, 5, QUANT_INT, 2, 32);
    host_model_init(&ht, "tiny", 0, 0, 5, QUANT_NONE, 0, 0);
    Model gs, gt;
    model_setup(&gs, &hs, "parameters");
    model_setup_teacher(&gt, &ht);
    model_alloc_training(&gs);
    char what[160];
    if (g_bf16) {  // the teacher's matmul weights (and embedding) exist in bf16 only
        int fp32_copies = 0;
        for (int t = 0; t < N_TENSORS; t++) fp32_copies += !is_norm_tensor(t) && ht.offset[t] >= 0 && gt.fwd_t[t] != NULL;
        snprintf(what, sizeof what, "distill %s: tensors of the bf16 teacher also held in fp32", LOSS_NAMES[loss_kind]);
        check(what, gt.bf16_only ? fp32_copies : 1.0, 0);
    }
    int B = 2, T = 48, N = B * T, V = hs.vocab_size;
    int *inputs = (int *)malloc(N * sizeof(int)), *targets = (int *)malloc(N * sizeof(int));
    random_tokens(inputs, targets, N, V, 1);
    float gamma = 0.3f, tau = 2.0f;
    g_loss_chunk = chunk ? chunk : N;
    char name[64];
    snprintf(name, sizeof name, "%s%s", LOSS_NAMES[loss_kind], chunk ? ", loss chunks of 7 rows" : "");
    double lc = host_cpu_distill_step(&hs, &ht, loss_kind, gamma, tau, inputs, targets, B, T);
    Distiller d;
    DistillLoss dl = {(LossKind)loss_kind, gamma, tau};
    distiller_init(&d, dl, V, V, N);
    model_zero_grad(&gs);
    double lg = distill_step(&gs, &gt, &d, inputs, targets, B, T, 1.0f);
    snprintf(what, sizeof what, "distill %s: loss (cpu %.6f, gpu %.6f), relative", name, lc, lg);
    check(what, fabs(lc - lg) / fabs(lc), g_tol.dloss);
    // dL/dlogits of the last chunk: in place of its logits, Wasserstein's in a buffer of its own;
    // under bf16 written in bf16 into the classifier backward's scratch, which the layers'
    // backward reuses after (test_distill_kernel checks those bits against the fp32 dz)
    int dz_kept = !g_bf16 || loss_kind == LOSS_WASSERSTEIN;
    float *dz = dz_kept ? download(loss_kind == LOSS_WASSERSTEIN ? g_chunk_dz : g_chunk_zs, (int64_t)(chunk ? chunk : N) * V) : NULL;
    if (g_bf16 && loss_kind == LOSS_WASSERSTEIN) {
        // its gradient pairs the i-th largest student probability with the teacher's i-th largest:
        // on a random model the V probabilities are near-ties, whose order bf16 rounding permutes
        // (measured: dL/dlogits off by 1.1 of its largest), so under bf16 only its loss is compared
        printf("  (bf16: wasserstein's dL/dlogits and gradients not compared: rank order of near-tied probabilities)\n");
    } else if (loss_kind == LOSS_WASSERSTEIN && !chunk) {
        // Even in fp32 the CPU's and the GPU's logits differ in their last bits (their matmuls sum
        // in different orders), which can swap two near-tied probabilities of a random model and
        // move that row's dL/dlogits by order 1 (measured: 0.63 of the largest, on one data set of
        // two). So the kernel is checked on the GPU's own logits, against loss.h's function run
        // here, and the backward from the GPU's dL/dlogits, against the CPU's backward from the
        // same dL/dlogits.
        float *zs = download(g_chunk_zs, (int64_t)N * V), *zt = download(g_chunk_zt, (int64_t)N * V);
        float *ref = (float *)malloc((size_t)N * V * sizeof(float));
        float *scr = (float *)malloc(distill_loss_scratch_floats(LOSS_WASSERSTEIN, V, V) * sizeof(float));
        for (int n = 0; n < N; n++) {
            if (targets[n] < 0) memset(ref + (int64_t)n * V, 0, (size_t)V * sizeof(float));
            else wasserstein_loss(ref + (int64_t)n * V, scr, zs + (int64_t)n * V, zt + (int64_t)n * V, V, V, 1.0f / B);
        }
        snprintf(what, sizeof what, "distill %s: dL/dlogits of the GPU's logits", name);
        check(what, rel_err(dz, ref, (int64_t)N * V), g_tol.dlogits);
        host_cpu_backward_from_dlogits(&hs, dz);
        snprintf(what, sizeof what, "distill %s (CPU backward from the GPU's dL/dlogits)", name);
        compare_grads(what, &hs, &gs, g_tol.grads);
        free(zs); free(zt); free(ref); free(scr);
    } else {
        if (!chunk && !dz_kept) {
            printf("  (bf16: dL/dlogits not kept past the backward: test_distill_kernel checks it; the gradients from it here)\n");
        } else if (!chunk) {
            snprintf(what, sizeof what, "distill %s: dL/dlogits", name);
            check(what, rel_err(dz, host_cpu_dlogits(&hs), (int64_t)N * V), g_tol.dlogits);
        }
        snprintf(what, sizeof what, "distill %s", name);
        compare_grads(what, &hs, &gs, g_tol.grads);
    }
    if (loss_kind == LOSS_CAKLD) {  // gamma of the teacher's logits of this batch (its classifier in chunks too)
        host_cpu_forward(&ht, inputs, NULL, B, T);
        double gc = host_cpu_gamma(&ht, targets, B, T), sum = 0;
        long long count = 0;
        model_forward(&gt, inputs, NULL, B, T);
        gamma_accumulate(&sum, &count, &gt, targets, B, T, 0);
        snprintf(what, sizeof what, "teacher gamma (cpu %.6f, gpu %.6f)", gc, sum / count);
        check(what, fabs(gc - sum / count), g_tol.gamma);
    }
    free(dz); free(inputs); free(targets); free(d.host_rows); gpu_free(d.scratch);
    g_loss_chunk = 0;
    model_free(&gs); model_free(&gt);
    host_model_free(&hs); host_model_free(&ht);
}

// The loss kernel alone (distill_loss, as head_loss calls it: in place, dz = the student's logits)
// on random logits, against loss.h's distill_loss_position run here, times accum: every loss but
// Wasserstein, cakld_ce at tau 2 and 1. The shapes reach what test_distill's (tiny: V 256, 16-byte
// pieces, 128 threads of which 64 read a piece; masked rows; cakld_ce at tau 2; chunks of 7 rows,
// each block one row) do not: V % 4 != 0 and rows not 16 bytes aligned (the scalar kernel), V
// below the block's threads in the scalar kernel, 1024-thread blocks (V 32000, 32001), more rows
// than the grid (300 rows of 32000: each block takes several in turn) and fewer. zs ~ 3 N(0, 1),
// zt = zs + N(0, 1) / 2, every third row offset by 1e4 (the log-sum-exps subtract the max); every
// fifth row masked (dz 0, loss 0); row 3 has label V: its loss NaN and its dz left as the logits.
// A second run on the same inputs must give the same bits (a fixed mapping, no atomics); a third
// writes dz in bf16 to a buffer of its own (head_loss under --matmul bf16), which must be the fp32
// dz rounded to nearest even, bit for bit, with the same losses.
static double gauss(void) {
    double u = ((next_u64() >> 11) + 0.5) / 9007199254740992.0, v = ((next_u64() >> 11) + 0.5) / 9007199254740992.0;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}
static void test_distill_kernel(int V, int R, int misalign) {
    int64_t n = (int64_t)R * V, o = misalign;
    float *zs = (float *)malloc((size_t)n * sizeof(float)), *zt = (float *)malloc((size_t)n * sizeof(float));
    float *ref = (float *)malloc((size_t)n * sizeof(float)), *dz = NULL, *dz2 = NULL;
    double *lc = (double *)malloc(R * sizeof(double));
    int *labels = (int *)malloc(R * sizeof(int));
    for (int r = 0; r < R; r++) {
        labels[r] = r == 3 ? V : r % 5 == 2 ? -1 : (int)(next_u64() % V);
        float off = r % 3 == 1 ? 1e4f : 0.0f;
        for (int v = 0; v < V; v++) {
            zs[(int64_t)r * V + v] = off + (float)(3.0 * gauss());
            zt[(int64_t)r * V + v] = zs[(int64_t)r * V + v] + (float)(0.5 * gauss());
        }
    }
    float *d_zs = (float *)gpu_malloc((size_t)(n + o) * sizeof(float), "test"), *d_zt = (float *)gpu_malloc((size_t)(n + o) * sizeof(float), "test");
    __nv_bfloat16 *d_h = (__nv_bfloat16 *)gpu_malloc((size_t)(n + o) * 2, "test");
    int *d_labels = (int *)gpu_malloc(R * sizeof(int), "test");
    double *d_rows = (double *)gpu_malloc(R * sizeof(double), "test"), *rows = (double *)malloc(2 * R * sizeof(double));
    cudaCheck(cudaMemcpy(d_zt + o, zt, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(d_labels, labels, R * sizeof(int), cudaMemcpyHostToDevice));
    float scale = 0.5f, accum = 0.25f;
    DistillLoss cases[] = {{LOSS_CE, 0.0f, 1.0f}, {LOSS_FKL, 0.0f, 1.0f}, {LOSS_RKL, 0.0f, 1.0f}, {LOSS_CAKLD, 0.3f, 1.0f},
                           {LOSS_CAKLD_CE, 0.3f, 2.0f}, {LOSS_CAKLD_CE, 0.3f, 1.0f}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        DistillLoss dl = cases[c];
        for (int r = 0; r < R; r++) {
            float *f = ref + (int64_t)r * V;
            if (labels[r] < 0) { memset(f, 0, (size_t)V * sizeof(float)); lc[r] = 0.0; continue; }
            if (labels[r] >= V) { memset(f, 0, (size_t)V * sizeof(float)); lc[r] = NAN; continue; }
            lc[r] = distill_loss_position(f, NULL, zs + (int64_t)r * V, zt + (int64_t)r * V, labels[r], V, V, dl, scale);
            for (int v = 0; v < V; v++) f[v] *= accum;
        }
        for (int run = 0; run < 2; run++) {
            cudaCheck(cudaMemcpy(d_zs + o, zs, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
            distill_loss(d_rows, act_f(d_zs + o), d_zs + o, dl.kind == LOSS_CE ? NULL : d_zt + o, d_labels, R, V, dl, scale, accum);
            cudaCheck(cudaMemcpy(rows + run * R, d_rows, R * sizeof(double), cudaMemcpyDeviceToHost));
            (run ? dz2 : dz) = download(d_zs + o, n);
        }
        int differ = (memcmp(dz, dz2, (size_t)n * sizeof(float)) != 0) + (memcmp(rows, rows + R, R * sizeof(double)) != 0);
        // into a bf16 dz of its own (head_loss under --matmul bf16): the fp32 dz rounded to nearest
        // even, bit for bit (rows with a label), and the same losses
        cudaCheck(cudaMemcpy(d_zs + o, zs, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
        Act dh = {NULL, d_h + o};
        distill_loss(d_rows, dh, d_zs + o, dl.kind == LOSS_CE ? NULL : d_zt + o, d_labels, R, V, dl, scale, accum);
        double *rows_h = (double *)malloc(R * sizeof(double));
        uint16_t *hh = (uint16_t *)malloc((size_t)n * 2);
        cudaCheck(cudaMemcpy(rows_h, d_rows, R * sizeof(double), cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(hh, d_h + o, (size_t)n * 2, cudaMemcpyDeviceToHost));
        int64_t bf_differ = memcmp(rows_h, rows, R * sizeof(double)) != 0;
        for (int r = 0; r < R; r++) {
            if (labels[r] >= V) continue;
            for (int64_t i = (int64_t)r * V; i < (int64_t)(r + 1) * V; i++) bf_differ += hh[i] != host_bf16_rne(dz[i]);
        }
        free(rows_h); free(hh);
        double el = 0.0, lmax = 0.0;
        int nan_ok = 1;
        for (int r = 0; r < R; r++) {
            if (labels[r] >= V) {  // its loss NaN, its logits untouched (then left out of dz's comparison)
                nan_ok &= isnan(rows[r]) && !memcmp(dz + (int64_t)r * V, zs + (int64_t)r * V, (size_t)V * sizeof(float));
                memset(dz + (int64_t)r * V, 0, (size_t)V * sizeof(float));
                continue;
            }
            double e = fabs(rows[r] - lc[r]);
            if (!(e <= el)) el = e;
            if (fabs(lc[r]) > lmax) lmax = fabs(lc[r]);
        }
        char what[256], name[96];
        snprintf(name, sizeof name, "loss kernel %s%s V %d, %d rows%s", LOSS_NAMES[dl.kind],
                 dl.kind == LOSS_CAKLD_CE ? (dl.temperature == 1.0f ? " tau 1" : " tau 2") : "", V, R, misalign ? ", unaligned" : "");
        snprintf(what, sizeof what, "%s: losses, relative to the largest", name);
        check(what, nan_ok ? el / lmax : NAN, g_tol.dloss);  // NaN: row 3's loss or logits wrong
        snprintf(what, sizeof what, "%s: dL/dlogits", name);
        check(what, rel_err(dz, ref, n), g_tol.dlogits);
        snprintf(what, sizeof what, "%s: a second run, bits differing (dz, losses)", name);
        check(what, differ, 0);
        snprintf(what, sizeof what, "%s: bf16 dz against the fp32 one rounded, and losses: bits differing", name);
        check(what, (double)bf_differ, 0);
        free(dz); free(dz2);
    }
    gpu_free(d_zs); gpu_free(d_zt); gpu_free(d_h); gpu_free(d_labels); gpu_free(d_rows);
    free(zs); free(zt); free(ref); free(lc); free(labels); free(rows);
}

// --attention flash against the fp32 fused kernels (themselves checked against train.c above), on
// random q, k (scores of standard deviation 1), v, dO: out and lse of the forward, and what the
// backward adds to dq, dk, dv (they start from random values, so a kernel that overwrote instead of
// accumulating would fail). Each backward takes its own forward's out and lse. Tolerances: q, k,
// v, dO and P are rounded to bf16 (2^-9 relative each) and accumulated in fp32, so out and the
// gradients are off by a few 1e-3 of their largest magnitude (an index or mask error is off by
// order 1): 2e-2. lse is a log: its absolute error is the relative error of the softmax's
// normaliser, from the scores' rounding, a few 1e-3 for scores of order 1 (a wrong base or max
// shows as order 1): 2e-2 absolute. The flash kernels read bf16 copies of q, k, v (as the model
// gives them) and round dO themselves. misalign: the tensors start one element past 16 bytes, so
// the kernels take their element-by-element loads (as they do for hd % 8 != 0). A third run keeps
// O and dO in bf16, as training under --matmul bf16 does (act_bf16): its O must be the first
// run's rounded, bit for bit, and its gradients meet the same tolerance.
static float *flash_buf(float **base, const float *x, int64_t n, int o) {  // a device copy of x, o floats in
    *base = (float *)gpu_malloc((size_t)(n + o) * sizeof(float), "scratch");
    if (x) cudaCheck(cudaMemcpy(*base + o, x, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
    else cudaCheck(cudaMemset(*base, 0xFF, (size_t)(n + o) * sizeof(float)));  // NaN: what is not written fails
    return *base + o;
}
static __nv_bfloat16 *flash_bf16(float **base, const float *x, int64_t n, int o) {  // bf16(x), o elements in
    *base = (float *)gpu_malloc((size_t)(n + o) * sizeof(__nv_bfloat16), "scratch");
    __nv_bfloat16 *y = (__nv_bfloat16 *)*base + o;
    cast_bf16(y, x, n);
    return y;
}
// The host values of an attention test: q, k, v, dO and the starting dq, dk, dv (n[a] each),
// uniform in [-1, 1), q and k times sqrt(3) (variance 1).
static void attention_test_inputs(float *h[7], const int64_t n[7]) {
    for (int a = 0; a < 7; a++) {
        h[a] = (float *)malloc((size_t)n[a] * sizeof(float));
        if (!h[a]) fail("out of host memory");
        for (int64_t i = 0; i < n[a]; i++)
            h[a][i] = ((float)((next_u64() >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f) * (a < 2 ? 1.7320508f : 1.0f);
    }
}
// The forward's outputs of an attention test: run 2's bf16 O (ob) must be run 1's fp32 O rounded
// (oc), bit for bit; run 1's O (out[1]) within 2e-2 of run 0's (out[0]), relative to its largest.
static void check_outputs(const char *shape, const __nv_bfloat16 *ob, const __nv_bfloat16 *oc, float *const out[3], int64_t nq) {
    char what[160];
    snprintf(what, sizeof what, "%s: bf16 out against the fp32 out rounded: bits differing (of %lld)", shape, (long long)nq);
    check(what, (double)bits_differing(ob, oc, nq, 2), 0);
    float *r = download(out[0], nq), *f = download(out[1], nq);
    snprintf(what, sizeof what, "%s: out", shape);
    check(what, rel_err(f, r, nq), 2e-2);
    free(r); free(f);
}
// What each of runs 1 and 2 of an attention backward added to dq, dk, dv (g[p][0..2], started
// from h[4..6]) against what run 0 added, relative to the largest of run 0's three: 2e-2. packed
// (or NULL): the same gradients written in bf16 side by side in rows of width[0..2] each.
static void check_added_gradients(const char *shape, float *const g[3][3], float *const h[7], const int64_t n[7],
                                  const __nv_bfloat16 *packed = NULL, const int width[3] = NULL) {
    char what[160];
    const char *names[3] = {"dq", "dk", "dv"};
    float *ra[3];
    double scale = 0.0;
    for (int a = 0; a < 3; a++) {
        ra[a] = download(g[0][a], n[4 + a]);
        for (int64_t i = 0; i < n[4 + a]; i++) {
            ra[a][i] -= h[4 + a][i];
            if (fabs(ra[a][i]) > scale) scale = fabs(ra[a][i]);
        }
    }
    for (int p = 1; p < 3; p++)
        for (int a = 0; a < 3; a++) {
            float *fa = download(g[p][a], n[4 + a]);
            double d = 0.0;
            for (int64_t i = 0; i < n[4 + a]; i++) {
                double x = fabs((double)fa[i] - h[4 + a][i] - ra[a][i]);
                if (!(x <= d)) d = x;
            }
            snprintf(what, sizeof what, "%s: %s added%s", shape, names[a], p == 2 ? " (bf16 O, dO)" : "");
            check(what, d / (scale > 0 ? scale : 1.0), 2e-2);
            free(fa);
        }
    if (packed) {
        int C = width[0] + width[1] + width[2], off = 0;
        int64_t rows = n[4] / width[0];
        uint16_t *hp = (uint16_t *)malloc((size_t)(rows * C) * sizeof(uint16_t));
        cudaCheck(cudaMemcpy(hp, packed, (size_t)(rows * C) * sizeof(uint16_t), cudaMemcpyDeviceToHost));
        for (int a = 0; a < 3; off += width[a++]) {
            double d = 0.0;
            for (int64_t r = 0; r < rows; r++)
                for (int c = 0; c < width[a]; c++) {
                    uint32_t bits = (uint32_t)hp[r * C + off + c] << 16;
                    float x;
                    memcpy(&x, &bits, sizeof x);
                    double e = fabs((double)x - ra[a][r * width[a] + c]);
                    if (!(e <= d)) d = e;
                }
            snprintf(what, sizeof what, "%s: %s written in bf16, rows of %d shared with the others", shape, names[a], C);
            check(what, d / (scale > 0 ? scale : 1.0), 2e-2);
        }
        free(hp);
    }
    for (int a = 0; a < 3; a++) free(ra[a]);
}

static void test_flash_kernels(int B, int T, int H, int KV, int hd, int misalign) {
    int64_t nq = (int64_t)B * T * H * hd, nk = (int64_t)B * T * KV * hd, nl = (int64_t)B * H * T;
    int64_t n[7] = {nq, nk, nk, nq, nq, nk, nk};  // q, k, v, dO, and the starting dq, dk, dv
    float *h[7];
    attention_test_inputs(h, n);
    float *base[32];  // 28 buffers: q, k, v, dO, 3 runs x 6, bf16 q, k, v, dO, O, O rounded
    int o = misalign, nb = 0;
    float *q = flash_buf(&base[nb++], h[0], nq, o), *k = flash_buf(&base[nb++], h[1], nk, o),
          *v = flash_buf(&base[nb++], h[2], nk, o), *dout = flash_buf(&base[nb++], h[3], nq, o);
    float *out[3], *lse[3], *delta[3], *g[3][3];  // [0] fused, [1] flash, [2] flash on bf16 O and dO
    for (int p = 0; p < 3; p++) {
        out[p] = flash_buf(&base[nb++], NULL, nq, o);
        lse[p] = flash_buf(&base[nb++], NULL, nl, 0);
        delta[p] = flash_buf(&base[nb++], NULL, nl, 0);
        for (int a = 0; a < 3; a++) g[p][a] = flash_buf(&base[nb++], h[4 + a], n[4 + a], o);
    }
    attention_forward(out[0], lse[0], q, k, v, B, T, H, KV, hd);
    attention_backward(g[0][0], g[0][1], g[0][2], delta[0], dout, q, k, v, out[0], lse[0], B, T, H, KV, hd);
    __nv_bfloat16 *qb = flash_bf16(&base[nb++], q, nq, o), *kb = flash_bf16(&base[nb++], k, nk, o),
                  *vb = flash_bf16(&base[nb++], v, nk, o);
    attention_forward_flash(act_f(out[1]), lse[1], qb, kb, vb, B, T, H, KV, hd);
    attention_backward_flash(g[1][0], g[1][1], g[1][2], delta[1], act_f(dout), qb, kb, vb, act_f(out[1]), lse[1], B, T, H, KV, hd);
    __nv_bfloat16 *db = flash_bf16(&base[nb++], dout, nq, o), *ob = flash_bf16(&base[nb++], out[2], nq, o),
                  *oc = flash_bf16(&base[nb++], out[1], nq, o);  // ob: NaNs until written
    Act obf = {NULL, ob}, dbf = {NULL, db};
    attention_forward_flash(obf, lse[2], qb, kb, vb, B, T, H, KV, hd);
    attention_backward_flash(g[2][0], g[2][1], g[2][2], delta[2], dbf, qb, kb, vb, obf, lse[2], B, T, H, KV, hd);
    cudaCheck(cudaDeviceSynchronize());
    char what[160], shape[96];
    snprintf(shape, sizeof shape, "flash B %d T %d H %d/%d hd %d%s (backward in %d parts)", B, T, H, KV, hd,
             misalign ? " (unaligned)" : "", flash_backward_parts(B, T, H, KV, hd));
    check_outputs(shape, ob, oc, out, nq);
    float *r = download(lse[0], nl), *f = download(lse[1], nl);
    double e = 0.0;
    for (int64_t i = 0; i < nl; i++) { double d = fabs((double)f[i] - r[i]); if (!(d <= e)) e = d; }
    snprintf(what, sizeof what, "%s: lse, absolute", shape);
    check(what, e, 2e-2);
    free(r); free(f);
    // What each backward added, its error relative to the largest of the three gradients the
    // fp32 kernels added: at T = 1 the exact dq and dk are zero (a softmax over one key has no
    // gradient in its score) while bf16's dP - Delta leaves noise of order 2^-9 |dO||V| in them.
    check_added_gradients(shape, g, h, n);
    for (int i = 0; i < nb; i++) gpu_free(base[i]);
    for (int a = 0; a < 7; a++) free(h[a]);
}

#ifdef USE_CUDNN
// --attention cudnn against the flash kernels (themselves checked against the fused fp32 kernels
// above), on random inputs drawn as test_flash_kernels draws them: out and lse of the forward, and
// what the backward adds to dq, dk, dv (from random starting values: overwriting instead of
// accumulating fails), with O and dO in fp32 and, as training under --matmul bf16 keeps them, in
// bf16. Both read the same bf16 q, k, v and round P to bf16, each in its own order, and cuDNN's
// gradients are rounded once more (to bf16) before they are added: each is off by a few 1e-3 of
// the largest magnitude from the exact result (test_flash_kernels), so 2e-2 here as there (an
// index, mask, scale or layout error is off by order 1); lse 2e-2 absolute. The bf16 O must be
// the fp32 run's O rounded, bit for bit (cuDNN writes bf16, which the fp32 run widens).
// A shape cuDNN has no engine for runs through the flash kernels, the same numbers: reported as
// skipped, or failed where `must` (shapes every cuDNN 9 on Hopper takes).
static void test_cudnn_kernels(int B, int T, int H, int KV, int hd, int must) {
    char what[160], shape[96];
    snprintf(shape, sizeof shape, "cudnn B %d T %d H %d/%d hd %d", B, T, H, KV, hd);
    if (!cudnn_attention_supported(B, T, H, KV, hd)) {
        snprintf(what, sizeof what, "%s: cuDNN takes the shape (1: it does not)", shape);
        if (must) check(what, 1.0, 0.0);
        else printf("  skipped: %s: cuDNN takes no engine for it (the flash kernels run it)\n", shape);
        return;
    }
    int64_t nq = (int64_t)B * T * H * hd, nk = (int64_t)B * T * KV * hd, nl = (int64_t)B * H * T;
    int64_t n[7] = {nq, nk, nk, nq, nq, nk, nk};  // q, k, v, dO, and the starting dq, dk, dv
    float *h[7];
    attention_test_inputs(h, n);
    float *base[32];  // 30 buffers: q, k, v, dO, 3 runs x 6, bf16 q, k, v, dO, O, O rounded, dq|dk|dv
    int nb = 0;
    float *q = flash_buf(&base[nb++], h[0], nq, 0), *k = flash_buf(&base[nb++], h[1], nk, 0),
          *v = flash_buf(&base[nb++], h[2], nk, 0), *dout = flash_buf(&base[nb++], h[3], nq, 0);
    float *out[3], *lse[3], *delta[3], *g[3][3];  // [0] flash, [1] cuDNN, [2] cuDNN on bf16 O and dO
    for (int p = 0; p < 3; p++) {
        out[p] = flash_buf(&base[nb++], NULL, nq, 0);
        lse[p] = flash_buf(&base[nb++], NULL, nl, 0);
        delta[p] = flash_buf(&base[nb++], NULL, nl, 0);
        for (int a = 0; a < 3; a++) g[p][a] = flash_buf(&base[nb++], h[4 + a], n[4 + a], 0);
    }
    __nv_bfloat16 *qb = flash_bf16(&base[nb++], q, nq, 0), *kb = flash_bf16(&base[nb++], k, nk, 0),
                  *vb = flash_bf16(&base[nb++], v, nk, 0);
    attention_forward_flash(act_f(out[0]), lse[0], qb, kb, vb, B, T, H, KV, hd);
    attention_backward_flash(g[0][0], g[0][1], g[0][2], delta[0], act_f(dout), qb, kb, vb, act_f(out[0]), lse[0], B, T, H, KV, hd);
    attention_forward_cudnn(act_f(out[1]), lse[1], qb, kb, vb, B, T, H, KV, hd);
    attention_backward_cudnn(g[1][0], g[1][1], g[1][2], delta[1], act_f(dout), qb, kb, vb, act_f(out[1]), lse[1], B, T, H, KV, hd);
    __nv_bfloat16 *db = flash_bf16(&base[nb++], dout, nq, 0), *ob = flash_bf16(&base[nb++], out[2], nq, 0),
                  *oc = flash_bf16(&base[nb++], out[1], nq, 0);  // ob: NaNs until written
    Act obf = {NULL, ob}, dbf = {NULL, db};
    attention_forward_cudnn(obf, lse[2], qb, kb, vb, B, T, H, KV, hd);
    attention_backward_cudnn(g[2][0], g[2][1], g[2][2], delta[2], dbf, qb, kb, vb, obf, lse[2], B, T, H, KV, hd);
    // and as train.cu's bf16 backward takes them: dQ, dK, dV side by side in the rows of one buffer
    int width[3] = {H * hd, KV * hd, KV * hd}, C = width[0] + width[1] + width[2];
    __nv_bfloat16 *pk = (__nv_bfloat16 *)flash_buf(&base[nb++], NULL, (int64_t)B * T * C / 2 + 1, 0);
    int ran = attention_backward_cudnn_bf16(pk, pk + width[0], pk + width[0] + width[1], C, C, dbf, qb, kb, vb, obf, lse[2],
                                            B, T, H, KV, hd);
    snprintf(what, sizeof what, "%s: cuDNN writes dQ, dK, dV in shared rows (1: it declined)", shape);
    check(what, !ran, 0);
    cudaCheck(cudaDeviceSynchronize());
    check_outputs(shape, ob, oc, out, nq);
    float *r = download(lse[0], nl);
    for (int p = 1; p < 3; p++) {
        float *f = download(lse[p], nl);
        double e = 0.0;
        for (int64_t i = 0; i < nl; i++) { double d = fabs((double)f[i] - r[i]); if (!(d <= e)) e = d; }
        snprintf(what, sizeof what, "%s: lse, absolute%s", shape, p == 2 ? " (bf16 O)" : "");
        check(what, e, 2e-2);
        free(f);
    }
    free(r);
    check_added_gradients(shape, g, h, n, ran ? pk : NULL, width);
    for (int i = 0; i < nb; i++) gpu_free(base[i]);
    for (int a = 0; a < 7; a++) free(h[a]);
}
#endif

// AdamW on identical gradients: the CPU's gradients are copied to the GPU first.
static void test_adamw(void) {
    HostModel h;
    host_model_init(&h, "tiny", 0, 0, 3, QUANT_SIGN, 1, 0);
    Model g;
    model_setup(&g, &h, "parameters");
    model_alloc_training(&g);
    int B = 2, T = 32, N = B * T;
    int *inputs = (int *)malloc(N * sizeof(int)), *targets = (int *)malloc(N * sizeof(int));
    random_tokens(inputs, targets, N, h.vocab_size, 0);
    for (int step = 0; step < 3; step++) {
        host_cpu_forward(&h, inputs, targets, B, T);
        host_cpu_backward(&h);
        cudaCheck(cudaMemcpy(g.grads, host_cpu_grads(&h), (size_t)g.n_params * sizeof(float), cudaMemcpyHostToDevice));
        host_cpu_adamw(&h, 1e-3f);
        OptConfig o = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, 0.0f};
        adamw_update(&g, &o, 1e-3f, 1.0f);
    }
    float *pg = download(g.params, g.n_params);
    check("AdamW, 3 steps on the same gradients: parameters (sign scales too)", rel_err(pg, h.params, g.n_params), 1e-6);
    // its kernels' non-finite flag: clear after those steps; set by a NaN gradient of the last
    // parameter (a learned scale) and, from the same parameters again, by an Inf one in the
    // middle of the table (the float4 path)
    check("AdamW: params_finite after finite steps, 1 - its answer (1: finite)", 1 - params_finite(&g), 0);
    float *hg = download(g.grads, g.n_params), keep;
    int64_t at[2] = {g.n_params - 1, g.n_table / 2};
    for (int c = 0; c < 2; c++) {
        cudaCheck(cudaMemcpy(g.params, pg, (size_t)g.n_params * sizeof(float), cudaMemcpyHostToDevice));
        keep = hg[at[c]];
        hg[at[c]] = c ? INFINITY : NAN;
        cudaCheck(cudaMemcpy(g.grads, hg, (size_t)g.n_params * sizeof(float), cudaMemcpyHostToDevice));
        hg[at[c]] = keep;
        OptConfig o = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, 0.0f};
        adamw_update(&g, &o, 1e-3f, 1.0f);
        check(c ? "AdamW: params_finite after an Inf gradient mid-table (0: not finite)"
                : "AdamW: params_finite after a NaN gradient of the last parameter (0: not finite)",
              params_finite(&g), 0);
    }
    free(hg);
    free(pg); free(inputs); free(targets);
    model_free(&g);
    host_model_free(&h);
}

// model_zero_grad marks the linears' and the untied LM head's gradients fresh instead of clearing
// them (the first matmul of a backward writes them: grad_beta), and clears the rest; with no
// backward after it, model_settle_grads clears the fresh ones. Gradients start as garbage here.
static void test_fresh_grads(void) {
    HostModel h;
    host_model_init(&h, "tiny", 0, 1, 3, QUANT_INT, 2, 32);  // untied: the LM head's gradient fresh too
    Model g;
    model_setup(&g, &h, "parameters");
    model_alloc_training(&g);
    int64_t fresh = 0;
    for (int t = 0; t < N_TENSORS; t++)
        if (g.grads_t[t] && (h.is_linear[t] || (t == T_LM_HEAD && !h.tied))) fresh += tensor_numel(&g, t);
    cudaCheck(cudaMemset(g.grads, 0x3f, (size_t)g.n_params * sizeof(float)));
    model_zero_grad(&g);
    float *hg = download(g.grads, g.n_params);
    int64_t nonzero = 0;
    for (int64_t i = 0; i < g.n_params; i++) nonzero += hg[i] != 0.0f;
    free(hg);
    check("model_zero_grad: values left uncleared less the linears' and LM head's (fresh)", (double)llabs(nonzero - fresh), 0);
    model_settle_grads(&g);
    hg = download(g.grads, g.n_params);
    nonzero = 0;
    for (int64_t i = 0; i < g.n_params; i++) nonzero += hg[i] != 0.0f;
    free(hg);
    check("model_settle_grads after it, no backward between: nonzero gradients", (double)nonzero, 0);
    model_free(&g);
    host_model_free(&h);
}

// rmsnorm_backward on random rows against the formulas in double: dx += r g - x r^3 mean(g x) and
// dw += sum_n dy x r (g = dy w, r = 1/rms(x)); its bf16 copy of dx bit for bit against RNE of the
// fp32 dx it wrote. off: the rows start one float past the aligned start (its scalar path, as is
// C % 4 != 0). N not a multiple of RMS_ROWS: the last chunk is cut short.
static void test_rmsnorm_backward(int N, int C, int off) {
    int64_t n = (int64_t)N * C + off;
    float *h = (float *)malloc((size_t)(4 * n + 2 * C + N) * sizeof(float));
    float *x = h, *dy = x + n, *dx = dy + n, *got = dx + n, *w = got + n, *dw = w + C, *rstd = dw + C;
    for (int64_t i = 0; i < 4 * n + 2 * C; i++) h[i] = (float)((int64_t)(next_u64() % 2001) - 1000) / 500.0f;  // got too
    for (int r = 0; r < N; r++) {
        double ss = 0.0;
        for (int c = 0; c < C; c++) ss += (double)x[off + (int64_t)r * C + c] * x[off + (int64_t)r * C + c];
        rstd[r] = (float)(1.0 / sqrt(ss / C + 1e-5));
    }
    float *d = (float *)gpu_malloc((size_t)(3 * n + 2 * C + N) * sizeof(float), "scratch");
    __nv_bfloat16 *dh = (__nv_bfloat16 *)gpu_malloc((size_t)n * 2, "scratch");
    cudaCheck(cudaMemcpy(d, x, (size_t)3 * n * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(d + 3 * n, w, (size_t)(2 * C + N) * sizeof(float), cudaMemcpyHostToDevice));
    rmsnorm_backward(d + 2 * n + off, dh + off, d + 3 * n + C, d + n + off, d + off, d + 3 * n, d + 3 * n + 2 * C, N, C);
    cudaCheck(cudaMemcpy(got, d + 2 * n, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost));
    float *dwg = (float *)malloc((size_t)C * sizeof(float));
    uint16_t *hb = (uint16_t *)malloc((size_t)n * 2);
    cudaCheck(cudaMemcpy(dwg, d + 3 * n + C, (size_t)C * sizeof(float), cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(hb, dh, (size_t)n * 2, cudaMemcpyDeviceToHost));
    double edx = 0.0, sdx = 0.0, edw = 0.0, sdw = 0.0;
    int64_t bits = 0;
    double *sw = (double *)calloc(C, sizeof(double));
    for (int r = 0; r < N; r++) {
        const float *xr = x + off + (int64_t)r * C, *dyr = dy + off + (int64_t)r * C, *dxr = dx + off + (int64_t)r * C;
        double q = rstd[r], dot = 0.0;
        for (int c = 0; c < C; c++) dot += (double)dyr[c] * w[c] * xr[c];
        for (int c = 0; c < C; c++) {
            int64_t i = off + (int64_t)r * C + c;
            double want = dxr[c] + q * dyr[c] * w[c] - xr[c] * q * q * q * dot / C;
            if (fabs(got[i] - want) > edx) edx = fabs(got[i] - want);
            if (fabs(want) > sdx) sdx = fabs(want);
            bits += hb[i] != host_bf16_rne(got[i]);
            sw[c] += (double)dyr[c] * xr[c] * q;
        }
    }
    for (int c = 0; c < C; c++) {
        double want = dw[c] + sw[c];
        if (fabs(dwg[c] - want) > edw) edw = fabs(dwg[c] - want);
        if (fabs(want) > sdw) sdw = fabs(want);
    }
    char what[160];
    snprintf(what, sizeof what, "rmsnorm_backward %d x %d%s: dx, relative", N, C, off ? ", rows unaligned" : "");
    check(what, edx / sdx, 1e-5);
    snprintf(what, sizeof what, "rmsnorm_backward %d x %d%s: dw, relative", N, C, off ? ", rows unaligned" : "");
    check(what, edw / sdw, 1e-5);
    snprintf(what, sizeof what, "rmsnorm_backward %d x %d%s: bf16 dx differing from RNE of dx", N, C, off ? ", rows unaligned" : "");
    check(what, (double)bits, 0);
    gpu_free(d); gpu_free(dh);
    free(h); free(dwg); free(hb); free(sw);
}

// cast_bf16 against the host's round-to-nearest-even on the bits (ties, subnormals, large values).
static void test_cast_bf16(void) {
    int64_t n = 1 << 20;
    float *x = (float *)malloc((size_t)n * sizeof(float));
    uint16_t *want = (uint16_t *)malloc((size_t)n * 2), *got = (uint16_t *)malloc((size_t)n * 2);
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)next_u64();
        if (i % 4 == 1) u = (u & 0xFFFF0000u) | 0x8000u;  // exact ties
        if ((u & 0x7F800000u) == 0x7F800000u) u &= 0xBFFFFFFFu;  // no Inf or NaN
        memcpy(&x[i], &u, 4);
        want[i] = host_bf16_rne(x[i]);
    }
    float *dx = (float *)gpu_malloc((size_t)n * sizeof(float), "scratch");
    __nv_bfloat16 *dy = (__nv_bfloat16 *)gpu_malloc((size_t)n * 2, "scratch");
    cudaCheck(cudaMemcpy(dx, x, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
    cast_bf16(dy, dx, n);
    cudaCheck(cudaMemcpy(got, dy, (size_t)n * 2, cudaMemcpyDeviceToHost));
    int64_t diff = 0;
    for (int64_t i = 0; i < n; i++) diff += got[i] != want[i];
    check("cast to bf16, 2^20 random floats: values differing from RNE on the bits", (double)diff, 0);
    // the one-element kernel: an odd count, one float past the aligned start
    cudaCheck(cudaMemset(dy, 0, (size_t)n * 2));
    cast_bf16(dy + 1, dx + 1, n - 3);
    cudaCheck(cudaMemcpy(got, dy, (size_t)n * 2, cudaMemcpyDeviceToHost));
    diff = got[0] != 0 || got[n - 2] != 0 || got[n - 1] != 0;
    for (int64_t i = 1; i < n - 2; i++) diff += got[i] != want[i];
    check("cast to bf16, 2^20 - 3 floats from the second (unaligned): values differing from RNE, or written outside", (double)diff, 0);
    gpu_free(dx); gpu_free(dy);
    free(x); free(want); free(got);
}

// --matmul bf16: rmsnorm_forward and swiglu_forward writing a matmul's input in bf16 (into an
// Act, in the activation buffer) against the fp32 kernels followed by cast_bf16, which is what
// the matmuls read before; then the matmul on each. Same bits expected: the bf16 activations
// change no product of the model.
// One producer: its bf16 output xb [N,I] against cast_bf16 (into yb) of its fp32 output y, then
// o1 = y W^T against o2 = xb W^T [N,O], bit for bit.
static void check_bf16_input(const char *producer, const char *product, Act xb, const float *y, __nv_bfloat16 *yb,
                             Weight w, int N, int I, int O, float *o1, float *o2) {
    char what[160];
    int64_t n = (int64_t)N * I;
    cast_bf16(yb, y, n);
    snprintf(what, sizeof what, "bf16 %s against fp32 + cast: bits differing (of %lld)", producer, (long long)n);
    check(what, (double)bits_differing(xb.h, yb, n, 2), 0);
    matmul_forward(o1, y, w, N, I, O);
    matmul_forward(o2, xb, w, N, I, O);
    snprintf(what, sizeof what, "%s: bits differing (of %lld)", product, (long long)N * O);
    check(what, (double)bits_differing(o1, o2, (int64_t)N * O, 4), 0);
}
static void test_bf16_producers(void) {
    HostModel h;
    host_model_init(&h, "bench-100m", 512, 0, 13, QUANT_NONE, 16, 0);
    Model g;
    model_setup(&g, &h, "parameters");
    int B = 3, T = 50, N = B * T, D = h.dim, F = h.hidden_dim, Hq = h.n_heads * h.head_dim;
    model_alloc_acts(&g, B, T, 1);
    model_cast_bf16(&g);
    int64_t nx = (int64_t)N * D, nf = (int64_t)N * F;
    // x, then gate and up: these bf16 numbers (their low 16 bits cleared), so that the fp32 kernels
    // read the values the bf16 gate and up (act_bf16) hold
    float *hx = (float *)malloc((size_t)(nx + 2 * nf) * sizeof(float));
    for (int64_t i = 0; i < nx + 2 * nf; i++) hx[i] = (float)((int64_t)(next_u64() % 2000001) - 1000000) * 3e-6f;
    for (int64_t i = nx; i < nx + 2 * nf; i++) { uint32_t u; memcpy(&u, &hx[i], 4); u &= 0xFFFF0000u; memcpy(&hx[i], &u, 4); }
    float *x = act_l(&g, A_RESID, 1), *gf = (float *)gpu_malloc((size_t)2 * nf * sizeof(float), "scratch"), *uf = gf + nf;
    Act gate = act_in(&g, A_GATE, 1), up = act_in(&g, A_UP, 1);
    if (!gate.h || !up.h) fail("internal: gate and up are not bf16 under --matmul bf16");
    cudaCheck(cudaMemcpy(x, hx, (size_t)nx * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(gf, hx + nx, (size_t)2 * nf * sizeof(float), cudaMemcpyHostToDevice));
    cast_bf16(gate.h, gf, nf);
    cast_bf16(up.h, uf, nf);
    float *y = (float *)gpu_malloc((size_t)nf * sizeof(float), "scratch");
    float *o1 = (float *)gpu_malloc((size_t)N * (F > Hq ? F : Hq) * sizeof(float), "scratch");
    float *o2 = (float *)gpu_malloc((size_t)N * (F > Hq ? F : Hq) * sizeof(float), "scratch");
    __nv_bfloat16 *yb = (__nv_bfloat16 *)gpu_malloc((size_t)nf * 2, "scratch");
    char what[160];
    // xn1 = rmsnorm(x) of layer 1, then q = xn1 Wq^T
    const float *wn = layer_tensor(g.fwd_t, &g, T_ATTN_NORM, 1);
    rmsnorm_forward(act_f(y), g.act[A_RSTD1], x, wn, N, D, h.rms_norm_eps);
    Act xn = act_in(&g, A_XN1, 1);
    rmsnorm_forward(xn, act_l(&g, A_RSTD1, 1), x, wn, N, D, h.rms_norm_eps);
    check_bf16_input("rmsnorm_forward", "q = xn1 Wq^T from the bf16 xn1", xn, y, yb, weight(&g, T_WQ, 1), N, D, Hq, o1, o2);
    // the residual add in the matmul's epilogue (the student's layers, out of place): y = x + a W^T,
    // the bits of the host's fp32 add of x and a W^T; and in place (a forward without backward)
    matmul_forward(o2, xn, weight(&g, T_WO, 1), N, D, D);  // (bench-100m: Hq = D)
    matmul_forward_add(o1, x, xn, weight(&g, T_WO, 1), N, D, D);
    float *hp = download(o2, nx), *hs = download(o1, nx);
    int64_t bad = 0;
    for (int64_t i = 0; i < nx; i++) {
        float want = hx[i] + hp[i];
        bad += memcmp(&want, &hs[i], 4) != 0;
    }
    snprintf(what, sizeof what, "matmul_forward_add, out of place: sums differing from the host's x + a W^T (of %lld)", (long long)nx);
    check(what, (double)bad, 0);
    cudaCheck(cudaMemcpy(o2, x, (size_t)nx * sizeof(float), cudaMemcpyDeviceToDevice));
    matmul_forward_add(o2, o2, xn, weight(&g, T_WO, 1), N, D, D);
    snprintf(what, sizeof what, "matmul_forward_add, in place: bits differing from out of place (of %lld)", (long long)nx);
    check(what, (double)bits_differing(o1, o2, nx, 4), 0);
    free(hp); free(hs);
    // hmid = silu(gate) * up from the bf16 gate and up, then hmid Wdown^T
    swiglu_forward(act_f(y), act_f(gf), act_f(uf), nf);
    Act hm = act_in(&g, A_HMID, 1);
    swiglu_forward(hm, gate, up, nf);
    check_bf16_input("swiglu_forward", "hmid Wdown^T from the bf16 hmid", hm, y, yb, weight(&g, T_WDOWN, 1), N, F, D, o1, o2);
    float *ho = download(o1, (int64_t)N * D);
    double mx = 0.0;
    for (int64_t i = 0; i < (int64_t)N * D; i++) mx = fabs(ho[i]) > mx ? fabs(ho[i]) : mx;
    check("hmid Wdown^T: not all zero (1 if it is)", mx > 0.0 ? 0.0 : 1.0, 0);
    free(ho); free(hx);
    // gate = xn1 Wgate^T written in bf16 by the matmul (as layer_forward's gate and up) against the
    // fp32 product: each within half a bf16 step (2^-9 relative) of it; cuBLAS may sum in another
    // order for a bf16 output, so not bit for bit
    matmul_forward(act_f(o1), xn, weight(&g, T_WGATE, 1), N, D, F);
    matmul_forward(gate, xn, weight(&g, T_WGATE, 1), N, D, F);
    float *r = download(o1, nf);
    __nv_bfloat16 *hb = (__nv_bfloat16 *)malloc((size_t)nf * 2);
    cudaCheck(cudaMemcpy(hb, gate.h, (size_t)nf * 2, cudaMemcpyDeviceToHost));
    double gerr = 0.0, rmax = 0.0;  // relative to |r|, or to 1e-3 of the largest (sums near zero cancel)
    for (int64_t i = 0; i < nf; i++) rmax = fabs(r[i]) > rmax ? fabs(r[i]) : rmax;
    for (int64_t i = 0; i < nf; i++) {
        double d = fabs((double)__bfloat162float(hb[i]) - r[i]) / fmax(fabs(r[i]), 1e-3 * rmax);
        if (!(d <= gerr)) gerr = d;
    }
    check("gate matmul written in bf16 against its fp32 product: max relative error", rmax > 0 ? gerr : 1.0, 1.0 / 256);
    free(r); free(hb);
    cast_bf16(gate.h, gf, nf);
    // dgate, dup = swiglu_backward of ng positions (dh = up, g = gate, u = up, all bf16): written
    // in bf16 against += into zeros and cast; then dx, dW of the gate matmul from each (from zero)
    int64_t ng = nf < nx ? nf : nx;
    float *dgu = (float *)gpu_malloc((size_t)2 * nf * sizeof(float), "scratch");
    __nv_bfloat16 *gub = (__nv_bfloat16 *)gpu_malloc((size_t)2 * nf * 2, "scratch");
    cudaCheck(cudaMemset(dgu, 0, (size_t)2 * nf * sizeof(float)));
    swiglu_backward(dgu, dgu + nf, uf, gf, uf, ng);
    cast_bf16(gub, dgu, 2 * nf);
    Act dg = act_in(&g, A_DGATE, 0), du = act_in(&g, A_DUP, 0);
    swiglu_backward(dg, du, up, gate, up, ng);
    snprintf(what, sizeof what, "bf16 swiglu_backward against fp32 += and cast: bits differing (of %lld)", (long long)(2 * ng));
    check(what, (double)(bits_differing(dg.h, gub, ng, 2) + bits_differing(du.h, gub + nf, ng, 2)), 0);
    float *dw1 = (float *)gpu_malloc((size_t)F * D * sizeof(float), "scratch"), *dw2 = (float *)gpu_malloc((size_t)F * D * sizeof(float), "scratch");
    cudaCheck(cudaMemset(o1, 0, (size_t)nx * sizeof(float)));
    cudaCheck(cudaMemset(o2, 0, (size_t)nx * sizeof(float)));
    cudaCheck(cudaMemset(dw1, 0, (size_t)F * D * sizeof(float)));
    cudaCheck(cudaMemset(dw2, 0, (size_t)F * D * sizeof(float)));
    cudaCheck(cudaMemset(dgu, 0, (size_t)nf * sizeof(float)));  // dgate of the first ng positions, zeros after
    swiglu_backward(dgu, dgu + nf, uf, gf, uf, ng);
    cudaCheck(cudaMemset(dg.h, 0, (size_t)nf * 2));
    swiglu_backward(dg, du, up, gate, up, ng);
    matmul_backward(act_f(o1), dw1, act_f(dgu), act_f(y), weight(&g, T_WGATE, 1), N, D, F);
    matmul_backward(act_f(o2), dw2, dg, act_f(y), weight(&g, T_WGATE, 1), N, D, F);
    snprintf(what, sizeof what, "dx, dW of the gate matmul from the bf16 dgate: bits differing (of %lld)", (long long)(nx + F * D));
    check(what, (double)(bits_differing(o1, o2, nx, 4) + bits_differing(dw1, dw2, (int64_t)F * D, 4)), 0);
    gpu_free(dgu); gpu_free(gub); gpu_free(dw1); gpu_free(dw2); gpu_free(gf);
    gpu_free(y); gpu_free(o1); gpu_free(o2); gpu_free(yb);
    model_free(&g);
    host_model_free(&h);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);  // each result line out at once, also into a pipe (a crash loses none)
    gpu_init();
    g_bf16 = 0;
    g_compute = CUBLAS_COMPUTE_32F;
    for (int gemm = 1; gemm >= 0; gemm--) {  // both attention paths: cuBLAS with [T,T] scores, the fused kernel
        g_attention_gemm = gemm;
        printf("\nforward and backward, fp32 matmuls, --attention %s\n", gemm ? "gemm" : "fused");
        test_forward_backward(gemm ? "tiny" : "tiny, fused", "tiny", 0, 0, QUANT_NONE, 16, 0, 2, 64);
        test_forward_backward(gemm ? "tiny untied" : "tiny untied, fused", "tiny", 0, 1, QUANT_NONE, 16, 0, 3, 77);
        test_forward_backward(gemm ? "bench-100m" : "bench-100m, fused", "bench-100m", 512, 0, QUANT_NONE, 16, 0, 2, 150);
    }
    g_attention_gemm = 1;
    printf("\ngeneration: the decode step through the KV cache against the full forward; scoring\n");
    test_decode("decode tiny", "tiny", 0, QUANT_NONE, 16, 0, 3, 40, 0);
    test_decode("decode bench-100m (GQA 12/4)", "bench-100m", 512, QUANT_NONE, 16, 0, 2, 150, 0);
    test_decode("decode int2", "tiny", 0, QUANT_INT, 2, 32, 2, 64, 0);
    printf("\n--attention flash (bf16 tensor cores) against the fused fp32 kernels, random inputs\n");
    // (the forward's blocks of 128 queries at head_dim <= 64: T 100 has one, a whole key tile then
    // one cut at T, its second row tile partly past T; T 200 a second block, past T from row 200;
    // the last two: the benchmark's shape and half its batch, whose backwards split each group's
    // heads in parts, 2 and 4 on an H200; the small ones split into as many parts as heads a group)
    int fl[][6] = {{1, 1, 4, 4, 64, 0}, {2, 15, 8, 2, 64, 0}, {1, 64, 4, 1, 128, 0}, {2, 77, 4, 4, 128, 0},
                   {2, 200, 8, 2, 64, 0}, {1, 200, 16, 4, 128, 0}, {1, 1024, 8, 2, 64, 0}, {2, 77, 8, 4, 8, 0},
                   {1, 33, 4, 1, 50, 0}, {1, 130, 6, 2, 96, 1}, {2, 129, 4, 2, 64, 1}, {2, 100, 4, 2, 64, 0},
                   {8, 1024, 32, 4, 64, 0}, {4, 1024, 32, 4, 64, 0}};
    for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++)
        test_flash_kernels(fl[i][0], fl[i][1], fl[i][2], fl[i][3], fl[i][4], fl[i][5]);
#ifdef USE_CUDNN
    printf("\n--attention cudnn (cuDNN's fused attention) against the flash kernels, random inputs\n");
    // (required: GQA at head_dim 64 and 128, the benchmark's shape among them; the others, a
    // single query, a partial last tile, head_dim 8, run where this cuDNN has an engine for them)
    int cd[][6] = {{1, 1024, 8, 2, 64, 1}, {1, 256, 16, 4, 128, 1}, {8, 1024, 32, 4, 64, 1}, {1, 1, 4, 4, 64, 0},
                   {2, 77, 4, 4, 128, 0}, {2, 200, 8, 2, 64, 0}, {2, 77, 8, 4, 8, 0}, {2, 129, 4, 2, 64, 0}};
    for (size_t i = 0; i < sizeof cd / sizeof cd[0]; i++) test_cudnn_kernels(cd[i][0], cd[i][1], cd[i][2], cd[i][3], cd[i][4], cd[i][5]);
#endif
    printf("\nquantizers: W^ = Q(W) of the same latent weights\n");
    int specs[][3] = {{QUANT_INT, 1, 32}, {QUANT_INT, 2, 32}, {QUANT_INT, 3, 64}, {QUANT_INT, 4, -1}, {QUANT_INT, 8, 32},
                      {QUANT_NF3, 3, 32}, {QUANT_NF4, 4, 64}, {QUANT_SIGN, 1, 0}, {QUANT_ONEBIT, 1, 0}, {QUANT_TERNARY, 2, 0}};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) test_quantizer(specs[i][0], specs[i][1], specs[i][2]);
    int g4[][3] = {{QUANT_INT, 2, 128}, {QUANT_INT, 2, 32}, {QUANT_INT, 4, 2048}, {QUANT_INT, 8, 64}, {QUANT_NF3, 3, 128}, {QUANT_NF4, 4, 256},
                 {QUANT_INT, 2, 8192}};  // the last: 3 groups, a batch of QG4_BATCH short
    for (size_t i = 0; i < sizeof g4 / sizeof g4[0]; i++) {
        test_group4_kernel<float>(g4[i][0], g4[i][1], g4[i][2]);
        test_group4_kernel<__nv_bfloat16>(g4[i][0], g4[i][1], g4[i][2]);
    }
    printf("\nquantized forward and backward (straight-through; learned scales)\n");
    test_forward_backward("int2", "tiny", 0, 0, QUANT_INT, 2, 32, 2, 64);
    test_forward_backward("nf3", "tiny", 0, 0, QUANT_NF3, 3, 32, 2, 64);
    test_forward_backward("ternary", "tiny", 0, 0, QUANT_TERNARY, 2, 0, 2, 64);
    test_forward_backward("sign", "tiny", 0, 0, QUANT_SIGN, 1, 0, 2, 64);
    test_forward_backward("onebit", "tiny", 0, 0, QUANT_ONEBIT, 1, 0, 2, 64);
    test_ste_bitdistiller("int2, --ste bitdistiller", QUANT_INT, 2, 32);
    test_ste_bitdistiller("int3 per row, --ste bitdistiller", QUANT_INT, 3, -1);
    test_ste_bitdistiller("nf3, --ste bitdistiller", QUANT_NF3, 3, 32);
    int ste[][3] = {{QUANT_INT, 2, 128}, {QUANT_NF3, 3, 256}, {QUANT_INT, 3, 512}, {QUANT_NF4, 4, 128}, {QUANT_INT, 2, 64},
                    {QUANT_INT, 4, 1024}};  // the last two: the striding kernel
    for (size_t i = 0; i < sizeof ste / sizeof ste[0]; i++) test_ste_kernel(ste[i][0], ste[i][1], ste[i][2]);
    test_layered_training(QUANT_INT, 2, 32);
    test_recompute();
    test_layered_training(QUANT_TERNARY, 2, 0);
    test_layered_training(QUANT_ONEBIT, 1, 0);
    printf("\ndistillation losses (loss.h), student int2 g32, teacher its fp32 self\n");
    for (int k = 0; k < N_LOSSES; k++) test_distill(k, 0);
    for (int k = 0; k < N_LOSSES; k++) test_distill(k, 7);
    int lk[][3] = {{256, 9, 1}, {97, 3, 0}, {250, 40, 0}, {100, 6, 0}, {32001, 5, 0}, {32000, 300, 0}};
    for (size_t i = 0; i < sizeof lk / sizeof lk[0]; i++) test_distill_kernel(lk[i][0], lk[i][1], lk[i][2]);
    g_loss_chunk = 5;  // pretraining's CE through the chunked classifier, 77 x 3 rows in uneven chunks
    test_forward_backward("tiny untied, loss chunks of 5 rows", "tiny", 0, 1, QUANT_NONE, 16, 0, 3, 77);
    g_loss_chunk = 0;
    printf("\noptimizer\n");
    test_adamw();
    test_fresh_grads();
    printf("\nTF32 matmuls against fp32 (the default --matmul tf32)\n");
    {
        HostModel h;
        host_model_init(&h, "bench-100m", 512, 0, 9, QUANT_NONE, 16, 0);
        Model g;
        model_setup(&g, &h, "parameters");
        int B = 1, T = 128, N = B * T;
        int *inputs = (int *)malloc(N * sizeof(int)), *targets = (int *)malloc(N * sizeof(int));
        random_tokens(inputs, targets, N, h.vocab_size, 0);
        float lc = host_cpu_forward(&h, inputs, targets, B, T);
        g_compute = CUBLAS_COMPUTE_32F_FAST_TF32;
        float lg = model_forward(&g, inputs, targets, B, T);
        float *zg = download(g.logits, (int64_t)N * h.vocab_size);
        char what[160];
        snprintf(what, sizeof what, "bench-100m tf32: loss (cpu %.6f, gpu %.6f), relative", lc, lg);
        check(what, fabs((double)lc - lg) / lc, 1e-3);
        check("bench-100m tf32: logits", rel_err(zg, host_cpu_logits(&h), (int64_t)N * h.vocab_size), 2e-2);
        free(zg); free(inputs); free(targets);
        model_free(&g);
        host_model_free(&h);
    }
    // --matmul bf16: against train.c's fp32 at bf16 tolerances. A bf16 operand carries a relative
    // rounding error up to 2^-9 = 2e-3; summed over a layer's products and through the layers, the
    // logits stay within a few 1e-3 of their largest and the loss within 1e-2 relative (the
    // issue's tolerance); gradients pass through twice as many bf16 products (and dL/dlogits is
    // cast too), so 1e-1 of the largest. A wrong operand or layout shows as errors of order 1.
    printf("\nbf16 matmuls (--matmul bf16; TF32 attention products) against train.c's fp32, bf16 tolerances\n");
    test_cast_bf16();
    int rb[][3] = {{100, 2048, 0}, {37, 2048, 1}, {33, 66, 0}, {1, 4096, 0}};
    for (size_t i = 0; i < sizeof rb / sizeof rb[0]; i++) test_rmsnorm_backward(rb[i][0], rb[i][1], rb[i][2]);
    g_bf16 = 1;
    g_compute = CUBLAS_COMPUTE_32F_FAST_TF32;
    test_bf16_producers();
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) test_quantizer(specs[i][0], specs[i][1], specs[i][2]);
    g_tol.loss = 1e-2; g_tol.logits = 3e-2; g_tol.grads = 1e-1; g_tol.dloss = 1e-2; g_tol.dlogits = 5e-2; g_tol.gamma = 1e-2;
    test_forward_backward("bf16 tiny", "tiny", 0, 0, QUANT_NONE, 16, 0, 2, 64);
    test_forward_backward("bf16 tiny untied", "tiny", 0, 1, QUANT_NONE, 16, 0, 3, 77);
    test_forward_backward("bf16 bench-100m", "bench-100m", 512, 0, QUANT_NONE, 16, 0, 2, 150);
    test_forward_backward("bf16 int2", "tiny", 0, 0, QUANT_INT, 2, 32, 2, 64);
    test_forward_backward("bf16 sign", "tiny", 0, 0, QUANT_SIGN, 1, 0, 2, 64);
    test_layered_training(QUANT_INT, 2, 32);
    test_layered_training(QUANT_SIGN, 1, 0);
    g_attention_gemm = 0;
    test_forward_backward("bf16 int2, fused", "tiny", 0, 0, QUANT_INT, 2, 32, 2, 64);
    g_attention_gemm = 1;
    // --attention flash: the model at the same bf16 tolerances (tiny's head of 8 dims runs padded
    // to 64; bench-100m's 150 tokens end in a partial tile), under bf16 and under fp32 matmuls
    g_attention_gemm = 0;
    g_attention_flash = 1;
    test_forward_backward("bf16 tiny untied, flash", "tiny", 0, 1, QUANT_NONE, 16, 0, 3, 77);
    test_forward_backward("bf16 bench-100m, flash", "bench-100m", 512, 0, QUANT_NONE, 16, 0, 2, 150);
    test_forward_backward("bf16 int2, flash", "tiny", 0, 0, QUANT_INT, 2, 32, 2, 64);
#ifdef USE_CUDNN
    // --attention cudnn: the same model tests through cuDNN's attention (tiny's head of 8 dims
    // through cuDNN where it has an engine for it, else the flash kernels)
    g_attention_cudnn = 1;
    test_forward_backward("bf16 tiny untied, cudnn", "tiny", 0, 1, QUANT_NONE, 16, 0, 3, 77);
    test_forward_backward("bf16 bench-100m, cudnn", "bench-100m", 512, 0, QUANT_NONE, 16, 0, 2, 150);
    test_forward_backward("bf16 int2, cudnn", "tiny", 0, 0, QUANT_INT, 2, 32, 2, 64);
    g_attention_cudnn = 0;
#endif
    test_recompute();
    g_bf16 = 0;
    g_compute = CUBLAS_COMPUTE_32F;
    test_forward_backward("fp32 matmuls, flash attention: bench-100m", "bench-100m", 512, 0, QUANT_NONE, 16, 0, 2, 150);
    g_bf16 = 1;
    g_compute = CUBLAS_COMPUTE_32F_FAST_TF32;
    g_attention_flash = 0;
    g_attention_gemm = 1;
    for (int k = 0; k < N_LOSSES; k++) test_distill(k, 0);
    for (int k = 0; k < N_LOSSES; k++) test_distill(k, 7);
    test_decode("bf16 decode tiny", "tiny", 0, QUANT_NONE, 16, 0, 3, 40, 0);
    test_decode("bf16 decode int2", "tiny", 0, QUANT_INT, 2, 32, 2, 64, 0);
    test_decode("bf16-only decode bench-100m", "bench-100m", 512, QUANT_NONE, 16, 0, 2, 150, 1);
    g_bf16 = 0;
    printf("\n%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
