// The data-movement halves of conv2d; the arithmetic is cuBLAS GEMMs.
//
// `im2col_T` unfolds the receptive fields of `nb` images into a matrix with
// one row per (input channel, kernel row, kernel column) and one column per
// output pixel. Where that matrix lives is given by two strides, so one
// kernel serves both layouts conv.rs wants: [nb][K][OHW] (one GEMM per
// image, batched) and [K][nb*OHW] (all images side by side, one wide GEMM).
// `col2im_T` is its adjoint: each input pixel gathers the columns that read
// it, so no two threads write the same place and no atomics are needed.
// `add_bias_T` adds one value per output channel.
//
// CPU twin: tensor/src/cpu/conv.rs, the reference these kernels are tested against (tensor/tests/cuda.rs).

struct ConvGeom {
    u32 nb, c, h, w;      // images in this chunk, input channels, input size
    u32 kh, kw, stride, pad;
    u32 oh, ow;           // output size
    u32 col_img;          // col stride between images
    u32 col_row;          // col stride between rows (c, ki, kj)
};

// Both kernels run on a 2-D grid: blockIdx.y walks the (image, channel)
// planes, and each thread of a plane's blocks owns one pixel. Working out
// a plane's indices once per block, not once per element, saves the
// integer divisions (tens of instructions each for a run-time divisor).
//
// Each element costs one load and one store, so the speed comes from how
// many loads are in flight: a thread issues the loads of up to TAPS kernel
// taps (ki, kj) before any of their stores or sums, instead of waiting on
// one load at a time. Neighbouring threads touch neighbouring addresses,
// and the taps of a pixel re-read the same few input rows, which the L1
// cache serves.
#define TAPS 9

template <typename T>
__device__ void im2col(const T* __restrict__ x, T* __restrict__ col, ConvGeom g) {
    u32 ohw = g.oh * g.ow, taps = g.kh * g.kw, planes = g.nb * g.c;
    for (u32 r = blockIdx.y; r < planes; r += gridDim.y) {
        u32 b = r / g.c, c = r % g.c;
        const T* plane = x + r * g.h * g.w;
        // Rows (c, ki, kj) of image b, one per tap.
        T* rows = col + b * g.col_img + c * taps * g.col_row;
        for (u32 p = blockIdx.x * blockDim.x + threadIdx.x; p < ohw; p += blockDim.x * gridDim.x) {
            u32 oy = p / g.ow, ox = p - oy * g.ow;
            int y0 = (int)(oy * g.stride) - (int)g.pad, x0 = (int)(ox * g.stride) - (int)g.pad;
            u32 ki = 0, kj = 0;
            for (u32 t0 = 0; t0 < taps; t0 += TAPS) {
                T v[TAPS];
#pragma unroll
                for (u32 u = 0; u < TAPS; ++u) {
                    v[u] = Num<T>::from_acc(0);
                    int iy = y0 + (int)ki, ix = x0 + (int)kj;
                    if (t0 + u < taps && iy >= 0 && iy < (int)g.h && ix >= 0 && ix < (int)g.w) {
                        v[u] = plane[iy * g.w + ix];
                    }
                    if (++kj == g.kw) { kj = 0; ++ki; }
                }
#pragma unroll
                for (u32 u = 0; u < TAPS; ++u) {
                    if (t0 + u < taps) rows[(t0 + u) * g.col_row + p] = v[u];
                }
            }
        }
    }
}

template <typename T>
__device__ void col2im(const T* __restrict__ col, T* __restrict__ x, ConvGeom g) {
    typedef typename Num<T>::Acc A;
    u32 hw = g.h * g.w, taps = g.kh * g.kw, planes = g.nb * g.c;
    for (u32 r = blockIdx.y; r < planes; r += gridDim.y) {
        u32 b = r / g.c, c = r % g.c;
        const T* rows = col + b * g.col_img + c * taps * g.col_row;
        for (u32 p = blockIdx.x * blockDim.x + threadIdx.x; p < hw; p += blockDim.x * gridDim.x) {
            u32 iy = p / g.w, ix = p - iy * g.w;
            A sum = A(0);
            u32 ki = 0, kj = 0;
            for (u32 t0 = 0; t0 < taps; t0 += TAPS) {
                A v[TAPS];
#pragma unroll
                for (u32 u = 0; u < TAPS; ++u) {
                    v[u] = A(0);
                    // The output pixel whose tap (ki, kj) reads input pixel (iy, ix):
                    // oy * stride + ki - pad = iy.
                    int ys = (int)(iy + g.pad) - (int)ki, xs = (int)(ix + g.pad) - (int)kj;
                    bool ok = t0 + u < taps && ys >= 0 && xs >= 0;
                    u32 oy = ys, ox = xs;
                    if (g.stride != 1) {
                        ok = ok && oy % g.stride == 0 && ox % g.stride == 0;
                        oy /= g.stride;
                        ox /= g.stride;
                    }
                    if (ok && oy < g.oh && ox < g.ow) {
                        v[u] = Num<T>::to_acc(rows[(t0 + u) * g.col_row + oy * g.ow + ox]);
                    }
                    if (++kj == g.kw) { kj = 0; ++ki; }
                }
#pragma unroll
                for (u32 u = 0; u < TAPS; ++u) sum += v[u];
            }
            x[r * hw + p] = Num<T>::from_acc(sum);
        }
    }
}

// y is [N, C, HW]; adds bias[c] everywhere in channel c.
template <typename T>
__device__ void add_bias(T* y, const T* bias, u32 channels, u32 hw, u32 n) {
    FOR_EACH(i, n) {
        u32 c = (i / hw) % channels;
        y[i] = Num<T>::from_acc(Num<T>::to_acc(y[i]) + Num<T>::to_acc(bias[c]));
    }
}

#define CONV(T, TN) \
    extern "C" __global__ void im2col_##TN(const T* x, T* col, ConvGeom g) { im2col<T>(x, col, g); } \
    extern "C" __global__ void col2im_##TN(const T* col, T* x, ConvGeom g) { col2im<T>(col, x, g); } \
    extern "C" __global__ void add_bias_##TN(T* y, const T* bias, u32 channels, u32 hw, u32 n) { add_bias<T>(y, bias, channels, hw, n); }
CONV(float, f32)
CONV(double, f64)
CONV(f16, f16)
CONV(bf16, bf16)
