/* klest's compiled kernels, called through ctypes (klest/native/bindings.py).
 *
 *  - klest_fill_normal: NumPy's Generator(PCG64).standard_normal, value for value: the PCG64
 *    step (128-bit LCG, XSL-RR output), its outputs made ahead by four interleaved chains,
 *    and NumPy's ziggurat, W draws at a time in its common case (normal_stream.h).
 *  - klest_fill_family: NumPy's laplace, gamma, standard_t and beta draws on that stream, value
 *    for value (family_stream.h).
 *  - klest_block_stats: the engine's one pass over blocks whose series are all computed
 *    (k1, k2, k3, r - 1): for a Gaussian pair the draws too, then expm1, the series and
 *    their statistics, tile by tile (klest_accumulate's arithmetic, the same bits);
 *    klest_laplace_block_stats: the same for a Laplace pair; klest_mixture_block_stats for a
 *    pair of GaussianMixtures (the log-ratio by mixture.c).
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
 *  - klest_categorical_inverse_cdf: searchsorted(cdf, u, side="right") by guide table;
 *    klest_categorical_block_stats: klest_block_stats for Categorical blocks (the uniforms,
 *    that search and a table of the log-ratio and its expm1 per category, tile by tile).
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

#include "vector_math.h"   /* k3, expm1, log, log1p: scalar and vector */
#include "normal_stream.h" /* PCG64 made ahead by four chains, and the ziggurat */
#include "family_stream.h" /* NumPy's laplace, gamma, standard_t and beta on that stream */

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
/* The accumulator                                                                           */
/* ---------------------------------------------------------------------------------------- */

/* Tile sums in a fixed order, whatever the SIMD width: eight lanes, lane k summing the
 * values at positions = k (mod 8), combined as ((0+1)+(2+3))+((4+5)+(6+7)). Each lane's
 * arithmetic is the same IEEE operations in the same order whether the eight lanes are held
 * in one AVX-512 register, two AVX2 registers or four SSE2 registers, so the three variants
 * below give the same bits; the fastest the CPU supports is chosen at load time. */
#define LANES 8

/* The three tile kernels for one vector type VD (W doubles; VL its mask type). */
#define KLEST_TILE_KERNELS(SUFFIX, TARGET, VD, VL, W, MIN, MAX, ALL)                        \
    /* The sum of a tile; and the number of its values < 0 into *negatives. */             \
    TARGET static double tile_sum_##SUFFIX(const double *v, int64_t t, int64_t *negatives) { \
        VD acc[LANES / W], zero = (VD){0};                                                  \
        VL neg[LANES / W];                                                                  \
        for (int u = 0; u < LANES / W; u++) acc[u] = zero, neg[u] = (VL){0};                \
        int64_t i = 0;                                                                      \
        for (; i + LANES <= t; i += LANES)                                                  \
            for (int u = 0; u < LANES / W; u++) {                                           \
                VD x;                                                                       \
                memcpy(&x, v + i + u * W, sizeof x);                                        \
                acc[u] += x;                                                                \
                neg[u] -= (VL)(x < zero); /* a true comparison is -1 */                     \
            }                                                                               \
        double lane[LANES];                                                                 \
        memcpy(lane, acc, sizeof lane);                                                     \
        int64_t count = 0;                                                                  \
        for (int u = 0; u < LANES / W; u++)                                                 \
            for (int k = 0; k < W; k++) count += neg[u][k];                                 \
        for (int k = 0; i < t; i++, k++) lane[k] += v[i], count += v[i] < 0.0;              \
        *negatives = count;                                                                 \
        return combine_lanes(lane);                                                         \
    }                                                                                       \
                                                                                            \
    /* S1..S4 about `center` and the extremes; dev = v - center (the negatives are counted  \
     * by the pass that made the values: here they would take registers the sums need) */   \
    TARGET static void tile_central_##SUFFIX(const double *v, int64_t t, double center,     \
                                             double *dev, double *sums, double *lo_out,     \
                                             double *hi_out) {                              \
        VD s1[LANES / W], s2[LANES / W], s3[LANES / W], s4[LANES / W], lo[LANES / W],       \
            hi[LANES / W];                                                                  \
        VD c, zero = (VD){0}, inf;                                                          \
        for (int k = 0; k < W; k++) c[k] = center, inf[k] = INFINITY;                       \
        for (int u = 0; u < LANES / W; u++)                                                 \
            s1[u] = s2[u] = s3[u] = s4[u] = zero, lo[u] = inf, hi[u] = -inf;                \
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
            }                                                                               \
        double l1[LANES], l2[LANES], l3[LANES], l4[LANES], llo[LANES], lhi[LANES];          \
        memcpy(l1, s1, sizeof l1);                                                          \
        memcpy(l2, s2, sizeof l2);                                                          \
        memcpy(l3, s3, sizeof l3);                                                          \
        memcpy(l4, s4, sizeof l4);                                                          \
        memcpy(llo, lo, sizeof llo);                                                        \
        memcpy(lhi, hi, sizeof lhi);                                                        \
        for (int k = 0; i < t; i++, k++) {                                                  \
            double x = v[i], d = x - center, d2 = d * d;                                    \
            dev[i] = d;                                                                     \
            l1[k] += d;                                                                     \
            l2[k] += d2;                                                                    \
            l3[k] += d2 * d;                                                                \
            l4[k] += d2 * d2;                                                               \
            llo[k] = x < llo[k] ? x : llo[k];                                               \
            lhi[k] = x > lhi[k] ? x : lhi[k];                                               \
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
    }                                                                                       \
                                                                                            \
    /* A computed series over a tile (elementwise: the same bits at any width), returning  \
     * its sum as tile_sum would, and the number of its values < 0 into *negatives: counted \
     * for k1 = -l; 0 for k2 = l^2 / 2 and k3 = e^l - 1 - l, which in a finite tile are     \
     * never < 0 (k3's series is taken only for |l| < ~0.01, where it is l^2 (1/2 + l/6 +   \
     * ...) >= 0). k3 takes the series only in a vector with a value below the switch       \
     * (|l| < ~0.01, or NaN): the selected value is the same either way. */                 \
    TARGET static double tile_series_##SUFFIX(int64_t kind, const double *l, const double *em1, \
                                              double *out, int64_t t, int64_t *negatives) { \
        VD acc[LANES / W], zero = (VD){0};                                                  \
        VL neg[LANES / W];                                                                  \
        for (int u = 0; u < LANES / W; u++) acc[u] = zero, neg[u] = (VL){0};                \
        int64_t i = 0;                                                                      \
        if (kind == SERIES_NEGATE)                                                          \
            for (; i + LANES <= t; i += LANES)                                              \
                for (int u = 0; u < LANES / W; u++) {                                       \
                    VD x;                                                                   \
                    memcpy(&x, l + i + u * W, sizeof x);                                    \
                    x = -x;                                                                 \
                    memcpy(out + i + u * W, &x, sizeof x);                                  \
                    acc[u] += x;                                                            \
                    neg[u] -= (VL)(x < zero); /* a true comparison is -1 */                 \
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
        int64_t count = 0;                                                                  \
        for (int u = 0; u < LANES / W; u++)                                                 \
            for (int k = 0; k < W; k++) count += neg[u][k];                                 \
        for (int k = 0; i < t; i++, k++) {                                                  \
            out[i] = kind == SERIES_NEGATE        ? -l[i]                                   \
                     : kind == SERIES_HALF_SQUARE ? 0.5 * l[i] * l[i]                       \
                                                  : k3_value(em1[i], l[i]);                 \
            lane[k] += out[i];                                                              \
            count += kind == SERIES_NEGATE && out[i] < 0.0;                                 \
        }                                                                                   \
        *negatives = count;                                                                 \
        return combine_lanes(lane);                                                         \
    }                                                                                       \
                                                                                            \
    /* klest's expm1, elementwise */                                                        \
    KLEST_ELEMENTWISE(expm1, SUFFIX, TARGET, VD, W)                                         \
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
    }                                                                                       \
                                                                                            \
    /* The six co-moment sums of four rows in one pass (four loads per draw instead of      \
     * twelve): out = (01, 02, 03, 12, 13, 23), each exactly tile_dot's (the same lanes, the \
     * same order of operations). */                                                        \
    TARGET static void tile_cross4_##SUFFIX(const double *const *rows, int64_t t,           \
                                            double *out) {                                  \
        const double *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3];            \
        VD acc[6][LANES / W];                                                               \
        for (int p = 0; p < 6; p++)                                                         \
            for (int u = 0; u < LANES / W; u++) acc[p][u] = (VD){0};                        \
        int64_t i = 0;                                                                      \
        for (; i + LANES <= t; i += LANES)                                                  \
            for (int u = 0; u < LANES / W; u++) {                                           \
                VD a, b, c, d;                                                              \
                memcpy(&a, r0 + i + u * W, sizeof a);                                       \
                memcpy(&b, r1 + i + u * W, sizeof b);                                       \
                memcpy(&c, r2 + i + u * W, sizeof c);                                       \
                memcpy(&d, r3 + i + u * W, sizeof d);                                       \
                acc[0][u] += a * b;                                                         \
                acc[1][u] += a * c;                                                         \
                acc[2][u] += a * d;                                                         \
                acc[3][u] += b * c;                                                         \
                acc[4][u] += b * d;                                                         \
                acc[5][u] += c * d;                                                         \
            }                                                                               \
        double lane[6][LANES];                                                              \
        memcpy(lane, acc, sizeof lane);                                                     \
        for (int k = 0; i < t; i++, k++) {                                                  \
            lane[0][k] += r0[i] * r1[i];                                                    \
            lane[1][k] += r0[i] * r2[i];                                                    \
            lane[2][k] += r0[i] * r3[i];                                                    \
            lane[3][k] += r1[i] * r2[i];                                                    \
            lane[4][k] += r1[i] * r3[i];                                                    \
            lane[5][k] += r2[i] * r3[i];                                                    \
        }                                                                                   \
        for (int p = 0; p < 6; p++) out[p] = combine_lanes(lane[p]);                        \
    }

KLEST_EXPM1_VECTOR(generic, , v2d, v2l, v2u, KLEST_ALL128)
KLEST_LOG_VECTOR(generic, , v2d, v2l, v2u, 2, KLEST_ALL128)
KLEST_TILE_KERNELS(generic, , v2d, v2l, 2, __builtin_ia32_minpd, __builtin_ia32_maxpd,
                   KLEST_ALL128)
KLEST_NORMAL_FILL(generic, , v2d, v2l, 2, KLEST_ALL128)
#if defined(__x86_64__) && defined(__GNUC__)
#define KLEST_X86_VARIANTS 1
KLEST_EXPM1_VECTOR(avx2, __attribute__((target("avx2"))), v4d, v4l, v4u, KLEST_ALL256)
KLEST_LOG_VECTOR(avx2, __attribute__((target("avx2"))), v4d, v4l, v4u, 4, KLEST_ALL256)
KLEST_TILE_KERNELS(avx2, __attribute__((target("avx2"))), v4d, v4l, 4, __builtin_ia32_minpd256,
                   __builtin_ia32_maxpd256, KLEST_ALL256)
/* (the AVX-512 level draws with the AVX2 sampler: eight-lane vectors, with their eight table
 * loads and a 5.5% chance of leaving one, were measured slower) */
KLEST_NORMAL_FILL(avx2, __attribute__((target("avx2"))), v4d, v4l, 4, KLEST_ALL256)
/* AVX-512's minpd / maxpd: all lanes, the current rounding mode (no rounding happens) */
#define KLEST_MIN512(a, b) __builtin_ia32_minpd512_mask((a), (b), (b), (unsigned char)0xff, 4)
#define KLEST_MAX512(a, b) __builtin_ia32_maxpd512_mask((a), (b), (b), (unsigned char)0xff, 4)
KLEST_EXPM1_VECTOR(avx512, __attribute__((target("avx512f"))), v8d, v8l, v8u, KLEST_ALL512)
KLEST_LOG_VECTOR(avx512, __attribute__((target("avx512f"))), v8d, v8l, v8u, 8, KLEST_ALL512)
KLEST_TILE_KERNELS(avx512, __attribute__((target("avx512f"))), v8d, v8l, 8, KLEST_MIN512,
                   KLEST_MAX512, KLEST_ALL512)
#endif

typedef struct {
    double (*sum)(const double *, int64_t, int64_t *);
    void (*central)(const double *, int64_t, double, double *, double *, double *, double *);
    double (*dot)(const double *, const double *, int64_t);
    void (*cross4)(const double *const *, int64_t, double *);
    double (*series)(int64_t, const double *, const double *, double *, int64_t, int64_t *);
    void (*expm1)(const double *, double *, int64_t);
    void (*log)(const double *, double *, int64_t);
    void (*log1p)(const double *, double *, int64_t);
    void (*normal_fill)(pcg64_ahead *, double *, int64_t, double, double, int64_t, double,
                        double, double);
} tile_kernels;

static const tile_kernels kernel_variants[] = {
    {tile_sum_generic, tile_central_generic, tile_dot_generic, tile_cross4_generic,
     tile_series_generic, tile_expm1_generic, tile_log_generic, tile_log1p_generic,
     normal_fill_generic},
#ifdef KLEST_X86_VARIANTS
    {tile_sum_avx2, tile_central_avx2, tile_dot_avx2, tile_cross4_avx2, tile_series_avx2,
     tile_expm1_avx2, tile_log_avx2, tile_log1p_avx2, normal_fill_avx2},
    {tile_sum_avx512, tile_central_avx512, tile_dot_avx512, tile_cross4_avx512,
     tile_series_avx512, tile_expm1_avx512, tile_log_avx512, tile_log1p_avx512,
     normal_fill_avx2},
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

/* The variant in use (full_kl.c dispatches on it too). */
int64_t klest_current_simd_level(void) {
    if (simd_level < 0) simd_level = (int)klest_best_simd_level();
    return simd_level;
}

static const tile_kernels *kernels(void) {
    if (simd_level < 0) simd_level = (int)klest_best_simd_level();
    return &kernel_variants[simd_level];
}

/* out[j] = normal_draw(...) for j < n (the variant's normal_fill); state = [hi, lo, inc_hi,
 * inc_lo] of the PCG64 state, the new state written back. */
void klest_fill_normal(uint64_t *state, double *out, int64_t n, double scale, double loc,
                       int64_t transform, double a, double b, double c) {
    pcg64_ahead g;
    pcg64_ahead_open(&g, state);
    kernels()->normal_fill(&g, out, n, scale, loc, transform, a, b, c);
    pcg64_ahead_close(&g, state);
}

/* out[j] = NumPy's draw of the family (family_stream.h: FAMILY_LAPLACE, ..., parameters p0,
 * p1) for j < n; state as klest_fill_normal's. Returns 0, or -2 for an unknown family (the
 * state untouched). */
int klest_fill_family(uint64_t *state, double *out, int64_t n, int64_t family, double p0,
                      double p1) {
    if (family < FAMILY_LAPLACE || family > FAMILY_BETA) return -2;
    pcg64_ahead g;
    pcg64_ahead_open(&g, state);
    family_fill(&g, family, p0, p1, out, n);
    pcg64_ahead_close(&g, state);
    return 0;
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
    int64_t *negatives; /* E: the values < 0 of series e in the tile */
    double *cross; /* E * E */
    double *mean, *shift, *delta, *sums; /* E each */
    const tile_kernels *k;
} workspace;

static void finite_tile(const double *const *tile, int64_t size, int64_t t,
                        double *stats, double *joint, double *comoment, workspace *w) {
    double tt = (double)t;
    for (int64_t e = 0; e < size; e++) {
        double center = w->sums[e] / tt, s[4], lo, hi, m2, m3, m4;
        w->k->central(tile[e], t, center, w->devrow[e], s, &lo, &hi);
        double h = s[0] / tt;
        w->shift[e] = h;
        w->mean[e] = center + h;
        recentre(tt, s, h, &m2, &m3, &m4);
        w->cross[e * size + e] = m2;
        fold_series(stats + e * NFIELDS, tt, w->mean[e], m2, m3, m4, lo, hi, (double)w->negatives[e],
                    0.0, 0.0, 0.0);
    }
    double four[6];
    if (size == 4) /* the usual k1, k2, k3 and r - 1: one pass over the four rows */
        w->k->cross4((const double *const *)w->devrow, t, four);
    for (int64_t i = 0, p = 0; i < size; i++)
        for (int64_t j = i + 1; j < size; j++, p++) {
            /* deviations are about the first means: subtract t * h_i * h_j */
            double c = size == 4 ? four[p] : w->k->dot(w->devrow[i], w->devrow[j], t);
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
 * klest_block_stats) the log-ratio of one tile and its expm1. */
typedef struct {
    workspace w;
    double *memory, *values, *l_tile, *em1_tile;
    const double **tile;
    int64_t *sub;
} scratch;

/* The scratch rows start on 64-byte boundaries (a cache line, an AVX-512 vector): loads
 * that straddle two lines made the pass ~4% slower, and malloc aligns to 16 bytes only. */
#define KLEST_SCRATCH_ALIGN 64

static int scratch_open(scratch *x, int64_t size, int64_t hist_rows, int64_t bins) {
    size_t doubles = 2 * size * KLEST_TILE + 2 * KLEST_TILE + size * size + 4 * size;
    size_t bytes = sizeof(double) * doubles;
    bytes = (bytes + KLEST_SCRATCH_ALIGN - 1) / KLEST_SCRATCH_ALIGN * KLEST_SCRATCH_ALIGN;
    x->memory = aligned_alloc(KLEST_SCRATCH_ALIGN, bytes);
    x->tile = malloc(sizeof(double *) * size);
    x->w.devrow = malloc(sizeof(double *) * size);
    x->w.negatives = malloc(sizeof(int64_t) * size);
    x->sub = calloc((size_t)(hist_rows > 0 ? hist_rows : 1) * 4 * (bins + 2), sizeof(int64_t));
    if (x->memory == NULL || x->tile == NULL || x->w.devrow == NULL || x->w.negatives == NULL ||
        x->sub == NULL) {
        free(x->memory);
        free(x->tile);
        free(x->w.devrow);
        free(x->w.negatives);
        free(x->sub);
        return -1;
    }
    x->w.k = kernels();
    /* the rows of KLEST_TILE doubles first: each starts on a 64-byte boundary */
    x->w.dev = x->memory;
    x->values = x->w.dev + size * KLEST_TILE; /* computed series, E x KLEST_TILE */
    x->l_tile = x->values + size * KLEST_TILE;
    x->em1_tile = x->l_tile + KLEST_TILE;
    x->w.cross = x->em1_tile + KLEST_TILE;
    x->w.mean = x->w.cross + size * size;
    x->w.shift = x->w.mean + size;
    x->w.delta = x->w.shift + size;
    x->w.sums = x->w.delta + size;
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
    free(x->w.negatives);
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
        if (kinds[e] == SERIES_GIVEN) {
            x->tile[e] = rows[e] + start;
        } else if (kinds[e] == SERIES_EXPM1) {
            x->tile[e] = em1;
            if (em1_is_scratch) w->devrow[e] = em1;
        } else { /* k1 = -l, k2 = 0.5 * l * l, k3 = exp(l) - 1 - l, and their sum */
            w->sums[e] = w->k->series(kinds[e], l, em1, out, t, w->negatives + e);
            x->tile[e] = out;
            w->devrow[e] = out;
        }
        if (kinds[e] == SERIES_GIVEN || kinds[e] == SERIES_EXPM1)
            w->sums[e] = w->k->sum(x->tile[e], t, w->negatives + e);
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

/* The draws of a tile, as a pass over drawn blocks makes them: t log-ratios into x->l_tile
 * and their expm1 into x->em1_tile, from the stream g, as `how` says. */
typedef void (*tile_filler)(pcg64_ahead *g, const void *how, int64_t t, scratch *x);

/* Fold n_blocks blocks into the accumulator: block b is lengths[b] draws of fill from the
 * PCG64 state states[4 b .. 4 b + 3] (advanced in place), made and folded tile by tile in
 * scratch memory of its own, whose histogram copies are then added into histogram. What a
 * pass that draws its blocks returns: 0, or -1 without scratch memory. */
static int drawn_pass(uint64_t *states, int64_t n_blocks, const int64_t *lengths,
                      tile_filler fill, const void *how, const int64_t *kinds, int64_t size,
                      double *stats, double *joint, double *comoment, int64_t *histogram,
                      int64_t bins, int64_t hist_rows, int64_t stride, double low,
                      double width) {
    scratch x;
    if (scratch_open(&x, size, hist_rows, bins) != 0) return -1;
    for (int64_t b = 0; b < n_blocks; b++) {
        pcg64_ahead g;
        pcg64_ahead_open(&g, states + 4 * b);
        for (int64_t start = 0; start < lengths[b]; start += KLEST_TILE) {
            int64_t t = lengths[b] - start < KLEST_TILE ? lengths[b] - start : KLEST_TILE;
            fill(&g, how, t, &x);
            accumulate_tile(NULL, kinds, x.l_tile, x.em1_tile, 1, size, start, t, stats,
                            joint, comoment, bins, hist_rows, stride, low, width, &x);
        }
        pcg64_ahead_close(&g, states + 4 * b);
    }
    scratch_close(&x, histogram, bins, hist_rows);
    return 0;
}

/* klest_fill_normal(..., f[0], f[1], transform, f[2], f[3], f[4]) of a tile, then its
 * expm1. (Drawing a tile while taking expm1 of the previous one, in one loop, was measured
 * slower: the sampler and expm1 compete for the same execution ports rather than filling
 * each other's gaps.) */
typedef struct {
    const double *f;
    int64_t transform;
} normal_tiles;

static void normal_tile(pcg64_ahead *g, const void *how, int64_t t, scratch *x) {
    const normal_tiles *n = how;
    x->w.k->normal_fill(g, x->l_tile, t, n->f[0], n->f[1], n->transform, n->f[2], n->f[3],
                        n->f[4]);
    x->w.k->expm1(x->l_tile, x->em1_tile, t);
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
    if (states != NULL) {
        normal_tiles how = {f, transform};
        return drawn_pass(states, n_blocks, lengths, normal_tile, &how, kinds, size, stats,
                          joint, comoment, histogram, bins, hist_rows, stride, low, width);
    }
    scratch x;
    if (scratch_open(&x, size, hist_rows, bins) != 0) return -1;
    for (int64_t start = 0; start < m; start += KLEST_TILE) {
        int64_t t = m - start < KLEST_TILE ? m - start : KLEST_TILE;
        x.w.k->expm1(log_ratio + start, x.em1_tile, t);
        accumulate_tile(NULL, kinds, log_ratio + start, x.em1_tile, 1, size, start, t, stats,
                        joint, comoment, bins, hist_rows, stride, low, width, &x);
    }
    scratch_close(&x, histogram, bins, hist_rows);
    return 0;
}

/* A tile of Laplace draws x (NumPy's laplace(loc f[0], scale f[1]), family_stream.h) and
 * their log-ratio l = (|x - f[2]| * f[3] - |x - f[4]| * f[5]) + f[6] -- the operations, in
 * order, of klest's Laplace-pair log-ratio (klest/distributions/log_ratio.py: |x - m| / s as
 * |x - m| * (1 / s)) -- then expm1. */
static void laplace_tile(pcg64_ahead *g, const void *how, int64_t t, scratch *x) {
    const double *f = how;
    const double a = f[2], b = f[3], c = f[4], d = f[5], e = f[6];
    double *l = x->l_tile;
    family_fill(g, FAMILY_LAPLACE, f[0], f[1], l, t);
    for (int64_t j = 0; j < t; j++) /* a loop of its own: it vectorises */
        l[j] = (fabs(l[j] - a) * b - fabs(l[j] - c) * d) + e;
    x->w.k->expm1(l, x->em1_tile, t);
}

/* klest_block_stats for blocks of Laplace draws: block b is lengths[b] draws of laplace_tile
 * (f: its seven numbers) from the PCG64 state states[4 b .. 4 b + 3], advanced in place; the
 * caller (klest/native) checks that the draws are NumPy's (a finite loc, a finite scale > 0).
 * Returns as klest_accumulate. */
int klest_laplace_block_stats(uint64_t *states, int64_t n_blocks, const int64_t *lengths,
                              const double *f, const int64_t *kinds, int64_t size,
                              double *stats, double *joint, double *comoment,
                              int64_t *histogram, int64_t bins, int64_t hist_rows,
                              int64_t stride, double low, double width) {
    if (states == NULL || f == NULL || !kinds_are_valid(kinds, size, NULL, f, f)) return -2;
    return drawn_pass(states, n_blocks, lengths, laplace_tile, f, kinds, size, stats, joint,
                      comoment, histogram, bins, hist_rows, stride, low, width);
}

/* klest_block_stats for blocks of GaussianMixture draws, the bits of
 * klest.distributions.GaussianMixture._sample then klest_mixture_log_ratio: block b's m =
 * lengths[b] uniforms u come first in its stream (Generator.random's), its m standard normal
 * draws z (klest_fill_normal's) after them, so the normals are read from a second copy of
 * the stream jumped m outputs ahead. x = z * scale[i] + loc[i] for the component i of u: the
 * number of the K - 1 cut points (q's cumulative weights, nondecreasing) that are <= u, an
 * index in [0, K - 1] whatever the cuts hold. The block's state is left after its normals. */
void klest_mixture_log_ratio(const double *x, int64_t n, int64_t kq, const double *q_terms,
                             int64_t kp, const double *p_terms, double *out); /* mixture.c */

KLEST_INLINE int64_t mixture_component(const double *cuts, int64_t k, double u) {
    if (k <= 8) {
        int64_t i = 0;
        for (int64_t j = 0; j < k - 1; j++) i += cuts[j] <= u;
        return i;
    }
    int64_t lo = 0, hi = k - 1; /* the first j in [0, k - 1) with cuts[j] > u, else k - 1 */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (cuts[mid] <= u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int klest_mixture_block_stats(uint64_t *states, int64_t n_blocks, const int64_t *lengths,
                              int64_t k, const double *cuts, const double *locs,
                              const double *scales, int64_t kq, const double *q_terms,
                              int64_t kp, const double *p_terms, const int64_t *kinds,
                              int64_t size, double *stats, double *joint, double *comoment,
                              int64_t *histogram, int64_t bins, int64_t hist_rows,
                              int64_t stride, double low, double width) {
    if (states == NULL || locs == NULL || scales == NULL || q_terms == NULL ||
        p_terms == NULL || k < 1 || kq < 1 || kp < 1 || (k > 1 && cuts == NULL) ||
        !kinds_are_valid(kinds, size, NULL, locs, locs))
        return -2;
    scratch x;
    if (scratch_open(&x, size, hist_rows, bins) != 0) return -1;
    for (int64_t b = 0; b < n_blocks; b++) {
        uint64_t *state = states + 4 * b, ahead[4];
        pcg64_jump(state, (uint64_t)lengths[b], ahead);
        pcg64_ahead uniforms, normals;
        pcg64_ahead_open(&uniforms, state);
        pcg64_ahead_open(&normals, ahead);
        for (int64_t start = 0; start < lengths[b]; start += KLEST_TILE) {
            int64_t t = lengths[b] - start < KLEST_TILE ? lengths[b] - start : KLEST_TILE;
            double *u = x.em1_tile, *l = x.l_tile;
            int pos = uniforms.pos;
            for (int64_t j = 0; j < t; j++) u[j] = pcg64_ahead_take_double(&uniforms, &pos);
            uniforms.pos = pos;
            x.w.k->normal_fill(&normals, l, t, 1.0, 0.0, 0, 0.0, 0.0, 0.0);
            for (int64_t j = 0; j < t; j++) {
                int64_t i = mixture_component(cuts, k, u[j]);
                l[j] = l[j] * scales[i] + locs[i];
            }
            klest_mixture_log_ratio(l, t, kq, q_terms, kp, p_terms, l);
            x.w.k->expm1(l, x.em1_tile, t);
            accumulate_tile(NULL, kinds, l, x.em1_tile, 1, size, start, t, stats, joint,
                            comoment, bins, hist_rows, stride, low, width, &x);
        }
        pcg64_ahead_close(&normals, state);
    }
    scratch_close(&x, histogram, bins, hist_rows);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Categorical sampling                                                                      */
/* ---------------------------------------------------------------------------------------- */

/* The first i with cdf[i] > x, for x in [0, 1), by the guide table of g = scale buckets: in
 * [lo, hi] = [guide[b], guide[b + 1]], b = floor(x g), when cdf[hi] > x (a right guide). A
 * bucket of at most three entries, the usual one (g >= k), is counted without a branch
 * that depends on the draw: the answer is then lo plus the number of cdf[lo .. hi - 1] <= x
 * (cdf is nondecreasing), read as cdf[min(lo + m, hi)] <= x for m = 0, 1, 2 (cdf[hi] > x
 * adds nothing). The scan it replaces mispredicts its exit at most draws: the Categorical
 * engine's tiles at 1,000 categories took 14.3 ns per draw with it, 8.3 without (Intel
 * Xeon). The same answer as the scan, which a guide that is wrong in value (lo > hi, or
 * cdf[hi] <= x) still gets: the first i >= lo with cdf[i] > x. */
KLEST_INLINE int64_t guided_category(const double *cdf, const int32_t *guide, double scale,
                                     double x) {
    int64_t b = (int64_t)(x * scale);
    int64_t lo = guide[b], hi = guide[b + 1];
    if (lo <= hi && hi - lo <= 3 && cdf[hi] > x) {
        int64_t m1 = lo + 1 < hi ? lo + 1 : hi, m2 = lo + 2 < hi ? lo + 2 : hi;
        return lo + (cdf[lo] <= x) + (cdf[m1] <= x) + (cdf[m2] <= x);
    }
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
    return lo;
}

/* The categories c of u[0 .. n - 1], each in [0, 1), by guided_category: c into index and
 * table[stride c] into out0, table[stride c + 1] into out1 (each when not NULL). When the
 * tables are past the L2 cache (look_ahead: guide, cdf and table take 28 bytes a category
 * in the engine), a search is two dependent cache misses (guide, then cdf) and a third for
 * the table, while the searches of different draws are independent: each draw's guide entry
 * is then prefetched AHEAD_GUIDE draws before its search, its cdf and table lines AHEAD_CDF
 * draws before, so that the misses of many draws overlap. The same categories either way. */
#define AHEAD_GUIDE 16
#define AHEAD_CDF 8
#define LOOK_AHEAD_CATEGORIES 32768 /* 0.9 MB of tables in the engine */
/* whether the searches over (cdf, guide) look ahead: guide[g] + 1 is k for a right guide */
static int looks_ahead(const int32_t *guide, int64_t g) {
    return (int64_t)guide[g] + 1 >= LOOK_AHEAD_CATEGORIES;
}
KLEST_INLINE void guided_categories(const double *cdf, const int32_t *guide, double scale,
                                    int look_ahead, const double *u, int64_t n, int64_t *index,
                                    const double *table, int64_t stride, double *out0,
                                    double *out1) {
    for (int64_t j = 0; j < n + (look_ahead ? AHEAD_GUIDE : 0); j++) {
        int64_t m = j;
        if (look_ahead) {
            if (j < n) __builtin_prefetch(guide + (int64_t)(u[j] * scale));
            int64_t ahead = j - (AHEAD_GUIDE - AHEAD_CDF);
            if (ahead >= 0 && ahead < n) {
                int64_t lo = guide[(int64_t)(u[ahead] * scale)];
                __builtin_prefetch(cdf + lo);
                if (table != NULL) __builtin_prefetch(table + stride * lo);
            }
            m = j - AHEAD_GUIDE;
            if (m < 0) continue;
        }
        int64_t c = guided_category(cdf, guide, scale, u[m]);
        if (index != NULL) index[m] = c;
        if (out0 != NULL) out0[m] = table[stride * c];
        if (out1 != NULL) out1[m] = table[stride * c + 1];
    }
}

/* Inverse CDF with a guide table (Chen and Asau 1974): the first i with cdf[i] > u -- NumPy's
 * searchsorted(cdf, u, side="right") -- for a nondecreasing cdf with cdf[k - 1] = 1 and
 * 0 <= u < 1. guide[b], b = 0..g, is the first i with cdf[i] > b / g (guide[g] = k - 1)
 * for g a power of two, so b = floor(u * g) is exact and the answer lies in
 * [guide[b], guide[b + 1]]: a short scan on average ((k + g) / g entries), a binary search
 * in the rare long bucket. index[j] gets the category (when index is not NULL); values[j]
 * gets table[category] (when table is not NULL). Returns -1, or the first j whose u[j] is
 * not in [0, 1) (NaN included), having made the draws before it: such a u would index
 * outside guide and cdf. The caller (klest/native) checks the rest: g >= 1, every guide
 * entry in [0, k - 1] and cdf nondecreasing with cdf[k - 1] = 1, so that the scan and the
 * search stay inside cdf (guide[g] + 1, k for a right guide, only decides the look-ahead). */
int64_t klest_categorical_inverse_cdf(const double *cdf, const int32_t *guide, int64_t g,
                                      const double *u, int64_t n, int64_t *index,
                                      const double *table, double *values) {
    int64_t valid = 0; /* the draws before the first bad u are made */
    while (valid < n && u[valid] >= 0.0 && u[valid] < 1.0) valid++;
    /* a constant look_ahead in each call: each gets a loop without the other's branches */
    if (looks_ahead(guide, g))
        guided_categories(cdf, guide, (double)g, 1, u, valid, index, table, 1,
                          table != NULL ? values : NULL, NULL);
    else
        guided_categories(cdf, guide, (double)g, 0, u, valid, index, table, 1,
                          table != NULL ? values : NULL, NULL);
    return valid < n ? valid : -1;
}

/* klest_block_stats for blocks of Categorical draws. Block b (of n_blocks) is lengths[b]
 * categories, each that of klest_categorical_inverse_cdf for the uniform u = (PCG64 word
 * >> 11) / 2^53 (NumPy's Generator.random) from the state states[4 b .. 4 b + 3] (advanced
 * in place); the log-ratio of category c and its expm1 are pairs[2 c] and pairs[2 c + 1]
 * (klest_expm1 of the log-ratio table: the same bits as taking expm1 draw by draw), so a
 * draw costs its search and one cache line, never an expm1. The caller (klest/native) checks
 * cdf, guide (g + 1 entries) and pairs (2 k values) as for klest_categorical_inverse_cdf;
 * every u here is in [0, 1). Returns as klest_accumulate. */
typedef struct {
    const double *cdf, *pairs;
    const int32_t *guide;
    double scale;
} categorical_tiles;

/* The tile's uniforms first, then their categories (so that the searches can look ahead) */
#define KLEST_CATEGORICAL_TILE(NAME, LOOK_AHEAD)                                             \
    static void NAME(pcg64_ahead *g, const void *how, int64_t t, scratch *x) {              \
        const categorical_tiles *c = how;                                                   \
        double u[KLEST_TILE];                                                               \
        int pos = g->pos;                                                                   \
        for (int64_t j = 0; j < t; j++) u[j] = pcg64_ahead_take_double(g, &pos);            \
        g->pos = pos;                                                                       \
        guided_categories(c->cdf, c->guide, c->scale, LOOK_AHEAD, u, t, NULL, c->pairs, 2,  \
                          x->l_tile, x->em1_tile);                                          \
    }
KLEST_CATEGORICAL_TILE(categorical_tile, 0)
KLEST_CATEGORICAL_TILE(categorical_tile_ahead, 1)

int klest_categorical_block_stats(uint64_t *states, int64_t n_blocks, const int64_t *lengths,
                                  const double *cdf, const int32_t *guide, int64_t g,
                                  const double *pairs, const int64_t *kinds, int64_t size,
                                  double *stats, double *joint, double *comoment,
                                  int64_t *histogram, int64_t bins, int64_t hist_rows,
                                  int64_t stride, double low, double width) {
    if (states == NULL || cdf == NULL || guide == NULL || pairs == NULL ||
        !kinds_are_valid(kinds, size, NULL, pairs, pairs))
        return -2;
    categorical_tiles how = {cdf, pairs, guide, (double)g};
    tile_filler fill = looks_ahead(guide, g) ? categorical_tile_ahead : categorical_tile;
    return drawn_pass(states, n_blocks, lengths, fill, &how, kinds, size, stats, joint,
                      comoment, histogram, bins, hist_rows, stride, low, width);
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
    int64_t negatives;
    kernels()->series(SERIES_K3, l, expm1_l, out, n, &negatives);
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
