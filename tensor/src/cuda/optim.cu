// Fused optimizer updates: one pass over parameter, gradient and moments.
//
// An Adam step written with separate tensor ops reads and writes the
// parameter-sized buffers about a dozen times; fused, each element is read
// once and written once. The formula is PyTorch's (and the CPU backend's):
//   g = grad + wd * p;  p *= 1 - lr * decoupled;  m = b1 m + (1-b1) g;
//   v = b2 v + (1-b2) g^2;  p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps).
// The scalars arrive precomputed in double and are rounded once to the
// compute type, as the CPU backend does.
//
// CPU twin: tensor/src/cpu/optim.rs (adam, ema), the reference these kernels are tested against (tensor/tests/cuda.rs).

struct AdamArgs {
    double beta1, beta2, step_size, bc2_sqrt, eps, weight_decay, decay;
};

template <typename T>
__device__ void adam(T* p, const T* g, T* m, T* v, AdamArgs a, u32 n) {
    typedef typename Num<T>::Acc A;
    A b1 = (A)a.beta1, b2 = (A)a.beta2, step = (A)a.step_size, bc2 = (A)a.bc2_sqrt;
    A eps = (A)a.eps, wd = (A)a.weight_decay, decay = (A)a.decay;
    FOR_EACH(i, n) {
        A pi = Num<T>::to_acc(p[i]);
        A gi = Num<T>::to_acc(g[i]) + wd * pi;
        pi *= decay;
        A mi = b1 * Num<T>::to_acc(m[i]) + (A(1) - b1) * gi;
        A vi = b2 * Num<T>::to_acc(v[i]) + (A(1) - b2) * gi * gi;
        pi -= step * mi / (m_sqrt(vi) / bc2 + eps);
        p[i] = Num<T>::from_acc(pi);
        m[i] = Num<T>::from_acc(mi);
        v[i] = Num<T>::from_acc(vi);
    }
}

// avg = decay * avg + (1 - decay) * src
template <typename T>
__device__ void ema(T* avg, const T* src, double decay, u32 n) {
    typedef typename Num<T>::Acc A;
    A d = (A)decay, rest = (A)(1.0 - decay);
    FOR_EACH(i, n) { avg[i] = Num<T>::from_acc(d * Num<T>::to_acc(avg[i]) + rest * Num<T>::to_acc(src[i])); }
}

#define OPTIM(T, TN) \
    extern "C" __global__ void adam_##TN(T* p, const T* g, T* m, T* v, AdamArgs a, u32 n) { adam<T>(p, g, m, v, a, n); } \
    extern "C" __global__ void ema_##TN(T* avg, const T* src, double decay, u32 n) { ema<T>(avg, src, decay, n); }
OPTIM(float, f32)
OPTIM(double, f64)
OPTIM(f16, f16)
OPTIM(bf16, bf16)
