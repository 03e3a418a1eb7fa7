// Types shared by every structure: points, queries, results, statistics, threads.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <condition_variable>
#include <functional>
#include <limits>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "hsrgeom/interrupt.hpp"
#include "hsrgeom/predicate.hpp"

namespace hsrgeom {

// A row-major n x d view of points; the structure copies what it keeps.
template <class T>
struct PointsView {
  const T* data = nullptr;
  index_t n = 0;
  int d = 0;
  const T* row(index_t i) const { return data + i * static_cast<index_t>(d); }
};

// A batch of half-spaces {x : <a_j, x> >= b_j}; normals row-major m x d.
template <class T>
struct Halfspaces {
  const T* normals = nullptr;
  const double* offsets = nullptr;
  index_t m = 0;
};

// Per-query cost counters: what a query really did, so cost is measured and not guessed.
struct QueryStats {
  std::vector<std::int64_t> nodes_visited, points_tested, points_reported, exact_checks;
  void resize(index_t m) {
    nodes_visited.assign(m, 0);
    points_tested.assign(m, 0);
    points_reported.assign(m, 0);
    exact_checks.assign(m, 0);
  }
};

// Counters of one query while it runs (kept in registers, written to QueryStats at the end).
struct Counters {
  std::int64_t nodes = 0, tested = 0, reported = 0, exact = 0;
  void store(QueryStats& s, index_t j) const {
    s.nodes_visited[j] = nodes;
    s.points_tested[j] = tested;
    s.points_reported[j] = reported;
    s.exact_checks[j] = exact;
  }
};

// <a, x> with a in float64 and float64 accumulation (the score reported with an id). Any
// summation order is covered by the predicate's margins, so the compiler may vectorise it.
// D > 0: d == D known at compile time (see with_dim), so the loop unrolls.
template <int D = 0, class P>
HSRGEOM_INLINE double dot_f64(const double* a, const P* x, int d) {
  if constexpr (D > 0) {  // straight-line code (an `omp simd` loop would not unroll)
    double s = 0;
    for (int i = 0; i < D; ++i) s += a[i] * static_cast<double>(x[i]);
    return s;
  }
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < d; ++i) s += a[i] * static_cast<double>(x[i]);
  return s;
}

// Calls f(std::integral_constant<int, D>{}) with D = d when Lo <= d <= Hi, D = 0 (d known at run
// time only) otherwise, for hot loops worth compiling for a fixed small d.
template <int Lo, int Hi, class F>
decltype(auto) with_dim_in(int d, F&& f) {
  if constexpr (Lo > Hi) {
    return f(std::integral_constant<int, 0>{});
  } else {
    if (d == Lo) return f(std::integral_constant<int, Lo>{});
    return with_dim_in<Lo + 1, Hi>(d, std::forward<F>(f));
  }
}

// The dimensions whose traversals are compiled for the fixed d (2, 3, 4: a traversal's per-node
// and per-point work is then a few straight-line multiply-adds).
template <class F>
decltype(auto) with_dim(int d, F&& f) {
  return with_dim_in<2, 4>(d, std::forward<F>(f));
}

// One query's reported ids and, when asked for, their scores <a, x> (float64 accumulation of
// the stored coordinates, in the same order as ids).
struct IdList {
  std::vector<std::int64_t> ids;
  std::vector<double> scores;
  void clear() {
    ids.clear();
    scores.clear();
  }
  // Appends id, and <a, x> when with_score (x: the point's stored coordinates).
  template <class P>
  HSRGEOM_INLINE void add(std::int64_t id, bool with_score, const double* a, const P* x, int d) {
    ids.push_back(id);
    if (with_score) scores.push_back(dot_f64(a, x, d));
  }
  // Appends count ids at once, with the scores of their points stored row after row from x.
  template <class P>
  void add_rows(const std::int64_t* id, index_t count, bool with_score, const double* a, const P* x, int d) {
    ids.insert(ids.end(), id, id + count);
    if (with_score)
      for (index_t k = 0; k < count; ++k) scores.push_back(dot_f64(a, x + k * static_cast<index_t>(d), d));
  }
};

// Compressed rows like faiss::RangeSearchResult: ids of query j are ids[lims[j] : lims[j+1]],
// scores (when asked for; else empty) alongside, like its distances.
struct ReportResult {
  std::vector<std::int64_t> lims;
  std::vector<std::int64_t> ids;
  std::vector<double> scores;
  static ReportResult from_lists(std::vector<IdList>& lists, bool with_scores) {
    ReportResult r;
    r.lims.resize(lists.size() + 1);
    r.lims[0] = 0;
    for (size_t j = 0; j < lists.size(); ++j) r.lims[j + 1] = r.lims[j] + lists[j].ids.size();
    r.ids.resize(r.lims.back());
    if (with_scores) r.scores.resize(r.lims.back());
    for (size_t j = 0; j < lists.size(); ++j) {
      std::copy(lists[j].ids.begin(), lists[j].ids.end(), r.ids.begin() + r.lims[j]);
      if (with_scores) std::copy(lists[j].scores.begin(), lists[j].scores.end(), r.scores.begin() + r.lims[j]);
      IdList().ids.swap(lists[j].ids);
      IdList().scores.swap(lists[j].scores);
    }
    return r;
  }
};

// ---- half-space sums ---------------------------------------------------------------------------
// sum(): aggregates over the points of each half-space without listing them (a semigroup range
// query). For the points x (id i) with exact <a_j, x> >= b_j:
//   counts[j] = their number,  weights[j] = sum of w,  sums[j] = sum of w * values[offset + i],
// with w = max(s - shift_j, 0)^power (power 0: w = 1) and s the float64 <a_j, x> of the stored
// coordinates (the score report() returns). Membership is exact; the sums are float64
// accumulations whose order depends on the structure (and for scans on the thread count).
template <class V>
struct SumSpec {
  const V* values = nullptr;  // rows of dv values; nullptr when dv == 0
  int dv = 0;
  index_t offset = 0;  // point i uses row offset + i
  int power = 0;
  const double* shift = nullptr;  // one per query
  bool node_sums = false;  // the structure's value sums (set_value_sums) were made from these values
  bool needs_score() const { return power > 0; }
  double weight(double s, index_t j) const {
    if (power == 0) return 1.0;
    const double x = s - shift[j];
    if (!(x > 0)) return 0.0;
    return int_power(x, power);
  }
  // x^p for p >= 1 in O(log p) multiplications: up to kPowerLoop by repeated multiplication
  // (x * x * ... * x, left to right, as before), beyond by binary exponentiation (squaring).
  // python/hsrgeom/_index.py (_weights) evaluates the same operations in the same order.
  static constexpr int kPowerLoop = 16;
  static double int_power(double x, int p) {
    if (p <= kPowerLoop) {
      double w = x;
      for (int t = 1; t < p; ++t) w *= x;
      return w;
    }
    double r = 1, b = x;
    while (true) {
      if (p & 1) r *= b;
      p >>= 1;
      if (!p) return r;
      b *= b;
    }
  }
  const V* row(index_t i) const { return values + (offset + i) * static_cast<index_t>(dv); }
  void prefetch(index_t i) const {
    if (dv == 0) return;
    const char* p = reinterpret_cast<const char*>(row(i));
    for (size_t off = 0; off < sizeof(V) * static_cast<size_t>(dv); off += 64) __builtin_prefetch(p + off);
  }
};

// What one query (or one part of it) has summed so far. The value rows of a tree's points come
// in no particular order (unless attached, then in tree order), so each row is prefetched when
// its point is found and added kLag points later (a software pipeline: measured ~2x on 63k
// scattered rows of 10^6).
struct SumAcc {
  static constexpr int kLag = 16;
  std::int64_t count = 0;
  double weight = 0;
  std::vector<double> sum;  // dv values, allocated on the first non-zero weight

  template <class V>
  void add(const SumSpec<V>& sp, index_t j, index_t i, double score) {
    ++count;
    const double w = sp.weight(score, j);
    if (w == 0) return;
    weight += w;
    if (sp.dv == 0) return;
    row(sp.dv);
    sp.prefetch(i);
    const int slot = static_cast<int>(pending_++ % kLag);
    if (pending_ > kLag) add_row(sp, ring_[slot]);
    ring_[slot] = {i, w};
  }
  // Adds the rows still in the pipeline; call before reading sum.
  template <class V>
  void flush(const SumSpec<V>& sp) {
    const std::int64_t k = std::min<std::int64_t>(pending_, kLag);
    for (std::int64_t t = pending_ - k; t < pending_; ++t) add_row(sp, ring_[t % kLag]);
    pending_ = 0;
  }
  // The dv sums, zero-filled on first use.
  double* row(int dv) {
    if (sum.empty()) sum.assign(dv, 0.0);
    return sum.data();
  }
  void merge(const SumAcc& o) {
    count += o.count;
    weight += o.weight;
    if (o.sum.empty()) return;
    double* s = row(static_cast<int>(o.sum.size()));
    for (size_t k = 0; k < o.sum.size(); ++k) s[k] += o.sum[k];
  }

 private:
  struct Entry {
    index_t id;
    double w;
  };
  template <class V>
  void add_row(const SumSpec<V>& sp, Entry e) {
    const V* v = sp.row(e.id);
    double* s = sum.data();
    for (int k = 0; k < sp.dv; ++k) s[k] += e.w * static_cast<double>(v[k]);
  }
  Entry ring_[kLag];
  std::int64_t pending_ = 0;
};

// Results of sum() for m queries: counts (m), weights (m), sums (m x dv row-major).
struct SumResult {
  std::vector<std::int64_t> counts;
  std::vector<double> weights, sums;
  SumResult(index_t m, int dv) : counts(m, 0), weights(m, 0.0), sums(static_cast<size_t>(m) * dv, 0.0) {}
  void store(index_t j, const SumAcc& a) {
    counts[j] = a.count;
    weights[j] = a.weight;
    if (!a.sum.empty()) std::copy(a.sum.begin(), a.sum.end(), sums.begin() + j * static_cast<index_t>(a.sum.size()));
  }
};

// Per-query lists of a scan over chunks of consecutive points (cells[chunk][query]) joined in
// chunk order, so ids stay ascending; the cells are freed on the way.
inline std::vector<IdList> join_chunks(std::vector<std::vector<IdList>>& cells, index_t m, QueryStats* st) {
  std::vector<IdList> out(m);
  for (index_t j = 0; j < m; ++j) {
    for (auto& chunk : cells) {
      out[j].ids.insert(out[j].ids.end(), chunk[j].ids.begin(), chunk[j].ids.end());
      out[j].scores.insert(out[j].scores.end(), chunk[j].scores.begin(), chunk[j].scores.end());
      chunk[j] = IdList();
    }
    if (st) st->points_reported[j] = static_cast<std::int64_t>(out[j].ids.size());
  }
  return out;
}

// Sums of a scan over chunks of consecutive points (cells[chunk][query]) added in chunk order.
template <class V>
SumResult merge_sums(std::vector<std::vector<SumAcc>>& cells, index_t m, const SumSpec<V>& sp, QueryStats* st) {
  SumResult res(m, sp.dv);
  for (index_t j = 0; j < m; ++j) {
    SumAcc total;
    for (auto& chunk : cells) {
      chunk[j].flush(sp);
      total.merge(chunk[j]);
    }
    res.store(j, total);
    if (st) st->points_reported[j] = total.count;
  }
  return res;
}

// empty() of a structure that counts anyway: 1 where the count is 0.
inline std::vector<std::uint8_t> zero_counts(const std::vector<std::int64_t>& counts) {
  std::vector<std::uint8_t> out(counts.size());
  for (size_t j = 0; j < counts.size(); ++j) out[j] = counts[j] == 0;
  return out;
}

// A cleared per-thread buffer for one query's ids (see collect_sorted).
inline IdList& id_scratch() {
  static thread_local IdList v;
  v.clear();
  return v;
}

// Sorts ids in [0, n) ascending (and their scores with them when out.scores is not empty):
// comparison sort for a few ids, a bitmap pass when they are a large share of [0, n) (ids only),
// else an LSD radix sort on 8-bit digits (only as many passes as n has bytes; a pass whose digit
// is the same for every id is skipped). Measured for ids < 10^7: std::sort 2.0 / 4.5 / 30 us for
// 100 / 200 / 1000 ids, the radix sort 0.5 / 0.8 / 2.8 us.
inline void sort_ids(IdList& out, index_t n) {
  auto& ids = out.ids;
  const size_t k = ids.size();
  const bool sc = !out.scores.empty();
  if (k < 2) return;
  if (k < 32 && !sc) {
    std::sort(ids.begin(), ids.end());
    return;
  }
  if (!sc && static_cast<double>(k) * 128 >= static_cast<double>(n)) {
    std::vector<std::uint64_t> bits((n + 63) / 64, 0);
    for (auto id : ids) bits[id >> 6] |= std::uint64_t{1} << (id & 63);
    size_t w = 0;
    for (size_t i = 0; i < bits.size(); ++i) {
      std::uint64_t b = bits[i];
      while (b) {
        ids[w++] = static_cast<std::int64_t>(i * 64 + __builtin_ctzll(b));
        b &= b - 1;
      }
    }
    return;
  }
  const std::uint64_t top = static_cast<std::uint64_t>(std::max<index_t>(n - 1, 1));
  const int passes = (64 - __builtin_clzll(top) + 7) / 8;
  std::uint32_t hist[8][256] = {};
  for (auto id : ids)
    for (int p = 0; p < passes; ++p) ++hist[p][(static_cast<std::uint64_t>(id) >> (8 * p)) & 255];
  static thread_local IdList scratch;
  scratch.ids.resize(k);
  if (sc) scratch.scores.resize(k);
  std::int64_t *src = ids.data(), *dst = scratch.ids.data();
  double *ssrc = sc ? out.scores.data() : nullptr, *sdst = sc ? scratch.scores.data() : nullptr;
  for (int p = 0; p < passes; ++p) {
    std::uint32_t* h = hist[p];
    if (h[(static_cast<std::uint64_t>(src[0]) >> (8 * p)) & 255] == k) continue;
    std::uint32_t sum = 0;
    for (int b = 0; b < 256; ++b) {
      const std::uint32_t c = h[b];
      h[b] = sum;
      sum += c;
    }
    for (size_t i = 0; i < k; ++i) {
      const std::uint32_t at = h[(static_cast<std::uint64_t>(src[i]) >> (8 * p)) & 255]++;
      dst[at] = src[i];
      if (sc) sdst[at] = ssrc[i];
    }
    std::swap(src, dst);
    std::swap(ssrc, sdst);
  }
  if (src != ids.data()) {
    std::copy(src, src + k, ids.data());
    if (sc) std::copy(ssrc, ssrc + k, out.scores.data());
  }
}

// One query of a report: fill(out) appends the ids (and scores) to a per-thread scratch list,
// which is sorted by id (when `sorted`) and copied into dest, so a query costs one allocation
// whatever its output size. Returns the number of ids.
template <class Fill>
std::int64_t collect(IdList& dest, index_t n, bool sorted, Fill&& fill) {
  IdList& out = id_scratch();
  fill(out);
  if (sorted) sort_ids(out, n);
  dest.ids.assign(out.ids.begin(), out.ids.end());
  dest.scores.assign(out.scores.begin(), out.scores.end());
  return static_cast<std::int64_t>(out.ids.size());
}

// ---- progress of long builds -----------------------------------------------------------------
// hsrgeom.set_verbose(True): builds of at least kMinPoints points print a line on stderr when
// they start, then at most one every 5 s while they run (where the build has a natural count to
// show), and one when done, with the elapsed time (FAISS's `verbose` convention; C-level stderr,
// so Jupyter shows them in the server's log, not the notebook).
inline std::atomic<bool>& verbose_flag() {
  static std::atomic<bool> on{false};
  return on;
}

class BuildProgress {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr long long kMinPoints = 100000;
  BuildProgress(const char* what, long long n, int d) : what_(what), on_(verbose_flag().load() && n >= kMinPoints) {
    if (!on_) return;
    t0_ = last_ = Clock::now();
    std::fprintf(stderr, "hsrgeom %s: building on %lld points, d = %d\n", what_, n, d);
    std::fflush(stderr);
  }
  // A progress line (printf-style), if 5 s passed since the last one.
  template <class... A>
  void tick(const char* fmt, A... args) {
    if (!on_ || seconds(Clock::now() - last_) < 5.0) return;
    line(fmt, args...);
  }
  template <class... A>
  void done(const char* fmt, A... args) {
    if (on_) line(fmt, args...);
  }

 private:
  static double seconds(Clock::duration t) { return std::chrono::duration<double>(t).count(); }
  template <class... A>
  void line(const char* fmt, A... args) {
    last_ = Clock::now();
    char buf[256];
    std::snprintf(buf, sizeof buf, fmt, args...);
    std::fprintf(stderr, "hsrgeom %s: %s (%.1f s)\n", what_, buf, seconds(last_ - t0_));
    std::fflush(stderr);
  }
  const char* what_;
  bool on_;
  Clock::time_point t0_, last_;
};

// ---- threads ---------------------------------------------------------------------------------
// Policy: a thread count (n_threads=, set_num_threads) is an upper bound, never a command. A
// parallel region starts at most
//   - kMaxThreads (the Python layer rejects larger requests with a ValueError),
//   - the processors OpenMP reports (omp_get_num_procs: more threads only oversubscribe),
//   - the work items it has (parallel_for),
//   - the threads the process can start now (startable_threads): libgomp ends the process
//     ("Thread creation failed") when pthread_create fails, e.g. under an address-space limit,
//     so a count this calling thread has not started before is first tried with std::thread,
//     whose failure is an exception, and lowered to what started.
// The result never depends on the thread count (only float sums' rounding may, as documented).
constexpr int kMaxThreads = 4096;
inline std::atomic<int>& default_threads_ref() {
  static std::atomic<int> n{0};  // 0: all cores (atomic: set while other threads' calls read it)
  return n;
}
inline int max_threads() {
#ifdef _OPENMP
  return std::max(1, std::min(omp_get_num_procs(), kMaxThreads));
#else
  return 1;
#endif
}
// At most `want` (>= 1): how many threads, the caller included, can run at once. Each calling
// thread remembers the largest count it has seen start (libgomp keeps a pool of workers per
// calling thread, so those are not created again); a larger count is tried by starting the
// missing threads together (they wait until all are up, then end) and joining them.
inline int startable_threads(int want) {
  thread_local int known = 1;
  if (want <= known) return want;
  std::mutex mu;
  std::condition_variable cv;
  bool go = false;
  std::vector<std::thread> started;
  started.reserve(static_cast<size_t>(want - 1));
  try {
    while (static_cast<int>(started.size()) + 1 < want)
      started.emplace_back([&] {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return go; });
      });
  } catch (const std::system_error&) {
    // EAGAIN/ENOMEM: no more threads now; run with those that started
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    go = true;
  }
  cv.notify_all();
  for (std::thread& t : started) t.join();
  const int got = static_cast<int>(started.size()) + 1;
  known = std::max(known, got);
  return got;
}
// Threads for a call asking for `requested` (<= 0: the default, set_num_threads; 0 there: all
// processors), within the policy above.
inline int resolve_threads(int requested) {
  int n = requested > 0 ? requested : default_threads_ref().load();
  if (n <= 0) n = max_threads();
  return startable_threads(std::max(1, std::min(n, max_threads())));
}

// Waking a second thread costs up to ~10 ms on some virtual machines (measured: a 2-thread
// region around a 256-point build took 12 ms instead of 0.06 ms), so work below this many
// "units" (roughly flops) runs on the calling thread.
constexpr double kParallelWork = 4e6;
inline int threads_for_work(int threads, double work) {
  return work < kParallelWork ? 1 : resolve_threads(threads);
}

// Calls f(i, thread_id) for i in [0, count), dynamically scheduled over `threads` threads.
// An exception thrown by f (interrupt::Interrupted included: every 8th iteration of a thread
// checks for an interrupt) skips the iterations not yet started and is rethrown after the region. The
// workers follow the calling thread's interrupt state (interrupt.hpp).
template <class F>
void parallel_for(index_t count, int threads, F&& f) {
  threads = static_cast<int>(std::min<index_t>(std::min(threads, max_threads()), std::max<index_t>(count, 1)));
#ifdef _OPENMP
  if (threads > 1) threads = startable_threads(threads);
  if (threads > 1) {
    std::exception_ptr err = nullptr;
    std::atomic<bool> failed{false};
    interrupt::State* const cancel = interrupt::current();
#pragma omp parallel num_threads(threads)
    {
      const interrupt::Adopt adopt(cancel);
      unsigned done = 0;  // this thread's iterations
#pragma omp for schedule(dynamic, 1)
      for (index_t i = 0; i < count; ++i) {
        if (failed.load(std::memory_order_relaxed)) continue;  // drain: no exception crosses the region
        try {
          if ((done++ & 7) == 0) interrupt::check();
          f(i, omp_get_thread_num());
        } catch (...) {
          failed.store(true, std::memory_order_relaxed);
#pragma omp critical
          if (!err) err = std::current_exception();
        }
      }
    }
    if (err) std::rethrow_exception(err);
    return;
  }
#endif
  for (index_t i = 0; i < count; ++i) {
    if ((i & 7) == 0) interrupt::check();
    f(i, 0);
  }
}

// Runs f(j, counters) for every query j in [0, m), in parallel when the estimated total `work`
// (roughly flops) pays for it, and stores each query's counters in *st when given.
template <class F>
void for_each_query(index_t m, QueryStats* st, int threads, double work, F&& f) {
  if (st) st->resize(m);
  parallel_for(m, threads_for_work(threads, work), [&](index_t j, int) {
    Counters c;
    f(j, c);
    if (st) c.store(*st, j);
  });
}

// A whole report without an allocation per query: fill(j, counters, out) appends query j's ids
// (and scores) to `out`; they go to the running thread's arena (sorted by id first when
// `sorted`, through the per-thread scratch) and are gathered into one ReportResult at the end
// (FAISS's RangeSearchPartialResult idea). Stores each query's counters in *st when given.
template <class Fill>
ReportResult report_queries(index_t m, QueryStats* st, int threads, double work, index_t n, bool sorted,
                            bool scores, Fill&& fill) {
  if (st) st->resize(m);
  const int nt = static_cast<int>(std::min<index_t>(threads_for_work(threads, work), std::max<index_t>(m, 1)));
  // Growing the arenas by doubling cost ~30 % of a 100-id query (measured); start them at the
  // size the last report in this process needed per query (a hint: trimmed below if it was
  // far too large).
  static std::atomic<double> ids_per_query{0};
  const double per_query = std::min(ids_per_query.load() * 1.25, static_cast<double>(n));
  const size_t guess = static_cast<size_t>(std::min(per_query * static_cast<double>(m) / nt, 16777216.0));
  std::vector<IdList> arena(nt);
  for (IdList& a : arena) {
    a.ids.reserve(guess);
    if (scores) a.scores.reserve(guess);
  }
  std::vector<std::int64_t> start(m), len(m);
  std::vector<int> owner(m);
  parallel_for(m, nt, [&](index_t j, int t) {
    Counters c;
    IdList& a = arena[t];
    start[j] = static_cast<std::int64_t>(a.ids.size());
    owner[j] = t;
    if (sorted) {
      IdList& out = id_scratch();
      fill(j, c, out);
      sort_ids(out, n);
      a.ids.insert(a.ids.end(), out.ids.begin(), out.ids.end());
      a.scores.insert(a.scores.end(), out.scores.begin(), out.scores.end());
    } else {
      fill(j, c, a);
    }
    len[j] = static_cast<std::int64_t>(a.ids.size()) - start[j];
    c.reported = len[j];
    if (st) c.store(*st, j);
  });
  ReportResult r;
  r.lims.resize(m + 1);
  r.lims[0] = 0;
  for (index_t j = 0; j < m; ++j) r.lims[j + 1] = r.lims[j] + len[j];
  if (m > 0) ids_per_query = static_cast<double>(r.lims[m]) / static_cast<double>(m);
  if (nt == 1) {  // one arena, already in query order
    r.ids = std::move(arena[0].ids);
    if (scores) r.scores = std::move(arena[0].scores);
    if (r.ids.capacity() > 2 * r.ids.size() + 4096) r.ids.shrink_to_fit(), r.scores.shrink_to_fit();
    return r;
  }
  r.ids.resize(r.lims[m]);
  if (scores) r.scores.resize(r.lims[m]);
  for (index_t j = 0; j < m; ++j) {
    const IdList& a = arena[owner[j]];
    std::copy(a.ids.begin() + start[j], a.ids.begin() + start[j] + len[j], r.ids.begin() + r.lims[j]);
    if (scores)
      std::copy(a.scores.begin() + start[j], a.scores.begin() + start[j] + len[j], r.scores.begin() + r.lims[j]);
  }
  return r;
}

// ---- exact top-k -----------------------------------------------------------------------------
// Collects candidates for the k largest exact inner products <q, x>, ties broken by smaller id.
// Scores are rounded evaluations with a per-candidate error bound `err`; a candidate is dropped
// only when its score is surely below the current k-th best, so the final exact sort sees every
// point that can be in the answer.
template <class T>
class TopKCollector {
 public:
  struct Cand {
    double s, err;
    std::int64_t id;
    const T* x;
  };
  TopKCollector(const double* q, int d, index_t k) : q_(q), d_(d), k_(k) {}

  // Lower bound of the exact k-th best value among candidates so far (-inf if fewer than k).
  double kth_lower() const { return kth_lower_; }

  void push(double s, double err, std::int64_t id, const T* x) {
    if (!(std::fabs(s) <= std::numeric_limits<double>::max()) || !(err <= std::numeric_limits<double>::max()))
      s = 0, err = std::numeric_limits<double>::infinity();  // overflowed: no enclosure, exact comparisons decide
    if (s + err < kth_lower_) return;
    cand_.push_back({s, err, id, x});
    if (static_cast<index_t>(cand_.size()) >= next_prune_) {
      prune();
      // ties survive a prune: with many candidates tied at the k-th value, pruning again at
      // every push would be quadratic (20 000 identical points: 0.37 s per query), so wait
      // until the list has doubled
      next_prune_ = std::max(2 * k_ + 64, 2 * static_cast<index_t>(cand_.size()));
    }
  }

  // Exact top-k, best first.
  std::vector<Cand> finish() {
    prune();
    refine();
    auto better = [this](const Cand& a, const Cand& b) {
      if (a.s - a.err > b.s + b.err) return true;
      if (b.s - b.err > a.s + a.err) return false;
      const int c = std::equal(a.x, a.x + d_, b.x) ? 0 : exact_compare(q_, a.x, b.x, d_);
      if (c) return c > 0;
      return a.id < b.id;
    };
    std::sort(cand_.begin(), cand_.end(), better);
    if (static_cast<index_t>(cand_.size()) > k_) cand_.resize(k_);
    return std::move(cand_);
  }

 private:
  // Tightens each survivor's enclosure with a float64 re-evaluation before the final sort:
  // |fl(sum p_t) - sum p_t| <= gamma_{d+1} sum |p_t| (+ underflow), against the index-dtype
  // score's norm-based bound. Without it, candidates whose float32 enclosures overlap (common
  // for large k: ~1e-5 relative at d = 256) were ordered by exact arithmetic in the sort
  // (top-512 of 4300 keys, d = 256: 12 ms per query, ~0.2 ms with this).
  void refine() {
    const double g = gamma_k(d_ + 1, Rounding<double>::u) * 1.01;
    const double tiny = 2.0 * (d_ + 1) * Rounding<double>::eta;
    for (Cand& c : cand_) {
      double s = 0, a = 0;
      for (int t = 0; t < d_; ++t) {
        const double p = q_[t] * static_cast<double>(c.x[t]);
        s += p;
        a += std::fabs(p);
      }
      const double e = g * a + tiny;
      if (e < c.err) c.s = s, c.err = e;
    }
  }

  void prune() {
    if (static_cast<index_t>(cand_.size()) < k_ || k_ == 0) return;
    // k-th largest lower bound s - err: at least k candidates have exact value >= it.
    std::vector<double> lows(cand_.size());
    for (size_t i = 0; i < cand_.size(); ++i) lows[i] = cand_[i].s - cand_[i].err;
    std::nth_element(lows.begin(), lows.begin() + (k_ - 1), lows.end(), std::greater<double>());
    kth_lower_ = std::max(kth_lower_, lows[k_ - 1]);
    // Keep a candidate unless its upper bound is strictly below: ties must survive.
    cand_.erase(std::remove_if(cand_.begin(), cand_.end(),
                               [this](const Cand& c) { return c.s + c.err < kth_lower_; }),
                cand_.end());
  }

  const double* q_;
  int d_;
  index_t k_;
  index_t next_prune_ = 2 * k_ + 64;
  double kth_lower_ = -std::numeric_limits<double>::infinity();
  std::vector<Cand> cand_;
};

// The score topk() reports with an id: the float64 evaluation a_0 x_0 + a_1 x_1 + ... summed
// left to right, each product rounded (no fused multiply-add), +-inf where it overflows (NaN
// for inf - inf); the ranking is exact all the same (the exact value of every product of two
// finite doubles is held by the exact accumulator). Every structure reports this value, so the
// scores of equal answers agree bit for bit across structures (and with a Python loop).
template <class P>
inline double topk_score(const double* a, const P* x, int d) {
  double s = 0;
  for (int t = 0; t < d; ++t) {
    volatile double p = a[t] * static_cast<double>(x[t]);  // volatile: not contracted into an fma
    s += p;
  }
  return s;
}

// Writes the k best candidates of query j (from TopKCollector::finish, query vector a of d
// values) into row j of the m x k row-major outputs, with topk_score as the score. Every slot
// is written: fewer than k candidates (a structure skipped one it should have pushed) is an
// internal error, raised rather than filled with garbage.
template <class Cands>
void write_topk(const Cands& best, const double* a, int d, index_t j, index_t k, double* scores, std::int64_t* ids) {
  if (static_cast<index_t>(best.size()) < k)
    throw std::logic_error("hsrgeom internal error: top-k found fewer than k candidates");
  for (index_t r = 0; r < k; ++r) {
    ids[j * k + r] = best[r].id;
    scores[j * k + r] = topk_score(a, best[r].x, d);
  }
}

}  // namespace hsrgeom
