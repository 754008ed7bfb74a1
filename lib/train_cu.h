// train_cu.h — what the GPU program (train.cu, C++) takes from the CPU program (train.c, C).
//
// train.cu does not re-implement loading, saving, argument parsing, data or checkpoints: those
// are train.c's own functions, compiled as C in train_cu_host.c (which includes train.c with
// -DTRAIN_NO_MAIN) and reached through the plain structs and extern "C" functions below. So both
// programs read the same files, take the same flags and write the same bytes, and train.c stays C.
// The host side owns every CPU buffer; train.cu owns every GPU buffer.
#ifndef TRAIN_CU_H
#define TRAIN_CU_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef MODEL_H  // model.h's tensor table (train.c's side sees model.h itself; these must agree)
enum {
    T_EMBED, T_ATTN_NORM, T_WQ, T_WK, T_WV, T_WO, T_MLP_NORM,
    T_WGATE, T_WUP, T_WDOWN, T_FINAL_NORM, T_LM_HEAD, N_TENSORS
};
#endif
#define HM_TENSORS 12

// One model as train.c set it up: its shape, where each tensor lives in the fp32 parameter
// buffer, and the quantizer of its linears.
typedef struct {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, head_dim, vocab_size, max_seq_len, tied;
    float rms_norm_eps;
    int quant_method, quant_bits, quant_group;   // quant.h's QuantSpec
    int quant_ste;                               // backward rule of int, nf3, nf4 (QUANT_STE_*)
    int64_t n_params, n_table;                   // all floats; the table's tensors alone
    int64_t offset[HM_TENSORS];                  // first float of each tensor (-1: absent)
    int64_t slice[HM_TENSORS];                   // floats of one layer's slice
    int rows[HM_TENSORS], cols[HM_TENSORS];      // one slice's shape ([out, in] for linears)
    int per_layer[HM_TENSORS], is_linear[HM_TENSORS];
    float *params;      // the host's parameters (n_params floats): read at upload, written at download
    float *adam_m, *adam_v;  // the host's AdamW moments (after hm_alloc_training), for checkpoints
    void *cpu;          // train.c's Model
} HostModel;

// The settings of a run: train.c's parse_args, flattened.
typedef struct {
    const char *train_tokens, *eval_ppl, *out_path, *log_path, *resume, *teacher_path;
    int steps, batch, micro_batch, seq, save_every, stop_after, inject_nan;
    float lr, min_lr, beta1, beta2, eps, weight_decay, grad_clip;
    int warmup, schedule;
    int distill, loss_kind, gamma_batches, gamma_include_pad;
    float gamma_given, temperature;   // gamma_given < 0: measure it
    int eval_T, eval_batch;
    char ckpt[4096];                  // "" when no checkpoint is written
    int generate_data;                // --generate-data (then -o is its JSONL, not a model)
    const char *generate_prompt, *eval_qa;
    // (steps above: with --data, what --epochs takes, as train.c's TrainData counts them)
    const char *data;                 // --data FILE.jsonl (NULL: --train-tokens or no training)
    int n_eval, eval_every;           // --data's held-out examples; --eval-every
    int bench, clip, histogram;       // --bench's timed steps (0: none), --clip, --histogram L (-1: none)
    const char *export_packed;
} HostArgs;

// What a resumed run needs (train.c's TrainState).
typedef struct {
    int64_t step, micro_batches;
    uint64_t rng;
    double gamma;
} HostTrainState;

// Parses argv with train.c's parse_args, builds the student (and the teacher when distilling)
// exactly as ./train does, loads the training data (train.c's train_data_from_flags), prints
// ./train's start-up lines, and begins the JSON result line. Flags train_cu cannot do yet end in
// an error naming them.
void host_setup(int argc, char **argv, HostArgs *a, HostModel *student, HostModel *teacher,
                HostTrainState *st);
// Micro-batch k of the run (train.c's next_batch: random windows of --train-tokens, or --data's
// examples in each epoch's order) with the RNG state *rng.
void host_next_batch(int64_t k, uint64_t *rng, int *inputs, int *targets, int B, int T);
// Held-out examples first .. first+nb-1 of --data, every real position a target (as train.c's
// eval_split_loss reads them).
void host_eval_batch(int first, int nb, int *inputs, int *targets);
float host_lr_at(int64_t step);
// RoPE tables [T, hd/2] of model m (train.c's rope_tables, Llama-3 scaling included).
void host_rope_tables(float *cosv, float *sinv, const HostModel *m, int T);
// Allocates the host's gradient and AdamW buffers (for checkpoints) and fills adam_m, adam_v.
void host_alloc_training(HostModel *m);
// Resumes from --resume into m->params, adam_m, adam_v and *st (train.c's checkpoint_load).
void host_resume(HostModel *m, HostTrainState *st);
void host_checkpoint_save(const HostModel *m, const HostTrainState *st);
// What a run stopped by a NaN leaves into dst: "the checkpoint PATH of step N is intact" (the
// last one written or resumed from) or "no checkpoint was written" (train.c's checkpoint_note).
void host_checkpoint_note(char *dst, size_t n);
// The JSONL log line of a step (train.c's log_step; eval_loss < 0: none); flips [N_TENSORS],
// flips_layer [L].
void host_log_step(HostModel *m, int64_t step, double loss, double eval_loss, float lr, float norm, float tps,
                   double gamma, const int64_t *flips, const int64_t *flips_layer, int64_t flips_total);
// One of train_cu's own flags with its value (NULL: none; both kept, not copied), which the
// pipeline's stages get too; given again, the flag's later value replaces the earlier one.
void host_stage_flag(const char *flag, const char *value);
// Appends "key": value text to the JSON result line; host_finish prints it.
void host_json_add(const char *text);
// Appends "key": "path", the path quoted for JSON (json_quote).
void host_json_add_path(const char *key, const char *path);
// -o: writes m->params as ./train would (atomically, --dtype; the tokenizer beside it).
void host_write_model(const HostModel *m);
// train.c's own --clip, --export-packed and --histogram on m->params (downloaded by the caller),
// each adding its part of the JSON line. --clip changes m->params (the caller uploads them).
void host_clip(HostModel *m);
void host_export_packed(HostModel *m);
void host_histogram(HostModel *m);
// --bench: FLOPs of a training step per token (train.c's train_flops_per_token), and its tokens.
double host_train_flops_per_token(const HostModel *m, int T);
void host_bench_tokens(int *inputs, int *targets, int n, int V);
// --eval-ppl's tokens (caller frees with host_free).
int *host_load_eval_tokens(const HostModel *m, int64_t *n);
void host_free(void *p);
void host_finish(void);

// The model's numbers for train.c's generation and zero-shot scoring, computed by the GPU
// (cuda/generate.cu, train.cu's section 10); train_cu_host.c hands them to train.c as its
// InferenceBackend.
typedef struct {
    void (*decode_begin)(int B, int T);                        // an empty KV cache: B sequences, T positions
    const float *(*decode_step)(const int *tokens, int pos);   // tokens[B] at pos -> logits [B,V], host memory
    void (*decode_end)(void);
    // lp[n] = log softmax(the logits at n of inputs[B,T])[targets[n]] wherever targets[n] >= 0
    void (*target_logprobs)(const int *inputs, const int *targets, int B, int T, double *lp);
} HostInference;
// --generate-data, --generate and --eval-qa as ./train runs them (train.c's prompts, sampling,
// tasks, files and JSON), on model m, with gpu computing the model; each adds ./train's JSON.
void host_generate_data(HostModel *m, const HostInference *gpu);
void host_generate_text(HostModel *m, const HostInference *gpu);
void host_eval_qa(HostModel *m, const HostInference *gpu);

// For the parity test (tests/cuda_parity.cu): train.c's own model on the CPU.
// A random model of a named shape (vocab 0: the shape's; untied: give it its own LM head), then
// quantized (q_method QUANT_NONE: not), with training buffers.
void host_model_init(HostModel *m, const char *shape, int vocab, int untied, uint64_t seed, int q_method, int q_bits,
                     int q_group);
void host_set_ste(HostModel *m, int ste);  // the backward rule of int, nf3, nf4, on both sides
float host_cpu_forward(HostModel *m, const int *inputs, const int *targets, int B, int T);
const float *host_cpu_logits(const HostModel *m);
const float *host_cpu_grads(const HostModel *m);
// Zeroes the gradients, runs the CPU backward of the mean CE of the last forward.
void host_cpu_backward(HostModel *m);
void host_cpu_backward_from_dlogits(HostModel *m, const float *dlogits);  // the backward from these dL/dlogits [B,T,V]
// Distillation micro-batch on the CPU (train.c's distill_step, after zeroing the gradients).
double host_cpu_distill_step(HostModel *student, HostModel *teacher, int loss_kind, float gamma, float temperature,
                             const int *inputs, const int *targets, int B, int T);
const float *host_cpu_dlogits(const HostModel *m);
// The CPU's fake-quantized linears (train.c's wq, table layout) and codes, after quantizing now.
const float *host_cpu_quantized(HostModel *m, const uint8_t **codes);
void host_cpu_adamw(HostModel *m, float lr);
double host_cpu_gamma(HostModel *teacher, const int *targets, int B, int T);
void host_model_free(HostModel *m);

#ifdef __cplusplus
}
#endif

#endif
