/* klest's compiled kernels, called through ctypes (klest/native/bindings.py).
 *
 *  - klest_fill_normal: NumPy's Generator(PCG64).standard_normal, value for value: the PCG64
 *    step (128-bit LCG, XSL-RR output) and NumPy's ziggurat, inlined into one loop.
 *  - klest_block_stats: the engine's one pass over blocks whose series are all computed
 *    (k1, k2, k3, r - 1): for a Gaussian pair the draws too, then expm1, the series and
 *    their statistics, tile by tile (klest_accumulate's arithmetic, the same bits).
 *  - klest_accumulate: the engine's per-block statistics. A block is cut into tiles of
 *    KLEST_TILE draws that stay in the L1 cache; each tile's mean, central power sums,
 *    extremes, negatives and co-moments are computed there (two-pass) and merged into a
 *    running accumulator in tile order (Chan et al.; Pebay 2008 for M3 and M4).
 *  - klest_k3_from_expm1: exp(l) - 1 - l from l and expm1(l), with a Taylor series where the
 *    subtraction would lose digits.
 *  - klest_expm1: klest's own e^x - 1 (fdlibm's algorithm, branch-free: it vectorises), the
 *    same bits as klest._special.expm1 in NumPy, at every SIMD level.
 *  - klest_log, klest_log1p: klest's own log and log1p, likewise (klest._special.log, log1p).
 *
 *  - klest_categorical_inverse_cdf: searchsorted(cdf, u, side="right") by guide table.
 *
 * Sums run over eight interleaved partial sums combined in a fixed order, held in SSE2, AVX2
 * or AVX-512 registers as the CPU allows: the same bits whatever the SIMD width, for any
 * worker count. Built with -ffp-contract=off (a*b + c is always a multiply then an add, as
 * in NumPy) and -fno-trapping-math (selects vectorise; no result depends on FP flags).
 */
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ziggurat_tables.h"

#define KLEST_TILE 1024
#define KLEST_INLINE static inline __attribute__((always_inline))

/* NONFINITE counts every non-finite value; POSINF and NEGINF the +inf and -inf among them
 * (the NaNs are the rest). */
enum { COUNT, MEAN, M2, M3, M4, MINIMUM, MAXIMUM, NEGATIVE, NONFINITE, POSINF, NEGINF, NFIELDS };

/* How a series of the block is given: as an array, or computed here, tile by tile, from the
 * log-ratio l and expm1(l) -- bit for bit what klest's NumPy estimators return -- so that
 * the values never leave the L1 cache. */
enum { SERIES_GIVEN = 0, SERIES_NEGATE = 1, SERIES_HALF_SQUARE = 2, SERIES_K3 = 3, SERIES_EXPM1 = 4 };

/* ---------------------------------------------------------------------------------------- */
/* PCG64 and the ziggurat                                                                    */
/* ---------------------------------------------------------------------------------------- */

typedef unsigned __int128 u128;

KLEST_INLINE uint64_t pcg64_next(u128 *state, u128 inc) {
    static const u128 multiplier =
        ((u128)2549297995355413924ULL << 64) | (u128)4865540595714422341ULL;
    *state = *state * multiplier + inc;
    uint64_t value = (uint64_t)(*state >> 64) ^ (uint64_t)*state;
    unsigned rot = (unsigned)(*state >> 122);
    return (value >> rot) | (value << ((-rot) & 63u));
}

KLEST_INLINE double pcg64_next_double(u128 *state, u128 inc) {
    return (double)(int64_t)(pcg64_next(state, inc) >> 11) * (1.0 / 9007199254740992.0);
}

/* The ziggurat's rare branches (0.7% of draws): the tail beyond r (Marsaglia's method) and
 * the wedges. Kept out of line so that the common path keeps everything in registers. */
typedef struct {
    u128 state;
    double x;
    int accepted; /* 0: reject, draw again */
} ziggurat_step;

static __attribute__((noinline)) ziggurat_step ziggurat_rare(u128 state, u128 inc,
                                                              uint64_t rabs, int idx,
                                                              double x) {
    ziggurat_step out = {state, x, 1};
    if (idx == 0) {
        for (;;) {
            double xx = -ziggurat_nor_inv_r * log1p(-pcg64_next_double(&out.state, inc));
            double yy = -log1p(-pcg64_next_double(&out.state, inc));
            if (yy + yy > xx * xx) {
                out.x = ((rabs >> 8) & 0x1) ? -(ziggurat_nor_r + xx) : ziggurat_nor_r + xx;
                return out;
            }
        }
    }
    double u = pcg64_next_double(&out.state, inc);
    out.accepted = (fi_double[idx - 1] - fi_double[idx]) * u + fi_double[idx] < exp(-0.5 * x * x);
    return out;
}

/* One draw of klest_fill_normal: f(z * scale + loc), z NumPy's random_standard_normal (the
 * ziggurat); x = z * scale + loc is a multiply then an add (NumPy's z *= scale; z += loc),
 * and f, by `transform`, is 0: x;  1: x * b + c;  2: ((x * a) + b) * x + c  (klest.log_ratio's
 * Gaussian log-ratios, operation for operation). */
KLEST_INLINE double normal_draw(u128 *s, u128 inc, double scale, double loc, int64_t transform,
                                double a, double b, double c) {
    double x;
    for (;;) {
        uint64_t r = pcg64_next(s, inc);
        int idx = (int)(r & 0xff);
        r >>= 8;
        uint64_t rabs = (r >> 1) & 0x000fffffffffffffULL;
        x = (double)(int64_t)rabs * wi_double[idx]; /* rabs < 2^52: exact either way */
        /* x = -x when the sign bit is set, without a (50% mispredicted) branch */
        uint64_t bits;
        memcpy(&bits, &x, sizeof bits);
        bits ^= (r & 0x1) << 63;
        memcpy(&x, &bits, sizeof x);
        if (rabs < ki_double[idx]) break; /* the rectangle: 99.3% of draws */
        ziggurat_step step = ziggurat_rare(*s, inc, rabs, idx, x);
        *s = step.state;
        x = step.x;
        if (step.accepted) break;
    }
    x = x * scale + loc;
    if (transform == 1)
        x = x * b + c;
    else if (transform == 2)
        x = ((x * a) + b) * x + c;
    return x;
}

/* out[j] = normal_draw(...) for j < n; state = [hi, lo, inc_hi, inc_lo] of the PCG64 state,
 * the new state written back. */
void klest_fill_normal(uint64_t *state, double *out, int64_t n, double scale, double loc,
                       int64_t transform, double a, double b, double c) {
    u128 s = ((u128)state[0] << 64) | state[1];
    const u128 inc = ((u128)state[2] << 64) | state[3];
    for (int64_t j = 0; j < n; j++) out[j] = normal_draw(&s, inc, scale, loc, transform, a, b, c);
    state[0] = (uint64_t)(s >> 64);
    state[1] = (uint64_t)s;
}

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

/* ---------------------------------------------------------------------------------------- */
/* The accumulator                                                                           */
/* ---------------------------------------------------------------------------------------- */

/* Tile sums in a fixed order, whatever the SIMD width: eight lanes, lane k summing the
 * values at positions = k (mod 8), combined as ((0+1)+(2+3))+((4+5)+(6+7)). Each lane's
 * arithmetic is the same IEEE operations in the same order whether the eight lanes are held
 * in one AVX-512 register, two AVX2 registers or four SSE2 registers, so the three variants
 * below give the same bits; the fastest the CPU supports is chosen at load time. */
#define LANES 8

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
        VD half_scale = (VD)((VU)(k + 1022) << 52), inverse = (VD)((VU)(1023 - k) << 52);   \
        VL big = kd >= 20.0, huge = kd > 56.0, low_r = r < -0.25, k_one = kd == 1.0;        \
        VD v = (VD)KLEST_SELECT(VL, big, one, one - inverse);                               \
        VD s = (VD)KLEST_SELECT(VL, big, inverse, zero);                                    \
        s = (VD)KLEST_SELECT(VL, huge, zero, s);                                            \
        VD u_low = (VD)KLEST_SELECT(VL, low_r, r + 0.5, r);                                 \
        VD v_low = (VD)KLEST_SELECT(VL, low_r, zero, v);                                    \
        VD u = (VD)KLEST_SELECT(VL, k_one, u_low, r);                                       \
        v = (VD)KLEST_SELECT(VL, k_one, v_low, v);                                          \
        VD y = ((u - (ek + s)) + v) * 2.0 * half_scale;                                     \
        VD ax = (VD)((VL)x & 0x7fffffffffffffffLL);                                         \
        /* the usual case, every lane in [2^-54, 709.78] in size (NaN fails the tests) */   \
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

/* The three tile kernels for one vector type VD (W doubles; VL its mask type). */
#define KLEST_TILE_KERNELS(SUFFIX, TARGET, VD, VL, W, MIN, MAX, ALL)                        \
    TARGET static double tile_sum_##SUFFIX(const double *v, int64_t t) {                    \
        VD acc[LANES / W];                                                                  \
        for (int u = 0; u < LANES / W; u++) acc[u] = (VD){0};                               \
        int64_t i = 0;                                                                      \
        for (; i + LANES <= t; i += LANES)                                                  \
            for (int u = 0; u < LANES / W; u++) {                                           \
                VD x;                                                                       \
                memcpy(&x, v + i + u * W, sizeof x);                                        \
                acc[u] += x;                                                                \
            }                                                                               \
        double lane[LANES];                                                                 \
        memcpy(lane, acc, sizeof lane);                                                     \
        for (int k = 0; i < t; i++, k++) lane[k] += v[i];                                   \
        return combine_lanes(lane);                                                         \
    }                                                                                       \
                                                                                            \
    /* S1..S4 about `center`, extremes, negatives; dev = v - center */                      \
    /* (negative_out is left at 0 when count_negatives is 0: a series known >= 0) */        \
    TARGET static void tile_central_##SUFFIX(const double *v, int64_t t, double center,     \
                                             double *dev, double *sums, double *lo_out,     \
                                             double *hi_out, int64_t *negative_out,         \
                                             int count_negatives) {                         \
        VD s1[LANES / W], s2[LANES / W], s3[LANES / W], s4[LANES / W], lo[LANES / W],       \
            hi[LANES / W];                                                                  \
        VL neg[LANES / W];                                                                  \
        VD c, zero = (VD){0}, inf;                                                          \
        for (int k = 0; k < W; k++) c[k] = center, inf[k] = INFINITY;                       \
        for (int u = 0; u < LANES / W; u++)                                                 \
            s1[u] = s2[u] = s3[u] = s4[u] = zero, neg[u] = (VL){0}, lo[u] = inf, hi[u] = -inf; \
        int64_t i = 0;                                                                      \
        for (; i + LANES <= t; i += LANES)                                                  \
            for (int u = 0; u < LANES / W; u++) {                                           \
                VD x;                                                                       \
                memcpy(&x, v + i + u * W, sizeof x);                                        \
                VD d = x - c, d2 = d * d;                                                   \
                memcpy(dev + i + u * W, &d, sizeof d);                                      \
                s1[u] += d;                                                                 \
                s2[u] += d2;                                                                \
                s3[u] += d2 * d;                                                            \
                s4[u] += d2 * d2;                                                           \
                /* MIN(x, lo) is x < lo ? x : lo, MAX(x, hi) x > hi ? x : hi (minpd, maxpd) */ \
                lo[u] = MIN(x, lo[u]);                                                      \
                hi[u] = MAX(x, hi[u]);                                                      \
                if (count_negatives) neg[u] -= (VL)(x < zero); /* a true comparison: -1 */  \
            }                                                                               \
        double l1[LANES], l2[LANES], l3[LANES], l4[LANES], llo[LANES], lhi[LANES];          \
        int64_t lneg[LANES];                                                                \
        memcpy(l1, s1, sizeof l1);                                                          \
        memcpy(l2, s2, sizeof l2);                                                          \
        memcpy(l3, s3, sizeof l3);                                                          \
        memcpy(l4, s4, sizeof l4);                                                          \
        memcpy(llo, lo, sizeof llo);                                                        \
        memcpy(lhi, hi, sizeof lhi);                                                        \
        memcpy(lneg, neg, sizeof lneg);                                                     \
        for (int k = 0; i < t; i++, k++) {                                                  \
            double x = v[i], d = x - center, d2 = d * d;                                    \
            dev[i] = d;                                                                     \
            l1[k] += d;                                                                     \
            l2[k] += d2;                                                                    \
            l3[k] += d2 * d;                                                                \
            l4[k] += d2 * d2;                                                               \
            llo[k] = x < llo[k] ? x : llo[k];                                               \
            lhi[k] = x > lhi[k] ? x : lhi[k];                                               \
            lneg[k] += count_negatives && x < 0.0;                                          \
        }                                                                                   \
        sums[0] = combine_lanes(l1);                                                        \
        sums[1] = combine_lanes(l2);                                                        \
        sums[2] = combine_lanes(l3);                                                        \
        sums[3] = combine_lanes(l4);                                                        \
        double a = llo[0], b = lhi[0];                                                      \
        for (int k = 1; k < LANES; k++) {                                                   \
            a = llo[k] < a ? llo[k] : a;                                                    \
            b = lhi[k] > b ? lhi[k] : b;                                                    \
        }                                                                                   \
        *lo_out = a;                                                                        \
        *hi_out = b;                                                                        \
        int64_t negatives = 0;                                                              \
        for (int k = 0; k < LANES; k++) negatives += lneg[k];                               \
        *negative_out = negatives;                                                          \
    }                                                                                       \
                                                                                            \
    /* A computed series over a tile (elementwise: the same bits at any width), returning  \
     * its sum as tile_sum would. k3 takes the Taylor series only in a vector with a value  \
     * below the switch (|l| < ~0.01, or NaN): the selected value is the same either way. */ \
    TARGET static double tile_series_##SUFFIX(int64_t kind, const double *l, const double *em1, \
                                              double *out, int64_t t) {                     \
        VD acc[LANES / W];                                                                  \
        for (int u = 0; u < LANES / W; u++) acc[u] = (VD){0};                               \
        int64_t i = 0;                                                                      \
        if (kind == SERIES_NEGATE)                                                          \
            for (; i + LANES <= t; i += LANES)                                              \
                for (int u = 0; u < LANES / W; u++) {                                       \
                    VD x;                                                                   \
                    memcpy(&x, l + i + u * W, sizeof x);                                    \
                    x = -x;                                                                 \
                    memcpy(out + i + u * W, &x, sizeof x);                                  \
                    acc[u] += x;                                                            \
                }                                                                           \
        else if (kind == SERIES_HALF_SQUARE)                                                \
            for (; i + LANES <= t; i += LANES)                                              \
                for (int u = 0; u < LANES / W; u++) {                                       \
                    VD x;                                                                   \
                    memcpy(&x, l + i + u * W, sizeof x);                                    \
                    x = 0.5 * x * x;                                                        \
                    memcpy(out + i + u * W, &x, sizeof x);                                  \
                    acc[u] += x;                                                            \
                }                                                                           \
        else                                                                                \
            for (; i + LANES <= t; i += LANES)                                              \
                for (int u = 0; u < LANES / W; u++) {                                       \
                    VD x, e;                                                                \
                    memcpy(&x, l + i + u * W, sizeof x);                                    \
                    memcpy(&e, em1 + i + u * W, sizeof e);                                  \
                    VD y = e - x;                                                           \
                    VL direct = y >= KLEST_K3_SWITCH;                                       \
                    if (!ALL(direct)) {                                                     \
                        VD series = ((((((((1.0 / 362880.0) * x + (1.0 / 40320.0)) * x +    \
                                         (1.0 / 5040.0)) * x + (1.0 / 720.0)) * x +         \
                                       (1.0 / 120.0)) * x + (1.0 / 24.0)) * x +             \
                                     (1.0 / 6.0)) * x + 0.5) * x * x;                       \
                        y = (VD)KLEST_SELECT(VL, direct, y, series);                        \
                    }                                                                       \
                    memcpy(out + i + u * W, &y, sizeof y);                                  \
                    acc[u] += y;                                                            \
                }                                                                           \
        double lane[LANES];                                                                 \
        memcpy(lane, acc, sizeof lane);                                                     \
        for (int k = 0; i < t; i++, k++) {                                                  \
            out[i] = kind == SERIES_NEGATE        ? -l[i]                                   \
                     : kind == SERIES_HALF_SQUARE ? 0.5 * l[i] * l[i]                       \
                                                  : k3_value(em1[i], l[i]);                 \
            lane[k] += out[i];                                                              \
        }                                                                                   \
        return combine_lanes(lane);                                                         \
    }                                                                                       \
                                                                                            \
    /* klest's expm1, elementwise */                                                        \
    KLEST_ELEMENTWISE(expm1, SUFFIX, TARGET, VD, W)                                         \
                                                                                            \
    /* t draws of klest_fill_normal into l (the state advanced in place), and, interleaved  \
     * with them, expm1 of the t_prev values of the previous tile, l_prev, into em1_prev:   \
     * the sampler is a chain of integer steps, expm1 a stream of vector arithmetic, so the \
     * CPU runs the two side by side. Each is the same operations as when run alone. */     \
    TARGET static void normal_tile_##SUFFIX(u128 *s, u128 inc, const double *f,             \
                                            int64_t transform, double *l, int64_t t,        \
                                            const double *l_prev, double *em1_prev,         \
                                            int64_t t_prev) {                               \
        const double scale = f[0], loc = f[1], a = f[2], b = f[3], c = f[4];                \
        u128 state = *s;                                                                    \
        int64_t j = 0;                                                                      \
        for (; j + W <= t && j + W <= t_prev; j += W) {                                     \
            for (int u = 0; u < W; u++)                                                     \
                l[j + u] = normal_draw(&state, inc, scale, loc, transform, a, b, c);        \
            VD v;                                                                           \
            memcpy(&v, l_prev + j, sizeof v);                                               \
            v = expm1_vector_##SUFFIX(v);                                                   \
            memcpy(em1_prev + j, &v, sizeof v);                                             \
        }                                                                                   \
        for (int64_t i = j; i < t; i++)                                                     \
            l[i] = normal_draw(&state, inc, scale, loc, transform, a, b, c);                \
        for (int64_t i = j; i < t_prev; i++) em1_prev[i] = expm1_value(l_prev[i]);          \
        *s = state;                                                                         \
    }                                                                                       \
                                                                                            \
    TARGET static double tile_dot_##SUFFIX(const double *a, const double *b, int64_t t) {   \
        VD acc[LANES / W];                                                                  \
        for (int u = 0; u < LANES / W; u++) acc[u] = (VD){0};                               \
        int64_t i = 0;                                                                      \
        for (; i + LANES <= t; i += LANES)                                                  \
            for (int u = 0; u < LANES / W; u++) {                                           \
                VD x, y;                                                                    \
                memcpy(&x, a + i + u * W, sizeof x);                                        \
                memcpy(&y, b + i + u * W, sizeof y);                                        \
                acc[u] += x * y;                                                            \
            }                                                                               \
        double lane[LANES];                                                                 \
        memcpy(lane, acc, sizeof lane);                                                     \
        for (int k = 0; i < t; i++, k++) lane[k] += a[i] * b[i];                            \
        return combine_lanes(lane);                                                         \
    }

/* ALL(m): every lane of the comparison mask m is true (movmskpd, vptestmq) */
#define KLEST_ALL128(m) (__builtin_ia32_movmskpd((v2d)(m)) == 0x3)
#define KLEST_ALL256(m) (__builtin_ia32_movmskpd256((v4d)(m)) == 0xf)
typedef long long v8ll __attribute__((vector_size(64)));
#define KLEST_ALL512(m) (__builtin_ia32_ptestmq512((v8ll)(m), (v8ll)(m), 0xff) == 0xff)
KLEST_EXPM1_VECTOR(generic, , v2d, v2l, v2u, KLEST_ALL128)
KLEST_LOG_VECTOR(generic, , v2d, v2l, v2u, 2, KLEST_ALL128)
KLEST_TILE_KERNELS(generic, , v2d, v2l, 2, __builtin_ia32_minpd, __builtin_ia32_maxpd,
                   KLEST_ALL128)
#if defined(__x86_64__) && defined(__GNUC__)
#define KLEST_X86_VARIANTS 1
KLEST_EXPM1_VECTOR(avx2, __attribute__((target("avx2"))), v4d, v4l, v4u, KLEST_ALL256)
KLEST_LOG_VECTOR(avx2, __attribute__((target("avx2"))), v4d, v4l, v4u, 4, KLEST_ALL256)
KLEST_TILE_KERNELS(avx2, __attribute__((target("avx2"))), v4d, v4l, 4, __builtin_ia32_minpd256,
                   __builtin_ia32_maxpd256, KLEST_ALL256)
/* AVX-512's minpd / maxpd: all lanes, the current rounding mode (no rounding happens) */
#define KLEST_MIN512(a, b) __builtin_ia32_minpd512_mask((a), (b), (b), (unsigned char)0xff, 4)
#define KLEST_MAX512(a, b) __builtin_ia32_maxpd512_mask((a), (b), (b), (unsigned char)0xff, 4)
KLEST_EXPM1_VECTOR(avx512, __attribute__((target("avx512f"))), v8d, v8l, v8u, KLEST_ALL512)
KLEST_LOG_VECTOR(avx512, __attribute__((target("avx512f"))), v8d, v8l, v8u, 8, KLEST_ALL512)
KLEST_TILE_KERNELS(avx512, __attribute__((target("avx512f"))), v8d, v8l, 8, KLEST_MIN512,
                   KLEST_MAX512, KLEST_ALL512)
#endif

typedef struct {
    double (*sum)(const double *, int64_t);
    void (*central)(const double *, int64_t, double, double *, double *, double *, double *,
                    int64_t *, int);
    double (*dot)(const double *, const double *, int64_t);
    double (*series)(int64_t, const double *, const double *, double *, int64_t);
    void (*expm1)(const double *, double *, int64_t);
    void (*normal_tile)(u128 *, u128, const double *, int64_t, double *, int64_t, const double *,
                        double *, int64_t);
    void (*log)(const double *, double *, int64_t);
    void (*log1p)(const double *, double *, int64_t);
} tile_kernels;

static const tile_kernels kernel_variants[] = {
    {tile_sum_generic, tile_central_generic, tile_dot_generic, tile_series_generic,
     tile_expm1_generic, normal_tile_generic, tile_log_generic, tile_log1p_generic},
#ifdef KLEST_X86_VARIANTS
    {tile_sum_avx2, tile_central_avx2, tile_dot_avx2, tile_series_avx2, tile_expm1_avx2,
     normal_tile_avx2, tile_log_avx2, tile_log1p_avx2},
    {tile_sum_avx512, tile_central_avx512, tile_dot_avx512, tile_series_avx512,
     tile_expm1_avx512, normal_tile_avx512, tile_log_avx512, tile_log1p_avx512},
#endif
};

/* -1 until chosen: 0 generic (SSE2 / any CPU), 1 AVX2, 2 AVX-512 */
static int simd_level = -1;

/* The widest variant this CPU runs. */
int64_t klest_best_simd_level(void) {
#ifdef KLEST_X86_VARIANTS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
    if (__builtin_cpu_supports("avx2")) return 1;
#endif
    return 0;
}

/* Select a variant (tests compare them); returns the level in use, or -1 if unsupported. */
int64_t klest_set_simd_level(int64_t level) {
    if (level < 0 || level > klest_best_simd_level()) return -1;
    simd_level = (int)level;
    return level;
}

static const tile_kernels *kernels(void) {
    if (simd_level < 0) simd_level = (int)klest_best_simd_level();
    return &kernel_variants[simd_level];
}

/* Fold nb values with mean and central sums (mean_b, m2b, m3b, m4b) into series row `st`. */
static void merge_series(double *st, double nb, double mean_b, double m2b, double m3b,
                         double m4b) {
    double na = st[COUNT];
    if (nb == 0.0) return;
    if (na == 0.0) {
        st[COUNT] = nb, st[MEAN] = mean_b, st[M2] = m2b, st[M3] = m3b, st[M4] = m4b;
        return;
    }
    double m2a = st[M2], m3a = st[M3], n = na + nb, delta = mean_b - st[MEAN];
    double d2 = delta * delta;
    st[MEAN] += delta * nb / n;
    st[M4] += m4b + d2 * d2 * na * nb * (na * na - na * nb + nb * nb) / (n * n * n) +
              6.0 * d2 * (na * na * m2b + nb * nb * m2a) / (n * n) +
              4.0 * delta * (na * m3b - nb * m3a) / n;
    st[M3] += m3b + d2 * delta * na * nb * (na - nb) / (n * n) +
              3.0 * delta * (na * m2b - nb * m2a) / n;
    st[M2] += m2b + d2 * na * nb / n;
    st[COUNT] = n;
}

/* Fold a whole series record (count, mean, central sums, extremes, negatives, non-finite
 * values, +inf and -inf among them) into stats row `st`. */
static void fold_series(double *st, double count, double mean, double m2, double m3, double m4,
                        double lo, double hi, double negative, double nonfinite, double posinf,
                        double neginf) {
    merge_series(st, count, mean, m2, m3, m4);
    st[MINIMUM] = lo < st[MINIMUM] ? lo : st[MINIMUM];
    st[MAXIMUM] = hi > st[MAXIMUM] ? hi : st[MAXIMUM];
    st[NEGATIVE] += negative;
    st[NONFINITE] += nonfinite;
    st[POSINF] += posinf;
    st[NEGINF] += neginf;
}

/* Fold nb joint draws (means mean_b[E], co-moments cb[E*E]) into joint[1+E], comoment[E*E]. */
static void merge_joint(double *joint, double *comoment, int64_t size, double nb,
                        const double *mean_b, const double *cb, double *delta) {
    double na = joint[0];
    if (nb == 0.0) return;
    double n = na + nb, w = na * nb / n;
    for (int64_t i = 0; i < size; i++) delta[i] = mean_b[i] - joint[1 + i];
    for (int64_t i = 0; i < size; i++)
        for (int64_t j = 0; j < size; j++)
            comoment[i * size + j] += cb[i * size + j] + delta[i] * delta[j] * w;
    for (int64_t i = 0; i < size; i++) joint[1 + i] += delta[i] * (nb / n);
    joint[0] = n;
}

/* Central sums from sums about a first mean: the shift h = S1 / t is the rounding residue
 * of that mean, folded back in exactly. */
static void recentre(double t, const double *s, double h, double *m2, double *m3, double *m4) {
    *m2 = s[1] - s[0] * h;
    *m3 = s[2] - 3.0 * h * s[1] + 2.0 * t * h * h * h;
    *m4 = s[3] - 4.0 * h * s[2] + 6.0 * h * h * s[1] - 3.0 * t * h * h * h * h;
}

typedef struct {
    double *dev;   /* E * KLEST_TILE */
    double **devrow; /* E: where series e's deviations go (its own values when they are scratch) */
    int *nonneg;     /* E: series e is >= 0 by construction (k2, k3): no negatives to count */
    double *cross; /* E * E */
    double *mean, *shift, *delta, *sums; /* E each */
    const tile_kernels *k;
} workspace;

static void finite_tile(const double *const *tile, int64_t size, int64_t t,
                        double *stats, double *joint, double *comoment, workspace *w) {
    double tt = (double)t;
    for (int64_t e = 0; e < size; e++) {
        double center = w->sums[e] / tt, s[4], lo, hi, m2, m3, m4;
        int64_t negative;
        w->k->central(tile[e], t, center, w->devrow[e], s, &lo, &hi, &negative, !w->nonneg[e]);
        double h = s[0] / tt;
        w->shift[e] = h;
        w->mean[e] = center + h;
        recentre(tt, s, h, &m2, &m3, &m4);
        w->cross[e * size + e] = m2;
        fold_series(stats + e * NFIELDS, tt, w->mean[e], m2, m3, m4, lo, hi, (double)negative,
                    0.0, 0.0, 0.0);
    }
    for (int64_t i = 0; i < size; i++)
        for (int64_t j = i + 1; j < size; j++) {
            /* deviations are about the first means: subtract t * h_i * h_j */
            double c = w->k->dot(w->devrow[i], w->devrow[j], t);
            w->cross[i * size + j] = w->cross[j * size + i] = c - tt * w->shift[i] * w->shift[j];
        }
    merge_joint(joint, comoment, size, tt, w->mean, w->cross, w->delta);
}

/* A tile with non-finite values: each series over its finite values, co-moments over the
 * draws where every series is finite. Plain loops: this path is rare. */
static void tile_with_nonfinite(const double *const *tile, int64_t size, int64_t t,
                                double *stats, double *joint, double *comoment, workspace *w) {
    for (int64_t e = 0; e < size; e++) {
        const double *v = tile[e];
        double *st = stats + e * NFIELDS;
        int64_t count = 0, negative = 0, posinf = 0, neginf = 0;
        double total = 0.0, lo = INFINITY, hi = -INFINITY;
        for (int64_t i = 0; i < t; i++)
            if (isfinite(v[i])) {
                count++;
                total += v[i];
                lo = v[i] < lo ? v[i] : lo;
                hi = v[i] > hi ? v[i] : hi;
                negative += v[i] < 0.0;
            } else if (isinf(v[i])) {
                posinf += v[i] > 0.0;
                neginf += v[i] < 0.0;
            }
        if (count == 0) {
            st[NONFINITE] += (double)t;
            st[POSINF] += (double)posinf;
            st[NEGINF] += (double)neginf;
            continue;
        }
        double c = (double)count, mean = total / c, s[4] = {0, 0, 0, 0}, m2, m3, m4;
        for (int64_t i = 0; i < t; i++)
            if (isfinite(v[i])) {
                double d = v[i] - mean;
                s[0] += d, s[1] += d * d, s[2] += d * d * d, s[3] += d * d * d * d;
            }
        double h = s[0] / c;
        recentre(c, s, h, &m2, &m3, &m4);
        fold_series(st, c, mean + h, m2, m3, m4, lo, hi, (double)negative, (double)(t - count),
                    (double)posinf, (double)neginf);
    }
    int64_t joint_count = 0;
    for (int64_t e = 0; e < size; e++) w->mean[e] = 0.0;
    for (int64_t i = 0; i < t; i++) {
        int ok = 1;
        for (int64_t e = 0; e < size && ok; e++) ok = isfinite(tile[e][i]);
        w->dev[i] = ok; /* reuse the first deviation row as the joint mask */
        if (ok) {
            joint_count++;
            for (int64_t e = 0; e < size; e++) w->mean[e] += tile[e][i];
        }
    }
    if (joint_count == 0) return;
    for (int64_t e = 0; e < size; e++) w->mean[e] /= (double)joint_count;
    memset(w->cross, 0, sizeof(double) * size * size);
    for (int64_t i = 0; i < t; i++) {
        if (w->dev[i] == 0.0) continue;
        for (int64_t a = 0; a < size; a++) {
            double da = tile[a][i] - w->mean[a];
            for (int64_t b = a; b < size; b++)
                w->cross[a * size + b] += da * (tile[b][i] - w->mean[b]);
        }
    }
    for (int64_t a = 0; a < size; a++)
        for (int64_t b = a + 1; b < size; b++) w->cross[b * size + a] = w->cross[a * size + b];
    merge_joint(joint, comoment, size, (double)joint_count, w->mean, w->cross, w->delta);
}

/* Count every stride-th finite value (block indices 0, stride, ...) of the tile v, which
 * holds block indices start, ..., start + t - 1, into four interleaved copies of
 * [underflow, bins..., overflow] (sub, 4 x (bins + 2)): successive values that fall in the
 * same bin then do not wait on each other's increment. */
static void histogram_tile(const double *v, int64_t start, int64_t t, int64_t stride,
                           double low, double width, int64_t bins, int64_t *sub) {
    const double inverse_width = 1.0 / width; /* a multiply instead of a slow division */
    const double top = (double)bins;
    /* k: the tile offset of the first multiple of stride at or after start; no sum here
     * can overflow, whatever the stride (one up to 2^63 - 1 is valid: only index 0) */
    int64_t rem = start % stride;
    int64_t k = rem == 0 ? 0 : stride - rem;
    for (int64_t j = 0; k < t; j++) {
        double x = v[k];
        if (isfinite(x)) {
            double position = (x - low) * inverse_width; /* floor, clipped to [-1, bins], + 1 */
            position = position < 0.0 ? -1.0 : position;
            position = position >= top ? top : position;
            sub[(j & 3) * (bins + 2) + (int64_t)position + 1]++;
        }
        if (stride >= t - k) break; /* the next index is past the tile */
        k += stride;
    }
}

/* Scratch memory of the accumulator for E series: deviations and computed values of a
 * tile, co-moments, per-series scalars, four copies of each histogram row, and (for
 * klest_block_stats) the log-ratio of two tiles and expm1 of one. */
typedef struct {
    workspace w;
    double *memory, *values, *l_tiles, *em1_tile;
    const double **tile;
    int64_t *sub;
} scratch;

static int scratch_open(scratch *x, int64_t size, int64_t hist_rows, int64_t bins) {
    size_t doubles = 2 * size * KLEST_TILE + size * size + 4 * size + 3 * KLEST_TILE;
    x->memory = malloc(sizeof(double) * doubles);
    x->tile = malloc(sizeof(double *) * size);
    x->w.devrow = malloc(sizeof(double *) * size);
    x->w.nonneg = malloc(sizeof(int) * size);
    x->sub = calloc((size_t)(hist_rows > 0 ? hist_rows : 1) * 4 * (bins + 2), sizeof(int64_t));
    if (x->memory == NULL || x->tile == NULL || x->w.devrow == NULL || x->w.nonneg == NULL ||
        x->sub == NULL) {
        free(x->memory);
        free(x->tile);
        free(x->w.devrow);
        free(x->w.nonneg);
        free(x->sub);
        return -1;
    }
    x->w.k = kernels();
    x->w.dev = x->memory;
    x->values = x->w.dev + size * KLEST_TILE; /* computed series, E x KLEST_TILE */
    x->w.cross = x->values + size * KLEST_TILE;
    x->w.mean = x->w.cross + size * size;
    x->w.shift = x->w.mean + size;
    x->w.delta = x->w.shift + size;
    x->w.sums = x->w.delta + size;
    x->l_tiles = x->w.sums + size; /* 2 x KLEST_TILE */
    x->em1_tile = x->l_tiles + 2 * KLEST_TILE;
    return 0;
}

/* Add the histogram copies into histogram and free the scratch memory. */
static void scratch_close(scratch *x, int64_t *histogram, int64_t bins, int64_t hist_rows) {
    if (bins > 0)
        for (int64_t e = 0; e < hist_rows; e++)
            for (int copy = 0; copy < 4; copy++)
                for (int64_t b = 0; b < bins + 2; b++)
                    histogram[e * (bins + 2) + b] += x->sub[(e * 4 + copy) * (bins + 2) + b];
    free(x->memory);
    free(x->tile);
    free(x->w.devrow);
    free(x->w.nonneg);
    free(x->sub);
}

/* Fold one tile (block indices start .. start + t - 1) into the accumulator. Series e is
 * rows[e] + start when kinds[e] is SERIES_GIVEN, expm1 itself (em1) for SERIES_EXPM1, else
 * computed from the tile's log-ratio l and its expm1 em1. em1_is_scratch: em1 may be
 * overwritten. A series held in scratch memory gets its deviations in place (the working
 * set stays in the L1 cache); the histogram reads the values first. */
static void accumulate_tile(const double *const *rows, const int64_t *kinds, const double *l,
                            double *em1, int em1_is_scratch, int64_t size, int64_t start,
                            int64_t t, double *stats, double *joint, double *comoment,
                            int64_t bins, int64_t hist_rows, int64_t stride, double low,
                            double width, scratch *x) {
    workspace *w = &x->w;
    int finite = 1;
    for (int64_t e = 0; e < size; e++) {
        double *out = x->values + e * KLEST_TILE;
        w->devrow[e] = w->dev + e * KLEST_TILE;
        /* k2 = l^2 / 2 >= 0; k3 >= 0: e^l - 1 - l, or its series (taken only for |l| < ~0.01,
         * where it is l^2 (1/2 + l/6 + ...) >= 0); in a finite tile neither is ever < 0 */
        w->nonneg[e] = kinds[e] == SERIES_HALF_SQUARE || kinds[e] == SERIES_K3;
        if (kinds[e] == SERIES_GIVEN) {
            x->tile[e] = rows[e] + start;
        } else if (kinds[e] == SERIES_EXPM1) {
            x->tile[e] = em1;
            if (em1_is_scratch) w->devrow[e] = em1;
        } else { /* k1 = -l, k2 = 0.5 * l * l, k3 = exp(l) - 1 - l, and their sum */
            w->sums[e] = w->k->series(kinds[e], l, em1, out, t);
            x->tile[e] = out;
            w->devrow[e] = out;
        }
        if (kinds[e] == SERIES_GIVEN || kinds[e] == SERIES_EXPM1)
            w->sums[e] = w->k->sum(x->tile[e], t);
        finite = finite && isfinite(w->sums[e]); /* the sum is NaN or inf iff a value is */
    }
    if (bins > 0)
        for (int64_t e = 0; e < hist_rows; e++)
            histogram_tile(x->tile[e], start, t, stride, low, width, bins,
                           x->sub + e * 4 * (bins + 2));
    if (finite)
        finite_tile(x->tile, size, t, stats, joint, comoment, w);
    else
        tile_with_nonfinite(x->tile, size, t, stats, joint, comoment, w);
}

static int kinds_are_valid(const int64_t *kinds, int64_t size, const void *const *rows,
                           const double *log_ratio, const double *expm1_log_ratio) {
    for (int64_t e = 0; e < size; e++) {
        if (kinds[e] < SERIES_GIVEN || kinds[e] > SERIES_EXPM1) return 0;
        if (kinds[e] == SERIES_GIVEN ? rows == NULL || rows[e] == NULL
                                     : log_ratio == NULL ||
                                           ((kinds[e] == SERIES_K3 || kinds[e] == SERIES_EXPM1) &&
                                            expm1_log_ratio == NULL))
            return 0;
    }
    return 1;
}

/* Fold one block of m draws into the accumulator: stats (E x NFIELDS), joint (1 + E),
 * comoment (E x E); the first hist_rows series also go into histogram (E x (bins + 2)) when
 * bins > 0. Series e is rows[e] when kinds[e] is SERIES_GIVEN, else computed from
 * log_ratio and expm1_log_ratio. Returns 0, -1 if scratch memory is not available, or -2
 * for an unknown kind or a missing input. */
int klest_accumulate(const double *const *rows, const int64_t *kinds, const double *log_ratio,
                     const double *expm1_log_ratio, int64_t size, int64_t m, double *stats,
                     double *joint, double *comoment, int64_t *histogram, int64_t bins,
                     int64_t hist_rows, int64_t stride, double low, double width) {
    if (!kinds_are_valid(kinds, size, (const void *const *)rows, log_ratio, expm1_log_ratio))
        return -2;
    scratch x;
    if (scratch_open(&x, size, hist_rows, bins) != 0) return -1;
    for (int64_t start = 0; start < m; start += KLEST_TILE) {
        int64_t t = m - start < KLEST_TILE ? m - start : KLEST_TILE;
        accumulate_tile(rows, kinds, log_ratio ? log_ratio + start : NULL,
                        expm1_log_ratio ? (double *)expm1_log_ratio + start : NULL, 0, size,
                        start, t, stats, joint, comoment, bins, hist_rows, stride, low, width,
                        &x); /* em1 is the caller's: read only */
    }
    scratch_close(&x, histogram, bins, hist_rows);
    return 0;
}

/* Draw the m values of klest_fill_normal(state, ..., f[0], f[1], transform, f[2], f[3],
 * f[4]) tile by tile, each tile's expm1 interleaved with the draws of the next, and fold
 * them into the accumulator (x: open scratch memory); the state is advanced in place. */
static void normal_block(uint64_t *state, int64_t m, const double *f, int64_t transform,
                         const int64_t *kinds, int64_t size, double *stats, double *joint,
                         double *comoment, int64_t bins, int64_t hist_rows, int64_t stride,
                         double low, double width, scratch *x) {
    u128 s = ((u128)state[0] << 64) | state[1];
    const u128 inc = ((u128)state[2] << 64) | state[3];
    double *l[2] = {x->l_tiles, x->l_tiles + KLEST_TILE};
    int64_t prev_start = 0, prev_t = 0, which = 0;
    for (int64_t start = 0; start < m; start += KLEST_TILE) {
        int64_t t = m - start < KLEST_TILE ? m - start : KLEST_TILE;
        /* draw this tile while taking expm1 of the previous one, then fold that one */
        x->w.k->normal_tile(&s, inc, f, transform, l[which], t, l[1 - which], x->em1_tile,
                            prev_t);
        if (prev_t > 0)
            accumulate_tile(NULL, kinds, l[1 - which], x->em1_tile, 1, size, prev_start, prev_t,
                            stats, joint, comoment, bins, hist_rows, stride, low, width, x);
        prev_start = start, prev_t = t, which = 1 - which;
    }
    x->w.k->expm1(l[1 - which], x->em1_tile, prev_t);
    accumulate_tile(NULL, kinds, l[1 - which], x->em1_tile, 1, size, prev_start, prev_t, stats,
                    joint, comoment, bins, hist_rows, stride, low, width, x);
    state[0] = (uint64_t)(s >> 64);
    state[1] = (uint64_t)s;
}

/* klest_accumulate for blocks whose every series is computed from the log-ratio l (kinds
 * SERIES_NEGATE, SERIES_HALF_SQUARE, SERIES_K3, SERIES_EXPM1), with expm1(l) and the series
 * made tile by tile, in cache: the same bits as klest_expm1 followed by klest_accumulate,
 * block after block. With states NULL, l is the one block log_ratio of m values; otherwise
 * block b (of n_blocks) is the lengths[b] draws of klest_fill_normal from the PCG64 state
 * states[4 b .. 4 b + 3] (advanced in place), with f = (scale, loc, a, b, c), never written
 * out. Returns as klest_accumulate. */
int klest_block_stats(uint64_t *states, int64_t n_blocks, const int64_t *lengths,
                      const double *f, int64_t transform, const double *log_ratio, int64_t m,
                      const int64_t *kinds, int64_t size, double *stats, double *joint,
                      double *comoment, int64_t *histogram, int64_t bins, int64_t hist_rows,
                      int64_t stride, double low, double width) {
    const double *some = states ? f : log_ratio; /* any non-NULL pointer: l exists */
    if (some == NULL || !kinds_are_valid(kinds, size, NULL, some, some)) return -2;
    scratch x;
    if (scratch_open(&x, size, hist_rows, bins) != 0) return -1;
    if (states == NULL) {
        for (int64_t start = 0; start < m; start += KLEST_TILE) {
            int64_t t = m - start < KLEST_TILE ? m - start : KLEST_TILE;
            x.w.k->expm1(log_ratio + start, x.em1_tile, t);
            accumulate_tile(NULL, kinds, log_ratio + start, x.em1_tile, 1, size, start, t,
                            stats, joint, comoment, bins, hist_rows, stride, low, width, &x);
        }
    } else {
        for (int64_t b = 0; b < n_blocks; b++)
            normal_block(states + 4 * b, lengths[b], f, transform, kinds, size, stats, joint,
                         comoment, bins, hist_rows, stride, low, width, &x);
    }
    scratch_close(&x, histogram, bins, hist_rows);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Categorical sampling                                                                      */
/* ---------------------------------------------------------------------------------------- */

/* Inverse CDF with a guide table (Chen and Asau 1974): the first i with cdf[i] > u -- NumPy's
 * searchsorted(cdf, u, side="right") -- for a nondecreasing cdf with cdf[k - 1] = 1 and
 * 0 <= u < 1. guide[b], b = 0..g, is the first i with cdf[i] > b / g (guide[g] = k - 1)
 * for g a power of two, so b = floor(u * g) is exact and the answer lies in
 * [guide[b], guide[b + 1]]: a short scan on average ((k + g) / g entries), a binary search
 * in the rare long bucket. index[j] gets the category (when index is not NULL); values[j]
 * gets table[category] (when table is not NULL). Returns -1, or the first j whose u[j] is
 * not in [0, 1) (NaN included), where it stops: such a u would index outside guide and cdf.
 * The caller (klest/_native.py) checks the rest: g >= 1, every guide entry in [0, k - 1]
 * and cdf[k - 1] = 1, so that the scan and the search stay inside cdf. */
int64_t klest_categorical_inverse_cdf(const double *cdf, const int32_t *guide, int64_t g,
                                      const double *u, int64_t n, int64_t *index,
                                      const double *table, double *values) {
    const double scale = (double)g;
    for (int64_t j = 0; j < n; j++) {
        double x = u[j];
        if (!(x >= 0.0 && x < 1.0)) return j;
        int64_t b = (int64_t)(x * scale);
        int64_t lo = guide[b], hi = guide[b + 1];
        if (hi - lo <= 16) {
            while (cdf[lo] <= x) lo++;
        } else { /* first i in [lo, hi] with cdf[i] > x; cdf[hi] > x holds */
            while (lo < hi) {
                int64_t mid = lo + (hi - lo) / 2;
                if (cdf[mid] <= x)
                    lo = mid + 1;
                else
                    hi = mid;
            }
        }
        if (index != NULL) index[j] = lo;
        if (table != NULL) values[j] = table[lo];
    }
    return -1;
}

/* Fold accumulator b into accumulator a (b's draws after a's), both in the layout of
 * klest_accumulate: stats (E x NFIELDS), joint (1 + E), comoment (E x E). klest.moments.merge
 * combines the engine's tasks with it. Returns 0, or -1 without scratch memory. */
int klest_merge(int64_t size, double *stats, double *joint, double *comoment,
                const double *stats_b, const double *joint_b, const double *comoment_b) {
    double *delta = malloc(sizeof(double) * (size > 0 ? size : 1));
    if (delta == NULL) return -1;
    for (int64_t e = 0; e < size; e++) {
        const double *b = stats_b + e * NFIELDS;
        fold_series(stats + e * NFIELDS, b[COUNT], b[MEAN], b[M2], b[M3], b[M4], b[MINIMUM],
                    b[MAXIMUM], b[NEGATIVE], b[NONFINITE], b[POSINF], b[NEGINF]);
    }
    merge_joint(joint, comoment, size, joint_b[0], joint_b + 1, comoment_b, delta);
    free(delta);
    return 0;
}

/* k3 = exp(l) - 1 - l of n values, from l and expm1(l) (klest.estimators' k3). */
void klest_k3_from_expm1(const double *expm1_l, const double *l, double *out, int64_t n) {
    kernels()->series(SERIES_K3, l, expm1_l, out, n);
}

/* out[i] = klest's expm1(x[i]) (expm1_value above), n values; out may be x. */
void klest_expm1(const double *x, double *out, int64_t n) { kernels()->expm1(x, out, n); }

/* out[i] = klest's log(x[i]) and log1p(x[i]) (log_value, log1p_value above); out may be x. */
void klest_log(const double *x, double *out, int64_t n) { kernels()->log(x, out, n); }
void klest_log1p(const double *x, double *out, int64_t n) { kernels()->log1p(x, out, n); }

int64_t klest_tile_size(void) { return KLEST_TILE; }

/* An importable (empty) module, so that the build and `import klest._kernels` work; the
 * functions above are reached through ctypes. */
static struct PyModuleDef kernels_module = {PyModuleDef_HEAD_INIT, "_kernels",
                                            "klest's compiled kernels (used via ctypes)", -1,
                                            NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&kernels_module); }
