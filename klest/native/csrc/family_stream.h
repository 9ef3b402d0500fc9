/* NumPy's Generator(PCG64) samplers of four families, value for value: laplace, gamma,
 * standard_t and beta, as numpy/random/src/distributions/distributions.c writes them
 * (random_laplace, random_standard_gamma's Marsaglia-Tsang branch, random_standard_t,
 * random_beta's gamma branch), over normal_stream.h's PCG64 outputs and ziggurat. NumPy calls
 * the bit generator through a function pointer for every uniform and normal; here they are
 * inlined. The same libm functions (log, sqrt) are called on the same arguments in the same
 * order, so the draws are the same bits; the tests compare them with NumPy's methods over
 * millions of draws. Only the parameters where NumPy takes these branches come here (klest's
 * wrapper, klest/native/sampler.py, sends the rest to NumPy): gamma and standard_t need a
 * shape (df / 2) > 1, beta both shapes > 1 (below 1 NumPy takes branches with pow and its
 * exponential ziggurat, not reproduced here). Included by kernels.c only, after
 * normal_stream.h. */
#ifndef KLEST_FAMILY_STREAM_H
#define KLEST_FAMILY_STREAM_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "normal_stream.h"

enum { FAMILY_LAPLACE = 0, FAMILY_GAMMA = 1, FAMILY_STANDARD_T = 2, FAMILY_BETA = 3 };

/* mask ? a : b for a mask of all ones or zero, without a branch */
KLEST_INLINE double laplace_select(uint64_t mask, double a, double b) {
    uint64_t x, y;
    memcpy(&x, &a, sizeof x);
    memcpy(&y, &b, sizeof y);
    x = (x & mask) | (y & ~mask);
    memcpy(&a, &x, sizeof a);
    return a;
}

/* random_laplace(loc, scale): U == 0 is rejected and drawn again. NumPy branches on
 * u >= 0.5 (loc - scale log(2 - u - u), else loc + scale log(u + u)); here both sides are
 * one log of a selected argument and a selected sign, the same operations on the same
 * values, without a branch that half the draws mispredict. */
KLEST_INLINE double laplace_draw(pcg64_ahead *g, int *pos, double loc, double scale) {
    double u;
    do
        u = pcg64_ahead_take_double(g, pos);
    while (__builtin_expect(u == 0.0, 0));
    uint64_t upper = -(uint64_t)(u >= 0.5); /* all ones or zero: a select by bit masks */
    double t = scale * log(laplace_select(upper, 2.0 - u - u, u + u));
    return laplace_select(upper, loc - t, loc + t);
}

/* Marsaglia and Tsang's constants for a shape > 1, as random_standard_gamma forms them. */
typedef struct {
    double b, c;
} gamma_constants;

KLEST_INLINE gamma_constants gamma_setup(double shape) {
    gamma_constants k;
    k.b = shape - 1. / 3.;
    k.c = 1. / sqrt(9 * k.b);
    return k;
}

/* random_standard_gamma for a shape > 1 (shape != 1). */
KLEST_INLINE double standard_gamma_draw(pcg64_ahead *g, int *pos, gamma_constants k) {
    for (;;) {
        double x, v;
        do {
            x = standard_normal_draw(g, pos);
            v = 1.0 + k.c * x;
        } while (v <= 0.0);
        v = v * v * v;
        double u = pcg64_ahead_take_double(g, pos);
        if (u < 1.0 - 0.0331 * (x * x) * (x * x)) return k.b * v;
        if (log(u) < 0.5 * x * x + k.b * (1. - v + log(v))) return k.b * v;
    }
}

/* out[j] = the family's draw for j < n: LAPLACE (loc = p0, scale = p1), GAMMA (shape = p0 > 1,
 * scale = p1: random_gamma's scale * standard gamma), STANDARD_T (df = p0 > 2), BETA
 * (a = p0 > 1, b = p1 > 1). */
static void family_fill(pcg64_ahead *g, int64_t family, double p0, double p1, double *out,
                        int64_t n) {
    int pos = g->pos;
    if (family == FAMILY_LAPLACE) {
        for (int64_t j = 0; j < n; j++) out[j] = laplace_draw(g, &pos, p0, p1);
    } else if (family == FAMILY_GAMMA) {
        gamma_constants k = gamma_setup(p0);
        for (int64_t j = 0; j < n; j++) out[j] = p1 * standard_gamma_draw(g, &pos, k);
    } else if (family == FAMILY_STANDARD_T) {
        gamma_constants k = gamma_setup(p0 / 2);
        double root = sqrt(p0 / 2);
        for (int64_t j = 0; j < n; j++) {
            double num = standard_normal_draw(g, &pos);
            double denom = standard_gamma_draw(g, &pos, k);
            out[j] = root * num / sqrt(denom);
        }
    } else {
        gamma_constants ka = gamma_setup(p0), kb = gamma_setup(p1);
        for (int64_t j = 0; j < n; j++) {
            double ga = standard_gamma_draw(g, &pos, ka);
            double gb = standard_gamma_draw(g, &pos, kb);
            out[j] = ga / (ga + gb);
        }
    }
    g->pos = pos;
}

#endif
