// Elementwise maps: unary ops, broadcasting binary ops, comparisons, where.
//
// One kernel per dtype serves every op of a family: the op arrives as an
// integer code (the same numbering as `elementwise.rs`) and the switch picks
// the scalar function. Every thread of a launch takes the same branch, so
// the switch costs a few instructions per element of a memory-bound loop.
// Arithmetic happens in Num<T>::Acc (float for f16/bf16/f32, double for f64).
//
// CPU twin: tensor/src/cpu/elementwise.rs, the reference these kernels are tested against (tensor/tests/cuda.rs).

#define U_NEG 0
#define U_EXP 1
#define U_LOG 2
#define U_SQRT 3
#define U_SQR 4
#define U_RECIP 5
#define U_TANH 6
#define U_SIGMOID 7
#define U_SILU 8
#define U_RELU 9
#define U_ABS 10
#define U_SIN 11
#define U_COS 12
#define U_POWF 13
#define U_CLAMP 14
#define U_AFFINE 15
#define U_MAX_SCALAR 16
#define U_MIN_SCALAR 17
#define U_SILU_GRAD 18
#define U_STEP 19

template <typename A>
__device__ __forceinline__ A sigmoid(A x) { return A(1) / (A(1) + m_exp(-x)); }

template <typename A>
__device__ __forceinline__ A apply_unary(u32 op, A x, A p0, A p1) {
    switch (op) {
        case U_NEG: return -x;
        case U_EXP: return m_exp(x);
        case U_LOG: return m_log(x);
        case U_SQRT: return m_sqrt(x);
        case U_SQR: return x * x;
        case U_RECIP: return A(1) / x;
        case U_TANH: return m_tanh(x);
        case U_SIGMOID: return sigmoid(x);
        case U_SILU: return x * sigmoid(x);
        // NaN passes through relu, clamp and the scalar bounds (PyTorch's
        // rule, and the CPU backend's).
        case U_RELU: return x <= A(0) ? A(0) : x;
        case U_ABS: return m_abs(x);
        case U_SIN: return m_sin(x);
        case U_COS: return m_cos(x);
        case U_POWF: return m_pow(x, p0);
        case U_CLAMP: return m_isnan(x) ? x : m_min(m_max(x, p0), p1);
        case U_AFFINE: return x * p0 + p1;
        case U_MAX_SCALAR: return m_isnan(x) ? x : m_max(x, p0);
        case U_MIN_SCALAR: return m_isnan(x) ? x : m_min(x, p0);
        case U_SILU_GRAD: {
            A s = sigmoid(x);
            return s * (A(1) + x * (A(1) - s));
        }
        case U_STEP: return x > A(0) ? A(1) : A(0);
    }
    return x;
}

template <typename T>
__device__ void unary(const T* x, T* y, Strided s, u32 n, u32 op, double p0, double p1) {
    typedef typename Num<T>::Acc A;
    A a0 = (A)p0, a1 = (A)p1;
    FOR_EACH(i, n) {
        u32 off[1];
        strided_offsets<1>(s, i, off);
        y[i] = Num<T>::from_acc(apply_unary<A>(op, Num<T>::to_acc(x[off[0]]), a0, a1));
    }
}

#define B_ADD 0
#define B_SUB 1
#define B_MUL 2
#define B_DIV 3
#define B_MAXIMUM 4
#define B_MINIMUM 5

template <typename A>
__device__ __forceinline__ A apply_binary(u32 op, A a, A b) {
    switch (op) {
        case B_ADD: return a + b;
        case B_SUB: return a - b;
        case B_MUL: return a * b;
        case B_DIV: return a / b;
        // NaN wins, as in PyTorch (and the CPU backend).
        case B_MAXIMUM: return (m_isnan(a) || a > b) ? a : b;
        case B_MINIMUM: return (m_isnan(a) || a < b) ? a : b;
    }
    return a;
}

#define C_EQ 0
#define C_NE 1
#define C_LT 2
#define C_LE 3
#define C_GT 4
#define C_GE 5

template <typename A>
__device__ __forceinline__ bool apply_cmp(u32 op, A a, A b) {
    switch (op) {
        case C_EQ: return a == b;
        case C_NE: return a != b;
        case C_LT: return a < b;
        case C_LE: return a <= b;
        case C_GT: return a > b;
        case C_GE: return a >= b;
    }
    return false;
}

// Operand 0 of `s` is the lhs, operand 1 the rhs; the output is contiguous.
template <typename T>
__device__ void binary(const T* a, const T* b, T* out, Strided s, u32 n, u32 op) {
    FOR_EACH(i, n) {
        u32 off[2];
        strided_offsets<2>(s, i, off);
        out[i] = Num<T>::from_acc(apply_binary(op, Num<T>::to_acc(a[off[0]]), Num<T>::to_acc(b[off[1]])));
    }
}

template <typename T>
__device__ void cmp(const T* a, const T* b, T* out, Strided s, u32 n, u32 op) {
    typedef typename Num<T>::Acc A;
    FOR_EACH(i, n) {
        u32 off[2];
        strided_offsets<2>(s, i, off);
        bool holds = apply_cmp(op, Num<T>::to_acc(a[off[0]]), Num<T>::to_acc(b[off[1]]));
        out[i] = Num<T>::from_acc(holds ? A(1) : A(0));
    }
}

// Operands: 0 the mask (nonzero = true, NaN counts as nonzero), 1 on_true, 2 on_false.
template <typename M, typename T>
__device__ void where_cond(const M* mask, const T* t, const T* f, T* out, Strided s, u32 n) {
    typedef typename Num<M>::Acc A;
    FOR_EACH(i, n) {
        u32 off[3];
        strided_offsets<3>(s, i, off);
        out[i] = Num<M>::to_acc(mask[off[0]]) != A(0) ? t[off[1]] : f[off[2]];
    }
}

#define FLOAT_OPS(T, TN) \
    extern "C" __global__ void unary_##TN(const T* x, T* y, Strided s, u32 n, u32 op, double p0, double p1) { unary<T>(x, y, s, n, op, p0, p1); } \
    extern "C" __global__ void binary_##TN(const T* a, const T* b, T* out, Strided s, u32 n, u32 op) { binary<T>(a, b, out, s, n, op); } \
    extern "C" __global__ void cmp_##TN(const T* a, const T* b, T* out, Strided s, u32 n, u32 op) { cmp<T>(a, b, out, s, n, op); }
FLOAT_OPS(float, f32)
FLOAT_OPS(double, f64)
FLOAT_OPS(f16, f16)
FLOAT_OPS(bf16, bf16)

#define WHERE(M, MN, T, TN) \
    extern "C" __global__ void where_##MN##_##TN(const M* m, const T* t, const T* f, T* out, Strided s, u32 n) { where_cond<M, T>(m, t, f, out, s, n); }
#define WHERE_FOR_MASK(M, MN) \
    WHERE(M, MN, float, f32) WHERE(M, MN, double, f64) WHERE(M, MN, f16, f16) WHERE(M, MN, bf16, bf16) WHERE(M, MN, u32, u32)
WHERE_FOR_MASK(float, f32)
WHERE_FOR_MASK(double, f64)
WHERE_FOR_MASK(f16, f16)
WHERE_FOR_MASK(bf16, bf16)
WHERE_FOR_MASK(u32, u32)
