// Fused CPU kernels for the sparse engine's inference path (fp32), loaded with ctypes.
//
// Plain C ABI and raw pointers: no libtorch or pybind11 build, only g++. Built once per machine
// (-march=native) by clip2scene_ros/sparse/native.py; the pure-torch path stays the fallback and
// the reference.
//
// Maps are (output row, input row) pairs grouped by offset, rows in each level's key-sorted order.
// A convolution reads its input rows and updates
// its output rows in place: no gathered copy, no per-offset results, no separate scatter or sum.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace {

// Work sharing without barriers. On a small machine another process often holds one of the
// cores; an OpenMP region then waits for a descheduled worker to even start its static share
// (milliseconds per layer, while the others spin). Here the caller and persistent helpers take
// small chunks from one atomic counter: a helper that is not running simply takes none, and the
// caller only waits for chunks already taken.
class Pool {
 public:
  // Runs fn(chunk) for chunk in [0, n_chunks) on the caller and up to `helpers` helper threads.
  void run(int64_t n_chunks, int helpers, const std::function<void(int64_t)>& fn) {
    if (helpers <= 0 || n_chunks <= 1) {
      for (int64_t c = 0; c < n_chunks; ++c) fn(c);
      return;
    }
    std::lock_guard<std::mutex> serial(run_mutex_);  // one job at a time
    ensure(helpers);
    Job job;
    {
      std::lock_guard<std::mutex> lk(m_);
      job = {++generation_, &fn, n_chunks, helpers};
      job_ = job;
      done_.store(0);
      ticket_.store(job.generation << 32);  // chunk counter tagged with the job's generation
    }
    cv_.notify_all();
    work(job);
    // chunks still in a helper's hands: spin briefly, then yield the core to it
    for (int spins = 0; done_.load() < n_chunks; ++spins)
      if (spins > 2000) std::this_thread::yield();
  }

 private:
  struct Job {
    uint64_t generation = 0;
    const std::function<void(int64_t)>* fn = nullptr;
    int64_t total = 0;
    int helpers = 0;
  };

  // Takes chunks of `job` until none is left; a stale job (a newer generation started) takes none.
  void work(const Job& job) {
    for (;;) {
      uint64_t t = ticket_.load();
      int64_t c;
      do {
        c = static_cast<int64_t>(t & 0xffffffffu);
        if ((t >> 32) != job.generation || c >= job.total) return;
      } while (!ticket_.compare_exchange_weak(t, t + 1));
      (*job.fn)(c);
      done_.fetch_add(1);
    }
  }

  void ensure(int helpers) {
    while (threads_ < helpers) {
      const int id = threads_++;
      std::thread([this, id] { loop(id); }).detach();  // lives as long as the process
    }
  }

  void loop(int id) {
    uint64_t seen = 0;
    for (;;) {
      // layers follow each other within tens of microseconds: poll a little before sleeping
      for (int spins = 0; spins < 20000 && (ticket_.load() >> 32) == seen; ++spins) std::this_thread::yield();
      Job job;
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return generation_ != seen; });
        job = job_;
        seen = job.generation;
      }
      if (id < job.helpers) work(job);
    }
  }

  std::mutex run_mutex_, m_;
  std::condition_variable cv_;
  Job job_;
  uint64_t generation_ = 0;
  std::atomic<uint64_t> ticket_{0};
  std::atomic<int64_t> done_{0};
  int threads_ = 0;
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: its detached threads may outlive static destructors
  return *p;
}

// Runs fn(begin, end) over [0, n) in chunks of at least `grain` rows, shared by `threads` threads.
template <class F>
void parallel_rows(int64_t n, int threads, F fn, int64_t grain = 256) {
  if (threads <= 1 || n < 2 * grain) {
    fn(int64_t{0}, n);
    return;
  }
  const int64_t n_chunks = std::min<int64_t>(8 * threads, (n + grain - 1) / grain);
  const int64_t size = (n + n_chunks - 1) / n_chunks;
  const std::function<void(int64_t)> chunk = [&](int64_t c) {
    const int64_t a = std::min(n, c * size), b = std::min(n, a + size);
    if (a < b) fn(a, b);
  };
  pool().run(n_chunks, threads - 1, chunk);
}

// Pairs grouped by offset: offset k's pairs are e in [k_ptr[k], k_ptr[k+1]), output row p_out[e]
// (ascending, each at most once per offset) and input row p_in[e]. Going offset by offset keeps
// the weight slice w[k] in L1 while all its pairs use it, and R pairs at a time share every load
// of a weight row (register blocking, as a GEMM micro-kernel does). Per output element the terms
// add in offset order, then input-channel order, whatever the thread count.
// Explicit vectors (GCC/Clang vector extensions, unaligned): narrow widths such as 8 or 24 channels
// are not auto-vectorised well.
template <int W>
struct Vec {
  typedef float type __attribute__((vector_size(W * sizeof(float)), aligned(4)));
};

// Offset k's pairs whose output rows lie in [r0, r1): a contiguous run, since they ascend.
inline void pair_range(const int64_t* k_ptr, const int32_t* p_out, int64_t k, int64_t r0, int64_t r1, int64_t& e0,
                       int64_t& e1) {
  const int32_t* first = p_out + k_ptr[k];
  const int32_t* last = p_out + k_ptr[k + 1];
  e0 = std::lower_bound(first, last, static_cast<int32_t>(r0)) - p_out;
  e1 = std::lower_bound(first, last, static_cast<int32_t>(r1)) - p_out;
}

#ifdef __AVX512F__
constexpr int kRegs = 32;  // vector registers: how many accumulators a block of pairs may hold
#else
constexpr int kRegs = 16;
#endif

// Pairs per register block: R blocks of V accumulator vectors plus V weight vectors and one
// broadcast must fit in the vector registers.
constexpr int block_rows(int vectors) {
  const int r = (kRegs - 1 - vectors) / vectors;
  return r < 1 ? 1 : (r > 8 ? 8 : r);
}

template <int COUT, int R = block_rows((kRegs == 32 ? COUT / 16 : 0) + (COUT - (kRegs == 32 ? COUT / 16 : 0) * 16) / 8)>
void conv_offsets(const float* __restrict x, int64_t cin, const float* __restrict w, int64_t K,
                  const int64_t* __restrict k_ptr, const int32_t* __restrict p_out, const int32_t* __restrict p_in,
                  float* __restrict out, int64_t r0, int64_t r1) {
  static_assert(COUT % 8 == 0, "COUT must be a multiple of 8");
  // NA 16-float vectors (AVX-512 only), then NB 8-float ones: 24 channels = one of each
  constexpr int NA = kRegs == 32 ? COUT / 16 : 0;
  constexpr int NB = (COUT - 16 * NA) / 8;
  constexpr int SA = NA > 0 ? NA : 1, SB = NB > 0 ? NB : 1;  // array sizes (no zero-length arrays)
  using VA = typename Vec<16>::type;
  using VB = typename Vec<8>::type;
  for (int64_t k = 0; k < K; ++k) {
    int64_t e0, e1;
    pair_range(k_ptr, p_out, k, r0, r1, e0, e1);
    const float* wk = w + k * cin * COUT;
    for (int64_t e = e0; e < e1; e += R) {
      const int nr = static_cast<int>(std::min<int64_t>(R, e1 - e));
      VA acc_a[R][SA];
      VB acc_b[R][SB];
      const float* xs[R];
      for (int r = 0; r < R; ++r) {
        const int64_t q = e + (r < nr ? r : 0);  // a short block repeats its first pair, stored once
        const float* o = out + static_cast<int64_t>(p_out[q]) * COUT;
        for (int v = 0; v < NA; ++v) acc_a[r][v] = reinterpret_cast<const VA*>(o)[v];
        for (int v = 0; v < NB; ++v) acc_b[r][v] = reinterpret_cast<const VB*>(o + 16 * NA)[v];
        xs[r] = x + static_cast<int64_t>(p_in[q]) * cin;
      }
      for (int64_t c = 0; c < cin; ++c) {
        const float* wc = wk + c * COUT;
        VA wa[SA];
        VB wb[SB];
        for (int v = 0; v < NA; ++v) wa[v] = reinterpret_cast<const VA*>(wc)[v];
        for (int v = 0; v < NB; ++v) wb[v] = reinterpret_cast<const VB*>(wc + 16 * NA)[v];
        for (int r = 0; r < R; ++r) {
          const float s = xs[r][c];
          for (int v = 0; v < NA; ++v) acc_a[r][v] += s * wa[v];
          for (int v = 0; v < NB; ++v) acc_b[r][v] += s * wb[v];
        }
      }
      for (int r = nr - 1; r >= 0; --r) {
        float* o = out + static_cast<int64_t>(p_out[e + r]) * COUT;
        for (int v = 0; v < NA; ++v) reinterpret_cast<VA*>(o)[v] = acc_a[r][v];
        for (int v = 0; v < NB; ++v) reinterpret_cast<VB*>(o + 16 * NA)[v] = acc_b[r][v];
      }
    }
  }
}

// Any COUT: no register blocking.
void conv_offsets_any(const float* __restrict x, int64_t cin, const float* __restrict w, int64_t K, int64_t cout,
                      const int64_t* __restrict k_ptr, const int32_t* __restrict p_out,
                      const int32_t* __restrict p_in, float* __restrict out, int64_t r0, int64_t r1) {
  for (int64_t k = 0; k < K; ++k) {
    int64_t e0, e1;
    pair_range(k_ptr, p_out, k, r0, r1, e0, e1);
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
  auto conv_tile = [&](int64_t a, int64_t b) {
    switch (cout) {  // fixed widths: register accumulators, whole-vector inner loops
#define C2S_CASE(C) \
  case C: conv_offsets<C>(x, cin, w, K, k_ptr, p_out, p_in, out, a, b); break;
      C2S_CASE(8) C2S_CASE(16) C2S_CASE(24) C2S_CASE(32) C2S_CASE(40) C2S_CASE(48) C2S_CASE(56) C2S_CASE(64)
      C2S_CASE(72) C2S_CASE(80) C2S_CASE(88) C2S_CASE(96) C2S_CASE(104) C2S_CASE(112) C2S_CASE(120)
      C2S_CASE(128) C2S_CASE(144) C2S_CASE(160) C2S_CASE(192) C2S_CASE(224) C2S_CASE(256)
#undef C2S_CASE
      default: conv_offsets_any(x, cin, w, K, cout, k_ptr, p_out, p_in, out, a, b);
    }
  };
  // Row tiles small enough that their output rows stay in L2 while every offset passes over them
  // (offset by offset over a whole level streamed the output array through memory once per offset).
  const int64_t tile = std::max<int64_t>(64, (64 << 10) / (4 * cout));
  auto run = [&](int64_t a, int64_t b) {
    for (int64_t t0 = a; t0 < b; t0 += tile) {
      const int64_t t1 = std::min(b, t0 + tile);
      for (int64_t o = t0; o < t1; ++o)
        for (int64_t d = 0; d < cout; ++d) out[o * cout + d] = bias ? bias[d] : 0.0f;
      conv_tile(t0, t1);
      if (residual == nullptr && !relu) continue;
      for (int64_t o = t0; o < t1; ++o)
        for (int64_t d = 0; d < cout; ++d) {
          float v = out[o * cout + d];
          if (residual) v += residual[o * cout + d];
          out[o * cout + d] = relu && v < 0.0f ? 0.0f : v;
        }
    }
  };
  parallel_rows(n_out, threads, run);
}

// Submanifold pairs over unique ascending keys (z in the lowest axis_bits, then y, then x), grouped
// by offset k = ((dx+r)*S + (dy+r))*S + (dz+r), S = 2r+1, output rows ascending. p_out and p_in
// hold K*n entries on entry (offset k writes from k*n) and are compacted to k_ptr's layout.
// Only the offsets after the centre are searched, one merge walk per (dx, dy) column (the
// queries keys[i] + delta ascend with i, so a forward-only pointer finds each candidate run);
// each found pair (i, j) at offset k is also the pair (j, i) of the mirrored offset K-1-k, in the
// same ascending order.
void c2s_subm_pairs(const int64_t* keys, int64_t n, int64_t r, int64_t axis_bits, int64_t* k_ptr, int32_t* p_out,
                    int32_t* p_in) {
  const int64_t S = 2 * r + 1, K = S * S * S, centre = K / 2;
  std::vector<int64_t> cnt(K, 0);
  auto put = [&](int64_t k, int64_t o, int64_t i) {
    const int64_t e = k * n + cnt[k]++;
    p_out[e] = static_cast<int32_t>(o);
    p_in[e] = static_cast<int32_t>(i);
  };
  for (int64_t i = 0; i < n; ++i) put(centre, i, i);
  for (int64_t dx = 0; dx <= r; ++dx)
    for (int64_t dy = -r; dy <= r; ++dy) {
      if (dx == 0 && dy < 0) continue;
      const bool own = dx == 0 && dy == 0;  // the centre column: only dz > 0
      const int64_t lo = own ? 1 : -r;
      const int64_t delta = (dx << (2 * axis_bits)) + (dy << axis_bits) + lo;
      const int64_t span = r - lo + 1;
      const int64_t kbase = ((dx + r) * S + (dy + r)) * S + r;  // offset index at dz = 0
      int64_t j = 0;
      for (int64_t i = 0; i < n; ++i) {
        const int64_t q = keys[i] + delta;
        while (j < n && keys[j] < q) ++j;
        for (int64_t t = j; t < n; ++t) {
          const int64_t dz = keys[t] - q;
          if (dz >= span) break;
          const int64_t k = kbase + lo + dz;
          put(k, i, t);
          put(K - 1 - k, t, i);
        }
      }
    }
  k_ptr[0] = 0;
  for (int64_t k = 0; k < K; ++k) {
    k_ptr[k + 1] = k_ptr[k] + cnt[k];
    std::memmove(p_out + k_ptr[k], p_out + k * n, cnt[k] * sizeof(int32_t));
    std::memmove(p_in + k_ptr[k], p_in + k * n, cnt[k] * sizeof(int32_t));
  }
}

// Coarse key of every fine key (x, y, z fields halved, rounding down; the field bias is even).
void c2s_parent_keys(const int64_t* keys, int64_t n, int64_t axis_bits, int64_t bias, int64_t* out) {
  const int64_t mask = (int64_t{1} << axis_bits) - 1;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = keys[i];
    int64_t res = (k >> (3 * axis_bits)) << (3 * axis_bits);
    for (int a = 0; a < 3; ++a) {
      const int64_t shift = a * axis_bits;
      const int64_t c = ((k >> shift) & mask) - bias;
      res |= (((c >> 1) + bias) & mask) << shift;
    }
    out[i] = res;
  }
}

// k2 s2 pairs of fine rows (ascending keys) and their parents, grouped by child slot
// a = 4*(x&1) + 2*(y&1) + (z&1): slot_ptr [9], fine [Nf], parent [Nf]. Within a slot both the fine
// rows and their parents ascend (same parities: the order of the halved coordinates is the same),
// so (parent, fine) are the down-conv pairs and (fine, parent) the transposed conv's.
void c2s_down_pairs(const int64_t* keys, const int64_t* parent, int64_t n, int64_t axis_bits, int64_t* slot_ptr,
                    int32_t* fine, int32_t* par) {
  auto slot_of = [&](int64_t k) {
    return static_cast<int>((((k >> (2 * axis_bits)) & 1) << 2) | (((k >> axis_bits) & 1) << 1) | (k & 1));
  };
  for (int a = 0; a <= 8; ++a) slot_ptr[a] = 0;
  for (int64_t i = 0; i < n; ++i) ++slot_ptr[slot_of(keys[i]) + 1];
  for (int a = 0; a < 8; ++a) slot_ptr[a + 1] += slot_ptr[a];
  int64_t pos[8];
  for (int a = 0; a < 8; ++a) pos[a] = slot_ptr[a];
  for (int64_t i = 0; i < n; ++i) {
    const int64_t e = pos[slot_of(keys[i])]++;
    fine[e] = static_cast<int32_t>(i);
    par[e] = static_cast<int32_t>(parent[i]);
  }
}

// One cloud [n, c] (x, y, z first) -> voxels with voxelize()'s semantics: points with a non-finite
// column dropped (p2v = -1), keys of floor(xyz / vs) (batch 0) ascending, per-voxel means of every
// column summed in point order. keys, feats and p2v hold n, n * c and n entries; returns the voxel
// count, or -1 when a coordinate lies beyond +-limit (the caller reports it).
int64_t c2s_voxelize(const float* pts, int64_t n, int64_t c, float vx, float vy, float vz, int64_t axis_bits,
                     int64_t bias, int64_t limit, int64_t* keys, float* feats, int64_t* p2v) {
  std::vector<int64_t> key(n), idx;
  idx.reserve(n);
  const float vs[3] = {vx, vy, vz};
  for (int64_t i = 0; i < n; ++i) {
    p2v[i] = -1;
    const float* p = pts + i * c;
    bool finite = true;
    for (int64_t j = 0; j < c; ++j) finite &= std::isfinite(p[j]);
    if (!finite) continue;
    int64_t k = 0;
    for (int a = 0; a < 3; ++a) {
      const int64_t g = static_cast<int64_t>(std::floor(p[a] / vs[a]));
      if (g < -limit || g > limit) return -1;
      k |= (g + bias) << ((2 - a) * axis_bits);
    }
    key[i] = k;
    idx.push_back(i);
  }
  // LSD radix sort of the kept points by key, 8 bits a pass (stable: equal keys keep point order);
  // passes whose digit is the same for every key are skipped
  std::vector<int64_t> tmp(idx.size());
  for (int shift = 0; shift < 64; shift += 8) {
    int64_t count[257] = {0};
    for (int64_t i : idx) ++count[((key[i] >> shift) & 255) + 1];
    if (std::any_of(count + 1, count + 257, [&](int64_t v) { return v == static_cast<int64_t>(idx.size()); }))
      continue;
    for (int d = 0; d < 256; ++d) count[d + 1] += count[d];
    for (int64_t i : idx) tmp[count[(key[i] >> shift) & 255]++] = i;
    idx.swap(tmp);
  }
  int64_t nv = -1, members = 0;
  auto finish = [&]() {
    for (int64_t j = 0; j < c; ++j) feats[nv * c + j] /= static_cast<float>(members);
  };
  for (int64_t i : idx) {
    if (nv < 0 || key[i] != keys[nv]) {
      if (nv >= 0) finish();
      keys[++nv] = key[i];
      members = 0;
      for (int64_t j = 0; j < c; ++j) feats[nv * c + j] = 0.0f;
    }
    for (int64_t j = 0; j < c; ++j) feats[nv * c + j] += pts[i * c + j];
    ++members;
    p2v[i] = nv;
  }
  if (nv >= 0) finish();
  return nv + 1;
}

// The padded layout of an exported graph's submanifold inputs (kmap.pad_pairs): pairs of offset k
// are bounds[k]..bounds[k+1] of (out_rows, in_rows), rows in the level order. Each pair goes to
// flat[row_start[k] + its rank among offset k's pairs by output row] = in_row, and that position
// to its row's table: tflat[t_base[b] + c * rows_b + (r - b_rows[b])], c = its column among the
// row's pairs in offset order, b = the row's bucket (b_rows[b] <= r < b_rows[b + 1]). flat and
// tflat arrive filled with their padding values.
void c2s_pad_pairs(int64_t n, int64_t k1, const int64_t* bounds, const int64_t* out_rows, const int64_t* in_rows,
                   const int64_t* row_start, int64_t nb, const int64_t* b_rows, const int64_t* t_base, int64_t* flat,
                   int64_t* tflat) {
  // each row's pairs in offset order, (offset << 32 | input row), by a counting sort on the output
  // row: ~3x faster than a [rows, offsets] grid, whose scattered writes miss the cache
  const int64_t m = bounds[k1];
  std::vector<int64_t> ptr(n + 1, 0);
  for (int64_t e = 0; e < m; ++e) ++ptr[out_rows[e] + 1];
  for (int64_t r = 0; r < n; ++r) ptr[r + 1] += ptr[r];
  std::vector<int64_t> fill(ptr.begin(), ptr.end() - 1);
  std::vector<int64_t> entry(m);
  for (int64_t k = 0; k < k1; ++k)
    for (int64_t e = bounds[k]; e < bounds[k + 1]; ++e) entry[fill[out_rows[e]]++] = (k << 32) | in_rows[e];
  std::vector<int64_t> run(k1, 0);  // pairs of each offset placed so far (rows ascending)
  int64_t b = 0;
  for (int64_t r = 0; r < n; ++r) {
    while (b + 1 < nb && r >= b_rows[b + 1]) ++b;
    const int64_t rows_b = b_rows[b + 1] - b_rows[b];
    int64_t* table = tflat + t_base[b] + (r - b_rows[b]);
    for (int64_t q = ptr[r], c = 0; q < ptr[r + 1]; ++q, ++c) {
      const int64_t k = entry[q] >> 32;
      const int64_t pos = row_start[k] + run[k]++;
      flat[pos] = entry[q] & 0xffffffff;
      table[c * rows_b] = pos;
    }
  }
}

}  // extern "C"
