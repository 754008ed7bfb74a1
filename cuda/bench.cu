/*
 * cuda/bench.cu: --bench, lib/bench.c's benchmark on the GPU, with its JSON keys.
 * #included by train.cu after its Model (section 10). Needs: train.cu's Model and training step
 * (model_forward_hidden, model_backward_scaled, model_ste_backward, adamw_update), matmul.cuh.
 */

// --bench: train.c's bench on the GPU, with its JSON keys. Full training steps (forward, backward,
// AdamW) of --micro-batch x --seq random tokens, each timed from its first launch to
// cudaDeviceSynchronize; the best of --steps after one warm-up step (cuBLAS's heuristics, the
// first allocations). The reference, measured in the same run: the bare matmul of the MLP's up
// projection, [B*T, D] x [D, F], through the same cuBLAS call and --matmul precision the model
// uses, best of three.
static void bench(Model *m, const HostArgs *a, int T, char *json, size_t n) {
    model_alloc_training(m);
    int B = a->micro_batch, V = m->h->vocab_size;
    int *inputs = (int *)malloc((size_t)B * T * sizeof(int)), *targets = (int *)malloc((size_t)B * T * sizeof(int));
    if (!inputs || !targets) fail("out of host memory");
    host_bench_tokens(inputs, targets, B * T, V);
    OptConfig opt = {a->lr, a->beta1, a->beta2, a->eps, a->weight_decay, a->grad_clip};
    double best = 1e30;
    for (int s = 0; s <= a->bench; s++) {
        cudaCheck(cudaDeviceSynchronize());
        double t0 = now_seconds();
        model_zero_grad(m);
        model_forward_hidden(m, inputs, targets, B, T);  // the training step's path: the classifier fused with the loss
        model_backward_scaled(m, targets, 1.0f);
        model_ste_backward(m);
        adamw_update(m, &opt, a->lr, 1.0f);
        cudaCheck(cudaDeviceSynchronize());
        double dt = now_seconds() - t0;
        if (s > 0 && dt < best) best = dt;
        printf("bench step %d/%d: %.4f s%s\n", s, a->bench, dt, s == 0 ? " (warm-up)" : "");
        fflush(stdout);
    }
    double tps = B * T / best, gflops = tps * host_train_flops_per_token(m->h, T) / 1e9;
    int N = B * T, D = m->h->dim, F = m->h->hidden_dim;
    double kbest = 1e30;
    for (int r = 0; r < 3; r++) {
        cudaCheck(cudaDeviceSynchronize());
        double t0 = now_seconds();
        matmul_forward(act_in(m, A_UP, 0), act_in(m, A_XN2, 0), weight(m, T_WUP, 0), N, D, F);
        cudaCheck(cudaDeviceSynchronize());
        double dt = now_seconds() - t0;
        kbest = dt < kbest ? dt : kbest;
    }
    double kernel = 2.0 * N * D * F / kbest / 1e9;
    note_peak();
    printf("bench: %lld params, %d x %d tokens per step, best %.4f s: %.0f tokens/s, %.1f GFLOP/s "
           "(%.0f%% of the cuBLAS matmul's %.1f GFLOP/s on [%d,%d]x[%d,%d] in this run; --matmul %s)\n",
           (long long)m->n_params, B, T, best, tps, gflops, 100.0 * gflops / kernel, kernel, N, D, D, F,
           g_bf16 ? "bf16" : g_compute == CUBLAS_COMPUTE_32F ? "fp32" : "tf32");
    snprintf(json, n, "\"bench\": {\"params\": %lld, \"batch\": %d, \"seq\": %d, \"step_s\": %.4f, \"tokens_per_s\": %.1f, "
             "\"gflops\": %.2f, \"matmul_gflops\": %.2f, \"fraction_of_matmul\": %.3f}",
             (long long)m->n_params, B, T, best, tps, gflops, kernel, gflops / kernel);
    free(inputs); free(targets);
}
