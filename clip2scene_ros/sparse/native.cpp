// Fused CPU kernels for the sparse engine's inference path (fp32), loaded with ctypes.
//
// Plain C ABI and raw pointers: no libtorch or pybind11 build, only g++. Built once per machine
// (-march=native) by clip2scene_ros/sparse/native.py; the pure-torch path stays the fallback and
// the reference.
//
// Maps are built as int32 tables [rows, K] (-1 = no neighbour; rows in the level's key-sorted
// order) and turned into pairs grouped by offset. A convolution reads its input rows and updates
// its output rows in place: no gathered copy, no per-offset results, no separate scatter or sum.

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace {

// Runs fn(begin, end) over [0, n) split into `threads` contiguous chunks (the caller takes one).
template <class F>
void parallel_rows(int64_t n, int threads, F fn) {
  if (threads <= 1 || n < 2 * threads) {
    fn(int64_t{0}, n);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t chunk = (n + threads - 1) / threads;
  for (int t = 1; t < threads; ++t) {
    const int64_t a = t * chunk, b = std::min(n, a + chunk);
    if (a < b) pool.emplace_back(fn, a, b);
  }
  fn(int64_t{0}, std::min(n, chunk));
  for (auto& th : pool) th.join();
}

// Pairs grouped by offset: offset k's pairs are e in [k_ptr[k], k_ptr[k+1]), output row p_out[e]
// (ascending, each at most once per offset) and input row p_in[e]. Going offset by offset keeps
// the weight slice w[k] in L1 while all its pairs use it, and R pairs at a time share every load
// of a weight row (register blocking, as a GEMM micro-kernel does). Per output element the terms
// add in offset order, then input-channel order, whatever the thread count.
// Explicit vectors (GCC/Clang vector extensions, unaligned): narrow widths such as 8 or 24 channels
// are not auto-vectorised well. W = 16 floats (one AVX-512 register) when COUT allows, else 8.
template <int W>
struct Vec {
  typedef float type __attribute__((vector_size(W * sizeof(float)), aligned(4)));
};

template <int COUT, int R>
void conv_offsets(const float* __restrict x, int64_t cin, const float* __restrict w, int64_t K,
                  const int64_t* __restrict k_ptr, const int32_t* __restrict p_out, const int32_t* __restrict p_in,
                  float* __restrict out, int64_t r0, int64_t r1) {
  constexpr int W = COUT % 16 == 0 ? 16 : 8;
  constexpr int NV = COUT / W;
  using V = typename Vec<W>::type;
  static_assert(COUT % 8 == 0, "COUT must be a multiple of 8");
  for (int64_t k = 0; k < K; ++k) {
    // this thread's output rows [r0, r1) are a contiguous run of the offset's pairs
    const int32_t* first = p_out + k_ptr[k];
    const int32_t* last = p_out + k_ptr[k + 1];
    const int64_t e0 = std::lower_bound(first, last, static_cast<int32_t>(r0)) - p_out;
    const int64_t e1 = std::lower_bound(first, last, static_cast<int32_t>(r1)) - p_out;
    const float* wk = w + k * cin * COUT;
    int64_t e = e0;
    for (; e < e1; e += R) {
      const int nr = static_cast<int>(std::min<int64_t>(R, e1 - e));
      V acc[R][NV];
      const float* xs[R];
      for (int r = 0; r < R; ++r) {
        const int64_t q = e + (r < nr ? r : 0);  // a short block repeats its first pair, stored once
        const V* o = reinterpret_cast<const V*>(out + static_cast<int64_t>(p_out[q]) * COUT);
        for (int v = 0; v < NV; ++v) acc[r][v] = o[v];
        xs[r] = x + static_cast<int64_t>(p_in[q]) * cin;
      }
      for (int64_t c = 0; c < cin; ++c) {
        const V* wc = reinterpret_cast<const V*>(wk + c * COUT);
        V wv[NV];
        for (int v = 0; v < NV; ++v) wv[v] = wc[v];
        for (int r = 0; r < R; ++r) {
          const float s = xs[r][c];
          for (int v = 0; v < NV; ++v) acc[r][v] += s * wv[v];
        }
      }
      for (int r = nr - 1; r >= 0; --r) {
        V* o = reinterpret_cast<V*>(out + static_cast<int64_t>(p_out[e + r]) * COUT);
        for (int v = 0; v < NV; ++v) o[v] = acc[r][v];
      }
    }
  }
}

// Any COUT: no register blocking.
void conv_offsets_any(const float* __restrict x, int64_t cin, const float* __restrict w, int64_t K, int64_t cout,
                      const int64_t* __restrict k_ptr, const int32_t* __restrict p_out,
                      const int32_t* __restrict p_in, float* __restrict out, int64_t r0, int64_t r1) {
  for (int64_t k = 0; k < K; ++k) {
    const int32_t* first = p_out + k_ptr[k];
    const int32_t* last = p_out + k_ptr[k + 1];
    const int64_t e0 = std::lower_bound(first, last, static_cast<int32_t>(r0)) - p_out;
    const int64_t e1 = std::lower_bound(first, last, static_cast<int32_t>(r1)) - p_out;
    const float* wk = w + k * cin * cout;
    for (int64_t e = e0; e < e1; ++e) {
      float* __restrict o = out + static_cast<int64_t>(p_out[e]) * cout;
      const float* xi = x + static_cast<int64_t>(p_in[e]) * cin;
      for (int64_t c = 0; c < cin; ++c) {
        const float v = xi[c];
        const float* wc = wk + c * cout;
        for (int64_t d = 0; d < cout; ++d) o[d] += v * wc[d];
      }
    }
  }
}

}  // namespace

extern "C" {

// out[o] = act(bias + sum over offsets k of x[in(o, k)] @ w[k] (+ residual[o])); w is [K, cin, cout].
void c2s_pair_conv_f32(const float* x, int64_t cin, const float* w, int64_t K, int64_t cout, const int64_t* k_ptr,
                       const int32_t* p_out, const int32_t* p_in, int64_t n_out, const float* bias,
                       const float* residual, int relu, float* out, int threads) {
  auto run = [&](int64_t a, int64_t b) {
    for (int64_t o = a; o < b; ++o)
      for (int64_t d = 0; d < cout; ++d) out[o * cout + d] = bias ? bias[d] : 0.0f;
    switch (cout) {  // fixed widths: register accumulators, whole-vector inner loops
#define C2S_CASE(C, R) \
  case C: conv_offsets<C, R>(x, cin, w, K, k_ptr, p_out, p_in, out, a, b); break;
      C2S_CASE(8, 8) C2S_CASE(16, 8) C2S_CASE(24, 4) C2S_CASE(32, 4) C2S_CASE(48, 4) C2S_CASE(64, 4)
      C2S_CASE(96, 2) C2S_CASE(128, 2)
#undef C2S_CASE
      default: conv_offsets_any(x, cin, w, K, cout, k_ptr, p_out, p_in, out, a, b);
    }
    if (residual == nullptr && !relu) return;
    for (int64_t o = a; o < b; ++o)
      for (int64_t d = 0; d < cout; ++d) {
        float v = out[o * cout + d];
        if (residual) v += residual[o * cout + d];
        out[o * cout + d] = relu && v < 0.0f ? 0.0f : v;
      }
  };
  parallel_rows(n_out, threads, run);
}

// Dense table [n, K] (-1 = none) -> pairs grouped by offset. Pass 1 (p_out == nullptr): k_ptr[k + 1]
// = pair count of offset k. Pass 2: k_ptr holds the prefix sums; fills p_out (ascending) and p_in.
void c2s_table_to_pairs(const int32_t* table, int64_t n, int64_t K, int64_t* k_ptr, int32_t* p_out,
                        int32_t* p_in) {
  if (p_out == nullptr) {
    for (int64_t k = 0; k <= K; ++k) k_ptr[k] = 0;
    for (int64_t o = 0; o < n; ++o)
      for (int64_t k = 0; k < K; ++k) k_ptr[k + 1] += table[o * K + k] >= 0;
    return;
  }
  std::vector<int64_t> pos(k_ptr, k_ptr + K);
  for (int64_t o = 0; o < n; ++o)
    for (int64_t k = 0; k < K; ++k) {
      const int32_t i = table[o * K + k];
      if (i < 0) continue;
      p_out[pos[k]] = static_cast<int32_t>(o);
      p_in[pos[k]++] = i;
    }
}

// Submanifold neighbour table over unique ascending keys (z in the lowest bits): table[i, k] = j
// where keys[j] == keys[i] + col_delta[k / span] + (k % span - r), else -1. span = 2r + 1 offsets
// per (dx, dy) column, columns in row-major order. One merge walk per column: the queries
// keys[i] + delta ascend with i, so a forward-only pointer finds each column's first candidate.
void c2s_subm_table(const int64_t* keys, int64_t n, const int64_t* col_delta, int64_t n_cols, int64_t r,
                    int32_t* table, int threads) {
  const int64_t span = 2 * r + 1, K = n_cols * span;
  auto run = [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i)
      for (int64_t k = 0; k < K; ++k) table[i * K + k] = -1;
    for (int64_t col = 0; col < n_cols; ++col) {
      const int64_t delta = col_delta[col] - r;
      int64_t j = std::lower_bound(keys, keys + n, keys[a] + delta) - keys;
      for (int64_t i = a; i < b; ++i) {
        const int64_t q = keys[i] + delta;
        while (j < n && keys[j] < q) ++j;
        for (int64_t t = j; t < n; ++t) {
          const int64_t dz = keys[t] - q;
          if (dz >= span) break;
          table[i * K + col * span + dz] = static_cast<int32_t>(t);
        }
      }
    }
  };
  parallel_rows(n, threads, run);
}

}  // extern "C"
