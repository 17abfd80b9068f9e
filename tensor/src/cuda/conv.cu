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

struct ConvGeom {
    u32 nb, c, h, w;      // images in this chunk, input channels, input size
    u32 kh, kw, stride, pad;
    u32 oh, ow;           // output size
    u32 col_img;          // col stride between images
    u32 col_row;          // col stride between rows (c, ki, kj)
};

// Both kernels run on a 2-D grid: blockIdx.y walks the rows of the work
// (a (image, channel, ki, kj) row of the columns for im2col, an (image,
// channel) plane for col2im), and the threads of a row walk its pixels. The
// row's indices are then worked out once per block instead of once per
// element (integer division by a run-time value costs tens of
// instructions), and neighbouring threads touch neighbouring addresses.

// Pixels of a row each im2col thread copies. Each element is one load (an
// L2 hit, mostly) and one store; with a single element per thread the
// copy waits on one load at a time and stalls far below memory bandwidth.
// Issuing IM2COL_UNROLL independent loads before the stores keeps several
// in flight per thread. conv.rs sizes the grid with the same number.
#define IM2COL_UNROLL 4

template <typename T>
__device__ void im2col(const T* x, T* col, ConvGeom g) {
    u32 ohw = g.oh * g.ow;
    u32 krows = g.c * g.kh * g.kw;
    u32 rows = g.nb * krows;
    u32 span = blockDim.x * IM2COL_UNROLL;
    for (u32 r = blockIdx.y; r < rows; r += gridDim.y) {
        u32 b = r / krows, row = r % krows;
        u32 kj = row % g.kw, ki = (row / g.kw) % g.kh, c = row / (g.kw * g.kh);
        const T* plane = x + (b * g.c + c) * g.h * g.w;
        T* out = col + b * g.col_img + row * g.col_row;
        for (u32 base = blockIdx.x * span; base < ohw; base += gridDim.x * span) {
            T v[IM2COL_UNROLL];
#pragma unroll
            for (u32 u = 0; u < IM2COL_UNROLL; ++u) {
                u32 p = base + u * blockDim.x + threadIdx.x;
                v[u] = Num<T>::from_acc(0);
                if (p < ohw) {
                    u32 oy = p / g.ow, ox = p - oy * g.ow;
                    int iy = (int)(oy * g.stride + ki) - (int)g.pad;
                    int ix = (int)(ox * g.stride + kj) - (int)g.pad;
                    if (iy >= 0 && iy < (int)g.h && ix >= 0 && ix < (int)g.w) {
                        v[u] = plane[iy * g.w + ix];
                    }
                }
            }
#pragma unroll
            for (u32 u = 0; u < IM2COL_UNROLL; ++u) {
                u32 p = base + u * blockDim.x + threadIdx.x;
                if (p < ohw) out[p] = v[u];
            }
        }
    }
}

template <typename T>
__device__ void col2im(const T* col, T* x, ConvGeom g) {
    typedef typename Num<T>::Acc A;
    u32 hw = g.h * g.w;
    u32 planes = g.nb * g.c;
    for (u32 r = blockIdx.y; r < planes; r += gridDim.y) {
        u32 b = r / g.c, c = r % g.c;
        // The rows (c, ki, kj) of image b start here.
        const T* cols = col + b * g.col_img + c * g.kh * g.kw * g.col_row;
        for (u32 p = blockIdx.x * blockDim.x + threadIdx.x; p < hw; p += blockDim.x * gridDim.x) {
            u32 iy = p / g.w, ix = p - iy * g.w;
            A sum = A(0);
            for (u32 ki = 0; ki < g.kh; ++ki) {
                int ys = (int)(iy + g.pad) - (int)ki;  // = oy * stride
                if (ys < 0) break;
                u32 oy = ys;
                if (g.stride != 1) {
                    if (oy % g.stride != 0) continue;
                    oy /= g.stride;
                }
                if (oy >= g.oh) continue;
                for (u32 kj = 0; kj < g.kw; ++kj) {
                    int xs = (int)(ix + g.pad) - (int)kj;
                    if (xs < 0) break;
                    u32 ox = xs;
                    if (g.stride != 1) {
                        if (ox % g.stride != 0) continue;
                        ox /= g.stride;
                    }
                    if (ox >= g.ow) continue;
                    sum += Num<T>::to_acc(cols[(ki * g.kw + kj) * g.col_row + oy * g.ow + ox]);
                }
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
