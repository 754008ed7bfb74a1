// test_llama2c.c — the llama2.c import is exact.
//
// ../shared/data/stories260K/stories260K.bin is a real pretrained model in llama2.c's legacy
// layout, whose RoPE rotates interleaved pairs (2i, 2i+1). This test runs it twice:
//   - in its own layout, with the small independent forward below (written after llama2.c's
//     run.c: one position at a time, interleaved RoPE, w1/w2/w3);
//   - converted by `./convert --from-llama2c` (rows of wq, wk permuted to Hugging Face's
//     rotate-half order), through train.c's model_forward;
// and requires the same logits at every position of a sequence the model writes itself
// (greedy continuation of BOS), so the comparison runs on text the model finds plausible.
// A second, synthetic llama2.c file of random weights runs always, shared data or not: it has
// what stories260K lacks (a separate classifier, i.e. a negative vocab_size, and a head_dim
// different from 8), and it makes the test meaningful on a machine without the shared data.
#define TRAIN_NO_MAIN
#include "../train.c"

typedef struct {
    int dim, hidden, layers, heads, kv_heads, vocab, seq, shared;
    float *emb, *rms_att, *wq, *wk, *wv, *wo, *rms_ffn, *w1, *w2, *w3, *rms_final, *wcls;
    float *data;
} L2C;

static void l2c_load(L2C *m, const char *path) {
    FILE *f = fopen_or_die(path, "rb");
    int64_t n = file_size_or_die(f, path);
    int32_t h[7];
    fread_exact(h, sizeof h, f, path);
    m->dim = h[0]; m->hidden = h[1]; m->layers = h[2]; m->heads = h[3]; m->kv_heads = h[4];
    m->shared = h[5] > 0; m->vocab = abs(h[5]); m->seq = h[6];
    m->data = malloc_or_die((size_t)(n - 28), path);
    fread_exact(m->data, (size_t)(n - 28), f, path);
    fclose(f);
    int hd = m->dim / m->heads, kvd = m->kv_heads * hd;
    float *p = m->data;
    m->emb = p; p += (int64_t)m->vocab * m->dim;
    m->rms_att = p; p += (int64_t)m->layers * m->dim;
    m->wq = p; p += (int64_t)m->layers * m->dim * m->dim;
    m->wk = p; p += (int64_t)m->layers * kvd * m->dim;
    m->wv = p; p += (int64_t)m->layers * kvd * m->dim;
    m->wo = p; p += (int64_t)m->layers * m->dim * m->dim;
    m->rms_ffn = p; p += (int64_t)m->layers * m->dim;
    m->w1 = p; p += (int64_t)m->layers * m->hidden * m->dim;
    m->w2 = p; p += (int64_t)m->layers * m->dim * m->hidden;
    m->w3 = p; p += (int64_t)m->layers * m->hidden * m->dim;
    m->rms_final = p; p += m->dim;
    p += (int64_t)m->seq * hd;  // freq_cis_real and freq_cis_imag, hd/2 each per position
    m->wcls = m->shared ? m->emb : p;
}

static void ref_rmsnorm(float *o, const float *x, const float *w, int n) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float r = 1.0f / sqrtf((float)(ss / n) + 1e-5f);
    for (int i = 0; i < n; i++) o[i] = w[i] * x[i] * r;
}

static void ref_matvec(float *o, const float *x, const float *w, int in, int out) {
    for (int r = 0; r < out; r++) {
        double s = 0;
        for (int i = 0; i < in; i++) s += (double)w[(int64_t)r * in + i] * x[i];
        o[r] = (float)s;
    }
}

// Logits of every position of toks[0..T), one position at a time with a KV cache.
static void l2c_forward(const L2C *m, const int *toks, int T, float *logits) {
    int D = m->dim, hd = D / m->heads, kvd = m->kv_heads * hd, F = m->hidden, grp = m->heads / m->kv_heads;
    float *x = calloc_or_die(D, 4, "x"), *xb = calloc_or_die(D, 4, "xb"), *q = calloc_or_die(D, 4, "q"),
          *att = calloc_or_die(T, 4, "att"), *o = calloc_or_die(D, 4, "o"), *h1 = calloc_or_die(F, 4, "h1"),
          *h3 = calloc_or_die(F, 4, "h3"), *kc = calloc_or_die((size_t)m->layers * T * kvd, 4, "k cache"),
          *vc = calloc_or_die((size_t)m->layers * T * kvd, 4, "v cache");
    for (int pos = 0; pos < T; pos++) {
        memcpy(x, m->emb + (int64_t)toks[pos] * D, (size_t)D * 4);
        for (int l = 0; l < m->layers; l++) {
            float *k = kc + ((int64_t)l * T + pos) * kvd, *v = vc + ((int64_t)l * T + pos) * kvd;
            ref_rmsnorm(xb, x, m->rms_att + (int64_t)l * D, D);
            ref_matvec(q, xb, m->wq + (int64_t)l * D * D, D, D);
            ref_matvec(k, xb, m->wk + (int64_t)l * kvd * D, D, kvd);
            ref_matvec(v, xb, m->wv + (int64_t)l * kvd * D, D, kvd);
            for (int i = 0; i < D; i += 2) {  // Meta's RoPE: pairs (i, i+1) within each head
                int j = i % hd;
                float freq = 1.0f / powf(10000.0f, (float)j / (float)hd), a = pos * freq, c = cosf(a), s = sinf(a);
                float q0 = q[i], q1 = q[i + 1];
                q[i] = q0 * c - q1 * s; q[i + 1] = q0 * s + q1 * c;
                if (i < kvd) { float k0 = k[i], k1 = k[i + 1]; k[i] = k0 * c - k1 * s; k[i + 1] = k0 * s + k1 * c; }
            }
            for (int h = 0; h < m->heads; h++) {
                int kh = h / grp;
                float mx = -1e30f, sum = 0;
                for (int t = 0; t <= pos; t++) {
                    const float *kt = kc + ((int64_t)l * T + t) * kvd + kh * hd;
                    double s = 0;
                    for (int i = 0; i < hd; i++) s += (double)q[h * hd + i] * kt[i];
                    att[t] = (float)(s / sqrt(hd));
                    mx = att[t] > mx ? att[t] : mx;
                }
                for (int t = 0; t <= pos; t++) { att[t] = expf(att[t] - mx); sum += att[t]; }
                for (int i = 0; i < hd; i++) {
                    double s = 0;
                    for (int t = 0; t <= pos; t++) s += att[t] / sum * vc[((int64_t)l * T + t) * kvd + kh * hd + i];
                    xb[h * hd + i] = (float)s;
                }
            }
            ref_matvec(o, xb, m->wo + (int64_t)l * D * D, D, D);
            for (int i = 0; i < D; i++) x[i] += o[i];
            ref_rmsnorm(xb, x, m->rms_ffn + (int64_t)l * D, D);
            ref_matvec(h1, xb, m->w1 + (int64_t)l * F * D, D, F);
            ref_matvec(h3, xb, m->w3 + (int64_t)l * F * D, D, F);
            for (int i = 0; i < F; i++) h1[i] = h1[i] / (1.0f + expf(-h1[i])) * h3[i];
            ref_matvec(o, h1, m->w2 + (int64_t)l * D * F, F, D);
            for (int i = 0; i < D; i++) x[i] += o[i];
        }
        ref_rmsnorm(xb, x, m->rms_final, D);
        ref_matvec(logits + (int64_t)pos * m->vocab, xb, m->wcls, D, m->vocab);
    }
    free(x); free(xb); free(q); free(att); free(o); free(h1); free(h3); free(kc); free(vc);
}

// A llama2.c file of random weights: header h[7] (h[5] < 0: separate classifier), then every
// tensor in llama2.c's order. Norm weights near 1, others small, so activations stay O(1).
static void write_random_llama2c(const char *path, const int32_t h[7]) {
    int64_t D = h[0], F = h[1], L = h[2], KV = h[4], V = abs(h[5]), S = h[6], hd = D / h[3];
    int64_t count[] = {V * D, L * D, L * D * D, L * KV * hd * D, L * KV * hd * D, L * D * D, L * D,
                       L * F * D, L * D * F, L * F * D, D, S * hd, h[5] < 0 ? V * D : 0};
    int is_norm[] = {0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0};
    FILE *f = fopen_or_die(path, "wb");
    fwrite_or_die(h, 28, f, path);
    uint32_t seed = 7;
    for (int t = 0; t < 13; t++)
        for (int64_t i = 0; i < count[t]; i++) {
            seed = seed * 1664525u + 1013904223u;
            float u = (float)(seed >> 8) / 16777216.0f - 0.5f;  // uniform in [-0.5, 0.5)
            float w = is_norm[t] ? 1.0f + 0.2f * u : 0.4f * u;
            fwrite_or_die(&w, 4, f, path);
        }
    fclose(f);
}

// Converts `src` with ./convert --from-llama2c, runs both forwards on T tokens of the model's
// own greedy text, and returns 1 if the logits agree to 1e-4 of their largest magnitude.
static int compare(const char *label, const char *src, const char *dir, int T, int min_distinct) {
    char out[512], cmd[2048];
    snprintf(out, sizeof out, "%s/converted.bin", dir);
    snprintf(cmd, sizeof cmd, "./convert --from-llama2c '%s' '%s' > /dev/null", src, out);
    if (system(cmd) != 0) { printf("FAIL: %s\n", cmd); return 0; }
    L2C ref;
    l2c_load(&ref, src);
    int *toks = malloc_or_die(sizeof(int) * (size_t)T, "tokens");
    float *lref = malloc_or_die((size_t)T * ref.vocab * sizeof(float), "logits");
    toks[0] = 1;  // BOS, then greedy continuation
    for (int t = 1; t < T; t++) {
        l2c_forward(&ref, toks, t, lref);
        const float *z = lref + (int64_t)(t - 1) * ref.vocab;
        int best = 0;
        for (int i = 1; i < ref.vocab; i++) best = z[i] > z[best] ? i : best;
        toks[t] = best;
    }
    l2c_forward(&ref, toks, T, lref);

    Model m;
    model_load_file(&m, out);
    model_forward(&m, toks, NULL, 1, T);
    double max_diff = 0, max_ref = 0;
    for (int64_t i = 0; i < (int64_t)T * ref.vocab; i++) {
        max_diff = fmax(max_diff, fabs(m.logits[i] - lref[i]));
        max_ref = fmax(max_ref, fabs(lref[i]));
    }
    int distinct = 0;
    char *seen = calloc_or_die((size_t)ref.vocab, 1, "seen");
    for (int t = 0; t < T; t++) distinct += !seen[toks[t]]++;
    printf("%s: dim %d, %d layers, %d heads (%d kv), vocab %d (%s classifier); %d positions of its own greedy text (%d distinct tokens)\n",
           label, ref.dim, ref.layers, ref.heads, ref.kv_heads, ref.vocab, ref.shared ? "shared" : "separate", T, distinct);
    printf("  max |logit diff| llama2.c layout vs converted = %.3e (max |logit| %.2f, tolerance %.1e)\n", max_diff, max_ref,
           1e-4 * max_ref);
    int ok = max_diff <= 1e-4 * max_ref && max_ref > 0 && distinct >= min_distinct;
    if (distinct < min_distinct) printf("  only %d distinct tokens: the model does not behave like a trained one\n", distinct);
    printf("  %s\n", ok ? "ok" : "FAIL");
    free(seen); free(toks); free(lref); free(ref.data); model_free(&m);
    return ok;
}

int main(void) {
    char dir[] = "/tmp/test_llama2c.XXXXXX", path[512];
    if (!mkdtemp(dir)) die("mkdtemp failed");
    int ok = 1;

    // synthetic: separate classifier (negative vocab), grouped-query attention, head_dim 12
    int32_t h[7] = {48, 80, 2, 4, 2, -40, 32};
    snprintf(path, sizeof path, "%s/random.l2c", dir);
    write_random_llama2c(path, h);
    ok &= compare("random llama2.c model", path, dir, 24, 1);

    const char *src = "../shared/data/stories260K/stories260K.bin";
    if (file_exists(src)) ok &= compare("stories260K", src, dir, 64, 9);
    else printf("skipped: stories260K (%s is absent; the shared data folder is not here)\n", src);

    char rm[600];
    snprintf(rm, sizeof rm, "rm -rf '%s'", dir);
    if (system(rm) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
    printf("%s\n", ok ? "ok" : "FAIL");
    return ok ? 0 : 1;
}
