/*
 * cuda/flash_attention.cuh: FlashAttention-2 (Dao 2023) on bf16 tensor cores (mma.sync m16n8k16,
 * ldmatrix, cp.async), forward and backward, for head_dim up to 128 (--attention flash).
 * Needs: common.cuh (gpu_limits, gpu_grow, aligned_x8, Act, PROFILE), matmul.cuh (bf16_of, the
 * bf16 scratch), attention.cuh (attention_row_delta, attention_shared).
 */

// --- the same attention on tensor cores (--attention flash) -----------------------------------
// FlashAttention-2 (Dao 2023): the online softmax of attention.cuh's fused kernel, with the products of
// each tile on tensor cores and no [T,T] matrix in memory. It reads q, k, v (and, backward, dO)
// as bf16 copies [B,T,NH,hd] made once per layer (the forward keeps them for the backward in
// place of fp32 ones); tiles are staged into shared memory by cp.async (16-byte copies that run
// while the warps compute on the previous tile: double buffering), rows past T and dims past hd
// as zeros (which add nothing to a dot product), so that a head of hd <= 64 is computed as one of
// HDP = 64 dims, hd <= 128 as 128. The softmax runs in base 2 (exp(s) = exp2(s log2 e), and exp2
// is one instruction): on scores x_tj = s_tj log2(e), with the running max m in the same units.
// Per tile of 64 keys, for each query t (m_t and l_t start at -inf and 0, O_t at 0):
//   m_new = max(m, max_j x_tj),  c = exp2(m - m_new),  p_tj = exp2(x_tj - m_new),
//   l = c l + sum_j p_tj,  O_t = c O_t + sum_j p_tj v_j  (P rounded to bf16 for the product);
// at the end out_t = O_t / l_t and lse_t = (m_t + log2 l_t) ln 2.
//
// The products are the tensor cores' warp-wide mma.sync m16n8k16 (bf16 operands, fp32
// accumulators), whose fragments have a documented layout (PTX ISA, "Matrix Fragments for
// mma.m16n8k16"). With g = lane / 4 and c = lane % 4:
//   A, 16 x 16 (4 registers of 2 bf16): rows g and g + 8, columns 2c, 2c + 1 and 2c + 8, 2c + 9
//      (register i holds row g + 8 (i & 1), columns 2c + 8 (i >> 1) and the next);
//   B, 16 x 8 (2 registers): column g, rows 2c, 2c + 1 and 2c + 8, 2c + 9;
//   C, 16 x 8 (4 floats): rows g and g + 8 (element e: row g + 8 (e >> 1)), columns 2c + (e & 1).
// So every row of a product lives in the 4 lanes of one group (a row's max and sum take two
// shuffles), and the C fragments of two neighbouring 8-column tiles of S are, packed to bf16,
// exactly the A fragment of P for the next product: P never leaves the registers. Operands in
// shared memory are read by ldmatrix.x4, four 8 x 8 blocks a warp-wide instruction, which hands
// lane (g, c) row g, columns 2c and 2c + 1 of each block: the pairs of the fragments above. So an
// operand whose k dimension runs along the rows of its tile (K, V as A in the backward's K Q^T and
// V dO^T; K as B in Q K^T, Q and dO in K Q^T and V dO^T) is read as it is, one instruction for
// an A fragment or two B fragments; one whose k runs down the columns (V in P V, dO and Q in P^T
// dO and dS^T Q, dS^T and K in dS K) through ldmatrix .trans, which hands each lane the pairs of
// the transposed blocks. Tile rows are HDP + 8 bf16 (16 bytes more than a multiple of
// 128) apart, so ldmatrix's 8 rows of a block fall in different banks.
#define FLASH_T 64                // keys per tile; queries a block of the backward owns
#define FLASH_THREADS 128         // 4 warps: of the backward, 16 of the 64 rows each
#define FLASH_MAX_HD 128
#define FLASH_LDS (FLASH_T + 8)   // row stride of dS^T [64][64] in shared memory, bf16
// Row tiles of 16 queries a warp of the forward owns, so FLASH_T MT queries a block. Every K and V
// fragment a warp reads from shared memory (ldmatrix) feeds MT mma, one a row tile: MT = 2
// (FlashAttention-2's 128 queries a block of 4 warps) halves the shared-memory reads per mma and
// the K, V tiles staged per query, but holding two row tiles' S and O fragments leaves room for
// only 2 blocks (8 warps) an SM, against 3 at MT = 1; on the benchmark's layer the warps that
// hide latency count for more than the reads saved (doc/performance.md), so MT = 1. MT = 2 stays
// a setting (the kernel takes any MT); HDP = 128 cannot take it (its O accumulators alone are
// HDP / 2 registers a row tile: two would pass the limit of 255).
#define FLASH_FORWARD_MT(HDP) 1
// Blocks a SM that the kernels of HDP = 64 are compiled for (__launch_bounds__ caps the registers
// a thread at 64K / (128 threads x blocks)): the forward 3 (3 x 36 KiB of shared memory), the
// backward 3 (which it fits by computing S^T in halves; 3 x 64 KiB). HDP = 128: the forward with
// bf16 O 3 (with fp32 O that cap would spill, so no minimum), the backward no minimum (0).
#define FLASH_FORWARD_BLOCKS 3
#define FLASH_BACKWARD_BLOCKS 3

__device__ static inline void mma_16816(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// 2^x by the SFU's ex2.approx.ftz alone (FlashAttention-2's exp2f, built with --use_fast_math):
// exp2f wraps the same instruction in a range test and two multiplies only so that results below
// 2^-126 come out subnormal rather than 0; in the softmax they are terms below 2^-126 of a row
// whose largest term is 1 (the forward's p and corrections, the backward's p = exp2(x - lse2) <= 1).
// 2^-inf = +0, the masked keys' p.
__device__ static inline float exp2_ftz(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
// two floats as the bf16 pair of one register, the first in the low half (the lower column)
__device__ static inline uint32_t bf16_pair(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}
// ldmatrix.x4 loads four 8 x 8 bf16 blocks: lane l gives the shared address of row l % 8 of block
// l / 8 (8 rows of 16 bytes, anywhere), and register i of lane (g, c) receives row g, columns 2c
// and 2c + 1 of block i (with .trans: of the block's transpose, i.e. column g, rows 2c and 2c + 1).
__device__ static inline void ldmatrix_x4(uint32_t r[4], const __nv_bfloat16 *p) {
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
__device__ static inline void ldmatrix_x4_trans(uint32_t r[4], const __nv_bfloat16 *p) {
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
// The A fragment of rows r .. r + 15, columns k .. k + 15 of a row-major bf16 matrix in shared
// memory: block i is rows r + 8 (i & 1), columns k + 8 (i >> 1), lane l giving row l % 8 of block
// l / 8; so register i holds row g + 8 (i & 1), columns k + 2c + 8 (i >> 1) and the next, the A
// layout above.
__device__ static inline void frag_a(uint32_t a[4], const __nv_bfloat16 *x, int ld, int r, int k, int lane) {
    ldmatrix_x4(a, x + (r + (lane >> 3 & 1) * 8 + (lane & 7)) * ld + k + (lane >> 4) * 8);
}
// The B fragments of columns 8n .. 8n + 15 (two fragments: b[0..1] and b[2..3]) of rows k ..
// k + 15 of B = x^T, x [n][k] row-major in shared memory (k along x's rows, as K in Q K^T): block
// i is rows 8 (n + (i >> 1)) of x, columns k + 8 (i & 1), lane l giving row l % 8 of block l / 8;
// so register i holds B's column g of tile n + (i >> 1), rows 2c + 8 (i & 1) and the next.
__device__ static inline void frag_b(uint32_t b[4], const __nv_bfloat16 *x, int ld, int k, int n, int lane) {
    ldmatrix_x4(b, x + ((n + (lane >> 4)) * 8 + (lane & 7)) * ld + k + (lane >> 3 & 1) * 8);
}
// The A fragment of rows r .. r + 15, columns k .. k + 15 of A = x^T, x [k][r] row-major in
// shared memory (k down A's columns, as dS^T stored [key][query] for dS K): ldmatrix.x4.trans,
// block i is rows k + 8 (i >> 1) of x, columns r + 8 (i & 1), lane l giving row l % 8 of block
// l / 8; so register i holds A's row g + 8 (i & 1), columns k + 2c + 8 (i >> 1) and the next.
__device__ static inline void frag_a_trans(uint32_t a[4], const __nv_bfloat16 *x, int ld, int r, int k, int lane) {
    ldmatrix_x4_trans(a, x + (k + (lane >> 4) * 8 + (lane & 7)) * ld + r + (lane >> 3 & 1) * 8);
}
// C fragments n and n + 1 of a 16-row product, as the A fragment of its columns 8n .. 8n + 15.
__device__ static inline void frag_a_of_c(uint32_t a[4], const float c0[4], const float c1[4]) {
    a[0] = bf16_pair(c0[0], c0[1]);
    a[1] = bf16_pair(c0[2], c0[3]);
    a[2] = bf16_pair(c1[0], c1[1]);
    a[3] = bf16_pair(c1[2], c1[3]);
}
// The B fragments of columns 8n .. 8n + 15 (two fragments: b[0..1] and b[2..3]) of rows k ..
// k + 15 of a row-major bf16 matrix x [k][n] in shared memory: ldmatrix.x4.trans, lane l giving
// the address of row l % 8 of block l / 8 (blocks: rows k and k + 8, columns 8n and 8n + 8).
__device__ static inline void frag_b_trans(uint32_t b[4], const __nv_bfloat16 *x, int ld, int k, int n, int lane) {
    ldmatrix_x4_trans(b, x + (k + (lane >> 3 & 1) * 8 + (lane & 7)) * ld + (n + (lane >> 4)) * 8);
}
// acc[i] (row tile i < MT: 16 rows x HDP columns of C fragments) += a[i] B, a[i] a 16 x 16 A
// fragment, B rows k .. k + 15 of a row-major [.][HDP] matrix in shared memory; each B fragment
// read serves all MT row tiles (O += P V in the forward, FLASH_FORWARD_MT; dQ += dS K with MT = 1).
template <int HDP, int MT>
__device__ static inline void mma_a_tiles(float acc[][HDP / 8][4], const uint32_t a[][4], const __nv_bfloat16 *b, int ld, int k,
                                          int lane) {
#pragma unroll
    for (int n = 0; n < HDP / 8; n += 2) {
        uint32_t bf[4];
        frag_b_trans(bf, b, ld, k, n, lane);
#pragma unroll
        for (int i = 0; i < MT; i++) {
            mma_16816(acc[i][n], a[i], bf[0], bf[1]);
            mma_16816(acc[i][n + 1], a[i], bf[2], bf[3]);
        }
    }
}

// cp.async: 16 (or 4) bytes global -> shared without passing through registers; commit closes a
// group of copies, wait<n> waits until at most n groups are in flight (the thread's own copies of
// the older groups are then in shared memory, others' after a barrier). .cg (through L2 only) takes
// only 16 bytes; 4 go through .ca.
__device__ static inline void cp_async16(void *dst, const void *src) {
    unsigned a = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(a), "l"(src));
}
__device__ static inline void cp_async4(void *dst, const void *src) {
    unsigned a = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(a), "l"(src));
}
__device__ static inline void cp_async_commit(void) { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ static inline void cp_async_wait(void) { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Shared memory of the forward: K and V [64][HDP + 8], twice (double buffering); of the backward:
// K, V, then Q, dO twice, as [64][HDP + 8], dS^T [64][64 + 8], lse and Delta of 64 queries twice,
// and the (h, q0) of both buffers' tiles. Every part is a multiple of 16 bytes.
__host__ __device__ static size_t flash_forward_smem(int hdp) { return (size_t)4 * FLASH_T * (hdp + 8) * 2; }
__host__ __device__ static size_t flash_backward_smem(int hdp) {
    return (size_t)6 * FLASH_T * (hdp + 8) * 2 + FLASH_T * FLASH_LDS * 2 + 4 * FLASH_T * 4 + 4 * 4;
}

// Rows r0 .. r0+63 of head hh of x[B,T,NH,hd] (bf16) into the tile [64][hdp] (rows ld apart),
// zeros past T and past hd. A thread takes 8 dims (16 bytes) at a time: with vec (hd % 8 == 0 and
// x 16-byte aligned) one cp.async, otherwise element by element.
__device__ static void flash_stage(__nv_bfloat16 *tile, int ld, int hdp, const __nv_bfloat16 *x, int b, int r0, int T,
                                   int NH, int hh, int hd, int vec) {
    int chunks = hdp / 8;
    for (int e = threadIdx.x; e < FLASH_T * chunks; e += blockDim.x) {
        int r = e / chunks, i = e % chunks * 8, t = r0 + r;
        __nv_bfloat16 *dst = tile + r * ld + i;
        const __nv_bfloat16 *src = x + (((int64_t)b * T + t) * NH + hh) * hd + i;
        if (vec && t < T && i < hd) cp_async16(dst, src);
        else
            for (int j = 0; j < 8; j++) dst[j] = t < T && i + j < hd ? src[j] : __float2bfloat16_rn(0.0f);
    }
}

// flash_stage where the whole tile is below T, hd = HDP and vec holds (so every copy is a whole
// 16-byte cp.async): thread i copies dims 8 (i % (HDP / 8)) .. + 7 of rows i / (HDP / 8) + 128 /
// (HDP / 8) p, the same dims in every row, so its copies lie at fixed strides (row elements a key
// row) from src, the first of them: no division and no bounds test a copy, as flash_stage has.
template <int HDP>
__device__ static inline void flash_stage_full(__nv_bfloat16 *tile, const __nv_bfloat16 *src, int64_t row) {
    const int CH = HDP / 8, RP = FLASH_THREADS / CH;  // 16-byte chunks a row, rows a pass
    __nv_bfloat16 *dst = tile + threadIdx.x / CH * (HDP + 8) + threadIdx.x % CH * 8;
#pragma unroll
    for (int p = 0; p < FLASH_T / RP; p++) cp_async16(dst + p * RP * (HDP + 8), src + p * RP * row);
}
// Rows r0 .. r0 + 63 of head hh of x and of y, both [B,T,NH,hd], into the tiles at xs and, after
// it, xs + 64 (HDP + 8): the forward's K and V; the backward's K and V, and Q and dO.
template <int HDP>
__device__ static inline void flash_stage_pair(__nv_bfloat16 *xs, const __nv_bfloat16 *x, const __nv_bfloat16 *y, int b, int r0,
                                               int T, int NH, int hh, int hd, int vec) {
    __nv_bfloat16 *ys = xs + FLASH_T * (HDP + 8);
    if (vec && hd == HDP && r0 + FLASH_T <= T) {
        int64_t row = (int64_t)NH * HDP,  // from one row t to the next; this thread's first chunk:
            first = (((int64_t)b * T + r0 + threadIdx.x / (HDP / 8)) * NH + hh) * HDP + threadIdx.x % (HDP / 8) * 8;
        flash_stage_full<HDP>(xs, x + first, row);
        flash_stage_full<HDP>(ys, y + first, row);
    } else {
        flash_stage(xs, HDP + 8, HDP, x, b, r0, T, NH, hh, hd, vec);
        flash_stage(ys, HDP + 8, HDP, y, b, r0, T, NH, hh, hd, vec);
    }
}

// Thread mapping: a block owns BQ = 64 MT consecutive queries q0.. of one (b, h) (MT =
// FLASH_FORWARD_MT(HDP)), the blocks of the last query tiles (the most keys) first; warp w owns
// the MT row tiles q0 + 64 i + 16 w .. + 15 (i < MT; FlashAttention-2's interleave, so that at
// MT = 2, in a block's last key tile, j0 = q0 + 64, every warp has one tile wholly masked and one
// on the diagonal, the same work): their Q fragments (read once from global memory), their S fragments
// for a tile of 64 keys (8 of 8 keys each), their O accumulators (HDP / 8 of 8 dims each), and
// each lane the running max and sum of its 2 MT rows. The block shares the K and V tiles, the next
// pair loading while the warps work on the current one; each K and V fragment a warp reads feeds
// its MT row tiles. Key tiles run to the last key of the block's last row below T (rows past T
// are computed but not written).
template <int HDP, typename Ot>
__global__ static void __launch_bounds__(FLASH_THREADS, HDP == 64 ? FLASH_FORWARD_BLOCKS : sizeof(Ot) == 2 ? 3 : 0)
attention_forward_flash_kernel(Ot *out, float *lse, const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                               const __nv_bfloat16 *v, int B, int T, int H, int KV, int hd, int vec) {
    const int MT = FLASH_FORWARD_MT(HDP), BQ = MT * FLASH_T, LD = HDP + 8, TILE = FLASH_T * LD;
    extern __shared__ __align__(16) unsigned char flash_sm[];
    __nv_bfloat16 *sm = (__nv_bfloat16 *)flash_sm;  // buffer u: K at sm + 2 u TILE, V after it
    int tiles = (T + BQ - 1) / BQ, bh = blockIdx.x % (B * H), b = bh / H, h = bh % H, kvh = h / (H / KV);
    int q0 = (tiles - 1 - blockIdx.x / (B * H)) * BQ, lane = threadIdx.x % 32, r0 = threadIdx.x / 32 * 16;
    int g = lane / 4, c = lane % 4, last = min(q0 + BQ, T) - 1;  // the last key of the last row below T
    float scale2 = 1.4426950408889634f / sqrtf((float)hd);  // log2(e) / sqrt(hd)
    flash_stage_pair<HDP>(sm, k, v, b, 0, T, KV, kvh, hd, vec);
    cp_async_commit();
    uint32_t qf[MT][HDP / 16][4];
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int kk = 0; kk < HDP / 16; kk++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int t = q0 + FLASH_T * i + r0 + g + 8 * (e & 1), d = kk * 16 + 2 * c + 8 * (e >> 1);
                const __nv_bfloat16 *src = q + (((int64_t)b * T + t) * H + h) * hd + d;
                qf[i][kk][e] = bf16_pair(t < T && d < hd ? __bfloat162float(src[0]) : 0.0f,
                                         t < T && d + 1 < hd ? __bfloat162float(src[1]) : 0.0f);
            }
    float o[MT][HDP / 8][4], m[MT][2], l[MT][2];
#pragma unroll
    for (int i = 0; i < MT; i++) {
        m[i][0] = m[i][1] = -INFINITY;
        l[i][0] = l[i][1] = 0.0f;
#pragma unroll
        for (int n = 0; n < HDP / 8; n++) o[i][n][0] = o[i][n][1] = o[i][n][2] = o[i][n][3] = 0.0f;
    }
    for (int j0 = 0, u = 0; j0 <= last; j0 += FLASH_T, u ^= 1) {
        if (j0 + FLASH_T <= last)  // the next tile into the other buffer (consumed: the barrier below)
            flash_stage_pair<HDP>(sm + 2 * (u ^ 1) * TILE, k, v, b, j0 + FLASH_T, T, KV, kvh, hd, vec);
        cp_async_commit();
        cp_async_wait<1>();  // this tile's copies are done (the next tile's may still run)
        __syncthreads();
        const __nv_bfloat16 *ks = sm + 2 * u * TILE, *vs = ks + TILE;
        // S = Q K^T, 16 keys at a time (K's rows are the columns of K^T, k runs along them: frag_b),
        // each K fragment into the MT row tiles
        float s[MT][FLASH_T / 8][4];
#pragma unroll
        for (int n = 0; n < FLASH_T / 8; n += 2) {
#pragma unroll
            for (int i = 0; i < MT; i++)
#pragma unroll
                for (int e = 0; e < 4; e++) s[i][n][e] = s[i][n + 1][e] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < HDP / 16; kk++) {
                uint32_t bk[4];
                frag_b(bk, ks, LD, kk * 16, n, lane);
#pragma unroll
                for (int i = 0; i < MT; i++) {
                    mma_16816(s[i][n], qf[i][kk], bk[0], bk[1]);
                    mma_16816(s[i][n + 1], qf[i][kk], bk[2], bk[3]);
                }
            }
        }
        // the online softmax of the lane's 2 MT rows, on the raw scores s: the max first (keys j > t
        // masked, which only the tiles j0 >= q0 have, in the others every j < q0 <= t; keys past T
        // among them for every row t < T), then scaled, m_new = max(m, scale2 max_j s_tj) (scaling by
        // scale2 > 0 commutes with max, rounding included: the same max as of the scaled scores), and
        // p_tj = exp2(s_tj scale2 - m_new) as one FFMA into the exp2 (FlashAttention-2's folding;
        // exp2_ftz: one instruction)
        int diag = j0 + FLASH_T > q0;
        uint32_t pa[MT][FLASH_T / 16][4];  // P as the A fragments of P V
#pragma unroll
        for (int i = 0; i < MT; i++) {
            float mx[2] = {-INFINITY, -INFINITY}, corr[2];
#pragma unroll
            for (int n = 0; n < FLASH_T / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    if (diag && j0 + n * 8 + 2 * c + (e & 1) > q0 + FLASH_T * i + r0 + g + 8 * (e >> 1)) s[i][n][e] = -INFINITY;
                    mx[e >> 1] = fmaxf(mx[e >> 1], s[i][n][e]);
                }
#pragma unroll
            for (int r = 0; r < 2; r++) {
                mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
                mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
                float mn = fmaxf(m[i][r], mx[r] * scale2);
                if (mn == -INFINITY) mn = 0.0f;  // no key yet (cannot happen: key 0 is in tile 0): no NaN
                corr[r] = exp2_ftz(m[i][r] - mn);
                m[i][r] = mn;
                l[i][r] *= corr[r];
            }
#pragma unroll
            for (int n = 0; n < FLASH_T / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    s[i][n][e] = exp2_ftz(fmaf(s[i][n][e], scale2, -m[i][e >> 1]));
                    l[i][e >> 1] += s[i][n][e];
                }
#pragma unroll
            for (int n = 0; n < HDP / 8; n++) {
                o[i][n][0] *= corr[0]; o[i][n][1] *= corr[0];
                o[i][n][2] *= corr[1]; o[i][n][3] *= corr[1];
            }
#pragma unroll
            for (int kk = 0; kk < FLASH_T / 16; kk++) frag_a_of_c(pa[i][kk], s[i][2 * kk], s[i][2 * kk + 1]);
        }
        // O += P V, 16 keys at a time (k runs down V's columns: ldmatrix .trans), each V fragment
        // into the MT row tiles
        uint32_t pk[MT][4];
#pragma unroll
        for (int kk = 0; kk < FLASH_T / 16; kk++) {
#pragma unroll
            for (int i = 0; i < MT; i++)
#pragma unroll
                for (int e = 0; e < 4; e++) pk[i][e] = pa[i][kk][e];
            mma_a_tiles<HDP, MT>(o, pk, vs, LD, kk * 16, lane);
        }
        __syncthreads();  // every warp is done with this buffer before it is loaded again
    }
#pragma unroll
    for (int i = 0; i < MT; i++) {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            l[i][r] += __shfl_xor_sync(0xffffffffu, l[i][r], 1);
            l[i][r] += __shfl_xor_sync(0xffffffffu, l[i][r], 2);
        }
        float inv[2] = {1.0f / l[i][0], 1.0f / l[i][1]};  // out = O / l as O (1 / l): a division a row, not an element
#pragma unroll
        for (int n = 0; n < HDP / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int t = q0 + FLASH_T * i + r0 + g + 8 * (e >> 1), d = n * 8 + 2 * c + (e & 1);
                if (t < T && d < hd) store_w(&out[(((int64_t)b * T + t) * H + h) * hd + d], o[i][n][e] * inv[e >> 1]);
            }
        if (c == 0)
            for (int r = 0; r < 2; r++) {
                int t = q0 + FLASH_T * i + r0 + g + 8 * r;
                if (t < T) lse[((int64_t)b * H + h) * T + t] = (m[i][r] + log2f(l[i][r])) * 0.6931471805599453f;
            }
    }
}

// The backward (FlashAttention-2's split): with p_tj = exp(s_tj - lse_t) recomputed,
// Delta_t = dO_t . O_t, dP_tj = dO_t . v_j and dS_tj = p_tj (dP_tj - Delta_t),
//   dq_t += scale sum_j dS_tj k_j,  dk_j += scale sum_t dS_tj q_t,  dv_j += sum_t p_tj dO_t.
// Delta first, then one kernel over tiles of keys.
// delta[B,H,T] = dO_t . O_t of dout, out [B,T,H,hd]. Thread mapping: one warp per (b, h, t), its
// lanes over the dims (attention_row_delta).
template <typename Ot>
__global__ static void attention_delta_kernel(float *delta, const Ot *dout, const Ot *out, int B, int T, int H, int hd) {
    int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;  // (b, h, t)
    if (row >= (int64_t)B * H * T) return;
    float d = attention_row_delta(dout, out, row, T, H, hd);
    if (threadIdx.x % 32 == 0) delta[row] = d;
}
// The same Delta for bf16 dO and O with rows of 16-byte words, hd / 8 a power of two up to 32
// (every real shape). Thread mapping: G = hd / 8 lanes a row, each one word of dO and one of O, summed over the G lanes by shuffles
// (a warp takes 32 / G rows): 16-byte loads, where the kernel above loads one element at a
// time.
__global__ static void attention_delta_x8_kernel(float *delta, const __nv_bfloat16 *dout, const __nv_bfloat16 *out, int B,
                                                 int T, int H, int hd) {
    int G = hd / 8;
    int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, row = g / G;  // (b, h, t)
    int j = (int)(g % G);
    float d = 0.0f;
    if (row < (int64_t)B * H * T) {  // no return before the shuffles: every lane of the warp takes part
        int t = (int)(row % T), h = (int)(row / T % H), b = (int)(row / ((int64_t)T * H));
        int64_t qi = (((int64_t)b * T + t) * H + h) * hd + 8 * j;
        float a[8], o[8];
        bf16x8_load(a, dout + qi);
        bf16x8_load(o, out + qi);
#pragma unroll
        for (int e = 0; e < 8; e++) d += a[e] * o[e];
    }
    for (int s = G / 2; s > 0; s >>= 1) d += __shfl_xor_sync(0xffffffffu, d, s);
    if (row < (int64_t)B * H * T && j == 0) delta[row] = d;
}

// Q and dO of the query tile q0 of head h into a buffer of the backward at qs (dO after Q), and its
// lse and Delta at ls (Delta after lse): thread i < 64 copies lse_t of t = q0 + i, thread 64 + i
// Delta_t, each one 4-byte cp.async (no registers, no wait for global memory here); past T, zero
// rows of Q and dO, lse +inf (p = exp2(x - inf) = 0) and Delta 0. lse is copied as the forward
// wrote it, in nats: the thread that copied it makes it base 2 once its copy has landed
// (flash_lse_base2).
static_assert(FLASH_THREADS == 2 * FLASH_T, "a thread for each lse and each Delta of a query tile");
template <int HDP>
__device__ static inline void flash_stage_queries(__nv_bfloat16 *qs, float *ls, const __nv_bfloat16 *q,
                                                  const __nv_bfloat16 *dout, const float *lse, const float *delta, int b,
                                                  int h, int q0, int T, int H, int hd, int vec) {
    flash_stage_pair<HDP>(qs, q, dout, b, q0, T, H, h, hd, vec);
    int i = threadIdx.x, t = q0 + i % FLASH_T;
    if (t < T) cp_async4(ls + i, (i < FLASH_T ? lse : delta) + ((int64_t)b * H + h) * T + t);
    else ls[i] = i < FLASH_T ? INFINITY : 0.0f;
}
// lse2 = lse log2(e) in place, by the thread that copied it (so its cp.async group must have been
// waited for), before the barrier after which the warps read it.
__device__ static inline void flash_lse_base2(float *ls) {
    if (threadIdx.x < FLASH_T) ls[threadIdx.x] *= 1.4426950408889634f;
}

// Thread mapping: a block owns 64 consecutive keys j0.. of one (b, kv head) and one of `splits`
// equal parts of the query heads of its group (flash_backward_splits); the blocks of the first key
// tiles (the most queries) come first. It walks its heads and every tile of 64 queries q0 >= j0,
// the next tile loading while the warps work on the current one.
// Warp w owns keys j0 + 16 w .. + 15: its fragments of S^T = K Q^T and dP^T = V dO^T (8 of 8
// queries each, 4 at a time), from which P^T and dS^T are made in place and used as the A
// fragments of dV += P^T dO and dK += dS^T Q; it keeps its dK and dV accumulators (HDP / 8 of 8
// dims each) over the whole walk, so with GQA the heads of a group add to them in turn, no
// atomics; part 0 adds them to dk and dv, part s > 0 stores them in slice s - 1 of `parts`
// ([splits - 1][2][B,T,KV,hd], dk's then dv's), which flash_parts_add_kernel adds to dk and dv after.
// The dQ of a query tile needs every warp's keys: the warps write dS^T ([key][query]) to
// shared memory, and after a barrier warp w takes queries q0 + 16 w .. + 15, dQ = dS K over the
// block's 64 keys, and adds them to dq with atomicAdd, since the blocks of other key tiles add to
// the same rows.
template <int HDP>
__global__ static void __launch_bounds__(FLASH_THREADS, HDP == 64 ? FLASH_BACKWARD_BLOCKS : 0)
attention_backward_flash_kernel(float *dq, float *dk, float *dv, const float *delta, const __nv_bfloat16 *dout,
                                const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v,
                                const float *lse, float *parts, int splits, int B, int T, int H, int KV, int hd, int vec) {
    const int LD = HDP + 8, TILE = FLASH_T * LD;
    extern __shared__ __align__(16) unsigned char flash_sm[];
    __nv_bfloat16 *ks = (__nv_bfloat16 *)flash_sm, *vs = ks + TILE, *qd = vs + TILE,  // buffer u: Q at qd + 2 u TILE, dO after it
                  *dss = qd + 4 * TILE;
    float *ld2 = (float *)(dss + FLASH_T * FLASH_LDS);  // buffer u: lse2 at ld2 + 2 u FLASH_T, Delta after it
    int *walk = (int *)(ld2 + 4 * FLASH_T);             // buffer u: its tile's h and q0 at walk + 2 u
    int per_tile = B * KV * splits, bk = blockIdx.x % per_tile / splits, b = bk / KV, kvh = bk % KV;
    int j0 = blockIdx.x / per_tile * FLASH_T, heads = H / KV / splits, h0 = kvh * (H / KV) + blockIdx.x % splits * heads;
    int lane = threadIdx.x % 32, r0 = threadIdx.x / 32 * 16, g = lane / 4, c = lane % 4;
    int nq = (T - j0 + FLASH_T - 1) / FLASH_T;  // query tiles q0 = j0, j0 + 64, .. of every head of the group
    float scale = 1.0f / sqrtf((float)hd), scale2 = 1.4426950408889634f * scale;
    int full2 = hd == HDP && (uintptr_t)dq % 8 == 0;  // no padded dims, dq's pairs (t, 2i) 8-byte aligned
    flash_stage_pair<HDP>(ks, k, v, b, j0, T, KV, kvh, hd, vec);
    flash_stage_queries<HDP>(qd, ld2, q, dout, lse, delta, b, h0, j0, T, H, hd, vec);
    cp_async_commit();
    // The walk's place, the head h and first query q0 of the tile in buffer u, is written beside the
    // tile when it is staged and read back after the barriers: not held in registers through the
    // tile (the kernel is at its register cap), nor recomputed from the tile count it as it / nq
    // and it % nq (a 32-bit division, at the top and again for dQ).
    if (threadIdx.x == 0) walk[0] = h0, walk[1] = j0;
    __syncthreads();
    float dkf[HDP / 8][4], dvf[HDP / 8][4];
#pragma unroll
    for (int n = 0; n < HDP / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) dkf[n][e] = dvf[n][e] = 0.0f;
    for (int it = 0, u = 0, steps = heads * nq; it < steps; it++, u ^= 1) {
        int h = walk[2 * u], q0 = walk[2 * u + 1];
        if (it + 1 < steps) {  // the next tile into the other buffer (consumed: the last barrier)
            int hn = h, qn = q0 + FLASH_T;  // the head's next query tile, else the next head's first
            if (qn >= T) hn++, qn = j0;
            if (threadIdx.x == 0) walk[2 * (u ^ 1)] = hn, walk[2 * (u ^ 1) + 1] = qn;
            flash_stage_queries<HDP>(qd + 2 * (u ^ 1) * TILE, ld2 + 2 * (u ^ 1) * FLASH_T, q, dout, lse, delta, b, hn, qn, T, H,
                                     hd, vec);
        }
        cp_async_commit();
        cp_async_wait<1>();  // this tile's copies are done (the next tile's may still run)
        flash_lse_base2(ld2 + 2 * u * FLASH_T);
        __syncthreads();
        const __nv_bfloat16 *qs = qd + 2 * u * TILE, *dos = qs + TILE;
        const float *lse2 = ld2 + 2 * u * FLASH_T, *dl = lse2 + FLASH_T;
        // S^T = K Q^T and dP^T = V dO^T, the warp's 16 keys by 64 queries, in two halves of 32
        // queries (n0 = 0, 4 of the 8-query column tiles): only one half's fp32 accumulators are
        // live at a time, the other's already packed to bf16 below, which keeps the kernel within
        // the registers of 3 blocks a SM (K's and V's A fragments are read once a half).
        uint32_t pp[FLASH_T / 8][2], ds[FLASH_T / 8][2];
#pragma unroll
        for (int n0 = 0; n0 < FLASH_T / 8; n0 += FLASH_T / 16) {
            float st[FLASH_T / 16][4], dpt[FLASH_T / 16][4];
#pragma unroll
            for (int n = 0; n < FLASH_T / 16; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) st[n][e] = dpt[n][e] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < HDP / 16; kk++) {
                uint32_t ka[4], va[4];
                frag_a(ka, ks, LD, r0, kk * 16, lane);
                frag_a(va, vs, LD, r0, kk * 16, lane);
#pragma unroll
                for (int n = 0; n < FLASH_T / 16; n += 2) {
                    uint32_t bq[4], bd[4];
                    frag_b(bq, qs, LD, kk * 16, n0 + n, lane);
                    frag_b(bd, dos, LD, kk * 16, n0 + n, lane);
                    mma_16816(st[n], ka, bq[0], bq[1]);
                    mma_16816(st[n + 1], ka, bq[2], bq[3]);
                    mma_16816(dpt[n], va, bd[0], bd[1]);
                    mma_16816(dpt[n + 1], va, bd[2], bd[3]);
                }
            }
            // P^T and dS^T = P^T (dP^T - Delta), zero where t >= T (lse is +inf there) and where
            // t < j, which only the diagonal tile q0 = j0 has; kept as the bf16 pairs that the A
            // fragments below take (frag_a_of_c's packing: pp[n][h] and ds[n][h] hold row g + 8h
            // of column tile n); dS^T also to shared memory as [key][query], a pair one word. The
            // lane's elements of tile n are queries 8n + 2c and the next (e & 1), whose lse and
            // Delta it reads as one pair each. p = exp2(s scale2 - lse2): one FFMA into exp2_ftz,
            // as in the forward.
#pragma unroll
            for (int n = 0; n < FLASH_T / 16; n++) {
                int tt = (n0 + n) * 8 + 2 * c;
                float2 l2 = *(const float2 *)(lse2 + tt), d2 = *(const float2 *)(dl + tt);
                float p[4], d[4];
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int jj = r0 + g + 8 * (e >> 1);
                    p[e] = q0 == j0 && tt + (e & 1) < jj ? 0.0f : exp2_ftz(fmaf(st[n][e], scale2, -(e & 1 ? l2.y : l2.x)));
                    d[e] = p[e] * (dpt[n][e] - (e & 1 ? d2.y : d2.x));
                }
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    pp[n0 + n][h] = bf16_pair(p[2 * h], p[2 * h + 1]);
                    ds[n0 + n][h] = bf16_pair(d[2 * h], d[2 * h + 1]);
                    *(uint32_t *)(dss + (r0 + g + 8 * h) * FLASH_LDS + tt) = ds[n0 + n][h];
                }
            }
        }
        // dV += P^T dO and dK += dS^T Q (times scale at the end), 16 queries at a time (k runs
        // down dO's and Q's columns: ldmatrix .trans)
#pragma unroll
        for (int kk = 0; kk < FLASH_T / 16; kk++) {
            uint32_t pa[4] = {pp[2 * kk][0], pp[2 * kk][1], pp[2 * kk + 1][0], pp[2 * kk + 1][1]};
            uint32_t da[4] = {ds[2 * kk][0], ds[2 * kk][1], ds[2 * kk + 1][0], ds[2 * kk + 1][1]};
#pragma unroll
            for (int n = 0; n < HDP / 8; n += 2) {
                uint32_t bo[4], bq[4];
                frag_b_trans(bo, dos, LD, kk * 16, n, lane);
                frag_b_trans(bq, qs, LD, kk * 16, n, lane);
                mma_16816(dvf[n], pa, bo[0], bo[1]);
                mma_16816(dvf[n + 1], pa, bo[2], bo[3]);
                mma_16816(dkf[n], da, bq[0], bq[1]);
                mma_16816(dkf[n + 1], da, bq[2], bq[3]);
            }
        }
        __syncthreads();  // every warp's part of dS is written
        h = walk[2 * u], q0 = walk[2 * u + 1];  // read again (a load after the barrier: no registers held)
        // dQ of the warp's 16 queries = scale dS K, over the block's 64 keys (k runs down the
        // columns of dS^T and of K: ldmatrix .trans for both)
        float dqf[HDP / 8][4];
#pragma unroll
        for (int n = 0; n < HDP / 8; n++) dqf[n][0] = dqf[n][1] = dqf[n][2] = dqf[n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < FLASH_T / 16; kk++) {
            uint32_t a[4];
            frag_a_trans(a, dss, FLASH_LDS, r0, kk * 16, lane);
            mma_a_tiles<HDP, 1>(&dqf, &a, ks, LD, kk * 16, lane);
        }
        // to dq, the lane's two rows t one address each; its dims d = 8n + 2c and d + 1 as one
        // 8-byte atomic where every dim is real and the pairs aligned (full2), one by one else
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int t = q0 + r0 + g + 8 * r;
            if (t >= T) continue;
            float *row = dq + (((int64_t)b * T + t) * H + h) * hd + 2 * c;
            if (full2) {
#pragma unroll
                for (int n = 0; n < HDP / 8; n++)
                    atomicAdd((float2 *)(row + n * 8), make_float2(scale * dqf[n][2 * r], scale * dqf[n][2 * r + 1]));
            } else {
#pragma unroll
                for (int n = 0; n < HDP / 8; n++) {
                    if (n * 8 + 2 * c < hd) atomicAdd(row + n * 8, scale * dqf[n][2 * r]);
                    if (n * 8 + 2 * c + 1 < hd) atomicAdd(row + n * 8 + 1, scale * dqf[n][2 * r + 1]);
                }
            }
        }
        __syncthreads();  // every warp is done with this buffer and with dS before they are written again
    }
    // dk, dv of the warp's 16 keys: added to dk and dv (part 0), or stored in the part's slice;
    // dk's first, then dv's (one output pointer and one set of accumulators live at a time: the
    // kernel is at its cap of registers)
    int part = blockIdx.x % splits;
    int64_t nk = (int64_t)B * T * KV * hd;
    float *o = part ? parts + (part - 1) * 2 * nk : dk;
    for (int x = 0; x < 2; x++) {
#pragma unroll
        for (int n = 0; n < HDP / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int j = j0 + r0 + g + 8 * (e >> 1), d = n * 8 + 2 * c + (e & 1);
                if (j < T && d < hd) {
                    int64_t i = (((int64_t)b * T + j) * KV + kvh) * hd + d;
                    o[i] = (part ? 0.0f : o[i]) + (x ? dvf[n][e] : scale * dkf[n][e]);
                }
            }
        o = part ? o + nk : dv;
    }
}

// dk += parts' dk slices and dv += their dv slices, slice 0 first (the same sums every run).
// Thread mapping: one thread per element of dk (n of them) and its dv element.
__global__ static void flash_parts_add_kernel(float *dk, float *dv, const float *parts, int slices, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float a = dk[i], b = dv[i];
    for (int s = 0; s < slices; s++) {
        a += parts[2 * s * n + i];
        b += parts[(2 * s + 1) * n + i];
    }
    dk[i] = a;
    dv[i] = b;
}
static float *g_flash_parts;  // the slices (flash_backward_splits - 1 of them), grown as needed
static int64_t g_flash_parts_n;

// How many parts the flash backward splits each group's query heads into. A block's work grows
// with the query tiles after its key tile, so the blocks of key tile 0 have the most, tiles x
// (H / KV) / splits tile steps, and the kernel takes at least as long as they do; the average
// over the blocks the GPU runs at once (`slots`) is B KV (H / KV) tiles (tiles + 1) / 2 / slots. The
// fewest parts (a divisor of H / KV) that bring the first within the second: splits >=
// 2 slots / (B KV (tiles + 1)). On the benchmark's step (B 8, KV 4, 16 tiles, 396 slots) that is
// 2: unsplit, the blocks of key tile 0 have 128 tile steps, against an average of 88 a slot.
static int flash_backward_splits(int B, int T, int H, int KV, int slots) {
    int group = H / KV, tiles = (T + FLASH_T - 1) / FLASH_T, s = 1;
    while (s < group && (int64_t)s * B * KV * (tiles + 1) < 2LL * slots) {
        s++;
        while (group % s) s++;
    }
    return s;
}
// The same for this GPU: its slots are its multiprocessors times the blocks of the kernel for hd
// that fit on one (3 at head_dim <= 64). Sets the kernel's shared memory size on the way.
static int flash_backward_parts(int B, int T, int H, int KV, int hd) {
    const void *kernel = hd <= 64 ? (const void *)attention_backward_flash_kernel<64> : (const void *)attention_backward_flash_kernel<128>;
    size_t smem = flash_backward_smem(hd <= 64 ? 64 : 128);
    int sms, l2, per_sm;
    attention_shared(kernel, smem);
    gpu_limits(&sms, &l2);
    cudaCheck(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, FLASH_THREADS, smem));
    return flash_backward_splits(B, T, H, KV, sms * (per_sm > 0 ? per_sm : 1));
}

static void flash_check_hd(int hd) {
    if (hd > FLASH_MAX_HD) fail("head_dim %d: --attention flash takes head_dim up to %d; use --attention gemm", hd, FLASH_MAX_HD);
}

template <int HDP, typename Ot>
static void flash_forward_launch(Ot *out, float *lse, const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                                 const __nv_bfloat16 *v, int B, int T, int H, int KV, int hd) {
    int bq = FLASH_FORWARD_MT(HDP) * FLASH_T, blocks = B * H * ((T + bq - 1) / bq), vec = aligned_x8(hd, q, k, v, v);
    attention_shared((const void *)attention_forward_flash_kernel<HDP, Ot>, flash_forward_smem(HDP));
    attention_forward_flash_kernel<HDP><<<blocks, FLASH_THREADS, flash_forward_smem(HDP)>>>(out, lse, q, k, v, B, T, H, KV, hd, vec);
    launchCheck();
}

// q, k, v: the bf16 copies (layer_forward makes them after RoPE). out: an Act (bf16 under
// --matmul bf16: act_bf16).
static void attention_forward_flash(Act out, float *lse, const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                                    const __nv_bfloat16 *v, int B, int T, int H, int KV, int hd) {
    PROFILE(PROF_ATTENTION);
    flash_check_hd(hd);
    if (hd <= 64 && out.h) flash_forward_launch<64>(out.h, lse, q, k, v, B, T, H, KV, hd);
    else if (hd <= 64) flash_forward_launch<64>(out.f, lse, q, k, v, B, T, H, KV, hd);
    else if (out.h) flash_forward_launch<128>(out.h, lse, q, k, v, B, T, H, KV, hd);
    else flash_forward_launch<128>(out.f, lse, q, k, v, B, T, H, KV, hd);
}

// dout, out: Acts, both fp32 or both bf16 (act_bf16); Delta from them, and the products from
// dout in bf16, rounded once here when it is fp32.
static void attention_backward_flash(float *dq, float *dk, float *dv, float *delta, Act dout,
                                     const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v,
                                     Act out, const float *lse, int B, int T, int H, int KV, int hd) {
    PROFILE(PROF_ATTENTION);
    flash_check_hd(hd);
    if (!dout.h != !out.h) fail("internal: the flash backward's dO and O in different precisions");
    int G = hd / 8;
    if (dout.h && aligned_x8(hd, dout.h, out.h, out.h, out.h) && (G & (G - 1)) == 0 && G <= 32)
        attention_delta_x8_kernel<<<blocks_for((int64_t)B * H * T * G, 256), 256>>>(delta, dout.h, out.h, B, T, H, hd);
    else if (dout.h) attention_delta_kernel<<<blocks_for((int64_t)B * H * T, 8), 256>>>(delta, dout.h, out.h, B, T, H, hd);
    else attention_delta_kernel<<<blocks_for((int64_t)B * H * T, 8), 256>>>(delta, dout.f, out.f, B, T, H, hd);
    launchCheck();
    const __nv_bfloat16 *db = dout.h ? dout.h : bf16_of(&g_bf_d, &g_bf_d_n, dout.f, (int64_t)B * T * H * hd);
    int vec = aligned_x8(hd, q, k, v, db), splits = flash_backward_parts(B, T, H, KV, hd);
    int64_t nk = (int64_t)B * T * KV * hd;
    float *parts = splits > 1 ? gpu_grow(&g_flash_parts, &g_flash_parts_n, (splits - 1) * 2 * nk, "scratch") : NULL;
    int blocks = B * KV * splits * ((T + FLASH_T - 1) / FLASH_T);
    if (hd <= 64)
        attention_backward_flash_kernel<64><<<blocks, FLASH_THREADS, flash_backward_smem(64)>>>(
            dq, dk, dv, delta, db, q, k, v, lse, parts, splits, B, T, H, KV, hd, vec);
    else
        attention_backward_flash_kernel<128><<<blocks, FLASH_THREADS, flash_backward_smem(128)>>>(
            dq, dk, dv, delta, db, q, k, v, lse, parts, splits, B, T, H, KV, hd, vec);
    launchCheck();
    if (splits > 1) {
        flash_parts_add_kernel<<<blocks_for(nk, 256), 256>>>(dk, dv, parts, splits - 1, nk);
        launchCheck();
    }
}
