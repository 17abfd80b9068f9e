// Group normalisation (NCHW), forward and fused backward.
//
// In NCHW the channels of a group are adjacent, so one (image, group) is a
// contiguous slice, and one 256-thread block owns it: the block sums the
// slice, combines the sums in shared memory, and then makes a second pass
// over the same slice (fresh in L2) to write the output.
//
// Statistics follow the CPU backend exactly: one pass of double sums of
// (x - shift) and (x - shift)^2, shifted by the slice's first element, which
// avoids the cancellation of E[x^2] - E[x]^2 when |mean| >> std.
// The backward needs, per (image, channel), sum(dy) and sum(dy * (x - mean));
// the block computes them channel by channel, uses them for dx at once, and
// stores them so `group_norm_param_grads` can sum them over images into
// grad_gamma and grad_beta (no atomics: deterministic).
//
// `group_norm_silu_T` is the same forward with SiLU applied on the way
// out; its backward rebuilds the SiLU's input z = x * a_c + b_c from x and
// the statistics and uses dz = dy * silu'(z) in place of dy (computed in
// both passes over the slice rather than stored).
//
// CPU twin: tensor/src/cpu/group_norm.rs, the reference these kernels are tested against (tensor/tests/cuda.rs).

#define GN_BLOCK 256

struct GnGeom {
    u32 batch, channels, spatial, groups;
    double eps;
};

// Sums (a, b) over the block; every thread gets the totals.
__device__ void block_sum2(double& a, double& b) {
    __shared__ double sa[GN_BLOCK];
    __shared__ double sb[GN_BLOCK];
    sa[threadIdx.x] = a;
    sb[threadIdx.x] = b;
    __syncthreads();
    for (u32 half = GN_BLOCK / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) {
            sa[threadIdx.x] += sa[threadIdx.x + half];
            sb[threadIdx.x] += sb[threadIdx.x + half];
        }
        __syncthreads();
    }
    a = sa[0];
    b = sb[0];
    __syncthreads();  // the arrays are reused by the next call
}

template <typename A>
__device__ __forceinline__ A gn_silu(A z) {
    return z / (A(1) + m_exp(-z));
}

// d silu / dz = s (1 + z (1 - s)), s = sigmoid(z).
template <typename A>
__device__ __forceinline__ A gn_silu_grad(A z) {
    A s = A(1) / (A(1) + m_exp(-z));
    return s * (A(1) + z * (A(1) - s));
}

// One block per (image, group): blockIdx.x = n * groups + g.
template <typename T, bool SILU>
__device__ void group_norm_fwd(const T* x, const T* gamma, const T* beta, T* y, T* mean, T* rstd, GnGeom p) {
    typedef typename Num<T>::Acc A;
    u32 cpg = p.channels / p.groups;
    u32 len = cpg * p.spatial;
    u32 ng = blockIdx.x;
    u32 g = ng % p.groups;
    const T* xs = x + (size_t)ng * len;
    T* ys = y + (size_t)ng * len;
    double shift = len > 0 ? Num<T>::to_double(xs[0]) : 0.0;
    double s = 0.0, q = 0.0;
    for (u32 i = threadIdx.x; i < len; i += GN_BLOCK) {
        double d = Num<T>::to_double(xs[i]) - shift;
        s += d;
        q += d * d;
    }
    block_sum2(s, q);
    double n = (double)len;
    double m = 0.0, r = 1.0 / sqrt(p.eps);
    if (len > 0) {
        double d = s / n;
        double var = fmax(q / n - d * d, 0.0);
        m = shift + d;
        r = 1.0 / sqrt(var + p.eps);
    }
    if (threadIdx.x == 0) {
        mean[ng] = Num<T>::from_double(m);
        rstd[ng] = Num<T>::from_double(r);
    }
    for (u32 ci = 0; ci < cpg; ++ci) {
        u32 c = g * cpg + ci;
        double a = r * Num<T>::to_double(gamma[c]);
        A a_t = (A)a;
        A b_t = (A)(Num<T>::to_double(beta[c]) - m * a);
        for (u32 i = threadIdx.x; i < p.spatial; i += GN_BLOCK) {
            u32 k = ci * p.spatial + i;
            A z = Num<T>::to_acc(xs[k]) * a_t + b_t;
            ys[k] = Num<T>::from_acc(SILU ? gn_silu(z) : z);
        }
    }
}

// The gradient that reaches the group norm's output: dy itself, or after a
// SiLU dy * silu'(z), with z = x * za + zb rebuilt as the forward computed
// it (the same per-channel a_c, b_c, rounded the same way; `gn_silu_coefs`).
template <typename T, bool SILU>
__device__ __forceinline__ typename Num<T>::Acc gn_out_grad(T dy, T x, typename Num<T>::Acc za, typename Num<T>::Acc zb) {
    typedef typename Num<T>::Acc A;
    A g = Num<T>::to_acc(dy);
    return SILU ? g * gn_silu_grad(Num<T>::to_acc(x) * za + zb) : g;
}

template <typename T>
__device__ __forceinline__ void gn_silu_coefs(const T* gamma, const T* beta, u32 c, double m, double r,
                                              typename Num<T>::Acc& za, typename Num<T>::Acc& zb) {
    typedef typename Num<T>::Acc A;
    double a = r * Num<T>::to_double(gamma[c]);
    za = (A)a;
    zb = (A)(Num<T>::to_double(beta[c]) - m * a);
}

// One block per (image, group). Writes dx, and per (image, channel) the sums
// sum(dy) -> db_nc and sum(dy * xhat) -> dg_nc (doubles). With SILU, dy is
// the gradient after the SiLU and `beta` is read; otherwise beta is unused.
template <typename T, bool SILU>
__device__ void group_norm_bwd(const T* x, const T* gamma, const T* beta, const T* mean, const T* rstd, const T* dy, T* dx,
                               double* db_nc, double* dg_nc, GnGeom p) {
    typedef typename Num<T>::Acc A;
    u32 cpg = p.channels / p.groups;
    u32 len = cpg * p.spatial;
    u32 ng = blockIdx.x;
    u32 n_img = ng / p.groups, g = ng % p.groups;
    const T* xs = x + (size_t)ng * len;
    const T* gs = dy + (size_t)ng * len;
    T* dxs = dx + (size_t)ng * len;
    double m = Num<T>::to_double(mean[ng]), r = Num<T>::to_double(rstd[ng]);
    double sum_gdy = 0.0, sum_gdy_xhat = 0.0;
    for (u32 ci = 0; ci < cpg; ++ci) {
        double s_dy = 0.0, s_dy_xc = 0.0;
        A za = A(0), zb = A(0);
        if (SILU) gn_silu_coefs(gamma, beta, g * cpg + ci, m, r, za, zb);
        for (u32 i = threadIdx.x; i < p.spatial; i += GN_BLOCK) {
            u32 k = ci * p.spatial + i;
            double gv = (double)gn_out_grad<T, SILU>(gs[k], xs[k], za, zb);
            s_dy += gv;
            s_dy_xc += gv * (Num<T>::to_double(xs[k]) - m);
        }
        block_sum2(s_dy, s_dy_xc);
        u32 c = g * cpg + ci;
        double gam = Num<T>::to_double(gamma[c]);
        if (threadIdx.x == 0) {
            db_nc[n_img * p.channels + c] = s_dy;
            dg_nc[n_img * p.channels + c] = s_dy_xc * r;
        }
        sum_gdy += gam * s_dy;
        sum_gdy_xhat += gam * s_dy_xc * r;
    }
    if (len == 0) return;
    // dx = r * (gamma*dy - mean(gamma*dy) - xhat * mean(gamma*dy*xhat))
    //    = (r*gamma_c) * dy + bx * x + c0
    double nn = (double)len;
    double a_mean = sum_gdy / nn, b_mean = sum_gdy_xhat / nn;
    A bx = (A)(-r * r * b_mean);
    A c0 = (A)(r * r * b_mean * m - r * a_mean);
    for (u32 ci = 0; ci < cpg; ++ci) {
        A a_t = (A)(r * Num<T>::to_double(gamma[g * cpg + ci]));
        A za = A(0), zb = A(0);
        if (SILU) gn_silu_coefs(gamma, beta, g * cpg + ci, m, r, za, zb);
        for (u32 i = threadIdx.x; i < p.spatial; i += GN_BLOCK) {
            u32 k = ci * p.spatial + i;
            A gv = gn_out_grad<T, SILU>(gs[k], xs[k], za, zb);
            dxs[k] = Num<T>::from_acc(a_t * gv + bx * Num<T>::to_acc(xs[k]) + c0);
        }
    }
}

// grad_gamma[c] = sum_n dg_nc[n, c], grad_beta[c] = sum_n db_nc[n, c]; one thread per channel.
template <typename T>
__device__ void param_grads(const double* db_nc, const double* dg_nc, T* grad_gamma, T* grad_beta, u32 batch, u32 channels) {
    FOR_EACH(c, channels) {
        double sg = 0.0, sb = 0.0;
        for (u32 n = 0; n < batch; ++n) {
            sg += dg_nc[n * channels + c];
            sb += db_nc[n * channels + c];
        }
        grad_gamma[c] = Num<T>::from_double(sg);
        grad_beta[c] = Num<T>::from_double(sb);
    }
}

#define GN(T, TN) \
    extern "C" __global__ void __launch_bounds__(GN_BLOCK) group_norm_##TN(const T* x, const T* gamma, const T* beta, T* y, T* mean, T* rstd, GnGeom p) { group_norm_fwd<T, false>(x, gamma, beta, y, mean, rstd, p); } \
    extern "C" __global__ void __launch_bounds__(GN_BLOCK) group_norm_silu_##TN(const T* x, const T* gamma, const T* beta, T* y, T* mean, T* rstd, GnGeom p) { group_norm_fwd<T, true>(x, gamma, beta, y, mean, rstd, p); } \
    extern "C" __global__ void __launch_bounds__(GN_BLOCK) group_norm_backward_##TN(const T* x, const T* gamma, const T* beta, const T* mean, const T* rstd, const T* dy, T* dx, double* db_nc, double* dg_nc, GnGeom p) { group_norm_bwd<T, false>(x, gamma, beta, mean, rstd, dy, dx, db_nc, dg_nc, p); } \
    extern "C" __global__ void __launch_bounds__(GN_BLOCK) group_norm_silu_backward_##TN(const T* x, const T* gamma, const T* beta, const T* mean, const T* rstd, const T* dy, T* dx, double* db_nc, double* dg_nc, GnGeom p) { group_norm_bwd<T, true>(x, gamma, beta, mean, rstd, dy, dx, db_nc, dg_nc, p); } \
    extern "C" __global__ void group_norm_param_grads_##TN(const double* db_nc, const double* dg_nc, T* gg, T* gb, u32 batch, u32 channels) { param_grads<T>(db_nc, dg_nc, gg, gb, batch, channels); }
GN(float, f32)
GN(double, f64)
GN(f16, f16)
GN(bf16, bf16)
