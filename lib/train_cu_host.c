// train_cu_host.c — train.c's host side for the GPU program: train.c itself, compiled as C
// without its main, behind the small interface of train_cu.h. Nothing here computes the model:
// it parses the command line, builds and loads models, samples data, writes models, logs and
// checkpoints, all with train.c's own functions, so that ./train_cu reads and writes exactly
// what ./train does.
#define TRAIN_NO_MAIN
#include "../train.c"
#include "train_cu.h"

_Static_assert(N_TENSORS == HM_TENSORS, "train_cu.h's tensor table must match model.h's");

static Args g_args;
static TrainData g_data;              // --train-tokens or --data, as train.c's main reads them
static Tokenizer g_tokenizer, *g_tok;
static const char *g_tok_path;        // the tokenizer's file, copied beside -o as ./train does
static char g_json[16384];

// Copies the Model's shape and table into the flat view train.cu uses.
static void host_view(HostModel *h, Model *m) {
    const ModelHeader *c = &m->cfg;
    memset(h, 0, sizeof *h);
    h->dim = c->dim; h->hidden_dim = c->hidden_dim; h->n_layers = c->n_layers; h->n_heads = c->n_heads;
    h->n_kv_heads = c->n_kv_heads; h->head_dim = c->head_dim; h->vocab_size = c->vocab_size;
    h->max_seq_len = c->max_seq_len; h->tied = c->tied; h->rms_norm_eps = c->rms_norm_eps;
    h->quant_method = m->quant.method; h->quant_bits = m->quant.bits; h->quant_group = m->quant.group;
    h->quant_ste = m->ste;
    h->n_params = m->n_params; h->n_table = m->n_table;
    for (int t = 0; t < N_TENSORS; t++) {
        int64_t r, k;
        tensor_slice_shape(c, t, &r, &k);
        h->offset[t] = m->params_t[t] ? m->params_t[t] - m->params : -1;
        h->slice[t] = m->slice[t];
        h->rows[t] = (int)r; h->cols[t] = (int)k;
        h->per_layer[t] = tensor_is_per_layer(t);
        h->is_linear[t] = tensor_is_linear(t);
    }
    h->params = m->params;
    h->adam_m = m->adam_m; h->adam_v = m->adam_v;
    h->cpu = m;
}

void host_json_add_path(const char *key, const char *path) {
    char q[4200], part[4400];
    snprintf(part, sizeof part, "\"%s\": %s", key, json_quote(q, sizeof q, path));
    host_json_add(part);
}

void host_stage_flag(const char *flag, const char *value) {
    int i = 0;
    while (i < g_stage_flags_n && strcmp(g_stage_flags[i].flag, flag) != 0) i++;
    if (i == (int)(sizeof g_stage_flags / sizeof g_stage_flags[0])) die("internal: more train_cu flags than the stages' table");
    if (i == g_stage_flags_n) g_stage_flags[g_stage_flags_n++].flag = flag;
    g_stage_flags[i].value = value;
}

void host_json_add(const char *text) {
    if (g_json[0]) strncat(g_json, ", ", sizeof g_json - strlen(g_json) - 1);
    strncat(g_json, text, sizeof g_json - strlen(g_json) - 1);
}

// main() of train.c up to the training loop, for the modes train_cu runs.
void host_setup(int argc, char **argv, HostArgs *ha, HostModel *student, HostModel *teacher, HostTrainState *hs) {
    Args a = parse_args(argc, argv);
    g_args = a;
    const char *train_path = a.train_tokens ? a.train_tokens : train_data_path(&a);
    static Model m, teacher_model;
    if (a.model_path) model_open(&m, a.model_path);  // a bad -m is named first, as ./train does
    if (!train_path && !a.eval_ppl && !a.out_path && !a.export_packed && a.histogram < 0 && !a.bench &&
        !a.generate_prompt && !a.eval_qa && !a.eval_heldout && !pipeline_wanted(&a))
        die("nothing to do: give --train-tokens, --data, --eval-ppl, --generate, --generate-data, --eval-qa, -o, "
            "--export-packed, --histogram or --bench (see --help)");
    if (!a.model_path) {
        if (!a.init_shape) die("give a model: -m FILE or --init SHAPE");
        model_from_flags(&a, &m);
    }
    int distill = distill_from_flags(&a, &m);
    memset(teacher, 0, sizeof *teacher);
    if (teacher_from_flags(&a, &m, &teacher_model)) host_view(teacher, &teacher_model);
    student_from_flags(&a, &m);
    g_tok_path = tokenizer_from_flags(&a, &m, &g_tokenizer, &g_tok);
    const ModelHeader *c = &m.cfg;
    if (c->quant_act_bits) die("train_cu does not quantize activations yet (--act-bits): use ./train");
    print_model(&m);
    char part[256];
    snprintf(part, sizeof part, "\"params\": %lld", (long long)m.n_params);
    host_json_add(part);
    host_view(student, &m);

    memset(ha, 0, sizeof *ha);
    int T = a.seq ? a.seq : (c->max_seq_len < 1024 ? c->max_seq_len : 1024);
    if (T > c->max_seq_len) die("--seq %d exceeds the model's context %d", T, c->max_seq_len);
    if (pipeline_wanted(&a)) {  // the whole method, each stage ./train_cu run again (pipeline.c)
        if (g_tok) tokenizer_free(g_tok);
        model_free(&m);
        exit(pipeline_run(&a, argc, argv));
    }
    if (a.eval_heldout) {  // on the CPU, with train.c's eval_heldout (no GPU path yet)
        char b[1024];
        printf("held-out evaluation: on the CPU, with train.c's eval_heldout\n");
        eval_heldout_from_flags(&a, &m, g_tok, T, b, sizeof b);
        host_json_add(b);
        host_finish();
        exit(0);
    }
    ha->train_tokens = a.train_tokens; ha->eval_ppl = a.eval_ppl; ha->out_path = a.out_path;
    ha->log_path = a.log_path; ha->resume = a.resume; ha->teacher_path = a.teacher_path;
    ha->steps = a.steps; ha->batch = a.batch; ha->micro_batch = a.micro_batch; ha->seq = T;
    ha->save_every = a.save_every; ha->stop_after = a.stop_after; ha->inject_nan = a.inject_nan;
    ha->lr = a.opt.lr; ha->min_lr = a.opt.min_lr; ha->beta1 = a.opt.beta1; ha->beta2 = a.opt.beta2;
    ha->eps = a.opt.eps; ha->weight_decay = a.opt.weight_decay; ha->grad_clip = a.opt.grad_clip;
    ha->warmup = a.opt.warmup; ha->schedule = a.opt.schedule;
    ha->distill = distill; ha->loss_kind = a.loss_kind; ha->gamma_batches = a.gamma_batches;
    ha->gamma_include_pad = a.gamma_include_pad; ha->gamma_given = a.gamma; ha->temperature = a.temperature;
    ha->eval_T = a.eval_T; ha->eval_batch = a.eval_batch;
    ha->generate_data = a.generate_data; ha->generate_prompt = a.generate_prompt; ha->eval_qa = a.eval_qa;
    ha->data = train_data_path(&a); ha->eval_every = a.eval_every;
    ha->bench = a.bench ? a.steps : 0; ha->clip = a.clip; ha->export_packed = a.export_packed; ha->histogram = a.histogram;
    if (train_path) {
        ckpt_path_from_flags(&a, ha->ckpt, sizeof ha->ckpt);
        train_data_from_flags(&g_data, &a, train_path, g_tok, T, c->vocab_size);
        ha->steps = g_data.steps;
        ha->n_eval = g_data.eval.n;
    }
    memset(hs, 0, sizeof *hs);
    hs->rng = rng_seeded(a.seed + 1).s;
    hs->gamma = -1.0;
}

void host_next_batch(int64_t k, uint64_t *rng, int *inputs, int *targets, int B, int T) {
    Rng r = {*rng};
    next_batch(&g_data.batches, k, &r, inputs, targets, B, T);
    *rng = r.s;
}

void host_eval_batch(int first, int nb, int *inputs, int *targets) {
    int idx[nb];
    for (int b = 0; b < nb; b++) idx[b] = first + b;
    dataset_batch(&g_data.eval, idx, nb, 0, inputs, targets);
}

float host_lr_at(int64_t step) { return lr_at(&g_args.opt, step, g_data.steps); }

void host_rope_tables(float *cosv, float *sinv, const HostModel *m, int T) {
    rope_tables(cosv, sinv, &((Model *)m->cpu)->cfg, T);
}

void host_alloc_training(HostModel *h) {
    Model *m = (Model *)h->cpu;
    model_alloc_training(m);
    h->adam_m = m->adam_m; h->adam_v = m->adam_v;
}

// The TrainState train.c writes: its main's T and loss kind (fields by name, so that a field
// train.c adds stays zero here rather than shifting the others).
static TrainState host_full_state(const HostModel *h, const HostTrainState *hs, int distill) {
    const ModelHeader *c = &((Model *)h->cpu)->cfg;
    TrainState st;
    memset(&st, 0, sizeof st);
    st.step = hs->step; st.micro_batches = hs->micro_batches; st.rng = hs->rng; st.gamma = hs->gamma;
    st.batch = g_args.batch; st.micro_batch = g_args.micro_batch;
    st.seq = g_args.seq ? g_args.seq : (c->max_seq_len < 1024 ? c->max_seq_len : 1024);
    st.loss_kind = distill ? g_args.loss_kind : -1;
    return st;
}

static char g_saved[4096];  // the checkpoint a stop leaves (host_checkpoint_note), "" for none
static int64_t g_saved_step, g_resumed_step;

void host_resume(HostModel *h, HostTrainState *hs) {
    Model *m = (Model *)h->cpu;
    TrainState st = host_full_state(h, hs, distill_from_flags(&g_args, (const Model *)h->cpu));
    resume_from_flags(&g_args, m, &st, g_data.steps);
    hs->step = st.step; hs->micro_batches = st.micro_batches; hs->rng = st.rng; hs->gamma = st.gamma;
    h->params = m->params; h->adam_m = m->adam_m; h->adam_v = m->adam_v;
    snprintf(g_saved, sizeof g_saved, "%s", g_args.resume);
    g_saved_step = g_resumed_step = st.step;
}

void host_checkpoint_save(const HostModel *h, const HostTrainState *hs) {
    TrainState st = host_full_state(h, hs, distill_from_flags(&g_args, (const Model *)h->cpu));
    char ckpt[4096];
    ckpt_path_from_flags(&g_args, ckpt, sizeof ckpt);
    if (!ckpt[0]) return;
    checkpoint_save(ckpt, (const Model *)h->cpu, &st);
    snprintf(g_saved, sizeof g_saved, "%s", ckpt);
    g_saved_step = st.step;
}

void host_checkpoint_note(char *dst, size_t n) { checkpoint_note(dst, n, g_saved[0] ? g_saved : NULL, g_saved_step); }

static StepLog g_log;

// One line of the JSONL log, in train.c's log_step format (written here rather than by calling
// log_step, whose arguments change as train.c grows): the step's numbers and the flip-flops.
void host_log_step(HostModel *h, int64_t step, double loss, double eval_loss, float lr, float norm, float tps, double gamma,
                   const int64_t *flips, const int64_t *flips_layer, int64_t flips_total) {
    if (!g_args.log_path) return;
    Model *m = (Model *)h->cpu;
    if (!g_log.f) steplog_open(&g_log, g_args.log_path, g_resumed_step);
    FILE *log = g_log.f;
    steplog_begin(&g_log);
    fprintf(log, "{\"step\": %lld, \"loss\": %.6f, \"lr\": %g, \"grad_norm\": %.6f, \"tokens_per_s\": %.1f",
            (long long)step, loss, lr, norm, tps);
    if (eval_loss >= 0) fprintf(log, ", \"eval_loss\": %.6f", eval_loss);
    if (gamma >= 0) fprintf(log, ", \"gamma\": %.6f", gamma);
    if (m->quant.method != QUANT_NONE) {
        int64_t n_codes = 0;
        for (int t = 0; t < N_TENSORS; t++) if (tensor_is_linear(t)) n_codes += m->slice[t] * m->cfg.n_layers;
        fprintf(log, ", \"flip_rate\": %.8f", (double)flips_total / n_codes);
        for (int t = 0; t < N_TENSORS; t++)
            if (tensor_is_linear(t)) fprintf(log, ", \"flips_%s\": %lld", TENSOR_NAMES[t], (long long)flips[t]);
        fprintf(log, ", \"flip_rate_layer\": [");
        int64_t per_layer = n_codes / m->cfg.n_layers;
        for (int l = 0; l < m->cfg.n_layers; l++) fprintf(log, "%s%.8f", l ? ", " : "", (double)flips_layer[l] / per_layer);
        fprintf(log, "]");
    }
    fprintf(log, "}\n");
    steplog_end(&g_log);
}

void host_write_model(const HostModel *h) { write_model_from_flags(&g_args, (const Model *)h->cpu, g_tok_path); }

// The host's parameters were just downloaded from the GPU: its codes and scales are stale.
static Model *host_fresh(HostModel *h) {
    Model *m = (Model *)h->cpu;
    if (m->quant.method != QUANT_NONE) m->quant_stale = 1;
    return m;
}

void host_clip(HostModel *h) {
    char b[1024];
    printf("clip: on the CPU, with train.c's clip_model (train_cu has no GPU clipping search yet)\n");
    clip_from_flags(&g_args, host_fresh(h), g_tok, b, sizeof b);
    host_json_add(b);
}

void host_export_packed(HostModel *h) {
    char b[4096 + 256];
    export_from_flags(&g_args, host_fresh(h), b, sizeof b);
    host_json_add(b);
}

void host_histogram(HostModel *h) {
    char b[4096];
    histogram_from_flags(&g_args, host_fresh(h), b, sizeof b);
    host_json_add(b);
}

double host_train_flops_per_token(const HostModel *h, int T) { return train_flops_per_token((const Model *)h->cpu, T); }

void host_bench_tokens(int *inputs, int *targets, int n, int V) {
    Rng rng = rng_seeded(g_args.seed);  // bench()'s tokens
    for (int i = 0; i < n; i++) { inputs[i] = (int)(rng_u64(&rng) % V); targets[i] = (int)(rng_u64(&rng) % V); }
}

int *host_load_eval_tokens(const HostModel *h, int64_t *n) {
    TokenStream s = eval_tokens_from_flags(&g_args, g_tok, ((const Model *)h->cpu)->cfg.vocab_size);
    *n = s.n;
    return s.ids;
}

void host_free(void *p) { free(p); }

void host_finish(void) {
    steplog_close(&g_log);
    printf("{%s}\n", g_json);
    stdout_check();
}

// ---------------------------------------------------------------------------------------------
// Generation and zero-shot evaluation: train.c's own code (generate_data, generate_text,
// eval_qa) with train.c's InferenceBackend pointed at the GPU. The adapters drop the Model
// argument, which train.cu cannot name: it runs the one model it was handed.

static const HostInference *g_gpu;
static void gpu_decode_begin(Model *m, int B, int T) { g_gpu->decode_begin(B, T); }
static const float *gpu_decode_step(Model *m, const int *tokens, int pos) { return g_gpu->decode_step(tokens, pos); }
static void gpu_decode_end(Model *m) { g_gpu->decode_end(); }
static void gpu_target_logprobs(Model *m, const int *inputs, const int *targets, int B, int T, double *lp) {
    g_gpu->target_logprobs(inputs, targets, B, T, lp);
}
static const InferenceBackend GPU_BACKEND = {gpu_decode_begin, gpu_decode_step, gpu_decode_end, gpu_target_logprobs};

static void use_gpu(const HostInference *gpu) {
    g_gpu = gpu;
    inference_backend = &GPU_BACKEND;
}

// train.c main's --generate-data, --generate and --eval-qa blocks.
void host_generate_data(HostModel *h, const HostInference *gpu) {
    char part[8000];
    use_gpu(gpu);
    generate_data_from_flags(&g_args, (Model *)h->cpu, g_tok, part, sizeof part);
    host_json_add(part);
}

void host_generate_text(HostModel *h, const HostInference *gpu) {
    char part[8000];
    use_gpu(gpu);
    generate_text_from_flags(&g_args, (Model *)h->cpu, g_tok, part, sizeof part);
    host_json_add(part);
}

void host_eval_qa(HostModel *h, const HostInference *gpu) {
    char qa[4096];
    use_gpu(gpu);
    eval_qa_from_flags(&g_args, (Model *)h->cpu, g_tok, qa, sizeof qa);
    host_json_add(qa);
}

// ---------------------------------------------------------------------------------------------
// The CPU model for the parity test.

void host_model_init(HostModel *h, const char *shape, int vocab, int untied, uint64_t seed, int q_method, int q_bits,
                     int q_group) {
    Model *m = calloc_or_die(1, sizeof(Model), "model");
    ModelHeader c = shape_header(shape);
    if (vocab) c.vocab_size = vocab;
    if (untied) c.tied = 0;
    int64_t sizes[N_TENSORS];
    float *p = malloc_or_die((size_t)tensor_sizes(&c, sizes) * sizeof(float), "parameters");
    init_params(&c, p, seed);
    model_setup(m, &c, p);
    if (q_method != QUANT_NONE) {
        QuantSpec q = {q_method, q_bits, q_group};
        model_apply_quant(m, q);
    }
    model_alloc_training(m);
    host_view(h, m);
}

void host_set_ste(HostModel *h, int ste) {
    ((Model *)h->cpu)->ste = ste;
    h->quant_ste = ste;
}

float host_cpu_forward(HostModel *h, const int *inputs, const int *targets, int B, int T) {
    return model_forward((Model *)h->cpu, inputs, targets, B, T);
}

const float *host_cpu_logits(const HostModel *h) { return ((const Model *)h->cpu)->logits; }
const float *host_cpu_grads(const HostModel *h) { return ((const Model *)h->cpu)->grads; }
const float *host_cpu_dlogits(const HostModel *h) { return ((const Model *)h->cpu)->act[A_DLOGITS]; }

void host_cpu_backward(HostModel *h) {
    Model *m = (Model *)h->cpu;
    model_zero_grad(m);
    model_backward(m);
}

void host_cpu_backward_from_dlogits(HostModel *h, const float *dlogits) {
    Model *m = (Model *)h->cpu;
    memcpy(m->act[A_DLOGITS], dlogits, (size_t)m->B * m->T * m->cfg.vocab_size * sizeof(float));
    model_zero_grad(m);
    model_backward_from_dlogits(m);
}

double host_cpu_distill_step(HostModel *hs, HostModel *ht, int loss_kind, float gamma, float temperature,
                             const int *inputs, const int *targets, int B, int T) {
    Model *s = (Model *)hs->cpu, *t = ht ? (Model *)ht->cpu : NULL;
    Distiller d;
    DistillLoss dl = {(LossKind)loss_kind, gamma, temperature};
    distiller_init(&d, dl, s->cfg.vocab_size, t ? t->cfg.vocab_size : s->cfg.vocab_size);
    model_zero_grad(s);
    double loss = distill_step(s, t, &d, inputs, targets, B, T, 1.0f);
    free(d.scratch);
    return loss;
}

const float *host_cpu_quantized(HostModel *h, const uint8_t **codes) {
    Model *m = (Model *)h->cpu;
    model_quantize(m);
    *codes = m->codes;
    return m->wq;
}

void host_cpu_adamw(HostModel *h, float lr) {
    OptConfig o = {.lr = lr, .min_lr = 0.0f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                   .weight_decay = 0.1f, .grad_clip = 0.0f, .warmup = 0, .schedule = SCHED_CONSTANT};
    adamw_update((Model *)h->cpu, &o, lr);
}

double host_cpu_gamma(HostModel *h, const int *targets, int B, int T) {
    Model *m = (Model *)h->cpu;
    double sum = 0;
    long long count = 0;
    gamma_accumulate(&sum, &count, m->logits, targets, B, T, m->cfg.vocab_size, 0);
    return count ? sum / count : 0.0;
}

void host_model_free(HostModel *h) {
    Model *m = (Model *)h->cpu;
    model_free(m);
    free(m);
    memset(h, 0, sizeof *h);
}
