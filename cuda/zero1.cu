/*
 * cuda/zero1.cu: data parallelism, one process per GPU over NCCL, with ZeRO-1 (Rajbhandari et al.
 * 2020): a step's gradients, clipping norm and AdamW update over the ranks, the checkpoint, --resume.
 *
 * The launcher's variables (dp.h: torchrun's, Open MPI's or Slurm's) place this process: rank r of
 * W, on GPU local_rank. Rank 0 makes NCCL's id and hands it to the others over TCP at
 * MASTER_ADDR:MASTER_PORT. The same global batch as one GPU: a step's accum micro-batches are dealt
 * round-robin (rank r computes micro-batches r, r + W, ...), every rank draws all of them from the
 * data RNG so that the RNG stays in step, and each loss keeps its scale 1/accum, so the gradients
 * summed over the ranks are one GPU's. ZeRO-1: the parameter, gradient and moment buffers are split
 * into W equal shards (padded, dp.h); gradients are reduce-scattered (summed), rank r keeps AdamW m
 * and v of its shard alone, the clipping norm is the all-reduced sum of the shards' squares, each
 * rank updates its shard of the fp32 master weights (train.cu's adamw_update, train.c's weight
 * decay per tensor) and the shards are all-gathered into every rank's full copy. WORLD_SIZE=1
 * takes this path too and writes the bytes of a plain run. Only rank 0 prints and writes files;
 * every rank ends on the same numbers.
 *
 * #included by train.cu after its Model (section 10). Needs: data_parallel.cuh (g_dp, g_nccl,
 * DP_COLLECTIVE, dp_reduce_scatter, dp_all_gather), lib/dp.h (the shard and span arithmetic),
 * adamw.cuh (sum_squares), train.cu's Model, model_upload and model_alloc_training.
 */

static int64_t dp_shard(const Model *m) { return dp_shard_floats(m->n_params, g_dp.world); }
static double dp_all_reduce(Model *m, double x) {
    cudaCheck(cudaMemcpy(m->d_sum, &x, sizeof x, cudaMemcpyHostToDevice));
    DP_COLLECTIVE(ncclAllReduce(m->d_sum, m->d_sum, 1, ncclDouble, ncclSum, g_nccl, 0));
    cudaCheck(cudaMemcpy(&x, m->d_sum, sizeof x, cudaMemcpyDeviceToHost));
    return x;
}
static double dp_broadcast(Model *m, double x) {
    cudaCheck(cudaMemcpy(m->d_sum, &x, sizeof x, cudaMemcpyHostToDevice));
    DP_COLLECTIVE(ncclBroadcast(m->d_sum, m->d_sum, 1, ncclDouble, 0, g_nccl, 0));
    cudaCheck(cudaMemcpy(&x, m->d_sum, sizeof x, cudaMemcpyDeviceToHost));
    return x;
}

// What model_alloc_training gave this rank under ZeRO-1.
static void dp_report_shard(const Model *m) {
    size_t ns = (size_t)dp_shard(m) * sizeof(float);
    printf("ZeRO-1: rank %d of %d owns floats [%lld, %lld) of %lld (padded to %lld); AdamW m, v %.1f MiB a rank "
           "(%.1f MiB unsharded)\n", g_dp.rank, g_dp.world, (long long)(g_dp.rank * dp_shard(m)),
           (long long)((g_dp.rank + 1) * dp_shard(m)), (long long)m->n_params, (long long)dp_padded(m->n_params),
           2.0 * ns / 1048576.0, 2.0 * m->n_params * sizeof(float) / 1048576.0);
}

// After the micro-batches: this rank's shard of the summed gradients; the step's loss over all ranks.
static double dp_reduce_gradients(Model *m, double loss) {
    PROFILE(PROF_OPTIMIZER);
    dp_reduce_scatter(m->grads, dp_shard(m));
    return dp_all_reduce(m, loss);
}

// clip_grad_norm over the shards: |g|^2 = sum over ranks of the shard's squares.
static float dp_clip_grad_norm(Model *m, float clip, float *gscale) {
    PROFILE(PROF_OPTIMIZER);
    int64_t shard = dp_shard(m);
    float *g = m->grads + g_dp.rank * shard;
    float norm = (float)sqrt(dp_all_reduce(m, sum_squares(m->d_sum, g, shard)));
    *gscale = clip > 0 && norm > clip ? clip / norm : 1.0f;
    return norm;
}

// checkpoint_save under ZeRO-1: m and v gathered (through the gradient buffer, free after the
// update) into the host's full copies; rank 0 writes the file.
static void dp_checkpoint_save(Model *m, const HostTrainState *st) {
    int64_t shard = dp_shard(m);
    size_t n = (size_t)m->n_params * sizeof(float);
    if (g_dp.rank == 0) {
        cudaCheck(cudaMemcpy(m->h->params, m->params, n, cudaMemcpyDeviceToHost));
        host_alloc_training(m->h);
    }
    for (int k = 0; k < 2; k++) {
        cudaCheck(cudaMemcpy(m->grads + g_dp.rank * shard, k ? m->adam_v : m->adam_m, (size_t)shard * sizeof(float),
                             cudaMemcpyDeviceToDevice));
        dp_all_gather(m->grads, shard);
        if (g_dp.rank == 0) cudaCheck(cudaMemcpy(k ? m->h->adam_v : m->h->adam_m, m->grads, n, cudaMemcpyDeviceToHost));
    }
    cudaCheck(cudaMemset(m->grads, 0, (size_t)dp_padded(m->n_params) * sizeof(float)));
    if (g_dp.rank == 0) host_checkpoint_save(m->h, st);
}

// --resume under ZeRO-1: every rank reads the checkpoint (train.c's checkpoint_load, which checks
// it) and keeps its shard of m and v.
static void dp_resume(Model *m, HostTrainState *st) {
    host_resume(m->h, st);
    model_upload(m, 0);
    model_alloc_training(m);
    int64_t shard = dp_shard(m), lo = g_dp.rank * shard, k = m->n_params - lo < shard ? m->n_params - lo : shard;
    if (k > 0) {
        cudaCheck(cudaMemcpy(m->adam_m, m->h->adam_m + lo, (size_t)k * sizeof(float), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(m->adam_v, m->h->adam_v + lo, (size_t)k * sizeof(float), cudaMemcpyHostToDevice));
    }
}
