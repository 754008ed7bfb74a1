// test_model.c — model behaviours beyond single gradients:
//   1. decoding with the KV cache gives the full forward's logits at every position
//      (GQA, Llama-3 RoPE scaling, prompts of different lengths in one batch);
//   2. sampling: temperature 0 is argmax; top_p keeps only the nucleus; frequencies follow
//      the softmax;
//   3. the learning-rate schedule: warmup, cosine end points;
//   4. gradient accumulation: two micro-batches of 1 equal one batch of 2;
//   5. packed models: export then load gives, bit for bit, the weights quant_dequantize makes
//      of the model's own codes with its scales rounded to fp16, for every quantizer, and
//      stays within fp16 rounding of the fake-quantized W^;
//   6. the random init: the generator's jump equals that many draws, and the init filled in
//      parallel chunks equals the one serial stream, value for value.
#define TRAIN_NO_MAIN
#include "../train.c"
#include <unistd.h>  // close

static int failures = 0;
static void expect(int ok, const char *what, double value) {
    printf("  %-62s %12.3e  %s\n", what, value, ok ? "ok" : "FAIL");
    failures += !ok;
}

static Model random_model(int kv, int rope) {
    ModelHeader c = header_defaults();
    c.dim = 32; c.hidden_dim = 48; c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = kv; c.head_dim = 8;
    c.vocab_size = 50; c.max_seq_len = 32; c.tied = 0;
    if (rope) {
        c.rope_scaling = ROPE_LLAMA3; c.rope_theta = 500000.0f; c.rope_factor = 8.0f;
        c.rope_low_freq_factor = 1.0f; c.rope_high_freq_factor = 4.0f; c.rope_original_max_pos = 8;
    }
    float *p = malloc_or_die((size_t)tensor_sizes(&c, (int64_t[N_TENSORS]){0}) * sizeof(float), "p");
    init_params(&c, p, 7);
    Rng r = rng_seeded(3);
    for (int64_t i = 0; i < tensor_sizes(&c, (int64_t[N_TENSORS]){0}); i++) p[i] += 0.1f * rng_normal(&r);
    Model m;
    model_setup(&m, &c, p);
    return m;
}

static void test_kv_cache(int kv_heads, int rope) {
    Model m = random_model(kv_heads, rope);
    int B = 3, T = 12, V = m.cfg.vocab_size;
    int ids[3 * 12];
    Rng r = rng_seeded(11);
    for (int i = 0; i < B * T; i++) ids[i] = (int)(rng_u64(&r) % V);
    model_forward(&m, ids, NULL, B, T);
    float *full = malloc_or_die((size_t)B * T * V * sizeof(float), "full");
    memcpy(full, m.logits, (size_t)B * T * V * sizeof(float));
    KVCache kv;
    kv_alloc(&kv, &m, B, T);
    double worst = 0.0;
    for (int pos = 0; pos < T; pos++) {
        int tok[3];
        for (int b = 0; b < B; b++) tok[b] = ids[b * T + pos];
        model_decode_step(&m, &kv, tok, pos);
        for (int b = 0; b < B; b++)
            for (int i = 0; i < V; i++)
                worst = fmax(worst, fabs(m.logits[b * V + i] - full[((int64_t)b * T + pos) * V + i]));
    }
    char what[128];
    snprintf(what, sizeof what, "KV-cache decode = full forward (kv heads %d%s), max |diff|", kv_heads, rope ? ", llama3 rope" : "");
    expect(worst < 1e-4, what, worst);
    kv_free(&kv);

    // greedy generation from prompts of different lengths equals greedy decoding one by one
    int p0[] = {1, 2, 3, 4, 5}, p1[] = {7}, p2[] = {9, 8, 7};
    int *prompts[3] = {p0, p1, p2}, plen[3] = {5, 1, 3};
    int o0[8], o1[8], o2[8], *outs[3] = {o0, o1, o2}, olen[3];
    Rng g = rng_seeded(1);
    m.cfg.eos_id = -1;
    generate(&m, prompts, plen, 3, 6, 0.0f, 1.0f, &g, outs, olen);
    int mismatch = 0;
    for (int b = 0; b < 3; b++) {  // reference: full forward over the growing sequence, argmax
        int seq[32], n = plen[b];
        memcpy(seq, prompts[b], (size_t)n * sizeof(int));
        for (int s = 0; s < 6; s++) {
            model_forward(&m, seq, NULL, 1, n);
            const float *z = m.logits + (int64_t)(n - 1) * V;
            int best = 0;
            for (int i = 1; i < V; i++) best = z[i] > z[best] ? i : best;
            seq[n++] = best;
            mismatch += olen[b] != 6 || outs[b][s] != best;
        }
    }
    snprintf(what, sizeof what, "batched greedy generation = one-by-one full forwards (mismatches)");
    expect(mismatch == 0, what, mismatch);
    free(full);
    model_free(&m);
}

static void test_sampling(void) {
    float z[5] = {1.0f, 3.0f, 2.0f, -1.0f, 2.9f}, probs[5];
    int order[5];
    Rng r = rng_seeded(5);
    expect(sample_token(z, 5, 0.0f, 1.0f, &r, probs, order) == 1, "temperature 0 picks the argmax", 0);
    // softmax(z) = [.0533, .3940, .1449, .0072, .3565]: top_p 0.5 keeps {1, 4} only
    int outside = 0, counts[5] = {0};
    for (int i = 0; i < 20000; i++) { int t = sample_token(z, 5, 1.0f, 0.5f, &r, probs, order); outside += t != 1 && t != 4; }
    expect(outside == 0, "top_p 0.5 samples only the two most likely tokens", outside);
    for (int i = 0; i < 100000; i++) counts[sample_token(z, 5, 1.0f, 1.0f, &r, probs, order)]++;
    double mx = z[1], s = 0, worst = 0;
    for (int i = 0; i < 5; i++) s += exp(z[i] - mx);
    for (int i = 0; i < 5; i++) worst = fmax(worst, fabs(counts[i] / 100000.0 - exp(z[i] - mx) / s));
    expect(worst < 0.01, "sampled frequencies follow softmax (max |freq - p|)", worst);
}

static void test_schedule(void) {
    OptConfig o = {.lr = 1.0f, .min_lr = 0.1f, .warmup = 4, .schedule = SCHED_COSINE};
    expect(fabsf(lr_at(&o, 0, 20) - 0.25f) < 1e-6f, "warmup: step 0 of 4 has lr/4", lr_at(&o, 0, 20));
    expect(fabsf(lr_at(&o, 4, 20) - 1.0f) < 1e-6f, "cosine starts at lr after warmup", lr_at(&o, 4, 20));
    expect(fabsf(lr_at(&o, 19, 20) - 0.1f) < 1e-6f, "cosine ends at min_lr on the last step", lr_at(&o, 19, 20));
    expect(fabsf(lr_at(&o, 12, 21) - 0.55f) < 1e-6f, "cosine midpoint is (lr + min_lr)/2", lr_at(&o, 12, 21));
}

static void test_accumulation(void) {
    Model m = random_model(2, 0);
    model_alloc_training(&m);
    int T = 8, V = m.cfg.vocab_size, in[16], tg[16];
    Rng r = rng_seeded(2);
    for (int i = 0; i < 16; i++) { in[i] = (int)(rng_u64(&r) % V); tg[i] = (int)(rng_u64(&r) % V); }
    model_zero_grad(&m);
    model_forward(&m, in, tg, 2, T);
    model_backward(&m);
    float *g2 = malloc_or_die((size_t)m.n_params * sizeof(float), "g");
    memcpy(g2, m.grads, (size_t)m.n_params * sizeof(float));
    model_zero_grad(&m);
    for (int b = 0; b < 2; b++) { model_forward(&m, in + b * T, tg + b * T, 1, T); model_backward_scaled(&m, 0.5f); }
    double worst = 0, mx = 0;
    for (int64_t i = 0; i < m.n_params; i++) { worst = fmax(worst, fabs(g2[i] - m.grads[i])); mx = fmax(mx, fabs(g2[i])); }
    expect(worst / mx < 1e-5, "2 micro-batches x 1/2 = one batch of 2 (rel. grad diff)", worst / mx);
    free(g2);
    model_free(&m);
}


static void test_packed(QuantSpec q, const char *name) {
    Model m = random_model(2, 0);
    model_apply_quant(&m, q);
    model_quantize(&m);
    char path[] = "/tmp/test_model_packed.XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) die("mkstemp failed");
    close(fd);
    export_packed(&m, path, DTYPE_F32);
    Model back;
    load_packed(&back, path);
    remove(path);
    double exact_diff = 0, fq_rel = 0, other = 0;
    for (int t = 0; t < N_TENSORS; t++) {
        if (!m.params_t[t]) continue;
        int64_t n = m.slice[t] * (tensor_is_per_layer(t) ? m.cfg.n_layers : 1);
        if (!tensor_is_linear(t)) {
            for (int64_t i = 0; i < n; i++) other = fmax(other, fabs(m.params_t[t][i] - back.params_t[t][i]));
            continue;
        }
        int out, in;
        linear_shape(&m, t, &out, &in);
        int64_t base = layer_tensor(m.fwd_t, &m, t, 0) - m.wq;
        float *want = malloc_or_die((size_t)m.slice[t] * sizeof(float), "w");
        float *p0 = malloc_or_die((size_t)(m.qn0[t] + 1) * sizeof(float), "p0"), *p1 = malloc_or_die((size_t)(m.qn1[t] + 1) * sizeof(float), "p1");
        for (int l = 0; l < m.cfg.n_layers; l++) {
            for (int64_t i = 0; i < m.qn0[t]; i++) p0[i] = fp16_to_f32(f32_to_fp16(m.qp0[t][l * m.qn0[t] + i]));
            for (int64_t i = 0; i < m.qn1[t]; i++) p1[i] = fp16_to_f32(f32_to_fp16(m.qp1[t][l * m.qn1[t] + i]));
            quant_dequantize(want, m.codes + base + l * m.slice[t], p0, p1, m.quant, out, in);
            const float *got = layer_tensor(back.params_t, &back, t, l), *fq = layer_tensor(m.fwd_t, &m, t, l);
            double mx = 0, d = 0;
            for (int64_t i = 0; i < m.slice[t]; i++) {
                exact_diff = fmax(exact_diff, fabs(got[i] - want[i]));
                d = fmax(d, fabs(got[i] - fq[i]));
                mx = fmax(mx, fabs(fq[i]));
            }
            fq_rel = fmax(fq_rel, d / mx);
        }
        free(want); free(p0); free(p1);
    }
    char what[128];
    snprintf(what, sizeof what, "packed %-8s: loaded = dequantize(codes, fp16 scales) exactly", name);
    expect(exact_diff == 0.0 && other == 0.0, what, exact_diff + other);
    snprintf(what, sizeof what, "packed %-8s: loaded vs fake-quantized W^ (fp16 scales)", name);
    expect(fq_rel < 2e-3, what, fq_rel);
    model_free(&back);
    model_free(&m);
}

// Fraction of the values of rows[n, d] off the per-row 8-bit absmax grid x * 127 / max|x| in Z.
static double off_grid(const float *x, int n, int d) {
    int off = 0;
    for (int t = 0; t < n; t++) {
        float m = 0.0f;
        for (int j = 0; j < d; j++) m = fmaxf(m, fabsf(x[t * d + j]));
        for (int j = 0; j < d; j++) {
            double k = x[t * d + j] * 127.0 / fmax(m, 1e-5);
            off += fabs(k - rint(k)) > 1e-3;
        }
    }
    return (double)off / ((double)n * d);
}

// --act-bits 8 (BitNet's 8-bit activations): the linears read inputs on the per-token grid, the
// KV-cache path quantizes the same way, and the weight gradient is that of the quantized input
// (finite differences on the last layer's W_down, where the loss is smooth in the weight).
static void test_act_quant(void) {
    Model fp = random_model(2, 0), m = random_model(2, 0);
    m.cfg.quant_act_bits = 8;
    int B = 2, T = 10, V = m.cfg.vocab_size, N = B * T, L = m.cfg.n_layers;
    int ids[20], tg[20];
    Rng r = rng_seeded(5);
    for (int i = 0; i < N; i++) { ids[i] = (int)(rng_u64(&r) % V); tg[i] = (int)(rng_u64(&r) % V); }
    model_forward(&fp, ids, NULL, B, T);
    model_forward(&m, ids, NULL, B, T);
    double d = 0.0;
    for (int i = 0; i < N * V; i++) d = fmax(d, fabs(m.logits[i] - fp.logits[i]));
    expect(d > 0 && d < 0.05, "act8: logits move by the 8-bit rounding only, max |diff|", d);
    float *full = malloc_or_die((size_t)N * V * sizeof(float), "full");
    memcpy(full, m.logits, (size_t)N * V * sizeof(float));
    KVCache kv;
    kv_alloc(&kv, &m, B, T);
    double worst = 0.0;
    for (int pos = 0; pos < T; pos++) {
        int tok[2] = {ids[pos], ids[T + pos]};
        model_decode_step(&m, &kv, tok, pos);
        for (int b = 0; b < B; b++)
            for (int i = 0; i < V; i++) worst = fmax(worst, fabs(m.logits[b * V + i] - full[((int64_t)b * T + pos) * V + i]));
    }
    expect(worst < 1e-4, "act8: KV-cache decode = full forward, max |diff|", worst);
    kv_free(&kv);
    free(full);
    // training: what the linears read is on the grid; attention's own output is kept for its backward
    model_alloc_training(&m);
    model_zero_grad(&m);
    model_forward(&m, ids, tg, B, T);
    model_backward(&m);
    int l = L - 1, D = m.cfg.dim, F = m.cfg.hidden_dim, Hq = m.cfg.n_heads * m.cfg.head_dim;
    double og = off_grid(act_l(&m, A_XN1, l), N, D) + off_grid(act_l(&m, A_XN2, l), N, D) +
                off_grid(act_l(&m, A_HMID, l), N, F) + off_grid(act_l(&m, A_ATTQ, l), N, Hq);
    expect(og == 0.0, "act8: inputs of the linears on the per-token grid (fraction off)", og);
    double og_att = off_grid(act_l(&m, A_ATT, l), N, Hq);
    expect(og_att > 0.5, "act8: attention output itself kept unquantized (fraction off the grid)", og_att);
    float *w = layer_tensor(m.params_t, &m, T_WDOWN, l), *g = layer_tensor(m.grads_t, &m, T_WDOWN, l);
    double worst_rel = 0.0, gmax = 0.0;
    for (int i = 0; i < D * F; i++) gmax = fmax(gmax, fabs(g[i]));
    for (int i = 0; i < D * F; i += 37) {
        float keep = w[i], eps = 1e-2f;
        w[i] = keep + eps; double lp = model_forward(&m, ids, tg, B, T);
        w[i] = keep - eps; double lm = model_forward(&m, ids, tg, B, T);
        w[i] = keep;
        worst_rel = fmax(worst_rel, fabs((lp - lm) / (2 * eps) - g[i]) / gmax);
    }
    expect(worst_rel < 2e-3, "act8: dL/dW_down (last layer) vs central differences, max err / max|g|", worst_rel);
    model_free(&fp);
    model_free(&m);
}

static void test_init_parallel(void) {
    Rng a = rng_seeded(9);
    const uint64_t jumps[] = {0, 1, 2, 63, 64, 65, 1000, 123457};
    int bad = 0;
    for (size_t j = 0; j < sizeof jumps / sizeof jumps[0]; j++) {
        Rng b = a;
        for (uint64_t i = 0; i < jumps[j]; i++) rng_u64(&b);
        Rng c = rng_jump(a, jumps[j]);
        bad += b.s != c.s || rng_u64(&b) != rng_u64(&c);
    }
    expect(bad == 0, "rng_jump(n) = n draws (n = 0 .. 123457), states differing", bad);
    ModelHeader c = header_defaults();
    c.dim = 32; c.hidden_dim = 48; c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 8;
    c.vocab_size = 50; c.max_seq_len = 32; c.tied = 0;
    int64_t sizes[N_TENSORS], n = tensor_sizes(&c, sizes);
    float *serial = malloc_or_die((size_t)n * sizeof(float), "serial"), *par = malloc_or_die((size_t)n * sizeof(float), "par");
    Rng r = rng_seeded(5);  // the one stream, drawn in order (the serial init this replaces)
    float *p = serial;
    for (int t = 0; t < N_TENSORS; t++) {
        int is_norm = t == T_ATTN_NORM || t == T_MLP_NORM || t == T_FINAL_NORM;
        for (int64_t i = 0; i < sizes[t]; i++) p[i] = is_norm ? 1.0f : 0.02f * rng_normal(&r);
        p += sizes[t];
    }
    const int64_t chunks[] = {1, 7, 1000, 1 << 22};
    for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
        init_params_chunked(&c, par, 5, chunks[k]);
        int64_t differ = 0;
        for (int64_t i = 0; i < n; i++) differ += memcmp(&par[i], &serial[i], sizeof(float)) != 0;
        char what[96];
        snprintf(what, sizeof what, "init in chunks of %lld = the serial stream, values differing", (long long)chunks[k]);
        expect(differ == 0, what, (double)differ);
    }
    free(serial); free(par);
}

// The layers' matmul (lib/gemm.h) against train.c's plain loops, matmul_*_reference, which
// define it: forward, and the backward accumulating into non-zero dx and dW, on shapes that are
// not multiples of the micro-tile and on a single row. The error is relative to the largest
// |value| of the reference (the two sum in different orders, so float rounding differs).
static double max_rel(const float *a, const float *b, int64_t n) {
    double e = 0.0, m = 1e-30;
    for (int64_t i = 0; i < n; i++) { e = fmax(e, fabs((double)a[i] - b[i])); m = fmax(m, fabs((double)b[i])); }
    return e / m;
}
static void test_matmul_reference(int N, int I, int O) {
    float *x = malloc_or_die((size_t)N * I * sizeof(float), "x"), *w = malloc_or_die((size_t)O * I * sizeof(float), "w");
    float *d = malloc_or_die((size_t)N * O * sizeof(float), "dout");
    float *y[2], *dx[2], *dw[2];
    Rng r = rng_seeded(7);
    for (int64_t i = 0; i < (int64_t)N * I; i++) x[i] = rng_uniform(&r) * 2 - 1;
    for (int64_t i = 0; i < (int64_t)O * I; i++) w[i] = rng_uniform(&r) * 2 - 1;
    for (int64_t i = 0; i < (int64_t)N * O; i++) d[i] = rng_uniform(&r) * 2 - 1;
    for (int k = 0; k < 2; k++) {
        y[k] = malloc_or_die((size_t)N * O * sizeof(float), "y");
        dx[k] = malloc_or_die((size_t)N * I * sizeof(float), "dx");
        dw[k] = malloc_or_die((size_t)O * I * sizeof(float), "dw");
        for (int64_t i = 0; i < (int64_t)N * I; i++) dx[k][i] = 0.5f;  // the backward adds to these
        for (int64_t i = 0; i < (int64_t)O * I; i++) dw[k][i] = -0.25f;
    }
    matmul_forward(y[0], x, w, N, I, O);
    matmul_forward_reference(y[1], x, w, N, I, O);
    matmul_backward(dx[0], dw[0], d, x, w, N, I, O);
    matmul_backward_reference(dx[1], dw[1], d, x, w, N, I, O);
    char what[96];
    snprintf(what, sizeof what, "matmul [%d,%d]x[%d,%d]^T vs reference: out, dx, dW", N, I, O, I);
    double e = fmax(max_rel(y[0], y[1], (int64_t)N * O), fmax(max_rel(dx[0], dx[1], (int64_t)N * I), max_rel(dw[0], dw[1], (int64_t)O * I)));
    expect(e < 1e-5, what, e);
    for (int k = 0; k < 2; k++) { free(y[k]); free(dx[k]); free(dw[k]); }
    free(x); free(w); free(d);
}

// The layers' attention (lib/attention.h, blocks of queries through gemm) against train.c's
// attention_*_reference, one query row at a time: out and lse, then dq, dk, dv added to non-zero
// buffers, for grouped-query heads, a T that is not a multiple of the block, T below a block, one
// position, and head dims of 8 and 64. Relative to the largest |value| of the reference.
static void test_attention_reference(int B, int T, int H, int KV, int hd) {
    int64_t nq = (int64_t)B * T * H * hd, nk = (int64_t)B * T * KV * hd, nl = (int64_t)B * H * T;
    float *q = malloc_or_die((size_t)nq * sizeof(float), "q"), *k = malloc_or_die((size_t)nk * sizeof(float), "k");
    float *v = malloc_or_die((size_t)nk * sizeof(float), "v"), *dout = malloc_or_die((size_t)nq * sizeof(float), "dout");
    float *scores = malloc_or_die((size_t)nl * sizeof(float), "scores");
    float *out[2], *lse[2], *dq[2], *dk[2], *dv[2];
    Rng r = rng_seeded(11);
    for (int64_t i = 0; i < nq; i++) { q[i] = rng_uniform(&r) * 4 - 2; dout[i] = rng_uniform(&r) * 2 - 1; }
    for (int64_t i = 0; i < nk; i++) { k[i] = rng_uniform(&r) * 4 - 2; v[i] = rng_uniform(&r) * 2 - 1; }
    for (int c = 0; c < 2; c++) {
        out[c] = malloc_or_die((size_t)nq * sizeof(float), "out"); lse[c] = malloc_or_die((size_t)nl * sizeof(float), "lse");
        dq[c] = malloc_or_die((size_t)nq * sizeof(float), "dq");
        dk[c] = malloc_or_die((size_t)nk * sizeof(float), "dk"); dv[c] = malloc_or_die((size_t)nk * sizeof(float), "dv");
        for (int64_t i = 0; i < nq; i++) dq[c][i] = 0.5f;  // the backward adds to these
        for (int64_t i = 0; i < nk; i++) { dk[c][i] = -0.25f; dv[c][i] = 0.125f; }
    }
    attention_forward(out[0], lse[0], q, k, v, B, T, H, KV, hd);
    attention_forward_reference(out[1], lse[1], scores, q, k, v, B, T, H, KV, hd);
    attention_backward(dq[0], dk[0], dv[0], dout, q, k, v, out[0], lse[0], B, T, H, KV, hd);
    attention_backward_reference(dq[1], dk[1], dv[1], scores, dout, q, k, v, out[1], lse[1], B, T, H, KV, hd);
    char what[112];
    snprintf(what, sizeof what, "attention B %d T %d H %d/%d hd %d vs reference: out, lse, dq, dk, dv", B, T, H, KV, hd);
    double e = fmax(fmax(max_rel(out[0], out[1], nq), max_rel(lse[0], lse[1], nl)),
                    fmax(max_rel(dq[0], dq[1], nq), fmax(max_rel(dk[0], dk[1], nk), max_rel(dv[0], dv[1], nk))));
    expect(e < 1e-5, what, e);
    for (int c = 0; c < 2; c++) { free(out[c]); free(lse[c]); free(dq[c]); free(dk[c]); free(dv[c]); }
    free(q); free(k); free(v); free(dout); free(scores);
}

int main(void) {
    printf("model behaviours:\n");
    test_attention_reference(2, 150, 4, 2, 8);
    test_attention_reference(1, 37, 6, 6, 64);
    test_attention_reference(3, 1, 4, 1, 16);
    test_attention_reference(1, 128, 2, 1, 64);
    test_matmul_reference(37, 70, 45);
    test_matmul_reference(1, 64, 33);
    test_act_quant();
    test_init_parallel();
    test_kv_cache(4, 0);
    test_kv_cache(2, 1);
    test_sampling();
    test_schedule();
    test_accumulation();
    test_packed((QuantSpec){QUANT_INT, 2, 8}, "int2");
    test_packed((QuantSpec){QUANT_INT, 3, 16}, "int3");
    test_packed((QuantSpec){QUANT_NF3, 3, 8}, "nf3");
    test_packed((QuantSpec){QUANT_NF4, 4, -1}, "nf4");
    test_packed((QuantSpec){QUANT_SIGN, 1, -1}, "sign");
    test_packed((QuantSpec){QUANT_ONEBIT, 1, -1}, "onebit");
    test_packed((QuantSpec){QUANT_TERNARY, 2, -1}, "ternary");
    printf("%s: %d failure(s)\n", failures ? "FAILED" : "passed", failures);
    return failures ? 1 : 0;
}
