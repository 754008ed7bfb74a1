// dev/hf_fixture.c — writes small Hugging Face Llama folders (and llama2.c files), valid or
// broken on purpose, for tests/convert_*.sh. Built by those tests: cc -o hf_fixture dev/hf_fixture.c -lm
//
//   hf_fixture DIR [options]             a tiny random LlamaForCausalLM folder
//     --form classic|v5      config.json form: rope_theta/rope_scaling/torch_dtype, or
//                            transformers >= 5's rope_parameters/dtype       [classic]
//     --dtype F32|BF16|F16   tensor dtype in the safetensors                [F32]
//     --shards N             N shard files + model.safetensors.index.json   [1: one file]
//     --tied 0|1             tie_word_embeddings                            [0]
//     --rope none|llama3     RoPE scaling                                   [none]
//     --head-dim N           an explicit head_dim (else hidden_size / heads)
//     --extra                also write tensors the converter must ignore: rotary_emb.inv_freq
//                            per layer, and (when tied) an lm_head.weight that differs from
//                            the embedding
//     --seed N               [1]
//     --expect PATH          the .bin the converter must write by default (bf16 for a 16-bit
//                            checkpoint, f32 otherwise), through model.h's model_save
//     --expect-f32 PATH      the .bin it must write with --dtype f32
//     --set KEY=JSON         set (or add) a config.json key to a raw JSON value
//     --unset KEY            leave a config.json key out
//     --break KIND           write a broken safetensors file (see break_kinds below)
//   hf_fixture --llama2c FILE dim hidden layers heads kv_heads vocab seq_len [--cut N] [--add N]
//                          a llama2.c checkpoint of random weights (vocab < 0: separate
//                          classifier), N bytes shorter / longer than its header implies
//
// The safetensors writer here shares no code with safetensors.h: header text, tensor order
// (shuffled) and 16-bit encodings are its own. Every weight is k/64 with |k| <= 64, exact in
// F32, BF16 and F16 alike, so the expected .bin is known exactly whatever the stored dtype.
#include "../lib/model.h"

static const char *break_kinds =
    "overlap oob hlen sizemismatch truncate hole trailing dup baddtype badheader notobject "
    "intdtype nan short drop=NAME transpose=NAME index-badjson index-missing-shard "
    "index-traversal index-wrong-shard";

static uint64_t rng_state = 1;
static uint32_t rng(void) {  // xorshift64*
    rng_state ^= rng_state >> 12; rng_state ^= rng_state << 25; rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}
static float rand_weight(void) { return (float)((int)(rng() % 129) - 64) / 64.0f; }  // k/64, |k| <= 64

// Exact 16-bit encodings of a float that needs at most 8 significant bits and lies in
// [2^-14, 2^15] in magnitude (or is 0): no rounding can happen, so the bits are unambiguous.
static uint16_t bf16_bits_exact(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if (u & 0xffff) { fprintf(stderr, "hf_fixture: %g is not exact in bf16\n", x); exit(2); }
    return (uint16_t)(u >> 16);
}
static uint16_t f16_bits_exact(float x) {
    if (x == 0) return signbit(x) ? 0x8000 : 0;
    int e;
    float m = frexpf(fabsf(x), &e);        // |x| = m * 2^e, m in [0.5, 1)
    int exp16 = e - 1 + 15;                // |x| = (2m) * 2^(e-1), 2m in [1, 2)
    float frac = (2 * m - 1) * 1024;       // the 10 stored mantissa bits
    if (exp16 < 1 || exp16 > 30 || frac != floorf(frac)) { fprintf(stderr, "hf_fixture: %g is not exact in f16\n", x); exit(2); }
    return (uint16_t)((x < 0 ? 0x8000 : 0) | exp16 << 10 | (int)frac);
}

typedef struct {
    char name[128];
    char dtype[16];
    int ndim;
    int64_t shape[2];
    float *data;
    int64_t numel;
    int shard;
} Fixture;

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) { fprintf(stderr, "hf_fixture: cannot write %s\n", path); exit(2); }
}

// Encodes one tensor's data in its dtype; returns a malloc'd buffer of *bytes bytes.
static uint8_t *encode(const Fixture *t, int64_t *bytes) {
    int esize = !strcmp(t->dtype, "F32") || !strcmp(t->dtype, "I32") ? 4 : 2;
    *bytes = t->numel * esize;
    uint8_t *b = malloc_or_die((size_t)*bytes, "tensor bytes");
    for (int64_t i = 0; i < t->numel; i++) {
        float x = t->data[i];
        if (!strcmp(t->dtype, "F32")) memcpy(b + 4 * i, &x, 4);
        else if (!strcmp(t->dtype, "I32")) { int32_t v = (int32_t)(x * 64); memcpy(b + 4 * i, &v, 4); }
        else {
            uint16_t h = !strcmp(t->dtype, "BF16") ? bf16_bits_exact(x) : f16_bits_exact(x);
            b[2 * i] = (uint8_t)h; b[2 * i + 1] = (uint8_t)(h >> 8);  // little-endian
        }
    }
    return b;
}

// One safetensors file holding tensors[idx[0..n)] in that order, broken as `brk` says.
static void write_safetensors(const char *path, Fixture *ts, const int *idx, int n, const char *brk) {
    char *h = malloc_or_die(1 << 20, "header");
    int64_t *begin = malloc_or_die(sizeof(int64_t) * (size_t)(n + 1), "offsets"), off = 0;
    uint8_t **blobs = malloc_or_die(sizeof(uint8_t *) * (size_t)(n + 1), "blobs");
    int64_t *bytes = malloc_or_die(sizeof(int64_t) * (size_t)(n + 1), "bytes");
    for (int i = 0; i < n; i++) {
        blobs[i] = encode(&ts[idx[i]], &bytes[i]);
        if (!strcmp(brk, "hole") && i == n / 2) off += 16;  // 16 bytes no tensor owns
        begin[i] = off;
        off += bytes[i];
    }
    int64_t data_len = off + (!strcmp(brk, "trailing") ? 24 : 0);
    size_t len = 0;
    len += (size_t)sprintf(h + len, "{\"__metadata__\": {\"format\": \"pt\"}");
    for (int i = 0; i < n; i++) {
        const Fixture *t = &ts[idx[i]];
        int64_t b = begin[i], e = begin[i] + bytes[i];
        int64_t s0 = t->shape[0], s1 = t->shape[1];
        const char *dtype = t->dtype;
        if (!strcmp(brk, "overlap") && i == 1) { e -= b; b = 0; }                  // starts on tensor 0
        if (!strcmp(brk, "oob") && i == n - 1) { b += 64; e += 64; }               // past the data
        if (!strcmp(brk, "sizemismatch") && i == 0) s0 += 1;                       // shape vs bytes
        if (!strcmp(brk, "baddtype") && i == 0) dtype = "F8_E4M3";
        len += (size_t)sprintf(h + len, ", \"%s\": {\"dtype\": \"%s\", \"shape\": [", t->name, dtype);
        if (t->ndim == 1) len += (size_t)sprintf(h + len, "%lld", (long long)s0);
        else len += (size_t)sprintf(h + len, "%lld, %lld", (long long)s0, (long long)s1);
        len += (size_t)sprintf(h + len, "], \"data_offsets\": [%lld, %lld]}", (long long)b, (long long)e);
        if (!strcmp(brk, "dup") && i == n - 1)  // the same name again, same range
            len += (size_t)sprintf(h + len, ", \"%s\": {\"dtype\": \"%s\", \"shape\": [%lld], \"data_offsets\": [%lld, %lld]}",
                                   t->name, dtype, (long long)t->numel, (long long)b, (long long)e);
    }
    len += (size_t)sprintf(h + len, "}");
    if (!strcmp(brk, "badheader")) h[len - 1] = ',';   // "...}," : JSON cut short
    if (!strcmp(brk, "notobject")) len = (size_t)sprintf(h, "[1, 2, 3]");
    while (len % 8) h[len++] = ' ';
    uint64_t hlen = !strcmp(brk, "hlen") ? (uint64_t)1 << 40 : len;
    size_t total = 8 + len + (size_t)data_len;
    uint8_t *file = calloc_or_die(total, 1, "file");
    for (int i = 0; i < 8; i++) file[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(file + 8, h, len);
    for (int i = 0; i < n; i++) memcpy(file + 8 + len + begin[i], blobs[i], (size_t)bytes[i]);
    if (!strcmp(brk, "truncate")) total -= 100;
    if (!strcmp(brk, "short")) total = 5;
    write_file(path, file, total);
    for (int i = 0; i < n; i++) free(blobs[i]);
    free(file); free(h); free(begin); free(blobs); free(bytes);
}

// ---------------------------------------------------------------------------------------------
// config.json: an ordered list of key -> raw JSON text, edited by --set / --unset

typedef struct { char key[64]; char value[512]; } Field;
static Field fields[64];
static int n_fields = 0;

static void field_set(const char *key, const char *fmt, ...) {
    int i = 0;
    while (i < n_fields && strcmp(fields[i].key, key)) i++;
    if (i == n_fields) snprintf(fields[n_fields++].key, 64, "%s", key);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fields[i].value, sizeof fields[i].value, fmt, ap);
    va_end(ap);
}

static void field_unset(const char *key) {
    for (int i = 0; i < n_fields; i++)
        if (!strcmp(fields[i].key, key)) { memmove(&fields[i], &fields[i + 1], sizeof(Field) * (size_t)(n_fields - i - 1)); n_fields--; return; }
}

// ---------------------------------------------------------------------------------------------

static void llama2c(int argc, char **argv) {
    if (argc < 10) { fprintf(stderr, "usage: hf_fixture --llama2c FILE dim hidden layers heads kv vocab seq [--cut N] [--add N]\n"); exit(2); }
    int32_t h[7];
    for (int i = 0; i < 7; i++) h[i] = (int32_t)atol(argv[3 + i]);
    long cut = 0, add = 0;
    for (int i = 10; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--cut")) cut = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--add")) add = atol(argv[i + 1]);
    }
    int64_t D = h[0], F = h[1], L = h[2], H = h[3], KV = h[4], V = labs(h[5]), S = h[6];
    int64_t n = 0;
    if (D > 0 && F > 0 && L > 0 && H > 0 && KV > 0 && V > 0 && S > 0 && D % H == 0 && D < 4096 && F < 16384 && L < 64 && V < 70000 && S < 8192) {
        int64_t hd = D / H;
        n = V * D + L * D + L * D * D + 2 * L * KV * hd * D + L * D * D + L * D + 3 * L * F * D + D + S * hd + (h[5] < 0 ? V * D : 0);
    } else {
        n = 1000;  // an implausible header: some bytes after it, the converter must refuse before using them
    }
    size_t bytes = 28 + (size_t)n * 4 + (size_t)add;
    if ((size_t)cut > bytes) cut = (long)bytes;
    uint8_t *file = calloc_or_die(bytes, 1, "llama2c");
    memcpy(file, h, 28);
    float *w = (float *)(file + 28);
    for (int64_t i = 0; i < n; i++) w[i] = rand_weight();
    write_file(argv[2], file, bytes - (size_t)cut);
    free(file);
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "--llama2c")) { llama2c(argc, argv); return 0; }
    if (argc < 2 || argv[1][0] == '-') { fprintf(stderr, "usage: see the top of dev/hf_fixture.c\n"); return 2; }
    const char *dir = argv[1], *form = "classic", *dtype = "F32", *rope = "none", *brk = "", *expect = NULL, *expect32 = NULL;
    int shards = 1, tied = 0, head_dim = 0, extra = 0;
    char *sets[32], *unsets[32];
    int n_sets = 0, n_unsets = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--extra")) { extra = 1; continue; }
        if (!v) { fprintf(stderr, "hf_fixture: %s needs a value\n", a); return 2; }
        i++;
        if (!strcmp(a, "--form")) form = v;
        else if (!strcmp(a, "--dtype")) dtype = v;
        else if (!strcmp(a, "--shards")) shards = atoi(v);
        else if (!strcmp(a, "--tied")) tied = atoi(v);
        else if (!strcmp(a, "--rope")) rope = v;
        else if (!strcmp(a, "--head-dim")) head_dim = atoi(v);
        else if (!strcmp(a, "--seed")) rng_state = 0x9e3779b97f4a7c15ull * (uint64_t)(atoi(v) + 1);
        else if (!strcmp(a, "--expect")) expect = v;
        else if (!strcmp(a, "--expect-f32")) expect32 = v;
        else if (!strcmp(a, "--set") && n_sets < 32) sets[n_sets++] = argv[i];
        else if (!strcmp(a, "--unset") && n_unsets < 32) unsets[n_unsets++] = argv[i];
        else if (!strcmp(a, "--break")) brk = v;
        else { fprintf(stderr, "hf_fixture: unknown option %s (breaks: %s)\n", a, break_kinds); return 2; }
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) { fprintf(stderr, "hf_fixture: cannot create %s\n", dir); return 2; }

    // the model: small, grouped-query, every size distinct so a swapped dimension shows
    ModelHeader c = header_defaults();
    c.dim = 32; c.hidden_dim = 48; c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = 2; c.vocab_size = 72;
    c.head_dim = head_dim ? head_dim : c.dim / c.n_heads;
    c.max_seq_len = 128; c.tied = tied; c.rms_norm_eps = 1e-5f; c.bos_id = 1; c.eos_id = 2;
    if (!strcmp(rope, "llama3")) {
        c.rope_theta = 500000.0f; c.rope_scaling = ROPE_LLAMA3; c.rope_factor = 8; c.rope_low_freq_factor = 1;
        c.rope_high_freq_factor = 4; c.rope_original_max_pos = 64;
    }
    int sixteen = strcmp(dtype, "F32") != 0;
    int64_t sizes[N_TENSORS];
    int64_t n = tensor_sizes(&c, sizes);
    float *params = malloc_or_die((size_t)n * sizeof(float), "params");
    for (int64_t i = 0; i < n; i++) params[i] = rand_weight();
    if (!strcmp(brk, "nan")) params[n / 2] = NAN;
    float *p[N_TENSORS];
    tensor_carve(&c, params, p);

    // the fixture's tensors, named as Hugging Face names them
    Fixture *ts = calloc_or_die(N_TENSORS * 64 + 64, sizeof(Fixture), "fixtures");
    int nt = 0;
    for (int t = 0; t < N_TENSORS; t++) {
        if (!p[t]) continue;
        int64_t rows, cols;
        tensor_slice_shape(&c, t, &rows, &cols);
        int layers = tensor_is_per_layer(t) ? c.n_layers : 1;
        for (int l = 0; l < layers; l++) {
            Fixture *f = &ts[nt++];
            snprintf(f->name, sizeof f->name, TENSOR_HF_NAMES[t], l);
            snprintf(f->dtype, sizeof f->dtype, "%s", dtype);
            int vec = rows == 1 && t != T_EMBED && t != T_LM_HEAD;
            f->ndim = vec ? 1 : 2;
            f->shape[0] = vec ? cols : rows;
            f->shape[1] = cols;
            f->data = p[t] + (int64_t)l * rows * cols;
            f->numel = rows * cols;
        }
    }
    float *junk = NULL;
    if (extra) {  // tensors the converter must ignore
        int64_t hd = c.head_dim, V = c.vocab_size, D = c.dim;
        junk = malloc_or_die(sizeof(float) * (size_t)(V * D), "junk");
        for (int64_t i = 0; i < V * D; i++) junk[i] = rand_weight();
        for (int l = 0; l < c.n_layers; l++) {
            Fixture *f = &ts[nt++];
            snprintf(f->name, sizeof f->name, "model.layers.%d.self_attn.rotary_emb.inv_freq", l);
            snprintf(f->dtype, sizeof f->dtype, "F32");
            f->ndim = 1; f->shape[0] = hd / 2; f->numel = hd / 2; f->data = junk;
        }
        if (tied) {
            Fixture *f = &ts[nt++];
            snprintf(f->name, sizeof f->name, "lm_head.weight");
            snprintf(f->dtype, sizeof f->dtype, "%s", dtype);
            f->ndim = 2; f->shape[0] = V; f->shape[1] = D; f->numel = V * D; f->data = junk;
        }
    }
    if (!strcmp(brk, "intdtype")) snprintf(ts[1].dtype, sizeof ts[1].dtype, "I32");
    if (!strncmp(brk, "transpose=", 10) || !strncmp(brk, "drop=", 5)) {
        const char *name = strchr(brk, '=') + 1;
        int k = 0;
        while (k < nt && strcmp(ts[k].name, name)) k++;
        if (k == nt) { fprintf(stderr, "hf_fixture: no tensor %s\n", name); return 2; }
        if (brk[0] == 'd') { ts[k] = ts[--nt]; }
        else { int64_t s = ts[k].shape[0]; ts[k].shape[0] = ts[k].shape[1]; ts[k].shape[1] = s; }
    }

    // shuffle the file order, deal tensors to shards round-robin
    int *order = malloc_or_die(sizeof(int) * (size_t)nt, "order");
    for (int i = 0; i < nt; i++) order[i] = i;
    for (int i = nt - 1; i > 0; i--) { int j = (int)(rng() % (uint32_t)(i + 1)), x = order[i]; order[i] = order[j]; order[j] = x; }
    if (shards < 1) shards = 1;
    char path[4096];
    int *idx = malloc_or_die(sizeof(int) * (size_t)nt, "idx");
    for (int s = 0; s < shards; s++) {
        int k = 0;
        for (int i = s; i < nt; i += shards) { idx[k++] = order[i]; ts[order[i]].shard = s; }
        if (shards == 1) snprintf(path, sizeof path, "%s/model.safetensors", dir);
        else snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", dir, s + 1, shards);
        write_safetensors(path, ts, idx, k, s == 0 ? brk : "");
    }
    if (shards > 1) {  // the index: metadata, then name -> shard file
        FILE *f = fopen(strcat(strcpy(path, dir), "/model.safetensors.index.json"), "w");
        if (!f) { fprintf(stderr, "hf_fixture: cannot write the index\n"); return 2; }
        if (!strcmp(brk, "index-badjson")) fprintf(f, "{\"weight_map\": {\"model.norm.weight\": ");
        else {
            fprintf(f, "{\n  \"metadata\": {\"total_size\": 0},\n  \"weight_map\": {");
            for (int i = 0; i < nt; i++) {
                int s = ts[i].shard + 1;
                char file[256];
                snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", s, shards);
                if (!strcmp(brk, "index-missing-shard") && i == 0) snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", 99, shards);
                if (!strcmp(brk, "index-traversal") && i == 0) snprintf(file, sizeof file, "../elsewhere/model.safetensors");
                if (!strcmp(brk, "index-wrong-shard") && !strcmp(ts[i].name, "model.norm.weight"))
                    snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", s % shards + 1, shards);
                fprintf(f, "%s\n    \"%s\": \"%s\"", i ? "," : "", ts[i].name, file);
            }
            fprintf(f, "\n  }\n}\n");
        }
        fclose(f);
    }

    // config.json
    field_set("architectures", "[\"LlamaForCausalLM\"]");
    field_set("model_type", "\"llama\"");
    field_set("hidden_size", "%d", c.dim);
    field_set("intermediate_size", "%d", c.hidden_dim);
    field_set("num_hidden_layers", "%d", c.n_layers);
    field_set("num_attention_heads", "%d", c.n_heads);
    field_set("num_key_value_heads", "%d", c.n_kv_heads);
    if (head_dim) field_set("head_dim", "%d", head_dim);
    field_set("vocab_size", "%d", c.vocab_size);
    field_set("max_position_embeddings", "%d", c.max_seq_len);
    field_set("rms_norm_eps", "1e-05");
    field_set("tie_word_embeddings", tied ? "true" : "false");
    field_set("bos_token_id", "1");
    field_set("eos_token_id", "[2, 7]");  // a list: the first is the one kept
    field_set("hidden_act", "\"silu\"");
    field_set("attention_bias", "false");
    field_set("mlp_bias", "false");
    const char *torch_dtype = !strcmp(dtype, "F32") ? "float32" : !strcmp(dtype, "BF16") ? "bfloat16" : "float16";
    char scaling[256] = "null";
    if (c.rope_scaling == ROPE_LLAMA3)
        snprintf(scaling, sizeof scaling, "\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
                 "\"original_max_position_embeddings\": 64");
    if (!strcmp(form, "v5")) {
        field_set("dtype", "\"%s\"", torch_dtype);
        if (c.rope_scaling == ROPE_LLAMA3) field_set("rope_parameters", "{\"rope_type\": \"llama3\", \"rope_theta\": 500000.0, %s}", scaling);
        else field_set("rope_parameters", "{\"rope_type\": \"default\", \"rope_theta\": 10000.0}");
    } else {
        field_set("torch_dtype", "\"%s\"", torch_dtype);
        field_set("rope_theta", c.rope_scaling == ROPE_LLAMA3 ? "500000.0" : "10000.0");
        if (c.rope_scaling == ROPE_LLAMA3) field_set("rope_scaling", "{\"rope_type\": \"llama3\", %s}", scaling);
        else field_set("rope_scaling", "null");
    }
    for (int i = 0; i < n_unsets; i++) field_unset(unsets[i]);
    for (int i = 0; i < n_sets; i++) {
        char *eq = strchr(sets[i], '=');
        if (!eq) { fprintf(stderr, "hf_fixture: --set KEY=JSON\n"); return 2; }
        *eq = 0;
        field_set(sets[i], "%s", eq + 1);
    }
    FILE *f = fopen(strcat(strcpy(path, dir), "/config.json"), "w");
    if (!f) { fprintf(stderr, "hf_fixture: cannot write config.json\n"); return 2; }
    fprintf(f, "{\n");
    for (int i = 0; i < n_fields; i++) fprintf(f, "  \"%s\": %s%s\n", fields[i].key, fields[i].value, i + 1 < n_fields ? "," : "");
    fprintf(f, "}\n");
    fclose(f);

    // what the converter must produce
    if (expect) { c.dtype = sixteen ? DTYPE_BF16 : DTYPE_F32; model_save(expect, &c, params); }
    if (expect32) { c.dtype = DTYPE_F32; model_save(expect32, &c, params); }
    free(params); free(ts); free(junk); free(order); free(idx);
    return 0;
}
