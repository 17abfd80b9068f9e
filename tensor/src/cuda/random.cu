// Philox 4x32-10 random fills: the same streams as `rng.rs`, bit for bit.
//
// Element i of a fill is a pure function of (key, start + i), so each thread
// computes its elements independently and the result equals the CPU
// backend's whatever the launch shape. The arithmetic after the random words
// (scaling, log, cos) is done in double exactly as rng.rs does it; only the
// final rounding to the output dtype differs in kind from the CPU (f16/bf16
// round via f32).
//
// CPU twin: tensor/src/cpu/random.rs (with rng.rs), the reference these kernels are tested against (tensor/tests/cuda.rs).

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

__device__ __forceinline__ void philox4x32(u64 key, u64 counter, u32 out[4]) {
    u32 c0 = (u32)counter, c1 = (u32)(counter >> 32), c2 = 0, c3 = 0;
    u32 k0 = (u32)key, k1 = (u32)(key >> 32);
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        u32 hi0 = __umulhi(PHILOX_M0, c0), lo0 = PHILOX_M0 * c0;
        u32 hi1 = __umulhi(PHILOX_M1, c2), lo1 = PHILOX_M1 * c2;
        u32 n0 = hi1 ^ c1 ^ k0;
        u32 n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

// (word + 1) / 2^32: uniform in (0, 1].
__device__ __forceinline__ double to_unit(u32 w) { return ((double)w + 1.0) / 4294967296.0; }

// One step down in each type's order: the largest value below x.
__device__ __forceinline__ float next_down(float x) {
    if (x == 0.0f) return __uint_as_float(0x80000001u);
    u32 b = __float_as_uint(x);
    return __uint_as_float(x > 0.0f ? b - 1 : b + 1);
}
__device__ __forceinline__ double next_down(double x) {
    if (x == 0.0) return __longlong_as_double(0x8000000000000001LL);
    long long b = __double_as_longlong(x);
    return __longlong_as_double(x > 0.0 ? b - 1 : b + 1);
}
__device__ __forceinline__ unsigned short next_down_16(unsigned short bits) {
    if ((bits & 0x7fff) == 0) return 0x8001;
    return (bits & 0x8000) == 0 ? bits - 1 : bits + 1;
}
__device__ __forceinline__ f16 next_down(f16 x) { x.bits = next_down_16(x.bits); return x; }
__device__ __forceinline__ bf16 next_down(bf16 x) { x.bits = next_down_16(x.bits); return x; }

template <typename T>
__device__ void rand_uniform(T* out, u32 n, u64 key, u64 start, double lo, double hi) {
    FOR_EACH(i, n) {
        u32 w[4];
        philox4x32(key, start + (u64)i, w);
        double u = to_unit(w[0]) - 1.0 / 4294967296.0;
        T v = Num<T>::from_double(lo + (hi - lo) * u);
        // Rounding to T can give hi itself, which [lo, hi) excludes: step
        // down once, unless that leaves the range (CpuStorage::keep_below).
        if (hi > lo && Num<T>::to_double(v) >= hi) {
            T d = next_down(v);
            if (Num<T>::to_double(d) >= lo) v = d;
        }
        out[i] = v;
    }
}

template <typename T>
__device__ void rand_normal(T* out, u32 n, u64 key, u64 start, double mean, double std) {
    FOR_EACH(i, n) {
        u32 w[4];
        philox4x32(key, start + (u64)i, w);
        double u1 = to_unit(w[0]), u2 = to_unit(w[1]);
        double z = sqrt(-2.0 * log(u1)) * cos(PI_2 * u2);
        out[i] = Num<T>::from_double(mean + std * z);
    }
}

// Dropout in one pass: mask[i] = scale where word 0 of philox(key, start + i)
// is below `threshold` (`rng::keep_threshold(keep)`: the test u < keep for
// u = word / 2^32, as in `bernoulli`), else 0; out = x * mask. Mirrors
// `cpu::elementwise::dropout`, counter for counter.
template <typename T>
__device__ void dropout(const T* x, T* out, T* mask, u32 n, u64 key, u64 start, u64 threshold, double scale) {
    const T kept = Num<T>::from_double(scale);
    const T dropped = Num<T>::from_acc(0);
    FOR_EACH(i, n) {
        u32 w[4];
        philox4x32(key, start + (u64)i, w);
        T m = (u64)w[0] < threshold ? kept : dropped;
        mask[i] = m;
        out[i] = Num<T>::from_acc(Num<T>::to_acc(x[i]) * Num<T>::to_acc(m));
    }
}

// Raw words, for the known-answer test against rng.rs.
extern "C" __global__ void philox_words(u32* out, u32 n, u64 key, u64 start) {
    FOR_EACH(i, n) {
        u32 w[4];
        philox4x32(key, start + (u64)i, w);
        for (int k = 0; k < 4; ++k) out[4 * i + k] = w[k];
    }
}

#define RANDOM(T, TN) \
    extern "C" __global__ void rand_uniform_##TN(T* out, u32 n, u64 key, u64 start, double lo, double hi) { rand_uniform<T>(out, n, key, start, lo, hi); } \
    extern "C" __global__ void rand_normal_##TN(T* out, u32 n, u64 key, u64 start, double mean, double std) { rand_normal<T>(out, n, key, start, mean, std); } \
    extern "C" __global__ void dropout_##TN(const T* x, T* out, T* mask, u32 n, u64 key, u64 start, u64 threshold, double scale) { dropout<T>(x, out, mask, n, key, start, threshold, scale); }
RANDOM(float, f32)
RANDOM(double, f64)
RANDOM(f16, f16)
RANDOM(bf16, bf16)
