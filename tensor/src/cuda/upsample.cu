// Nearest-neighbour up-sampling by integer factors (NCHW) and its adjoint.
//
// Forward: each output pixel copies input pixel (oy / sh, ox / sw).
// Backward: each input pixel sums its sh x sw block of the output gradient,
// one thread per input pixel (a gather: no atomics, deterministic).
//
// CPU twin: tensor/src/cpu/upsample.rs, the reference these kernels are tested against (tensor/tests/cuda.rs).

struct UpGeom {
    u32 h, w, sh, sw;  // input size and scales; output is (h*sh, w*sw)
};

template <typename T>
__device__ void upsample(const T* x, T* y, UpGeom g, u32 n) {
    u32 ow = g.w * g.sw, oh = g.h * g.sh;
    FOR_EACH(i, n) {
        u32 ox = i % ow, oy = (i / ow) % oh, p = i / (ow * oh);
        y[i] = x[(p * g.h + oy / g.sh) * g.w + ox / g.sw];
    }
}

template <typename T>
__device__ void upsample_backward(const T* gy, T* gx, UpGeom g, u32 n) {
    typedef typename Num<T>::Acc A;
    u32 ow = g.w * g.sw, oh = g.h * g.sh;
    FOR_EACH(i, n) {
        u32 ix = i % g.w, iy = (i / g.w) % g.h, p = i / (g.w * g.h);
        const T* block = gy + (p * oh + iy * g.sh) * ow + ix * g.sw;
        A s = A(0);
        for (u32 a = 0; a < g.sh; ++a)
            for (u32 b = 0; b < g.sw; ++b) s += Num<T>::to_acc(block[a * ow + b]);
        gx[i] = Num<T>::from_acc(s);
    }
}

#define UP(T, TN) \
    extern "C" __global__ void upsample_##TN(const T* x, T* y, UpGeom g, u32 n) { upsample<T>(x, y, g, n); } \
    extern "C" __global__ void upsample_backward_##TN(const T* gy, T* gx, UpGeom g, u32 n) { upsample_backward<T>(gy, gx, g, n); }
UP(float, f32)
UP(double, f64)
UP(f16, f16)
UP(bf16, bf16)
