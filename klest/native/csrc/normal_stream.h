/* klest stream v1's Gaussian draws: NumPy's Generator(PCG64).standard_normal, value for
 * value -- the PCG64 step (128-bit LCG, XSL-RR output) and NumPy's ziggurat.
 *
 * The LCG is one long dependency chain (a 128-bit multiply-add per output: ~6 cycles), which
 * bounds a sampler that steps it once per draw. Here its outputs are made ahead, a batch at
 * a time, by four interleaved chains: chain j holds the states of outputs j, j + 4, j + 8,
 * ..., each stepped by the four-step map s -> A4 s + C4 (A4 = A^4, C4 = (A^3 + A^2 + A + 1)
 * inc, mod 2^128), so four multiplies are in flight at once. The outputs are the same
 * uint64 sequence in the same order, and the ziggurat consumes them exactly as NumPy does
 * (one per draw, more in its rare branches), so the draws are the same bits; only the
 * state written back needs care: it is the state after the last output consumed, found by
 * stepping from the batch's first state (at most one batch of single steps, once per call).
 *
 * With the outputs in memory, the ziggurat's common case (the rectangle, 99.3% of draws) runs
 * on W draws at once (KLEST_NORMAL_FILL): W outputs, their layers, values and acceptance in
 * vector registers, the same IEEE operations as the scalar draw (the integer to double
 * conversion is exact either way). A vector in which some draw falls outside its rectangle
 * keeps the draws before it, and the scalar draw takes over at that draw, with the rare
 * branches consuming the outputs after it as NumPy does; the vectors resume after it.
 * Included by kernels.c only, after vector_math.h. */
#ifndef KLEST_NORMAL_STREAM_H
#define KLEST_NORMAL_STREAM_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "ziggurat_tables.h"

#ifndef KLEST_INLINE
#define KLEST_INLINE static inline __attribute__((always_inline))
#endif

typedef unsigned __int128 u128;

#define KLEST_PCG64_MULTIPLIER \
    (((u128)2549297995355413924ULL << 64) | (u128)4865540595714422341ULL)

/* outputs made per batch: a multiple of 4 */
#define KLEST_RAW_BATCH 512

KLEST_INLINE uint64_t pcg64_output(u128 state) {
    uint64_t value = (uint64_t)(state >> 64) ^ (uint64_t)state;
    unsigned rot = (unsigned)(state >> 122);
    return (value >> rot) | (value << ((-rot) & 63u));
}

/* A PCG64 stream read through a batch of outputs made ahead. */
typedef struct {
    u128 inc, mul4, inc4;
    u128 start; /* the state before raw[0]: raw[i] is the output of step i + 1 from it */
    u128 next;  /* the state after the batch's last step: the next batch's start */
    int pos;    /* raw[pos] is the next output handed out */
    uint64_t raw[KLEST_RAW_BATCH];
} pcg64_ahead;

static void pcg64_ahead_fill(pcg64_ahead *g) {
    const u128 m = KLEST_PCG64_MULTIPLIER, inc = g->inc, m4 = g->mul4, c4 = g->inc4;
    u128 a = g->start * m + inc, b = a * m + inc, c = b * m + inc, d = c * m + inc;
    for (int i = 0;; i += 4) {
        g->raw[i] = pcg64_output(a);
        g->raw[i + 1] = pcg64_output(b);
        g->raw[i + 2] = pcg64_output(c);
        g->raw[i + 3] = pcg64_output(d);
        if (i + 4 == KLEST_RAW_BATCH) break;
        a = a * m4 + c4, b = b * m4 + c4, c = c * m4 + c4, d = d * m4 + c4;
    }
    g->next = d;
    g->pos = 0;
}

/* Open a stream at state [hi, lo] with increment [inc_hi, inc_lo] (NumPy's PCG64 state). */
static void pcg64_ahead_open(pcg64_ahead *g, const uint64_t *state) {
    const u128 m = KLEST_PCG64_MULTIPLIER;
    g->inc = ((u128)state[2] << 64) | state[3];
    g->start = ((u128)state[0] << 64) | state[1];
    u128 m2 = m * m, c2 = g->inc * m + g->inc;
    g->mul4 = m2 * m2;
    g->inc4 = c2 * m2 + c2;
    pcg64_ahead_fill(g);
}

/* The state after the outputs handed out so far, written back as [hi, lo]. */
static void pcg64_ahead_close(const pcg64_ahead *g, uint64_t *state) {
    const u128 m = KLEST_PCG64_MULTIPLIER;
    u128 s = g->start;
    for (int i = 0; i < g->pos; i++) s = s * m + g->inc;
    state[0] = (uint64_t)(s >> 64);
    state[1] = (uint64_t)s;
}

/* NumPy's PCG64 state [hi, lo, inc_hi, inc_lo] advanced by `steps` outputs, into `out`: the
 * LCG's jump ahead in O(log steps) (Brown, "Random number generation with arbitrary
 * strides", 1994), as PCG64.advance does. */
static void pcg64_jump(const uint64_t *state, uint64_t steps, uint64_t *out) {
    u128 mult = KLEST_PCG64_MULTIPLIER, plus = ((u128)state[2] << 64) | state[3];
    u128 acc_mult = 1, acc_plus = 0;
    for (; steps > 0; steps >>= 1) {
        if (steps & 1) acc_mult *= mult, acc_plus = acc_plus * mult + plus;
        plus = (mult + 1) * plus;
        mult *= mult;
    }
    u128 s = acc_mult * (((u128)state[0] << 64) | state[1]) + acc_plus;
    out[0] = (uint64_t)(s >> 64), out[1] = (uint64_t)s, out[2] = state[2], out[3] = state[3];
}

static __attribute__((noinline)) void pcg64_ahead_refill(pcg64_ahead *g) {
    g->start = g->next;
    pcg64_ahead_fill(g);
}

/* The next output of g, with *pos standing for g->pos: the caller keeps it in a local (a
 * register) across a loop of draws and writes it back after the loop. */
KLEST_INLINE uint64_t pcg64_ahead_take(pcg64_ahead *g, int *pos) {
    if (__builtin_expect(*pos == KLEST_RAW_BATCH, 0)) {
        pcg64_ahead_refill(g);
        *pos = 0;
    }
    return g->raw[(*pos)++];
}

/* NumPy's next_double: the top 53 bits over 2^53, in [0, 1). */
KLEST_INLINE double pcg64_ahead_take_double(pcg64_ahead *g, int *pos) {
    return (double)(int64_t)(pcg64_ahead_take(g, pos) >> 11) * (1.0 / 9007199254740992.0);
}

/* The ziggurat's rare branches (0.7% of draws): the tail beyond r (Marsaglia's method) and
 * the wedges. Out of line, so that the common path keeps everything in registers. Returns
 * the draw when accepted, NaN (which the ziggurat never gives) to draw again. */
static __attribute__((noinline)) double ziggurat_rare(pcg64_ahead *g, uint64_t rabs, int idx,
                                                      double x) {
    if (idx == 0) {
        for (;;) {
            double xx = -ziggurat_nor_inv_r * log1p(-pcg64_ahead_take_double(g, &g->pos));
            double yy = -log1p(-pcg64_ahead_take_double(g, &g->pos));
            if (yy + yy > xx * xx)
                return ((rabs >> 8) & 0x1) ? -(ziggurat_nor_r + xx) : ziggurat_nor_r + xx;
        }
    }
    double u = pcg64_ahead_take_double(g, &g->pos);
    return (fi_double[idx - 1] - fi_double[idx]) * u + fi_double[idx] < exp(-0.5 * x * x) ? x
                                                                                          : NAN;
}

/* NumPy's random_standard_normal (the ziggurat), -0.0 included. */
KLEST_INLINE double standard_normal_draw(pcg64_ahead *g, int *pos) {
    for (;;) {
        uint64_t r = pcg64_ahead_take(g, pos);
        int idx = (int)(r & 0xff);
        r >>= 8;
        uint64_t rabs = (r >> 1) & 0x000fffffffffffffULL;
        double x = (double)(int64_t)rabs * wi_double[idx]; /* rabs < 2^52: exact either way */
        /* x = -x when the sign bit is set, without a (50% mispredicted) branch */
        uint64_t bits;
        memcpy(&bits, &x, sizeof bits);
        bits ^= (r & 0x1) << 63;
        memcpy(&x, &bits, sizeof x);
        if (rabs < ki_double[idx]) return x; /* the rectangle: 99.3% of draws */
        g->pos = *pos;
        x = ziggurat_rare(g, rabs, idx, x);
        *pos = g->pos;
        if (x == x) return x; /* accepted */
    }
}

/* x = f(z * scale + loc) in place, for a double or a vector of them (the same operations
 * either way): z * scale + loc is a multiply then an add (NumPy's z *= scale; z += loc), and
 * f, by `transform`, is 0: x;  1: x * b + c;  2: ((x * a) + b) * x + c  (klest.log_ratio's
 * Gaussian log-ratios, operation for operation). */
#define KLEST_NORMAL_TRANSFORM(x, scale, loc, transform, a, b, c) \
    do {                                                          \
        (x) = (x) * (scale) + (loc);                              \
        if ((transform) == 1)                                     \
            (x) = (x) * (b) + (c);                                \
        else if ((transform) == 2)                                \
            (x) = (((x) * (a)) + (b)) * (x) + (c);                \
    } while (0)

/* One draw: f(z * scale + loc), z the standard normal draw (KLEST_NORMAL_TRANSFORM). */
KLEST_INLINE double normal_draw(pcg64_ahead *g, int *pos, double scale, double loc,
                                int64_t transform, double a, double b, double c) {
    double x = standard_normal_draw(g, pos);
    KLEST_NORMAL_TRANSFORM(x, scale, loc, transform, a, b, c);
    return x;
}

/* normal_fill_SUFFIX(g, out, n, scale, loc, transform, a, b, c): out[j] = normal_draw(g, ...)
 * for j < n, W draws at a time where each is in its rectangle. The vector loop is a loop of
 * its own, with no call in it and `transform` a constant (one copy per transform): its
 * constants then stay in registers, where a call (the scalar draw) would have them reloaded
 * at every vector. */
#define KLEST_NORMAL_FILL(SUFFIX, TARGET, VD, VL, W, ALL)                                    \
    TARGET KLEST_INLINE void normal_fill_body_##SUFFIX(pcg64_ahead *g, double *out,         \
                                                       int64_t n, double scale, double loc, \
                                                       const int64_t transform, double a,   \
                                                       double b, double c) {                \
        typedef uint64_t VU __attribute__((vector_size(sizeof(VD))));                       \
        int pos = g->pos;                                                                   \
        int64_t j = 0;                                                                      \
        while (j < n) {                                                                     \
            const VU mask52 = (VU){0} + 0x000fffffffffffffULL, low_byte = (VU){0} + 0xff,   \
                     one = (VU){0} + 1, two52_bits = (VU){0} + 0x4330000000000000ULL;       \
            const VD two52 = (VD){0} + 0x1p52;                                              \
            const uint64_t *raw = g->raw;                                                   \
            while (pos + W <= KLEST_RAW_BATCH && j + W <= n) {                              \
                VU r, ki, idx, rabs;                                                        \
                VD wi;                                                                      \
                memcpy(&r, raw + pos, sizeof r);                                            \
                idx = r & low_byte;                                                         \
                r >>= 8;                                                                    \
                rabs = (r >> 1) & mask52;                                                   \
                for (int u = 0; u < W; u++) wi[u] = wi_double[idx[u]], ki[u] = ki_double[idx[u]]; \
                /* (double)rabs exactly: 2^52 + rabs has rabs's bits below 2^52 */          \
                VD x = ((VD)(rabs | two52_bits) - two52) * wi;                              \
                x = (VD)((VU)x ^ ((r & one) << 63));                                        \
                VL accept = (VL)rabs < (VL)ki; /* both < 2^63 */                            \
                KLEST_NORMAL_TRANSFORM(x, scale, loc, transform, a, b, c);                  \
                if (!ALL(accept)) {                                                         \
                    int m = 0;                                                              \
                    while (accept[m]) m++;                                                  \
                    for (int u = 0; u < m; u++) out[j + u] = x[u];                          \
                    j += m, pos += m; /* draw j leaves its rectangle: the scalar draw */    \
                    break;                                                                  \
                }                                                                           \
                memcpy(out + j, &x, sizeof x);                                              \
                j += W, pos += W;                                                           \
            }                                                                               \
            /* a draw outside its rectangle, the batch's last outputs, or the last draws */ \
            if (j < n) out[j++] = normal_draw(g, &pos, scale, loc, transform, a, b, c);     \
        }                                                                                   \
        g->pos = pos;                                                                       \
    }                                                                                       \
                                                                                            \
    TARGET static void normal_fill_##SUFFIX(pcg64_ahead *g, double *out, int64_t n,         \
                                            double scale, double loc, int64_t transform,    \
                                            double a, double b, double c) {                 \
        if (transform == 1)                                                                 \
            normal_fill_body_##SUFFIX(g, out, n, scale, loc, 1, a, b, c);                   \
        else if (transform == 2)                                                            \
            normal_fill_body_##SUFFIX(g, out, n, scale, loc, 2, a, b, c);                   \
        else                                                                                \
            normal_fill_body_##SUFFIX(g, out, n, scale, loc, 0, a, b, c);                   \
    }

#endif
