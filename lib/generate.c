// generate.c — text generation: a KV cache, one decode step of the model, nucleus sampling, and
// generate() for a batch of prompts (the teacher writing its own training data, data.c) and --generate.
//
// #included by train.c after the model (section 10): it uses the Model, its layers and Rng.
#ifndef GENERATE_C
#define GENERATE_C

// ============================================================================================
// Generation: a KV cache and sampling
//
// To continue a text, each new token needs attention over all earlier ones; their keys and
// values do not change, so they are kept (the KV cache) and each step runs the model on one
// position per sequence: N = B rows instead of B*T. The per-token ops are the layers above,
// called with T = 1; only attention reads the cache.

typedef struct {
    int B, T;             // sequences, positions the cache holds
    float *k, *v;         // [L, B, T, KV*hd]
    float *cosv, *sinv;   // RoPE tables for positions 0..T-1, [T, hd/2]
    float *scores;        // [B, H, T] attention scratch (the activations hold one position only)
} KVCache;

static void kv_alloc(KVCache *kv, const Model *m, int B, int T) {
    const ModelHeader *c = &m->cfg;
    int64_t n = (int64_t)c->n_layers * B * T * c->n_kv_heads * c->head_dim;
    kv->B = B; kv->T = T;
    kv->k = malloc_or_die((size_t)n * sizeof(float), "KV cache");
    kv->v = malloc_or_die((size_t)n * sizeof(float), "KV cache");
    kv->cosv = malloc_or_die((size_t)T * c->head_dim / 2 * sizeof(float), "rope");
    kv->sinv = malloc_or_die((size_t)T * c->head_dim / 2 * sizeof(float), "rope");
    kv->scores = malloc_or_die((size_t)B * c->n_heads * T * sizeof(float), "attention scores");
    rope_tables(kv->cosv, kv->sinv, c, T);
}

static void kv_free(KVCache *kv) { free(kv->k); free(kv->v); free(kv->cosv); free(kv->sinv); free(kv->scores); }

// One query per (b, h) at position pos against the cached keys/values 0..pos:
// out[B,H,hd] = sum_j softmax_j(q . k_j / sqrt(hd)) v_j, with scores[B,H,T] as scratch.
static void attention_decode(float *out, float *scores, const float *q, const float *kc, const float *vc,
                             int B, int T, int pos, int H, int KV, int hd) {
    int group = H / KV;
    float scale = 1.0f / sqrtf((float)hd);
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const float *qh = q + ((int64_t)b * H + h) * hd;
            float *s = scores + ((int64_t)b * H + h) * T, mx = -INFINITY, sum = 0.0f;
            int kvh = h / group;
            for (int j = 0; j <= pos; j++) {
                const float *kj = kc + (((int64_t)b * T + j) * KV + kvh) * hd;
                s[j] = gemm_dot(qh, kj, hd) * scale;  // (the sum attention_forward computes)
                mx = s[j] > mx ? s[j] : mx;
            }
            for (int j = 0; j <= pos; j++) { s[j] = expf(s[j] - mx); sum += s[j]; }
            float *o = out + ((int64_t)b * H + h) * hd;
            for (int i = 0; i < hd; i++) o[i] = 0.0f;
            for (int j = 0; j <= pos; j++) {
                const float *vj = vc + (((int64_t)b * T + j) * KV + kvh) * hd;
                float p = s[j] / sum;
                for (int i = 0; i < hd; i++) o[i] += p * vj[i];
            }
        }
}

// Runs tokens[B] at position pos (every sequence at the same position), appending their keys
// and values to the cache; the next-token logits [B,V] land in m->logits.
static void model_decode_step(Model *m, KVCache *kv, const int *tokens, int pos) {
    const ModelHeader *c = &m->cfg;
    int B = kv->B, D = c->dim, F = c->hidden_dim, V = c->vocab_size, H = c->n_heads,
        KV = c->n_kv_heads, hd = c->head_dim, Hq = H * hd, Hkv = KV * hd, half = hd / 2;
    if (pos >= kv->T) die("generation: position %d beyond the cache (%d)", pos, kv->T);
    if (m->quant_stale) model_quantize(m);
    model_alloc_acts(m, B, 1, 0);  // inference activations for B rows of one position
    for (int b = 0; b < B; b++)
        if (tokens[b] < 0 || tokens[b] >= V) die("token id %d out of range [0, %d)", tokens[b], V);
    float *x = m->act[A_RESID], *xn = m->act[A_XN1], *q = m->act[A_Q], *k = m->act[A_K],
          *v = m->act[A_V], *att = m->act[A_ATT], *mid = m->act[A_RESID_MID], *proj = m->act[A_PROJ],
          *gate = m->act[A_GATE], *up = m->act[A_UP], *hmid = m->act[A_HMID];
    const float *cosp = kv->cosv + (int64_t)pos * half, *sinp = kv->sinv + (int64_t)pos * half;
    embedding_forward(x, tokens, m->fwd_t[T_EMBED], B, D);
    for (int l = 0; l < c->n_layers; l++) {
        float *kc = kv->k + (int64_t)l * B * kv->T * Hkv, *vc = kv->v + (int64_t)l * B * kv->T * Hkv;
        rmsnorm_forward(xn, m->act[A_RSTD1], x, layer_tensor(m->fwd_t, m, T_ATTN_NORM, l), B, D, c->rms_norm_eps);
        act_quant(m, xn, xn, B, D);  // the linears' inputs, as layer_forward quantizes them (in place: no backward)
        matmul_forward(q, xn, layer_tensor(m->fwd_t, m, T_WQ, l), B, D, Hq);
        matmul_forward(k, xn, layer_tensor(m->fwd_t, m, T_WK, l), B, D, Hkv);
        matmul_forward(v, xn, layer_tensor(m->fwd_t, m, T_WV, l), B, D, Hkv);
        rope_forward(q, cosp, sinp, B, 1, H, hd);
        rope_forward(k, cosp, sinp, B, 1, KV, hd);
        for (int b = 0; b < B; b++) {
            memcpy(kc + ((int64_t)b * kv->T + pos) * Hkv, k + (int64_t)b * Hkv, (size_t)Hkv * sizeof(float));
            memcpy(vc + ((int64_t)b * kv->T + pos) * Hkv, v + (int64_t)b * Hkv, (size_t)Hkv * sizeof(float));
        }
        attention_decode(att, kv->scores, q, kc, vc, B, kv->T, pos, H, KV, hd);
        act_quant(m, att, att, B, Hq);
        matmul_forward(proj, att, layer_tensor(m->fwd_t, m, T_WO, l), B, Hq, D);
        residual_forward(mid, x, proj, (int64_t)B * D);
        rmsnorm_forward(xn, m->act[A_RSTD2], mid, layer_tensor(m->fwd_t, m, T_MLP_NORM, l), B, D, c->rms_norm_eps);
        act_quant(m, xn, xn, B, D);
        matmul_forward(gate, xn, layer_tensor(m->fwd_t, m, T_WGATE, l), B, D, F);
        matmul_forward(up, xn, layer_tensor(m->fwd_t, m, T_WUP, l), B, D, F);
        swiglu_forward(hmid, gate, up, (int64_t)B * F);
        act_quant(m, hmid, hmid, B, F);
        matmul_forward(proj, hmid, layer_tensor(m->fwd_t, m, T_WDOWN, l), B, F, D);
        residual_forward(x, mid, proj, (int64_t)B * D);
    }
    rmsnorm_forward(m->act[A_XNF], m->act[A_RSTDF], x, m->fwd_t[T_FINAL_NORM], B, D, c->rms_norm_eps);
    matmul_forward(m->logits, m->act[A_XNF], m->fwd_t[lm_head_tensor(m)], B, D, V);
}

// Where generate() and eval.c's scoring get the model's numbers when the model does not run
// here: NULL in ./train, which runs this file's CPU code; train_cu points it at its GPU KV cache,
// decode step and scoring kernels (cuda/generate.cu, train.cu's section 10), so that prompts,
// tokenization, sampling and its RNG, tasks, metrics and the files written stay this file's alone.
typedef struct {
    void (*decode_begin)(Model *m, int B, int T);   // an empty KV cache: B sequences, T positions
    // tokens[B] at position pos, their keys and values appended: the next-token logits [B,V]
    const float *(*decode_step)(Model *m, const int *tokens, int pos);
    void (*decode_end)(Model *m);
    // lp[n] = log softmax(the logits at n of inputs[B,T])[targets[n]] wherever targets[n] >= 0
    void (*target_logprobs)(Model *m, const int *inputs, const int *targets, int B, int T, double *lp);
} InferenceBackend;
static const InferenceBackend *inference_backend;

// Samples from softmax(z / temperature) restricted to the smallest set of tokens whose
// probability reaches top_p (nucleus sampling, Holtzman et al. 2020). temperature 0 = argmax.
// probs[V] and order[V] are scratch.
static int sample_token(const float *z, int V, float temperature, float top_p, Rng *rng, float *probs, int *order) {
    int best = 0;
    for (int i = 1; i < V; i++) best = z[i] > z[best] ? i : best;
    if (temperature <= 0.0f) return best;
    double sum = 0.0;
    for (int i = 0; i < V; i++) { probs[i] = expf((z[i] - z[best]) / temperature); sum += probs[i]; }
    for (int i = 0; i < V; i++) probs[i] = (float)(probs[i] / sum);
    int n = V;
    if (top_p < 1.0f) {
        // sort ids by probability (descending) and keep the nucleus
        for (int i = 0; i < V; i++) order[i] = i;
        for (int i = 1; i < V; i++) {  // insertion sort: V is at most a few hundred thousand,
            int id = order[i], j = i;  // and most mass sits at the front after the first swaps
            while (j > 0 && probs[order[j - 1]] < probs[id]) { order[j] = order[j - 1]; j--; }
            order[j] = id;
        }
        double cum = 0.0;
        for (n = 0; n < V && cum < top_p; n++) cum += probs[order[n]];
        double r = rng_uniform(rng) * cum, acc = 0.0;
        for (int i = 0; i < n; i++) { acc += probs[order[i]]; if (r < acc) return order[i]; }
        return order[n - 1];
    }
    double r = rng_uniform(rng), acc = 0.0;
    for (int i = 0; i < V; i++) { acc += probs[i]; if (r < acc) return i; }
    return best;
}

// Continues B prompts (ids, lengths) by up to max_new tokens each, stopping a sequence at EOS.
// All sequences advance one position per step: while a sequence is still inside its prompt it
// is fed its next prompt token, so prompts of different lengths need no padding.
// out[b] receives the new tokens (EOS excluded), out_len[b] their count.
static void generate(Model *m, int *const *prompts, const int *prompt_len, int B, int max_new,
                     float temperature, float top_p, Rng *rng, int **out, int *out_len) {
    int longest = 0, V = m->cfg.vocab_size;
    for (int b = 0; b < B; b++) longest = prompt_len[b] > longest ? prompt_len[b] : longest;
    int T = longest + max_new;
    if (T > m->cfg.max_seq_len) T = m->cfg.max_seq_len;
    const InferenceBackend *be = inference_backend;
    KVCache kv = {0};
    if (be) be->decode_begin(m, B, T);
    else kv_alloc(&kv, m, B, T);
    int *tok = malloc_or_die((size_t)B * sizeof(int), "tokens"), *done = calloc_or_die(B, sizeof(int), "done");
    float *probs = malloc_or_die((size_t)V * sizeof(float), "probs");
    int *order = malloc_or_die((size_t)V * sizeof(int), "order");
    for (int b = 0; b < B; b++) { out_len[b] = 0; tok[b] = prompt_len[b] > 0 ? prompts[b][0] : 0; }
    for (int pos = 0; pos + 1 < T; pos++) {
        const float *logits;
        if (be) logits = be->decode_step(m, tok, pos);
        else { model_decode_step(m, &kv, tok, pos); logits = m->logits; }
        int active = 0;
        for (int b = 0; b < B; b++) {
            if (pos + 1 < prompt_len[b]) { tok[b] = prompts[b][pos + 1]; active++; continue; }
            if (done[b] || out_len[b] >= max_new) { done[b] = 1; continue; }
            int next = sample_token(logits + (int64_t)b * V, V, temperature, top_p, rng, probs, order);
            if (next == m->cfg.eos_id) { done[b] = 1; continue; }
            out[b][out_len[b]++] = next;
            tok[b] = next;
            active++;
        }
        if (!active) break;
    }
    free(tok); free(done); free(probs); free(order);
    if (be) be->decode_end(m);
    else kv_free(&kv);
}

#endif
