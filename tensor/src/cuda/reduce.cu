// Reductions (sum, max, min, argmax) over any set of axes.
//
// The host splits the dims into kept dims (one output element per index)
// and reduced dims (the elements folded into one output), coalesces each
// group, and picks one of two shapes of parallelism:
// - `reduce_thread_T`: one thread per output, looping over its elements.
//   Right when rows are short, or when the reduced axes are the outer ones
//   (neighbouring threads then read neighbouring addresses).
// - `reduce_block_T`: one 256-thread block per output (or per slice of an
//   output, `gridDim.y` slices), tree-combined in shared memory. Right for
//   long rows. With several slices per output the block writes a double
//   partial and `reduce_finish_T` folds the partials.
// Everything accumulates in double, so f32 sums are as accurate as the CPU
// backend's. Max/min propagate NaN; argmax treats NaN as the largest value
// and returns the first index among equals, as the CPU backend does.
//
// CPU twin: tensor/src/cpu/reduce.rs, the reference these kernels are tested against (tensor/tests/cuda.rs).

#define R_SUM 0
#define R_MAX 1
#define R_MIN 2
#define R_ARGMAX 3
#define BLOCK 256

struct ReduceIndex {
    u32 out_rank;
    u32 out_dims[MAX_DIMS];
    u32 out_strides[MAX_DIMS];
    u32 red_rank;
    u32 red_dims[MAX_DIMS];
    u32 red_strides[MAX_DIMS];
};

__device__ __forceinline__ u32 walk(u32 rank, const u32* dims, const u32* strides, u32 i) {
    if (rank == 1) return i * strides[0];
    u32 off = 0;
    for (int d = (int)rank - 1; d >= 0; --d) {
        off += (i % dims[d]) * strides[d];
        i /= dims[d];
    }
    return off;
}

struct Acc {
    double v;
    u32 i;
};

__device__ __forceinline__ Acc identity(u32 op) {
    Acc a;
    a.i = 0xffffffffu;
    a.v = op == R_SUM ? 0.0 : (op == R_MIN ? __longlong_as_double(0x7ff0000000000000LL)
                                           : __longlong_as_double(0xfff0000000000000LL));
    return a;
}

// Folds (v, i) into acc. Sum ignores indices; argmax keeps the smaller index on ties.
__device__ __forceinline__ void combine(u32 op, Acc& acc, double v, u32 i) {
    switch (op) {
        case R_SUM: acc.v += v; break;
        case R_MAX:
            if (!m_isnan(acc.v) && (m_isnan(v) || v > acc.v)) acc.v = v;
            break;
        case R_MIN:
            if (!m_isnan(acc.v) && (m_isnan(v) || v < acc.v)) acc.v = v;
            break;
        case R_ARGMAX: {
            bool an = m_isnan(acc.v), vn = m_isnan(v);
            bool take;
            if (an != vn) take = vn;
            else if (an || v == acc.v) take = i < acc.i;
            else take = v > acc.v;
            if (take) { acc.v = v; acc.i = i; }
            break;
        }
    }
}

template <typename T>
__device__ __forceinline__ void store(void* out, u32 o, u32 op, Acc a) {
    if (op == R_ARGMAX) ((u32*)out)[o] = a.i == 0xffffffffu ? 0u : a.i;
    else ((T*)out)[o] = Num<T>::from_double(a.v);
}

template <typename T>
__device__ void reduce_thread(const T* x, void* out, ReduceIndex ix, u32 n_out, u32 r, u32 op) {
    FOR_EACH(o, n_out) {
        const T* base = x + walk(ix.out_rank, ix.out_dims, ix.out_strides, o);
        Acc acc = identity(op);
        for (u32 j = 0; j < r; ++j) {
            combine(op, acc, Num<T>::to_double(base[walk(ix.red_rank, ix.red_dims, ix.red_strides, j)]), j);
        }
        store<T>(out, o, op, acc);
    }
}

// Block tree over shared memory; returns the block's result in thread 0.
__device__ Acc block_combine(u32 op, Acc acc) {
    __shared__ double sv[BLOCK];
    __shared__ u32 si[BLOCK];
    sv[threadIdx.x] = acc.v;
    si[threadIdx.x] = acc.i;
    __syncthreads();
    for (u32 half = BLOCK / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) {
            Acc a;
            a.v = sv[threadIdx.x];
            a.i = si[threadIdx.x];
            combine(op, a, sv[threadIdx.x + half], si[threadIdx.x + half]);
            sv[threadIdx.x] = a.v;
            si[threadIdx.x] = a.i;
        }
        __syncthreads();
    }
    Acc r;
    r.v = sv[0];
    r.i = si[0];
    return r;
}

// Block (blockIdx.x, blockIdx.y) folds elements [y*chunk, (y+1)*chunk) of output x.
template <typename T>
__device__ void reduce_block(const T* x, void* out, double* partial, ReduceIndex ix, u32 r, u32 op, u32 chunk) {
    u32 o = blockIdx.x;
    const T* base = x + walk(ix.out_rank, ix.out_dims, ix.out_strides, o);
    u32 lo = blockIdx.y * chunk;
    u32 hi = min(r, lo + chunk);
    Acc acc = identity(op);
    for (u32 j = lo + threadIdx.x; j < hi; j += BLOCK) {
        combine(op, acc, Num<T>::to_double(base[walk(ix.red_rank, ix.red_dims, ix.red_strides, j)]), j);
    }
    acc = block_combine(op, acc);
    if (threadIdx.x == 0) {
        if (gridDim.y == 1) store<T>(out, o, op, acc);
        else partial[o * gridDim.y + blockIdx.y] = acc.v;
    }
}

// Folds `splits` double partials per output (sum, max, min only).
template <typename T>
__device__ void reduce_finish(const double* partial, T* out, u32 splits, u32 op) {
    u32 o = blockIdx.x;
    Acc acc = identity(op);
    for (u32 j = threadIdx.x; j < splits; j += BLOCK) combine(op, acc, partial[o * splits + j], j);
    acc = block_combine(op, acc);
    if (threadIdx.x == 0) out[o] = Num<T>::from_double(acc.v);
}

#define REDUCE(T, TN) \
    extern "C" __global__ void reduce_thread_##TN(const T* x, void* out, ReduceIndex ix, u32 n_out, u32 r, u32 op) { reduce_thread<T>(x, out, ix, n_out, r, op); } \
    extern "C" __global__ void __launch_bounds__(BLOCK) reduce_block_##TN(const T* x, void* out, double* partial, ReduceIndex ix, u32 r, u32 op, u32 chunk) { reduce_block<T>(x, out, partial, ix, r, op, chunk); } \
    extern "C" __global__ void __launch_bounds__(BLOCK) reduce_finish_##TN(const double* partial, T* out, u32 splits, u32 op) { reduce_finish<T>(partial, out, splits, op); }
REDUCE(float, f32)
REDUCE(double, f64)
REDUCE(f16, f16)
REDUCE(bf16, bf16)
