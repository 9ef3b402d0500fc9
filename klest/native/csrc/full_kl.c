/* klest_full_kl: the exact KL(softmax a || softmax b) of every row of two logit matrices
 * (float64, float32 or bfloat16), in float64, in three passes over each row; called through
 * ctypes by klest.native.bindings.full_kl_rows (which validates every argument first).
 *
 * With p = softmax(a), r = softmax(b), d_v = b_v - a_v and c = lse(b) - lse(a) (lse the
 * log-sum-exp of a row), the log-ratio log r_v - log p_v is t_v = d_v - c and
 *
 *     KL = sum_v p_v k3(t_v),   k3(t) = e^t - 1 - t >= 0,
 *
 * because sum_v p_v (e^{t_v} - 1) = sum_v (r_v - p_v) = 0. Every term is non-negative, and
 * t_v is formed from the logit difference d_v (exact for float32 and bfloat16 inputs; for
 * float64 inputs its rounding error is carried as a second word, TwoSum) minus one per-row
 * constant: no per-entry rounding of two separate log-softmaxes (the digits lost when the
 * policies nearly agree). An error e in c (the rounding of the sums and logs) changes the
 * sum S(c) = sum_v p_v k3(d_v - c) only at second order: S is convex in c with its minimum
 * at the exact c, where it equals KL, and S(c) - KL = k3(c* - c) with c* - c = log1p(G),
 * G = sum_v p_v expm1(t_v) (zero at the exact c), accumulated in the same pass; the kernel
 * returns S - k3(log1p(G)) (G - log1p(G), by series for |G| < 1e-3), or 0 where rounding
 * takes that below 0 (S >= KL >= 0).
 *
 * Pass 1: the row maxima (and the test for NaN or +inf: such a row's KL is NaN, ROW_NONFINITE).
 * Pass 2: e_v = exp(a_v - max a) (kept in `work`), sum e_v, sum exp(b_v - max b).
 * Pass 3: the terms p_v k3(t_v) with expm1 and the Taylor series of k3 near 0 (kernels.c's
 * k3_value), and G. Lanes with p_v = 0 (a_v = -inf, an entry masked out, or e^{a_v - max a}
 * below e^-690, flushed to 0 so that p never goes subnormal) contribute r_v (0 log 0 = 0);
 * lanes where e^{t_v} overflows (t_v > 709.78) contribute (r_v - p_v) - p_v t_v: r_v is then
 * computed from exp(b_v - max b) in that vector only. b_v = -inf < p_v gives +inf.
 *
 * Entries with keep[v] = 0 (a vocabulary mask) count as -inf in both rows; rows with
 * row_keep[i] = 0 are skipped (0, ROW_SKIPPED). A row whose kept entries are all -inf in a
 * (or b) has no softmax: NaN, ROW_A_EMPTY (ROW_B_EMPTY). The SIMD level is kernels.c's.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "vector_math.h"

enum { FULL_KL_F64 = 0, FULL_KL_F32 = 1, FULL_KL_BF16 = 2 };
enum { ROW_OK = 0, ROW_NONFINITE = 1, ROW_A_EMPTY = 2, ROW_B_EMPTY = 3, ROW_SKIPPED = 4 };

int64_t klest_current_simd_level(void); /* kernels.c */

#define KLEST_EXP_FLUSH -690.0 /* exp below this is 0 here (e^-690 ~ 2^-995) */

/* e^x for x <= 0 (and -inf, NaN): x = k ln2 + r as in expm1_value, e^r = 1 + (r + r^2 P(r)),
 * P(r) = sum_{m=0..11} r^m / (m + 2)! (truncation < 5e-18 relative at |r| = ln2 / 2), then
 * 2^k by the exponent bits. Error about 1.5 ulp (the final add, the polynomial's rounding and
 * the dropped rounding error of r). Below KLEST_EXP_FLUSH: 0. */
#define KLEST_EXP_POLY(T, r)                                                                  \
    ({                                                                                       \
        const double e0 = 1.0 / 2.0, e1 = 1.0 / 6.0, e2 = 1.0 / 24.0, e3 = 1.0 / 120.0,      \
                     e4 = 1.0 / 720.0, e5 = 1.0 / 5040.0, e6 = 1.0 / 40320.0,                \
                     e7 = 1.0 / 362880.0, e8 = 1.0 / 3628800.0, e9 = 1.0 / 39916800.0,       \
                     e10 = 1.0 / 479001600.0, e11 = 1.0 / 6227020800.0;                      \
        T r2_ = (r) * (r), r4_ = r2_ * r2_;                                                  \
        T q0_ = (e0 + e1 * (r)) + (e2 + e3 * (r)) * r2_;                                     \
        T q1_ = (e4 + e5 * (r)) + (e6 + e7 * (r)) * r2_;                                     \
        T q2_ = (e8 + e9 * (r)) + (e10 + e11 * (r)) * r2_;                                   \
        1.0 + ((r) + r2_ * (q0_ + (q1_ + q2_ * r4_) * r4_));                                 \
    })

KLEST_INLINE double exp_value(double x) {
    const double ln2_hi = 0x1.62e42feep-1, ln2_lo = 0x1.a39ef35793c76p-33,
                 inv_ln2 = 0x1.71547652b82fep+0, shift = KLEST_EXPM1_SHIFT;
    if (x != x) return x;
    if (x < KLEST_EXP_FLUSH) return 0.0;
    int64_t shift_bits, k;
    memcpy(&shift_bits, &shift, sizeof shift_bits);
    double shifted = x * inv_ln2 + shift, kd = shifted - shift;
    memcpy(&k, &shifted, sizeof k);
    k -= shift_bits;
    double r = (x - kd * ln2_hi) - kd * ln2_lo;
    uint64_t scale_bits = (uint64_t)(k + 1023) << 52;
    double scale;
    memcpy(&scale, &scale_bits, sizeof scale);
    return KLEST_EXP_POLY(double, r) * scale;
}

KLEST_INLINE double load_value(const void *p, int64_t i, int64_t dtype) {
    if (dtype == FULL_KL_F64) return ((const double *)p)[i];
    if (dtype == FULL_KL_F32) return (double)((const float *)p)[i];
    uint32_t bits = (uint32_t)((const uint16_t *)p)[i] << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return (double)f;
}

/* the first word of b - a and, for float64 rows, its rounding error (Knuth's TwoSum) */
KLEST_INLINE double two_diff_low(double b, double a, double hi) {
    double bp = hi + a, ap = hi - bp; /* TwoSum(b, -a): hi = b - a */
    double low = (b - bp) + (-a - ap);
    return low == low ? low : 0.0; /* hi = +-inf: no second word */
}

/* k3(t) from t and expm1(t), as kernels.c's k3_value; correction k3(log1p(G)) = G - log1p(G) */
KLEST_INLINE double log1p_gap(double g) {
    if (fabs(g) < 1e-3) return g * g * (0.5 - g * (1.0 / 3.0 - g * (0.25 - g * 0.2)));
    return g - log1p(g);
}

/* one row's scalar tail (entries from i on), folded into the pass-3 sums */
KLEST_INLINE void tail_terms(const void *a, const void *b, const uint8_t *keep, int64_t i,
                             int64_t n, int64_t dtype, const double *work, double inv_a,
                             double c, double max_b, double inv_b, double *s, double *g) {
    for (; i < n; i++) {
        int kept = keep == NULL || keep[i];
        double x = kept ? load_value(a, i, dtype) : -INFINITY;
        double y = kept ? load_value(b, i, dtype) : -INFINITY;
        double p = work[i] * inv_a;
        double hi = y - x, t = hi - c;
        if (dtype == FULL_KL_F64) t += two_diff_low(y, x, hi);
        double em = expm1_value(t);
        if (p == 0.0 || em == INFINITY) {
            double r = exp_value(y - max_b) * inv_b;
            *s += p == 0.0 ? r : (r - p) - p * t;
            *g += r - p;
        } else {
            *s += p * k3_value(em, t);
            *g += p * em;
        }
    }
}

/* VD x, y: the W entries from i of rows a and b, -inf where keep (if given) is 0 */
#define KLEST_KEPT_PAIR(VD, VL, VB, LOAD, x, y)                                              \
    VD x = LOAD(a, i), y = LOAD(b, i);                                                       \
    if (keep != NULL) {                                                                      \
        VB kb_;                                                                              \
        memcpy(&kb_, keep + i, sizeof kb_);                                                  \
        VL k_ = __builtin_convertvector(kb_, VL) != 0;                                       \
        x = (VD)KLEST_SELECT(VL, k_, x, ninf);                                               \
        y = (VD)KLEST_SELECT(VL, k_, y, ninf);                                               \
    }

/* The row kernel for one SIMD level and one input dtype: VD holds W doubles (VL its masks),
 * VF W floats, VI W uint32, VH W uint16, VB W uint8; LOAD(p, i) gives W doubles. */
#define KLEST_FULL_KL_ROW(SUFFIX, DT, TARGET, VD, VL, VF, VI, VH, VB, W, ALL, LOAD)          \
    TARGET static int full_kl_row_##SUFFIX##_##DT(const void *a, const void *b,              \
                                                  const uint8_t *keep, int64_t n,           \
                                                  double *work, double *out) {              \
        const VD zero = (VD){0}, ninf = zero - INFINITY, pinf = zero + INFINITY;             \
        VD ma = ninf, mb = ninf;                                                            \
        VL bad = (VL){0};                                                                   \
        int64_t i = 0;                                                                      \
        for (; i + W <= n; i += W) {                                                        \
            KLEST_KEPT_PAIR(VD, VL, VB, LOAD, x, y);                                        \
            bad |= (x != x) | (x == pinf) | (y != y) | (y == pinf);                         \
            ma = (VD)KLEST_SELECT(VL, x > ma, x, ma);                                       \
            mb = (VD)KLEST_SELECT(VL, y > mb, y, mb);                                       \
        }                                                                                   \
        double max_a = -INFINITY, max_b = -INFINITY;                                        \
        int any_bad = 0;                                                                    \
        for (int u = 0; u < W; u++) {                                                       \
            any_bad |= bad[u] != 0;                                                         \
            max_a = ma[u] > max_a ? ma[u] : max_a;                                          \
            max_b = mb[u] > max_b ? mb[u] : max_b;                                          \
        }                                                                                   \
        for (int64_t j = i; j < n; j++) {                                                   \
            int kept = keep == NULL || keep[j];                                             \
            double x = kept ? load_value(a, j, DT) : -INFINITY;                             \
            double y = kept ? load_value(b, j, DT) : -INFINITY;                             \
            any_bad |= (x != x) | (x == INFINITY) | (y != y) | (y == INFINITY);             \
            max_a = x > max_a ? x : max_a;                                                  \
            max_b = y > max_b ? y : max_b;                                                  \
        }                                                                                   \
        *out = NAN;                                                                         \
        if (any_bad) return ROW_NONFINITE;                                                  \
        if (max_a == -INFINITY) return ROW_A_EMPTY;                                         \
        if (max_b == -INFINITY) return ROW_B_EMPTY;                                         \
        VD sa = zero, sb = zero;                                                            \
        for (i = 0; i + W <= n; i += W) {                                                   \
            KLEST_KEPT_PAIR(VD, VL, VB, LOAD, x, y);                                        \
            VD ea = exp_vector_##SUFFIX(x - max_a);                                         \
            memcpy(work + i, &ea, sizeof ea);                                               \
            sa += ea;                                                                       \
            sb += exp_vector_##SUFFIX(y - max_b);                                           \
        }                                                                                   \
        double sum_a = 0.0, sum_b = 0.0;                                                    \
        for (int u = 0; u < W; u++) sum_a += sa[u], sum_b += sb[u];                         \
        for (; i < n; i++) {                                                                \
            int kept = keep == NULL || keep[i];                                             \
            double x = kept ? load_value(a, i, DT) : -INFINITY;                             \
            double y = kept ? load_value(b, i, DT) : -INFINITY;                             \
            work[i] = exp_value(x - max_a);                                                 \
            sum_a += work[i];                                                               \
            sum_b += exp_value(y - max_b);                                                  \
        }                                                                                   \
        const double inv_a = 1.0 / sum_a, inv_b = 1.0 / sum_b;                              \
        const double c = (max_b - max_a) + log(sum_b / sum_a);                              \
        VD s = zero, g = zero;                                                              \
        for (i = 0; i + W <= n; i += W) {                                                   \
            KLEST_KEPT_PAIR(VD, VL, VB, LOAD, x, y);                                        \
            VD e;                                                                           \
            memcpy(&e, work + i, sizeof e);                                                 \
            VD p = e * inv_a, hi = y - x, t = hi - c;                                       \
            if (DT == FULL_KL_F64) {                                                        \
                VD bp = hi + x, ap = hi - bp, low = (y - bp) + (-x - ap);                   \
                t = t + (VD)KLEST_SELECT(VL, low == low, low, zero);                        \
            }                                                                               \
            VD em = expm1_vector_##SUFFIX(t);                                               \
            VD k3 = em - t;                                                                 \
            /* the series of k3 near 0, always computed and selected: a branch on it would \
             * be mispredicted in about every other vector (|t| < 0.01 is common) */        \
            VL direct = k3 >= KLEST_K3_SWITCH;                                              \
            VD series = ((((((((1.0 / 362880.0) * t + (1.0 / 40320.0)) * t +                \
                             (1.0 / 5040.0)) * t + (1.0 / 720.0)) * t +                     \
                           (1.0 / 120.0)) * t + (1.0 / 24.0)) * t +                         \
                         (1.0 / 6.0)) * t + 0.5) * t * t;                                   \
            k3 = (VD)KLEST_SELECT(VL, direct, k3, series);                                  \
            VD term = p * k3, gterm = p * em;                                               \
            VL usual = (p != zero) & (em != pinf);                                          \
            if (!ALL(usual)) {                                                              \
                VD r = exp_vector_##SUFFIX(y - max_b) * inv_b;                              \
                VL absent = p == zero;                                                      \
                VD big = (r - p) - p * t;                                                   \
                term = (VD)KLEST_SELECT(VL, usual, term, KLEST_SELECT(VL, absent, r, big)); \
                gterm = (VD)KLEST_SELECT(VL, usual, gterm, r - p);                          \
            }                                                                               \
            s += term;                                                                      \
            g += gterm;                                                                     \
        }                                                                                   \
        double total = 0.0, gap = 0.0;                                                      \
        for (int u = 0; u < W; u++) total += s[u], gap += g[u];                             \
        tail_terms(a, b, keep, i, n, DT, work, inv_a, c, max_b, inv_b, &total, &gap);       \
        double kl = total < INFINITY ? total - log1p_gap(gap) : total;                     \
        *out = kl < 0.0 ? 0.0 : kl; /* S >= KL >= 0: a rounding below 0 is 0 */            \
        return ROW_OK;                                                                      \
    }

#define KLEST_LOAD_F64(VD, VF, VI, VH, W, p, i)                                              \
    ({                                                                                       \
        VD v_;                                                                               \
        memcpy(&v_, (const double *)(p) + (i), sizeof v_);                                  \
        v_;                                                                                  \
    })
#define KLEST_LOAD_F32(VD, VF, VI, VH, W, p, i)                                              \
    ({                                                                                       \
        VF f_;                                                                               \
        memcpy(&f_, (const float *)(p) + (i), sizeof f_);                                    \
        __builtin_convertvector(f_, VD);                                                     \
    })
#define KLEST_LOAD_BF16(VD, VF, VI, VH, W, p, i)                                             \
    ({                                                                                       \
        VH h_;                                                                               \
        memcpy(&h_, (const uint16_t *)(p) + (i), sizeof h_);                                 \
        VI w_ = __builtin_convertvector(h_, VI) << 16;                                       \
        __builtin_convertvector((VF)w_, VD);                                                 \
    })

/* exp_value on W lanes (the same operations; the selects as masks) */
#define KLEST_EXP_VECTOR(SUFFIX, TARGET, VD, VL, VU)                                         \
    TARGET KLEST_INLINE VD exp_vector_##SUFFIX(VD x) {                                      \
        const double ln2_hi = 0x1.62e42feep-1, ln2_lo = 0x1.a39ef35793c76p-33,               \
                     inv_ln2 = 0x1.71547652b82fep+0, shift = KLEST_EXPM1_SHIFT;              \
        int64_t shift_bits;                                                                 \
        memcpy(&shift_bits, &shift, sizeof shift_bits);                                     \
        const VD zero = (VD){0};                                                            \
        VL flush = x < KLEST_EXP_FLUSH;                                                     \
        VD xs = (VD)KLEST_SELECT(VL, flush, zero, x); /* no garbage exponent bits */        \
        VD shifted = xs * inv_ln2 + shift, kd = shifted - shift;                            \
        VL k = (VL)shifted - shift_bits;                                                    \
        VD r = (xs - kd * ln2_hi) - kd * ln2_lo;                                            \
        VD scale = (VD)((VU)(k + 1023) << 52);                                              \
        VD y = KLEST_EXP_POLY(VD, r) * scale;                                               \
        y = (VD)KLEST_SELECT(VL, flush, zero, y);                                           \
        return (VD)KLEST_SELECT(VL, x != x, x, y);                                          \
    }

typedef float v2f __attribute__((vector_size(8)));
typedef float v4f __attribute__((vector_size(16)));
typedef float v8f __attribute__((vector_size(32)));
typedef uint32_t v2i __attribute__((vector_size(8)));
typedef uint32_t v4i __attribute__((vector_size(16)));
typedef uint32_t v8i __attribute__((vector_size(32)));
typedef uint16_t v2h __attribute__((vector_size(4)));
typedef uint16_t v4h __attribute__((vector_size(8)));
typedef uint16_t v8h __attribute__((vector_size(16)));
typedef uint8_t v2b __attribute__((vector_size(2)));
typedef uint8_t v4b __attribute__((vector_size(4)));
typedef uint8_t v8b __attribute__((vector_size(8)));

#define KLEST_FULL_KL_LEVEL(SUFFIX, TARGET, VD, VL, VU, VF, VI, VH, VB, W, ALL)               \
    KLEST_EXPM1_VECTOR(SUFFIX, TARGET, VD, VL, VU, ALL)                                      \
    KLEST_EXP_VECTOR(SUFFIX, TARGET, VD, VL, VU)                                             \
    KLEST_FULL_KL_ROW(SUFFIX, FULL_KL_F64, TARGET, VD, VL, VF, VI, VH, VB, W, ALL,           \
                      LOAD_F64_##SUFFIX)                                                     \
    KLEST_FULL_KL_ROW(SUFFIX, FULL_KL_F32, TARGET, VD, VL, VF, VI, VH, VB, W, ALL,           \
                      LOAD_F32_##SUFFIX)                                                     \
    KLEST_FULL_KL_ROW(SUFFIX, FULL_KL_BF16, TARGET, VD, VL, VF, VI, VH, VB, W, ALL,          \
                      LOAD_BF16_##SUFFIX)

#define LOAD_F64_generic(p, i) KLEST_LOAD_F64(v2d, v2f, v2i, v2h, 2, p, i)
#define LOAD_F32_generic(p, i) KLEST_LOAD_F32(v2d, v2f, v2i, v2h, 2, p, i)
#define LOAD_BF16_generic(p, i) KLEST_LOAD_BF16(v2d, v2f, v2i, v2h, 2, p, i)
KLEST_FULL_KL_LEVEL(generic, , v2d, v2l, v2u, v2f, v2i, v2h, v2b, 2, KLEST_ALL128)
#if defined(__x86_64__) && defined(__GNUC__)
#define KLEST_FULL_KL_X86 1
#define LOAD_F64_avx2(p, i) KLEST_LOAD_F64(v4d, v4f, v4i, v4h, 4, p, i)
#define LOAD_F32_avx2(p, i) KLEST_LOAD_F32(v4d, v4f, v4i, v4h, 4, p, i)
#define LOAD_BF16_avx2(p, i) KLEST_LOAD_BF16(v4d, v4f, v4i, v4h, 4, p, i)
KLEST_FULL_KL_LEVEL(avx2, __attribute__((target("avx2"))), v4d, v4l, v4u, v4f, v4i, v4h, v4b,
                    4, KLEST_ALL256)
#define LOAD_F64_avx512(p, i) KLEST_LOAD_F64(v8d, v8f, v8i, v8h, 8, p, i)
#define LOAD_F32_avx512(p, i) KLEST_LOAD_F32(v8d, v8f, v8i, v8h, 8, p, i)
#define LOAD_BF16_avx512(p, i) KLEST_LOAD_BF16(v8d, v8f, v8i, v8h, 8, p, i)
KLEST_FULL_KL_LEVEL(avx512, __attribute__((target("avx512f"))), v8d, v8l, v8u, v8f, v8i, v8h,
                    v8b, 8, KLEST_ALL512)
#endif

typedef int (*full_kl_row)(const void *, const void *, const uint8_t *, int64_t, double *,
                           double *);
static const full_kl_row row_variants[][3] = {
    {full_kl_row_generic_FULL_KL_F64, full_kl_row_generic_FULL_KL_F32,
     full_kl_row_generic_FULL_KL_BF16},
#ifdef KLEST_FULL_KL_X86
    {full_kl_row_avx2_FULL_KL_F64, full_kl_row_avx2_FULL_KL_F32, full_kl_row_avx2_FULL_KL_BF16},
    {full_kl_row_avx512_FULL_KL_F64, full_kl_row_avx512_FULL_KL_F32,
     full_kl_row_avx512_FULL_KL_BF16},
#endif
};

/* rows x vocab matrices a and b (C order, element type `dtype`); keep: NULL, or a uint8 mask
 * of keep_rows x vocab entries (keep_rows 1: one mask for every row); row_keep: NULL or one
 * uint8 per row; work: vocab doubles; out, status: one per row. Returns the number of rows
 * with status ROW_NONFINITE, ROW_A_EMPTY or ROW_B_EMPTY, or -1 for an unknown dtype. */
int64_t klest_full_kl(const void *a, const void *b, int64_t dtype, int64_t rows, int64_t vocab,
                      const uint8_t *keep, int64_t keep_rows, const uint8_t *row_keep,
                      double *work, double *out, int8_t *status) {
    if (dtype < FULL_KL_F64 || dtype > FULL_KL_BF16) return -1;
    const full_kl_row row = row_variants[klest_current_simd_level()][dtype];
    const int64_t size = dtype == FULL_KL_F64 ? 8 : dtype == FULL_KL_F32 ? 4 : 2;
    int64_t flagged = 0;
    for (int64_t i = 0; i < rows; i++) {
        if (row_keep != NULL && !row_keep[i]) {
            out[i] = 0.0;
            status[i] = ROW_SKIPPED;
            continue;
        }
        const uint8_t *k = keep == NULL ? NULL : keep + (keep_rows == 1 ? 0 : i * vocab);
        status[i] = (int8_t)row((const char *)a + i * vocab * size,
                                (const char *)b + i * vocab * size, k, vocab, work, out + i);
        flagged += status[i] != ROW_OK;
    }
    return flagged;
}
