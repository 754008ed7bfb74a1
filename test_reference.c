// test_reference.c — train.c against Hugging Face transformers, forward and backward.
//
// tests/fixtures/<config>/ (made by dev/make_reference.py on a GPU machine) holds a small random
// LlamaForCausalLM as HF folders (fp32, bf16, sharded, the other config.json form), a token batch
// with transformers' logits and loss (labels = input_ids), and the gradient of that loss for every
// parameter. For each folder: ./convert it, run train.c's forward and backward on the same batch,
// and compare
//   logits and loss:  max |ours - ref| / max |ref| < 1e-5
//   every gradient:   max |ours - ref| / max |ref of that tensor| < 1e-4
// The reference gradients are read in our layout by converting them as if they were weights:
// grads.safetensors uses the parameters' own names, so config.json + grads.safetensors is an HF
// folder that ./convert turns into a .bin whose "weights" are the gradients.
#define TRAIN_NO_MAIN
#include "train.c"
#include "safetensors.h"
#include <dirent.h>

static char g_tmp[64];
static int g_failures = 0, g_checked = 0;

static void run(const char *cmd) {
    if (system(cmd) != 0) { printf("FAIL: command failed: %s\n", cmd); exit(1); }
}

static double rel_err(const float *a, const float *ref, int64_t n) {
    double err = 0, mx = 0;
    for (int64_t i = 0; i < n; i++) { err = fmax(err, fabs((double)a[i] - ref[i])); mx = fmax(mx, fabs(ref[i])); }
    return mx > 0 ? err / mx : err;
}

static void check_variant(const char *fixture, const char *variant) {
    char hf[2100], bin[1024], ref[2100], cmd[8192];
    snprintf(hf, sizeof hf, "%s/%s", fixture, variant);
    if (!file_exists(hf)) return;
    snprintf(bin, sizeof bin, "%s/model.bin", g_tmp);
    snprintf(cmd, sizeof cmd, "./convert %s %s --dtype f32 > /dev/null", hf, bin);
    run(cmd);

    // the batch and transformers' outputs
    snprintf(ref, sizeof ref, "%s/ref.safetensors", fixture);
    SafeTensors st;
    st_open(&st, ref);
    const StTensor *ids_t = st_find(&st, "input_ids"), *logits_t = st_find(&st, "logits"), *loss_t = st_find(&st, "loss");
    if (!ids_t || !logits_t || !loss_t || ids_t->ndim != 2) die("%s: missing input_ids, logits or loss", ref);
    int B = (int)ids_t->shape[0], T = (int)ids_t->shape[1];
    int *ids = malloc_or_die((size_t)B * T * sizeof(int), "ids"), *targets = malloc_or_die((size_t)B * T * sizeof(int), "targets");
    st_read_i32(&st, ids_t, ids);
    float *ref_logits = malloc_or_die((size_t)logits_t->numel * sizeof(float), "logits"), ref_loss;
    st_read_f32(&st, logits_t, ref_logits);
    st_read_f32(&st, loss_t, &ref_loss);
    st_close(&st);
    for (int b = 0; b < B; b++)  // labels = input_ids, shifted: position t predicts t+1
        for (int t = 0; t < T; t++) targets[b * T + t] = t + 1 < T ? ids[b * T + t + 1] : -1;

    Model m;
    model_load_file(&m, bin);
    if ((int64_t)B * T * m.cfg.vocab_size != logits_t->numel) die("%s: logits shape does not match the model", ref);
    model_alloc_training(&m);
    model_zero_grad(&m);
    float loss = model_forward(&m, ids, targets, B, T);
    model_backward(&m);
    double e_logits = rel_err(m.logits, ref_logits, logits_t->numel);
    double e_loss = fabs((double)loss - ref_loss) / fabs(ref_loss);

    // the reference gradients, in our tensor order
    char gdir[1024], gbin[1024];
    snprintf(gdir, sizeof gdir, "%s/grads_hf", g_tmp);
    snprintf(gbin, sizeof gbin, "%s/grads.bin", g_tmp);
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s && cp %s/hf_f32/config.json %s/ && cp %s/grads.safetensors %s/model.safetensors"
             " && ./convert %s %s --dtype f32 > /dev/null", gdir, gdir, fixture, gdir, fixture, gdir, gdir, gbin);
    run(cmd);
    ModelHeader gc;
    float *gref = model_load(gbin, &gc);
    float *gptr[N_TENSORS];
    tensor_carve(&gc, gref, gptr);
    double worst = 0;
    int worst_t = 0;
    for (int t = 0; t < N_TENSORS; t++) {
        if (!m.grads_t[t]) continue;
        double e = rel_err(m.grads_t[t], gptr[t], m.slice[t] * (tensor_is_per_layer(t) ? m.cfg.n_layers : 1));
        if (e > worst) { worst = e; worst_t = t; }
    }
    int ok = e_logits < 1e-5 && e_loss < 1e-5 && worst < 1e-4;
    const char *name = strrchr(fixture, '/') ? strrchr(fixture, '/') + 1 : fixture;
    printf("  %-12s %-11s %9.2e %9.2e  %-10s %9.2e  %s\n", name, variant, e_logits, e_loss, TENSOR_NAMES[worst_t], worst, ok ? "ok" : "FAIL");
    g_failures += !ok;
    g_checked++;
    free(gref); free(ids); free(targets); free(ref_logits);
    model_free(&m);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(void) {
    const char *root = "tests/fixtures";
    DIR *d = opendir(root);
    if (!d) { printf("skipped: %s is absent\n", root); return 0; }
    snprintf(g_tmp, sizeof g_tmp, "/tmp/test_reference.XXXXXX");
    if (!mkdtemp(g_tmp)) die("mkdtemp failed");
    char *names[64];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 64) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s/ref.safetensors", root, e->d_name);
        if (e->d_name[0] != '.' && file_exists(p)) names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], cmp_str);
    printf("against transformers (%s): relative errors, tolerance 1e-5 (logits, loss), 1e-4 (gradients)\n", root);
    printf("  %-12s %-11s %9s %9s  %-10s %9s\n", "fixture", "variant", "logits", "loss", "worst grad", "error");
    const char *variants[] = {"hf_f32", "hf_bf16", "hf_sharded", "hf_altcfg"};
    for (int i = 0; i < n; i++) {
        char fixture[1024];
        snprintf(fixture, sizeof fixture, "%s/%s", root, names[i]);
        for (int v = 0; v < 4; v++) check_variant(fixture, variants[v]);
        free(names[i]);
    }
    char rm[128];
    snprintf(rm, sizeof rm, "rm -rf %s", g_tmp);
    if (system(rm) != 0) fprintf(stderr, "warning: could not remove %s\n", g_tmp);
    if (g_checked == 0) { printf("FAIL: no fixture found under %s\n", root); return 1; }
    printf("%s: %d of %d variants beyond tolerance\n", g_failures ? "FAILED" : "passed", g_failures, g_checked);
    return g_failures ? 1 : 0;
}
