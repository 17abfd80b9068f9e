// 2-D convolution (NCHW) as an implicit GEMM: the im2col matrix is never
// written to memory; each tile of it is gathered from the image straight
// into shared memory when the GEMM loop needs it.
//
// One kernel template serves the three passes, which differ only in how a
// GEMM element (row m, column n, reduction index k) maps to memory (the
// MODE_* index functions below):
//
//   pass          M      N                K                A [M, K]     B [K, N]
//   forward       Cout   batch*OH*OW      Cin*kh*kw        weight       image, unfolded
//   grad input    Cin    batch*H*W        Cout*kh*kw       weight^T     grad_out, "folded"
//   grad weight   Cout   Cin*kh*kw        batch*OH*OW      grad_out     image, unfolded^T
//
// A block of 256 threads owns a BM x BN tile of the output and walks K in
// steps of IG_BK: it decodes the step's K indices into a small shared table,
// copies an IG_BK-deep slice of A and of B into shared memory (as the
// accumulation type, so f16/bf16 are widened once), waits,
// and every thread adds the outer products of its (BM/16) x (BN/16) cells.
// Thread (ty, tx) owns rows ty + 16*i and columns tx + 16*j of the tile, so
// a warp reads consecutive shared-memory words (no bank conflicts) and
// writes consecutive output columns. Out-of-range and padding elements load
// as zero, which is what makes any size, stride and padding correct.
//
// The grad-weight pass has a long K (every output pixel of the batch) and a
// small output, so it splits K over blockIdx.z: each split writes its partial
// sums to a scratch buffer and `igemm_sum_splits` adds them in a fixed order
// (deterministic, no atomics).
//
// Two engines run this loop. `implicit_gemm` is the plain FMA path, for
// every dtype (f16/bf16 widened to f32 in shared memory). `implicit_gemm_mma`
// is the tensor-core path for f16 and bf16 on Ampere and newer (sm_80+):
// the tiles stay 16-bit in shared memory and each warp multiplies them with
// `mma.sync.m16n8k16` into f32 accumulators. Neither double-buffers its
// shared tiles. Both are selected with PETAL_CUDA_CONV=implicit
// (conv_implicit.rs); im2col + cuBLAS (conv.cu, conv.rs) stays the default
// and the reference.
//
// The index functions are mirrored line for line by `conv_implicit.rs`
// (`index` module), whose host emulation of this loop nest is tested
// against a naive convolution. Change both together.

#define IG_THREADS 256
#define IG_BK 8

#define MODE_FWD 0
#define MODE_DGRAD 1
#define MODE_WGRAD 2

// Matches `struct IgGeom` in conv_implicit.rs.
struct IgGeom {
    u32 batch, cin, h, w;       // input
    u32 cout, kh, kw, stride, pad;
    u32 oh, ow;                 // output
    u32 gm, gn, gk;             // GEMM sizes of this pass
    u32 k_per_split;            // K range of one blockIdx.z (a multiple of the K step)
};

// What a thread needs to know about its B-tile column n, worked out once
// per tile instead of once per loaded element. `base` is an element offset
// into the B operand; (y0, x0) the position that tap (0, 0) touches.
struct IgCol {
    bool ok;
    int base, y0, x0;
};

// ---- index functions (mirrored in conv_implicit.rs) ----

// Column n of B.
//   fwd:   n = (b, oy, ox); the receptive field's corner in image b.
//   dgrad: n = (b, iy, ix); the input pixel, shifted by the padding.
//   wgrad: n = (ci, ky, kx); channel ci's plane, tap offset minus padding.
template <int MODE>
__device__ __forceinline__ IgCol ig_col(const IgGeom& g, u32 n) {
    IgCol c;
    c.ok = n < g.gn;
    if (MODE == MODE_FWD) {
        u32 ohw = g.oh * g.ow, b = n / ohw, r = n - b * ohw, oy = r / g.ow, ox = r - oy * g.ow;
        c.base = (int)(b * g.cin * g.h * g.w);
        c.y0 = (int)(oy * g.stride) - (int)g.pad;
        c.x0 = (int)(ox * g.stride) - (int)g.pad;
    } else if (MODE == MODE_DGRAD) {
        u32 hw = g.h * g.w, b = n / hw, r = n - b * hw, iy = r / g.w, ix = r - iy * g.w;
        c.base = (int)(b * g.cout * g.oh * g.ow);
        c.y0 = (int)(iy + g.pad);
        c.x0 = (int)(ix + g.pad);
    } else {
        u32 taps = g.kh * g.kw, ci = n / taps, t = n - ci * taps, ky = t / g.kw, kx = t - ky * g.kw;
        c.base = (int)(ci * g.h * g.w);
        c.y0 = (int)ky - (int)g.pad;
        c.x0 = (int)kx - (int)g.pad;
    }
    return c;
}

// What the block needs to know about reduction index k, decoded once per
// tile step into shared memory (`IgKTable`) rather than once per loaded
// element: the divisions by run-time sizes are then paid IG_BK times per
// step, not (BM + BN) * IG_BK times. `a` is k's part of the A offset, or -1
// when k is past the end of K or of this split; `delta` k's part of the B
// offset; (p, q) its shift in the image (fwd, wgrad) or tap (dgrad).
struct IgK {
    int a, delta, p, q;
};

template <int MODE>
__device__ __forceinline__ IgK ig_k(const IgGeom& g, u32 k, u32 k_end) {
    IgK e;
    if (k >= k_end) {
        e.a = -1;
        e.delta = e.p = e.q = 0;
        return e;
    }
    if (MODE == MODE_FWD) {
        // k = (ci, ky, kx); A = weight [Cout, K]
        u32 taps = g.kh * g.kw, ci = k / taps, t = k - ci * taps, ky = t / g.kw, kx = t - ky * g.kw;
        e.a = (int)k;
        e.delta = (int)(ci * g.h * g.w);
        e.p = (int)ky;
        e.q = (int)kx;
    } else if (MODE == MODE_DGRAD) {
        // k = (co, ky, kx); A[ci, k] = weight[co, ci, ky, kx]
        u32 taps = g.kh * g.kw, co = k / taps, t = k - co * taps, ky = t / g.kw, kx = t - ky * g.kw;
        e.a = (int)(co * g.cin * taps + t);
        e.delta = (int)(co * g.oh * g.ow);
        e.p = (int)ky;
        e.q = (int)kx;
    } else {
        // k = (b, oy, ox); A[co, k] = grad_out[b, co, oy, ox]
        u32 ohw = g.oh * g.ow, b = k / ohw, r = k - b * ohw, oy = r / g.ow, ox = r - oy * g.ow;
        e.a = (int)(b * g.cout * ohw + r);
        e.delta = (int)(b * g.cin * g.h * g.w);
        e.p = (int)(oy * g.stride);
        e.q = (int)(ox * g.stride);
    }
    return e;
}

// The IgK of the IG_BK (or IG_MMA_BK) indices of one tile step, as four
// arrays so that neighbouring threads read neighbouring words.
template <int BK>
struct IgKTable {
    int a[BK], delta[BK], p[BK], q[BK];
};

// Threads 0..BK-1 decode k0 + tid. The caller synchronises before reading.
template <int MODE, int BK>
__device__ __forceinline__ void ig_fill(IgKTable<BK>& t, const IgGeom& g, u32 k0, u32 k_end) {
    if (threadIdx.x < BK) {
        IgK e = ig_k<MODE>(g, k0 + threadIdx.x, k_end);
        t.a[threadIdx.x] = e.a;
        t.delta[threadIdx.x] = e.delta;
        t.p[threadIdx.x] = e.p;
        t.q[threadIdx.x] = e.q;
    }
}

// Offset of B[k, n] in the B operand, or -1 where it is zero (padding, a
// stride gap, or k past the end), from k's table entry `kk`.
template <int MODE, int BK>
__device__ __forceinline__ int ig_b_offset(const IgGeom& g, const IgCol& c, const IgKTable<BK>& t, u32 kk) {
    if (!c.ok || t.a[kk] < 0) return -1;
    if (MODE == MODE_DGRAD) {
        // The output pixel whose tap (ky, kx) = (p, q) read this input
        // pixel, oy * stride + ky - pad = iy, if there is one.
        int ys = c.y0 - t.p[kk], xs = c.x0 - t.q[kk];
        if (ys < 0 || xs < 0) return -1;
        u32 oy = (u32)ys, ox = (u32)xs;
        if (g.stride != 1) {
            if (oy % g.stride != 0 || ox % g.stride != 0) return -1;
            oy /= g.stride;
            ox /= g.stride;
        }
        if (oy >= g.oh || ox >= g.ow) return -1;
        return c.base + t.delta[kk] + (int)(oy * g.ow + ox);
    } else {
        // fwd: the receptive field's corner plus tap (ky, kx) = (p, q);
        // wgrad: tap minus padding plus output pixel times stride.
        int iy = c.y0 + t.p[kk], ix = c.x0 + t.q[kk];
        if (iy < 0 || iy >= (int)g.h || ix < 0 || ix >= (int)g.w) return -1;
        return c.base + t.delta[kk] + iy * (int)g.w + ix;
    }
}

// Offset of A[m, k] in the A operand, or -1 outside the matrix or split:
// k's part from the table plus m times the distance between rows of A.
template <int MODE, int BK>
__device__ __forceinline__ int ig_a_offset(const IgGeom& g, u32 m, const IgKTable<BK>& t, u32 kk) {
    if (m >= g.gm || t.a[kk] < 0) return -1;
    u32 row = MODE == MODE_FWD ? g.gk : MODE == MODE_DGRAD ? g.kh * g.kw : g.oh * g.ow;
    return t.a[kk] + (int)(m * row);
}

// Where output element (m, n) goes: NCHW for fwd and dgrad, [Cout, K] for wgrad.
template <int MODE>
__device__ __forceinline__ u32 ig_out_offset(const IgGeom& g, u32 m, u32 n) {
    if (MODE == MODE_FWD) {
        u32 ohw = g.oh * g.ow, b = n / ohw, r = n - b * ohw;
        return (b * g.cout + m) * ohw + r;
    } else if (MODE == MODE_DGRAD) {
        u32 hw = g.h * g.w, b = n / hw, r = n - b * hw;
        return (b * g.cin + m) * hw + r;
    } else {
        return m * g.gn + n;
    }
}

// ---- the tiled loop ----

// `partial` null: write T results (plus bias[m] when `bias` is not null).
// `partial` set: write this split's raw sums at partial[z][m][n].
template <typename T, int MODE, int BM, int BN>
__device__ void implicit_gemm(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out,
                              typename Num<T>::Acc* __restrict__ partial, const T* __restrict__ bias, IgGeom g) {
    typedef typename Num<T>::Acc A;
    constexpr int TM = BM / 16, TN = BN / 16;
    constexpr int A_LOADS = BM * IG_BK / IG_THREADS;
    constexpr int B_LOADS = BN * IG_BK / IG_THREADS;
    constexpr int B_ROW_STEP = IG_THREADS / BN;
    __shared__ A as[IG_BK][BM];
    __shared__ A bs[IG_BK][BN];
    __shared__ IgKTable<IG_BK> kt;

    u32 tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    u32 m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    u32 k_begin = blockIdx.z * g.k_per_split;
    u32 k_end = min(g.gk, k_begin + g.k_per_split);

    // This thread always loads the same B column: decode it once.
    u32 b_col = tid % BN, b_row = tid / BN;
    IgCol col = ig_col<MODE>(g, n0 + b_col);

    A acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = A(0);

    for (u32 k0 = k_begin; k0 < k_end; k0 += IG_BK) {
        ig_fill<MODE>(kt, g, k0, k_end);
        __syncthreads();
#pragma unroll
        for (int l = 0; l < A_LOADS; ++l) {
            u32 i = tid + l * IG_THREADS, mm = i / IG_BK, kk = i % IG_BK;
            int off = ig_a_offset<MODE>(g, m0 + mm, kt, kk);
            as[kk][mm] = off >= 0 ? Num<T>::to_acc(a[off]) : A(0);
        }
#pragma unroll
        for (int l = 0; l < B_LOADS; ++l) {
            u32 kk = b_row + l * B_ROW_STEP;
            int off = ig_b_offset<MODE>(g, col, kt, kk);
            bs[kk][b_col] = off >= 0 ? Num<T>::to_acc(b[off]) : A(0);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < IG_BK; ++kk) {
            A ra[TM], rb[TN];
#pragma unroll
            for (int i = 0; i < TM; ++i) ra[i] = as[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < TN; ++j) rb[j] = bs[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] += ra[i] * rb[j];
        }
        __syncthreads();  // the tiles and the table are overwritten by the next step
    }

#pragma unroll
    for (int i = 0; i < TM; ++i) {
        u32 m = m0 + ty + 16 * i;
        if (m >= g.gm) continue;
        A add = bias != nullptr ? Num<T>::to_acc(bias[m]) : A(0);
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            u32 n = n0 + tx + 16 * j;
            if (n >= g.gn) continue;
            if (partial != nullptr) {
                partial[(blockIdx.z * g.gm + m) * g.gn + n] = acc[i][j];
            } else {
                out[ig_out_offset<MODE>(g, m, n)] = Num<T>::from_acc(acc[i][j] + add);
            }
        }
    }
}

// ---- the tensor-core loop (f16, bf16; sm_80 and newer) ----
//
// Shared tiles hold T as loaded: As[m][k] and Bs[n][k], k contiguous, rows
// padded by 8 elements (16 bytes) to spread a warp's fragment loads over
// the banks. The block's warps form a WARPS_M x WARPS_N grid; each owns a
// (BM / WARPS_M) x (BN / WARPS_N) part of the tile as MT x NT mma tiles of
// 16 x 8. Per `mma.sync.aligned.m16n8k16.row.col` (PTX ISA, "Matrix
// fragments for mma.m16n8k16"), lane = 4 * g + t holds
//   A: {A[g][2t..2t+1]}, {A[g+8][2t..2t+1]}, {A[g][2t+8..2t+9]}, {A[g+8][2t+8..2t+9]}
//   B: {B[2t..2t+1][g]}, {B[2t+8..2t+9][g]}
//   C: C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1]
// with each {..} pair packed into one 32-bit register, lower index in the
// low half. conv_implicit.rs emulates exactly this.
//
// All of it is compiled only where mma.m16n8k16 exists (sm_80 and newer);
// the host never asks for these kernels on older GPUs.
#if __CUDA_ARCH__ >= 800

#define IG_MMA_BK 32
#define IG_MMA_PAD 8

template <typename T> struct Mma;
template <> struct Mma<f16> {
    static __device__ __forceinline__ void mma(float (&d)[4], const u32 (&a)[4], const u32 (&b)[2]) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
};
template <> struct Mma<bf16> {
    static __device__ __forceinline__ void mma(float (&d)[4], const u32 (&a)[4], const u32 (&b)[2]) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
};

// Two adjacent 16-bit elements of a shared tile as one register.
template <typename T>
__device__ __forceinline__ u32 ig_pair(const T* p) {
    return *reinterpret_cast<const u32*>(p);
}

template <typename T, int MODE, int BM, int BN, int WARPS_M, int WARPS_N>
__device__ void implicit_gemm_mma(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out,
                                  float* __restrict__ partial, const T* __restrict__ bias, IgGeom g) {
    constexpr int THREADS = 32 * WARPS_M * WARPS_N;
    constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;
    constexpr int MT = WM / 16, NT = WN / 8;
    constexpr int LD = IG_MMA_BK + IG_MMA_PAD;
    constexpr int A_LOADS = BM * IG_MMA_BK / THREADS;
    constexpr int B_LOADS = BN * IG_MMA_BK / THREADS;
    constexpr int B_ROW_STEP = THREADS / BN;
    __shared__ __align__(16) T as[BM * LD];
    __shared__ __align__(16) T bs[BN * LD];
    __shared__ IgKTable<IG_MMA_BK> kt;

    u32 tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    u32 warp_m = warp / WARPS_N, warp_n = warp % WARPS_N;
    u32 lg = lane / 4, lt = lane % 4;
    u32 m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    u32 k_begin = blockIdx.z * g.k_per_split;
    u32 k_end = min(g.gk, k_begin + g.k_per_split);
    T zero;
    zero.bits = 0;

    u32 b_col = tid % BN, b_row = tid / BN;
    IgCol col = ig_col<MODE>(g, n0 + b_col);

    float acc[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;

    for (u32 k0 = k_begin; k0 < k_end; k0 += IG_MMA_BK) {
        ig_fill<MODE>(kt, g, k0, k_end);
        __syncthreads();
#pragma unroll
        for (int l = 0; l < A_LOADS; ++l) {
            u32 i = tid + l * THREADS, mm = i / IG_MMA_BK, kk = i % IG_MMA_BK;
            int off = ig_a_offset<MODE>(g, m0 + mm, kt, kk);
            as[mm * LD + kk] = off >= 0 ? a[off] : zero;
        }
#pragma unroll
        for (int l = 0; l < B_LOADS; ++l) {
            u32 kk = b_row + l * B_ROW_STEP;
            int off = ig_b_offset<MODE>(g, col, kt, kk);
            bs[b_col * LD + kk] = off >= 0 ? b[off] : zero;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < IG_MMA_BK; kk += 16) {
            u32 fa[MT][4], fb[NT][2];
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                const T* r0 = as + (warp_m * WM + i * 16 + lg) * LD + kk + 2 * lt;
                fa[i][0] = ig_pair(r0);
                fa[i][1] = ig_pair(r0 + 8 * LD);
                fa[i][2] = ig_pair(r0 + 8);
                fa[i][3] = ig_pair(r0 + 8 * LD + 8);
            }
#pragma unroll
            for (int j = 0; j < NT; ++j) {
                const T* c0 = bs + (warp_n * WN + j * 8 + lg) * LD + kk + 2 * lt;
                fb[j][0] = ig_pair(c0);
                fb[j][1] = ig_pair(c0 + 8);
            }
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int j = 0; j < NT; ++j) Mma<T>::mma(acc[i][j], fa[i], fb[j]);
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < MT; ++i) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            u32 m = m0 + warp_m * WM + i * 16 + lg + 8 * half;
            if (m >= g.gm) continue;
            float add = bias != nullptr ? Num<T>::to_acc(bias[m]) : 0.0f;
#pragma unroll
            for (int j = 0; j < NT; ++j) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    u32 n = n0 + warp_n * WN + j * 8 + 2 * lt + e;
                    if (n >= g.gn) continue;
                    float v = acc[i][j][2 * half + e];
                    if (partial != nullptr) {
                        partial[(blockIdx.z * g.gm + m) * g.gn + n] = v;
                    } else {
                        out[ig_out_offset<MODE>(g, m, n)] = Num<T>::from_acc(v + add);
                    }
                }
            }
        }
    }
}

#define IG_MMA_KERNEL(T, TN, MODE, MNAME, BM, BN, WARPS_M, WARPS_N) \
    extern "C" __global__ void __launch_bounds__(32 * WARPS_M * WARPS_N) igemm_mma_##MNAME##_##BM##x##BN##_##TN( \
        const T* a, const T* b, T* out, float* partial, const T* bias, IgGeom g) { \
        implicit_gemm_mma<T, MODE, BM, BN, WARPS_M, WARPS_N>(a, b, out, partial, bias, g); \
    }
#define IG_MMA_TILES(T, TN, MODE, MNAME) \
    IG_MMA_KERNEL(T, TN, MODE, MNAME, 128, 128, 2, 4) \
    IG_MMA_KERNEL(T, TN, MODE, MNAME, 64, 64, 2, 2)
#define IG_MMA_DTYPE(T, TN) \
    IG_MMA_TILES(T, TN, MODE_FWD, fwd) \
    IG_MMA_TILES(T, TN, MODE_DGRAD, dgrad) \
    IG_MMA_TILES(T, TN, MODE_WGRAD, wgrad)
IG_MMA_DTYPE(f16, f16)
IG_MMA_DTYPE(bf16, bf16)

#endif  // __CUDA_ARCH__ >= 800

// out[i] = sum over splits s of partial[s][i], added in split order.
template <typename T>
__device__ void sum_splits(const typename Num<T>::Acc* partial, T* out, u32 len, u32 splits) {
    typedef typename Num<T>::Acc A;
    FOR_EACH(i, len) {
        A s = A(0);
        for (u32 z = 0; z < splits; ++z) s += partial[z * len + i];
        out[i] = Num<T>::from_acc(s);
    }
}

// One kernel per (pass, tile, dtype): igemm_fwd_64x64_f32 and so on.
#define IG_KERNEL(T, TN, MODE, MNAME, BM, BN) \
    extern "C" __global__ void __launch_bounds__(IG_THREADS) igemm_##MNAME##_##BM##x##BN##_##TN( \
        const T* a, const T* b, T* out, typename Num<T>::Acc* partial, const T* bias, IgGeom g) { \
        implicit_gemm<T, MODE, BM, BN>(a, b, out, partial, bias, g); \
    }
#define IG_TILES(T, TN, MODE, MNAME) \
    IG_KERNEL(T, TN, MODE, MNAME, 128, 128) \
    IG_KERNEL(T, TN, MODE, MNAME, 64, 64) \
    IG_KERNEL(T, TN, MODE, MNAME, 32, 32)
#define IG_DTYPE(T, TN) \
    IG_TILES(T, TN, MODE_FWD, fwd) \
    IG_TILES(T, TN, MODE_DGRAD, dgrad) \
    IG_TILES(T, TN, MODE_WGRAD, wgrad) \
    extern "C" __global__ void igemm_sum_splits_##TN(const typename Num<T>::Acc* partial, T* out, u32 len, u32 splits) { \
        sum_splits<T>(partial, out, len, splits); \
    }
IG_DTYPE(float, f32)
IG_DTYPE(double, f64)
IG_DTYPE(f16, f16)
IG_DTYPE(bf16, bf16)
