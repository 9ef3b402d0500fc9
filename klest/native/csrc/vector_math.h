/* klest's vector math, shared by kernels.c and full_kl.c: k3 from expm1, expm1, log and
 * log1p as scalars and as W-lane vectors (GCC vector extensions), the lane typedefs, and the
 * all-lanes tests. Every function is static inline: each translation unit that includes this
 * header instantiates the SIMD variants it uses. */
#ifndef KLEST_VECTOR_MATH_H
#define KLEST_VECTOR_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifndef KLEST_INLINE
#define KLEST_INLINE static inline __attribute__((always_inline))
#endif

/* ---------------------------------------------------------------------------------------- */
/* k3                                                                                        */
/* ---------------------------------------------------------------------------------------- */

/* The compiled hot path of klest._special.expm1_minus, bit for bit (tests/test_special.py):
 * its one cut-off EXPM1_MINUS_SWITCH and series EXPM1_MINUS_SERIES. exp(l) - 1 - l < 5.02e-5
 * exactly when |l| < ~0.01: there the subtraction loses digits and the Taylor series
 * sum_{n=2..9} l^n / n! takes over. The same test catches NaN (from l = +inf, where the
 * series gives inf, or from NaN). Both are computed and one selected, so the loop
 * vectorises. */
#define KLEST_K3_SWITCH 5.02e-5 /* = klest._special.EXPM1_MINUS_SWITCH */
KLEST_INLINE double k3_value(double expm1_l, double l) {
    const double c9 = 1.0 / 362880.0, c8 = 1.0 / 40320.0, c7 = 1.0 / 5040.0,
                 c6 = 1.0 / 720.0, c5 = 1.0 / 120.0, c4 = 1.0 / 24.0, c3 = 1.0 / 6.0,
                 c2 = 1.0 / 2.0;
    double direct = expm1_l - l;
    double series =
        (((((((c9 * l + c8) * l + c7) * l + c6) * l + c5) * l + c4) * l + c3) * l + c2) * l * l;
    return direct >= KLEST_K3_SWITCH ? direct : series;
}

/* ---------------------------------------------------------------------------------------- */
/* expm1                                                                                     */
/* ---------------------------------------------------------------------------------------- */

/* klest's own e^x - 1, so that the engine's speed and bits depend neither on NumPy's build
 * (its expm1 is vectorised only with AVX-512: 14 ns per value on an AVX2 CPU) nor on libm.
 * fdlibm's method (Sun 1993, FreeBSD msun s_expm1.c, error < 1 ulp by its analysis), made
 * branch-free so that the loop vectorises, and short in latency (the loop is bound by its
 * dependency chain, not by the number of operations):
 *  - x = k ln2 + r + c, |r| <= ln2/2 (+ rounding): k = round(x / ln2) by the 1.5 * 2^52
 *    shifter, which also gives k's bits; ln2 in two parts (k * ln2_hi exact for |k| < 2^21),
 *    c the rounding error of r = hi - lo.
 *  - fdlibm's e (expm1(r) = r + r^2/2 - r e) as e = -r^2 S(r), S(r) = sum_m r^m / (m + 3)!
 *    for m = 0..11 (truncation < 2.3e-18 relative at |r| = ln2/2), by Estrin's scheme
 *    instead of fdlibm's rational form: no division.
 *  - fdlibm's reconstructions (2^k (1 + expm1(r)) - 1 in a rounding order chosen by k) as
 *    one expression ((u - (ek + s)) + v) * 2^k with u, s, v selected by k: u = r (r + 0.5
 *    for k = 1 and r < -0.25), s = 2^-k for k = 20..56 (else 0), v = 1 - 2^-k (exact)
 *    below k = 20 (0 in the r + 0.5 case), else 1. For k = -1..56 these are fdlibm's
 *    operations for that k, up to exact scalings; for k <= -2 the exact 1 - 2^-k replaces
 *    fdlibm's "+ 1, scale, - 1" (one rounding fewer), and past k = 56 fdlibm's final - 1
 *    is below half an ulp.
 *  - |x| < 2^-54 (subnormals, -0.0): x; x > 709.78...: inf; x <= -38.8 (56 ln2): -1; NaN:
 *    itself. Outside [-38.8, 709.78] the arithmetic above sees garbage (inf, NaN) that
 *    these selects discard.
 * 2^k is built from k's bits as 2 * 2^(k - 1) (exact for k = 1024 too). klest._special.expm1
 * is the same operations in the same order in NumPy (-ffp-contract=off: no FMA), hence the
 * same bits at every SIMD level (tests/test_kernel_math.py, also against mpmath). */
#define KLEST_EXPM1_SHIFT 0x1.8p52 /* adding it rounds |v| < 2^51 to an integer */
KLEST_INLINE double expm1_value(double x) {
    const double ln2_hi = 0x1.62e42feep-1, ln2_lo = 0x1.a39ef35793c76p-33,
                 inv_ln2 = 0x1.71547652b82fep+0, overflow = 0x1.62e42fefa39efp+9;
    const double c0 = 1.0 / 6.0, c1 = 1.0 / 24.0, c2 = 1.0 / 120.0,
                 c3 = 1.0 / 720.0, c4 = 1.0 / 5040.0, c5 = 1.0 / 40320.0,
                 c6 = 1.0 / 362880.0, c7 = 1.0 / 3628800.0, c8 = 1.0 / 39916800.0,
                 c9 = 1.0 / 479001600.0, c10 = 1.0 / 6227020800.0, c11 = 1.0 / 87178291200.0;
    int64_t shift_bits, k;
    const double shift = KLEST_EXPM1_SHIFT;
    memcpy(&shift_bits, &shift, sizeof shift_bits);
    double shifted = x * inv_ln2 + shift;
    double kd = shifted - shift;
    memcpy(&k, &shifted, sizeof k);
    k -= shift_bits;
    double hi = x - kd * ln2_hi, lo = kd * ln2_lo;
    double r = hi - lo;
    double c = (hi - r) - lo;
    double r2 = r * r, r4 = r2 * r2, hxs = 0.5 * r2;
    double q0 = (c0 + c1 * r) + (c2 + c3 * r) * r2, q1 = (c4 + c5 * r) + (c6 + c7 * r) * r2,
           q2 = (c8 + c9 * r) + (c10 + c11 * r) * r2;
    double e = -r2 * (q0 + (q1 + q2 * r4) * r4);
    double ek = (r * (e - c) - c) - hxs;
    uint64_t half_scale_bits = (uint64_t)(k + 1022) << 52;
    uint64_t inverse_bits = (uint64_t)(1023 - k) << 52;
    double half_scale, inverse; /* 2^(k - 1), 2^-k */
    memcpy(&half_scale, &half_scale_bits, sizeof half_scale);
    memcpy(&inverse, &inverse_bits, sizeof inverse);
    /* v = 1 - 2^-k (exact) below k = 20; there and above, v = 1 and s = 2^-k joins ek first
     * (fdlibm's k = 20..56 form; past k = 56 s = 0: -2^-k is far below an ulp) */
    double v = kd >= 20.0 ? 1.0 : 1.0 - inverse;
    double s = kd >= 20.0 ? inverse : 0.0;
    s = kd > 56.0 ? 0.0 : s;
    double u_low = r < -0.25 ? r + 0.5 : r, v_low = r < -0.25 ? 0.0 : v;
    double u = kd == 1.0 ? u_low : r; /* k = 1: 2 ((r + 0.5) - ek) or 2 ((r - ek) + 0.5) */
    v = kd == 1.0 ? v_low : v;
    double y = ((u - (ek + s)) + v) * 2.0 * half_scale;
    y = fabs(x) < 0x1p-54 ? x : y;
    y = x > overflow ? INFINITY : y;
    y = x <= -0x1.3687ap+5 ? -1.0 : y;
    return x != x ? x : y;
}

/* ---------------------------------------------------------------------------------------- */
/* log and log1p                                                                             */
/* ---------------------------------------------------------------------------------------- */

/* klest's own log and log1p, for the same reason as expm1 (NumPy's are vectorised only with
 * AVX-512: 4.4 and 10-15 ns per value on an AVX2 CPU). fdlibm's method as musl writes it
 * without branches in the arithmetic (FreeBSD msun e_log.c / s_log1p.c; musl log.c /
 * log1p.c, error < 1 ulp by their analysis), made branch-free in the reduction too:
 *  - x = 2^k (1 + f), 1 + f in [sqrt(2)/2, sqrt(2)): adding (0x3ff00000 - 0x3fe6a09e) << 32
 *    to x's bits carries into the exponent exactly when the mantissa is >= sqrt(2), then
 *    1 + f = the mantissa bits + 0x3fe6a09e << 32. k comes out as a double without an
 *    int -> double conversion (which AVX2 lacks): the exponent field or'ed into 2^52's bits,
 *    minus 2^52 + 1023 (exact).
 *  - log(1 + f) = f - f^2/2 + s (f^2/2 + R), s = f / (2 + f), R = s^2 P(s^2) (fdlibm's Lg1..7),
 *    and log x = that + k ln2 (ln2 in two parts, k ln2_hi exact), summed in musl's order:
 *    ((((s (hfsq + R) + (k ln2_lo + c)) - hfsq) + f) + k ln2_hi), c = 0 for log.
 *  - log: subnormals are scaled by 2^54 first (k - 54); 0: -inf; x < 0: NaN; +inf: inf; NaN:
 *    itself. log1p: 1 + x is reduced as above, with fdlibm's correction c ~ log(1 + x) -
 *    log(u) of u = 1 + x's rounding ((1 - (u - x)) / u for k >= 2, (x - (u - 1)) / u below,
 *    0 from k = 54); x in (-0.2929, 0.4142) (where 1 + x would lose x's low bits) is f
 *    itself, k = 0, c = 0; |x| < 2^-53 (subnormals, -0.0): x; -1: -inf; x < -1: NaN; +inf:
 *    inf; NaN: itself.
 * klest._special.log / log1p are the same operations in the same order in NumPy, hence the
 * same bits at every SIMD level (tests/test_kernel_log.py, also against mpmath). The
 * polynomial is one macro, for a double and for a vector alike. */
#define KLEST_LOG_CARRY 0x00095f6200000000ULL /* (0x3ff00000 - 0x3fe6a09e) << 32 */
#define KLEST_LOG_BASE 0x3fe6a09e00000000ULL  /* sqrt(2)/2's high word, << 32 */
#define KLEST_LOG_MANTISSA 0x000fffffffffffffULL
#define KLEST_LOG_TWO52 0x4330000000000000ULL /* 2^52 */
#define KLEST_LOG_K_BIAS 0x1.00000000003ffp52 /* 2^52 + 1023 */
/* s = f / (2 + f), a division: a division-free reciprocal (degree-4 fit and two Newton
 * steps, s within 2 ulp) was measured slower at every level (AVX-512 log 1.87 against 1.28 ns
 * per value), and so was a two-pass loop that issues a chunk's divisions first */
#define KLEST_LOG_S(T, f) ((f) / (2.0 + (f)))
/* log(1 + f) + k ln2 + c from f, s = KLEST_LOG_S(f), k (dk) and c */
#define KLEST_LOG_POLY(T, f, s, dk, c)                                                        \
    ({                                                                                       \
        const double lg1 = 0x1.5555555555593p-1, lg2 = 0x1.999999997fa04p-2,                 \
                     lg3 = 0x1.2492494229359p-2, lg4 = 0x1.c71c51d8e78afp-3,                 \
                     lg5 = 0x1.7466496cb03dep-3, lg6 = 0x1.39a09d078c69fp-3,                 \
                     lg7 = 0x1.2f112df3e5244p-3, ln2_hi = 0x1.62e42feep-1,                   \
                     ln2_lo = 0x1.a39ef35793c76p-33;                                         \
        T hfsq_ = 0.5 * (f) * (f), z_ = (s) * (s), w_ = z_ * z_;                             \
        T t1_ = w_ * (lg2 + w_ * (lg4 + w_ * lg6));                                          \
        T t2_ = z_ * (lg1 + w_ * (lg3 + w_ * (lg5 + w_ * lg7)));                             \
        T r_ = t2_ + t1_;                                                                    \
        ((((s) * (hfsq_ + r_) + ((dk) * ln2_lo + (c))) - hfsq_) + (f)) + (dk) * ln2_hi;      \
    })

/* (f, k) of a positive normal x: x = 2^k (1 + f), 1 + f in [sqrt(2)/2, sqrt(2)) */
KLEST_INLINE void log_reduce(double x, double *f, double *dk) {
    uint64_t t, mantissa, exponent;
    memcpy(&t, &x, sizeof t);
    t += KLEST_LOG_CARRY;
    mantissa = (t & KLEST_LOG_MANTISSA) + KLEST_LOG_BASE;
    exponent = (t >> 52) | KLEST_LOG_TWO52;
    double m, e;
    memcpy(&m, &mantissa, sizeof m);
    memcpy(&e, &exponent, sizeof e);
    *f = m - 1.0;
    *dk = e - KLEST_LOG_K_BIAS;
}

KLEST_INLINE double log_value(double x) {
    int subnormal = x < 0x1p-1022;
    double f, dk;
    log_reduce(subnormal ? x * 0x1p54 : x, &f, &dk);
    dk = dk - (subnormal ? 54.0 : 0.0);
    double s = KLEST_LOG_S(double, f);
    double y = KLEST_LOG_POLY(double, f, s, dk, 0.0);
    y = x > 0x1.fffffffffffffp1023 ? x : y;
    y = x == 0.0 ? -INFINITY : y;
    y = x < 0.0 ? NAN : y;
    return x != x ? x : y;
}

#define KLEST_LOG1P_SMALL_HI 0x1.a827ap-2  /* x < this and > -0x1.2bec5p-2: f = x, k = 0 */
#define KLEST_LOG1P_SMALL_LO -0x1.2bec5p-2
KLEST_INLINE double log1p_value(double x) {
    double u = 1.0 + x, f_u, dk_u;
    log_reduce(u, &f_u, &dk_u);
    double c = (dk_u >= 2.0 ? 1.0 - (u - x) : x - (u - 1.0)) / u;
    c = dk_u >= 54.0 ? 0.0 : c;
    int small = (x < KLEST_LOG1P_SMALL_HI) & (x > KLEST_LOG1P_SMALL_LO);
    double f = small ? x : f_u, dk = small ? 0.0 : dk_u;
    c = small ? 0.0 : c;
    double y = KLEST_LOG_POLY(double, f, KLEST_LOG_S(double, f), dk, c);
    y = fabs(x) < 0x1p-53 ? x : y;
    y = x > 0x1.fffffffffffffp1023 ? x : y;
    y = x == -1.0 ? -INFINITY : y;
    y = x < -1.0 ? NAN : y;
    return x != x ? x : y;
}


typedef double v2d __attribute__((vector_size(16)));
typedef int64_t v2l __attribute__((vector_size(16)));
typedef double v4d __attribute__((vector_size(32)));
typedef int64_t v4l __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));
typedef int64_t v8l __attribute__((vector_size(64)));
typedef uint64_t v2u __attribute__((vector_size(16)));
typedef uint64_t v4u __attribute__((vector_size(32)));
typedef uint64_t v8u __attribute__((vector_size(64)));

KLEST_INLINE double combine_lanes(const double *s) {
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* expm1_value on W lanes at once: the same IEEE operations in the same order, selects as
 * bit masks (VL: the comparison masks; VU: unsigned lanes for the exponent shifts), so the
 * bits are expm1_value's in every lane. */
/* tile_NAME_SUFFIX(x, out, n): out[i] = NAME(x[i]) for i < n (in place allowed), W values
 * at a time by NAME_vector_SUFFIX, the rest by NAME_value: the same bits either way. */
#define KLEST_ELEMENTWISE(NAME, SUFFIX, TARGET, VD, W)                                       \
    TARGET static void tile_##NAME##_##SUFFIX(const double *x, double *out, int64_t n) {     \
        int64_t i = 0;                                                                      \
        for (; i + W <= n; i += W) {                                                        \
            VD v;                                                                           \
            memcpy(&v, x + i, sizeof v);                                                    \
            v = NAME##_vector_##SUFFIX(v);                                                  \
            memcpy(out + i, &v, sizeof v);                                                  \
        }                                                                                   \
        for (; i < n; i++) out[i] = NAME##_value(x[i]);                                     \
    }
#define KLEST_SELECT(VL, m, a, b) (((VL)(a) & (m)) | ((VL)(b) & ~(m)))
#define KLEST_EXPM1_VECTOR(SUFFIX, TARGET, VD, VL, VU, ALL)                                  \
    TARGET KLEST_INLINE VD expm1_vector_##SUFFIX(VD x) {                                    \
        const double ln2_hi = 0x1.62e42feep-1, ln2_lo = 0x1.a39ef35793c76p-33,               \
                     inv_ln2 = 0x1.71547652b82fep+0, overflow = 0x1.62e42fefa39efp+9;        \
        const double c0 = 1.0 / 6.0, c1 = 1.0 / 24.0, c2 = 1.0 / 120.0, c3 = 1.0 / 720.0,    \
                     c4 = 1.0 / 5040.0, c5 = 1.0 / 40320.0, c6 = 1.0 / 362880.0,             \
                     c7 = 1.0 / 3628800.0, c8 = 1.0 / 39916800.0, c9 = 1.0 / 479001600.0,    \
                     c10 = 1.0 / 6227020800.0, c11 = 1.0 / 87178291200.0;                    \
        const double shift = KLEST_EXPM1_SHIFT;                                             \
        int64_t shift_bits;                                                                 \
        memcpy(&shift_bits, &shift, sizeof shift_bits);                                     \
        const VD zero = (VD){0}, one = zero + 1.0;                                          \
        VD shifted = x * inv_ln2 + shift;                                                   \
        VD kd = shifted - shift;                                                            \
        VL k = (VL)shifted - shift_bits;                                                    \
        VD hi = x - kd * ln2_hi, lo = kd * ln2_lo;                                          \
        VD r = hi - lo;                                                                     \
        VD c = (hi - r) - lo;                                                               \
        VD r2 = r * r, r4 = r2 * r2, hxs = 0.5 * r2;                                        \
        VD q0 = (c0 + c1 * r) + (c2 + c3 * r) * r2, q1 = (c4 + c5 * r) + (c6 + c7 * r) * r2,  \
           q2 = (c8 + c9 * r) + (c10 + c11 * r) * r2;                                       \
        VD e = -r2 * (q0 + (q1 + q2 * r4) * r4);                                            \
        VD ek = (r * (e - c) - c) - hxs;                                                    \
        VD inverse = (VD)((VU)(1023 - k) << 52);                                            \
        VD ax = (VD)((VL)x & 0x7fffffffffffffffLL);                                         \
        /* The usual vector, every lane in [2^-54, 13.5) in size (NaN fails the test), with  \
         * the same bits in fewer operations: k is in [-19, 19], so s = 0 and v = 1 - 2^-k,  \
         * or 0 with u = r + 0.5 where k = 1 and r < -0.25; u - ek is u - (ek + 0) (they     \
         * differ only for ek = u = -0, but u = r = x != 0 at k = 0, and v != 0 at every     \
         * other k); and y * 2 * 2^(k - 1) is y * 2^k, both exact here. */                  \
        if (ALL((ax >= 0x1p-54) & (ax < 13.5))) {                                           \
            VL low = (kd == 1.0) & (r < -0.25);                                             \
            VD u = (VD)KLEST_SELECT(VL, low, r + 0.5, r);                                   \
            VD v = (VD)KLEST_SELECT(VL, low, zero, one - inverse);                          \
            return ((u - ek) + v) * (VD)((VU)(k + 1023) << 52);                             \
        }                                                                                   \
        VD half_scale = (VD)((VU)(k + 1022) << 52);                                         \
        VL big = kd >= 20.0, huge = kd > 56.0, low_r = r < -0.25, k_one = kd == 1.0;        \
        VD v = (VD)KLEST_SELECT(VL, big, one, one - inverse);                               \
        VD s = (VD)KLEST_SELECT(VL, big, inverse, zero);                                    \
        s = (VD)KLEST_SELECT(VL, huge, zero, s);                                            \
        VD u_low = (VD)KLEST_SELECT(VL, low_r, r + 0.5, r);                                 \
        VD v_low = (VD)KLEST_SELECT(VL, low_r, zero, v);                                    \
        VD u = (VD)KLEST_SELECT(VL, k_one, u_low, r);                                       \
        v = (VD)KLEST_SELECT(VL, k_one, v_low, v);                                          \
        VD y = ((u - (ek + s)) + v) * 2.0 * half_scale;                                     \
        /* every lane in [2^-54, 709.78] in size (NaN fails the tests) */                   \
        if (ALL((ax >= 0x1p-54) & (x <= overflow) & (x > -0x1.3687ap+5))) return y;         \
        y = (VD)KLEST_SELECT(VL, ax < 0x1p-54, x, y);                                       \
        y = (VD)KLEST_SELECT(VL, x > overflow, zero + INFINITY, y);                         \
        y = (VD)KLEST_SELECT(VL, x <= -0x1.3687ap+5, zero - 1.0, y);                        \
        return (VD)KLEST_SELECT(VL, x != x, x, y);                                          \
    }

/* log_value and log1p_value on W lanes at once (as KLEST_EXPM1_VECTOR: the same IEEE
 * operations in the same order, selects as bit masks), and their elementwise tile loops.
 * The usual vector (every lane a positive normal number; for log1p in (-1, DBL_MAX] and
 * not below 2^-53 in size) returns before the selects, whose results it would not change. */
#define KLEST_LOG_VECTOR(SUFFIX, TARGET, VD, VL, VU, W, ALL)                                 \
    TARGET KLEST_INLINE void log_reduce_##SUFFIX(VD x, VD *f, VD *dk) {                     \
        VU t = (VU)x + KLEST_LOG_CARRY;                                                     \
        VD m = (VD)((t & KLEST_LOG_MANTISSA) + KLEST_LOG_BASE);                             \
        VD e = (VD)((t >> 52) | KLEST_LOG_TWO52);                                           \
        *f = m - 1.0;                                                                       \
        *dk = e - KLEST_LOG_K_BIAS;                                                         \
    }                                                                                       \
                                                                                            \
    TARGET KLEST_INLINE VD log_vector_##SUFFIX(VD x) {                                      \
        const VD zero = (VD){0};                                                            \
        VD f, dk;                                                                           \
        if (ALL((x >= 0x1p-1022) & (x <= 0x1.fffffffffffffp1023))) {                        \
            log_reduce_##SUFFIX(x, &f, &dk);                                                \
            VD s = KLEST_LOG_S(VD, f);                                                      \
            return KLEST_LOG_POLY(VD, f, s, dk, 0.0);                                       \
        }                                                                                   \
        VL subnormal = x < 0x1p-1022;                                                       \
        log_reduce_##SUFFIX((VD)KLEST_SELECT(VL, subnormal, x * 0x1p54, x), &f, &dk);       \
        dk = dk - (VD)KLEST_SELECT(VL, subnormal, zero + 54.0, zero);                       \
        VD s = KLEST_LOG_S(VD, f);                                                          \
        VD y = KLEST_LOG_POLY(VD, f, s, dk, 0.0);                                           \
        y = (VD)KLEST_SELECT(VL, x > 0x1.fffffffffffffp1023, x, y);                         \
        y = (VD)KLEST_SELECT(VL, x == 0.0, zero - INFINITY, y);                             \
        y = (VD)KLEST_SELECT(VL, x < 0.0, zero + NAN, y);                                   \
        return (VD)KLEST_SELECT(VL, x != x, x, y);                                          \
    }                                                                                       \
                                                                                            \
    TARGET KLEST_INLINE VD log1p_vector_##SUFFIX(VD x) {                                    \
        const VD zero = (VD){0};                                                            \
        VD u = 1.0 + x, f_u, dk_u;                                                          \
        log_reduce_##SUFFIX(u, &f_u, &dk_u);                                                \
        VD c = (VD)KLEST_SELECT(VL, dk_u >= 2.0, 1.0 - (u - x), x - (u - 1.0)) / u;         \
        c = (VD)KLEST_SELECT(VL, dk_u >= 54.0, zero, c);                                    \
        VL small = (x < KLEST_LOG1P_SMALL_HI) & (x > KLEST_LOG1P_SMALL_LO);                 \
        VD f = (VD)KLEST_SELECT(VL, small, x, f_u);                                         \
        VD dk = (VD)KLEST_SELECT(VL, small, zero, dk_u);                                    \
        c = (VD)KLEST_SELECT(VL, small, zero, c);                                           \
        VD y = KLEST_LOG_POLY(VD, f, KLEST_LOG_S(VD, f), dk, c);                            \
        VD ax = (VD)((VL)x & 0x7fffffffffffffffLL);                                         \
        if (ALL((ax >= 0x1p-53) & (x > -1.0) & (x <= 0x1.fffffffffffffp1023))) return y;    \
        y = (VD)KLEST_SELECT(VL, ax < 0x1p-53, x, y);                                       \
        y = (VD)KLEST_SELECT(VL, x > 0x1.fffffffffffffp1023, x, y);                         \
        y = (VD)KLEST_SELECT(VL, x == -1.0, zero - INFINITY, y);                            \
        y = (VD)KLEST_SELECT(VL, x < -1.0, zero + NAN, y);                                  \
        return (VD)KLEST_SELECT(VL, x != x, x, y);                                          \
    }                                                                                       \
                                                                                            \
    KLEST_ELEMENTWISE(log, SUFFIX, TARGET, VD, W)                                           \
                                                                                            \
    KLEST_ELEMENTWISE(log1p, SUFFIX, TARGET, VD, W)

/* ALL(m): every lane of the comparison mask m is true (movmskpd, vptestmq) */
#define KLEST_ALL128(m) (__builtin_ia32_movmskpd((v2d)(m)) == 0x3)
#define KLEST_ALL256(m) (__builtin_ia32_movmskpd256((v4d)(m)) == 0xf)
typedef long long v8ll __attribute__((vector_size(64)));
#define KLEST_ALL512(m) (__builtin_ia32_ptestmq512((v8ll)(m), (v8ll)(m), 0xff) == 0xff)

#endif /* KLEST_VECTOR_MATH_H */
