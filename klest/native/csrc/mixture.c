/* klest_mixture_log_ratio: log p(x) - log q(x) for two finite mixtures of 1-D normals, draw
 * by draw; called through ctypes by klest.native.bindings.mixture_log_ratio (which validates
 * every argument first). The arithmetic is klest/native/mixture_kernel.py's, operation for
 * operation (the same bits: that module is the definition and the fallback).
 *
 * A mixture is given as its (3, K) rows of terms over the components of positive weight:
 * a_j = log w_j - log s_j, the means m_j and c_j = sqrt(1/2) / s_j. Then
 *
 *     log sum_j w_j N(x; m_j, s_j^2) = top + log(total) - log(2 pi) / 2,
 *     t_j = a_j - ((x - m_j) c_j)^2,  top = max_j t_j,  total = sum_j exp(t_j - top),
 *
 * with total = 1 for K = 1, 2 + expm1(min - max) for K = 2 (one expm1, not two) and
 * K + sum_j expm1(t_j - top) (in component order) otherwise; max and min propagate NaN, as
 * NumPy's maximum and minimum do. The log-ratio is (top_p - top_q) + log(total_p / total_q).
 * Where every term of both sides is -inf (|x| = inf) it is NaN, as the difference of the two
 * log-densities; the caller guards such draws.
 *
 * Tiles of MIX_TILE draws keep the five rows of work (40 KB) on the stack, in cache; expm1
 * and log are kernels.c's (klest_expm1, klest_log: the same bits at every SIMD level).
 * `out` may be `x` (a tile's draws are read before its results are written).
 */
#include <stdint.h>

void klest_expm1(const double *x, double *out, int64_t n); /* kernels.c */
void klest_log(const double *x, double *out, int64_t n);   /* kernels.c */

#define MIX_TILE 1024

static inline double max_nan(double a, double b) { return (a > b || a != a) ? a : b; }
static inline double min_nan(double a, double b) { return (a < b || a != a) ? a : b; }

/* t_j = a_j - ((x - m_j) c_j)^2 for the draws x[0..n), into t */
static void component_terms(const double *x, int64_t n, double a, double m, double c, double *t) {
    for (int64_t i = 0; i < n; i++) {
        double d = (x[i] - m) * c;
        t[i] = a - d * d;
    }
}

/* top and total of one mixture (terms: its (3, k) rows) over the draws x[0..n) */
static void log_sum_exp_parts(const double *x, int64_t n, int64_t k, const double *terms,
                              double *top, double *total, double *work) {
    const double *a = terms, *m = terms + k, *c = terms + 2 * k;
    component_terms(x, n, a[0], m[0], c[0], top);
    if (k == 1) {
        for (int64_t i = 0; i < n; i++) total[i] = 1.0;
        return;
    }
    component_terms(x, n, a[1], m[1], c[1], work);
    if (k == 2) {
        for (int64_t i = 0; i < n; i++) {
            double high = max_nan(top[i], work[i]);
            total[i] = min_nan(top[i], work[i]) - high; /* -|t_0 - t_1| */
            top[i] = high;
        }
        klest_expm1(total, total, n);
        for (int64_t i = 0; i < n; i++) total[i] += 2.0;
        return;
    }
    /* total keeps t_0 while top becomes the maximum of every term */
    for (int64_t i = 0; i < n; i++) total[i] = top[i], top[i] = max_nan(top[i], work[i]);
    for (int64_t j = 2; j < k; j++) {
        component_terms(x, n, a[j], m[j], c[j], work);
        for (int64_t i = 0; i < n; i++) top[i] = max_nan(top[i], work[i]);
    }
    for (int64_t i = 0; i < n; i++) work[i] = total[i] - top[i];
    klest_expm1(work, work, n);
    for (int64_t i = 0; i < n; i++) total[i] = 0.0 + work[i];
    for (int64_t j = 1; j < k; j++) {
        component_terms(x, n, a[j], m[j], c[j], work);
        for (int64_t i = 0; i < n; i++) work[i] -= top[i];
        klest_expm1(work, work, n);
        for (int64_t i = 0; i < n; i++) total[i] += work[i];
    }
    for (int64_t i = 0; i < n; i++) total[i] += (double)k;
}

void klest_mixture_log_ratio(const double *x, int64_t n, int64_t kq, const double *q_terms,
                             int64_t kp, const double *p_terms, double *out) {
    double top_p[MIX_TILE], total_p[MIX_TILE], top_q[MIX_TILE], total_q[MIX_TILE];
    double work[MIX_TILE];
    for (int64_t start = 0; start < n; start += MIX_TILE) {
        int64_t t = n - start < MIX_TILE ? n - start : MIX_TILE;
        log_sum_exp_parts(x + start, t, kp, p_terms, top_p, total_p, work);
        log_sum_exp_parts(x + start, t, kq, q_terms, top_q, total_q, work);
        for (int64_t i = 0; i < t; i++) total_p[i] /= total_q[i];
        klest_log(total_p, total_p, t);
        for (int64_t i = 0; i < t; i++) out[start + i] = (top_p[i] - top_q[i]) + total_p[i];
    }
}
