// cli.c — the command line of ./train (and ./train_cu, through train_cu_host.c): Args, usage(),
// parse_args(), and the steps main() runs for the flags (*_from_flags): the model, the teacher and
// the student, the tokenizer, the training data, its checkpoint and --resume, clipping,
// generation, -o, export, histograms and --eval-ppl.
//
// #included by train.c after the model (section 10), and after the lib files whose functions the
// steps call (generate.c, eval.c, data.c, checkpoint.c, packed.c, histogram.c).
#ifndef CLI_C
#define CLI_C

typedef struct {
    // model
    const char *model_path, *init_shape, *out_path, *tokenizer_path;
    int init_vocab;
    int out_dtype;
    uint64_t seed;
    // training
    const char *train_tokens, *data, *log_path;
    int steps, steps_given, epochs, batch, micro_batch, seq, save_every, eval_every, mask_prompt;
    OptConfig opt;
    // distillation
    const char *teacher_path, *clip_init, *resume, *ckpt;
    int loss_kind, loss_given, gamma_batches, gamma_include_pad, stop_after, inject_nan;
    float gamma, temperature;
    int temperature_given;
    // teacher-generated data and --generate
    int generate_data, n_prompts, max_new, gen_batch;
    const char *prompts, *generate_prompt;
    float top_p;
    // evaluation
    const char *eval_ppl, *eval_qa, *eval_heldout;
    int limit, qa_no_bos;
    int eval_T, eval_batch;
    // quantization
    QuantSpec quant;
    int quant_given, act_bits, ste;
    int clip, calib_seqs, calib_len, clip_tokens;
    const char *calib, *export_packed, *histogram_out;
    int histogram;
    // other
    int threads, bench;
} Args;

static void usage(void) {
    printf(
        "usage: ./train [options]\n"
        "\n"
        "Model:\n"
        "  -m FILE               model to load (.bin, see model.h)\n"
        "  --init SHAPE          start from random weights of a named shape:\n"
        "                        tiny, study-10m, study-40m, bench-100m, tinyllama-1.1b, llama-3.2-1b,\n"
        "                        llama-3.2-3b, llama-2-7b\n"
        "  --vocab N             with --init: this vocabulary size instead of the shape's\n"
        "  --seed N              seed of initialisation and data sampling [42]\n"
        "  -o FILE               write the resulting model here (atomically) [none]\n"
        "  --dtype f32|bf16      dtype of the written model [f32]\n"
        "  --tokenizer FILE      tokenizer.model / tokenizer.json / tokenizer.bin for text files\n"
        "                        [MODEL.tokenizer beside -m, if present]\n"
        "\n"
        "Quantization (of the seven linears of every layer; training and evaluation):\n"
        "  -b BITS               bits per weight; 16 = full precision [16]\n"
        "  -g GROUP              weights per group along the input dimension, -1 = whole row [128]\n"
        "  -q METHOD             int | nf3 | nf4 | sign | onebit | ternary [int]; nf3, nf4, sign,\n"
        "                        onebit and ternary imply their bit width\n"
        "  --ste RULE            backward of int, nf3, nf4: bitdistiller (straight through the\n"
        "                        rounding and through each group's scale, as BitDistiller trains)\n"
        "                        | plain (straight through: dW = dW^) [bitdistiller]\n"
        "  --act-bits 0|8        8: also quantize the inputs of those linears per token (BitNet\n"
        "                        b1.58's absmax, straight-through backward) [0]\n"
        "  --clip                asymmetric clipping search (BitDistiller): write to -o the full-\n"
        "                        precision weights clipped for -q/-b/-g (int, nf3, nf4)\n"
        "  --calib FILE          calibration tokens for --clip (.ids or text)\n"
        "  --calib-seqs N        calibration sequences [128, or what the file holds]\n"
        "  --calib-len N         tokens per calibration sequence [min(1024, context)]\n"
        "  --clip-tokens N       positions sampled for each linear's error [512]\n"
        "  --export-packed FILE  write the quantized model as packed low-bit codes + fp16 scales\n"
        "                        (.qbin; -m loads it back, dequantized)\n"
        "  --histogram L         histograms (CSV + SVG) and entropies of layer L's FP and\n"
        "                        quantized weights\n"
        "  --histogram-out P     file prefix for --histogram [histogram_layerL]\n"
        "\n"
        "Training data (one of the two; a quantized model trains its latent weights):\n"
        "  --data FILE           JSONL examples: [[\"prompt\", \"response\"]], {\"prompt\", \"response\"},\n"
        "                        {\"text\"} or {\"ids\": [...]} (token ids, no tokenizer needed);\n"
        "                        right-padded to --seq; the first fifth is held out\n"
        "  --train-tokens FILE   a token stream (.ids or text): random windows of --seq tokens\n"
        "  --epochs N            passes over --data's training split [4]\n"
        "  --steps N             optimizer steps [100; with --data: what --epochs takes]\n"
        "  --mask-prompt         with --data: no loss on prompt tokens (the ablation; BitDistiller\n"
        "                        trains on every real token)\n"
        "  --eval-every N        with --data: the held-out loss every N steps [0 = at the end]\n"
        "  --batch N             sequences per optimizer step [16]\n"
        "  --micro-batch N       sequences per forward/backward; batch/micro-batch steps are\n"
        "                        accumulated [4]\n"
        "  --seq N               tokens per sequence [min(1024, model context)]\n"
        "  --lr F                peak learning rate [2e-5]\n"
        "  --min-lr F            final learning rate of the cosine schedule [0]\n"
        "  --schedule S          constant | cosine (after warmup) [constant]\n"
        "  --warmup N            linear warmup steps [0]\n"
        "  --weight-decay F      AdamW decoupled weight decay, matrices only [0]\n"
        "  --beta1 F --beta2 F   AdamW betas [0.9, 0.999]\n"
        "  --adam-eps F          AdamW epsilon [1e-8]\n"
        "  --grad-clip F         clip the global gradient norm to F, 0 = off [1.0]\n"
        "  --save-every N        write the checkpoint every N steps [0 = only at the end]\n"
        "  --log FILE            JSONL log of every step [none]\n"
        "\n"
        "Distillation (a quantized student learns from its full-precision teacher):\n"
        "  -t FILE               teacher [the -m model itself: self-distillation]; its vocabulary\n"
        "                        must equal the student's unless --loss wasserstein\n"
        "  --clip-init FILE      the student's initial weights (from --clip) [the -m model]\n"
        "  --loss L              ce | fkl | rkl | cakld | cakld_ce | wasserstein [cakld]; used whenever\n"
        "                        the model is quantized or -t is given\n"
        "  --gamma F             CAKLD's teacher confidence [measured on the data]\n"
        "  --gamma-batches N     micro-batches to measure gamma on [20]\n"
        "  --gamma-include-pad   average over padding too (BitDistiller's original code)\n"
        "  --temperature F       cakld_ce's temperature [20]; when generating, the sampling\n"
        "                        temperature [0.7, BitDistiller's]\n"
        "  --ckpt FILE           checkpoint (weights, AdamW state, data position, RNG) written every\n"
        "                        --save-every steps and at the end [OUT.ckpt with -o]\n"
        "  --resume FILE         continue from a checkpoint, bit-identical to an uninterrupted run\n"
        "  --stop-after N        stop after step N as if interrupted (for tests of --resume)\n"
        "  --inject-nan N        fault injection for tests: poison a weight before step N\n"
        "\n"
        "Teacher-generated data and generation (with the -m model, on its tokenizer):\n"
        "  --generate-data       continue --prompts with the model; write [[\"prompt\", \"response\"]]\n"
        "                        lines to -o (the --data format); without --prompts, data-free\n"
        "                        (LLM-QAT): --n sequences from BOS as {\"ids\": [...]} lines [8000]\n"
        "  --prompts SPEC        prompt sources: wikitext:FILE, alpaca:FILE, text:FILE, or a mix\n"
        "                        \"wikitext:W=600,alpaca:A=400\" (counts optional; see README)\n"
        "  --n N                 prompts in all [every prompt of the sources]\n"
        "  --max-new N, -n N     new tokens per response, at most [1024]\n"
        "  --top-p F             nucleus sampling [1.0]\n"
        "  --gen-batch N         prompts decoded together [16]\n"
        "  --generate TEXT       print the model's continuation of TEXT (--max-new, --temperature,\n"
        "                        --top-p, --seed)\n"
        "\n"
        "Evaluation:\n"
        "  --eval-ppl FILE       perplexity on a .ids or text file (non-overlapping windows)\n"
        "  -T N                  window length [min(2048, model context)]\n"
        "  --eval-batch N        windows per forward [1]\n"
        "                        (--eval-ppl wikitext2:DIR: WikiText-2's wiki.test.raw, joined as GPTQ)\n"
        "  --eval-qa TASKS       zero-shot accuracy, comma-separated: piqa, hellaswag, winogrande,\n"
        "                        arc_easy, arc_challenge (files under --data)\n"
        "  --data DIR            with --eval-qa: the folder of the task files (see README)\n"
        "  --limit N             at most N items per task [all]\n"
        "  --qa-no-bos           score without BOS (lm-evaluation-harness before v0.4.10)\n"
        "  --eval-heldout FILE   perplexity on the held-out fifth of a --data file, and with -t the\n"
        "                        top-1 agreement with the teacher's next-token choice (--seq rows)\n"
        "\n"
        "Other:\n"
        "  --threads N           OpenMP threads [all cores]\n"
        "  --bench               time full training steps on random tokens (--micro-batch x --seq,\n"
        "                        --steps timed) and report tokens/s and GFLOP/s\n"
        "  -h, --help            this text\n"
        "\n"
        "The pipeline: with a quantizer (-q/-b/-g) and nothing else to do (no training data, no\n"
        "mode above), ./train -m MODEL runs BitDistiller end to end into a run folder: the teacher's\n"
        "data (--prompts, or data-free: --n, --max-new), the clipping search, QAT with CAKLD, the\n"
        "held-out table (FP, RTN, clipped RTN, QAT), the loss plot. -o names the student\n"
        "[MODEL.int2-g128.bin beside MODEL, the run folder MODEL.int2-g128.run/]; a stopped run\n"
        "continues where it stopped when run again (see doc/pipeline.md).\n"
        "\n"
        "The last line of stdout is one JSON object with the results.\n");
}

// The value of a flag given last on the line: a known flag then has "missing value", an
// unknown one is still an "unknown flag" (parse_args checks the flag's name first).
static const char NO_VALUE[] = "";
static const char *value_of(const char *flag, const char *v) {
    if (v == NO_VALUE) die("%s: missing value (see ./train --help)", flag);
    return v;
}

static int parse_int(const char *flag, const char *v) {
    v = value_of(flag, v);
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < -2147483647L || x > 2147483647L) die("%s: expected an integer, got '%s'", flag, v);
    return (int)x;
}

static float parse_float(const char *flag, const char *v) {
    v = value_of(flag, v);
    char *end;
    errno = 0;
    float x = strtof(v, &end);
    if (errno || *end || end == v || !isfinite(x)) die("%s: expected a number, got '%s'", flag, v);
    return x;
}

// A size that must be given as a positive number when it is given at all (0 in Args means
// "the default").
static int parse_positive(const char *flag, const char *v) {
    int x = parse_int(flag, v);
    if (x < 1) die("%s must be positive, got %d", flag, x);
    return x;
}

// A value that must not be negative.
static float parse_nonnegative(const char *flag, const char *v) {
    float x = parse_float(flag, v);
    if (x < 0) die("%s must not be negative, got %g", flag, x);
    return x;
}

static int is_directory(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

// --data names the training examples, or with --eval-qa the folder of the task files.
static const char *train_data_path(const Args *a) { return a->data && !a->eval_qa ? a->data : NULL; }

// Every file the run will write, checked before any work (util.h's output_check): -o (and
// OUT.ckpt, OUT.tokenizer beside it), --ckpt, --log, --export-packed, --histogram's CSV and SVG.
// Two outputs on one path would overwrite each other.
static void args_check_outputs(const Args *a) {
    char paths[7][4200];
    const char *flags[7];
    int n = 0;
    int trains = a->train_tokens || train_data_path(a);
    if (a->out_path) {
        snprintf(paths[n], sizeof paths[n], "%.4000s", a->out_path), flags[n++] = "-o";
        if (!a->generate_data) snprintf(paths[n], sizeof paths[n], "%.4000s.tokenizer", a->out_path), flags[n++] = "-o's tokenizer";
    }
    if (trains && (a->ckpt || a->out_path)) {
        if (a->ckpt) snprintf(paths[n], sizeof paths[n], "%.4000s", a->ckpt), flags[n++] = "--ckpt";
        else snprintf(paths[n], sizeof paths[n], "%.4000s.ckpt", a->out_path), flags[n++] = "-o's checkpoint";
    }
    if (a->export_packed) snprintf(paths[n], sizeof paths[n], "%.4000s", a->export_packed), flags[n++] = "--export-packed";
    if (a->histogram >= 0) {
        char prefix[4000];
        if (a->histogram_out) snprintf(prefix, sizeof prefix, "%s", a->histogram_out);
        else snprintf(prefix, sizeof prefix, "histogram_layer%d", a->histogram);
        snprintf(paths[n], sizeof paths[n], "%s.csv", prefix), flags[n++] = "--histogram's CSV";
        snprintf(paths[n], sizeof paths[n], "%s.svg", prefix), flags[n++] = "--histogram's SVG";
    }
    for (int i = 0; i < n; i++) output_check(paths[i], 0);
    if (a->log_path) {
        output_check(a->log_path, 1);
        snprintf(paths[n], sizeof paths[n], "%.4000s", a->log_path), flags[n++] = "--log";
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            if (!strcmp(paths[i], paths[j])) die("%s: both %s and %s would be written there", paths[i], flags[j], flags[i]);
    // nor may an output replace an input, but for the model trained in place (-m X -o X), the
    // checkpoint resumed and written again, and the tokenizer already beside -o
    const char *ins[9] = {a->model_path, a->teacher_path, a->clip_init, a->tokenizer_path, a->train_tokens,
                          train_data_path(a), a->eval_ppl, a->calib, a->resume};
    const char *in_flags[9] = {"-m", "-t", "--clip-init", "--tokenizer", "--train-tokens", "--data", "--eval-ppl", "--calib", "--resume"};
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 9; j++) {
            if (!ins[j] || strcmp(paths[i], ins[j])) continue;
            int ckpt = !strcmp(flags[i], "--ckpt") || !strcmp(flags[i], "-o's checkpoint");
            int fine = (j == 0 && !strcmp(flags[i], "-o") && !a->generate_data) || (j == 8 && ckpt) ||
                       (j == 3 && !strcmp(flags[i], "-o's tokenizer"));
            if (!fine) die("%s: %s would replace the %s input", paths[i], flags[i], in_flags[j]);
        }
}

static Args parse_args(int argc, char **argv) {
    Args a;
    memset(&a, 0, sizeof a);
    a.seed = 42; a.steps = 100; a.epochs = 4; a.batch = 16; a.micro_batch = 4; a.eval_batch = 1;
    a.max_new = 1024; a.top_p = 1.0f; a.gen_batch = 16;
    a.quant = (QuantSpec){QUANT_INT, 0, 128};
    a.ste = QUANT_STE_BITDISTILLER;
    a.calib_seqs = 128; a.clip_tokens = 512; a.histogram = -1;
    a.loss_kind = LOSS_CAKLD; a.gamma = -1.0f; a.gamma_batches = 20; a.temperature = 20.0f;
    a.opt = (OptConfig){.lr = 2e-5f, .min_lr = 0.0f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                        .weight_decay = 0.0f, .grad_clip = 1.0f, .warmup = 0, .schedule = SCHED_CONSTANT};
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "-h") || !strcmp(f, "--help")) { usage(); stdout_check(); exit(0); }
        if (!strcmp(f, "--bench")) { a.bench = 1; continue; }
        if (!strcmp(f, "--clip")) { a.clip = 1; continue; }
        if (!strcmp(f, "--gamma-include-pad")) { a.gamma_include_pad = 1; continue; }
        if (!strcmp(f, "--qa-no-bos")) { a.qa_no_bos = 1; continue; }
        if (!strcmp(f, "--mask-prompt")) { a.mask_prompt = 1; continue; }
        if (!strcmp(f, "--generate-data")) { a.generate_data = 1; continue; }
        const char *v = i + 1 < argc ? argv[++i] : NO_VALUE;
        if (!strcmp(f, "-m")) a.model_path = v;
        else if (!strcmp(f, "--init")) a.init_shape = v;
        else if (!strcmp(f, "--vocab")) a.init_vocab = parse_int(f, v);
        else if (!strcmp(f, "--seed")) {
            int seed = parse_int(f, v);
            if (seed < 0) die("--seed must not be negative, got %d", seed);
            a.seed = (uint64_t)seed;
        }
        else if (!strcmp(f, "-o")) a.out_path = v;
        else if (!strcmp(f, "--tokenizer")) a.tokenizer_path = v;
        else if (!strcmp(f, "--dtype")) {
            if (!strcmp(value_of(f, v), "f32")) a.out_dtype = DTYPE_F32;
            else if (!strcmp(v, "bf16")) a.out_dtype = DTYPE_BF16;
            else die("--dtype: expected f32 or bf16, got '%s'", v);
        }
        else if (!strcmp(f, "--train-tokens")) a.train_tokens = v;
        else if (!strcmp(f, "--steps")) { a.steps = parse_int(f, v); a.steps_given = 1; }
        else if (!strcmp(f, "--epochs")) a.epochs = parse_int(f, v);
        else if (!strcmp(f, "--eval-every")) a.eval_every = parse_int(f, v);
        else if (!strcmp(f, "--prompts")) a.prompts = v;
        else if (!strcmp(f, "--n")) a.n_prompts = parse_int(f, v);
        else if (!strcmp(f, "--max-new") || !strcmp(f, "-n")) a.max_new = parse_int(f, v);
        else if (!strcmp(f, "--top-p")) a.top_p = parse_float(f, v);
        else if (!strcmp(f, "--gen-batch")) a.gen_batch = parse_int(f, v);
        else if (!strcmp(f, "--generate")) a.generate_prompt = v;
        else if (!strcmp(f, "--batch")) a.batch = parse_int(f, v);
        else if (!strcmp(f, "--micro-batch")) a.micro_batch = parse_int(f, v);
        else if (!strcmp(f, "--seq")) a.seq = parse_positive(f, v);
        else if (!strcmp(f, "--lr")) a.opt.lr = parse_float(f, v);
        else if (!strcmp(f, "--min-lr")) a.opt.min_lr = parse_nonnegative(f, v);
        else if (!strcmp(f, "--schedule")) {
            if (!strcmp(value_of(f, v), "constant")) a.opt.schedule = SCHED_CONSTANT;
            else if (!strcmp(v, "cosine")) a.opt.schedule = SCHED_COSINE;
            else die("--schedule: expected constant or cosine, got '%s'", v);
        }
        else if (!strcmp(f, "--warmup")) {
            a.opt.warmup = parse_int(f, v);
            if (a.opt.warmup < 0) die("--warmup must not be negative, got %d", a.opt.warmup);
        }
        else if (!strcmp(f, "--weight-decay")) a.opt.weight_decay = parse_nonnegative(f, v);
        else if (!strcmp(f, "--beta1")) a.opt.beta1 = parse_float(f, v);
        else if (!strcmp(f, "--beta2")) a.opt.beta2 = parse_float(f, v);
        else if (!strcmp(f, "--adam-eps")) a.opt.eps = parse_float(f, v);
        else if (!strcmp(f, "--grad-clip")) a.opt.grad_clip = parse_nonnegative(f, v);
        else if (!strcmp(f, "--save-every")) a.save_every = parse_int(f, v);
        else if (!strcmp(f, "--log")) a.log_path = v;
        else if (!strcmp(f, "--eval-ppl")) a.eval_ppl = v;
        else if (!strcmp(f, "-T")) a.eval_T = parse_positive(f, v);
        else if (!strcmp(f, "--eval-batch")) a.eval_batch = parse_int(f, v);
        else if (!strcmp(f, "--eval-qa")) a.eval_qa = v;
        else if (!strcmp(f, "--eval-heldout")) a.eval_heldout = v;
        else if (!strcmp(f, "--data")) a.data = v;
        else if (!strcmp(f, "--limit")) a.limit = parse_int(f, v);
        else if (!strcmp(f, "--threads")) a.threads = parse_int(f, v);
        else if (!strcmp(f, "--calib")) a.calib = v;
        else if (!strcmp(f, "-t")) a.teacher_path = v;
        else if (!strcmp(f, "--clip-init")) a.clip_init = v;
        else if (!strcmp(f, "--loss")) {
            a.loss_kind = loss_from_name(value_of(f, v));
            if (a.loss_kind < 0) die("--loss: unknown loss '%s' (ce, fkl, rkl, cakld, cakld_ce, wasserstein)", v);
            a.loss_given = 1;
        }
        else if (!strcmp(f, "--gamma")) a.gamma = parse_float(f, v);
        else if (!strcmp(f, "--gamma-batches")) a.gamma_batches = parse_int(f, v);
        else if (!strcmp(f, "--temperature")) { a.temperature = parse_float(f, v); a.temperature_given = 1; }
        else if (!strcmp(f, "--ckpt")) a.ckpt = v;
        else if (!strcmp(f, "--resume")) a.resume = v;
        else if (!strcmp(f, "--stop-after")) a.stop_after = parse_int(f, v);
        else if (!strcmp(f, "--inject-nan")) a.inject_nan = parse_int(f, v);
        else if (!strcmp(f, "--export-packed")) a.export_packed = v;
        else if (!strcmp(f, "--histogram")) {
            a.histogram = parse_int(f, v);
            if (a.histogram < 0) die("--histogram: layer %d out of range (layers count from 0)", a.histogram);
        }
        else if (!strcmp(f, "--histogram-out")) a.histogram_out = v;
        else if (!strcmp(f, "--calib-seqs")) a.calib_seqs = parse_int(f, v);
        else if (!strcmp(f, "--calib-len")) a.calib_len = parse_positive(f, v);
        else if (!strcmp(f, "--clip-tokens")) a.clip_tokens = parse_int(f, v);
        else if (!strcmp(f, "-b")) {
            a.quant.bits = parse_int(f, v);
            if (a.quant.bits < 1 || a.quant.bits > 16) die("-b: bits must be 1, 2, 3, 4 or 8, or 16 for full precision; got %d", a.quant.bits);
            a.quant_given = 1;
        }
        else if (!strcmp(f, "--act-bits")) {
            a.act_bits = parse_int(f, v);
            if (a.act_bits != 0 && a.act_bits != 8) die("--act-bits: 0 or 8 (BitNet's 8-bit activations), got %d", a.act_bits);
        }
        else if (!strcmp(f, "--ste")) {
            v = value_of(f, v);
            if (!strcmp(v, "bitdistiller")) a.ste = QUANT_STE_BITDISTILLER;
            else if (!strcmp(v, "plain")) a.ste = QUANT_STE_PLAIN;
            else die("--ste: expected bitdistiller or plain, got '%s'", v);
        }
        else if (!strcmp(f, "-g")) { a.quant.group = parse_int(f, v); a.quant_given = 1; }
        else if (!strcmp(f, "-q")) {
            a.quant.method = quant_method_from_name(value_of(f, v));
            if (a.quant.method < 0) die("-q: unknown quantizer '%s' (int, nf3, nf4, sign, onebit, ternary)", v);
            a.quant_given = 1;
        }
        else die("unknown flag '%s' (see ./train --help)", f);
        value_of(f, v);
    }
    if (!a.model_path == !a.init_shape) die("give exactly one of -m FILE or --init SHAPE (see ./train --help)");
    if (a.init_vocab && (!a.init_shape || a.init_vocab < 2 || a.init_vocab > (1 << 22)))
        die("--vocab N needs --init and 2 <= N <= 4194304");
    if (a.steps < 1) die("--steps must be at least 1");
    if (a.micro_batch < 1 || a.batch < 1) die("--batch and --micro-batch must be at least 1");
    if (a.batch % a.micro_batch) die("--batch (%d) must be a multiple of --micro-batch (%d)", a.batch, a.micro_batch);
    if (a.seq < 0 || a.eval_T < 0 || a.eval_batch < 1 || a.save_every < 0) die("--seq, -T, --eval-batch and --save-every must be positive");
    if (!(a.opt.lr >= 0) || !(a.opt.beta1 >= 0 && a.opt.beta1 < 1) || !(a.opt.beta2 >= 0 && a.opt.beta2 < 1) || !(a.opt.eps > 0))
        die("--lr must be >= 0, betas in [0, 1), --adam-eps > 0");
    if (a.threads < 0 || a.threads > 4096) die("--threads must be between 1 and 4096 (0 or left out: all cores), got %d", a.threads);
    if (a.gamma != -1.0f && !(a.gamma >= 0.0f && a.gamma <= 1.0f)) die("--gamma must be in [0, 1]");
    if (a.temperature_given && !(a.temperature >= 0)) die("--temperature must not be negative");
    if (!a.temperature_given && (a.generate_data || a.generate_prompt)) a.temperature = 0.7f;  // BitDistiller's sampling
    if (!a.generate_data && !a.generate_prompt && !(a.temperature > 0)) die("--temperature must be positive");
    if (a.epochs < 1 || a.eval_every < 0) die("--epochs must be at least 1, --eval-every not negative");
    if (a.max_new < 1 || a.gen_batch < 1 || a.n_prompts < 0) die("--max-new and --gen-batch must be at least 1, --n not negative");
    if (!(a.top_p > 0.0f && a.top_p <= 1.0f)) die("--top-p must be in (0, 1]");
    if (a.train_tokens && a.data && !a.eval_qa) die("give one training data source: --data FILE.jsonl or --train-tokens FILE");
    if (a.generate_data && !a.out_path) die("--generate-data needs -o OUT.jsonl");
    if (a.generate_data && (a.train_tokens || (a.data && !a.eval_qa) || a.clip || a.generate_prompt))
        die("--generate-data writes data: train, clip or --generate in a separate command");
    if (a.prompts && !a.generate_data) die("--prompts is for --generate-data");
    if (a.gamma_batches < 1 || a.stop_after < 0) die("--gamma-batches must be positive, --stop-after not negative");
    if (a.eval_qa && !a.data) die("--eval-qa needs --data DIR (the task files)");
    if (a.eval_qa && a.data && !is_directory(a.data))
        die("%s: --eval-qa reads its task files from a folder (--data DIR); train on a JSONL file in a separate command", a.data);
    if (a.mask_prompt && !(a.data && !a.eval_qa)) die("--mask-prompt needs --data FILE.jsonl");
    if (a.limit < 0) die("--limit must not be negative");
    if (a.clip && (!a.calib || !a.out_path || !a.quant_given))
        die("--clip needs --calib FILE, -o OUT and the quantization it prepares for (-q/-b/-g)");
    if (a.calib_seqs < 1 || a.calib_len < 0 || a.clip_tokens < 1) die("--calib-seqs, --calib-len and --clip-tokens must be positive");
    if (a.clip && a.quant.method != QUANT_INT && a.quant.method != QUANT_NF3 && a.quant.method != QUANT_NF4)
        die("--clip searches per-group ranges: use -q int, nf3 or nf4");
    if (a.quant_given) {  // int without -b means "not quantized" (-b 16)
        if (a.quant.method == QUANT_INT && a.quant.bits == 0) a.quant.bits = 16;
        const char *why = quant_spec_check(&a.quant, 0);
        if (why) die("-q %s -b %d: %s", quant_method_name(a.quant.method), a.quant.bits, why);
    }
    args_check_outputs(&a);
    return a;
}

// The training data the flags name, for train and train_cu alike: a token stream
// (--train-tokens), or --data's JSONL examples split into training and held-out fifths, with
// the run's steps from --epochs unless --steps is given.
typedef struct {
    TokenStream stream;     // --train-tokens
    Dataset train, eval;    // --data
    Batches batches;        // over one of the two
    int steps;
} TrainData;

static void train_data_from_flags(TrainData *td, const Args *a, const char *path, const Tokenizer *tok, int T, int V) {
    memset(td, 0, sizeof *td);
    td->steps = a->steps;
    if (a->train_tokens) {
        td->stream = load_tokens(a->train_tokens, tok, V);
        if (td->stream.n <= T) die("%s: %lld tokens, need more than --seq %d", a->train_tokens, (long long)td->stream.n, T);
        td->batches = batches_of_stream(&td->stream);
        return;
    }
    Dataset all;
    dataset_load(&all, path, tok, T, V);
    dataset_split(&all, &td->train, &td->eval);
    dataset_free(&all);
    if (td->train.n == 0) die("%s: no training examples", path);
    if (dataset_targets(&td->train, a->mask_prompt) == 0)
        die("%s: the training examples hold no token to predict (each needs two tokens or more%s)", path,
            a->mask_prompt ? ", and a response with --mask-prompt" : "");
    printf("data: %d training and %d held-out examples (BitDistiller's split: the first fifth is held out)%s\n",
           td->train.n, td->eval.n, a->mask_prompt ? "; no loss on prompt tokens" : "");
    td->batches = batches_of_examples(&td->train, a->mask_prompt, a->seed, a->micro_batch);
    if (!a->steps_given) {
        int64_t steps = ((int64_t)a->epochs * td->train.n + a->batch - 1) / a->batch;
        if (steps > INT32_MAX) die("--epochs %d of %d examples in batches of %d: %lld steps, more than 2^31 - 1", a->epochs,
                                   td->train.n, a->batch, (long long)steps);
        td->steps = (int)steps;
    }
    printf("data: %d epochs of %d examples in batches of %d: %d steps\n", a->epochs, td->train.n, a->batch, td->steps);
}

static void train_data_free(TrainData *td) {
    batches_free(&td->batches);
    free(td->stream.ids);
    dataset_free(&td->train);
    dataset_free(&td->eval);
}

// The model the flags name: -m's file, or random weights of --init's shape (--vocab, --seed).
static void model_from_flags(const Args *a, Model *m) {
    if (a->model_path) {
        model_open(m, a->model_path);
        return;
    }
    ModelHeader c = shape_header(a->init_shape);
    if (a->init_vocab) c.vocab_size = a->init_vocab;
    float *p = malloc_or_die((size_t)tensor_sizes(&c, (int64_t[N_TENSORS]){0}) * sizeof(float), "parameters");
    init_params(&c, p, a->seed);
    model_setup(m, &c, p);
}

// Distillation: whenever training a quantized student, or a teacher or loss is named. The same
// answer before student_from_flags quantizes m as after it.
static int distill_from_flags(const Args *a, const Model *m) {
    int will_quantize = (a->quant_given && a->quant.method != QUANT_NONE && !a->clip) || m->quant.method != QUANT_NONE ||
                        a->act_bits || m->cfg.quant_act_bits;
    return (a->train_tokens || train_data_path(a)) && (will_quantize || a->teacher_path || a->loss_given);
}

// The teacher of a distillation run into *t (NULL when there is none: no distillation, or --loss
// ce): -t, or the full-precision -m model itself (self-distillation), taken before the student is
// changed by --clip-init or quantization.
static Model *teacher_from_flags(const Args *a, const Model *m, Model *t) {
    if (!distill_from_flags(a, m) || a->loss_kind == LOSS_CE) return NULL;
    if (a->teacher_path) {
        model_open(t, a->teacher_path);
    } else {
        float *copy = malloc_or_die((size_t)m->n_params * sizeof(float), "teacher");
        memcpy(copy, m->params, (size_t)m->n_params * sizeof(float));
        model_setup(t, &m->cfg, copy);
    }
    if (t->cfg.vocab_size != m->cfg.vocab_size && a->loss_kind != LOSS_WASSERSTEIN)
        die("%s: the teacher's vocabulary (%d) differs from the student's (%d); only --loss wasserstein works across vocabularies",
            a->teacher_path ? a->teacher_path : "teacher", t->cfg.vocab_size, m->cfg.vocab_size);
    return t;
}

// The student as the flags make it: --clip-init's weights, then -q/-b/-g and --act-bits. Called
// after a self-distillation teacher was copied from the same weights (train_cu does the same).
static void student_from_flags(const Args *a, Model *m) {
    if (a->clip_init) {  // the student starts from clipped weights of the same model
        ModelHeader cc;
        float *cp = model_load(a->clip_init, &cc);
        ModelHeader want = m->cfg;
        cc.dtype = want.dtype = DTYPE_F32;
        if (memcmp(&cc, &want, sizeof cc) != 0) die("%s: --clip-init must be a full-precision model of the same shape as -m", a->clip_init);
        memcpy(m->params, cp, (size_t)m->n_table * sizeof(float));
        free(cp);
        printf("student initialised from %s\n", a->clip_init);
    }
    if (a->quant_given && a->quant.method != QUANT_NONE && !a->clip) {
        QuantSpec have = m->quant;
        if (have.method == QUANT_NONE) model_apply_quant(m, a->quant);
        else if (have.method != a->quant.method || have.bits != a->quant.bits || have.group != a->quant.group)
            die("%s: the model is already quantized (-q %s -b %d -g %d); drop the quantization flags",
                a->model_path, quant_method_name(have.method), have.bits, have.group);
    }
    m->ste = a->ste;
    if (a->act_bits) {  // the student's activations; a self-distillation teacher was copied before, as it was
        if (a->clip) die("--act-bits: the clipping search runs on full-precision activations; give it to the QAT run");
        m->cfg.quant_act_bits = a->act_bits;
    }
}

// The tokenizer for text files: --tokenizer, or MODEL.tokenizer beside the model. Returns its
// path, or NULL (and *tok = NULL) when there is none.
static const char *tokenizer_from_flags(const Args *a, const Model *m, Tokenizer *t, Tokenizer **tok) {
    static char sibling[4096];
    snprintf(sibling, sizeof sibling, "%s.tokenizer", a->model_path ? a->model_path : "");
    const char *path = a->tokenizer_path ? a->tokenizer_path : (a->model_path && file_exists(sibling) ? sibling : NULL);
    *tok = NULL;
    if (!path) return NULL;
    tokenizer_load(t, path);
    if (t->n_vocab > m->cfg.vocab_size)
        die("%s: the tokenizer has %d tokens, the model's vocabulary only %d", path, t->n_vocab, m->cfg.vocab_size);
    *tok = t;
    printf("tokenizer: %s (%d tokens)\n", path, t->n_vocab);
    return path;
}

// The lines every run starts with: the quantization and the model's shape.
static void print_model(const Model *m) {
    const ModelHeader *c = &m->cfg;
    if (m->quant.method != QUANT_NONE)
        printf("quantization: %s, %d bits, group %d, on the 7 linears of every layer\n",
               quant_method_name(m->quant.method), m->quant.bits, quant_group_len(m->quant, c->dim));
    if (c->quant_act_bits) printf("activations: the inputs of the 7 linears quantized to %d bits per token (absmax)\n", c->quant_act_bits);
    printf("model: dim %d, hidden %d, layers %d, heads %d (kv %d, head_dim %d), vocab %d, context %d, %s, %lld parameters\n",
           c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size,
           c->max_seq_len, c->tied ? "tied" : "untied", (long long)m->n_params);
}

// The checkpoint a training run writes: --ckpt, or OUT.ckpt beside -o; "" for none.
static void ckpt_path_from_flags(const Args *a, char *path, size_t n) {
    path[0] = '\0';
    if (a->ckpt) snprintf(path, n, "%s", a->ckpt);
    else if (a->out_path) snprintf(path, n, "%.4000s.ckpt", a->out_path);
}

// --resume: the weights, AdamW moments and run state saved at a step of a run of `steps`.
static void resume_from_flags(const Args *a, Model *m, TrainState *st, int steps) {
    checkpoint_load(a->resume, m, st);
    if (st->step > steps) die("%s: saved at step %lld, beyond the run's %d steps", a->resume, (long long)st->step, steps);
    printf("resumed from %s at step %lld\n", a->resume, (long long)st->step);
}

// --generate-data: the teacher continues --prompts into the JSONL -o; json gets the result's part
// of the JSON line.
static void generate_data_from_flags(const Args *a, Model *m, const Tokenizer *tok, char *json, size_t n) {
    char q[4200];
    if (!a->prompts) {  // data-free
        int count = a->n_prompts ? a->n_prompts : DATA_FREE_N;
        double t0 = now_seconds();
        int64_t n_tok = generate_data_free(m, tok, count, a->gen_batch, a->max_new, a->temperature, a->top_p, a->seed, a->out_path);
        double el = now_seconds() - t0;
        snprintf(json, n, "\"generated\": {\"path\": %s, \"sequences\": %d, \"tokens\": %lld, \"tokens_per_s\": %.1f, "
                 "\"temperature\": %g, \"top_p\": %g, \"data_free\": true}", json_quote(q, sizeof q, a->out_path), count,
                 (long long)n_tok, n_tok / (el > 0 ? el : 1e-9), a->temperature, a->top_p);
        return;
    }
    Prompts p;
    prompts_load(&p, a->prompts, a->n_prompts, a->seed);
    double t0 = now_seconds();
    int64_t n_new = generate_data(m, tok, &p, a->gen_batch, a->max_new, a->temperature, a->top_p, a->seed, a->out_path);
    double el = now_seconds() - t0;
    snprintf(json, n, "\"generated\": {\"path\": %s, \"prompts\": %d, \"new_tokens\": %lld, \"tokens_per_s\": %.1f, "
             "\"temperature\": %g, \"top_p\": %g}", json_quote(q, sizeof q, a->out_path), p.n, (long long)n_new, n_new / (el > 0 ? el : 1e-9),
             a->temperature, a->top_p);
    prompts_free(&p);
}

// --generate TEXT: its continuation, printed; json as above.
static void generate_text_from_flags(const Args *a, Model *m, const Tokenizer *tok, char *json, size_t n) {
    Buf text = {NULL, 0, 0};
    int n_new = generate_text(m, tok, a->generate_prompt, a->max_new, a->temperature, a->top_p, a->seed, &text);
    printf("%s%.*s\n", a->generate_prompt, (int)text.n, text.s);
    Buf js = {NULL, 0, 0};
    json_put_string(&js, text.s ? text.s : "", text.n);
    snprintf(json, n, "\"generated\": %.*s, \"new_tokens\": %d", (int)(js.n < 6000 ? js.n : 0), js.s ? js.s : "", n_new);
    free(text.s); free(js.s);
}

// --eval-qa TASKS: the zero-shot tasks in --data DIR; json gets the "qa" part of the JSON line.
static void eval_qa_from_flags(const Args *a, Model *m, const Tokenizer *tok, char *json, size_t n) {
    if (!tok) die("--eval-qa needs the model's tokenizer (--tokenizer FILE, or MODEL.tokenizer beside the model)");
    eval_qa_add_bos = !a->qa_no_bos;
    eval_qa(m, tok, a->eval_qa, a->data, a->limit, json, n);
}

// --clip: the clipping search (clip_model) for the quantizer -q/-b/-g prepare for, on --calib's
// tokens; json gets the result's part of the JSON line. After training, as ./train orders it.
static void clip_from_flags(const Args *a, Model *m, const Tokenizer *tok, char *json, size_t n) {
    const ModelHeader *c = &m->cfg;
    ModelHeader probe = m->cfg;  // the spec must fit every linear of this model
    probe.quant_method = a->quant.method; probe.quant_bits = a->quant.bits; probe.quant_group = a->quant.group;
    const char *why = header_problem(&probe);
    if (why) die("--clip with -q %s -b %d -g %d: %s", quant_method_name(a->quant.method), a->quant.bits, a->quant.group, why);
    TokenStream s = load_tokens(a->calib, tok, c->vocab_size);
    int Tc = a->calib_len ? a->calib_len : (c->max_seq_len < 1024 ? c->max_seq_len : 1024);
    if (Tc > c->max_seq_len) die("--calib-len %d exceeds the model's context %d", Tc, c->max_seq_len);
    int Bc = (int)(s.n / Tc) < a->calib_seqs ? (int)(s.n / Tc) : a->calib_seqs;
    if (Bc < 1) die("%s: %lld tokens, fewer than one calibration sequence of %d", a->calib, (long long)s.n, Tc);
    printf("clip: %d calibration sequences x %d tokens from %s, %d positions per linear, -q %s -b %d -g %d\n",
           Bc, Tc, a->calib, a->clip_tokens < Bc * Tc ? a->clip_tokens : Bc * Tc, quant_method_name(a->quant.method),
           a->quant.bits, a->quant.group);
    ClipResult r = clip_model(m, a->quant, s.ids, Bc, Tc, a->clip_tokens);
    printf("clip: %lld groups searched; total output error of RTN %.6g -> clipped %.6g\n", (long long)r.groups,
           r.err_rtn, r.err_clipped);
    snprintf(json, n, "\"clip\": {\"groups\": %lld, \"err_rtn\": %.8g, \"err_clipped\": %.8g, \"seqs\": %d, \"len\": %d}",
             (long long)r.groups, r.err_rtn, r.err_clipped, Bc, Tc);
    free(s.ids);
}

// -o: the model (in --dtype), and the tokenizer beside it, so that ./train -m OUT needs nothing else.
static void write_model_from_flags(const Args *a, const Model *m, const char *tok_path) {
    ModelHeader out = m->cfg;
    out.dtype = a->out_dtype;
    model_save(a->out_path, &out, m->params);
    printf("wrote %s\n", a->out_path);
    char out_tok[4096];
    snprintf(out_tok, sizeof out_tok, "%.4000s.tokenizer", a->out_path);
    if (tok_path && strcmp(tok_path, out_tok)) copy_file_atomic(tok_path, out_tok);
}

// --export-packed: the packed model and its size in bits per weight; json as above.
static void export_from_flags(const Args *a, Model *m, char *json, size_t n) {
    int64_t bytes = export_packed(m, a->export_packed, a->out_dtype);
    int64_t lin = m->n_codes, lin_bytes = 0;
    for (int t = 0; t < N_TENSORS; t++)
        if (tensor_is_linear(t)) lin_bytes += packed_linear_bytes(m, t) * m->cfg.n_layers;
    double bpw = 8.0 * lin_bytes / lin;
    printf("wrote %s: %lld bytes; the linears take %.3f bits per weight (codes and scales), the whole file %.3f\n",
           a->export_packed, (long long)bytes, bpw, 8.0 * bytes / m->n_table);
    char q[4200];
    snprintf(json, n, "\"packed\": {\"path\": %s, \"bytes\": %lld, \"linear_bits_per_weight\": %.4f, \"bits_per_weight\": %.4f}",
             json_quote(q, sizeof q, a->export_packed), (long long)bytes, bpw, 8.0 * bytes / m->n_table);
}

// --histogram L: the histograms of layer L to --histogram-out's prefix; json as above.
static void histogram_from_flags(const Args *a, Model *m, char *json, size_t n) {
    char prefix[4000];
    if (a->histogram_out) snprintf(prefix, sizeof prefix, "%s", a->histogram_out);
    else snprintf(prefix, sizeof prefix, "histogram_layer%d", a->histogram);
    write_histogram(m, a->histogram, prefix, json, n);
}

// --eval-ppl's tokens: "wikitext2:DIR", WikiText-2's test text through the tokenizer, or a token file.
static TokenStream eval_tokens_from_flags(const Args *a, const Tokenizer *tok, int V) {
    TokenStream s;
    if (!strncmp(a->eval_ppl, "wikitext2:", 10)) {
        if (!tok) die("%s: WikiText-2 needs the model's tokenizer (--tokenizer FILE)", a->eval_ppl);
        s.ids = wikitext2_tokens(tok, a->eval_ppl + 10, &s.n);
        for (int64_t i = 0; i < s.n; i++)
            if (s.ids[i] >= V) die("%s: token id %d outside the model's vocabulary", a->eval_ppl, s.ids[i]);
    } else {
        s = load_tokens(a->eval_ppl, tok, V);
    }
    return s;
}

// --eval-ppl: the perplexity of windows of -T tokens (eval_ppl); json as above.
static void eval_ppl_from_flags(const Args *a, Model *m, const Tokenizer *tok, char *json, size_t n) {
    const ModelHeader *c = &m->cfg;
    int Te = a->eval_T ? a->eval_T : (c->max_seq_len < 2048 ? c->max_seq_len : 2048);
    if (Te > c->max_seq_len) die("-T %d exceeds the model's context %d", Te, c->max_seq_len);
    if (Te < 2) die("-T must be at least 2");
    TokenStream s = eval_tokens_from_flags(a, tok, c->vocab_size);
    PplResult r = eval_ppl(m, &s, Te, a->eval_batch, a->eval_ppl);
    printf("perplexity of %s: %.4f (%lld windows of %d tokens)\n", a->eval_ppl, r.ppl, (long long)r.windows, Te);
    snprintf(json, n, "\"ppl\": %.6f, \"loss\": %.6f, \"windows\": %lld, \"T\": %d", r.ppl, r.mean_loss, (long long)r.windows, Te);
    free(s.ids);
}

#endif
