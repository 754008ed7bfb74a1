// convert.c — bring models in and out of bitdistill.c's .bin format (model.h).
//
//   ./convert HF_DIR OUT.bin [--dtype f32|bf16]    Hugging Face LlamaForCausalLM -> .bin
//   ./convert --to-hf IN.bin OUT_DIR                .bin -> config.json + model.safetensors
//   ./convert --from-llama2c IN.bin OUT.bin         llama2.c legacy checkpoint -> .bin
//
// Hugging Face folders: config.json, and model.safetensors or model.safetensors.index.json with
// its shards; tensors F32, BF16 or F16. config.json may be in the classic form (rope_theta,
// rope_scaling, torch_dtype) or the transformers >= 5 form (rope_parameters, dtype).
#include "model.h"
#include "safetensors.h"

#define MAX_SHARDS 256

static void usage(void) {
    printf("usage:\n"
           "  ./convert HF_DIR OUT.bin [--dtype f32|bf16]   import a Hugging Face Llama (default dtype:\n"
           "                                               bf16 if the checkpoint is 16-bit, else f32)\n"
           "  ./convert --to-hf IN.bin OUT_DIR              export config.json + model.safetensors\n"
           "  ./convert --from-llama2c IN.bin OUT.bin       import a llama2.c checkpoint\n");
}

static void join_path(char *out, size_t n, const char *dir, const char *name) {
    if ((size_t)snprintf(out, n, "%s/%s", dir, name) >= n) die("%s: path too long", dir);
}

// ---------------------------------------------------------------------------------------------
// config.json -> ModelHeader

static int config_int(const Json *cfg, const char *key, int dflt, const char *path, int required) {
    const Json *v = json_get(cfg, key);
    if (!v || v->type == JSON_NULL) {
        if (required) die("%s: missing \"%s\"", path, key);
        return dflt;
    }
    if (v->type != JSON_NUMBER || v->number != (double)(int)v->number) die("%s: \"%s\" must be an integer", path, key);
    return (int)v->number;
}

// bos/eos ids may be an integer, a list (the first is taken) or null.
static int config_token_id(const Json *cfg, const char *key) {
    const Json *v = json_get(cfg, key);
    if (v && v->type == JSON_ARRAY && v->n > 0) v = &v->items[0];
    return v && v->type == JSON_NUMBER ? (int)v->number : -1;
}

static const char *config_dtype(const Json *cfg) {
    const char *d = json_get_string(cfg, "torch_dtype");
    return d ? d : json_get_string(cfg, "dtype");
}

static ModelHeader read_config(const char *dir) {
    char path[4096];
    join_path(path, sizeof path, dir, "config.json");
    size_t len;
    char *text = read_file_or_die(path, &len);
    char err[256];
    Json *cfg = json_parse(text, len, err, sizeof err);
    free(text);
    if (!cfg) die("%s: malformed JSON: %s", path, err);
    if (cfg->type != JSON_OBJECT) die("%s: not a JSON object", path);

    // only Llama causal LMs
    const char *type = json_get_string(cfg, "model_type");
    if (!type || strcmp(type, "llama") != 0) die("%s: model_type is \"%s\", only \"llama\" is supported", path, type ? type : "(missing)");
    const Json *arch = json_get(cfg, "architectures");
    if (arch && arch->type == JSON_ARRAY) {
        int found = 0;
        for (int i = 0; i < arch->n; i++)
            found |= arch->items[i].type == JSON_STRING && !strcmp(arch->items[i].string, "LlamaForCausalLM");
        if (!found) die("%s: architectures does not include LlamaForCausalLM", path);
    }
    const Json *b1 = json_get(cfg, "attention_bias"), *b2 = json_get(cfg, "mlp_bias");
    if ((b1 && b1->type == JSON_BOOL && b1->number) || (b2 && b2->type == JSON_BOOL && b2->number))
        die("%s: attention_bias / mlp_bias are not supported", path);
    const char *act = json_get_string(cfg, "hidden_act");
    if (act && strcmp(act, "silu") != 0) die("%s: hidden_act \"%s\", only silu is supported", path, act);

    ModelHeader c = header_defaults();
    c.dim = config_int(cfg, "hidden_size", 0, path, 1);
    c.hidden_dim = config_int(cfg, "intermediate_size", 0, path, 1);
    c.n_layers = config_int(cfg, "num_hidden_layers", 0, path, 1);
    c.n_heads = config_int(cfg, "num_attention_heads", 0, path, 1);
    c.n_kv_heads = config_int(cfg, "num_key_value_heads", c.n_heads, path, 0);
    c.vocab_size = config_int(cfg, "vocab_size", 0, path, 1);
    c.max_seq_len = config_int(cfg, "max_position_embeddings", 2048, path, 0);
    if (c.n_heads <= 0) die("%s: num_attention_heads must be positive", path);
    c.head_dim = config_int(cfg, "head_dim", c.dim / c.n_heads, path, 0);
    const Json *tie = json_get(cfg, "tie_word_embeddings");
    c.tied = tie && tie->type == JSON_BOOL && tie->number;
    c.rms_norm_eps = (float)json_get_number(cfg, "rms_norm_eps", 1e-6);
    c.bos_id = config_token_id(cfg, "bos_token_id");
    c.eos_id = config_token_id(cfg, "eos_token_id");

    // RoPE: classic (rope_theta + rope_scaling) or transformers >= 5 (rope_parameters)
    const Json *rp = json_get(cfg, "rope_parameters");
    const Json *scaling = rp && rp->type == JSON_OBJECT ? rp : json_get(cfg, "rope_scaling");
    c.rope_theta = (float)json_get_number(rp && rp->type == JSON_OBJECT ? rp : cfg, "rope_theta",
                                          json_get_number(cfg, "rope_theta", 10000.0));
    if (scaling && scaling->type == JSON_OBJECT) {
        const char *rt = json_get_string(scaling, "rope_type");
        if (!rt) rt = json_get_string(scaling, "type");
        if (rt && !strcmp(rt, "llama3")) {
            c.rope_scaling = ROPE_LLAMA3;
            c.rope_factor = (float)json_get_number(scaling, "factor", 0);
            c.rope_low_freq_factor = (float)json_get_number(scaling, "low_freq_factor", 0);
            c.rope_high_freq_factor = (float)json_get_number(scaling, "high_freq_factor", 0);
            c.rope_original_max_pos = (int)json_get_number(scaling, "original_max_position_embeddings", 0);
        } else if (rt && strcmp(rt, "default") != 0) {
            die("%s: rope type \"%s\" is not supported (only default and llama3)", path, rt);
        }
    } else if (scaling && scaling->type != JSON_NULL) {
        die("%s: rope_scaling must be an object or null", path);
    }
    const char *dt = config_dtype(cfg);
    c.dtype = dt && (!strcmp(dt, "bfloat16") || !strcmp(dt, "float16")) ? DTYPE_BF16 : DTYPE_F32;
    json_free(cfg);
    const char *why = header_problem(&c);
    if (why) die("%s: %s", path, why);
    return c;
}

// ---------------------------------------------------------------------------------------------
// Hugging Face weights -> parameter buffer

typedef struct {
    int n;
    SafeTensors files[MAX_SHARDS];
} Shards;

static void open_shards(Shards *s, const char *dir) {
    char path[4096];
    s->n = 0;
    join_path(path, sizeof path, dir, "model.safetensors");
    if (file_exists(path)) { st_open(&s->files[s->n++], path); return; }
    join_path(path, sizeof path, dir, "model.safetensors.index.json");
    if (!file_exists(path)) die("%s: no model.safetensors or model.safetensors.index.json", dir);
    size_t len;
    char *text = read_file_or_die(path, &len);
    char err[256];
    Json *idx = json_parse(text, len, err, sizeof err);
    free(text);
    if (!idx) die("%s: malformed JSON: %s", path, err);
    const Json *map = json_get(idx, "weight_map");
    if (!map || map->type != JSON_OBJECT) die("%s: no weight_map object", path);
    for (int i = 0; i < map->n; i++) {
        const Json *f = &map->items[i];
        if (f->type != JSON_STRING || strchr(f->string, '/') || !strcmp(f->string, "..") || !f->string[0])
            die("%s: weight_map entry for '%s' is not a plain file name", path, map->keys[i]);
        int seen = 0;
        for (int k = 0; k < s->n && !seen; k++) {
            const char *base = strrchr(s->files[k].path, '/');
            seen = !strcmp(base ? base + 1 : s->files[k].path, f->string);
        }
        if (seen) continue;
        if (s->n == MAX_SHARDS) die("%s: more than %d shards", path, MAX_SHARDS);
        char shard[4096];
        join_path(shard, sizeof shard, dir, f->string);
        st_open(&s->files[s->n++], shard);
    }
    json_free(idx);
}

static const StTensor *find_tensor(const Shards *s, const char *name, const SafeTensors **file) {
    for (int i = 0; i < s->n; i++) {
        const StTensor *t = st_find(&s->files[i], name);
        if (t) { *file = &s->files[i]; return t; }
    }
    return NULL;
}

// Reads every tensor of the table, checking each shape against the config.
static float *read_hf_weights(const char *dir, ModelHeader *c) {
    Shards *s = calloc_or_die(1, sizeof(Shards), "shards");
    open_shards(s, dir);
    int64_t sizes[N_TENSORS];
    int64_t n = tensor_sizes(c, sizes);
    float *params = malloc_or_die((size_t)n * sizeof(float), "parameters");
    float *ptrs[N_TENSORS];
    tensor_carve(c, params, ptrs);
    int sixteen = 0;
    for (int t = 0; t < N_TENSORS; t++) {
        if (!ptrs[t]) continue;  // lm_head of a tied model
        int64_t rows, cols;
        tensor_slice_shape(c, t, &rows, &cols);
        int layers = tensor_is_per_layer(t) ? c->n_layers : 1;
        for (int l = 0; l < layers; l++) {
            char name[256];
            snprintf(name, sizeof name, TENSOR_HF_NAMES[t], l);
            const SafeTensors *file;
            const StTensor *st = find_tensor(s, name, &file);
            if (!st) die("%s: tensor '%s' not found", dir, name);
            int is_vec = rows == 1 && t != T_EMBED && t != T_LM_HEAD;
            int ok = is_vec ? st->ndim == 1 && st->shape[0] == cols
                            : st->ndim == 2 && st->shape[0] == rows && st->shape[1] == cols;
            if (!ok) {
                char found[128] = "";
                for (int d = 0; d < st->ndim; d++)
                    snprintf(found + strlen(found), sizeof found - strlen(found), "%s%lld", d ? ", " : "", (long long)st->shape[d]);
                if (is_vec) die("%s: tensor '%s' has shape [%s], config.json implies [%lld]", file->path, name, found, (long long)cols);
                die("%s: tensor '%s' has shape [%s], config.json implies [%lld, %lld]", file->path, name, found, (long long)rows, (long long)cols);
            }
            sixteen |= st->dtype == ST_BF16 || st->dtype == ST_F16;
            st_read_f32(file, st, ptrs[t] + (int64_t)l * rows * cols);
        }
    }
    for (int i = 0; i < s->n; i++) st_close(&s->files[i]);
    free(s);
    c->dtype = sixteen ? DTYPE_BF16 : DTYPE_F32;
    return params;
}

static void import_hf(const char *dir, const char *out, int dtype) {
    ModelHeader c = read_config(dir);
    float *params = read_hf_weights(dir, &c);
    if (dtype >= 0) c.dtype = dtype;
    int64_t sizes[N_TENSORS];
    int64_t n = tensor_sizes(&c, sizes);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(params[i])) die("%s: weight %lld is NaN or Inf", dir, (long long)i);
    model_save(out, &c, params);
    printf("wrote %s: %lld parameters, %s, dim %d, %d layers, %d heads (%d kv), vocab %d%s\n", out, (long long)n,
           c.dtype == DTYPE_BF16 ? "bf16" : "f32", c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size,
           c.rope_scaling == ROPE_LLAMA3 ? ", llama3 rope scaling" : "");
    printf("{\"out\": \"%s\", \"params\": %lld}\n", out, (long long)n);
    free(params);
}

// ---------------------------------------------------------------------------------------------
// .bin -> Hugging Face folder

static void export_hf(const char *in, const char *dir) {
    // the stored dtype decides the safetensors dtype
    FILE *f = fopen_or_die(in, "rb");
    ModelHeader stored;
    if (fread(&stored, sizeof stored, 1, f) != 1) die("%s: truncated file (smaller than the header)", in);
    fclose(f);
    ModelHeader c;
    float *params = model_load(in, &c);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) die("%s: cannot create folder (%s)", dir, strerror(errno));

    char path[4096];
    join_path(path, sizeof path, dir, "config.json");
    char cfg[4096], rope[512] = "null";
    if (c.rope_scaling == ROPE_LLAMA3)
        snprintf(rope, sizeof rope, "{\"rope_type\": \"llama3\", \"factor\": %.9g, \"low_freq_factor\": %.9g, "
                 "\"high_freq_factor\": %.9g, \"original_max_position_embeddings\": %d}",
                 c.rope_factor, c.rope_low_freq_factor, c.rope_high_freq_factor, c.rope_original_max_pos);
    char bos[16] = "null", eos[16] = "null";
    if (c.bos_id >= 0) snprintf(bos, sizeof bos, "%d", c.bos_id);
    if (c.eos_id >= 0) snprintf(eos, sizeof eos, "%d", c.eos_id);
    int n = snprintf(cfg, sizeof cfg,
        "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n"
        "  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n"
        "  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n  \"head_dim\": %d,\n"
        "  \"vocab_size\": %d,\n  \"max_position_embeddings\": %d,\n  \"rms_norm_eps\": %.9g,\n"
        "  \"rope_theta\": %.9g,\n  \"rope_scaling\": %s,\n  \"tie_word_embeddings\": %s,\n"
        "  \"bos_token_id\": %s,\n  \"eos_token_id\": %s,\n  \"torch_dtype\": \"%s\",\n"
        "  \"hidden_act\": \"silu\",\n  \"attention_bias\": false,\n  \"mlp_bias\": false,\n"
        "  \"initializer_range\": 0.02\n}\n",
        c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab_size, c.max_seq_len,
        c.rms_norm_eps, c.rope_theta, rope, c.tied ? "true" : "false", bos, eos,
        stored.dtype == DTYPE_BF16 ? "bfloat16" : "float32");
    AtomicFile a;
    atomic_open(&a, path);
    atomic_write(&a, cfg, (size_t)n);
    atomic_commit(&a);

    // one safetensors entry per table tensor and layer
    float *ptrs[N_TENSORS];
    tensor_carve(&c, params, ptrs);
    int cap = N_TENSORS * c.n_layers, count = 0;
    char **names = calloc_or_die((size_t)cap, sizeof(char *), "names");
    const float **data = calloc_or_die((size_t)cap, sizeof(float *), "data");
    int64_t (*shapes)[ST_MAX_DIMS] = calloc_or_die((size_t)cap, sizeof *shapes, "shapes");
    int *ndims = calloc_or_die((size_t)cap, sizeof(int), "ndims");
    for (int t = 0; t < N_TENSORS; t++) {
        if (!ptrs[t]) continue;
        int64_t rows, cols;
        tensor_slice_shape(&c, t, &rows, &cols);
        int layers = tensor_is_per_layer(t) ? c.n_layers : 1, is_vec = rows == 1 && t != T_EMBED && t != T_LM_HEAD;
        for (int l = 0; l < layers; l++) {
            names[count] = malloc_or_die(256, "name");
            snprintf(names[count], 256, TENSOR_HF_NAMES[t], l);
            data[count] = ptrs[t] + (int64_t)l * rows * cols;
            ndims[count] = is_vec ? 1 : 2;
            shapes[count][0] = is_vec ? cols : rows;
            shapes[count][1] = cols;
            count++;
        }
    }
    join_path(path, sizeof path, dir, "model.safetensors");
    st_write(path, count, (const char *const *)names, data, (const int64_t(*)[ST_MAX_DIMS])shapes, ndims,
             stored.dtype == DTYPE_BF16 ? ST_BF16 : ST_F32);
    printf("wrote %s/config.json and %s/model.safetensors (%d tensors)\n", dir, dir, count);
    printf("{\"out\": \"%s\", \"tensors\": %d}\n", dir, count);
    for (int i = 0; i < count; i++) free(names[i]);
    free(names); free(data); free(shapes); free(ndims); free(params);
}

// ---------------------------------------------------------------------------------------------
// llama2.c legacy checkpoints
//
// Header: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len); a
// negative vocab_size means the classifier is stored separately at the end. Then fp32:
// token_embedding [V,D], rms_att [L,D], wq [L,D,D], wk [L,KV*hd,D], wv [L,KV*hd,D],
// wo [L,D,D], rms_ffn [L,D], w1 [L,F,D], w2 [L,D,F], w3 [L,F,D], rms_final [D],
// freq_cis_real and freq_cis_imag [seq, hd/2] each (skipped), then wcls [V,D] if not shared.
// w1 is the gate, w3 the up projection, w2 the down projection.
//
// Meta's RoPE rotates interleaved pairs (2i, 2i+1) of each head; Hugging Face's rotates
// (i, i + hd/2). Permuting the rows of wq and wk per head, HF row i <- Meta row 2i and
// HF row i + hd/2 <- Meta row 2i + 1, makes the two compute the same attention.

static void unpermute_rope_rows(float *w, int n_heads, int hd, int cols) {
    float *tmp = malloc_or_die((size_t)hd * cols * sizeof(float), "permute");
    for (int h = 0; h < n_heads; h++) {
        float *head = w + (int64_t)h * hd * cols;
        for (int i = 0; i < hd / 2; i++) {
            memcpy(tmp + (int64_t)i * cols, head + (int64_t)(2 * i) * cols, (size_t)cols * sizeof(float));
            memcpy(tmp + (int64_t)(i + hd / 2) * cols, head + (int64_t)(2 * i + 1) * cols, (size_t)cols * sizeof(float));
        }
        memcpy(head, tmp, (size_t)hd * cols * sizeof(float));
    }
    free(tmp);
}

static void import_llama2c(const char *in, const char *out) {
    FILE *f = fopen_or_die(in, "rb");
    int64_t fsize = file_size_or_die(f, in);
    int32_t h[7];
    if (fsize < 28) die("%s: truncated file (no llama2.c header)", in);
    fread_exact(h, sizeof h, f, in);
    ModelHeader c = header_defaults();
    c.dim = h[0]; c.hidden_dim = h[1]; c.n_layers = h[2]; c.n_heads = h[3]; c.n_kv_heads = h[4];
    c.vocab_size = h[5] < 0 ? -h[5] : h[5]; c.max_seq_len = h[6];
    c.tied = h[5] > 0;
    c.bos_id = 1; c.eos_id = 2;
    if (c.n_heads <= 0 || c.dim <= 0 || c.dim % c.n_heads) die("%s: dim %d is not a multiple of n_heads %d", in, c.dim, c.n_heads);
    c.head_dim = c.dim / c.n_heads;
    const char *why = header_problem(&c);
    if (why) die("%s: %s", in, why);
    int64_t sizes[N_TENSORS];
    int64_t n = tensor_sizes(&c, sizes);
    int64_t freq = 2 * (int64_t)c.max_seq_len * (c.head_dim / 2);
    int64_t want = 28 + 4 * (n + freq);
    if (fsize != want)
        die("%s: %lld bytes, but its header implies %lld (dim %d, hidden %d, %d layers, %d heads, %d kv heads, vocab %d%s)",
            in, (long long)fsize, (long long)want, c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size,
            c.tied ? ", shared classifier" : "");
    float *params = malloc_or_die((size_t)n * sizeof(float), "parameters");
    float *p[N_TENSORS];
    tensor_carve(&c, params, p);
    // the file order differs from the table's (w1 w2 w3 = gate down up)
    int order[] = {T_EMBED, T_ATTN_NORM, T_WQ, T_WK, T_WV, T_WO, T_MLP_NORM, T_WGATE, T_WDOWN, T_WUP, T_FINAL_NORM};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) fread_exact(p[order[i]], (size_t)sizes[order[i]] * 4, f, in);
    if (fseek(f, (long)(freq * 4), SEEK_CUR) != 0) die("%s: cannot seek", in);
    if (!c.tied) fread_exact(p[T_LM_HEAD], (size_t)sizes[T_LM_HEAD] * 4, f, in);
    fclose(f);
    for (int l = 0; l < c.n_layers; l++) {
        unpermute_rope_rows(p[T_WQ] + (int64_t)l * c.n_heads * c.head_dim * c.dim, c.n_heads, c.head_dim, c.dim);
        unpermute_rope_rows(p[T_WK] + (int64_t)l * c.n_kv_heads * c.head_dim * c.dim, c.n_kv_heads, c.head_dim, c.dim);
    }
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(params[i])) die("%s: weight %lld is NaN or Inf", in, (long long)i);
    model_save(out, &c, params);
    printf("wrote %s: %lld parameters (llama2.c: dim %d, %d layers, %d heads, %d kv heads, vocab %d)\n", out,
           (long long)n, c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size);
    printf("{\"out\": \"%s\", \"params\": %lld}\n", out, (long long)n);
    free(params);
}

int main(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) { usage(); return 0; }
    if (argc == 4 && !strcmp(argv[1], "--to-hf")) { export_hf(argv[2], argv[3]); return 0; }
    if (argc == 4 && !strcmp(argv[1], "--from-llama2c")) { import_llama2c(argv[2], argv[3]); return 0; }
    int dtype = -1;
    if (argc == 5 && !strcmp(argv[3], "--dtype")) {
        if (!strcmp(argv[4], "f32")) dtype = DTYPE_F32;
        else if (!strcmp(argv[4], "bf16")) dtype = DTYPE_BF16;
        else die("--dtype: expected f32 or bf16, got '%s'", argv[4]);
    } else if (argc != 3 || argv[1][0] == '-') {
        usage();
        die("bad arguments (see ./convert --help)");
    }
    import_hf(argv[1], argv[2], dtype);
    return 0;
}
