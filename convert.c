// convert.c — bring models in and out of bitdistill.c's .bin format (model.h).
//
//   ./convert HF_DIR OUT.bin [--dtype f32|bf16]    Hugging Face LlamaForCausalLM -> .bin
//   ./convert --to-hf IN.bin OUT_DIR                .bin -> config.json + model.safetensors
//   ./convert --from-llama2c IN.bin OUT.bin         llama2.c legacy checkpoint -> .bin
//   ./convert --to-gguf IN.bin OUT.gguf             .bin -> GGUF for llama.cpp (lib/gguf.h)
//
// Hugging Face folders: config.json, and model.safetensors or model.safetensors.index.json with
// its shards; tensors F32, BF16 or F16. config.json may be in the classic form (rope_theta,
// rope_scaling, torch_dtype) or the transformers >= 5 form (rope_parameters, dtype).
//
// Decisions worth knowing:
//   - model_type must be "llama"; `architectures`, when present, must list LlamaForCausalLM.
//   - A tied model (tie_word_embeddings true) takes its LM head from the embedding. If the
//     checkpoint also holds lm_head.weight, it is ignored, as transformers' tie_weights()
//     ignores it too.
//   - Tensors the table does not name (rotary_emb.inv_freq, ...) are ignored.
//   - The .bin keeps 16-bit checkpoints (BF16 or F16 tensors) as bf16, others as f32, unless
//     --dtype says otherwise. --to-hf writes the .bin's dtype.
//   - Nothing is written until every input has been validated; outputs are written atomically.
#include "lib/model.h"
#include "lib/safetensors.h"
#include "lib/gguf.h"  // defines: Gguf, gguf_kv_*, gguf_add_tensor, ggml block encoders
#include "tokenizer.c"

#define MAX_SHARDS 256

static void usage(void) {
    printf("usage:\n"
           "  ./convert HF_DIR OUT.bin [--dtype f32|bf16]   import a Hugging Face Llama (default dtype:\n"
           "                                               bf16 if the checkpoint is 16-bit, else f32)\n"
           "  ./convert --to-hf IN.bin OUT_DIR              export config.json + model.safetensors\n"
           "  ./convert --from-llama2c IN.bin OUT.bin       import a llama2.c checkpoint\n"
           "  ./convert --to-gguf IN.bin OUT.gguf           export for llama.cpp: each linear's W^ in the ggml\n"
           "      [--tokenizer FILE] [--type T]             type that holds it (doc/gguf.md); tokenizer default\n"
           "                                               IN.bin.tokenizer; T: f32 f16 bf16 q4_0 q4_1 q5_0 q8_0\n"
           "                                               tq2_0 (default: chosen from the quantizer)\n");
}

static void join_path(char *out, size_t n, const char *dir, const char *name) {
    if ((size_t)snprintf(out, n, "%s/%s", dir, name) >= n) die("%s: path too long", dir);
}

// ---------------------------------------------------------------------------------------------
// config.json -> ModelHeader

// A field that is present must have the right type: a wrong one is an error, not a default.
static int config_int(const Json *cfg, const char *key, int dflt, const char *path, int required) {
    const Json *v = json_get(cfg, key);
    if (!v || v->type == JSON_NULL) {
        if (required) die("%s: missing \"%s\"", path, key);
        return dflt;
    }
    if (v->type != JSON_NUMBER || v->number != floor(v->number)) die("%s: \"%s\" must be an integer", path, key);
    if (!(v->number >= -2147483648.0 && v->number <= 2147483647.0))
        die("%s: \"%s\" is %.17g, out of range (a 32-bit integer)", path, key, v->number);
    return (int)v->number;
}

static double config_number(const Json *cfg, const char *key, double dflt, const char *path) {
    const Json *v = json_get(cfg, key);
    if (!v || v->type == JSON_NULL) return dflt;
    if (v->type != JSON_NUMBER) die("%s: \"%s\" must be a number", path, key);
    return v->number;
}

static int config_bool(const Json *cfg, const char *key, int dflt, const char *path) {
    const Json *v = json_get(cfg, key);
    if (!v || v->type == JSON_NULL) return dflt;
    if (v->type != JSON_BOOL) die("%s: \"%s\" must be true or false", path, key);
    return (int)v->number;
}

// bos/eos ids may be an integer, a list (the first is taken) or null (-1: unknown).
static int config_token_id(const Json *cfg, const char *key, const char *path) {
    const Json *v = json_get(cfg, key);
    if (v && v->type == JSON_ARRAY) v = v->n > 0 ? &v->items[0] : NULL;
    if (!v || v->type == JSON_NULL) return -1;
    if (v->type != JSON_NUMBER || !(v->number >= 0 && v->number <= 2147483647.0) || v->number != (double)(int)v->number)
        die("%s: \"%s\" must be a token id, a list of them, or null", path, key);
    return (int)v->number;
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
    if (config_bool(cfg, "attention_bias", 0, path)) die("%s: attention_bias true is not supported", path);
    if (config_bool(cfg, "mlp_bias", 0, path)) die("%s: mlp_bias true is not supported", path);
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
    if (!json_get(cfg, "head_dim") && c.dim % c.n_heads != 0)
        die("%s: hidden_size %d is not a multiple of num_attention_heads %d (and no head_dim given)", path, c.dim, c.n_heads);
    c.head_dim = config_int(cfg, "head_dim", c.dim / c.n_heads, path, 0);
    c.tied = config_bool(cfg, "tie_word_embeddings", 0, path);
    c.rms_norm_eps = (float)config_number(cfg, "rms_norm_eps", 1e-6, path);
    c.bos_id = config_token_id(cfg, "bos_token_id", path);
    c.eos_id = config_token_id(cfg, "eos_token_id", path);

    // RoPE: classic (rope_theta + rope_scaling) or transformers >= 5 (rope_parameters)
    const Json *rp = json_get(cfg, "rope_parameters");
    const Json *scaling = rp && rp->type == JSON_OBJECT ? rp : json_get(cfg, "rope_scaling");
    if (rp && rp->type != JSON_OBJECT && rp->type != JSON_NULL) die("%s: rope_parameters must be an object or null", path);
    c.rope_theta = (float)config_number(rp && rp->type == JSON_OBJECT ? rp : cfg, "rope_theta",
                                        config_number(cfg, "rope_theta", 10000.0, path), path);
    if (scaling && scaling->type == JSON_OBJECT) {
        const char *rt = json_get_string(scaling, "rope_type");
        if (!rt) rt = json_get_string(scaling, "type");  // the older spelling
        if (!rt && scaling != rp) die("%s: rope_scaling has no rope_type", path);
        if (rt && !strcmp(rt, "llama3")) {
            c.rope_scaling = ROPE_LLAMA3;
            c.rope_factor = (float)config_number(scaling, "factor", 0, path);
            c.rope_low_freq_factor = (float)config_number(scaling, "low_freq_factor", 0, path);
            c.rope_high_freq_factor = (float)config_number(scaling, "high_freq_factor", 0, path);
            c.rope_original_max_pos = config_int(scaling, "original_max_position_embeddings", 0, path, 0);
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

// The weights of a folder: one model.safetensors, or the shards an index names. With an index,
// its weight_map says which shard holds each tensor, and that is where it is looked up.
typedef struct {
    int n;
    SafeTensors files[MAX_SHARDS];
    Json *index;                 // model.safetensors.index.json, NULL for a single file
    const Json *weight_map;      // tensor name -> shard file name
    char index_path[4096];
} Shards;

static int shard_named(const Shards *s, const char *file) {
    for (int k = 0; k < s->n; k++) {
        const char *base = strrchr(s->files[k].path, '/');
        if (!strcmp(base ? base + 1 : s->files[k].path, file)) return k;
    }
    return -1;
}

static void open_shards(Shards *s, const char *dir) {
    char path[4096];
    join_path(path, sizeof path, dir, "model.safetensors");
    if (file_exists(path)) { st_open(&s->files[s->n++], path); return; }
    join_path(s->index_path, sizeof s->index_path, dir, "model.safetensors.index.json");
    if (!file_exists(s->index_path)) die("%s: no model.safetensors or model.safetensors.index.json", dir);
    size_t len;
    char *text = read_file_or_die(s->index_path, &len);
    char err[256];
    s->index = json_parse(text, len, err, sizeof err);
    free(text);
    if (!s->index) die("%s: malformed JSON: %s", s->index_path, err);
    s->weight_map = json_get(s->index, "weight_map");
    if (!s->weight_map || s->weight_map->type != JSON_OBJECT) die("%s: no weight_map object", s->index_path);
    for (int i = 0; i < s->weight_map->n; i++) {
        const Json *f = &s->weight_map->items[i];
        // shard names are plain file names inside the folder, never paths out of it
        if (f->type != JSON_STRING || strchr(f->string, '/') || !strcmp(f->string, "..") || !f->string[0] ||
            strlen(f->string) != f->string_len)
            die("%s: weight_map entry for '%s' is not a plain file name", s->index_path, s->weight_map->keys[i]);
        if (shard_named(s, f->string) >= 0) continue;
        if (s->n == MAX_SHARDS) die("%s: more than %d shards", s->index_path, MAX_SHARDS);
        char shard[4096];
        join_path(shard, sizeof shard, dir, f->string);
        st_open(&s->files[s->n++], shard);
    }
}

static void close_shards(Shards *s) {
    for (int i = 0; i < s->n; i++) st_close(&s->files[i]);
    json_free(s->index);
}

// The tensor called `name` and the file holding it, or NULL if the checkpoint has none.
static const StTensor *find_tensor(const Shards *s, const char *name, const SafeTensors **file) {
    if (!s->index) {
        *file = &s->files[0];
        return st_find(&s->files[0], name);
    }
    const char *shard = json_get_string(s->weight_map, name);
    if (!shard) return NULL;
    *file = &s->files[shard_named(s, shard)];
    const StTensor *t = st_find(*file, name);
    if (!t) die("%s: weight_map puts '%s' in %s, which does not hold it", s->index_path, name, shard);
    return t;
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
            if (!st) die("%s: tensor '%s' not found", s->index ? s->index_path : s->files[0].path, name);
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
            float *dst = ptrs[t] + (int64_t)l * rows * cols;
            st_read_f32(file, st, dst);
            for (int64_t i = 0; i < rows * cols; i++)
                if (!isfinite(dst[i])) die("%s: tensor '%s' has a NaN or Inf at element %lld", file->path, name, (long long)i);
        }
    }
    close_shards(s);
    free(s);
    c->dtype = sixteen ? DTYPE_BF16 : DTYPE_F32;
    return params;
}

// The model's tokenizer goes beside the model as OUT.tokenizer, where ./train finds it: the
// checkpoint's tokenizer.model (SentencePiece, or tiktoken ranks) if present, else its
// tokenizer.json. find_tokenizer loads it once before anything is written, so an unsupported
// one is refused with nothing left behind; NULL when the folder has none.
static const char *find_tokenizer(const char *dir, int vocab_size, char *src, size_t cap) {
    static const char *const names[] = {"tokenizer.model", "tokenizer.json"};
    for (int i = 0; i < 2; i++) {
        join_path(src, cap, dir, names[i]);
        if (!file_exists(src)) continue;
        Tokenizer t;
        tokenizer_load(&t, src);
        if (t.n_vocab > vocab_size) die("%s: %d tokens, more than the model's vocabulary (%d)", src, t.n_vocab, vocab_size);
        tokenizer_free(&t);
        return src;
    }
    return NULL;
}

static void import_hf(const char *dir, const char *out, int dtype) {
    ModelHeader c = read_config(dir);
    float *params = read_hf_weights(dir, &c);
    if (dtype >= 0) c.dtype = dtype;
    int64_t sizes[N_TENSORS];
    int64_t n = tensor_sizes(&c, sizes);
    char tok_src[4096], tok_dst[4096];
    const char *tok = find_tokenizer(dir, c.vocab_size, tok_src, sizeof tok_src);
    if ((size_t)snprintf(tok_dst, sizeof tok_dst, "%s.tokenizer", out) >= sizeof tok_dst) die("%s: path too long", out);
    model_save(out, &c, params);
    if (tok) {
        copy_file_atomic(tok, tok_dst);
        printf("wrote %s (from %s)\n", tok_dst, tok);
    } else {
        printf("(no tokenizer.model or tokenizer.json in %s)\n", dir);
    }
    printf("wrote %s: %lld parameters, %s, dim %d, %d layers, %d heads (%d kv), vocab %d%s\n", out, (long long)n,
           c.dtype == DTYPE_BF16 ? "bf16" : "f32", c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size,
           c.rope_scaling == ROPE_LLAMA3 ? ", llama3 rope scaling" : "");
    char q[4200];
    printf("{\"out\": %s, \"params\": %lld}\n", json_quote(q, sizeof q, out), (long long)n);
    free(params);
}

// ---------------------------------------------------------------------------------------------
// .bin -> Hugging Face folder

// The shortest decimal that reads back as the same float ("1e-05", not "9.99999975e-06"), so
// config.json looks like the ones on the hub and the round trip .bin -> HF -> .bin is exact.
static void float_str(char *out, size_t n, float x) {
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(out, n, "%.*g", digits, x);
        if (strtof(out, NULL) == x) break;
    }
    if (!strpbrk(out, ".en")) snprintf(out + strlen(out), n - strlen(out), ".0");  // keep it a float in JSON readers
}

// config.json in the classic form, which transformers 4.x and 5.x both read.
static int hf_config_text(char *cfg, size_t size, const ModelHeader *c, int stored_dtype) {
    char rope[512] = "null", eps[32], theta[32], f1[32], f2[32], f3[32];
    float_str(eps, sizeof eps, c->rms_norm_eps);
    float_str(theta, sizeof theta, c->rope_theta);
    if (c->rope_scaling == ROPE_LLAMA3) {
        float_str(f1, sizeof f1, c->rope_factor);
        float_str(f2, sizeof f2, c->rope_low_freq_factor);
        float_str(f3, sizeof f3, c->rope_high_freq_factor);
        snprintf(rope, sizeof rope, "{\"rope_type\": \"llama3\", \"factor\": %s, \"low_freq_factor\": %s, "
                 "\"high_freq_factor\": %s, \"original_max_position_embeddings\": %d}", f1, f2, f3, c->rope_original_max_pos);
    }
    char bos[16] = "null", eos[16] = "null";
    if (c->bos_id >= 0) snprintf(bos, sizeof bos, "%d", c->bos_id);
    if (c->eos_id >= 0) snprintf(eos, sizeof eos, "%d", c->eos_id);
    int n = snprintf(cfg, size,
        "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n"
        "  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n"
        "  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n  \"head_dim\": %d,\n"
        "  \"vocab_size\": %d,\n  \"max_position_embeddings\": %d,\n  \"rms_norm_eps\": %s,\n"
        "  \"rope_theta\": %s,\n  \"rope_scaling\": %s,\n  \"tie_word_embeddings\": %s,\n"
        "  \"bos_token_id\": %s,\n  \"eos_token_id\": %s,\n  \"torch_dtype\": \"%s\",\n"
        "  \"hidden_act\": \"silu\",\n  \"attention_bias\": false,\n  \"mlp_bias\": false,\n"
        "  \"initializer_range\": 0.02\n}\n",
        c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size, c->max_seq_len,
        eps, theta, rope, c->tied ? "true" : "false", bos, eos, stored_dtype == DTYPE_BF16 ? "bfloat16" : "float32");
    if (n < 0 || (size_t)n >= size) die("config.json text too long");
    return n;
}

// A quantized model stores LATENT weights. It goes to Hugging Face as what it computes: each
// linear replaced by its fake-quantized W^ = Q(W) (quant.h), in full precision, so that any
// Llama runtime or lm-evaluation-harness runs the quantized model (its real low-bit storage is
// train's --export-packed). The learned scales of sign / onebit follow the table in params
// (model.h: per linear tensor, p0 of every layer, then p1 of every layer).
static void bake_quantized_weights(const ModelHeader *c, float *params, const char *path) {
    QuantSpec q = header_quant(c);
    float *ptrs[N_TENSORS];
    tensor_carve(c, params, ptrs);
    int64_t sizes[N_TENSORS];
    float *learned = params + tensor_sizes(c, sizes);
    for (int t = 0; t < N_TENSORS; t++) {
        if (!tensor_is_linear(t)) continue;
        int64_t rows, cols, n0, n1;
        tensor_slice_shape(c, t, &rows, &cols);
        quant_param_sizes(&n0, &n1, q, (int)rows, (int)cols);
        float *wq = malloc_or_die((size_t)(rows * cols) * sizeof(float), "quantized weights");
        float *s0 = malloc_or_die((size_t)(n0 + 1) * sizeof(float), "scales"), *s1 = malloc_or_die((size_t)(n1 + 1) * sizeof(float), "scales");
        for (int l = 0; l < c->n_layers; l++) {
            float *w = ptrs[t] + (int64_t)l * rows * cols;
            float *p0 = quant_is_learned(q.method) ? learned + (int64_t)l * n0 : s0;
            float *p1 = quant_is_learned(q.method) ? learned + (int64_t)c->n_layers * n0 + (int64_t)l * n1 : s1;
            int rc = quant_forward(wq, NULL, p0, p1, w, q, (int)rows, (int)cols);
            if (rc) die("%s: %s of layer %d: %s", path, TENSOR_NAMES[t], l, quant_error_string(rc));
            memcpy(w, wq, (size_t)(rows * cols) * sizeof(float));
        }
        if (quant_is_learned(q.method)) learned += (int64_t)c->n_layers * (n0 + n1);
        free(wq); free(s0); free(s1);
    }
}

// The header as the file stores it (model_load converts to f32; the exports keep the stored dtype).
static ModelHeader stored_header(const char *in) {
    FILE *f = fopen_or_die(in, "rb");
    ModelHeader stored;
    if (fread(&stored, sizeof stored, 1, f) != 1) die("%s: truncated file (smaller than the header)", in);
    fclose(f);
    return stored;
}

// The folder --to-hf made itself, while the export is not complete: removed again at exit, with
// the two files the export writes into it, so a failed export (a full disk) leaves nothing behind.
static char g_new_dir[4096];
static void remove_new_dir(void) {
    if (!g_new_dir[0]) return;
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", g_new_dir);
    remove(path);
    snprintf(path, sizeof path, "%s/config.json", g_new_dir);
    remove(path);
    rmdir(g_new_dir);
}

static void export_hf(const char *in, const char *dir) {
    // the stored dtype decides the safetensors dtype; model_load validates the whole file first
    ModelHeader stored = stored_header(in);
    ModelHeader c;
    float *params = model_load(in, &c);
    if (c.quant_method != QUANT_NONE) {
        bake_quantized_weights(&c, params, in);
        printf("%s: quantized (%s, %d bits): exporting each linear's fake-quantized weights W^\n", in,
               quant_method_name(c.quant_method), c.quant_bits);
        c.quant_method = QUANT_NONE; c.quant_bits = 0; c.quant_group = 0;
    }
    if (c.quant_act_bits)  // transformers has no such layer: say what the export leaves out
        printf("%s: note: trained with %d-bit activations (--act-bits); LlamaForCausalLM will run them in full precision\n",
               in, c.quant_act_bits);
    if (mkdir(dir, 0755) == 0) {
        snprintf(g_new_dir, sizeof g_new_dir, "%s", dir);
        atexit(remove_new_dir);
    } else if (errno != EEXIST) {
        die("%s: cannot create folder (%s)", dir, strerror(errno));
    }

    // one safetensors entry per table tensor and layer, under its Hugging Face name
    float *ptrs[N_TENSORS];
    tensor_carve(&c, params, ptrs);
    int cap = N_TENSORS * c.n_layers, count = 0;
    char **names = calloc_or_die((size_t)cap, sizeof(char *), "names");
    const float **data = calloc_or_die((size_t)cap, sizeof(float *), "data");
    int64_t (*shapes)[ST_MAX_DIMS] = calloc_or_die((size_t)cap, sizeof *shapes, "shapes");
    int *ndims = calloc_or_die((size_t)cap, sizeof(int), "ndims");
    for (int t = 0; t < N_TENSORS; t++) {
        if (!ptrs[t]) continue;  // lm_head of a tied model
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
    char path[4096];
    join_path(path, sizeof path, dir, "model.safetensors");
    st_write(path, count, (const char *const *)names, data, (const int64_t(*)[ST_MAX_DIMS])shapes, ndims,
             stored.dtype == DTYPE_BF16 ? ST_BF16 : ST_F32);

    // config.json last: a folder with a config.json is a complete one
    char cfg[4096];
    int n = hf_config_text(cfg, sizeof cfg, &c, stored.dtype);
    join_path(path, sizeof path, dir, "config.json");
    AtomicFile a;
    atomic_open(&a, path);
    atomic_write(&a, cfg, (size_t)n);
    atomic_commit(&a);
    g_new_dir[0] = 0;  // complete: kept
    printf("wrote %s/model.safetensors (%d tensors, %s) and %s/config.json\n", dir, count,
           stored.dtype == DTYPE_BF16 ? "BF16" : "F32", dir);
    char q[4200];
    printf("{\"out\": %s, \"tensors\": %d}\n", json_quote(q, sizeof q, dir), count);
    for (int i = 0; i < count; i++) free(names[i]);
    free(names); free(data); free(shapes); free(ndims); free(params);
}

// ---------------------------------------------------------------------------------------------
// .bin -> GGUF, the model format of llama.cpp (lib/gguf.h writes the file)
//
// The student leaves as what it computes, a `llama` model whose seven linears are each layer's
// fake-quantized W^ = Q(W) (bake_quantized_weights' quant_forward), stored in the ggml block
// type that holds W^ most closely:
//   int, 1-3 bits  Q4_0: W^ = (code - z) s, and q = code - z lies in [-7, 7]; when a group of
//                  the quantizer is a whole number of 32-weight blocks, each block takes d = s
//                  and n = q + 8, so W^ is exact but for s rounded to fp16. (1 bit: TQ2_0 when
//                  the groups are whole 256-weight blocks.)
//   int, 4 bits    Q5_0 in the same way (q in [-15, 15], n = q + 16).
//   ternary        TQ2_0 (d = gamma, n = q + 1) when every row is whole 256-weight blocks,
//                  else Q4_0 (d = gamma, n = q + 8): exact but for gamma rounded to fp16.
//   sign           Q4_1 by round to nearest: a row holds two values beta -/+ alpha, so each
//                  block is m = beta - alpha, d = 2 alpha / 15, n in {0, 15}: exact but for fp16.
//   nf3, nf4, onebit, int 8, groups not whole blocks: Q8_0 by round to nearest (not exact:
//                  the error is printed). Rows that are not whole 32-weight blocks: F16.
// --type T overrides the choice (f32, f16, bf16, q4_0, q4_1, q5_0, q8_0, tq2_0); an exact
// encoding is still used when T can hold W^ as above, else round to nearest.
// Embeddings and the LM head keep the .bin's dtype (F32 or BF16), norms are F32.
//
// llama.cpp's `llama` rotates interleaved pairs (2i, 2i+1) of each head (Meta's RoPE); the .bin
// is in Hugging Face's rotate-half order, so the rows of wq and wk are permuted per head:
// GGUF row 2i <- HF row i, GGUF row 2i+1 <- HF row i + hd/2 (the inverse of --from-llama2c's).
// Llama-3 RoPE scaling goes in as the tensor rope_freqs.weight [hd/2]: the factor each
// frequency is divided by, 1 / ((1 - s) / factor + s) in the blend band (rope_tables in train.c).

static const char *const TENSOR_GGUF_NAMES[N_TENSORS] = {
    "token_embd.weight", "blk.%d.attn_norm.weight", "blk.%d.attn_q.weight", "blk.%d.attn_k.weight",
    "blk.%d.attn_v.weight", "blk.%d.attn_output.weight", "blk.%d.ffn_norm.weight",
    "blk.%d.ffn_gate.weight", "blk.%d.ffn_up.weight", "blk.%d.ffn_down.weight",
    "output_norm.weight", "output.weight",
};

// ggml type -> llama.cpp's general.file_type (llama.h, LLAMA_FTYPE_*)
static int gguf_file_type(int type) {
    switch (type) {
    case GGML_F32: return 0;
    case GGML_F16: return 1;
    case GGML_Q4_0: return 2;
    case GGML_Q4_1: return 3;
    case GGML_Q8_0: return 7;
    case GGML_Q5_0: return 8;
    case GGML_BF16: return 32;
    case GGML_TQ2_0: return 37;
    }
    return 0;
}

// Can `type` hold W^ of this quantizer exactly (up to fp16 d) for a linear with `in` columns?
// Needed: W^ = q s with integer q in the type's range, one s per block.
static int gguf_exact(QuantSpec q, int type, int in) {
    const GgmlType *ty = ggml_type(type);
    if (ty->qmax == 0 || in % ty->block) return 0;
    if (q.method == QUANT_TERNARY) return 1;
    return q.method == QUANT_INT && (1 << q.bits) - 1 <= ty->qmax && quant_group_len(q, in) % ty->block == 0;
}

static int gguf_linear_type(QuantSpec q, int forced, int in, int stored_dtype) {
    if (forced >= 0) return forced;
    if (q.method == QUANT_NONE) return stored_dtype == DTYPE_BF16 ? GGML_BF16 : GGML_F32;
    int want = GGML_Q8_0;
    if (q.method == QUANT_TERNARY || (q.method == QUANT_INT && q.bits == 1)) want = GGML_TQ2_0;
    if (q.method == QUANT_INT && q.bits >= 2 && q.bits <= 3) want = GGML_Q4_0;
    if (q.method == QUANT_INT && q.bits == 4) want = GGML_Q5_0;
    if (q.method == QUANT_SIGN) want = GGML_Q4_1;
    if (want == GGML_TQ2_0 && !gguf_exact(q, want, in)) want = GGML_Q4_0;
    if (want != GGML_Q4_1 && !gguf_exact(q, want, in)) want = GGML_Q8_0;
    return in % 32 ? GGML_F16 : want;
}

// How far the stored tensors are from what the student computes, per tensor of the table
// (summed over layers).
typedef struct { int type, exact; double max_err, sq_err, sq_ref; int64_t n, bytes; } GgufStat;

static void gguf_stat_row(GgufStat *s, const float *ref, const float *got, int64_t n) {
    for (int64_t j = 0; j < n; j++) {
        double e = fabs((double)got[j] - ref[j]);
        if (e > s->max_err) s->max_err = e;
        s->sq_err += e * e;
        s->sq_ref += (double)ref[j] * ref[j];
    }
    s->n += n;
}

// Encodes the rows x[rows, cols] into `type` (rows permuted by `perm`, NULL for none), writes
// them, and adds the difference between what was written and x to *s. codes/scale/zero: the
// quantizer's codes and per-group s and z (z = NULL: the ternary z = 1 and one s) for the exact
// encoding of gguf_exact; NULL otherwise.
static void gguf_write_rows(Gguf *g, GgufStat *s, int type, const float *x, const int *perm, int rows, int cols,
                            const uint8_t *codes, const float *scale, const float *zero, int group) {
    int64_t rb = ggml_row_bytes(type, cols);
    const GgmlType *ty = ggml_type(type);
    uint8_t *buf = malloc_or_die((size_t)rb, "GGUF row");
    float *back = malloc_or_die((size_t)cols * sizeof(float), "GGUF row");
    int *q = malloc_or_die(256 * sizeof(int), "GGUF block");
    for (int r = 0; r < rows; r++) {
        int64_t hr = perm ? perm[r] : r;
        const float *xr = x + hr * cols;
        if (codes) {
            for (int b = 0; b < cols / ty->block; b++) {
                int j0 = b * ty->block;
                int64_t k = zero ? hr * (cols / group) + j0 / group : 0;
                float z = zero ? zero[k] : 1.0f;
                for (int j = 0; j < ty->block; j++) q[j] = (int)codes[hr * cols + j0 + j] - (int)z;
                ggml_block_from_ints(buf + (int64_t)b * ty->bytes, type, scale[k], q);
            }
        } else {
            ggml_quantize_row(buf, type, xr, cols);
        }
        ggml_dequantize_row(back, type, buf, cols);
        gguf_stat_row(s, xr, back, cols);
        gguf_write_data(g, buf, (size_t)rb);
    }
    s->type = type;
    s->bytes += rb * rows;
    free(buf); free(back); free(q);
}

// GPT-2's byte -> character table (the alphabet of byte-level BPE vocabularies): printable bytes
// stand for themselves, the other 68 for U+0100 onwards in byte order. Appends the UTF-8.
static size_t gpt2_bytes_to_text(char *out, const char *s, size_t n) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int b = (unsigned char)s[i];
        uint32_t cp = (uint32_t)b;
        if (!((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae)) {
            cp = 256;
            for (int x = 0; x < b; x++) cp += !((x >= 0x21 && x <= 0x7e) || (x >= 0xa1 && x <= 0xac) || x >= 0xae);
        }
        if (cp < 0x80) out[m++] = (char)cp;
        else { out[m++] = (char)(0xc0 | cp >> 6); out[m++] = (char)(0x80 | (cp & 0x3f)); }
    }
    return m;
}

typedef struct { int rank, left, right; } GgufMerge;
static int merge_cmp(const void *a, const void *b) {
    const GgufMerge *x = a, *y = b;
    if (x->rank != y->rank) return x->rank < y->rank ? -1 : 1;
    if (x->left != y->left) return x->left < y->left ? -1 : 1;
    return (x->right > y->right) - (x->right < y->right);
}

// The vocabulary, as llama.cpp reads it: tokenizer.ggml.* (token types are SentencePiece's
// numbering, which llama.cpp shares). Ids past the tokenizer's up to the model's vocabulary are
// "[PAD<id>]" pieces of type UNUSED. Returns the tokenizer kind written.
static const char *gguf_tokenizer(Gguf *g, const Tokenizer *tok, const ModelHeader *c) {
    int V = c->vocab_size, n_tok = tok ? tok->n_vocab : 0;
    char *text = malloc_or_die(4096, "token text");
    const char *kind = !tok ? "placeholder" : tok->kind == TOK_SPM ? "llama" : "gpt2";
    gguf_kv_str(g, "tokenizer.ggml.model", tok && tok->kind == TOK_BYTE_BPE ? "gpt2" : "llama");
    if (tok && tok->kind == TOK_BYTE_BPE) gguf_kv_str(g, "tokenizer.ggml.pre", "llama-bpe");
    gguf_kv_array(g, "tokenizer.ggml.tokens", GGUF_STRING, (uint64_t)V);
    for (int id = 0; id < V; id++) {
        size_t n;
        if (id >= n_tok && (tok || id >= 256)) n = (size_t)snprintf(text, 4096, tok ? "[PAD%d]" : "<%d>", id);
        else if (!tok) n = (size_t)snprintf(text, 4096, "<0x%02X>", id);
        else if (tok->piece_len[id] > 1000) die("token %d is longer than 1000 bytes", id);
        else if (tok->kind == TOK_BYTE_BPE && tok->type[id] == SP_NORMAL)
            n = gpt2_bytes_to_text(text, piece_of(tok, id), tok->piece_len[id]);
        else { n = tok->piece_len[id]; memcpy(text, piece_of(tok, id), n); }
        gguf_put_str(g, text, n);
    }
    if (!tok || tok->kind == TOK_SPM) {
        gguf_kv_array(g, "tokenizer.ggml.scores", GGUF_F32, (uint64_t)V);
        for (int id = 0; id < V; id++) gguf_put_f32(g, id < n_tok ? tok->score[id] : 0.0f);
    }
    gguf_kv_array(g, "tokenizer.ggml.token_type", GGUF_I32, (uint64_t)V);
    for (int id = 0; id < V; id++)
        gguf_put_u32(g, id < n_tok ? (tok->type[id] ? tok->type[id] : SP_UNUSED) : !tok && id < 256 ? SP_BYTE : tok ? SP_UNUSED : SP_NORMAL);
    if (tok && tok->kind == TOK_BYTE_BPE) {
        // the merges in rank order, "left right" in the byte-level alphabet
        int n = 0;
        GgufMerge *m = malloc_or_die(((size_t)tok->pair_mask + 1) * sizeof *m, "merges");
        for (uint32_t i = 0; i <= tok->pair_mask; i++)
            if (tok->pair_key[i]) {
                uint64_t key = tok->pair_key[i] - 1;
                m[n++] = (GgufMerge){tok->pair_rank[i], (int)(key >> 32), (int)(key & 0xffffffffu)};
            }
        qsort(m, (size_t)n, sizeof *m, merge_cmp);
        gguf_kv_array(g, "tokenizer.ggml.merges", GGUF_STRING, (uint64_t)n);
        for (int i = 0; i < n; i++) {
            size_t a = gpt2_bytes_to_text(text, piece_of(tok, m[i].left), tok->piece_len[m[i].left]);
            text[a++] = ' ';
            a += gpt2_bytes_to_text(text + a, piece_of(tok, m[i].right), tok->piece_len[m[i].right]);
            gguf_put_str(g, text, a);
        }
        free(m);
    }
    int bos = c->bos_id >= 0 ? c->bos_id : tok ? tok->bos_id : -1, eos = c->eos_id >= 0 ? c->eos_id : tok ? tok->eos_id : -1;
    if (bos >= 0) gguf_kv_u32(g, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    if (eos >= 0) gguf_kv_u32(g, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
    if (tok && tok->kind == TOK_SPM) gguf_kv_u32(g, "tokenizer.ggml.unknown_token_id", (uint32_t)tok->unk_id);
    gguf_kv_bool(g, "tokenizer.ggml.add_bos_token", tok != NULL);
    gguf_kv_bool(g, "tokenizer.ggml.add_eos_token", 0);
    if (!tok || tok->kind == TOK_SPM) gguf_kv_bool(g, "tokenizer.ggml.add_space_prefix", tok ? tok->add_dummy_prefix : 0);
    free(text);
    return kind;
}

static void export_gguf(const char *in, const char *out, const char *tok_path, int forced_type) {
    ModelHeader stored = stored_header(in);
    ModelHeader c;
    float *params = model_load(in, &c);
    QuantSpec q = header_quant(&c);
    // the tokenizer: --tokenizer, else IN.tokenizer (where ./train finds it), else a placeholder
    char sibling[4096];
    if ((size_t)snprintf(sibling, sizeof sibling, "%s.tokenizer", in) >= sizeof sibling) die("%s: path too long", in);
    if (!tok_path && file_exists(sibling)) tok_path = sibling;
    Tokenizer tokenizer, *tok = NULL;
    if (tok_path) {
        tokenizer_load(&tokenizer, tok_path);
        if (tokenizer.n_vocab > c.vocab_size)
            die("%s: the tokenizer has %d tokens, the model's vocabulary only %d", tok_path, tokenizer.n_vocab, c.vocab_size);
        tok = &tokenizer;
        printf("tokenizer: %s (%d tokens, %s)\n", tok_path, tok->n_vocab, tok->kind == TOK_SPM ? "SentencePiece" : "byte-level BPE");
    } else {
        printf("tokenizer: none beside the model (%s) and no --tokenizer: writing a placeholder vocabulary of %d pieces\n"
               "  (<0xXX> byte pieces for ids < 256, \"<id>\" above). llama.cpp runs it on token ids; text maps to bytes.\n",
               sibling, c.vocab_size);
    }
    if (c.quant_act_bits)
        printf("note: the student was trained with %d-bit per-token activations (--act-bits); llama.cpp quantizes\n"
               "  activations its own way (per 32- or 256-value block for quantized weights), not per token\n", c.quant_act_bits);

    // metadata
    Gguf g;
    memset(&g, 0, sizeof g);
    int D = c.dim, F = c.hidden_dim, L = c.n_layers, hd = c.head_dim, V = c.vocab_size;
    int lin_type[N_TENSORS] = {0};
    for (int t = 0; t < N_TENSORS; t++) {
        if (!tensor_is_linear(t)) continue;
        int64_t rows, cols;
        tensor_slice_shape(&c, t, &rows, &cols);
        if (forced_type >= 0 && cols % ggml_type(forced_type)->block)
            die("--type %s: %s has %lld columns, not whole %d-weight blocks", ggml_type(forced_type)->name, TENSOR_NAMES[t],
                (long long)cols, ggml_type(forced_type)->block);
        lin_type[t] = gguf_linear_type(q, forced_type, (int)cols, stored.dtype);
    }
    gguf_kv_str(&g, "general.architecture", "llama");
    gguf_kv_str(&g, "general.name", "bitdistill student");
    gguf_kv_u32(&g, "general.file_type", (uint32_t)gguf_file_type(lin_type[T_WQ]));
    gguf_kv_u32(&g, "general.quantization_version", 2);
    gguf_kv_u32(&g, "llama.context_length", (uint32_t)c.max_seq_len);
    gguf_kv_u32(&g, "llama.embedding_length", (uint32_t)D);
    gguf_kv_u32(&g, "llama.block_count", (uint32_t)L);
    gguf_kv_u32(&g, "llama.feed_forward_length", (uint32_t)F);
    gguf_kv_u32(&g, "llama.attention.head_count", (uint32_t)c.n_heads);
    gguf_kv_u32(&g, "llama.attention.head_count_kv", (uint32_t)c.n_kv_heads);
    gguf_kv_u32(&g, "llama.attention.key_length", (uint32_t)hd);
    gguf_kv_u32(&g, "llama.attention.value_length", (uint32_t)hd);
    gguf_kv_f32(&g, "llama.rope.freq_base", c.rope_theta);
    gguf_kv_u32(&g, "llama.rope.dimension_count", (uint32_t)hd);
    gguf_kv_f32(&g, "llama.attention.layer_norm_rms_epsilon", c.rms_norm_eps);
    gguf_kv_u32(&g, "llama.vocab_size", (uint32_t)V);
    const char *tok_kind = gguf_tokenizer(&g, tok, &c);

    // tensor infos, in table order (per layer: the layer's slice of each stacked tensor)
    int64_t ne[2];
    for (int l = 0; l < L; l++)
        for (int t = 0; t < N_TENSORS; t++) {
            if ((!tensor_is_per_layer(t) && l > 0) || (t == T_LM_HEAD && c.tied)) continue;
            int64_t rows, cols;
            tensor_slice_shape(&c, t, &rows, &cols);
            char name[64];
            snprintf(name, sizeof name, TENSOR_GGUF_NAMES[t], l);
            ne[0] = cols; ne[1] = rows;
            int type = tensor_is_linear(t) ? lin_type[t] : rows == 1 ? GGML_F32 : stored.dtype == DTYPE_BF16 ? GGML_BF16 : GGML_F32;
            gguf_add_tensor(&g, name, rows == 1 ? 1 : 2, ne, type);
        }
    float *rope_factor = NULL;
    if (c.rope_scaling == ROPE_LLAMA3) {
        rope_factor = malloc_or_die((size_t)hd / 2 * sizeof(float), "rope factors");
        for (int i = 0; i < hd / 2; i++) {
            float inv = 1.0f / powf(c.rope_theta, (float)(2 * i) / (float)hd), wavelen = 2.0f * (float)M_PI / inv;
            float orig = (float)c.rope_original_max_pos, lo = c.rope_low_freq_factor, hi = c.rope_high_freq_factor;
            float s = (orig / wavelen - lo) / (hi - lo);
            rope_factor[i] = wavelen < orig / hi ? 1.0f : wavelen > orig / lo ? c.rope_factor : 1.0f / ((1.0f - s) / c.rope_factor + s);
        }
        ne[0] = hd / 2;
        gguf_add_tensor(&g, "rope_freqs.weight", 1, ne, GGML_F32);
    }
    gguf_begin_data(&g, out);

    // data: the linears' W^ (and codes, scales) computed one layer slice at a time
    float *ptrs[N_TENSORS];
    tensor_carve(&c, params, ptrs);
    int64_t sizes[N_TENSORS];
    float *learned[N_TENSORS] = {0}, *next_learned = params + tensor_sizes(&c, sizes);
    int64_t big = 0;
    for (int t = 0; t < N_TENSORS; t++) {
        if (!tensor_is_linear(t)) continue;
        int64_t rows, cols, n0, n1;
        tensor_slice_shape(&c, t, &rows, &cols);
        quant_param_sizes(&n0, &n1, q, (int)rows, (int)cols);
        if (rows * cols > big) big = rows * cols;
        learned[t] = next_learned;
        if (quant_is_learned(q.method)) next_learned += (int64_t)L * (n0 + n1);
    }
    float *wq = malloc_or_die((size_t)big * sizeof(float), "quantized weights");
    uint8_t *codes = malloc_or_die((size_t)big, "codes");
    int *perm = malloc_or_die((size_t)(c.n_heads > c.n_kv_heads ? c.n_heads : c.n_kv_heads) * hd * sizeof(int), "permutation");
    GgufStat stat[N_TENSORS];
    memset(stat, 0, sizeof stat);
    for (int l = 0; l < L; l++)
        for (int t = 0; t < N_TENSORS; t++) {
            if ((!tensor_is_per_layer(t) && l > 0) || (t == T_LM_HEAD && c.tied)) continue;
            int64_t rows, cols;
            tensor_slice_shape(&c, t, &rows, &cols);
            const float *w = ptrs[t] + (tensor_is_per_layer(t) ? (int64_t)l * rows * cols : 0);
            int type = g.t[g.next].type;
            if (!tensor_is_linear(t)) {
                gguf_write_rows(&g, &stat[t], type, w, NULL, (int)rows, (int)cols, NULL, NULL, NULL, 0);
                continue;
            }
            if (t == T_WQ || t == T_WK)  // rotate-half rows -> interleaved rows, per head
                for (int r = 0; r < rows; r++) {
                    int h = r / hd, i = (r % hd) / 2, half = r % 2;
                    perm[r] = h * hd + half * hd / 2 + i;
                }
            int64_t n0, n1;
            quant_param_sizes(&n0, &n1, q, (int)rows, (int)cols);
            float *s0 = malloc_or_die((size_t)(n0 + 1) * sizeof(float), "scales"), *s1 = malloc_or_die((size_t)(n1 + 1) * sizeof(float), "scales");
            // learned scales (sign, onebit) follow the table: per linear tensor, p0 of every layer, then p1 of every layer
            float *p0 = quant_is_learned(q.method) ? learned[t] + (int64_t)l * n0 : s0;
            float *p1 = quant_is_learned(q.method) ? learned[t] + (int64_t)L * n0 + (int64_t)l * n1 : s1;
            int rc = quant_forward(wq, codes, p0, p1, w, q, (int)rows, (int)cols);
            if (rc) die("%s: %s of layer %d: %s", in, TENSOR_NAMES[t], l, quant_error_string(rc));
            int exact = gguf_exact(q, type, (int)cols);
            stat[t].exact = exact;
            gguf_write_rows(&g, &stat[t], type, wq, t == T_WQ || t == T_WK ? perm : NULL, (int)rows, (int)cols,
                            exact ? codes : NULL, exact ? p0 : NULL, exact && q.method == QUANT_INT ? p1 : NULL,
                            quant_group_len(q, (int)cols));
            free(s0); free(s1);
        }
    if (rope_factor) gguf_write_data(&g, rope_factor, (size_t)hd / 2 * sizeof(float));
    uint64_t bytes = gguf_finish(&g);

    // report: per tensor of the table, its type, size and distance from what the student computes
    printf("wrote %s: GGUF v3, llama, %s tokenizer%s\n", out, tok_kind, rope_factor ? ", llama3 rope_freqs" : "");
    printf("%-11s %-6s %-8s %12s %7s %12s %12s %10s\n", "tensor", "type", "how", "bytes", "bits/w", "max|err|", "rms err", "rel rms");
    int64_t n_lin = 0, lin_bytes = 0, n_all = 0;
    double lin_max = 0, lin_sq = 0, lin_ref = 0;
    int all_exact = 1;
    for (int t = 0; t < N_TENSORS; t++) {
        GgufStat *s = &stat[t];
        if (!s->n) continue;
        const char *how = s->exact ? "exact" : !tensor_is_linear(t) || (q.method == QUANT_NONE && forced_type < 0) ? "stored" : "rounded";
        printf("%-11s %-6s %-8s %12lld %7.3f %12.3e %12.3e %10.3e\n", TENSOR_NAMES[t], ggml_type(s->type)->name, how, (long long)s->bytes,
               8.0 * s->bytes / s->n, s->max_err, sqrt(s->sq_err / s->n), s->sq_ref > 0 ? sqrt(s->sq_err / s->sq_ref) : 0.0);
        n_all += s->n;
        if (!tensor_is_linear(t)) continue;
        all_exact &= s->exact;
        n_lin += s->n; lin_bytes += s->bytes;
        lin_max = fmax(lin_max, s->max_err); lin_sq += s->sq_err; lin_ref += s->sq_ref;
    }
    const char *lin_name = ggml_type(lin_type[T_WQ])->name;
    // exact: W^ = q d with d the fp16 of the quantizer's scale; rounded: W^ rounded into the type
    printf("linears: %.3f bits per weight, %s; whole file %.3f bits per parameter (%llu bytes)\n", 8.0 * lin_bytes / n_lin,
           all_exact ? "all exact up to fp16 scales" : q.method == QUANT_NONE && forced_type < 0 ? "as stored" : "not all exact (see 'how')",
           8.0 * bytes / n_all, (unsigned long long)bytes);
    char qo[4200];
    printf("{\"out\": %s, \"bytes\": %llu, \"bits_per_param\": %.4f, \"linear_type\": \"%s\", \"linear_bits\": %.4f, "
           "\"linear_exact\": %s, \"linear_max_err\": %.6g, \"linear_rel_rms_err\": %.6g, \"tokenizer\": \"%s\"}\n",
           json_quote(qo, sizeof qo, out), (unsigned long long)bytes, 8.0 * bytes / n_all, lin_name, 8.0 * lin_bytes / n_lin,
           all_exact && q.method != QUANT_NONE ? "true" : "false", lin_max, lin_ref > 0 ? sqrt(lin_sq / lin_ref) : 0.0, tok_kind);
    free(wq); free(codes); free(perm); free(rope_factor); free(params);
    if (tok) tokenizer_free(tok);
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
    c.vocab_size = h[5] == INT32_MIN ? 0 : h[5] < 0 ? -h[5] : h[5]; c.max_seq_len = h[6];
    c.tied = h[5] > 0;
    c.bos_id = 1; c.eos_id = 2;
    const char *field[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
    for (int i = 0; i < 7; i++)
        if (h[i] == 0 || (h[i] < 0 && i != 5)) die("%s: llama2.c header: %s = %d, must be positive", in, field[i], h[i]);
    if (c.dim % c.n_heads) die("%s: llama2.c header: dim %d is not a multiple of n_heads %d", in, c.dim, c.n_heads);
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
    char q[4200];
    printf("{\"out\": %s, \"params\": %lld}\n", json_quote(q, sizeof q, out), (long long)n);
    free(params);
}

#ifndef CONVERT_NO_MAIN  // the fuzz targets include this file for its readers
// The outputs, checked before any input is read (util.h's output_check): OUT.bin and
// OUT.bin.tokenizer, or OUT_DIR (a folder, or nothing yet) with its two files.
static void outputs_check(const char *out, int mode) {
    char path[4096];
    if (mode != 1) {
        output_check(out, 0);
        if (mode == 0) {
            if ((size_t)snprintf(path, sizeof path, "%s.tokenizer", out) >= sizeof path) die("%s: path too long", out);
            output_check(path, 0);
        }
        return;
    }
    struct stat st;
    if (stat(out, &st) != 0) {  // created by export_hf; its parent must exist
        output_check(out, 0);
        return;
    }
    if (!S_ISDIR(st.st_mode)) die("%s: not a folder (--to-hf writes a folder)", out);
    join_path(path, sizeof path, out, "model.safetensors");
    output_check(path, 0);
    join_path(path, sizeof path, out, "config.json");
    output_check(path, 0);
}

int main(int argc, char **argv) {
    const char *pos[3];
    int npos = 0, dtype = -1, mode = 0, type = -1;  // mode 0: HF import, 1: --to-hf, 2: --from-llama2c, 3: --to-gguf
    const char *tok_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); stdout_check(); return 0; }
        else if (!strcmp(a, "--to-hf") || !strcmp(a, "--from-llama2c") || !strcmp(a, "--to-gguf")) {
            int m = !strcmp(a, "--to-hf") ? 1 : !strcmp(a, "--from-llama2c") ? 2 : 3;
            if (mode && mode != m) die("give one of --to-hf, --from-llama2c and --to-gguf");
            mode = m;
        } else if (!strcmp(a, "--tokenizer")) {
            if (i + 1 >= argc) die("--tokenizer: needs a file");
            tok_path = argv[++i];
        } else if (!strcmp(a, "--type")) {
            if (i + 1 >= argc) die("--type: needs a ggml type (f32 f16 bf16 q4_0 q4_1 q5_0 q8_0 tq2_0)");
            if ((type = ggml_type_from_name(argv[++i])) < 0)
                die("--type: expected f32 f16 bf16 q4_0 q4_1 q5_0 q8_0 or tq2_0, got '%s'", argv[i]);
        }
        else if (!strcmp(a, "--dtype")) {
            if (i + 1 >= argc) die("--dtype: needs a value (f32 or bf16)");
            const char *v = argv[++i];
            if (!strcmp(v, "f32")) dtype = DTYPE_F32;
            else if (!strcmp(v, "bf16")) dtype = DTYPE_BF16;
            else die("--dtype: expected f32 or bf16, got '%s'", v);
        } else if (a[0] == '-' && a[1]) die("unknown flag '%s' (see ./convert --help)", a);
        else if (npos == 2) die("too many arguments: '%s' (see ./convert --help)", a);
        else pos[npos++] = a;
    }
    if (npos != 2) die("expected two paths, got %d (see ./convert --help)", npos);
    if (dtype >= 0 && mode != 0) die("--dtype applies to Hugging Face imports only");
    if ((tok_path || type >= 0) && mode != 3) die("--tokenizer and --type apply to --to-gguf only");
    outputs_check(pos[1], mode);
    if (mode == 1) export_hf(pos[0], pos[1]);
    else if (mode == 3) export_gguf(pos[0], pos[1], tok_path, type);
    else if (mode == 2) import_llama2c(pos[0], pos[1]);
    else import_hf(pos[0], pos[1], dtype);
    stdout_check();
    return 0;
}
#endif
