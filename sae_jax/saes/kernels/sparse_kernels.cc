// CPU kernels of the sparse TopK train step, as XLA FFI custom calls (float32, int32).
//
// A code is a list of E entries (row[e], idx[e], coef[e]) sorted by row: entry e says
// that latent idx[e] has coefficient coef[e] on token row[e]. A TopK code of B tokens and k
// latents per token is E = B*k entries with row[e] = e / k. Matrices are row-major.
//
//   sae_topk          pre[B,N], bias[N]        -> vals[B,K], idx[B,K]: the K largest of
//                     pre + bias per row, descending
//   sae_decode        W[N,D], row, idx, pre[E] -> out[B,D] = sum_e relu(pre_e) W[idx_e]
//   sae_gather_dot    W[N,D], row, idx, g[B,D] -> out[E]   = W[idx_e] . g[row_e]
//   sae_scatter_rows  row, idx, coef[E], g[B,D] -> out[N,D]: out[j] = sum_{idx_e=j} coef_e g[row_e]
//   sae_scatter_cols  the same, written transposed: out[D,N]
//   sae_batch_select  pre[B,N], cut[]           -> row[E], idx[E], vals[E]: the entries with
//                     pre >= cut and pre > 0 in row-major order, the first E of them; the
//                     rest padded with (B-1, 0, 0.0)   (BatchTopK's code)
//   sae_kth_largest   v[M], m[]                 -> out[]: the m-th largest of ReLU(v), by a
//                     radix select over the float bits (NaN counts as +inf): a histogram
//                     of the top 15 bits, then of the low 16 bits inside the chosen bin
//                     (BatchTopK's cut; 2 passes where a bisection takes 31)
//   sae_batch_topk    pre[B,N], bias[N]         -> row[E], idx[E], vals[E], fallback[]:
//                     sae_batch_select(pre + bias, sae_kth_largest(pre + bias, E), E) in
//                     one pass over pre instead of four (BatchTopK's code; see BatchTopKImpl)
//
// Work is split over XLA's intra-op thread pool; the calling thread takes chunks too, so
// the result never waits on a pool thread that is busy elsewhere.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Runs fn(chunk) for chunk in [0, n_chunks) on the calling thread and the pool.
void ParallelFor(ffi::ThreadPool& pool, int64_t n_chunks, std::function<void(int64_t)> fn) {
  if (n_chunks <= 0) return;
  struct State {
    std::function<void(int64_t)> fn;
    int64_t n_chunks;
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::mutex mu;
    std::condition_variable cv;
  };
  auto state = std::make_shared<State>();
  state->fn = std::move(fn);
  state->n_chunks = n_chunks;
  auto work = [](const std::shared_ptr<State>& s) {
    for (int64_t c; (c = s->next.fetch_add(1)) < s->n_chunks;) {
      s->fn(c);
      if (s->done.fetch_add(1) + 1 == s->n_chunks) {
        std::lock_guard<std::mutex> lock(s->mu);
        s->cv.notify_all();
      }
    }
  };
  int64_t helpers = std::min<int64_t>(pool.num_threads(), n_chunks - 1);
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([state, work]() { work(state); });
  work(state);
  std::unique_lock<std::mutex> lock(state->mu);
  state->cv.wait(lock, [&] { return state->done.load() == state->n_chunks; });
}

int64_t Chunks(ffi::ThreadPool& pool, int64_t items, int64_t min_items_per_chunk) {
  int64_t threads = std::max<int64_t>(1, pool.num_threads() + 1);
  return std::max<int64_t>(1, std::min(threads * 4, items / std::max<int64_t>(1, min_items_per_chunk)));
}

// Top-K of one row of pre + bias, descending; ties keep the lower index first (as
// lax.top_k). A NaN in the row makes vals[0] NaN so that the loss, and the trainer's
// divergence check, see it. (The bias is added here so that pre + b_enc, a [B, N] array,
// is never written; a bias of -inf masks a latent out, as AuxK needs.)
void TopKRow(const float* x, const float* bias, int64_t n, int64_t k, float* vals, int32_t* idx) {
  int64_t filled = 0;
  auto insert = [&](float v, int32_t j) {
    int64_t p = filled < k ? filled : k - 1;  // drop the last when full
    while (p > 0 && vals[p - 1] < v) {
      vals[p] = vals[p - 1];
      idx[p] = idx[p - 1];
      --p;
    }
    vals[p] = v;
    idx[p] = j;
    if (filled < k) ++filled;
  };
  bool nan = false;
  int64_t j = 0;
  for (; j < n && filled < k; ++j) {
    float v = x[j] + bias[j];
    nan |= std::isnan(v);
    insert(v, static_cast<int32_t>(j));
  }
  float thr = vals[k - 1];
  constexpr int64_t kLanes = 16;
  float v[kLanes];
  for (; j + kLanes <= n; j += kLanes) {
    bool any = false, any_nan = false;
    for (int64_t l = 0; l < kLanes; ++l) {
      v[l] = x[j + l] + bias[j + l];
      any |= v[l] > thr;
      any_nan |= v[l] != v[l];
    }
    nan |= any_nan;
    if (!any) continue;
    for (int64_t l = 0; l < kLanes; ++l) {
      if (v[l] > thr) {
        insert(v[l], static_cast<int32_t>(j + l));
        thr = vals[k - 1];
      }
    }
  }
  for (; j < n; ++j) {
    float w = x[j] + bias[j];
    nan |= std::isnan(w);
    if (w > thr) {
      insert(w, static_cast<int32_t>(j));
      thr = vals[k - 1];
    }
  }
  if (nan) vals[0] = std::nanf("");
}

ffi::Error TopKImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> pre, ffi::Buffer<ffi::F32> bias,
                    ffi::ResultBuffer<ffi::F32> vals, ffi::ResultBuffer<ffi::S32> idx) {
  auto dims = pre.dimensions();
  if (dims.size() != 2) return ffi::Error::InvalidArgument("sae_topk: pre must be [B, N]");
  int64_t B = dims[0], N = dims[1];
  int64_t K = vals->dimensions()[1];
  if (K < 1 || K > N) return ffi::Error::InvalidArgument("sae_topk: need 1 <= K <= N");
  if (bias.element_count() != N) return ffi::Error::InvalidArgument("sae_topk: bias must be [N]");
  const float* x = pre.typed_data();
  const float* bs = bias.typed_data();
  float* v = vals->typed_data();
  int32_t* ix = idx->typed_data();
  int64_t chunks = Chunks(pool, B, 16);
  ParallelFor(pool, chunks, [&](int64_t c) {
    for (int64_t b = B * c / chunks; b < B * (c + 1) / chunks; ++b)
      TopKRow(x + b * N, bs, N, K, v + b * K, ix + b * K);
  });
  return ffi::Error::Success();
}

// Entry range [lo, hi) of chunk c, moved to row boundaries so chunks own disjoint rows.
void RowAlignedRange(const int32_t* row, int64_t E, int64_t chunks, int64_t c, int64_t* lo,
                     int64_t* hi) {
  auto align = [&](int64_t e) {
    if (e <= 0) return int64_t{0};
    if (e >= E) return E;
    while (e < E && row[e] == row[e - 1]) ++e;
    return e;
  };
  *lo = align(E * c / chunks);
  *hi = align(E * (c + 1) / chunks);
}

ffi::Error DecodeImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> W, ffi::Buffer<ffi::S32> row,
                      ffi::Buffer<ffi::S32> idx, ffi::Buffer<ffi::F32> pre,
                      ffi::ResultBuffer<ffi::F32> out) {
  int64_t D = W.dimensions()[1], E = idx.element_count();
  int64_t B = out->dimensions()[0];
  const float* w = W.typed_data();
  const int32_t* r = row.typed_data();
  const int32_t* ix = idx.typed_data();
  const float* p = pre.typed_data();
  float* o = out->typed_data();
  std::memset(o, 0, sizeof(float) * B * D);
  int64_t chunks = Chunks(pool, E, 512);
  ParallelFor(pool, chunks, [&](int64_t c) {
    int64_t lo, hi;
    RowAlignedRange(r, E, chunks, c, &lo, &hi);
    for (int64_t e = lo; e < hi; ++e) {
      float a = p[e];
      if (!(a > 0.0f) && !std::isnan(a)) continue;  // ReLU; a NaN propagates
      const float* wr = w + static_cast<int64_t>(ix[e]) * D;
      float* orow = o + static_cast<int64_t>(r[e]) * D;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) orow[d] += a * wr[d];
    }
  });
  return ffi::Error::Success();
}

ffi::Error GatherDotImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> W, ffi::Buffer<ffi::S32> row,
                         ffi::Buffer<ffi::S32> idx, ffi::Buffer<ffi::F32> g,
                         ffi::ResultBuffer<ffi::F32> out) {
  int64_t D = W.dimensions()[1], E = idx.element_count();
  const float* w = W.typed_data();
  const int32_t* r = row.typed_data();
  const int32_t* ix = idx.typed_data();
  const float* gg = g.typed_data();
  float* o = out->typed_data();
  int64_t chunks = Chunks(pool, E, 512);
  ParallelFor(pool, chunks, [&](int64_t c) {
    for (int64_t e = E * c / chunks; e < E * (c + 1) / chunks; ++e) {
      const float* wr = w + static_cast<int64_t>(ix[e]) * D;
      const float* gr = gg + static_cast<int64_t>(r[e]) * D;
      float s = 0.0f;
#pragma omp simd reduction(+ : s)
      for (int64_t d = 0; d < D; ++d) s += wr[d] * gr[d];
      o[e] = s;
    }
  });
  return ffi::Error::Success();
}

// out[j] = sum over entries e with idx[e] = j of coef[e] * g[row[e]], j in [0, N): the
// entries are bucketed by latent (a counting sort), then each latent's row is summed in a
// local buffer and written once. transposed: out is [D, N] and latents are written in
// blocks of 16 adjacent columns (one cache line per output row).
ffi::Error ScatterImpl(ffi::ThreadPool& pool, const int32_t* r, const int32_t* ix, const float* coef,
                       int64_t E, const float* g, int64_t D, int64_t N, float* o, bool transposed) {
  std::vector<int64_t> start(N + 1, 0);
  for (int64_t e = 0; e < E; ++e) {
    int32_t j = ix[e];
    if (j < 0 || j >= N) return ffi::Error::InvalidArgument("sae_scatter: index out of range");
    ++start[j + 1];
  }
  for (int64_t j = 0; j < N; ++j) start[j + 1] += start[j];
  std::vector<int64_t> order(E);
  {
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t e = 0; e < E; ++e) order[fill[ix[e]]++] = e;
  }
  constexpr int64_t kBlock = 16;
  int64_t n_blocks = (N + kBlock - 1) / kBlock;
  int64_t chunks = Chunks(pool, n_blocks, 4);
  ParallelFor(pool, chunks, [&](int64_t c) {
    std::vector<float> acc(kBlock * D);
    for (int64_t blk = n_blocks * c / chunks; blk < n_blocks * (c + 1) / chunks; ++blk) {
      int64_t j0 = blk * kBlock, j1 = std::min(N, j0 + kBlock);
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j = j0; j < j1; ++j) {
        float* a = acc.data() + (j - j0) * D;
        for (int64_t q = start[j]; q < start[j + 1]; ++q) {
          int64_t e = order[q];
          float cf = coef[e];
          if (cf == 0.0f) continue;
          const float* gr = g + static_cast<int64_t>(r[e]) * D;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) a[d] += cf * gr[d];
        }
      }
      if (!transposed) {
        std::memcpy(o + j0 * D, acc.data(), sizeof(float) * (j1 - j0) * D);
      } else {
        for (int64_t d = 0; d < D; ++d)
          for (int64_t j = j0; j < j1; ++j) o[d * N + j] = acc[(j - j0) * D + d];
      }
    }
  });
  return ffi::Error::Success();
}

ffi::Error ScatterRowsImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::S32> row, ffi::Buffer<ffi::S32> idx,
                           ffi::Buffer<ffi::F32> coef, ffi::Buffer<ffi::F32> g,
                           ffi::ResultBuffer<ffi::F32> out) {
  return ScatterImpl(pool, row.typed_data(), idx.typed_data(), coef.typed_data(),
                     idx.element_count(), g.typed_data(), g.dimensions()[1],
                     out->dimensions()[0], out->typed_data(), false);
}

ffi::Error ScatterColsImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::S32> row, ffi::Buffer<ffi::S32> idx,
                           ffi::Buffer<ffi::F32> coef, ffi::Buffer<ffi::F32> g,
                           ffi::ResultBuffer<ffi::F32> out) {
  return ScatterImpl(pool, row.typed_data(), idx.typed_data(), coef.typed_data(),
                     idx.element_count(), g.typed_data(), g.dimensions()[1],
                     out->dimensions()[1], out->typed_data(), true);
}

ffi::Error BatchSelectImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> pre, ffi::Buffer<ffi::F32> cut,
                           ffi::ResultBuffer<ffi::S32> row, ffi::ResultBuffer<ffi::S32> idx,
                           ffi::ResultBuffer<ffi::F32> vals) {
  int64_t B = pre.dimensions()[0], N = pre.dimensions()[1], E = idx->element_count();
  const float* x = pre.typed_data();
  float c = cut.typed_data()[0];
  int32_t* r = row->typed_data();
  int32_t* ix = idx->typed_data();
  float* v = vals->typed_data();
  auto keep = [c](float a) { return a >= c && a > 0.0f; };
  int64_t chunks = Chunks(pool, B, 16);
  std::vector<int64_t> count(chunks + 1, 0);
  ParallelFor(pool, chunks, [&](int64_t ch) {
    int64_t n = 0;
    for (int64_t i = N * (B * ch / chunks); i < N * (B * (ch + 1) / chunks); ++i) n += keep(x[i]);
    count[ch + 1] = n;
  });
  for (int64_t ch = 0; ch < chunks; ++ch) count[ch + 1] += count[ch];
  ParallelFor(pool, chunks, [&](int64_t ch) {
    int64_t out = count[ch];
    for (int64_t b = B * ch / chunks; b < B * (ch + 1) / chunks && out < E; ++b)
      for (int64_t j = 0; j < N && out < E; ++j)
        if (keep(x[b * N + j])) {
          r[out] = static_cast<int32_t>(b);
          ix[out] = static_cast<int32_t>(j);
          v[out] = x[b * N + j];
          ++out;
        }
  });
  for (int64_t e = std::min(count[chunks], E); e < E; ++e) {
    r[e] = static_cast<int32_t>(B - 1);
    ix[e] = 0;
    v[e] = 0.0f;
  }
  return ffi::Error::Success();
}

// Bits of ReLU(v) as an ordered int: negative floats (and -0.0) -> 0, NaN -> +inf's bits.
inline int32_t ThresholdBits(float a) {
  int32_t b;
  std::memcpy(&b, &a, sizeof(b));
  return b < 0 ? 0 : std::min<int32_t>(b, 0x7F800000);
}

ffi::Error KthLargestImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::S32> m_buf,
                          ffi::ResultBuffer<ffi::F32> out) {
  const float* x = v.typed_data();
  int64_t M = v.element_count(), m = m_buf.typed_data()[0];
  if (m < 1 || m > M) return ffi::Error::InvalidArgument("sae_kth_largest: m out of range");
  int64_t chunks = Chunks(pool, M, 1 << 16);
  // One pass: per-chunk histograms of `bins` bins of key(bits) (key < 0: skipped), summed;
  // then the largest bin j with count(bins >= j) >= need, and count(bins > j).
  auto select = [&](int64_t bins, auto key, int64_t need, int64_t* above) {
    std::vector<uint32_t> hist(chunks * bins, 0);
    ParallelFor(pool, chunks, [&](int64_t ch) {
      uint32_t* h = hist.data() + ch * bins;
      for (int64_t i = M * ch / chunks; i < M * (ch + 1) / chunks; ++i) {
        int32_t k = key(ThresholdBits(x[i]));
        if (k >= 0) ++h[k];
      }
    });
    int64_t acc = 0;
    for (int64_t j = bins - 1; j >= 0; --j) {
      int64_t c = 0;
      for (int64_t ch = 0; ch < chunks; ++ch) c += hist[ch * bins + j];
      if (acc + c >= need) {
        *above = acc;
        return j;
      }
      acc += c;
    }
    *above = acc;
    return int64_t{0};
  };
  int64_t above1 = 0, above2 = 0;
  int64_t hi = select(1 << 15, [](int32_t b) { return b >> 16; }, m, &above1);
  int64_t lo = select(1 << 16, [hi](int32_t b) { return (b >> 16) == hi ? (b & 0xFFFF) : -1; },
                      m - above1, &above2);
  int32_t bits = static_cast<int32_t>((hi << 16) | lo);
  std::memcpy(out->typed_data(), &bits, sizeof(bits));
  return ffi::Error::Success();
}

// Sums, over rows b = 0, stride, 2 stride, ... of pre + bias, a histogram of `bins` bins of
// key(ThresholdBits(pre + bias)) (key < 0: not counted).
template <typename Key>
std::vector<int64_t> RowHistogram(ffi::ThreadPool& pool, const float* x, const float* bs, int64_t B,
                                  int64_t N, int64_t stride, int64_t bins, Key key) {
  int64_t rows = (B + stride - 1) / stride;
  int64_t chunks = Chunks(pool, rows * N, 1 << 16);
  std::vector<uint32_t> hist(chunks * bins, 0);
  ParallelFor(pool, chunks, [&](int64_t ch) {
    uint32_t* h = hist.data() + ch * bins;
    for (int64_t r = rows * ch / chunks; r < rows * (ch + 1) / chunks; ++r) {
      const float* xr = x + r * stride * N;
      for (int64_t j = 0; j < N; ++j) {
        int32_t k = key(ThresholdBits(xr[j] + bs[j]));
        if (k >= 0) ++h[k];
      }
    }
  });
  std::vector<int64_t> total(bins, 0);
  for (int64_t ch = 0; ch < chunks; ++ch)
    for (int64_t j = 0; j < bins; ++j) total[j] += hist[ch * bins + j];
  return total;
}

// The largest bin j with count(bins >= j) >= need (0 if none), and count(bins > j).
int64_t PickBin(const std::vector<int64_t>& hist, int64_t need, int64_t* above) {
  int64_t acc = 0;
  for (int64_t j = static_cast<int64_t>(hist.size()) - 1; j >= 0; --j) {
    if (acc + hist[j] >= need) {
      *above = acc;
      return j;
    }
    acc += hist[j];
  }
  *above = acc;
  return 0;
}

// BatchTopK's code in one pass over pre (the reference, sae_kth_largest then
// sae_batch_select on pre + bias, reads it four times):
//   1. a lower bound lo on the cut's bits: the histogram (top 15 bits) of every 16th row
//      (1/16 of a pass), at the bin where that sample holds 1.5 * E * (its rows / B) values;
//   2. one pass that adds the bias and collects, in row-major order, the candidates: the
//      entries with bits >= lo (~1.5 E of them);
//   3. if at least E candidates: the cut is the E-th largest candidate (every entry outside
//      has bits < lo, so it is the E-th largest of all), exactly; the code is the candidates
//      with v >= cut and v > 0, the first E. (lo = 1, i.e. every positive entry, is exact
//      with fewer: then the cut is 0 and all positive entries are kept.)
// Otherwise (the sample misjudged the batch, or more than 4 E candidates) it falls back to
// the reference's four passes, with the bias added as it reads: `fallback` is set to 1.
// Results equal the reference's exactly, ties and NaNs included.
ffi::Error BatchTopKImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> pre, ffi::Buffer<ffi::F32> bias,
                         ffi::ResultBuffer<ffi::S32> row, ffi::ResultBuffer<ffi::S32> idx,
                         ffi::ResultBuffer<ffi::F32> vals, ffi::ResultBuffer<ffi::S32> fallback) {
  auto dims = pre.dimensions();
  if (dims.size() != 2) return ffi::Error::InvalidArgument("sae_batch_topk: pre must be [B, N]");
  int64_t B = dims[0], N = dims[1], E = idx->element_count();
  if (bias.element_count() != N) return ffi::Error::InvalidArgument("sae_batch_topk: bias must be [N]");
  if (E < 1 || E > B * N) return ffi::Error::InvalidArgument("sae_batch_topk: need 1 <= E <= B*N");
  const float* x = pre.typed_data();
  const float* bs = bias.typed_data();
  int32_t* r_out = row->typed_data();
  int32_t* ix_out = idx->typed_data();
  float* v_out = vals->typed_data();

  // 1. The lower bound from the sample.
  constexpr int64_t kStride = 16;
  int64_t sample_rows = (B + kStride - 1) / kStride;
  int64_t need = std::max<int64_t>(1, (3 * E * sample_rows + 2 * B - 1) / (2 * B));
  int32_t lo = 1;
  if (need <= sample_rows * N) {
    int64_t above;
    auto hist = RowHistogram(pool, x, bs, B, N, kStride, 1 << 15,
                             [](int32_t b) { return b >> 16; });
    lo = std::max<int32_t>(1, static_cast<int32_t>(PickBin(hist, need, &above) << 16));
  }

  // 2. The candidates, per chunk of rows, in row-major order; abandoned past 4 E.
  struct Candidates {
    std::vector<int32_t> row, col;
    std::vector<float> val;
  };
  int64_t chunks = Chunks(pool, B, 16);
  std::vector<Candidates> cand(chunks);
  std::atomic<int64_t> total{0};
  const int64_t cap = 4 * E + 256;
  ParallelFor(pool, chunks, [&](int64_t ch) {
    Candidates& c = cand[ch];
    for (int64_t b = B * ch / chunks; b < B * (ch + 1) / chunks; ++b) {
      if (total.load(std::memory_order_relaxed) > cap) return;
      size_t before = c.val.size();
      const float* xr = x + b * N;
      auto push = [&](float v, int64_t j) {
        c.row.push_back(static_cast<int32_t>(b));
        c.col.push_back(static_cast<int32_t>(j));
        c.val.push_back(v);
      };
      constexpr int64_t kLanes = 16;
      int64_t j = 0;
      for (; j + kLanes <= N; j += kLanes) {
        float v[kLanes];
        int32_t any = 0;
        for (int64_t l = 0; l < kLanes; ++l) {
          v[l] = xr[j + l] + bs[j + l];
          int32_t bits;
          std::memcpy(&bits, &v[l], sizeof(bits));
          any |= bits >= lo;
        }
        if (!any) continue;
        for (int64_t l = 0; l < kLanes; ++l) {
          int32_t bits;
          std::memcpy(&bits, &v[l], sizeof(bits));
          if (bits >= lo) push(v[l], j + l);
        }
      }
      for (; j < N; ++j) {
        float v = xr[j] + bs[j];
        int32_t bits;
        std::memcpy(&bits, &v, sizeof(bits));
        if (bits >= lo) push(v, j);
      }
      total.fetch_add(static_cast<int64_t>(c.val.size() - before), std::memory_order_relaxed);
    }
  });
  int64_t n_cand = total.load();

  // 3. The cut, exactly, from the candidates; else the reference's passes.
  float cut = 0.0f;
  bool fell_back = n_cand > cap || (n_cand < E && lo > 1);
  if (!fell_back && n_cand >= E) {
    std::vector<int32_t> bits;
    bits.reserve(n_cand);
    for (const Candidates& c : cand)
      for (float v : c.val) bits.push_back(ThresholdBits(v));
    std::nth_element(bits.begin(), bits.begin() + (E - 1), bits.end(), std::greater<int32_t>());
    std::memcpy(&cut, &bits[E - 1], sizeof(cut));
  }
  auto keep = [&cut](float a) { return a >= cut && a > 0.0f; };
  int64_t out = 0;
  if (!fell_back) {
    for (const Candidates& c : cand)
      for (size_t q = 0; q < c.val.size() && out < E; ++q)
        if (keep(c.val[q])) {
          r_out[out] = c.row[q];
          ix_out[out] = c.col[q];
          v_out[out] = c.val[q];
          ++out;
        }
  } else {
    cand.clear();
    int64_t above1 = 0, above2 = 0;
    int64_t hi = PickBin(RowHistogram(pool, x, bs, B, N, 1, 1 << 15,
                                      [](int32_t b) { return b >> 16; }), E, &above1);
    int64_t low = PickBin(RowHistogram(pool, x, bs, B, N, 1, 1 << 16,
                                       [hi](int32_t b) { return (b >> 16) == hi ? (b & 0xFFFF) : -1; }),
                          E - above1, &above2);
    int32_t cut_bits = static_cast<int32_t>((hi << 16) | low);
    std::memcpy(&cut, &cut_bits, sizeof(cut));
    std::vector<int64_t> count(chunks + 1, 0);
    ParallelFor(pool, chunks, [&](int64_t ch) {
      int64_t n = 0;
      for (int64_t b = B * ch / chunks; b < B * (ch + 1) / chunks; ++b)
        for (int64_t j = 0; j < N; ++j) n += keep(x[b * N + j] + bs[j]);
      count[ch + 1] = n;
    });
    for (int64_t ch = 0; ch < chunks; ++ch) count[ch + 1] += count[ch];
    ParallelFor(pool, chunks, [&](int64_t ch) {
      int64_t o = count[ch];
      for (int64_t b = B * ch / chunks; b < B * (ch + 1) / chunks && o < E; ++b)
        for (int64_t j = 0; j < N && o < E; ++j) {
          float v = x[b * N + j] + bs[j];
          if (keep(v)) {
            r_out[o] = static_cast<int32_t>(b);
            ix_out[o] = static_cast<int32_t>(j);
            v_out[o] = v;
            ++o;
          }
        }
    });
    out = std::min(count[chunks], E);
  }
  for (int64_t e = out; e < E; ++e) {
    r_out[e] = static_cast<int32_t>(B - 1);
    ix_out[e] = 0;
    v_out[e] = 0.0f;
  }
  fallback->typed_data()[0] = fell_back ? 1 : 0;
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SaeTopK, TopKImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(SaeDecode, DecodeImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(SaeGatherDot, GatherDotImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(SaeScatterRows, ScatterRowsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(SaeScatterCols, ScatterColsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(SaeBatchSelect, BatchSelectImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(SaeKthLargest, KthLargestImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());


XLA_FFI_DEFINE_HANDLER_SYMBOL(SaeBatchTopK, BatchTopKImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());