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

template <typename T>
__device__ void im2col(const T* x, T* col, ConvGeom g, u32 n) {
    // Thread i handles (b, c, ki, kj, oy, ox), ox fastest, so writes coalesce.
    FOR_EACH(i, n) {
        u32 t = i;
        u32 ox = t % g.ow; t /= g.ow;
        u32 oy = t % g.oh; t /= g.oh;
        u32 kj = t % g.kw; t /= g.kw;
        u32 ki = t % g.kh; t /= g.kh;
        u32 c = t % g.c;   t /= g.c;
        u32 b = t;
        int iy = (int)(oy * g.stride + ki) - (int)g.pad;
        int ix = (int)(ox * g.stride + kj) - (int)g.pad;
        T v = Num<T>::from_acc(0);
        if (iy >= 0 && iy < (int)g.h && ix >= 0 && ix < (int)g.w) {
            v = x[((b * g.c + c) * g.h + iy) * g.w + ix];
        }
        u32 row = (c * g.kh + ki) * g.kw + kj;
        col[b * g.col_img + row * g.col_row + oy * g.ow + ox] = v;
    }
}

template <typename T>
__device__ void col2im(const T* col, T* x, ConvGeom g, u32 n) {
    typedef typename Num<T>::Acc A;
    FOR_EACH(i, n) {
        u32 t = i;
        u32 ix = t % g.w; t /= g.w;
        u32 iy = t % g.h; t /= g.h;
        u32 c = t % g.c;  t /= g.c;
        u32 b = t;
        A sum = A(0);
        for (u32 ki = 0; ki < g.kh; ++ki) {
            int ys = (int)(iy + g.pad) - (int)ki;  // = oy * stride
            if (ys < 0 || ys % g.stride != 0) continue;
            u32 oy = ys / g.stride;
            if (oy >= g.oh) continue;
            for (u32 kj = 0; kj < g.kw; ++kj) {
                int xs = (int)(ix + g.pad) - (int)kj;
                if (xs < 0 || xs % g.stride != 0) continue;
                u32 ox = xs / g.stride;
                if (ox >= g.ow) continue;
                u32 row = (c * g.kh + ki) * g.kw + kj;
                sum += Num<T>::to_acc(col[b * g.col_img + row * g.col_row + oy * g.ow + ox]);
            }
        }
        x[i] = Num<T>::from_acc(sum);
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
    extern "C" __global__ void im2col_##TN(const T* x, T* col, ConvGeom g, u32 n) { im2col<T>(x, col, g, n); } \
    extern "C" __global__ void col2im_##TN(const T* col, T* x, ConvGeom g, u32 n) { col2im<T>(col, x, g, n); } \
    extern "C" __global__ void add_bias_##TN(T* y, const T* bias, u32 channels, u32 hw, u32 n) { add_bias<T>(y, bias, channels, hw, n); }
CONV(float, f32)
CONV(double, f64)
CONV(f16, f16)
CONV(bf16, bf16)
