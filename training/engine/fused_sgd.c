/* A chunk of plain-SGD steps for a stack of K MLPs, in one call: forward, backprop, update and each
 * layer's weight-gradient norm, per model, with no per-op dispatch in between.
 *
 * The same arithmetic as training.engine.steps.FusedSgdStep's PyTorch path (which the tests hold it to):
 * each layer's weights are (units, fan_in + 1), the bias their last column, against a column of ones
 * after the layer's input; deltas carry lr/B, so an update is W -= delta^T a; the norm written is
 * ||delta^T a||^2 over the non-bias columns, which that gradient gives for free as it is applied.
 *
 * Built by training.engine.native_kernel with the machine's own compiler (-O3 -march=native); GCC's vector
 * extensions keep it portable, the register blocks below keep the FMA units busy on 784-wide rows.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The widest vectors the machine has: 16 floats with AVX-512 (where the GEMM that sets the floor
 * runs twice as wide too), else 8.  The register blocks below are sized to the registers there are:
 * 32 vector registers with AVX-512, 16 without.
 *   BR x JR: the forward's rows of A by rows of W, one accumulator each;
 *   UJ x UV: the update's rows of W by vectors of columns, one accumulator each. */
#if defined(__AVX512F__)
#define VW 16
#define BR 5
#define JR 5
#define UJ 6
#define UV 3
#else
#define VW 8
#define BR 5
#define JR 2
#define UJ 4
#define UV 2
#endif
typedef float vf __attribute__((vector_size(VW * 4), aligned(4), may_alias));

/* The widest vector instructions this build was compiled to use, in bits: 512 (AVX-512), 256 (AVX2),
 * else 0 (GCC lowers the vectors to whatever the target has).  Read from the compiler's own predefined
 * macros, so the tag mnistlab.step_path says what the built code runs, not what the CPU could. */
int fused_sgd_vector_bits(void)
{
#if defined(__AVX512F__)
    return 512;
#elif defined(__AVX2__)
    return 256;
#else
    return 0;
#endif
}

static inline vf load(const float *p) { return *(const vf *)p; }
static inline void store(float *p, vf v) { *(vf *)p = v; }
static inline vf splat(float x) { return (vf){0} + x; }
/* The sum of a vector's lanes, halving it with vector adds: a forward block ends with BR * JR of
 * these, and lane by lane they cost about a third of the block's FMAs at 16 lanes. */
typedef float v4 __attribute__((vector_size(16), aligned(4), may_alias));
typedef float v8 __attribute__((vector_size(32), aligned(4), may_alias));
static inline float hsum(vf v)
{
#if VW == 16
    v8 lo, hi;
    memcpy(&lo, &v, sizeof lo);
    memcpy(&hi, (const char *)&v + sizeof lo, sizeof hi);
    v8 e = lo + hi;
#else
    v8 e = v;
#endif
    v4 a, b;
    memcpy(&a, &e, sizeof a);
    memcpy(&b, (const char *)&e + sizeof a, sizeof b);
    v4 f = a + b;
    return (f[0] + f[2]) + (f[1] + f[3]);
}

enum { SIGMOID = 0, TANH = 1, RELU = 2 };
enum { MSE = 0, CROSS_ENTROPY = 1 };

/* Z[b][j] = A[b] . W[j] over n columns (b < B, j < U; Z's rows zs apart).  Blocks of BR rows of A by
 * JR of W: BR + JR loads per BR * JR FMAs (7 per 10 with AVX2, 10 per 25 with AVX-512).  Short
 * blocks repeat a row and drop its result. */
static void forward(const float *const *A, int64_t B, const float *W, int64_t U, int64_t n, float *Z, int64_t zs)
{
    int64_t nv = n - n % VW;
    for (int64_t b0 = 0; b0 < B; b0 += BR) {
        const float *a[BR];
        for (int r = 0; r < BR; r++)
            a[r] = A[b0 + r < B ? b0 + r : B - 1];
        for (int64_t j0 = 0; j0 < U; j0 += JR) {
            const float *w[JR];
            for (int q = 0; q < JR; q++)
                w[q] = W + (j0 + q < U ? j0 + q : U - 1) * n;
            vf acc[BR][JR];
            for (int r = 0; r < BR; r++)
                for (int q = 0; q < JR; q++)
                    acc[r][q] = splat(0.f);
            for (int64_t c = 0; c < nv; c += VW) {
                vf wv[JR];
                for (int q = 0; q < JR; q++)
                    wv[q] = load(w[q] + c);
                for (int r = 0; r < BR; r++) {
                    vf av = load(a[r] + c);
                    for (int q = 0; q < JR; q++)
                        acc[r][q] += av * wv[q];
                }
            }
            for (int r = 0; r < BR && b0 + r < B; r++)
                for (int q = 0; q < JR && j0 + q < U; q++) {
                    float s = hsum(acc[r][q]);
                    for (int64_t c = nv; c < n; c++)
                        s += a[r][c] * w[q][c];
                    Z[(b0 + r) * zs + j0 + q] = s;
                }
        }
    }
}

/* g = D^T A (U x n), the gradient scaled by lr/B; W -= g when updating.  Returns ||g||^2 over the
 * first n - 1 columns (not the bias).  Blocks of UJ rows of W by UV vectors of columns: per image UV
 * loads of A and UJ broadcasts of D for UJ * UV FMAs (6 per 8 with AVX2, 9 per 18 with AVX-512);
 * then blocks of one vector, so that only the bias column (and what is left of a row narrower than a
 * vector) is summed one float at a time: 784 columns in blocks of 48 leave 16, which the scalar loop
 * took longer over than the vectors over the other 768.  dl: scratch of B * UJ. */
static float update(const float *const *A, int64_t B, const float *D, int64_t U, float *W, int64_t n,
                    int do_update, float *dl)
{
    int64_t fan_in = n - 1, blocks = fan_in - fan_in % (UV * VW), vectors = fan_in - fan_in % VW;
    vf vnorm = splat(0.f);
    float norm = 0.f;
    for (int64_t j0 = 0; j0 < U; j0 += UJ) {
        int64_t jr = U - j0 < UJ ? U - j0 : UJ;
        for (int64_t b = 0; b < B; b++)
            for (int q = 0; q < UJ; q++)
                dl[b * UJ + q] = q < jr ? D[b * U + j0 + q] : 0.f;
        for (int64_t c = 0; c < blocks; c += UV * VW) {
            vf g[UJ][UV];
            for (int q = 0; q < UJ; q++)
                for (int v = 0; v < UV; v++)
                    g[q][v] = splat(0.f);
            for (int64_t b = 0; b < B; b++) {
                vf a[UV];
                for (int v = 0; v < UV; v++)
                    a[v] = load(A[b] + c + v * VW);
                for (int q = 0; q < UJ; q++) {
                    vf d = splat(dl[b * UJ + q]);
                    for (int v = 0; v < UV; v++)
                        g[q][v] += d * a[v];
                }
            }
            for (int q = 0; q < UJ; q++)  /* to UJ, not jr: constant bounds keep g in registers */
                for (int v = 0; v < UV && q < jr; v++) {
                    vnorm += g[q][v] * g[q][v];
                    if (do_update) {
                        float *w = W + (j0 + q) * n + c + v * VW;
                        store(w, load(w) - g[q][v]);
                    }
                }
        }
        for (int64_t c = blocks; c < vectors; c += VW) {
            vf g[UJ];
            for (int q = 0; q < UJ; q++)
                g[q] = splat(0.f);
            for (int64_t b = 0; b < B; b++) {
                vf a = load(A[b] + c);
                for (int q = 0; q < UJ; q++)
                    g[q] += splat(dl[b * UJ + q]) * a;
            }
            for (int q = 0; q < UJ && q < jr; q++) {
                vnorm += g[q] * g[q];
                if (do_update) {
                    float *w = W + (j0 + q) * n + c;
                    store(w, load(w) - g[q]);
                }
            }
        }
        for (int64_t c = vectors; c < n; c++)
            for (int q = 0; q < jr; q++) {
                float g = 0.f;
                for (int64_t b = 0; b < B; b++)
                    g += dl[b * UJ + q] * A[b][c];
                if (c < fan_in)
                    norm += g * g;
                if (do_update)
                    W[(j0 + q) * n + c] -= g;
            }
    }
    return hsum(vnorm) + norm;
}

/* Dn[b][c] = (D[b] W)[c] * act'(H[b][c]) for c < n - 1: the delta one layer down, from the weights
 * before this step's update.  H: that layer's activations, rows hs apart. */
static void backward(const float *D, int64_t B, int64_t U, const float *W, int64_t n, const float *H, int64_t hs,
                     float *Dn, int act)
{
    int64_t fan_in = n - 1;
    for (int64_t b = 0; b < B; b++) {
        float *g = Dn + b * fan_in;
        memset(g, 0, fan_in * sizeof(float));
        for (int64_t j = 0; j < U; j++) {
            float d = D[b * U + j];
            const float *w = W + j * n;
            for (int64_t c = 0; c < fan_in; c++)
                g[c] += d * w[c];
        }
        const float *h = H + b * hs;
        for (int64_t c = 0; c < fan_in; c++) {
            float y = h[c];
            g[c] = act == SIGMOID ? g[c] * (1.f - y) * y : act == TANH ? g[c] * (1.f - y * y) : (y > 0.f ? g[c] : 0.f);
        }
    }
}

static void activate(float *h, int64_t n, int act)
{
    for (int64_t c = 0; c < n; c++)
        h[c] = act == SIGMOID ? 1.f / (1.f + expf(-h[c])) : act == TANH ? tanhf(h[c]) : (h[c] > 0.f ? h[c] : 0.f);
}

/* d(loss)/d(logits) * scale for one-hot targets: softmax cross-entropy, or the quadratic cost on
 * sigmoid outputs. */
static void output_delta(const float *z, const float *target, int64_t classes, float scale, int loss, float *d)
{
    if (loss == CROSS_ENTROPY) {
        float m = z[0], sum = 0.f;
        for (int64_t c = 1; c < classes; c++)
            m = z[c] > m ? z[c] : m;
        for (int64_t c = 0; c < classes; c++)
            sum += d[c] = expf(z[c] - m);
        for (int64_t c = 0; c < classes; c++)
            d[c] = (d[c] / sum - target[c]) * scale;
    } else {
        for (int64_t c = 0; c < classes; c++) {
            float o = 1.f / (1.f + expf(-z[c]));
            d[c] = (o - target[c]) * (1.f - o) * o * scale;
        }
    }
}

/* Steps s < S for every model, each model taken whole by whichever caller claims it next from *next:
 * several threads may call at once with the same counter, and a thread slowed by other work on its
 * core (the MLflow writer) simply claims fewer models.
 *
 * table (rows, n_in + 1 + classes): each image, a one, its one-hot label.  idx (S, K*B): model k's rows
 * of step s at idx[s][k*B .. (k+1)*B).  weights[i]: layer i's (K, units[i], fan_in + 1).  lr (K).
 * raw (S, L, K) gets ||g||^2 per step, layer and model.  Returns 0, or -1 when out of memory. */
int fused_sgd_steps(const float *table, int64_t row_len, int64_t n_in, const int64_t *idx, int64_t S, int64_t K,
                    int64_t B, int64_t L, const int64_t *units, float *const *weights, const float *lr, float *raw,
                    int act, int loss, int do_update, int64_t *next)
{
    int64_t widest = n_in, hidden = 0;
    for (int64_t i = 0; i < L; i++) {
        widest = units[i] > widest ? units[i] : widest;
        hidden += i < L - 1 ? B * (units[i] + 1) : 0;
    }
    int64_t classes = units[L - 1];
    float *mem = malloc(sizeof(float) * (hidden + B * classes + 2 * B * widest + B * UJ));
    const float **rows = malloc(sizeof(float *) * B * L);
    if (mem == NULL || rows == NULL) {
        free(mem);
        free(rows);
        return -1;
    }
    float *h[L > 1 ? L - 1 : 1], *z = mem + hidden, *delta = z + B * classes, *below = delta + B * widest;
    float *dl = below + B * widest;
    for (int64_t i = 0, off = 0; i < L - 1; off += B * (units[i] + 1), i++) {
        h[i] = mem + off;
        for (int64_t b = 0; b < B; b++) {
            h[i][b * (units[i] + 1) + units[i]] = 1.f;  /* the column of ones the next layer's bias meets */
            rows[(i + 1) * B + b] = h[i] + b * (units[i] + 1);
        }
    }
    for (int64_t k; (k = __atomic_fetch_add(next, 1, __ATOMIC_RELAXED)) < K;) {
        if (do_update && lr[k] == 0.f)
            continue;  /* a model that left the stack (diverged, or pruned by a search): its steps cost nothing */
        float scale = lr[k] / (float)B;
        for (int64_t s = 0; s < S; s++) {
            const int64_t *mine = idx + s * K * B + k * B;
            for (int64_t b = 0; b < B; b++)
                rows[b] = table + mine[b] * row_len;
            for (int64_t i = 0; i < L - 1; i++) {
                int64_t n = (i ? units[i - 1] : n_in) + 1;
                forward(rows + i * B, B, weights[i] + k * units[i] * n, units[i], n, h[i], units[i] + 1);
                for (int64_t b = 0; b < B; b++)
                    activate(h[i] + b * (units[i] + 1), units[i], act);
            }
            int64_t n_last = (L > 1 ? units[L - 2] : n_in) + 1;
            forward(rows + (L - 1) * B, B, weights[L - 1] + k * classes * n_last, classes, n_last, z, classes);
            for (int64_t b = 0; b < B; b++)
                output_delta(z + b * classes, rows[b] + n_in + 1, classes, scale, loss, delta + b * classes);
            for (int64_t i = L - 1; i >= 0; i--) {
                int64_t n = (i ? units[i - 1] : n_in) + 1;
                float *w = weights[i] + k * units[i] * n;
                if (i > 0)
                    backward(delta, B, units[i], w, n, h[i - 1], units[i - 1] + 1, below, act);
                raw[(s * L + i) * K + k] = update(rows + i * B, B, delta, units[i], w, n, do_update, dl);
                float *t = delta;
                delta = below;
                below = t;
            }
        }
    }
    free(mem);
    free(rows);
    return 0;
}
