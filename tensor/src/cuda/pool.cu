// Average and max pooling over NCHW planes (square window, no padding), and
// their backward passes.
//
// Forward: one thread per output pixel. Backward: one thread per *input*
// pixel, which visits the few windows covering it and sums what they send
// back. Gathering like this never has two threads write one address, so it
// needs no atomics, works for every dtype and gives the same bits every run.
// Max pooling sends a window's gradient to its first maximum (NaN counts as
// the maximum), exactly as the CPU backend does; the backward recomputes
// that choice from the input instead of storing indices.
//
// CPU twin: tensor/src/cpu/pool.rs, the reference these kernels are tested against (tensor/tests/cuda.rs).

struct PoolGeom {
    u32 planes, h, w, k, stride, oh, ow;
};

template <typename T>
__device__ void avg_pool(const T* x, T* y, PoolGeom g, u32 n) {
    typedef typename Num<T>::Acc A;
    A inv = A(1) / A(g.k * g.k);
    FOR_EACH(i, n) {
        u32 ox = i % g.ow, oy = (i / g.ow) % g.oh, p = i / (g.ow * g.oh);
        const T* src = x + (p * g.h + oy * g.stride) * g.w + ox * g.stride;
        A s = A(0);
        for (u32 a = 0; a < g.k; ++a)
            for (u32 b = 0; b < g.k; ++b) s += Num<T>::to_acc(src[a * g.w + b]);
        y[i] = Num<T>::from_acc(s * inv);
    }
}

// Output windows covering input coordinate `i` along one axis: [lo, hi).
__device__ __forceinline__ void covering(u32 i, u32 k, u32 stride, u32 out, u32& lo, u32& hi) {
    lo = i + 1 > k ? (i + 1 - k + stride - 1) / stride : 0;
    hi = min(i / stride + 1, out);
}

template <typename T>
__device__ void avg_pool_backward(const T* gy, T* gx, PoolGeom g, u32 n) {
    typedef typename Num<T>::Acc A;
    A inv = A(1) / A(g.k * g.k);
    FOR_EACH(i, n) {
        u32 ix = i % g.w, iy = (i / g.w) % g.h, p = i / (g.w * g.h);
        u32 y0, y1, x0, x1;
        covering(iy, g.k, g.stride, g.oh, y0, y1);
        covering(ix, g.k, g.stride, g.ow, x0, x1);
        A s = A(0);
        for (u32 oy = y0; oy < y1; ++oy)
            for (u32 ox = x0; ox < x1; ++ox) s += Num<T>::to_acc(gy[(p * g.oh + oy) * g.ow + ox]);
        gx[i] = Num<T>::from_acc(s * inv);
    }
}

// Offset (within the plane) of the first maximum of window (oy, ox).
template <typename T>
__device__ __forceinline__ u32 window_argmax(const T* plane, PoolGeom g, u32 oy, u32 ox) {
    typedef typename Num<T>::Acc A;
    u32 best = oy * g.stride * g.w + ox * g.stride;
    A bv = Num<T>::to_acc(plane[best]);
    for (u32 a = 0; a < g.k; ++a) {
        for (u32 b = 0; b < g.k; ++b) {
            u32 off = (oy * g.stride + a) * g.w + ox * g.stride + b;
            A v = Num<T>::to_acc(plane[off]);
            if (v > bv || (m_isnan(v) && !m_isnan(bv))) {
                bv = v;
                best = off;
            }
        }
    }
    return best;
}

template <typename T>
__device__ void max_pool(const T* x, T* y, PoolGeom g, u32 n) {
    FOR_EACH(i, n) {
        u32 ox = i % g.ow, oy = (i / g.ow) % g.oh, p = i / (g.ow * g.oh);
        const T* plane = x + p * g.h * g.w;
        y[i] = plane[window_argmax(plane, g, oy, ox)];
    }
}

template <typename T>
__device__ void max_pool_backward(const T* x, const T* gy, T* gx, PoolGeom g, u32 n) {
    typedef typename Num<T>::Acc A;
    FOR_EACH(i, n) {
        u32 ix = i % g.w, iy = (i / g.w) % g.h, p = i / (g.w * g.h);
        const T* plane = x + p * g.h * g.w;
        u32 me = iy * g.w + ix;
        u32 y0, y1, x0, x1;
        covering(iy, g.k, g.stride, g.oh, y0, y1);
        covering(ix, g.k, g.stride, g.ow, x0, x1);
        A s = A(0);
        for (u32 oy = y0; oy < y1; ++oy)
            for (u32 ox = x0; ox < x1; ++ox)
                if (window_argmax(plane, g, oy, ox) == me) s += Num<T>::to_acc(gy[(p * g.oh + oy) * g.ow + ox]);
        gx[i] = Num<T>::from_acc(s);
    }
}

#define POOL(T, TN) \
    extern "C" __global__ void avg_pool_##TN(const T* x, T* y, PoolGeom g, u32 n) { avg_pool<T>(x, y, g, n); } \
    extern "C" __global__ void avg_pool_backward_##TN(const T* gy, T* gx, PoolGeom g, u32 n) { avg_pool_backward<T>(gy, gx, g, n); } \
    extern "C" __global__ void max_pool_##TN(const T* x, T* y, PoolGeom g, u32 n) { max_pool<T>(x, y, g, n); } \
    extern "C" __global__ void max_pool_backward_##TN(const T* x, const T* gy, T* gx, PoolGeom g, u32 n) { max_pool_backward<T>(x, gy, gx, g, n); }
POOL(float, f32)
POOL(double, f64)
POOL(f16, f16)
POOL(bf16, bf16)
