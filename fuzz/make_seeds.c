// fuzz/make_seeds.c — writes the seed corpus of every fuzz target: small valid inputs made by
// the project's own writers (model_save, export_packed, checkpoint_save, st_write), so that the
// fuzzer starts from files the readers accept. Built and run by `make fuzz-NAME`:
//   build/fuzz/make_seeds OUTDIR       writes OUTDIR/NAME/... for each target
// The text formats' seeds (JSONL, evaluation files, config.json, ...) are copied from
// tests/fixtures and fuzz/seeds/ by fuzz/run.sh.
#define TRAIN_NO_MAIN
#include "../train.c"
#include "micro.h"

static char outdir[2048];

static const char *out_path(const char *target, const char *name) {
    static char p[4096];
    snprintf(p, sizeof p, "%s/%s", outdir, target);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/%s/%s", outdir, target, name);
    return p;
}

// Prefixes a file with one selector byte (targets that read several kinds of input).
static void prefix_file(const char *path, uint8_t selector) {
    size_t n;
    char *buf = read_file_or_die(path, &n);
    FILE *f = fopen_or_die(path, "wb");
    fputc(selector, f);
    fwrite_or_die(buf, n, f, path);
    fclose(f);
    free(buf);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen_or_die(path, "wb");
    fwrite_or_die(data, n, f, path);
    fclose(f);
}

// A copy of src as target/name, after `selector` (-1: no selector byte).
static void copy_seed(const char *target, const char *name, int selector, const char *src) {
    size_t n;
    char *buf = read_file_or_die(src, &n);
    const char *path = out_path(target, name);
    FILE *f = fopen_or_die(path, "wb");
    if (selector >= 0) fputc(selector, f);
    fwrite_or_die(buf, n, f, path);
    fclose(f);
    free(buf);
}

// A protobuf writer, just enough for a SentencePiece ModelProto.
typedef struct { uint8_t b[1 << 16]; size_t n; } Proto;
static void pb_put_varint(Proto *p, uint64_t v) { do { p->b[p->n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0)); v >>= 7; } while (v); }
static void pb_put_key(Proto *p, int field, int wire) { pb_put_varint(p, (uint64_t)field << 3 | (uint64_t)wire); }
static void pb_put_bytes(Proto *p, int field, const void *s, size_t n) { pb_put_key(p, field, 2); pb_put_varint(p, n); memcpy(p->b + p->n, s, n); p->n += n; }
static void pb_put_int(Proto *p, int field, uint64_t v) { pb_put_key(p, field, 0); pb_put_varint(p, v); }
static void pb_put_piece(Proto *p, const char *piece, float score, int type) {
    Proto m = {.n = 0};
    pb_put_bytes(&m, 1, piece, strlen(piece));
    pb_put_key(&m, 2, 5); memcpy(m.b + m.n, &score, 4); m.n += 4;
    if (type != SP_NORMAL) pb_put_int(&m, 3, (uint64_t)type);
    pb_put_bytes(p, 1, m.b, m.n);
}

// A SentencePiece BPE model like Llama-2's, in miniature: <unk> <s> </s>, the 256 byte pieces
// (byte_fallback), and a few merges.
static void write_spm(const char *path, int byte_fallback) {
    static Proto p;
    p.n = 0;
    pb_put_piece(&p, "<unk>", 0, SP_UNKNOWN);
    pb_put_piece(&p, "<s>", 0, SP_CONTROL);
    pb_put_piece(&p, "</s>", 0, SP_CONTROL);
    if (byte_fallback)
        for (int b = 0; b < 256; b++) { char s[8]; snprintf(s, sizeof s, "<0x%02X>", b); pb_put_piece(&p, s, 0, SP_BYTE); }
    const char *normal[] = {"\xe2\x96\x81", "H", "e", "l", "o", "w", "r", "d", "a", "b", "\xe2\x96\x81w", "He", "ll", "llo",
                            "Hello", "\xe2\x96\x81Hello", "or", "wor", "\xe2\x96\x81wor", "ld", "\xe2\x96\x81world", "ab"};
    for (int i = 0; i < (int)(sizeof normal / sizeof normal[0]); i++) pb_put_piece(&p, normal[i], -(float)i, SP_NORMAL);
    Proto t = {.n = 0};
    pb_put_int(&t, 3, 2);  // model_type BPE
    pb_put_int(&t, 35, (uint64_t)byte_fallback);
    pb_put_int(&t, 40, 0); pb_put_int(&t, 41, 1); pb_put_int(&t, 42, 2);
    pb_put_bytes(&p, 2, t.b, t.n);
    Proto z = {.n = 0};
    pb_put_int(&z, 3, 1); pb_put_int(&z, 4, 1); pb_put_int(&z, 5, 1);
    pb_put_bytes(&p, 3, z.b, z.n);
    write_bytes(path, p.b, p.n);
}

// llama2.c's tokenizer.bin: max_token_length, then (score, length, bytes) per piece.
static void write_llama2c_tokenizer(const char *path) {
    static Proto p;
    p.n = 0;
    int32_t max_len = 8;
    memcpy(p.b, &max_len, 4); p.n = 4;
    for (int id = 0; id < 270; id++) {
        char s[16];
        if (id == 0) snprintf(s, sizeof s, "<unk>");
        else if (id == 1) snprintf(s, sizeof s, "\n<s>\n");
        else if (id == 2) snprintf(s, sizeof s, "\n</s>\n");
        else if (id < 259) snprintf(s, sizeof s, "<0x%02X>", id - 3);
        else { static const char *w[] = {" ", "a", "b", " a", "ab", " ab", "H", "e", "l", "lo", "He"}; snprintf(s, sizeof s, "%s", w[id - 259]); }
        float score = id < 259 ? 0.0f : -(float)(id - 259);
        int32_t l = (int32_t)strlen(s);
        memcpy(p.b + p.n, &score, 4); memcpy(p.b + p.n + 4, &l, 4); memcpy(p.b + p.n + 8, s, (size_t)l);
        p.n += 8 + (size_t)l;
    }
    write_bytes(path, p.b, p.n);
}

static void write_text(const char *target, const char *name, const char *text, size_t n) {
    write_bytes(out_path(target, name), text, n);
}

int main(int argc, char **argv) {
    if (argc != 2) die("usage: make_seeds OUTDIR");
    snprintf(outdir, sizeof outdir, "%s", argv[1]);
    mkdir(outdir, 0755);
    char name[256];
    for (int v = 0; v < MICRO_VARIANTS; v++) {
        Model m;
        micro_model(&m, v, 7 + v);
        // model .bin (f32; variant 0 also bf16)
        snprintf(name, sizeof name, "v%d.bin", v);
        model_save(out_path("model_bin", name), &m.cfg, m.params);
        if (v == 0) {
            ModelHeader h = m.cfg;
            h.dtype = DTYPE_BF16;
            model_save(out_path("model_bin", "v0_bf16.bin"), &h, m.params);
        }
        // packed .qbin (fp32 and bf16 norms/embeddings)
        if (v > 0) {
            snprintf(name, sizeof name, "v%d.qbin", v);
            export_packed(&m, out_path("qbin", name), DTYPE_F32);
            snprintf(name, sizeof name, "v%d_bf16.qbin", v);
            export_packed(&m, out_path("qbin", name), DTYPE_BF16);
        }
        // checkpoint: one selector byte (the variant the target sets up), then the file
        if (v <= 2) {
            model_alloc_training(&m);
            for (int64_t i = 0; i < m.n_params; i++) { m.adam_m[i] = 1e-3f * (float)(i % 7); m.adam_v[i] = 1e-6f * (float)(i % 5); }
            TrainState st = micro_state(v);
            st.step = 3; st.micro_batches = 6; st.gamma = v ? 0.5 : -1.0;
            snprintf(name, sizeof name, "v%d.ckpt", v);
            checkpoint_save(out_path("ckpt", name), &m, &st);
            prefix_file(out_path("ckpt", name), (uint8_t)v);
        }
        // safetensors of the FP variants
        if (v == 0) {
            write_hf(&m.cfg, m.params, out_path("safetensors", "f32.safetensors"), ST_F32, 0, 1000);
            write_hf(&m.cfg, m.params, out_path("safetensors", "bf16.safetensors"), ST_BF16, 0, 1000);
            write_hf(&m.cfg, m.params, out_path("safetensors", "part.safetensors"), ST_F32, 2, 5);
        }
        model_free(&m);
    }

    // tokenizers: SentencePiece protobuf (with and without byte fallback), llama2.c .bin;
    // fuzz/seeds/ adds small tokenizer.json and tiktoken files
    write_spm(out_path("tokenizer_model", "spm_bytes.model"), 1);
    write_spm(out_path("tokenizer_model", "spm.model"), 0);
    write_llama2c_tokenizer(out_path("tokenizer_model", "llama2c.bin"));
    // the sharded index of fuzz_st_index's two shards
    {
        ModelHeader c = micro_header(0);
        char json[8192];
        int n = snprintf(json, sizeof json, "{\"metadata\": {\"total_size\": 4000}, \"weight_map\": {");
        for (int t = 0, k = 0; t < N_TENSORS; t++) {
            if (t == T_LM_HEAD && c.tied) continue;
            int layers = tensor_is_per_layer(t) ? c.n_layers : 1;
            for (int l = 0; l < layers; l++, k++) {
                char hf[128];
                snprintf(hf, sizeof hf, TENSOR_HF_NAMES[t], l);
                n += snprintf(json + n, sizeof json - (size_t)n, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"", k ? ", " : "", hf, k < 5 ? 1 : 2);
            }
        }
        n += snprintf(json + n, sizeof json - (size_t)n, "}}\n");
        write_text("st_index", "index.json", json, (size_t)n);
    }
    // configs: every form the fixtures have
    copy_seed("config", "mha.json", -1, "tests/fixtures/mha_untied/hf_f32/config.json");
    copy_seed("config", "gqa_tied.json", -1, "tests/fixtures/gqa_tied/hf_bf16/config.json");
    copy_seed("config", "llama3.json", -1, "tests/fixtures/llama3_rope/hf_f32/config.json");
    copy_seed("config", "llama3_rope_parameters.json", -1, "tests/fixtures/llama3_rope/hf_altcfg/config.json");
    copy_seed("config", "eps.json", -1, "tests/fixtures/eps1e6/hf_f32/config.json");
    // token ids; command lines (NUL-separated)
    write_text("ids", "a.ids", "1 2 3\n4\t5 999\r\n\n0 17\n", 22);
    static const char args1[] = "-m\0m.bin\0-q\0int\0-b\0002\0-g\00064\0--train-tokens\0t.ids\0--steps\00010\0--batch\0004\0--micro-batch\0002\0--seq\00064\0--lr\0001e-3\0--save-every\0001\0-o\0out.bin";
    static const char args2[] = "--init\0tiny\0--vocab\000300\0--clip\0--calib\0c.ids\0-o\0x.bin\0-q\0nf3\0-g\000-1\0--loss\0cakld_ce\0--gamma\0000.5\0--schedule\0cosine\0--dtype\0bf16";
    static const char args3[] = "-m\0m.bin\0--eval-qa\0piqa,arc_easy\0--data\0d\0--limit\00010\0--eval-ppl\0v.ids\0-T\000128\0--eval-batch\0008\0--resume\0r.ckpt\0--stop-after\0003\0--inject-nan\0002";
    write_text("args", "train.args", args1, sizeof args1 - 1);
    write_text("args", "clip.args", args2, sizeof args2 - 1);
    write_text("args", "eval.args", args3, sizeof args3 - 1);
    // training JSONL (first byte: the row length - 2) and prompt sources (first byte: the kind)
    copy_seed("jsonl", "train.jsonl", 14, "tests/fixtures/data/train.jsonl");
    copy_seed("prompts", "wikitext.raw", 0, "tests/fixtures/data/wikitext.raw");
    copy_seed("prompts", "alpaca.json", 1, "tests/fixtures/data/alpaca.json");
    copy_seed("prompts", "alpaca.jsonl", 1, "tests/fixtures/data/alpaca.jsonl");
    copy_seed("prompts", "prompts.txt", 2, "tests/fixtures/data/prompts.txt");
    write_text("prompts", "mix.spec", "\003\040text:a=2,alpaca:b,wikitext:c", 35);
    // text files (first byte: even SentencePiece, odd BPE)
    copy_seed("text", "wiki_spm.txt", 0, "tests/fixtures/data/wikitext.raw");
    copy_seed("text", "prompts_bpe.txt", 1, "tests/fixtures/data/prompts.txt");
    static const char mixed[] = "\001Hello  world!\n\tcaf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80 \xff <|begin_of_text|>";
    write_text("text", "mixed_bpe.txt", mixed, sizeof mixed - 1);
    write_text("text", "mixed_spm.txt", "\000Hello world ab  \xe2\x96\x81 \xc3\xa9\xff\n", 26);
    // evaluation files (first byte: the format; a NUL before a label file)
    static const char *const evals[6] = {"piqa/valid.jsonl", "hellaswag/hellaswag_val.jsonl", "winogrande/dev.jsonl",
                                         "ARC-Easy/ARC-Easy-Test.jsonl", "ARC-Challenge/ARC-Challenge-Test.jsonl",
                                         "wikitext-2-raw/wiki.test.raw"};
    for (int k = 0; k < 6; k++) {
        char src[256];
        snprintf(src, sizeof src, "tests/fixtures/eval/%s", evals[k]);
        snprintf(name, sizeof name, "format%d", k);
        copy_seed("eval", name, k, src);
    }
    {   // PIQA and WinoGrande with their label files
        static const char *const lab[2][3] = {{"piqa/valid.jsonl", "piqa/valid-labels.lst", "piqa_labels"},
                                              {"winogrande/dev.jsonl", "winogrande/dev-labels.lst", "winogrande_labels"}};
        for (int k = 0; k < 2; k++) {
            char a[256], b[256];
            snprintf(a, sizeof a, "tests/fixtures/eval/%s", lab[k][0]);
            snprintf(b, sizeof b, "tests/fixtures/eval/%s", lab[k][1]);
            size_t na, nb;
            char *ta = read_file_or_die(a, &na), *tb = read_file_or_die(b, &nb);
            const char *path = out_path("eval", lab[k][2]);
            FILE *f = fopen_or_die(path, "wb");
            fputc(k ? 2 : 0, f);
            fwrite_or_die(ta, na, f, path);
            fputc(0, f);
            fwrite_or_die(tb, nb, f, path);
            fclose(f);
            free(ta); free(tb);
        }
    }
    printf("seeds written to %s\n", outdir);
    return 0;
}
