// checkpoint.c — what a training run writes besides the model: checkpoints to resume from (the
// weights, AdamW moments and TrainState) and the JSONL log of every step.
//
// #included by train.c after the model (section 10): it uses the Model and util.h's atomic files.
#ifndef CHECKPOINT_C
#define CHECKPOINT_C

// Everything a resumed run needs besides the weights and AdamW moments: with it, training N
// steps straight and training k steps, stopping, then resuming to N give the same bits.
typedef struct {
    int64_t step;          // optimizer steps done
    int64_t micro_batches; // micro-batches consumed (the data position)
    uint64_t rng;          // the data sampler's state
    double gamma;          // the teacher's confidence (measured once, before step 1)
    int32_t batch, micro_batch, seq, loss_kind;  // must match on resume
} TrainState;

// ---------------------------------------------------------------------------------------------
// Checkpoints (magic "BDLC"): the student's ModelHeader, TrainState, then params (table and
// learned scales), AdamW m and v, all fp32. Written atomically, so a kill at any moment leaves
// the previous checkpoint or the new one, never half of one.

#define CKPT_MAGIC 0x434c4442u  // "BDLC"

static void checkpoint_save(const char *path, const Model *m, const TrainState *st) {
    uint32_t magic = CKPT_MAGIC, version = 1;
    ModelHeader h = m->cfg;
    h.dtype = DTYPE_F32;
    AtomicFile a;
    atomic_open(&a, path);
    atomic_write(&a, &magic, 4);
    atomic_write(&a, &version, 4);
    atomic_write(&a, &h, sizeof h);
    atomic_write(&a, st, sizeof *st);
    atomic_write(&a, m->params, (size_t)m->n_params * sizeof(float));
    atomic_write(&a, m->adam_m, (size_t)m->n_params * sizeof(float));
    atomic_write(&a, m->adam_v, (size_t)m->n_params * sizeof(float));
    atomic_commit(&a);
}

// Restores a checkpoint into a student set up the same way (same model, same quantizer).
static void checkpoint_load(const char *path, Model *m, TrainState *st) {
    FILE *f = fopen_or_die(path, "rb");
    int64_t fsize = file_size_or_die(f, path);
    uint32_t magic = 0, version = 0;
    ModelHeader h;
    if (fsize < 8 + (int64_t)sizeof h + (int64_t)sizeof *st) die("%s: truncated checkpoint", path);
    fread_exact(&magic, 4, f, path);
    fread_exact(&version, 4, f, path);
    if (magic != CKPT_MAGIC) die("%s: not a checkpoint (bad magic)", path);
    if (version != 1) die("%s: unsupported checkpoint version %u", path, version);
    fread_exact(&h, sizeof h, f, path);
    ModelHeader want = m->cfg;
    h.dtype = want.dtype = DTYPE_F32;
    if (memcmp(&h, &want, sizeof h) != 0)
        die("%s: a checkpoint of another model or quantizer (dim %d, %d layers, vocab %d, -q %s -b %d -g %d)", path,
            h.dim, h.n_layers, h.vocab_size, quant_method_name(h.quant_method), h.quant_bits, h.quant_group);
    int64_t want_size = 8 + (int64_t)sizeof h + (int64_t)sizeof *st + 3 * m->n_params * 4;
    if (fsize != want_size) die("%s: %lld bytes, expected %lld", path, (long long)fsize, (long long)want_size);
    TrainState saved;
    fread_exact(&saved, sizeof saved, f, path);
    if (saved.step < 0 || saved.micro_batches < 0 || !(saved.gamma == -1.0 || (saved.gamma >= 0.0 && saved.gamma <= 1.0)))
        die("%s: corrupt training state (step %lld, %lld micro-batches, gamma %g)", path,
            (long long)saved.step, (long long)saved.micro_batches, saved.gamma);
    if (saved.batch != st->batch || saved.micro_batch != st->micro_batch || saved.seq != st->seq || saved.loss_kind != st->loss_kind)
        die("%s: saved with --batch %d --micro-batch %d --seq %d --loss %s; resume with the same settings", path,
            saved.batch, saved.micro_batch, saved.seq, saved.loss_kind >= 0 && saved.loss_kind < N_LOSSES ? LOSS_NAMES[saved.loss_kind] : "?");
    model_alloc_training(m);
    fread_exact(m->params, (size_t)m->n_params * 4, f, path);
    fread_exact(m->adam_m, (size_t)m->n_params * 4, f, path);
    fread_exact(m->adam_v, (size_t)m->n_params * 4, f, path);
    fclose(f);
    for (int64_t i = 0; i < m->n_params; i++)
        if (!isfinite(m->params[i]) || !isfinite(m->adam_m[i]) || !isfinite(m->adam_v[i]))
            die("%s: NaN or Inf in the saved state", path);
    *st = saved;
    m->step = st->step;
    if (m->quant.method != QUANT_NONE) m->quant_stale = 1;
}

// What a run stopped by a NaN leaves to resume from: the checkpoint last written or resumed
// from (path, step), or none.
static void checkpoint_note(char *dst, size_t n, const char *path, int64_t step) {
    if (path) snprintf(dst, n, "the checkpoint %.4000s of step %lld is intact", path, (long long)step);
    else snprintf(dst, n, "no checkpoint was written");
}

// The JSONL log (--log FILE): one line per step, flushed as it is written. A failed write (a
// full disk) stops the run, the file cut back to its last whole line. A resumed run continues
// the log of the run it resumes, but first drops the lines of the steps after its checkpoint
// (that run went on past it before it stopped, and this one does those steps again) and a line
// cut short by a kill, so that each step is logged once. A log that is not a regular file (a
// FIFO, /dev/stdout) is only written to.
typedef struct {
    FILE *f;
    const char *path;
    int64_t line_start;  // the file's size before the line being written; -1: not a regular file
} StepLog;

static void steplog_open(StepLog *l, const char *path, int64_t resumed_step) {
    memset(l, 0, sizeof *l);
    l->path = path;
    struct stat st;
    if (resumed_step > 0 && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
        size_t len, keep = 0;
        char *text = read_file_or_die(path, &len);
        while (keep < len) {  // the whole lines {"step": N, ... with N <= resumed_step
            const char *line = text + keep, *eol = memchr(line, '\n', len - keep);
            if (!eol || strncmp(line, "{\"step\": ", 9) || line[9] < '0' || line[9] > '9' ||
                strtoll(line + 9, NULL, 10) > resumed_step) break;
            keep = (size_t)(eol - text) + 1;
        }
        free(text);
        if (keep < len && truncate(path, (off_t)keep) != 0)
            die("%s: cannot drop the lines after step %lld (%s)", path, (long long)resumed_step, strerror(errno));
    }
    l->f = fopen(path, resumed_step > 0 ? "a" : "w");
    if (!l->f) die("%s: cannot open (%s)", path, strerror(errno));
}

// Before a line: where the file ends now.
static void steplog_begin(StepLog *l) {
    struct stat st;
    l->line_start = fstat(fileno(l->f), &st) == 0 && S_ISREG(st.st_mode) ? (int64_t)st.st_size : -1;
}

// After it: the line is on disk, or the run stops with the file as it was before the line.
static void steplog_end(StepLog *l) {
    int err = fflush(l->f) != 0 ? errno : 0;
    if (!ferror(l->f)) return;
    if (l->line_start >= 0 && ftruncate(fileno(l->f), (off_t)l->line_start) != 0) { /* the write error is the news */ }
    die("%s: write failed%s%s%s", l->path, err ? " (" : "", err ? strerror(err) : "", err ? ")" : "");
}

static void steplog_close(StepLog *l) {
    if (!l->f) return;
    if (fclose(l->f) != 0) die("%s: close failed (%s)", l->path, strerror(errno));
    l->f = NULL;
}

// One line of the JSONL log: the step's numbers and, for a student, its flip-flops.
static void log_step(StepLog *sl, const Model *m, int64_t step, double loss, double eval_loss, float lr, float norm, float tps,
                     double gamma) {
    FILE *log = sl->f;
    steplog_begin(sl);
    fprintf(log, "{\"step\": %lld, \"loss\": %.6f, \"lr\": %g, \"grad_norm\": %.6f, \"tokens_per_s\": %.1f",
            (long long)step, loss, lr, norm, tps);
    if (eval_loss >= 0) fprintf(log, ", \"eval_loss\": %.6f", eval_loss);
    if (gamma >= 0) fprintf(log, ", \"gamma\": %.6f", gamma);
    if (m->quant.method != QUANT_NONE) {  // per tensor and per layer too, for plots
        fprintf(log, ", \"flip_rate\": %.8f", (double)m->flips_total / m->n_codes);
        for (int t = 0; t < N_TENSORS; t++)
            if (tensor_is_linear(t)) fprintf(log, ", \"flips_%s\": %lld", TENSOR_NAMES[t], (long long)m->flips[t]);
        fprintf(log, ", \"flip_rate_layer\": [");  // per layer: flipped / codes of that layer
        int64_t per_layer = m->n_codes / m->cfg.n_layers;
        for (int l = 0; l < m->cfg.n_layers; l++) fprintf(log, "%s%.8f", l ? ", " : "", (double)m->flips_layer[l] / per_layer);
        fprintf(log, "]");
    }
    fprintf(log, "}\n");
    steplog_end(sl);
}

#endif
