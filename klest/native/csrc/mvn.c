/* klest_mvn_ratio_from_standardized: the log-ratio log p(x) - log q(x) of two d-dimensional
 * normals from the standardized rows y = L_q^{-1}(x - m_q); called through ctypes by
 * klest.native.bindings.mvn_ratio_from_standardized (which validates every argument first).
 * The arithmetic is klest/native/mvn_kernel.py's, operation for operation (the same bits:
 * that module is the definition and the fallback).
 *
 * With G = L_p^{-1}(L_q - L_p) (lower triangular: only its entries k <= j are read),
 * delta = L_p^{-1}(m_q - m_p) and c = log det L_p - log det L_q, the gap D = y_p - y_q is
 * G y + delta and
 *
 *     log p(x) - log q(x) = -(|y_p|^2 - |y|^2) / 2 - c = (sum_j D_j (D_j + 2 y_j)) * -1/2 - c,
 *
 * with no cancellation between two squared norms when p is close to q. For each row and each
 * j: D_j = (0 + G[j,0] y_0 + ... + G[j,j] y_j) + delta_j, summed in that order, and the
 * row's sum over j in order j = 0, 1, ..., d - 1 (from 0).
 *
 * Rows go in tiles of MVN_TILE, transposed into `work` so that every loop runs over rows: the
 * same scalar arithmetic in each lane, so the generic, AVX2 and AVX-512 variants (chosen by
 * kernels.c's SIMD level) give the same bits. `work` holds d * MVN_TILE doubles.
 */
#include <stdint.h>
#include <string.h>

int64_t klest_current_simd_level(void); /* kernels.c */

#define MVN_TILE 128
#define MVN_BLOCK 16 /* rows whose sums stay in registers */

/* Each block of MVN_BLOCK rows is held in MVN_BLOCK / W vectors of W doubles (vector types:
 * GCC left the rows' loop scalar, with its sums spilled to the stack, ~8x slower), one lane
 * per row: the scalar operations of each row in their order, at every width. */
#define KLEST_MVN_TILE_KERNEL(SUFFIX, TARGET, VD, W)                                           \
    TARGET static void mvn_tile_##SUFFIX(const double *zt, int64_t t, int64_t d,              \
                                         const double *g, const double *delta, double c,     \
                                         double *out) {                                      \
        enum { NV = MVN_BLOCK / (W) };                                                       \
        for (int64_t rb = 0; rb < t; rb += MVN_BLOCK) {                                      \
            VD s[NV];                                                                        \
            for (int v = 0; v < NV; v++) s[v] = (VD){0};                                     \
            for (int64_t j = 0; j < d; j++) {                                                \
                VD a[NV];                                                                    \
                for (int v = 0; v < NV; v++) a[v] = (VD){0};                                 \
                for (int64_t k = 0; k <= j; k++) {                                           \
                    const double gjk = g[j * d + k], *col = zt + k * MVN_TILE + rb;          \
                    for (int v = 0; v < NV; v++) {                                           \
                        VD x;                                                                \
                        memcpy(&x, col + v * (W), sizeof x);                                 \
                        a[v] += gjk * x;                                                     \
                    }                                                                        \
                }                                                                            \
                const double dj = delta[j], *yj = zt + j * MVN_TILE + rb;                    \
                for (int v = 0; v < NV; v++) {                                               \
                    VD y;                                                                    \
                    memcpy(&y, yj + v * (W), sizeof y);                                      \
                    VD gap = a[v] + dj;                                                      \
                    s[v] += gap * (gap + (y + y));                                           \
                }                                                                            \
            }                                                                                \
            double sums[MVN_BLOCK];                                                          \
            memcpy(sums, s, sizeof sums);                                                    \
            int64_t m = t - rb < MVN_BLOCK ? t - rb : MVN_BLOCK;                             \
            for (int64_t r = 0; r < m; r++) out[rb + r] = sums[r] * -0.5 - c;                \
        }                                                                                    \
    }

typedef double mvn_v2d __attribute__((vector_size(16)));
KLEST_MVN_TILE_KERNEL(generic, , mvn_v2d, 2)
#if defined(__x86_64__) && defined(__GNUC__)
#define KLEST_MVN_X86 1
typedef double mvn_v4d __attribute__((vector_size(32)));
typedef double mvn_v8d __attribute__((vector_size(64)));
KLEST_MVN_TILE_KERNEL(avx2, __attribute__((target("avx2"))), mvn_v4d, 4)
KLEST_MVN_TILE_KERNEL(avx512, __attribute__((target("avx512f"))), mvn_v8d, 8)
#endif

typedef void (*mvn_tile)(const double *, int64_t, int64_t, const double *, const double *,
                         double, double *);
static const mvn_tile tile_variants[] = {
    mvn_tile_generic,
#ifdef KLEST_MVN_X86
    mvn_tile_avx2,
    mvn_tile_avx512,
#endif
};

/* y: rows x d (C order); g: d x d (C order, its lower triangle read); delta: d; out: rows;
 * work: d * MVN_TILE doubles. */
void klest_mvn_ratio_from_standardized(const double *y, int64_t rows, int64_t d,
                                       const double *g, const double *delta, double c,
                                       double *out, double *work) {
    const mvn_tile tile = tile_variants[klest_current_simd_level()];
    for (int64_t start = 0; start < rows; start += MVN_TILE) {
        int64_t t = rows - start < MVN_TILE ? rows - start : MVN_TILE;
        int64_t padded = (t + MVN_BLOCK - 1) / MVN_BLOCK * MVN_BLOCK;
        for (int64_t r = 0; r < t; r++)
            for (int64_t k = 0; k < d; k++) work[k * MVN_TILE + r] = y[(start + r) * d + k];
        for (int64_t k = 0; k < d; k++) /* the last block's unused rows: zeros, not garbage */
            for (int64_t r = t; r < padded; r++) work[k * MVN_TILE + r] = 0.0;
        tile(work, t, d, g, delta, c, out + start);
    }
}

int64_t klest_mvn_tile_size(void) { return MVN_TILE; }
