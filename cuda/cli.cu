/*
 * cuda/cli.cu: train_cu's own command line and start-up: the flags train.c's parser does not know
 * (--matmul, --attention, --loss-chunk, --layered-wq, --recompute, and their --help lines), taken
 * out before it sees the rest, and the GPU this process runs on.
 * #included by train.cu after its Model (section 10). Needs: matmul.cuh (g_bf16, g_compute,
 * lt_init), data_parallel.cuh (g_dp), common.cuh (g_prof_on, g_layered_wq_flag), train.cu's
 * g_attention_gemm, g_attention_flash, g_attention_cudnn, g_recompute and g_loss_chunk (section 2),
 * lib/train_cu.h (host_stage_flag: the pipeline's stages get these flags too).
 */

// No GPU: one clear line and exit 1 (before any model is loaded).
static void gpu_init(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        fail("no CUDA GPU is available (%s); train_cu needs an NVIDIA GPU and driver; ./train runs on the CPU",
             e != cudaSuccess ? cudaGetErrorString(e) : "no devices");
    if (g_dp.local_rank >= n) fail("%s's local rank %d, but this machine has %d GPU%s", g_dp.source, g_dp.local_rank, n, n > 1 ? "s" : "");
    cudaCheck(cudaSetDevice(g_dp.local_rank));
    cudaDeviceProp p;
    cudaCheck(cudaGetDeviceProperties(&p, g_dp.local_rank));
    printf("GPU: %s, %.1f GiB, compute capability %d.%d, %d multiprocessors\n", p.name, p.totalGlobalMem / 1073741824.0,
           p.major, p.minor, p.multiProcessorCount);
    lt_init();
    const char *prof = getenv("TRAIN_CU_PROFILE");
    g_prof_on = prof && *prof && strcmp(prof, "0") != 0;
}

// A flag with its value (argv[i - 1], argv[i]), for the pipeline's stages too (pipeline.c).
static void stage_flag(char **argv, int i) { host_stage_flag(argv[i - 1], argv[i]); }

// train_cu's flags of its own, taken out before train.c's parser sees the rest; each also goes to
// the stages of the pipeline (./train_cu -m MODEL -b 2 runs ./train_cu again for every stage).
static void parse_gpu_flags(int *argc, char **argv) {
    int o = 1, attention_given = 0;
    for (int i = 1; i < *argc; i++) {
        if (!strcmp(argv[i], "--matmul")) {
            if (i + 1 >= *argc) fail("--matmul: missing value (fp32, tf32 or bf16)");
            const char *v = argv[++i];
            stage_flag(argv, i);
            g_bf16 = !strcmp(v, "bf16");
            if (!strcmp(v, "fp32")) g_compute = CUBLAS_COMPUTE_32F;
            else if (!strcmp(v, "tf32") || g_bf16) g_compute = CUBLAS_COMPUTE_32F_FAST_TF32;
            else fail("--matmul: expected fp32, tf32 or bf16, got '%s'", v);
            continue;
        }
        if (!strcmp(argv[i], "--attention")) {
            if (i + 1 >= *argc) fail("--attention: missing value (gemm, fused, flash or cudnn)");
            const char *v = argv[++i];
            stage_flag(argv, i);
            attention_given = 1;
            g_attention_gemm = !strcmp(v, "gemm");
            g_attention_cudnn = !strcmp(v, "cudnn");  // the flash path's activations, cuDNN's kernels
            g_attention_flash = !strcmp(v, "flash") || g_attention_cudnn;
            if (!g_attention_gemm && !g_attention_flash && strcmp(v, "fused") != 0)
                fail("--attention: expected gemm, fused, flash or cudnn, got '%s'", v);
#ifndef USE_CUDNN
            if (g_attention_cudnn)
                fail("--attention cudnn: this train_cu was built without cuDNN (make found no cudnn.h, libcudnn or "
                     "cudnn_frontend.h; make cudnn-frontend, then make train_cu: doc/gpu.md)");
#endif
            continue;
        }
        if (!strcmp(argv[i], "--loss-chunk")) {
            if (i + 1 >= *argc) fail("--loss-chunk: missing value (rows, or 0 for automatic)");
            char *end;
            long v = strtol(argv[++i], &end, 10);
            stage_flag(argv, i);
            if (*end || end == argv[i] || v < 0 || v > (1L << 30)) fail("--loss-chunk: expected rows >= 0, got '%s'", argv[i]);
            g_loss_chunk = (int)v;
            continue;
        }
        if (!strcmp(argv[i], "--layered-wq")) {
            g_layered_wq_flag = 1;
            host_stage_flag(argv[i], NULL);
            continue;
        }
        if (!strcmp(argv[i], "--recompute")) {
            g_recompute = 1;
            host_stage_flag(argv[i], NULL);
            continue;
        }
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
            printf("train_cu: the GPU build of ./train. It takes ./train's flags below (--clip runs train.c's\n"
                   "search on the CPU) and five of its own:\n"
                   "  --matmul fp32|tf32|bf16  matmul precision: tf32 tensor cores, plain fp32, or bf16 operands\n"
                   "                        with fp32 accumulation (fp32 master weights; a bf16 teacher) [bf16]\n"
                   "  --attention gemm|fused|flash|cudnn  attention through cuBLAS with [T,T] scores per head\n"
                   "                        (TF32), the fused fp32 kernel (no [T,T] memory, CUDA cores), the\n"
                   "                        FlashAttention-2 kernel (bf16 tensor cores, no [T,T]; head_dim <= 128),\n"
                   "                        or cuDNN's fused attention (bf16, as flash; builds with cuDNN only)\n"
                   "                        [under --matmul bf16 cudnn in a build with cuDNN, else flash; gemm\n"
                   "                        under tf32 and fp32]\n"
                   "  --loss-chunk ROWS     rows of logits the classifier and loss take at a time (their\n"
                   "                        [B,T,V] logits are never stored); 0: at most 128 MiB of fp32 a\n"
                   "                        chunk, a multiple of 128 rows [0]\n"
                   "  --layered-wq          while training, keep the student's fake-quantized weights W^ for one\n"
                   "                        layer at a time, remade from its codes before the layer's forward and\n"
                   "                        backward: the same results in less memory (1.8 GiB on TinyLlama,\n"
                   "                        11.7 GiB on Llama-2-7B), 1-5%% slower\n"
                   "  --recompute           while training, remake the residual stream between each layer's two\n"
                   "                        blocks and its MLP's gate and up projections in the backward instead\n"
                   "                        of keeping them: the same results in less memory (4.9 GiB on\n"
                   "                        TinyLlama at 8 x 1024 tokens), about 9%% slower\n"
                   "Several GPUs: one process a GPU, placed by torchrun's, mpirun's or Slurm's variables (RANK,\n"
                   "WORLD_SIZE, LOCAL_RANK; MASTER_ADDR, MASTER_PORT [127.0.0.1:29500]); --batch is the global batch.\n\n");
        argv[o++] = argv[i];
    }
    *argc = o;
    argv[o] = NULL;
    // attention's precision follows the matmuls': bf16 tensor cores under bf16 (cuDNN's kernels in
    // a build with cuDNN, else flash's), faster than gemm and without its [T,T] scores
    // (doc/performance.md); exact fp32 products otherwise
    if (!attention_given) {
        g_attention_flash = g_bf16;
        g_attention_gemm = !g_bf16;
#ifdef USE_CUDNN
        g_attention_cudnn = g_bf16;
#endif
    }
}
