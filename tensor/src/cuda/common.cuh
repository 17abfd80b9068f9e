// Shared prelude of every petal kernel file. `compile.rs` pastes it in front
// of each .cu source before NVRTC sees it (NVRTC ships no CUDA headers, so
// nothing here may #include anything).
//
// It provides:
// - the element types: float, double, u32, and f16/bf16 as 16-bit wrappers
//   with hand-written conversions (PTX `cvt` for f16, bit arithmetic for bf16);
// - `Num<T>`: each type's compute type (`Num<T>::Acc`, float for everything
//   narrower than double) and conversions to and from it and double;
// - overloaded math (`m_exp(float)` calls expf, `m_exp(double)` calls exp);
// - `Strided`: the shape and per-operand strides of a strided walk, passed to
//   kernels by value, and `strided_offsets`, which maps a flat row-major
//   index to one storage offset per operand.

typedef unsigned int u32;
typedef unsigned long long u64;

struct f16 { unsigned short bits; };
struct bf16 { unsigned short bits; };

__device__ __forceinline__ float f16_to_float(f16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h.bits));
    return f;
}
__device__ __forceinline__ f16 float_to_f16(float f) {
    f16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(f));
    return h;
}
__device__ __forceinline__ float bf16_to_float(bf16 h) {
    return __uint_as_float(((u32)h.bits) << 16);
}
// Round to nearest, ties to even; NaN stays a (quiet) NaN.
__device__ __forceinline__ bf16 float_to_bf16(float f) {
    u32 x = __float_as_uint(f);
    bf16 h;
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        h.bits = (unsigned short)((x >> 16) | 0x40u);
        return h;
    }
    x += 0x7fffu + ((x >> 16) & 1u);
    h.bits = (unsigned short)(x >> 16);
    return h;
}

// Float to u32 the way Rust's `x.max(0.0) as u32` does it: saturating, NaN -> 0.
__device__ __forceinline__ u32 double_to_u32(double x) {
    if (!(x > 0.0)) return 0u;
    if (x >= 4294967295.0) return 4294967295u;
    return (u32)x;
}

template <typename T> struct Num;
template <> struct Num<float> {
    typedef float Acc;
    static __device__ __forceinline__ float to_acc(float x) { return x; }
    static __device__ __forceinline__ float from_acc(float x) { return x; }
    static __device__ __forceinline__ double to_double(float x) { return (double)x; }
    static __device__ __forceinline__ float from_double(double x) { return (float)x; }
};
template <> struct Num<double> {
    typedef double Acc;
    static __device__ __forceinline__ double to_acc(double x) { return x; }
    static __device__ __forceinline__ double from_acc(double x) { return x; }
    static __device__ __forceinline__ double to_double(double x) { return x; }
    static __device__ __forceinline__ double from_double(double x) { return x; }
};
template <> struct Num<f16> {
    typedef float Acc;
    static __device__ __forceinline__ float to_acc(f16 x) { return f16_to_float(x); }
    static __device__ __forceinline__ f16 from_acc(float x) { return float_to_f16(x); }
    static __device__ __forceinline__ double to_double(f16 x) { return (double)f16_to_float(x); }
    static __device__ __forceinline__ f16 from_double(double x) { return float_to_f16((float)x); }
};
template <> struct Num<bf16> {
    typedef float Acc;
    static __device__ __forceinline__ float to_acc(bf16 x) { return bf16_to_float(x); }
    static __device__ __forceinline__ bf16 from_acc(float x) { return float_to_bf16(x); }
    static __device__ __forceinline__ double to_double(bf16 x) { return (double)bf16_to_float(x); }
    static __device__ __forceinline__ bf16 from_double(double x) { return float_to_bf16((float)x); }
};
template <> struct Num<u32> {
    typedef u32 Acc;
    static __device__ __forceinline__ u32 to_acc(u32 x) { return x; }
    static __device__ __forceinline__ u32 from_acc(u32 x) { return x; }
    static __device__ __forceinline__ double to_double(u32 x) { return (double)x; }
    static __device__ __forceinline__ u32 from_double(double x) { return double_to_u32(x); }
};

// Math on the compute types. Min/max follow Rust's f32::max: a NaN operand
// is ignored (fmaxf does the same).
#define MATH1(name, f32fn, f64fn) \
    __device__ __forceinline__ float name(float x) { return f32fn(x); } \
    __device__ __forceinline__ double name(double x) { return f64fn(x); }
MATH1(m_exp, expf, exp)
MATH1(m_log, logf, log)
MATH1(m_sqrt, sqrtf, sqrt)
MATH1(m_tanh, tanhf, tanh)
MATH1(m_sin, sinf, sin)
MATH1(m_cos, cosf, cos)
MATH1(m_abs, fabsf, fabs)
__device__ __forceinline__ bool m_isnan(float x) { return x != x; }
__device__ __forceinline__ bool m_isnan(double x) { return x != x; }
__device__ __forceinline__ float m_pow(float x, float e) { return powf(x, e); }
__device__ __forceinline__ double m_pow(double x, double e) { return pow(x, e); }
__device__ __forceinline__ float m_max(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double m_max(double a, double b) { return fmax(a, b); }
__device__ __forceinline__ float m_min(float a, float b) { return fminf(a, b); }
__device__ __forceinline__ double m_min(double a, double b) { return fmin(a, b); }

// Grid-stride loop: correct for any grid size, so the host can cap the grid.
#define FOR_EACH(i, n) \
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += blockDim.x * gridDim.x)

#define MAX_DIMS 8
#define MAX_OPERANDS 3

// A walk over `rank` dims (already coalesced by the host) for up to three
// operands; operand k's element at a multi-index sits at sum(idx[d] * strides[k][d]).
struct Strided {
    u32 rank;
    u32 dims[MAX_DIMS];
    u32 strides[MAX_OPERANDS][MAX_DIMS];
};

template <int N>
__device__ __forceinline__ void strided_offsets(const Strided& s, u32 i, u32 (&off)[N]) {
    if (s.rank == 1) {  // the common contiguous or simply strided case: no div/mod
#pragma unroll
        for (int k = 0; k < N; ++k) off[k] = i * s.strides[k][0];
        return;
    }
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = 0;
    for (int d = (int)s.rank - 1; d >= 0; --d) {
        u32 n = s.dims[d];
        u32 idx = i % n;
        i /= n;
#pragma unroll
        for (int k = 0; k < N; ++k) off[k] += idx * s.strides[k][d];
    }
}

#define PI_2 6.283185307179586
