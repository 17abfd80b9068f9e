// index_select (gather rows along one dim) and index_add (its adjoint,
// scatter-add with atomics, since several indices may name one row).
//
// Both view the tensor as [outer, dim, inner]. An index outside 0..dim is
// never followed: index_select writes 0 there and index_add skips it, and
// both record the largest bad index + 1 in `*bad` (atomicMax) so the host
// can report it (debug builds check after every call; see index_select.rs).
//
// CPU twin: tensor/src/cpu/index_select.rs, the reference these kernels are tested against (tensor/tests/cuda.rs).

template <typename T>
__device__ void index_select(const T* src, const u32* idx, T* out, u32* bad, u32 dim, u32 n_idx, u32 inner, u32 n) {
    FOR_EACH(i, n) {
        u32 k = i % inner;
        u32 j = (i / inner) % n_idx;
        u32 o = i / (inner * n_idx);
        u32 r = idx[j];
        if (r < dim) {
            out[i] = src[((size_t)o * dim + r) * inner + k];
        } else {
            out[i] = Num<T>::from_acc(0);
            atomicMax(bad, r + 1);
        }
    }
}

// Atomic `*addr += v` for every dtype. f16/bf16 have no portable 16-bit
// atomicAdd, so they compare-and-swap the aligned 32-bit word holding them.
__device__ __forceinline__ void atomic_add(float* addr, float v) { atomicAdd(addr, v); }
__device__ __forceinline__ void atomic_add(double* addr, double v) { atomicAdd(addr, v); }
__device__ __forceinline__ void atomic_add(u32* addr, u32 v) { atomicAdd(addr, v); }

template <typename H>
__device__ __forceinline__ void atomic_add_16(H* addr, float v) {
    u32* word = (u32*)((size_t)addr & ~(size_t)3);
    bool high = ((size_t)addr & 2) != 0;
    u32 old = *word, assumed;
    do {
        assumed = old;
        H h;
        h.bits = (unsigned short)(high ? (assumed >> 16) : (assumed & 0xffffu));
        h = Num<H>::from_acc(Num<H>::to_acc(h) + v);
        u32 updated = high ? ((assumed & 0xffffu) | ((u32)h.bits << 16)) : ((assumed & 0xffff0000u) | h.bits);
        old = atomicCAS(word, assumed, updated);
    } while (old != assumed);
}
__device__ __forceinline__ void atomic_add(f16* addr, float v) { atomic_add_16<f16>(addr, v); }
__device__ __forceinline__ void atomic_add(bf16* addr, float v) { atomic_add_16<bf16>(addr, v); }

// dst is [outer, dim, inner]; src (contiguous) is [outer, n_idx, inner].
template <typename T>
__device__ void index_add(T* dst, const u32* idx, const T* src, u32* bad, u32 dim, u32 n_idx, u32 inner, u32 n) {
    FOR_EACH(i, n) {
        u32 k = i % inner;
        u32 j = (i / inner) % n_idx;
        u32 o = i / (inner * n_idx);
        u32 r = idx[j];
        if (r < dim) atomic_add(dst + ((size_t)o * dim + r) * inner + k, Num<T>::to_acc(src[i]));
        else atomicMax(bad, r + 1);
    }
}

#define INDEX(T, TN) \
    extern "C" __global__ void index_select_##TN(const T* src, const u32* idx, T* out, u32* bad, u32 dim, u32 n_idx, u32 inner, u32 n) { index_select<T>(src, idx, out, bad, dim, n_idx, inner, n); } \
    extern "C" __global__ void index_add_##TN(T* dst, const u32* idx, const T* src, u32* bad, u32 dim, u32 n_idx, u32 inner, u32 n) { index_add<T>(dst, idx, src, bad, dim, n_idx, inner, n); }
INDEX(float, f32)
INDEX(double, f64)
INDEX(f16, f16)
INDEX(bf16, bf16)
INDEX(u32, u32)
