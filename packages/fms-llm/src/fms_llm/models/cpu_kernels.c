/* Fused CPU kernels for the three elementwise chains of a Llama block: RMSNorm, RoPE and SwiGLU.
 *
 * Compiled on first use by fms_llm/models/cpu_kernels.py (read that module first: it holds the
 * math, the checks that guard every call, and the PyTorch code these loops replace). Each
 * function makes one pass over its tensors, where eager PyTorch makes one pass per operation:
 * on a CPU these chains are limited by memory traffic, not arithmetic, so passes are the cost.
 *
 * Conventions: float32, contiguous, row-major; n rows of d features; every pointer points to a
 * separate buffer (restrict). Plain C11, vectorised by the compiler (`#pragma omp simd`, with
 * -fopenmp-simd: no OpenMP runtime, only the vectorisation hints). No fast-math: NaN and
 * infinity propagate as in PyTorch, and the process's floating-point mode is left alone.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * RMSNorm: y = w * x * r,  r = (sum(x^2) / d + eps)^(-1/2), one row at a time.
 * The row is read twice (sum of squares, then the output), but the second read hits the L1
 * cache: one pass over memory.
 * ------------------------------------------------------------------------------------------- */
void fms_rms_norm_forward(const float *restrict x, const float *restrict w, float *restrict y,
                          float *restrict rstd, int64_t n, int64_t d, float eps) {
  for (int64_t i = 0; i < n; ++i) {
    const float *xi = x + i * d;
    float *yi = y + i * d;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < d; ++j) sum += xi[j] * xi[j];
    const float r = 1.0f / sqrtf(sum / (float)d + eps);
    rstd[i] = r;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) yi[j] = w[j] * (xi[j] * r);
  }
}

/* Backward, with u = g * w and x_hat = r x:
 *   dx = r (u - x_hat * mean(u * x_hat)) = r u - x * (r^3 / d) * sum(g * w * x)
 *   dw = sum over rows of g * x_hat      (accumulated into dw, which the caller zeroes)
 */
void fms_rms_norm_backward(const float *restrict g, const float *restrict x,
                           const float *restrict rstd, const float *restrict w,
                           float *restrict dx, float *restrict dw, int64_t n, int64_t d) {
  for (int64_t i = 0; i < n; ++i) {
    const float *gi = g + i * d, *xi = x + i * d;
    float *dxi = dx + i * d;
    const float r = rstd[i];
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < d; ++j) dot += gi[j] * w[j] * xi[j];
    const float c = r * r * r * dot / (float)d;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) {
      dxi[j] = r * (gi[j] * w[j]) - xi[j] * c;
      dw[j] += gi[j] * (xi[j] * r);
    }
  }
}

/* ---------------------------------------------------------------------------------------------
 * RoPE, split-half layout: for x of shape (batch, seq, heads, D) and the tables cos and
 * s = [-sin_1, sin_2] of shape (positions, D), row (b, t, h) is rotated to position t + offset:
 *   y[j]       = x[j] cos[j]         + sign * x[j + D/2] s[j]
 *   y[j + D/2] = x[j + D/2] cos[j+D/2] + sign * x[j]     s[j + D/2]
 * sign = +1 rotates forward; sign = -1 rotates back, which is the backward pass (a rotation's
 * Jacobian is the rotation, its transpose the inverse rotation).
 * ------------------------------------------------------------------------------------------- */
void fms_rope(const float *restrict x, const float *restrict cos_table,
              const float *restrict sin_table, float *restrict y, int64_t batch, int64_t seq,
              int64_t heads, int64_t dim, int64_t offset, float sign) {
  const int64_t half = dim / 2;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < seq; ++t) {
      const float *c = cos_table + (t + offset) * dim;
      const float *s = sin_table + (t + offset) * dim;
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t row = ((b * seq + t) * heads + h) * dim;
        const float *xi = x + row;
        float *yi = y + row;
#pragma omp simd
        for (int64_t j = 0; j < half; ++j) {
          yi[j] = xi[j] * c[j] + sign * xi[j + half] * s[j];
          yi[j + half] = xi[j + half] * c[j + half] + sign * xi[j] * s[j + half];
        }
      }
    }
  }
}

/* ---------------------------------------------------------------------------------------------
 * SwiGLU's gate: h = silu(a) * b, silu(a) = a sigmoid(a), elementwise.
 * ------------------------------------------------------------------------------------------- */

/* exp(x) in a form the compiler vectorises (libm's expf is a scalar call). With k = round(x/ln 2)
 * and r = x - k ln 2, |r| <= ln(2)/2: e^x = 2^k e^r, e^r by its Taylor polynomial of degree 7
 * (relative error below 1e-7 on that interval), 2^k written straight into the exponent bits.
 * ln 2 is split into a part exact in float and a correction, so x - k ln 2 loses nothing.
 * x is clamped to [lo, hi] = [-86, 88] first, where 2^k stays a normal float. */
static inline float exp_vec(float x, float lo, float hi) {
  x = x < lo ? lo : (x > hi ? hi : x);
  const float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
  float r = x - k * 0.693359375f;
  r = r + k * 2.12194440e-4f;
  const float p =
      1.0f + r * (1.0f + r * (0.5f + r * (1.66666667e-1f + r * (4.16666667e-2f +
             r * (8.33333333e-3f + r * (1.38888889e-3f + r * 1.98412698e-4f))))));
  const uint32_t bits = (uint32_t)((int32_t)k + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

/* The clamp bounds are read from memory, not written as constants: with constants, the compiler
 * folds the clamped branch through the whole expression and evaluates it for every element,
 * producing denormal intermediates whose microcode assists made the loop ten times slower. */
static volatile float exp_lo = -86.0f, exp_hi = 88.0f;

void fms_swiglu_forward(const float *restrict a, const float *restrict b, float *restrict h,
                        int64_t n) {
  const float lo = exp_lo, hi = exp_hi;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) h[i] = a[i] / (1.0f + exp_vec(-a[i], lo, hi)) * b[i];
}

/* With s = sigmoid(a): d silu / da = s + a s (1 - s), so
 *   da = g * b * (s + silu(a) (1 - s)),   db = g * silu(a). */
void fms_swiglu_backward(const float *restrict g, const float *restrict a,
                         const float *restrict b, float *restrict da, float *restrict db,
                         int64_t n) {
  const float lo = exp_lo, hi = exp_hi;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float s = 1.0f / (1.0f + exp_vec(-a[i], lo, hi));
    const float silu = a[i] * s;
    db[i] = g[i] * silu;
    da[i] = g[i] * b[i] * (s + silu * (1.0f - s));
  }
}

/* ---------------------------------------------------------------------------------------------
 * Softmax cross-entropy and its gradient, in place, one row of logits z (vocab entries) at a
 * time while the row is in cache:
 *   loss = log sum_v e^(z_v - m) + m - z_y,   m = max_v z_v
 *   z   <- softmax(z) - onehot(y)              (the gradient of the loss with respect to z)
 * Three sweeps over the row (maximum; exponentials and their sum; scaling), one pass over memory.
 * ------------------------------------------------------------------------------------------- */
void fms_softmax_cross_entropy(float *restrict z, const int64_t *restrict targets,
                               float *restrict loss, int64_t rows, int64_t vocab) {
  const float lo = exp_lo, hi = exp_hi;
  for (int64_t i = 0; i < rows; ++i) {
    float *zi = z + i * vocab;
    const int64_t y = targets[i];
    const float zy = zi[y];
    float m = zi[0];
#pragma omp simd reduction(max : m)
    for (int64_t v = 0; v < vocab; ++v) m = zi[v] > m ? zi[v] : m;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t v = 0; v < vocab; ++v) {
      const float e = exp_vec(zi[v] - m, lo, hi);
      zi[v] = e;
      sum += e;
    }
    const float inv = 1.0f / sum;
#pragma omp simd
    for (int64_t v = 0; v < vocab; ++v) zi[v] *= inv;
    zi[y] -= 1.0f;
    loss[i] = logf(sum) + m - zy;
  }
}
