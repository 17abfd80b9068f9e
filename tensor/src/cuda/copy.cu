// Strided gathers, dtype casts, strided scatters and fills.
//
// `cast_S_D` reads a strided view of S and writes a contiguous D; with S == D
// it is the plain gather behind `copy_strided`. `scatter_T` writes a strided
// destination from a strided source (copy_into). Casts go through double,
// which holds every value of every dtype exactly, so each cast rounds once.
//
// CPU twin: tensor/src/cpu/copy.rs (gather, scatter, cast, fill), the reference these kernels are tested against (tensor/tests/cuda.rs).

template <typename S, typename D>
struct Convert {
    static __device__ __forceinline__ D run(S x) { return Num<D>::from_double(Num<S>::to_double(x)); }
};
template <typename T>
struct Convert<T, T> {
    static __device__ __forceinline__ T run(T x) { return x; }
};
// f32 -> f16/bf16 directly: one rounding either way, and cheaper.
template <> struct Convert<float, f16> {
    static __device__ __forceinline__ f16 run(float x) { return float_to_f16(x); }
};
template <> struct Convert<float, bf16> {
    static __device__ __forceinline__ bf16 run(float x) { return float_to_bf16(x); }
};

template <typename S, typename D>
__device__ void cast_strided(const S* src, D* dst, Strided s, u32 n) {
    FOR_EACH(i, n) {
        u32 off[1];
        strided_offsets<1>(s, i, off);
        dst[i] = Convert<S, D>::run(src[off[0]]);
    }
}

// Operand 0 of `s` is the destination, operand 1 the source.
template <typename T>
__device__ void scatter(const T* src, T* dst, Strided s, u32 n) {
    FOR_EACH(i, n) {
        u32 off[2];
        strided_offsets<2>(s, i, off);
        dst[off[0]] = src[off[1]];
    }
}

template <typename T>
__device__ void fill(T* dst, double value, u32 n) {
    T v = Num<T>::from_double(value);
    FOR_EACH(i, n) { dst[i] = v; }
}

#define CAST(S, SN, D, DN) \
    extern "C" __global__ void cast_##SN##_##DN(const S* src, D* dst, Strided s, u32 n) { cast_strided<S, D>(src, dst, s, n); }
#define CAST_FROM(S, SN) \
    CAST(S, SN, float, f32) CAST(S, SN, double, f64) CAST(S, SN, f16, f16) CAST(S, SN, bf16, bf16) CAST(S, SN, u32, u32)
CAST_FROM(float, f32)
CAST_FROM(double, f64)
CAST_FROM(f16, f16)
CAST_FROM(bf16, bf16)
CAST_FROM(u32, u32)

#define PER_TYPE(T, TN) \
    extern "C" __global__ void scatter_##TN(const T* src, T* dst, Strided s, u32 n) { scatter<T>(src, dst, s, n); } \
    extern "C" __global__ void fill_##TN(T* dst, double value, u32 n) { fill<T>(dst, value, n); }
PER_TYPE(float, f32)
PER_TYPE(double, f64)
PER_TYPE(f16, f16)
PER_TYPE(bf16, bf16)
PER_TYPE(u32, u32)
