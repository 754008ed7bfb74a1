// bench.c — --bench: the throughput of full training steps on random tokens, in tokens/s and
// GFLOP/s, beside the bare matmul kernel's GFLOP/s measured in the same run.
//
// #included by train.c after the model (section 10): it uses the Model, its layers and Args (cli.c).
#ifndef BENCH_C
#define BENCH_C

// Floating-point operations of one training step per token: 6 per matmul weight (forward 2,
// backward 4) plus causal attention, whose two products cost 2*T*H*hd per token forward, as
// Kaplan et al. 2020 and PaLM's MFU count it.
static double train_flops_per_token(const Model *m, int T) {
    const ModelHeader *c = &m->cfg;
    double matmul = (double)m->n_params - (double)c->vocab_size * c->dim * (c->tied ? 0 : 1)
                  - (double)c->dim * (2 * c->n_layers + 1);  // the embedding lookup and norms are no matmuls
    return 6.0 * matmul + 6.0 * c->n_layers * (double)c->n_heads * c->head_dim * T;
}

// --bench: full training steps (forward, backward, AdamW) on random tokens.
static void bench(Model *m, const Args *a, int T, char *json, size_t n) {
    model_alloc_training(m);
    int B = a->micro_batch, V = m->cfg.vocab_size;
    int *inputs = malloc_or_die((size_t)B * T * sizeof(int), "inputs");
    int *targets = malloc_or_die((size_t)B * T * sizeof(int), "targets");
    Rng rng = rng_seeded(a->seed);
    for (int i = 0; i < B * T; i++) { inputs[i] = (int)(rng_u64(&rng) % V); targets[i] = (int)(rng_u64(&rng) % V); }
    double best = 1e30;
    for (int s = 0; s <= a->steps; s++) {  // step 0 warms up (page faults, caches)
        double t0 = now_seconds();
        model_zero_grad(m);
        model_forward(m, inputs, targets, B, T);
        model_backward(m);
        adamw_update(m, &a->opt, a->opt.lr);
        double dt = now_seconds() - t0;
        if (s > 0 && dt < best) best = dt;
        printf("bench step %d/%d: %.3f s%s\n", s, a->steps, dt, s == 0 ? " (warm-up)" : "");
        fflush(stdout);
    }
    double tps = B * T / best, gflops = tps * train_flops_per_token(m, T) / 1e9;
    // the reference, measured in the same run: the bare matmul kernel on the MLP's up
    // projection, [B*T, D] x [D, F], best of three
    int N = B * T, D = m->cfg.dim, F = m->cfg.hidden_dim;
    float *x = m->act[A_XN2], *y = m->act[A_UP];
    double kbest = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = now_seconds();
        matmul_forward(y, x, m->params_t[T_WUP], N, D, F);
        double dt = now_seconds() - t0;
        kbest = dt < kbest ? dt : kbest;
    }
    double kernel = 2.0 * N * D * F / kbest / 1e9;
    printf("bench: %lld params, %d x %d tokens per step, best %.3f s: %.0f tokens/s, %.1f GFLOP/s "
           "(%.0f%% of the matmul kernel's %.1f GFLOP/s on [%d,%d]x[%d,%d] in this run)\n",
           (long long)m->n_params, B, T, best, tps, gflops, 100.0 * gflops / kernel, kernel, N, D, D, F);
    snprintf(json, n, "\"bench\": {\"params\": %lld, \"batch\": %d, \"seq\": %d, \"step_s\": %.4f, \"tokens_per_s\": %.1f, "
             "\"gflops\": %.2f, \"matmul_gflops\": %.2f, \"fraction_of_matmul\": %.3f}",
             (long long)m->n_params, B, T, best, tps, gflops, kernel, gflops / kernel);
    free(inputs); free(targets);
}

#endif
