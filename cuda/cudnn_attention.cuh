/*
 * cuda/cudnn_attention.cuh: causal attention through cuDNN's fused scaled dot-product attention
 * (SDPA), built as graphs of cudnn-frontend's C++ API as llm.c's USE_CUDNN build does, forward
 * and backward (--attention cudnn). Compiled only with -DUSE_CUDNN, which the Makefile sets where
 * it finds cudnn.h, libcudnn and cudnn_frontend.h (doc/gpu.md).
 * Needs: train.cu's <cudnn_frontend.h>, common.cuh (fail, gpu_malloc, blocks_for, aligned_x8,
 * PROFILE, Act), matmul.cuh (bf16_scratch, bf16_of, g_bf_d), flash_attention.cuh
 * (attention_forward_flash, attention_backward_flash: the fallback, and the conventions below).
 */

// --- attention through cuDNN (--attention cudnn) ----------------------------------------------
// The same attention as flash_attention.cuh's, out_t = sum_{j<=t} softmax_j(scale q_t . k_j) v_j
// with scale = 1/sqrt(hd), computed by cuDNN's fused kernels (bf16 operands, fp32 accumulation
// and softmax, no [T,T] in memory). It takes and gives exactly what the flash launchers do, so
// the rest of train.cu cannot tell them apart, and a shape cuDNN has no engine for (or tensors
// not 16-byte aligned, which cuDNN requires) runs through the flash kernels instead; one shape's
// forward through cuDNN and its backward through flash is also consistent:
//   q [B,T,H,hd], k, v [B,T,KV,hd] bf16, query head h reading KV head h / (H / KV) (GQA, which
//     cuDNN takes from K and V having KV heads). cuDNN's tensors are [B,NH,T,hd] by their dims;
//     ours are passed as that with strides (T NH hd, hd, NH hd, 1): no copy.
//   out [B,T,H,hd]: an Act; cuDNN writes bf16, straight into out.h, or into a scratch that is cast
//     to out.f.
//   lse [B,H,T] fp32: cuDNN's softmax Stats, [B,H,T,1] with strides (H T, T, 1, 1), which is the
//     natural-log logsumexp of the scaled scores, ln sum_{j<=t} exp(scale q_t . k_j): the flash
//     forward's lse, in the same place, with no conversion (the backward reads it back as Stats).
//   dq [B,T,H,hd], dk, dv [B,T,KV,hd] fp32, accumulated (+=, the caller zeroes them), as the flash
//     backward's: cuDNN writes dQ, dK, dV in bf16 (summed in fp32 inside, rounded once at the
//     end) into a scratch, and cudnn_add_bf16 adds them to the fp32 buffers. So its gradients
//     carry one bf16 rounding (2^-9 relative) that flash's fp32 ones do not. Or, for a caller
//     that reads them in bf16 (train.cu under --matmul bf16: their matmuls' operand),
//     attention_backward_cudnn_bf16 writes dQ, dK, dV straight into its bf16 buffers, rows at the
//     strides it gives (dQ, dK and dV may share the rows of one buffer), and nothing else.
//   delta [B,H,T]: not written; cuDNN's backward computes dO_t . O_t itself, in its workspace.
// The causal mask is cuDNN's top-left diagonal with right bound 0 (key j <= query t), which with
// as many keys as queries is ours. Its backward is cuDNN's default, non-deterministic algorithm
// (dQ summed by atomics, as the flash backward's dq is).

namespace fe = cudnn_frontend;

static void cudnn_status_check(cudnnStatus_t s, const char *file, int line) {
    if (s != CUDNN_STATUS_SUCCESS) fail("cuDNN at %s:%d: %s", file, line, cudnnGetErrorString(s));
}
static void cudnn_fe_check(const fe::error_t &e, const char *file, int line) {
    if (e.is_bad()) fail("cuDNN at %s:%d: %s", file, line, e.err_msg.c_str());
}
#define cudnnCheck(x) cudnn_status_check((x), __FILE__, __LINE__)
#define cudnnFeCheck(x) cudnn_fe_check((x), __FILE__, __LINE__)

// One handle for the process's GPU (made at first use, after gpu_init chose the device), on the
// default stream as every other kernel of train.cu.
static cudnnHandle_t cudnn_handle(void) {
    static cudnnHandle_t h;
    if (!h) cudnnCheck(cudnnCreate(&h));
    return h;
}

// The workspace the graphs' plans ask for: one buffer, grown to the largest.
static void *g_cudnn_ws;
static int64_t g_cudnn_ws_n;
static void cudnn_workspace_reserve(int64_t n) {
    if (n <= g_cudnn_ws_n) return;
    gpu_free(g_cudnn_ws);
    g_cudnn_ws = gpu_malloc((size_t)n, "cuDNN workspace");
    g_cudnn_ws_n = n;
}
// bf16 scratch: out when it is fp32; dQ, dK, dV, then O's bf16 copy when out is fp32 (backward).
static __nv_bfloat16 *g_cudnn_bf;
static int64_t g_cudnn_bf_n;

// The tensors of the graphs, named by uid in the variant pack that execute takes.
enum { CUDNN_Q = 1, CUDNN_K, CUDNN_V, CUDNN_O, CUDNN_STATS, CUDNN_DO, CUDNN_DQ, CUDNN_DK, CUDNN_DV };

// x [B,T,NH,hd] bf16 as cuDNN's [B,NH,T,hd] (dims) by strides.
static fe::graph::Tensor_attributes cudnn_bthd(const char *name, int64_t uid, int B, int T, int NH, int hd) {
    return fe::graph::Tensor_attributes()
        .set_name(name)
        .set_uid(uid)
        .set_dim({B, NH, T, hd})
        .set_stride({(int64_t)T * NH * hd, hd, (int64_t)NH * hd, 1});
}
// lse [B,H,T] fp32 as cuDNN's Stats [B,H,T,1].
static fe::graph::Tensor_attributes cudnn_stats(int B, int T, int H) {
    return fe::graph::Tensor_attributes()
        .set_name("Stats")
        .set_uid(CUDNN_STATS)
        .set_dim({B, H, T, 1})
        .set_stride({(int64_t)H * T, T, 1, 1})
        .set_data_type(fe::DataType_t::FLOAT);
}

// An empty graph of bf16 tensors, computed and kept between its operations in fp32.
static std::shared_ptr<fe::graph::Graph> cudnn_graph(void) {
    auto g = std::make_shared<fe::graph::Graph>();
    g->set_io_data_type(fe::DataType_t::BFLOAT16)
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    return g;
}

// The forward graph: O and Stats of causal SDPA on Q, K, V (Stats always: the flash forward writes
// lse whether or not a backward follows, and it costs one float a row).
static std::shared_ptr<fe::graph::Graph> cudnn_forward_graph(int B, int T, int H, int KV, int hd) {
    auto g = cudnn_graph();
    auto Q = g->tensor(cudnn_bthd("Q", CUDNN_Q, B, T, H, hd));
    auto K = g->tensor(cudnn_bthd("K", CUDNN_K, B, T, KV, hd));
    auto V = g->tensor(cudnn_bthd("V", CUDNN_V, B, T, KV, hd));
    auto opt = fe::graph::SDPA_attributes()
                   .set_name("attention_forward")
                   .set_generate_stats(true)
                   .set_causal_mask(true)
                   .set_attn_scale(1.0f / sqrtf((float)hd));
    auto [O, S] = g->sdpa(Q, K, V, opt);
    O->set_output(true).set_uid(CUDNN_O).set_dim({B, H, T, hd}).set_stride({(int64_t)T * H * hd, hd, (int64_t)H * hd, 1});
    S->set_output(true).set_uid(CUDNN_STATS).set_data_type(fe::DataType_t::FLOAT).set_dim({B, H, T, 1})
        .set_stride({(int64_t)H * T, T, 1, 1});
    return g;
}
// The backward graph: dQ, dK, dV of causal SDPA from Q, K, V, O, dO and the forward's Stats; a
// position's dQ heads start ldq values after the last position's, its dK and dV heads ldkv.
static std::shared_ptr<fe::graph::Graph> cudnn_backward_graph(int B, int T, int H, int KV, int hd, int ldq, int ldkv) {
    auto g = cudnn_graph();
    auto Q = g->tensor(cudnn_bthd("Q", CUDNN_Q, B, T, H, hd));
    auto K = g->tensor(cudnn_bthd("K", CUDNN_K, B, T, KV, hd));
    auto V = g->tensor(cudnn_bthd("V", CUDNN_V, B, T, KV, hd));
    auto O = g->tensor(cudnn_bthd("O", CUDNN_O, B, T, H, hd));
    auto dO = g->tensor(cudnn_bthd("dO", CUDNN_DO, B, T, H, hd));
    auto S = g->tensor(cudnn_stats(B, T, H));
    auto opt = fe::graph::SDPA_backward_attributes()
                   .set_name("attention_backward")
                   .set_causal_mask(true)
                   .set_attn_scale(1.0f / sqrtf((float)hd));
    auto [dQ, dK, dV] = g->sdpa_backward(Q, K, V, O, dO, S, opt);
    dQ->set_output(true).set_uid(CUDNN_DQ).set_dim({B, H, T, hd}).set_stride({(int64_t)T * ldq, hd, ldq, 1});
    dK->set_output(true).set_uid(CUDNN_DK).set_dim({B, KV, T, hd}).set_stride({(int64_t)T * ldkv, hd, ldkv, 1});
    dV->set_output(true).set_uid(CUDNN_DV).set_dim({B, KV, T, hd}).set_stride({(int64_t)T * ldkv, hd, ldkv, 1});
    return g;
}

// A graph validated, lowered to cuDNN's backend and given an execution plan (cuDNN's heuristics'
// first choice among the engines that support it): the first step's error, if one fails.
static fe::error_t cudnn_plan(fe::graph::Graph &g) {
    if (fe::error_t e = g.validate(); e.is_bad()) return e;
    if (fe::error_t e = g.build_operation_graph(cudnn_handle()); e.is_bad()) return e;
    if (fe::error_t e = g.create_execution_plans({fe::HeurMode_t::A}); e.is_bad()) return e;
    if (fe::error_t e = g.check_support(cudnn_handle()); e.is_bad()) return e;
    return g.build_plans(cudnn_handle(), fe::BuildPlanPolicy_t::HEURISTICS_CHOICE);
}
// The graph planned, its workspace reserved; or an empty pointer, with why on stderr, when cuDNN
// rejects the shape (head_dim not a multiple of 8 or over its limit, GQA or causal masking not in
// this cuDNN's engines, no engine for this GPU): then the flash kernels take it.
static std::shared_ptr<fe::graph::Graph> cudnn_build(std::shared_ptr<fe::graph::Graph> g, const char *what, int B, int T,
                                                     int H, int KV, int hd) {
    fe::error_t e = cudnn_plan(*g);
    if (e.is_bad()) {
        fprintf(stderr, "note: cuDNN takes no %s of B %d T %d H %d/%d hd %d (%s); the flash kernels run it\n", what, B, T, H,
                KV, hd, e.err_msg.c_str());
        return nullptr;
    }
    int64_t ws = 0;
    cudnnFeCheck(g->get_workspace_size(ws));
    cudnn_workspace_reserve(ws);
    return g;
}

// The graph of a shape, built on its first use and kept (building one takes cuDNN's heuristics and
// plan compilation: up to seconds; a run sees one or two shapes, training's and evaluation's).
// ldq, ldkv: the backward's output strides (0: H hd and KV hd, each gradient in a buffer of its own).
static fe::graph::Graph *cudnn_graph(int backward, int B, int T, int H, int KV, int hd, int ldq = 0, int ldkv = 0) {
    static std::map<std::array<int, 8>, std::shared_ptr<fe::graph::Graph>> cache;
    if (backward && !ldq) ldq = H * hd, ldkv = KV * hd;
    std::array<int, 8> key = {backward, B, T, H, KV, hd, ldq, ldkv};
    auto it = cache.find(key);
    if (it == cache.end()) {
        auto g = backward ? cudnn_backward_graph(B, T, H, KV, hd, ldq, ldkv) : cudnn_forward_graph(B, T, H, KV, hd);
        it = cache.emplace(key, cudnn_build(g, backward ? "attention backward" : "attention forward", B, T, H, KV, hd)).first;
    }
    return it->second.get();
}

// Whether cuDNN runs this shape's forward and backward (the parity test asks, so that a silent
// fallback to the flash kernels cannot pass for cuDNN).
static int cudnn_attention_supported(int B, int T, int H, int KV, int hd) {
    return cudnn_graph(0, B, T, H, KV, hd) && cudnn_graph(1, B, T, H, KV, hd);
}

static int aligned16(const void *p) { return p == NULL || (uintptr_t)p % 16 == 0; }

// y[n] = x[n] (add 0) or y[n] += x[n] (add 1), x bf16, y fp32, n % 8 == 0, both 16-byte aligned: O's
// cast to fp32, and dQ, dK, dV added to dq, dk, dv. Thread mapping: one thread per 8 elements (a
// 16-byte word of x, two float4 of y).
__global__ static void cudnn_add_bf16_kernel(float *y, const __nv_bfloat16 *x, int64_t n8, int add) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n8) return;
    float a[8];
    bf16x8_load(a, x + 8 * i);
    float4 *p = (float4 *)(y + 8 * i), y0 = add ? p[0] : make_float4(0, 0, 0, 0), y1 = add ? p[1] : make_float4(0, 0, 0, 0);
    p[0] = make_float4(y0.x + a[0], y0.y + a[1], y0.z + a[2], y0.w + a[3]);
    p[1] = make_float4(y1.x + a[4], y1.y + a[5], y1.z + a[6], y1.w + a[7]);
}
static void cudnn_add_bf16(float *y, const __nv_bfloat16 *x, int64_t n, int add) {
    cudnn_add_bf16_kernel<<<blocks_for(n / 8, 256), 256>>>(y, x, n / 8, add);
    launchCheck();
}

// The flash launchers' arguments and results (cuda/flash_attention.cuh), through cuDNN.
static void attention_forward_cudnn(Act out, float *lse, const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                                    const __nv_bfloat16 *v, int B, int T, int H, int KV, int hd) {
    fe::graph::Graph *g = cudnn_graph(0, B, T, H, KV, hd);
    if (!g || !aligned_x8(hd, q, k, v, lse) || !aligned16(out.f) || !aligned16(out.h)) {
        attention_forward_flash(out, lse, q, k, v, B, T, H, KV, hd);
        return;
    }
    PROFILE(PROF_ATTENTION);
    int64_t nq = (int64_t)B * T * H * hd;
    __nv_bfloat16 *o = out.h ? out.h : bf16_scratch(&g_cudnn_bf, &g_cudnn_bf_n, nq);
    std::unordered_map<int64_t, void *> pack = {
        {CUDNN_Q, (void *)q}, {CUDNN_K, (void *)k}, {CUDNN_V, (void *)v}, {CUDNN_O, o}, {CUDNN_STATS, lse}};
    cudnnFeCheck(g->execute(cudnn_handle(), pack, g_cudnn_ws));
    if (!out.h) cudnn_add_bf16(out.f, o, nq, 0);
}

// dQ, dK, dV in bf16 into dq, dk, dv, a position's rows ldq and ldkv values apart (16-byte
// aligned); dout and out bf16 (Act.h). Returns 0, having written nothing, where cuDNN takes no
// such shape or alignment: the caller then runs attention_backward_flash (or another backward).
static int attention_backward_cudnn_bf16(__nv_bfloat16 *dq, __nv_bfloat16 *dk, __nv_bfloat16 *dv, int ldq, int ldkv,
                                         Act dout, const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                                         const __nv_bfloat16 *v, Act out, const float *lse, int B, int T, int H, int KV,
                                         int hd) {
    if (!dout.h || !out.h || ldq % 8 || ldkv % 8 || !aligned_x8(hd, q, k, v, lse) || !aligned_x8(hd, dq, dk, dv, dout.h) ||
        !aligned16(out.h))
        return 0;
    fe::graph::Graph *g = cudnn_graph(1, B, T, H, KV, hd, ldq, ldkv);
    if (!g) return 0;
    PROFILE(PROF_ATTENTION);
    std::unordered_map<int64_t, void *> pack = {
        {CUDNN_Q, (void *)q},   {CUDNN_K, (void *)k},  {CUDNN_V, (void *)v},  {CUDNN_O, out.h},  {CUDNN_DO, dout.h},
        {CUDNN_STATS, (void *)lse}, {CUDNN_DQ, dq}, {CUDNN_DK, dk}, {CUDNN_DV, dv}};
    cudnnFeCheck(g->execute(cudnn_handle(), pack, g_cudnn_ws));
    return 1;
}

// The flash backward's arguments and results: dq, dk, dv fp32, added to. cuDNN's bf16 dQ, dK, dV
// go through a scratch (with O's bf16 copy when out is fp32, and dO's when dout is).
static void attention_backward_cudnn(float *dq, float *dk, float *dv, float *delta, Act dout,
                                     const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v,
                                     Act out, const float *lse, int B, int T, int H, int KV, int hd) {
    if (!dout.h != !out.h) fail("internal: the cuDNN backward's dO and O in different precisions");
    int64_t nq = (int64_t)B * T * H * hd, nk = (int64_t)B * T * KV * hd;
    __nv_bfloat16 *s = bf16_scratch(&g_cudnn_bf, &g_cudnn_bf_n, 2 * nq + 2 * nk);  // dQ, dK, dV, then O's copy
    __nv_bfloat16 *gq = s, *gk = s + nq, *gv = gk + nk;
    Act ob = out, db = dout;
    if (!out.h && aligned16(out.f) && aligned16(dout.f)) {
        ob.h = gv + nk;
        cast_bf16(ob.h, out.f, nq);  // out.f is cuDNN's bf16 O widened: this gives back the same bits
        db.h = (__nv_bfloat16 *)bf16_of(&g_bf_d, &g_bf_d_n, dout.f, nq);
    }
    if (!aligned16(dq) || !aligned16(dk) || !aligned16(dv) ||
        !attention_backward_cudnn_bf16(gq, gk, gv, H * hd, KV * hd, db, q, k, v, ob, lse, B, T, H, KV, hd)) {
        attention_backward_flash(dq, dk, dv, delta, dout, q, k, v, out, lse, B, T, H, KV, hd);
        return;
    }
    cudnn_add_bf16(dq, gq, nq, 1);
    cudnn_add_bf16(dk, gk, nk, 1);
    cudnn_add_bf16(dv, gv, nk, 1);
}
