// test_reference.c — train.c against Hugging Face transformers, forward and backward.
//
// tests/fixtures/<config>/ (made by dev/make_reference.py on a GPU machine) holds a small random
// LlamaForCausalLM as HF folders (fp32, bf16, sharded, the other config.json form), a token batch
// ids[B,T] with transformers' logits[B,T,V] and loss (labels = input_ids), and the gradient of that
// loss for every parameter. For each folder: ./convert it, run train.c's forward and backward on
// the same batch with targets[b,t] = ids[b,t+1] (-1, ignored, at t = T-1), and compare
//   logits:          max |ours - ref| / max |ref|                 < 1e-5
//   loss:            |ours - ref| / |ref|                          < 1e-5
//   every gradient:  max |ours - ref| / max |ref of that tensor|   < 1e-4
// The reference gradients are read in our layout by converting them as if they were weights:
// grads.safetensors uses the parameters' own names, so config.json + grads.safetensors is an HF
// folder that ./convert turns into a .bin whose "weights" are the gradients, in model.h's order.
// (For a tied model HF has one gradient for the embedding, the sum of its two uses; so must we.)
//
// Then a self-test, so that a pass means something: the same comparisons, logits and gradients,
// must FAIL when the model runs with a configuration field set wrong (rms_norm_eps off by 10x;
// the Llama-3 RoPE scaling dropped). If a fixture could not tell, it would not be testing it.
#define TRAIN_NO_MAIN
#include "../train.c"
#include "../lib/safetensors.h"
#include <dirent.h>

#define TOL_LOGITS 1e-5
#define TOL_LOSS 1e-5
#define TOL_GRAD 1e-4

static char g_tmp[64];  // scratch folder from mkdtemp, removed at exit (die() included)
static int g_failures = 0, g_checked = 0;

static void remove_tmp(void) {
    if (!g_tmp[0]) return;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", g_tmp);
}

static void run_or_die(const char *cmd) {
    if (system(cmd) != 0) die("command failed: %s", cmd);
}

// max |a - ref| / max |ref|
static double rel_err(const float *a, const float *ref, int64_t n) {
    double err = 0, mx = 0;
    for (int64_t i = 0; i < n; i++) {
        double dif = fabs((double)a[i] - ref[i]);
        if (isnan(dif)) return INFINITY;  // fmax would skip a NaN
        err = fmax(err, dif);
        mx = fmax(mx, fabs(ref[i]));
    }
    return mx > 0 ? err / mx : err;
}

// One fixture's batch and transformers' outputs (ref.safetensors).
typedef struct {
    int B, T, V;
    int *ids, *targets;  // [B,T]
    float *logits;       // [B,T,V]
    float loss;
} Reference;

static void reference_load(Reference *r, const char *fixture) {
    char path[2100];
    snprintf(path, sizeof path, "%s/ref.safetensors", fixture);
    SafeTensors st;
    st_open(&st, path);
    const StTensor *ids = st_find(&st, "input_ids"), *logits = st_find(&st, "logits"), *loss = st_find(&st, "loss");
    if (!ids || !logits || !loss) die("%s: missing input_ids, logits or loss", path);
    if (ids->ndim != 2 || logits->ndim != 3 || logits->shape[0] != ids->shape[0] ||
        logits->shape[1] != ids->shape[1] || loss->numel != 1 || ids->shape[1] < 2)
        die("%s: shapes of input_ids [B,T], logits [B,T,V] and loss [1] do not agree", path);
    r->B = (int)ids->shape[0]; r->T = (int)ids->shape[1]; r->V = (int)logits->shape[2];
    int64_t BT = (int64_t)r->B * r->T;
    r->ids = malloc_or_die((size_t)BT * sizeof(int), "ids");
    r->targets = malloc_or_die((size_t)BT * sizeof(int), "targets");
    r->logits = malloc_or_die((size_t)logits->numel * sizeof(float), "logits");
    st_read_i32(&st, ids, r->ids);
    st_read_f32(&st, logits, r->logits);
    st_read_f32(&st, loss, &r->loss);
    st_close(&st);
    for (int b = 0; b < r->B; b++)  // labels = input_ids, shifted inside HF: position t predicts t+1
        for (int t = 0; t < r->T; t++) r->targets[b * r->T + t] = t + 1 < r->T ? r->ids[b * r->T + t + 1] : -1;
}

static void reference_free(Reference *r) { free(r->ids); free(r->targets); free(r->logits); }

// The weight dtype written in a .bin's header (model_load reports fp32, the in-memory type).
static const char *bin_dtype(const char *path) {
    ModelHeader h;
    FILE *f = fopen_or_die(path, "rb");
    fread_exact(&h, sizeof h, f, path);
    fclose(f);
    return h.dtype == DTYPE_BF16 ? "bf16" : "f32";
}

// The reference gradients as a .bin in our tensor order (see the top of the file).
static float *reference_grads(const char *fixture, const Model *m, float *gptr[N_TENSORS]) {
    char gdir[128], gbin[128], cmd[8192];
    snprintf(gdir, sizeof gdir, "%s/grads_hf", g_tmp);
    snprintf(gbin, sizeof gbin, "%s/grads.bin", g_tmp);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir '%s' && cp '%s/hf_f32/config.json' '%s/' && "
             "cp '%s/grads.safetensors' '%s/model.safetensors' && ./convert '%s' '%s' --dtype f32 > /dev/null",
             gdir, gdir, fixture, gdir, fixture, gdir, gdir, gbin);
    run_or_die(cmd);
    ModelHeader gc;
    float *g = model_load(gbin, &gc);
    int64_t gs[N_TENSORS], ms[N_TENSORS];
    tensor_sizes(&gc, gs);
    tensor_sizes(&m->cfg, ms);
    for (int t = 0; t < N_TENSORS; t++)
        if (gs[t] != ms[t]) die("%s: reference gradient %s has %lld elements, the model %lld", gbin, TENSOR_NAMES[t], (long long)gs[t], (long long)ms[t]);
    tensor_carve(&gc, g, gptr);
    return g;
}

static void check_variant(const char *fixture, const char *name, const char *variant, const Reference *r) {
    char hf[2100], bin[128], cmd[8192];
    snprintf(hf, sizeof hf, "%s/%s", fixture, variant);
    if (!file_exists(hf)) return;
    snprintf(bin, sizeof bin, "%s/model.bin", g_tmp);
    snprintf(cmd, sizeof cmd, "./convert '%s' '%s' > /dev/null", hf, bin);  // bf16 folders give bf16 .bin files
    run_or_die(cmd);
    const char *dtype = bin_dtype(bin);

    Model m;
    model_load_file(&m, bin);
    if (m.cfg.vocab_size != r->V) die("%s: vocab_size %d, the reference logits have %d", bin, m.cfg.vocab_size, r->V);
    model_alloc_training(&m);
    model_zero_grad(&m);
    float loss = model_forward(&m, r->ids, r->targets, r->B, r->T);
    double e_logits = rel_err(m.logits, r->logits, (int64_t)r->B * r->T * r->V);
    double e_loss = fabs((double)loss - r->loss) / fabs(r->loss);
    model_backward(&m);

    float *gptr[N_TENSORS];
    float *gref = reference_grads(fixture, &m, gptr);
    int64_t sizes[N_TENSORS];
    tensor_sizes(&m.cfg, sizes);
    double worst = 0;
    int worst_t = 0;
    for (int t = 0; t < N_TENSORS; t++) {
        if (!sizes[t]) continue;  // lm_head of a tied model
        double e = rel_err(m.grads_t[t], gptr[t], sizes[t]);
        if (e > worst) { worst = e; worst_t = t; }
    }
    int ok = e_logits < TOL_LOGITS && e_loss < TOL_LOSS && worst < TOL_GRAD;
    printf("  %-12s %-11s %-4s  %9.2e %9.2e  %-10s %9.2e  %s\n", name, variant, dtype, e_logits, e_loss,
           TENSOR_NAMES[worst_t], worst, ok ? "ok" : "FAIL");
    g_failures += !ok;
    g_checked++;
    free(gref);
    model_free(&m);
}

// Self-test: with one config field set wrong, the logits AND the gradients must both miss.
enum { WRONG_EPS, WRONG_NO_ROPE_SCALING };

static void check_detects(const char *fixture, const char *name, const Reference *r, int wrong) {
    char bin[128], cmd[8192];
    snprintf(bin, sizeof bin, "%s/model.bin", g_tmp);
    snprintf(cmd, sizeof cmd, "./convert '%s/hf_f32' '%s' > /dev/null", fixture, bin);
    run_or_die(cmd);
    Model m;
    model_load_file(&m, bin);
    char what[96];
    if (wrong == WRONG_EPS) {
        snprintf(what, sizeof what, "rms_norm_eps %g -> %g", m.cfg.rms_norm_eps, 10 * m.cfg.rms_norm_eps);
        m.cfg.rms_norm_eps *= 10;
    } else {
        if (m.cfg.rope_scaling != ROPE_LLAMA3) { model_free(&m); return; }
        snprintf(what, sizeof what, "Llama-3 RoPE scaling dropped");
        m.cfg.rope_scaling = ROPE_NONE;  // the RoPE tables are built from cfg at the first forward
    }
    model_alloc_training(&m);
    model_zero_grad(&m);
    model_forward(&m, r->ids, r->targets, r->B, r->T);
    double e_logits = rel_err(m.logits, r->logits, (int64_t)r->B * r->T * r->V);
    model_backward(&m);
    float *gptr[N_TENSORS];
    float *gref = reference_grads(fixture, &m, gptr);
    int64_t sizes[N_TENSORS];
    tensor_sizes(&m.cfg, sizes);
    double e_grad = 0;
    for (int t = 0; t < N_TENSORS; t++)
        if (sizes[t]) e_grad = fmax(e_grad, rel_err(m.grads_t[t], gptr[t], sizes[t]));
    int detected = e_logits > TOL_LOGITS && e_grad > TOL_GRAD;
    printf("  %-12s %-32s %9.2e %9.2e  %s\n", name, what, e_logits, e_grad, detected ? "detected" : "NOT DETECTED");
    g_failures += !detected;
    g_checked++;
    free(gref);
    model_free(&m);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(void) {
    const char *root = "tests/fixtures";
    DIR *d = opendir(root);
    if (!d) { printf("skipped: %s is absent\n", root); return 0; }
    if (!file_exists("./convert")) die("./convert: not built (run make convert)");
    snprintf(g_tmp, sizeof g_tmp, "/tmp/test_reference.XXXXXX");
    if (!mkdtemp(g_tmp)) die("%s: mkdtemp failed", g_tmp);
    atexit(remove_tmp);

    // fixtures = the subfolders holding a ref.safetensors, in name order
    char *names[64];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 64) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s/ref.safetensors", root, e->d_name);
        if (e->d_name[0] != '.' && file_exists(p)) names[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (n == 0) { printf("FAIL: no fixture (*/ref.safetensors) under %s\n", root); return 1; }
    qsort(names, (size_t)n, sizeof names[0], cmp_str);

    printf("train.c against transformers (%s): relative errors; tolerance %.0e logits and loss, %.0e gradients\n",
           root, TOL_LOGITS, TOL_GRAD);
    printf("  %-12s %-11s %-4s  %9s %9s  %-10s %9s\n", "fixture", "variant", ".bin", "logits", "loss", "worst grad", "error");
    const char *variants[] = {"hf_f32", "hf_bf16", "hf_sharded", "hf_altcfg"};
    Reference refs[64];
    for (int i = 0; i < n; i++) {
        char fixture[1024];
        snprintf(fixture, sizeof fixture, "%s/%s", root, names[i]);
        reference_load(&refs[i], fixture);
        for (int v = 0; v < 4; v++) check_variant(fixture, names[i], variants[v], &refs[i]);
    }
    printf("self-test: a wrong model must miss both tolerances (logits %.0e, gradients %.0e)\n", TOL_LOGITS, TOL_GRAD);
    printf("  %-12s %-32s %9s %9s\n", "fixture", "what is wrong", "logits", "worst grad");
    for (int i = 0; i < n; i++) {
        char fixture[1024];
        snprintf(fixture, sizeof fixture, "%s/%s", root, names[i]);
        check_detects(fixture, names[i], &refs[i], WRONG_EPS);
        check_detects(fixture, names[i], &refs[i], WRONG_NO_ROPE_SCALING);
        reference_free(&refs[i]);
        free(names[i]);
    }
    printf("%s: %d of %d checks failed\n", g_failures ? "FAILED" : "passed", g_failures, g_checked);
    return g_failures ? 1 : 0;
}
