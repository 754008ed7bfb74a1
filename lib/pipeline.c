// pipeline.c — `./train -m MODEL -b 2`: BitDistiller (Du et al. 2024) end to end, in a run folder.
//
// #included by train.c after lib/cli.c (the command line): it uses Args, the Model, Dataset
// (data.c), the Tokenizer, json.h and util.h's checked and atomic I/O.
//
// With a quantizer (-q/-b/-g) and no training data or other mode, the program runs the method's
// five stages, each writing its output into the run folder (STUDENT without .bin, plus .run/):
//   1. teacher data   generated.jsonl: the teacher writes its students' training data, from
//                     --prompts, or data-free (LLM-QAT, Liu et al. 2023: from BOS; data.c).
//                     calib.ids: the tokens of its training part (all but the first fifth).
//   2. clipping       clipped.bin: the asymmetric clipping search (int, nf3, nf4) on calib.ids.
//   3. QAT            STUDENT: CAKLD self-distillation from the clipped weights on generated.jsonl,
//                     checkpointed to qat.ckpt and resumed from it when the stage was stopped.
//   4. evaluation     eval_{fp,rtn,clip,qat}.json: perplexity on the held-out fifth of the
//                     generated data and top-1 agreement with the teacher's next-token choice.
//   5. output         loss.svg (the curve of train.jsonl), results.json, the printed table and
//                     the final JSON line.
// Every output is written atomically, so "the file exists" means "the stage is complete", and a
// stopped run continues where it stopped by running the same command again.
//
// Design: each stage re-runs this very program (the running executable) with the flags of the
// mode that does that stage (--generate-data, --clip, --data, --eval-heldout), and reads the
// stage's final JSON line. Three reasons against calling the modes' functions in-process:
//   - the same driver serves ./train_cu unchanged: its stages then run on the GPU through
//     train_cu's own main, which has its own training loop that this file cannot call;
//   - each stage returns its memory when it ends (a 1.1B teacher's training state is not held
//     while the next stage loads its models);
//   - each stage is printed as a command a user can run (or rerun) alone, and the modes keep
//     their meaning: the pipeline adds no second path through the method.
// fork/exec/waitpid are POSIX, in the C library, as the house rules want.
#ifndef PIPELINE_C
#define PIPELINE_C

#include <sys/wait.h>   // defines: waitpid, WIFEXITED, WEXITSTATUS
#include <unistd.h>     // defines: fork, execv, pipe, dup2, readlink

// ============================================================================================
// A. The held-out evaluation (--eval-heldout FILE): one model on the first fifth of a --data file

// Over every position t of every held-out example with a real next token (t+1 < n_real):
//   ppl   = exp( -1/N sum log softmax(z_t)[x_{t+1}] )
//   agree = 1/N sum [argmax z_t == argmax z^teacher_t]   (the teacher's next-token choice)
// Each example starts at BOS, as the training rows do, so this is the perplexity the student
// reaches on text its teacher writes (BitDistiller's objective), and agreement says how often
// the student would pick the teacher's greedy token. agree is -1 without a teacher.
typedef struct { double ppl, nll, agree; int64_t tokens; int examples; } HeldoutResult;

static int argmax_row(const float *z, int V) {
    int best = 0;
    for (int i = 1; i < V; i++) best = z[i] > z[best] ? i : best;
    return best;
}

static HeldoutResult eval_heldout(Model *m, Model *teacher, const Dataset *ev, int B) {
    if (ev->n == 0) die("--eval-heldout: no held-out examples (fewer than 5 in the file)");
    int T = ev->seq, V = m->cfg.vocab_size;
    int *inputs = malloc_or_die((size_t)B * T * sizeof(int), "inputs"), *targets = malloc_or_die((size_t)B * T * sizeof(int), "targets");
    int *idx = malloc_or_die((size_t)B * sizeof(int), "batch"), *choice = malloc_or_die((size_t)B * T * sizeof(int), "choices");
    double nll = 0.0;
    int64_t n = 0, same = 0;
    for (int i0 = 0; i0 < ev->n; i0 += B) {
        int nb = ev->n - i0 < B ? ev->n - i0 : B;
        for (int b = 0; b < nb; b++) idx[b] = i0 + b;
        dataset_batch(ev, idx, nb, 0, inputs, targets);
        if (teacher) {
            model_forward(teacher, inputs, NULL, nb, T);
            for (int i = 0; i < nb * T; i++) choice[i] = targets[i] >= 0 ? argmax_row(teacher->logits + (int64_t)i * teacher->cfg.vocab_size, teacher->cfg.vocab_size) : -1;
        }
        model_forward(m, inputs, NULL, nb, T);
        for (int i = 0; i < nb * T; i++) {
            if (targets[i] < 0) continue;
            const float *z = m->logits + (int64_t)i * V;
            int top = argmax_row(z, V);
            double sum = 0.0;
            for (int v = 0; v < V; v++) sum += exp((double)z[v] - z[top]);
            nll += log(sum) - ((double)z[targets[i]] - z[top]);
            n++;
            if (teacher) same += top == choice[i];
        }
    }
    free(inputs); free(targets); free(idx); free(choice);
    HeldoutResult r = {exp(nll / (n ? n : 1)), nll / (n ? n : 1), teacher ? (double)same / (n ? n : 1) : -1.0, n, ev->n};
    return r;
}

// --eval-heldout FILE [-t TEACHER]: the result's part of the JSON line into json.
static void eval_heldout_from_flags(const Args *a, Model *m, const Tokenizer *tok, int T, char *json, size_t n) {
    Dataset all, train, ev;
    dataset_load(&all, a->eval_heldout, tok, T, m->cfg.vocab_size);
    dataset_split(&all, &train, &ev);
    Model teacher, *t = NULL;
    if (a->teacher_path) {
        model_open(&teacher, a->teacher_path);
        if (teacher.cfg.vocab_size != m->cfg.vocab_size)
            die("%s: the teacher's vocabulary (%d) differs from the model's (%d)", a->teacher_path, teacher.cfg.vocab_size, m->cfg.vocab_size);
        t = &teacher;
    }
    HeldoutResult r = eval_heldout(m, t, &ev, a->eval_batch);
    printf("held-out: %d examples of %s, %lld next tokens: perplexity %.4f", r.examples, a->eval_heldout, (long long)r.tokens, r.ppl);
    if (t) printf(", top-1 agreement with %s %.2f%%", a->teacher_path, 100.0 * r.agree);
    printf("\n");
    snprintf(json, n, "\"heldout\": {\"examples\": %d, \"tokens\": %lld, \"ppl\": %.6f, \"loss\": %.6f, \"agree\": %.6f}",
             r.examples, (long long)r.tokens, r.ppl, r.nll, r.agree);
    if (t) model_free(t);
    dataset_free(&all); dataset_free(&train); dataset_free(&ev);
}

// ============================================================================================
// B. The loss curve as SVG (written here, so that no plotting tool is needed)

// train.jsonl's steps -> a line chart of the training loss (and the held-out loss where the
// log has it). A stopped and resumed run may log a step twice: the later line wins. Returns
// the number of steps drawn.
static int write_loss_svg(const char *log_path, const char *svg_path) {
    size_t len;
    char *text = read_file_or_die(log_path, &len);
    int cap = 256, n = 0;
    double *step = malloc_or_die((size_t)cap * sizeof(double), "log"), *loss = malloc_or_die((size_t)cap * sizeof(double), "log");
    double *eval = malloc_or_die((size_t)cap * sizeof(double), "log");
    for (char *p = text, *end = text + len; p < end; ) {
        char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        char err[128];
        Json *j = eol > p ? json_parse(p, (size_t)(eol - p), err, sizeof err) : NULL;
        if (j && j->type == JSON_OBJECT && json_get(j, "step") && json_get(j, "loss")) {
            double s = json_get_number(j, "step", 0);
            while (n > 0 && step[n - 1] >= s) n--;  // a resumed run's repeated steps replace the old
            if (n == cap) {
                cap *= 2;
                step = realloc(step, (size_t)cap * sizeof(double)); loss = realloc(loss, (size_t)cap * sizeof(double));
                eval = realloc(eval, (size_t)cap * sizeof(double));
                if (!step || !loss || !eval) die("%s: out of memory", log_path);
            }
            step[n] = s; loss[n] = json_get_number(j, "loss", 0); eval[n] = json_get_number(j, "eval_loss", -1); n++;
        }
        if (j) json_free(j);
        p = eol + 1;
    }
    free(text);
    if (n == 0) die("%s: no steps in the log", log_path);
    double lo = loss[0], hi = loss[0], smax = step[n - 1] > 1 ? step[n - 1] : 1;
    for (int i = 0; i < n; i++) {
        if (loss[i] < lo) lo = loss[i];
        if (loss[i] > hi) hi = loss[i];
        if (eval[i] >= 0 && eval[i] < lo) lo = eval[i];
        if (eval[i] >= 0 && eval[i] > hi) hi = eval[i];
    }
    if (hi - lo < 1e-9) hi = lo + 1;
    // the plot area: x in [60, 620], y in [20, 300]
    const double X0 = 60, X1 = 620, Y0 = 20, Y1 = 300;
    #define PX(s) (X0 + (X1 - X0) * (s) / smax)
    #define PY(v) (Y1 - (Y1 - Y0) * ((v) - lo) / (hi - lo))
    AtomicFile f;
    atomic_open(&f, svg_path);
    char buf[512];
    #define SVG(...) do { int k_ = snprintf(buf, sizeof buf, __VA_ARGS__); atomic_write(&f, buf, (size_t)k_); } while (0)
    SVG("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"340\" font-family=\"sans-serif\" font-size=\"11\">\n");
    SVG("<rect width=\"640\" height=\"340\" fill=\"white\"/>\n");
    SVG("<path d=\"M%.0f %.0f V%.0f H%.0f\" stroke=\"black\" fill=\"none\"/>\n", X0, Y0, Y1, X1);
    for (int k = 0; k <= 4; k++) {  // y ticks: the loss
        double v = lo + (hi - lo) * k / 4;
        SVG("<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%.3g</text>\n", X0 - 4, PY(v) + 4, v);
        SVG("<path d=\"M%.0f %.1f H%.0f\" stroke=\"#ddd\"/>\n", X0, PY(v), X1);
    }
    SVG("<text x=\"%.0f\" y=\"%.0f\">0</text><text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">step %.0f</text>\n",
        X0, Y1 + 15, X1, Y1 + 15, smax);
    SVG("<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"");
    for (int i = 0; i < n; i++) SVG("%.1f,%.1f ", PX(step[i]), PY(loss[i]));
    SVG("\"/>\n");
    for (int i = 0; i < n; i++)
        if (eval[i] >= 0) SVG("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#d62728\"/>\n", PX(step[i]), PY(eval[i]));
    SVG("<text x=\"%.0f\" y=\"14\">training loss (blue), held-out loss (red dots) per step: %s</text>\n", X0, log_path);
    SVG("</svg>\n");
    #undef SVG
    #undef PX
    #undef PY
    atomic_commit(&f);
    free(step); free(loss); free(eval);
    return n;
}

// ============================================================================================
// C. The driver

// The pipeline runs when a quantizer is asked for and nothing else to do: no training data,
// no other mode.
static int pipeline_wanted(const Args *a) {
    return a->model_path && a->quant_given && a->quant.method != QUANT_NONE && !a->train_tokens && !a->data &&
           !a->eval_ppl && !a->eval_qa && !a->eval_heldout && !a->generate_data && !a->generate_prompt && !a->clip &&
           !a->export_packed && a->histogram < 0 && !a->bench && !a->resume && !a->clip_init;
}

// argv of one stage, built up as strings.
typedef struct { char *v[96]; int n; } Argv;

static void argv_add(Argv *c, const char *s) {
    if (c->n + 2 > (int)(sizeof c->v / sizeof c->v[0])) die("pipeline: too many arguments for a stage");
    size_t k = strlen(s) + 1;
    c->v[c->n] = malloc_or_die(k, "argument");
    memcpy(c->v[c->n++], s, k);
    c->v[c->n] = NULL;
}

static void argv_addf(Argv *c, const char *flag, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void argv_addf(Argv *c, const char *flag, const char *fmt, ...) {
    char buf[4200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    argv_add(c, flag);
    argv_add(c, buf);
}

// A float flag's value, in the shortest form that reads back as the same float.
static void argv_addfloat(Argv *c, const char *flag, float x) {
    char buf[32];
    snprintf(buf, sizeof buf, "%g", x);
    if (strtof(buf, NULL) != x) snprintf(buf, sizeof buf, "%.9g", x);
    argv_add(c, flag);
    argv_add(c, buf);
}

static void argv_free(Argv *c) { for (int i = 0; i < c->n; i++) free(c->v[i]); c->n = 0; }

static char g_self[4096];  // the running executable, run again for every stage

// Runs one stage: prints its command, passes its output through, and returns its last line
// (the stage's JSON result) in last. Dies when the stage fails.
static void run_stage(const char *name, Argv *c, char *last, size_t last_cap) {
    double t0 = now_seconds();
    printf("\n== %s\n$", name);
    for (int i = 0; i < c->n; i++) printf(" %s", c->v[i]);
    printf("\n");
    fflush(stdout);
    int fd[2];
    if (pipe(fd) != 0) die("pipeline: pipe failed (%s)", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) die("pipeline: fork failed (%s)", strerror(errno));
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 1);
        close(fd[1]);
        execv(g_self, c->v);
        fprintf(stderr, "error: %s: cannot run (%s)\n", g_self, strerror(errno));
        _exit(127);
    }
    close(fd[1]);
    FILE *f = fdopen(fd[0], "r");
    if (!f) die("pipeline: fdopen failed (%s)", strerror(errno));
    char line[16384];
    last[0] = 0;
    while (fgets(line, sizeof line, f)) {
        fputs(line, stdout);
        fflush(stdout);
        size_t k = strlen(line);
        while (k && (line[k - 1] == '\n' || line[k - 1] == '\r')) line[--k] = 0;
        if (k) snprintf(last, last_cap, "%s", line);
    }
    fclose(f);
    int status = 0;
    if (waitpid(pid, &status, 0) < 0) die("pipeline: waitpid failed (%s)", strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("pipeline: the stage '%s' failed (%s %d); its outputs so far are kept, run the same command again to continue",
            name, WIFEXITED(status) ? "exit status" : "signal", WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    char took[32];
    format_eta(took, sizeof took, now_seconds() - t0);
    printf("== %s: done in %s\n", name, took);
}

// A stage's output exists (complete: every output is renamed into place when finished).
static int stage_done(const char *name, const char *path) {
    if (!file_exists(path)) return 0;
    printf("\n== %s: %s exists, skipped\n", name, path);
    return 1;
}

// The name of a quantizer in file names: int2-g128, int2-row, nf3-g64, ternary, ...
static void quant_tag(char *buf, size_t n, QuantSpec q) {
    if (q.method == QUANT_INT || q.method == QUANT_NF3 || q.method == QUANT_NF4) {
        char g[32];
        if (q.group < 0) snprintf(g, sizeof g, "row");
        else snprintf(g, sizeof g, "g%d", q.group);
        if (q.method == QUANT_INT) snprintf(buf, n, "int%d-%s", q.bits, g);
        else snprintf(buf, n, "%s-%s", quant_method_name(q.method), g);
    } else {
        snprintf(buf, n, "%s", quant_method_name(q.method));
    }
}

// Arguments of the running program that Args does not hold but every stage must get: train_cu's
// own flags (--matmul, --attention, --recompute, ...), which its parser takes out of argv before
// train.c's sees the rest, and hands here a flag at a time with its value (host_stage_flag). A
// flag given twice keeps one entry, its last value (the one train_cu itself goes by), so the
// table holds at most one entry a flag.
static struct { const char *flag, *value; } g_stage_flags[8];
static int g_stage_flags_n;

// The flags every stage shares: the seed, the threads, the tokenizer, the program's own.
static void argv_common(Argv *c, const Args *a) {
    argv_addf(c, "--seed", "%llu", (unsigned long long)a->seed);
    if (a->threads) argv_addf(c, "--threads", "%d", a->threads);
    if (a->tokenizer_path) argv_addf(c, "--tokenizer", "%s", a->tokenizer_path);
    for (int i = 0; i < g_stage_flags_n; i++) {
        argv_add(c, g_stage_flags[i].flag);
        if (g_stage_flags[i].value) argv_add(c, g_stage_flags[i].value);
    }
}

static void argv_quant(Argv *c, const Args *a) {
    argv_addf(c, "-q", "%s", quant_method_name(a->quant.method));
    argv_addf(c, "-b", "%d", a->quant.bits);
    argv_addf(c, "-g", "%d", a->quant.group);
    if (a->act_bits) argv_addf(c, "--act-bits", "%d", a->act_bits);
}

// A number from a stage's JSON line: obj.key (obj NULL: the top level); dflt when absent.
static double stage_number(const char *json_line, const char *obj, const char *key, double dflt) {
    char err[128];
    Json *j = json_parse(json_line, strlen(json_line), err, sizeof err);
    if (!j) die("pipeline: a stage's last line is not JSON (%s): %.200s", err, json_line);
    const Json *o = obj ? json_get(j, obj) : j;
    double v = o && o->type == JSON_OBJECT ? json_get_number(o, key, dflt) : dflt;
    json_free(j);
    return v;
}

// Writes text to path atomically.
static void write_text_atomic(const char *path, const char *text) {
    AtomicFile f;
    atomic_open(&f, path);
    atomic_write(&f, text, strlen(text));
    atomic_commit(&f);
}

// calib.ids: the real tokens of the generated data's training part (the examples after the
// first fifth, which evaluation holds out), one id a line. Returns how many.
static int64_t write_calib_ids(const char *data_path, const char *out_path, const Tokenizer *tok, int T, int V) {
    Dataset all, train, ev;
    dataset_load(&all, data_path, tok, T, V);
    dataset_split(&all, &train, &ev);
    AtomicFile f;
    atomic_open(&f, out_path);
    int64_t n = 0;
    for (int i = 0; i < train.n; i++)
        for (int t = 0; t < train.n_real[i]; t++) {
            char num[16];
            int k = snprintf(num, sizeof num, "%d\n", train.tokens[(int64_t)i * train.seq + t]);
            atomic_write(&f, num, (size_t)k);
            n++;
        }
    atomic_commit(&f);
    dataset_free(&all); dataset_free(&train); dataset_free(&ev);
    return n;
}

static int pipeline_run(const Args *a, int argc, char **argv) {
    // the executable to run again: /proc/self/exe where there is one (Linux), else argv[0]
    ssize_t k = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
    if (k > 0) g_self[k] = 0;
    else snprintf(g_self, sizeof g_self, "%s", argv[0]);
    (void)argc;
    // the model's header: its shape for the defaults, and a check that it is full precision
    ModelHeader h;
    FILE *mf = fopen_or_die(a->model_path, "rb");
    fread_exact(&h, sizeof h, mf, a->model_path);
    fclose(mf);
    const char *why = h.magic == MODEL_MAGIC ? header_problem(&h) : "not a .bin model (the pipeline starts from one)";
    if (why) die("%s: %s", a->model_path, why);
    ModelHeader probe = h;  // the quantizer must fit every linear, as model_apply_quant checks
    probe.quant_method = a->quant.method; probe.quant_bits = a->quant.bits; probe.quant_group = a->quant.group;
    if (h.quant_method == QUANT_NONE && (why = header_problem(&probe))) die("quantization %s: %s", quant_method_name(a->quant.method), why);
    if (h.quant_method != QUANT_NONE)
        die("%s: the model is already quantized (-q %s -b %d -g %d); the pipeline starts from a full-precision model",
            a->model_path, quant_method_name(h.quant_method), h.quant_bits, h.quant_group);
    int T = a->seq ? a->seq : (h.max_seq_len < 1024 ? h.max_seq_len : 1024);
    if (T > h.max_seq_len) die("--seq %d exceeds the model's context %d", T, h.max_seq_len);
    // names: STUDENT = -o, or MODEL (without .bin) + .TAG.bin beside it; the run folder beside it
    char tag[64], student[4096], run[4096], base[4096];
    quant_tag(tag, sizeof tag, a->quant);
    if (a->out_path) snprintf(student, sizeof student, "%.4000s", a->out_path);
    else {
        snprintf(base, sizeof base, "%.4000s", a->model_path);
        if (has_suffix(base, ".bin")) base[strlen(base) - 4] = 0;
        snprintf(student, sizeof student, "%.4000s.%s.bin", base, tag);
    }
    snprintf(base, sizeof base, "%.4000s", student);
    if (has_suffix(base, ".bin")) base[strlen(base) - 4] = 0;
    snprintf(run, sizeof run, "%.4000s.run", base);
    if (mkdir(run, 0777) != 0 && errno != EEXIST) die("%s: cannot create the run folder (%s)", run, strerror(errno));
    char gen[4200], calib[4200], clipped[4200], qat[4200], qat_ckpt[4200], log[4200], svg[4200], results[4200];
    snprintf(gen, sizeof gen, "%s/generated.jsonl", run);
    snprintf(calib, sizeof calib, "%s/calib.ids", run);
    snprintf(clipped, sizeof clipped, "%s/clipped.bin", run);
    snprintf(qat, sizeof qat, "%s/qat.bin", run);
    snprintf(qat_ckpt, sizeof qat_ckpt, "%s/qat.ckpt", run);
    snprintf(log, sizeof log, "%s/train.jsonl", run);
    snprintf(svg, sizeof svg, "%s/loss.svg", run);
    snprintf(results, sizeof results, "%s/results.json", run);
    int clip = a->quant.method == QUANT_INT || a->quant.method == QUANT_NF3 || a->quant.method == QUANT_NF4;
    const char *teacher = a->teacher_path ? a->teacher_path : a->model_path;
    double t_start = now_seconds();
    printf("pipeline: %s -> %s (-q %s -b %d -g %d), run folder %s/\n", a->model_path, student,
           quant_method_name(a->quant.method), a->quant.bits, a->quant.group, run);
    char last[16384];
    Argv c = {{0}, 0};

    // 1. the teacher's data, and the calibration tokens of its training part
    if (!stage_done("1/5 the teacher writes the training data", gen)) {
        argv_add(&c, g_self);
        argv_addf(&c, "-m", "%s", teacher);
        argv_add(&c, "--generate-data");
        if (a->prompts) argv_addf(&c, "--prompts", "%s", a->prompts);
        if (a->n_prompts || !a->prompts) argv_addf(&c, "--n", "%d", a->n_prompts ? a->n_prompts : DATA_FREE_N);
        argv_addf(&c, "--max-new", "%d", a->max_new);
        argv_addf(&c, "--gen-batch", "%d", a->gen_batch);
        argv_addfloat(&c, "--temperature", a->temperature_given ? a->temperature : 0.7f);
        argv_addfloat(&c, "--top-p", a->top_p);
        argv_common(&c, a);
        argv_addf(&c, "-o", "%s", gen);
        run_stage("1/5 the teacher writes the training data", &c, last, sizeof last);
        argv_free(&c);
    }
    Tokenizer tk, *tok = NULL;
    char sibling[4200];
    snprintf(sibling, sizeof sibling, "%s.tokenizer", a->model_path);
    const char *tok_path = a->tokenizer_path ? a->tokenizer_path : file_exists(sibling) ? sibling : NULL;
    if (tok_path) { tokenizer_load(&tk, tok_path); tok = &tk; }
    if (!a->seq) {  // rows as long as the longest example, not the context: padding is computed too
        Dataset all;
        dataset_load(&all, gen, tok, T, h.vocab_size);
        int longest = 2;
        for (int i = 0; i < all.n; i++) longest = all.n_real[i] > longest ? all.n_real[i] : longest;
        dataset_free(&all);
        T = longest;
        printf("pipeline: rows of %d tokens, the longest example (--seq sets them)\n", T);
    }
    if (clip && !stage_done("1/5 calibration tokens (the training part)", calib))
        printf("calibration: %lld tokens of the training part to %s\n", (long long)write_calib_ids(gen, calib, tok, T, h.vocab_size), calib);
    if (tok) tokenizer_free(tok);

    // 2. clipping
    if (clip && !stage_done("2/5 asymmetric clipping search", clipped)) {
        TokenStream s = load_ids(calib, h.vocab_size);
        int Tc = a->calib_len ? a->calib_len : T;
        if (Tc > s.n) Tc = (int)s.n;
        free(s.ids);
        argv_add(&c, g_self);
        argv_addf(&c, "-m", "%s", a->model_path);
        argv_add(&c, "--clip");
        argv_addf(&c, "--calib", "%s", calib);
        argv_addf(&c, "--calib-seqs", "%d", a->calib_seqs);
        argv_addf(&c, "--calib-len", "%d", Tc);
        argv_addf(&c, "--clip-tokens", "%d", a->clip_tokens);
        argv_quant(&c, a);
        argv_common(&c, a);
        argv_addf(&c, "-o", "%s", clipped);
        run_stage("2/5 asymmetric clipping search", &c, last, sizeof last);
        argv_free(&c);
    }
    if (!clip) printf("\n== 2/5 clipping: -q %s has no per-group range to clip, skipped\n", quant_method_name(a->quant.method));

    // 3. QAT with CAKLD, resumed from its checkpoint when one exists
    if (!stage_done("3/5 QAT with CAKLD self-distillation", student)) {
        argv_add(&c, g_self);
        argv_addf(&c, "-m", "%s", a->model_path);
        if (a->teacher_path) argv_addf(&c, "-t", "%s", a->teacher_path);
        if (clip) argv_addf(&c, "--clip-init", "%s", clipped);
        argv_quant(&c, a);
        argv_addf(&c, "--ste", "%s", a->ste == QUANT_STE_PLAIN ? "plain" : "bitdistiller");
        argv_addf(&c, "--data", "%s", gen);
        argv_addf(&c, "--seq", "%d", T);
        argv_addf(&c, "--epochs", "%d", a->epochs);
        if (a->steps_given) argv_addf(&c, "--steps", "%d", a->steps);
        argv_addf(&c, "--batch", "%d", a->batch);
        argv_addf(&c, "--micro-batch", "%d", a->micro_batch);
        argv_addfloat(&c, "--lr", a->opt.lr);
        argv_addfloat(&c, "--min-lr", a->opt.min_lr);
        argv_addf(&c, "--schedule", "%s", a->opt.schedule == SCHED_COSINE ? "cosine" : "constant");
        argv_addf(&c, "--warmup", "%d", a->opt.warmup);
        argv_addfloat(&c, "--weight-decay", a->opt.weight_decay);
        argv_addfloat(&c, "--beta1", a->opt.beta1);
        argv_addfloat(&c, "--beta2", a->opt.beta2);
        argv_addfloat(&c, "--adam-eps", a->opt.eps);
        argv_addfloat(&c, "--grad-clip", a->opt.grad_clip);
        argv_addf(&c, "--loss", "%s", LOSS_NAMES[a->loss_kind]);
        if (a->gamma >= 0) argv_addfloat(&c, "--gamma", a->gamma);
        argv_addf(&c, "--gamma-batches", "%d", a->gamma_batches);
        if (a->gamma_include_pad) argv_add(&c, "--gamma-include-pad");
        if (a->temperature_given && a->loss_kind == LOSS_CAKLD_CE) argv_addfloat(&c, "--temperature", a->temperature);
        if (a->mask_prompt) argv_add(&c, "--mask-prompt");
        if (a->eval_every) argv_addf(&c, "--eval-every", "%d", a->eval_every);
        argv_addf(&c, "--save-every", "%d", a->save_every ? a->save_every : 50);
        if (a->stop_after) argv_addf(&c, "--stop-after", "%d", a->stop_after);
        argv_addf(&c, "--log", "%s", log);
        argv_addf(&c, "--ckpt", "%s", qat_ckpt);
        if (file_exists(qat_ckpt)) { argv_addf(&c, "--resume", "%s", qat_ckpt); printf("\nQAT: resuming from %s\n", qat_ckpt); }
        if (a->out_dtype == DTYPE_BF16) argv_addf(&c, "--dtype", "%s", "bf16");
        argv_common(&c, a);
        argv_addf(&c, "-o", "%s", qat);
        run_stage("3/5 QAT with CAKLD self-distillation", &c, last, sizeof last);
        argv_free(&c);
        if (a->stop_after) {
            printf("pipeline: stopped after QAT step %d (--stop-after); run the command without it to continue from %s\n",
                   a->stop_after, qat_ckpt);
            printf("{\"run\": %s, \"stopped_after\": %d}\n", json_quote(last, sizeof last, run), a->stop_after);
            return 0;
        }
        // the student takes its name only now, complete
        char from[4300], to[4300];
        snprintf(from, sizeof from, "%s.tokenizer", qat);
        snprintf(to, sizeof to, "%s.tokenizer", student);
        if (file_exists(from) && rename(from, to) != 0) die("%s: cannot rename to %s (%s)", from, to, strerror(errno));
        if (rename(qat, student) != 0) die("%s: cannot rename to %s (%s)", qat, student, strerror(errno));
        printf("pipeline: the student is %s\n", student);
    }

    // 4. evaluation on the held-out fifth: FP teacher, RTN, clipped RTN, the QAT student
    const char *names[4] = {"fp", "rtn", "clip", "qat"};
    const char *labels[4] = {"FP teacher", "round-to-nearest", "clipped RTN", "QAT (CAKLD)"};
    const char *models[4] = {teacher, a->model_path, clipped, student};
    double ppl[4] = {-1, -1, -1, -1}, agree[4] = {-1, -1, -1, -1};
    for (int i = 0; i < 4; i++) {
        if (i == 2 && !clip) continue;
        char out[4200], title[128];
        snprintf(out, sizeof out, "%s/eval_%s.json", run, names[i]);
        snprintf(title, sizeof title, "4/5 held-out evaluation: %s", labels[i]);
        if (!stage_done(title, out)) {
            argv_add(&c, g_self);
            argv_addf(&c, "-m", "%s", models[i]);
            if (i == 1 || i == 2) argv_quant(&c, a);  // round-to-nearest of these weights
            if (i > 0) argv_addf(&c, "-t", "%s", teacher);
            argv_addf(&c, "--eval-heldout", "%s", gen);
            argv_addf(&c, "--seq", "%d", T);
            argv_addf(&c, "--eval-batch", "%d", a->micro_batch);
            argv_common(&c, a);
            run_stage(title, &c, last, sizeof last);
            argv_free(&c);
            size_t n = strlen(last);
            if (n + 2 < sizeof last) { last[n] = '\n'; last[n + 1] = 0; }
            write_text_atomic(out, last);
        }
        size_t len;
        char *text = read_file_or_die(out, &len);
        ppl[i] = stage_number(text, "heldout", "ppl", -1);
        agree[i] = i == 0 ? 1.0 : stage_number(text, "heldout", "agree", -1);
        free(text);
    }

    // 5. the plot, the flip-flop rate, the table
    int steps = write_loss_svg(log, svg);
    double flip_final = -1, flip_mean = 0;
    {
        size_t len;
        char *text = read_file_or_die(log, &len);
        int nf = 0;
        for (char *q = text, *end = text + len; q < end; ) {
            char *eol = memchr(q, '\n', (size_t)(end - q));
            if (!eol) eol = end;
            char err[128];
            Json *j = eol > q ? json_parse(q, (size_t)(eol - q), err, sizeof err) : NULL;
            if (j && json_get(j, "flip_rate")) { flip_final = json_get_number(j, "flip_rate", 0); flip_mean += flip_final; nf++; }
            if (j) json_free(j);
            q = eol + 1;
        }
        flip_mean = nf ? flip_mean / nf : -1;
        free(text);
    }
    printf("\nwrote %s (%d steps)\n\n| model              | held-out ppl | top-1 agreement |\n|--------------------|--------------|-----------------|\n", svg, steps);
    for (int i = 0; i < 4; i++)
        if (ppl[i] >= 0) printf("| %-18s | %12.4f | %14.2f%% |\n", labels[i], ppl[i], 100.0 * agree[i]);
    printf("\nflip-flops: %.4f%% of the codes changed at the last step (%.4f%% a step on average)\n\n",
           100.0 * flip_final, 100.0 * flip_mean);
    Buf js = {NULL, 0, 0};
    char part[8600], q1[4300], q2[4300];
    snprintf(part, sizeof part, "{\"student\": %s, \"run\": %s, \"quant\": \"%s\", ", json_quote(q1, sizeof q1, student),
             json_quote(q2, sizeof q2, run), tag);
    buf_put(&js, part, strlen(part));
    for (int i = 0; i < 4; i++) {
        if (ppl[i] < 0) continue;
        snprintf(part, sizeof part, "\"%s\": {\"ppl\": %.6f, \"agree\": %.6f}, ", names[i], ppl[i], agree[i]);
        buf_put(&js, part, strlen(part));
    }
    snprintf(part, sizeof part, "\"flip_rate_final\": %.8f, \"flip_rate_mean\": %.8f, \"steps\": %d", flip_final, flip_mean, steps);
    buf_put(&js, part, strlen(part));
    buf_put(&js, "}\n", 3);
    write_text_atomic(results, js.s);  // the same bytes whenever the stages' outputs are the same
    printf("wrote %s\n", results);
    js.s[strlen(js.s) - 2] = 0;  // the final line: the table and this run's time
    printf("%s, \"seconds\": %.1f}\n", js.s, now_seconds() - t_start);
    free(js.s);
    return 0;
}

#endif
