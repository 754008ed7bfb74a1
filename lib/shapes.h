// shapes.h — the named shapes of `./train --init NAME`: Llama configurations from a 200k-parameter
// byte-level model (the demo's and the tests' model) to Llama-2-7B, for random baselines and
// benchmarks (real weights cannot be downloaded on the test machines).
#ifndef SHAPES_H
#define SHAPES_H

#include "model.h"  // defines: ModelHeader, header_defaults, ROPE_NONE, ROPE_LLAMA3

typedef struct {
    const char *name;
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, head_dim, vocab_size, max_seq_len, tied;
    float rope_theta, rms_norm_eps;
    int rope_scaling;  // ROPE_LLAMA3 shapes scale by factor 32, low 1, high 4, original 8192
    int bos_id, eos_id;
} NamedShape;

static const NamedShape SHAPES[] = {
    // a byte-level model of ~200k parameters: the demo's teacher and the tests' model
    {"tiny", 64, 192, 4, 8, 4, 8, 256, 256, 1, 10000.0f, 1e-5f, ROPE_NONE, -1, -1},
    // ~11M and ~42M parameters, Llama-2's vocabulary: with bench-100m, the family of teachers of
    // growing size that dev/teacher_size.sh pretrains on one corpus
    {"study-10m", 256, 768, 4, 8, 4, 32, 32000, 1024, 1, 10000.0f, 1e-5f, ROPE_NONE, 1, 2},
    {"study-40m", 512, 1536, 8, 8, 4, 64, 32000, 1024, 1, 10000.0f, 1e-5f, ROPE_NONE, 1, 2},
    // ~110M parameters: the CPU benchmark's shape
    {"bench-100m", 768, 2048, 12, 12, 4, 64, 32000, 1024, 1, 10000.0f, 1e-5f, ROPE_NONE, 1, 2},
    {"tinyllama-1.1b", 2048, 5632, 22, 32, 4, 64, 32000, 2048, 0, 10000.0f, 1e-5f, ROPE_NONE, 1, 2},
    {"llama-3.2-1b", 2048, 8192, 16, 32, 8, 64, 128256, 131072, 1, 500000.0f, 1e-5f, ROPE_LLAMA3, 128000, 128001},
    {"llama-3.2-3b", 3072, 8192, 28, 24, 8, 128, 128256, 131072, 1, 500000.0f, 1e-5f, ROPE_LLAMA3, 128000, 128001},
    {"llama-2-7b", 4096, 11008, 32, 32, 32, 128, 32000, 4096, 0, 10000.0f, 1e-5f, ROPE_NONE, 1, 2},
};
#define N_SHAPES ((int)(sizeof SHAPES / sizeof SHAPES[0]))

static ModelHeader shape_header(const char *name) {
    for (int i = 0; i < N_SHAPES; i++) {
        const NamedShape *s = &SHAPES[i];
        if (strcmp(s->name, name) != 0) continue;
        ModelHeader c = header_defaults();
        c.dim = s->dim; c.hidden_dim = s->hidden_dim; c.n_layers = s->n_layers;
        c.n_heads = s->n_heads; c.n_kv_heads = s->n_kv_heads; c.head_dim = s->head_dim;
        c.vocab_size = s->vocab_size; c.max_seq_len = s->max_seq_len; c.tied = s->tied;
        c.rope_theta = s->rope_theta; c.rms_norm_eps = s->rms_norm_eps;
        c.bos_id = s->bos_id; c.eos_id = s->eos_id;
        if (s->rope_scaling == ROPE_LLAMA3) {
            c.rope_scaling = ROPE_LLAMA3; c.rope_factor = 32.0f;
            c.rope_low_freq_factor = 1.0f; c.rope_high_freq_factor = 4.0f;
            c.rope_original_max_pos = 8192;
        }
        return c;
    }
    fprintf(stderr, "error: unknown shape '%s'; known:", name);
    for (int i = 0; i < N_SHAPES; i++) fprintf(stderr, " %s", SHAPES[i].name);
    fputc('\n', stderr);
    exit(1);
}

#endif
