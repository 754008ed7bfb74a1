/*
 * cuda/generate.cu: generation and zero-shot scoring on the GPU: a KV cache, the decode step,
 * log-likelihoods. train.c's generate() and eval.c's qa_score stay on the host (prompts,
 * tokenization, sampling and its RNG, tasks, metrics, files) and ask train.c's InferenceBackend
 * for the model's numbers; train_cu_host.c points that at GPU_INFERENCE below. As in train.c,
 * each decode step runs the model on one position per sequence (N = B rows), and only attention
 * reads the cache.
 * #included by train.cu after its Model (section 10), as train.c includes lib/generate.c.
 * Needs: train.cu's Model, layers and forward (model_forward, model_quantize, model_cast_bf16,
 * matmul_residual_norm), attention.cuh (attention_decode), loss.cuh (crossentropy_forward).
 */

typedef struct {
    int B, T;             // sequences, positions the cache holds now
    float *k, *v;         // [L, B, T, KV*hd] each, one allocation
    float *cosv, *sinv;   // RoPE tables for positions 0..T-1, [T, hd/2] each, one allocation
    float *scores;        // [B, H, T] attention scratch
    float *logits;        // host (pinned) [B, V]: the decode step's answer
    int64_t cap_kv, cap_rope, cap_scores, cap_logits;  // floats allocated at k, cosv, scores, logits
} KVCache;

// Sizes the cache for B sequences of T positions. generate_data calls this once per batch of
// prompts, so the buffers are kept and only grow.
static void kv_alloc(KVCache *kv, const Model *m, int B, int T) {
    const HostModel *c = m->h;
    int64_t n = (int64_t)c->n_layers * B * T * c->n_kv_heads * c->head_dim, half = (int64_t)T * c->head_dim / 2;
    kv->B = B; kv->T = T;
    gpu_grow(&kv->k, &kv->cap_kv, 2 * n, "KV cache");  // k, then v
    kv->v = kv->k + n;
    gpu_grow(&kv->cosv, &kv->cap_rope, 2 * half, "KV cache");
    kv->sinv = kv->cosv + half;
    gpu_grow(&kv->scores, &kv->cap_scores, (int64_t)B * c->n_heads * T, "KV cache");
    if ((int64_t)B * c->vocab_size > kv->cap_logits) {
        if (kv->logits) cudaCheck(cudaFreeHost(kv->logits));
        kv->cap_logits = (int64_t)B * c->vocab_size;
        cudaCheck(cudaMallocHost((void **)&kv->logits, (size_t)kv->cap_logits * sizeof(float)));
    }
    float *cs = (float *)malloc((size_t)(2 * half) * sizeof(float));
    if (!cs) fail("out of host memory for the RoPE tables");
    host_rope_tables(cs, cs + half, c, T);
    cudaCheck(cudaMemcpy(kv->cosv, cs, (size_t)half * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(kv->sinv, cs + half, (size_t)half * sizeof(float), cudaMemcpyHostToDevice));
    free(cs);
}

static void kv_free(KVCache *kv) {
    gpu_free(kv->k); gpu_free(kv->cosv); gpu_free(kv->scores);
    if (kv->logits) cudaCheck(cudaFreeHost(kv->logits));
    memset(kv, 0, sizeof *kv);
}

// Runs tokens[B] (host) at position pos, every sequence at the same position, appending their
// keys and values to the cache; the next-token logits [B,V] land in m->logits (train.c's
// model_decode_step, launcher for function).
static void model_decode_step(Model *m, KVCache *kv, const int *tokens, int pos) {
    const HostModel *c = m->h;
    int B = kv->B, D = c->dim, F = c->hidden_dim, V = c->vocab_size, H = c->n_heads,
        KV = c->n_kv_heads, hd = c->head_dim, Hq = H * hd, Hkv = KV * hd, half = hd / 2;
    if (pos >= kv->T) fail("generation: position %d beyond the cache (%d)", pos, kv->T);
    if (m->quant_stale) model_quantize(m);
    if (g_bf16 && (m->bf16_stale || !m->wbf)) model_cast_bf16(m);
    if (!g_bf16 && m->bf16_only) fail("internal: a bf16-only model run without --matmul bf16");
    model_alloc_acts(m, B, 1, 0);  // inference activations for B rows of one position
    for (int b = 0; b < B; b++)
        if (tokens[b] < 0 || tokens[b] >= V) fail("token id %d out of range [0, %d)", tokens[b], V);
    cudaCheck(cudaMemcpy(m->inputs, tokens, (size_t)B * sizeof(int), cudaMemcpyHostToDevice));
    float *x = m->act[A_RESID], *q = m->act[A_Q], *k = m->act[A_K], *v = m->act[A_V];
    Act xn = act_in(m, A_XN1, 0), hmid = act_in(m, A_HMID, 0), att = act_in(m, A_ATT, 0),
        gate = act_in(m, A_GATE, 0), up = act_in(m, A_UP, 0);
    const float *cosp = kv->cosv + (int64_t)pos * half, *sinp = kv->sinv + (int64_t)pos * half;
    if (m->fwd_t[T_EMBED]) embedding_forward(x, m->inputs, m->fwd_t[T_EMBED], B, D);
    else embedding_forward(x, m->inputs, m->wbf_t[T_EMBED], B, D);  // a bf16-only model
    rmsnorm_forward(xn, m->act[A_RSTD1], x, layer_tensor(m->fwd_t, m, T_ATTN_NORM, 0), B, D, c->rms_norm_eps);
    for (int l = 0; l < c->n_layers; l++) {  // xn = rmsnorm(x) for the attention block, as layer_forward
        float *kc = kv->k + (int64_t)l * B * kv->T * Hkv, *vc = kv->v + (int64_t)l * B * kv->T * Hkv;
        model_layer_weights(m, l);
        matmul_forward(q, xn, weight(m, T_WQ, l), B, D, Hq);
        matmul_forward(k, xn, weight(m, T_WK, l), B, D, Hkv);
        matmul_forward(v, xn, weight(m, T_WV, l), B, D, Hkv);
        rope_forward(q, cosp, sinp, B, 1, H, hd);
        rope_forward(k, cosp, sinp, B, 1, KV, hd);
        // row b of k and v to cache row (b, pos): B rows of Hkv floats, strided by T * Hkv
        size_t row = (size_t)Hkv * sizeof(float), pitch = (size_t)kv->T * row;
        cudaCheck(cudaMemcpy2DAsync(kc + (int64_t)pos * Hkv, pitch, k, row, row, B, cudaMemcpyDeviceToDevice));
        cudaCheck(cudaMemcpy2DAsync(vc + (int64_t)pos * Hkv, pitch, v, row, row, B, cudaMemcpyDeviceToDevice));
        attention_decode(att, kv->scores, q, kc, vc, B, kv->T, pos, H, KV, hd);
        Norm norm2 = {xn, m->act[A_RSTD2], layer_tensor(m->fwd_t, m, T_MLP_NORM, l)};
        matmul_residual_norm(x, x, att, weight(m, T_WO, l), B, Hq, D, norm2, c->rms_norm_eps);  // in place, as layer_forward without a backward
        matmul_forward(gate, xn, weight(m, T_WGATE, l), B, D, F);
        matmul_forward(up, xn, weight(m, T_WUP, l), B, D, F);
        swiglu_forward(hmid, gate, up, (int64_t)B * F);
        matmul_residual_norm(x, x, hmid, weight(m, T_WDOWN, l), B, F, D, norm_after_layer(m, l), c->rms_norm_eps);
    }
    matmul_forward(model_logits(m, B), m->act[A_XNF], weight(m, lm_head_tensor(m), 0), B, D, V);
}

// lp[n] = log softmax(z_n)[target_n] for the positions of inputs[B,T] with a target: the
// forward, then crossentropy_forward_kernel's rows (-lp[n]; rows without a target get 0), so
// that only B*T numbers, never the B*T*V logits, come back to the host.
static void target_logprobs(Model *m, const int *inputs, const int *targets, int B, int T, double *lp) {
    int N = B * T;
    model_forward(m, inputs, NULL, B, T);
    cudaCheck(cudaMemcpy(m->targets, targets, (size_t)N * sizeof(int), cudaMemcpyHostToDevice));
    crossentropy_forward(m->rows, m->logits, m->targets, N, m->h->vocab_size);
    cudaCheck(cudaMemcpy(lp, m->rows, (size_t)N * sizeof(double), cudaMemcpyDeviceToHost));
    for (int n = 0; n < N; n++) lp[n] = -lp[n];
}

// What train.c's generation and scoring call (train_cu.h's HostInference), on the model g_infer.
static Model *g_infer;
static KVCache g_kv;

static void gpu_decode_begin(int B, int T) { kv_alloc(&g_kv, g_infer, B, T); }
static const float *gpu_decode_step(const int *tokens, int pos) {
    model_decode_step(g_infer, &g_kv, tokens, pos);
    cudaCheck(cudaMemcpy(g_kv.logits, g_infer->logits, (size_t)g_kv.B * g_infer->h->vocab_size * sizeof(float),
                         cudaMemcpyDeviceToHost));
    return g_kv.logits;
}
static void gpu_decode_end(void) {}  // the cache is kept for the next batch of prompts
static void gpu_target_logprobs(const int *inputs, const int *targets, int B, int T, double *lp) {
    target_logprobs(g_infer, inputs, targets, B, T, lp);
}
static const HostInference GPU_INFERENCE = {gpu_decode_begin, gpu_decode_step, gpu_decode_end, gpu_target_logprobs};
