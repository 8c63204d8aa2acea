// Sparse local-reparameterisation (LRT) convolution kernels for ssvi-bench, CPU, float32.
//
// One index of the active weights serves both LRT products of a Bayesian convolution:
//   mean = conv(x, mu)   and   var = conv(x^2, sigma^2)
// and their backward passes (input gradient, gradients of the active mu and sigma^2 values).
//
// Activations are kept in "batch blocks": a [NB, M, CHUNK] tensor (M = C*H*W, the batch zero padded to
// NB * CHUNK) whose rows are one pixel of one channel over CHUNK = 32 examples (128 bytes). Every inner
// loop reads whole rows into four 8-float vectors (GCC / Clang vector extensions: AVX registers where the
// CPU has them) while the accumulators stay in registers. The loops run over a few output pixels of one
// row (TILE_W) for *every* channel before moving on, so the input rows those pixels read (3 kernel rows x
// TILE_W + 2 columns x all channels) stay in the L2 cache while every channel's weights use them; looping
// channel-first instead re-reads them from L3 for every channel (measured ~4x slower at 32 x 32).
// Sums run in a fixed order: results do not depend on the thread count.
// Built by ssvi/sparse_lrt.py with torch.utils.cpp_extension (-O3 -march=native, no -ffast-math).

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

constexpr int64_t CHUNK = 32;  // examples per batch block (ssvi/sparse_lrt.py LANES)
constexpr int64_t TILE = 64;   // pixels per tile of the layout transposes
constexpr int64_t TILE_W = 8;  // output (input, for the input gradient) columns per cache tile

typedef float vec8 __attribute__((vector_size(32)));
typedef float vec8_unaligned __attribute__((vector_size(32), aligned(4)));

inline vec8 load(const float* p) { return *reinterpret_cast<const vec8_unaligned*>(p); }
inline void store(float* p, vec8 v) { *reinterpret_cast<vec8_unaligned*>(p) = v; }

// The two LRT sums over one row of CHUNK examples, kept in registers: m += wm * row_m, v += wv * row_v.
struct RowSums {
  vec8 m[4] = {}, v[4] = {};
  inline void add(float wm, const float* row_m, float wv, const float* row_v) {
    for (int j = 0; j < 4; ++j) {
      m[j] += wm * load(row_m + 8 * j);
      v[j] += wv * load(row_v + 8 * j);
    }
  }
};

struct Geometry {
  int64_t channels, height, width, out_channels, out_height, out_width, stride, padding;
  int64_t in_rows() const { return channels * height * width; }
  int64_t out_rows() const { return out_channels * out_height * out_width; }
};

Geometry geometry(const std::vector<int64_t>& g) {
  TORCH_CHECK(g.size() == 8, "geometry: C, H, W, OC, OH, OW, stride, padding");
  return {g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]};
}

void check(const at::Tensor& t, const char* name, at::ScalarType type) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.scalar_type() == type, name,
              " must be a contiguous CPU tensor of ", type);
}

void check_blocks(const at::Tensor& t, int64_t rows, const char* name) {
  check(t, name, at::kFloat);
  TORCH_CHECK(t.dim() == 3 && t.size(1) == rows && t.size(2) == CHUNK, name, " must be [blocks, ", rows, ", ",
              CHUNK, "]");
}

}  // namespace

// x [N, M] -> batch blocks [ceil(N / CHUNK), M, CHUNK] of x (and of x * x if asked), zero padded.
std::vector<at::Tensor> to_blocks(const at::Tensor& x, bool square) {
  check(x, "x", at::kFloat);
  const int64_t n = x.size(0), m = x.numel() / std::max<int64_t>(n, 1), blocks = (n + CHUNK - 1) / CHUNK;
  auto out = at::empty({blocks, m, CHUNK}, x.options());
  const float* src = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const int64_t tiles = (m + TILE - 1) / TILE;
  at::parallel_for(0, blocks * tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t job = begin; job < end; ++job) {
      const int64_t b = job / tiles, m0 = (job % tiles) * TILE, m1 = std::min(m, m0 + TILE);
      for (int64_t i = 0; i < CHUNK; ++i) {
        float* column = dst + b * m * CHUNK + i;
        if (b * CHUNK + i < n) {
          const float* row = src + (b * CHUNK + i) * m;
          for (int64_t j = m0; j < m1; ++j) column[j * CHUNK] = row[j];
        } else {
          for (int64_t j = m0; j < m1; ++j) column[j * CHUNK] = 0.0f;
        }
      }
    }
  });
  return {out, square ? out * out : at::Tensor()};  // squared in one contiguous, vectorised pass
}

// batch blocks [NB, M, CHUNK] -> a new tensor of ``shape`` = [N, ...] with N x M elements
at::Tensor from_blocks(const at::Tensor& blocks, std::vector<int64_t> shape) {
  check(blocks, "blocks", at::kFloat);
  const int64_t m = blocks.size(1), n = shape.at(0);
  auto out = at::empty(shape, blocks.options());
  TORCH_CHECK(blocks.dim() == 3 && blocks.size(2) == CHUNK && out.numel() == n * m &&
              n <= blocks.size(0) * CHUNK, "from_blocks: shape does not match the blocks");
  const float* src = blocks.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const int64_t tiles = (m + TILE - 1) / TILE;
  at::parallel_for(0, blocks.size(0) * tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t job = begin; job < end; ++job) {
      const int64_t b = job / tiles, m0 = (job % tiles) * TILE, m1 = std::min(m, m0 + TILE);
      for (int64_t i = 0; i < CHUNK && b * CHUNK + i < n; ++i)
        for (int64_t j = m0; j < m1; ++j) dst[(b * CHUNK + i) * m + j] = src[(b * m + j) * CHUNK + i];
    }
  });
  return out;
}

// Forward: entries grouped by output channel (oc_start[OC + 1]); entry k is weight (oc, ic[k], kh[k], kw[k]).
std::vector<at::Tensor> forward(const at::Tensor& x_blocks, const at::Tensor& square_blocks,
                                const at::Tensor& oc_start, const at::Tensor& ic, const at::Tensor& kh,
                                const at::Tensor& kw, const at::Tensor& mu, const at::Tensor& var,
                                std::vector<int64_t> shape) {
  const Geometry g = geometry(shape);
  check_blocks(x_blocks, g.in_rows(), "x blocks");
  check_blocks(square_blocks, g.in_rows(), "x^2 blocks");
  for (auto* t : {&mu, &var}) check(*t, "values", at::kFloat);
  for (auto* t : {&oc_start, &ic, &kh, &kw}) check(*t, "index", at::kLong);
  const int64_t blocks = x_blocks.size(0), in_rows = g.in_rows(), out_rows = g.out_rows();
  auto mean = at::empty({blocks, out_rows, CHUNK}, x_blocks.options());
  auto variance = at::empty({blocks, out_rows, CHUNK}, x_blocks.options());
  const float *x = x_blocks.data_ptr<float>(), *x2 = square_blocks.data_ptr<float>();
  const float *w_mu = mu.data_ptr<float>(), *w_var = var.data_ptr<float>();
  const int64_t *start = oc_start.data_ptr<int64_t>(), *c = ic.data_ptr<int64_t>();
  const int64_t *r = kh.data_ptr<int64_t>(), *s = kw.data_ptr<int64_t>();
  float *out_m = mean.data_ptr<float>(), *out_v = variance.data_ptr<float>();
  at::parallel_for(0, blocks * g.out_height, 1, [&](int64_t begin, int64_t end) {
    for (int64_t job = begin; job < end; ++job) {
      const int64_t b = job / g.out_height, oh = job % g.out_height;
      const float *xb = x + b * in_rows * CHUNK, *qb = x2 + b * in_rows * CHUNK;
      for (int64_t ow0 = 0; ow0 < g.out_width; ow0 += TILE_W)
        for (int64_t oc = 0; oc < g.out_channels; ++oc)
          for (int64_t ow = ow0; ow < std::min(g.out_width, ow0 + TILE_W); ++ow) {
            RowSums sums;
            for (int64_t k = start[oc]; k < start[oc + 1]; ++k) {
              const int64_t ih = oh * g.stride - g.padding + r[k], iw = ow * g.stride - g.padding + s[k];
              if (ih < 0 || ih >= g.height || iw < 0 || iw >= g.width) continue;
              const int64_t row = ((c[k] * g.height + ih) * g.width + iw) * CHUNK;
              sums.add(w_mu[k], xb + row, w_var[k], qb + row);
            }
            const int64_t out_row = (b * out_rows + (oc * g.out_height + oh) * g.out_width + ow) * CHUNK;
            for (int j = 0; j < 4; ++j) {
              store(out_m + out_row + 8 * j, sums.m[j]);
              store(out_v + out_row + 8 * j, sums.v[j]);
            }
          }
    }
  });
  return {mean, variance};
}

// Input gradient dx = conv_transpose(dmean, mu) + 2 x * conv_transpose(dvar, sigma^2), in batch blocks.
// Entries grouped by input channel and kernel-offset residue mod the stride (group_start[C * S * S + 1],
// group (ic * S + kh % S) * S + kw % S): an input pixel reads only the group whose offsets reach it, so
// a stride-2 layer skips nothing. Transposed entry t is forward entry entry[t].
at::Tensor backward_input(const at::Tensor& grad_mean, const at::Tensor& grad_var, const at::Tensor& x_blocks,
                          const at::Tensor& group_start, const at::Tensor& oc, const at::Tensor& kh,
                          const at::Tensor& kw, const at::Tensor& entry, const at::Tensor& mu,
                          const at::Tensor& var, std::vector<int64_t> shape) {
  const Geometry g = geometry(shape);
  check_blocks(grad_mean, g.out_rows(), "mean gradient blocks");
  check_blocks(grad_var, g.out_rows(), "variance gradient blocks");
  check_blocks(x_blocks, g.in_rows(), "x blocks");
  for (auto* t : {&mu, &var}) check(*t, "values", at::kFloat);
  for (auto* t : {&group_start, &oc, &kh, &kw, &entry}) check(*t, "index", at::kLong);
  TORCH_CHECK(group_start.numel() == g.channels * g.stride * g.stride + 1, "group_start: C * stride^2 + 1 offsets");
  const int64_t blocks = x_blocks.size(0), in_rows = g.in_rows(), out_rows = g.out_rows();
  auto grad_x = at::empty({blocks, in_rows, CHUNK}, x_blocks.options());
  const float *dm = grad_mean.data_ptr<float>(), *dv = grad_var.data_ptr<float>(), *x = x_blocks.data_ptr<float>();
  const float *w_mu = mu.data_ptr<float>(), *w_var = var.data_ptr<float>();
  const int64_t *start = group_start.data_ptr<int64_t>(), *o = oc.data_ptr<int64_t>();
  const int64_t *r = kh.data_ptr<int64_t>(), *s = kw.data_ptr<int64_t>(), *e = entry.data_ptr<int64_t>();
  float* gx = grad_x.data_ptr<float>();
  at::parallel_for(0, blocks * g.height, 1, [&](int64_t begin, int64_t end) {
    for (int64_t job = begin; job < end; ++job) {
      const int64_t b = job / g.height, ih = job % g.height;
      const float *dmb = dm + b * out_rows * CHUNK, *dvb = dv + b * out_rows * CHUNK;
      for (int64_t iw0 = 0; iw0 < g.width; iw0 += TILE_W)
        for (int64_t ic = 0; ic < g.channels; ++ic)
          for (int64_t iw = iw0; iw < std::min(g.width, iw0 + TILE_W); ++iw) {
            RowSums sums;
            const int64_t group = (ic * g.stride + (ih + g.padding) % g.stride) * g.stride + (iw + g.padding) % g.stride;
            for (int64_t t = start[group]; t < start[group + 1]; ++t) {
              const int64_t h = ih + g.padding - r[t], w = iw + g.padding - s[t];
              if (h < 0 || w < 0) continue;  // h, w are multiples of the stride within a group
              const int64_t oh = h / g.stride, ow = w / g.stride;
              if (oh >= g.out_height || ow >= g.out_width) continue;
              const int64_t out_row = ((o[t] * g.out_height + oh) * g.out_width + ow) * CHUNK;
              sums.add(w_mu[e[t]], dmb + out_row, w_var[e[t]], dvb + out_row);
            }
            const int64_t row = (b * in_rows + (ic * g.height + ih) * g.width + iw) * CHUNK;
            for (int j = 0; j < 4; ++j) store(gx + row + 8 * j, sums.m[j] + 2.0f * load(x + row + 8 * j) * sums.v[j]);
          }
    }
  });
  return grad_x;
}

// Gradients of the active values: dmu[k] = sum dmean * x, dvar[k] = sum dvar * x^2 over output pixels and batch.
std::vector<at::Tensor> backward_weights(const at::Tensor& grad_mean, const at::Tensor& grad_var,
                                         const at::Tensor& x_blocks, const at::Tensor& square_blocks,
                                         const at::Tensor& oc_start, const at::Tensor& ic, const at::Tensor& kh,
                                         const at::Tensor& kw, std::vector<int64_t> shape) {
  const Geometry g = geometry(shape);
  check_blocks(grad_mean, g.out_rows(), "mean gradient blocks");
  check_blocks(grad_var, g.out_rows(), "variance gradient blocks");
  check_blocks(x_blocks, g.in_rows(), "x blocks");
  check_blocks(square_blocks, g.in_rows(), "x^2 blocks");
  for (auto* t : {&oc_start, &ic, &kh, &kw}) check(*t, "index", at::kLong);
  const int64_t blocks = x_blocks.size(0), in_rows = g.in_rows(), out_rows = g.out_rows(), entries = ic.numel();
  auto grad_mu = at::empty({entries}, x_blocks.options());
  auto grad_var_values = at::empty({entries}, x_blocks.options());
  const float *dm = grad_mean.data_ptr<float>(), *dv = grad_var.data_ptr<float>();
  const float *x = x_blocks.data_ptr<float>(), *x2 = square_blocks.data_ptr<float>();
  const int64_t *start = oc_start.data_ptr<int64_t>(), *c = ic.data_ptr<int64_t>();
  const int64_t *r = kh.data_ptr<int64_t>(), *s = kw.data_ptr<int64_t>();
  float *out_m = grad_mu.data_ptr<float>(), *out_v = grad_var_values.data_ptr<float>();
  // each thread owns a range of output channels, so every entry's sum runs over (block, oh, ow) in order
  at::parallel_for(0, g.out_channels, 1, [&](int64_t begin, int64_t end) {
    const int64_t first = start[begin], count = start[end] - first;
    std::vector<vec8> lanes_m(count, vec8{}), lanes_v(count, vec8{});  // 8 partial sums per entry
    for (int64_t b = 0; b < blocks; ++b) {
      const float *xb = x + b * in_rows * CHUNK, *qb = x2 + b * in_rows * CHUNK;
      for (int64_t oh = 0; oh < g.out_height; ++oh)
        for (int64_t ow0 = 0; ow0 < g.out_width; ow0 += TILE_W)
          for (int64_t oc = begin; oc < end; ++oc)
            for (int64_t ow = ow0; ow < std::min(g.out_width, ow0 + TILE_W); ++ow) {
              const int64_t out_row = (b * out_rows + (oc * g.out_height + oh) * g.out_width + ow) * CHUNK;
              const float *pm = dm + out_row, *pv = dv + out_row;
              const vec8 m0 = load(pm), m1 = load(pm + 8), m2 = load(pm + 16), m3 = load(pm + 24);
              const vec8 v0 = load(pv), v1 = load(pv + 8), v2 = load(pv + 16), v3 = load(pv + 24);
              for (int64_t k = start[oc]; k < start[oc + 1]; ++k) {
                const int64_t ih = oh * g.stride - g.padding + r[k], iw = ow * g.stride - g.padding + s[k];
                if (ih < 0 || ih >= g.height || iw < 0 || iw >= g.width) continue;
                const int64_t row = ((c[k] * g.height + ih) * g.width + iw) * CHUNK;
                const float *xp = xb + row, *qp = qb + row;
                lanes_m[k - first] += m0 * load(xp) + m1 * load(xp + 8) + m2 * load(xp + 16) + m3 * load(xp + 24);
                lanes_v[k - first] += v0 * load(qp) + v1 * load(qp + 8) + v2 * load(qp + 16) + v3 * load(qp + 24);
              }
            }
    }
    for (int64_t k = 0; k < count; ++k) {
      float sum_m = 0.0f, sum_v = 0.0f;
      for (int j = 0; j < 8; ++j) {
        sum_m += lanes_m[k][j];
        sum_v += lanes_v[k][j];
      }
      out_m[first + k] = sum_m;
      out_v[first + k] = sum_v;
    }
  });
  return {grad_mu, grad_var_values};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("to_blocks", &to_blocks, "x [N, M] -> batch blocks [NB, M, 32] (and those of x * x)");
  m.def("from_blocks", &from_blocks, "batch blocks [NB, M, 32] -> a new [N, ...] tensor");
  m.def("forward", &forward, "sparse LRT forward: (conv(x, mu), conv(x^2, sigma^2)) in batch blocks");
  m.def("backward_input", &backward_input, "input gradient in batch blocks");
  m.def("backward_weights", &backward_weights, "gradients of the active mu and sigma^2 values");
}
