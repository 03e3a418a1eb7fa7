// Dynamic updates over any static structure: the logarithmic method (Bentley & Saxe, 1980), as
// nanoflann's KDTreeSingleIndexDynamicAdaptor does it (static sub-indexes of binary-counter
// sizes, removed points as tombstones checked in the sink during the search: LiveSink below).
//
// DynamicIndex<T> keeps its points in static parts (Part<T>, a small virtual interface; PartOf<S>
// adapts a structure S through its public report/count/empty/topk/sum members) built by a
// Builder of the index's kind and parameters, plus an unindexed tail of at most kTail points
// scanned exactly (a BruteForce built by the first query after the tail changed, so a run of
// single inserts costs no scan builds). Contracts:
//  * ids are stable: the points the index was built with have ids 0..n-1, inserted points the
//    next ids in order, and an id is never reused;
//  * every live id is in exactly one part; a part's local ids map to ascending global ids
//    (local order == global order), so a tie "smaller local id" is "smaller global id";
//  * a removed id is a tombstone (a bit cleared in `alive_`) until its part is rebuilt; a full
//    tail becomes a block, two blocks of the same size class ceil(log2(size / kTail)) are rebuilt
//    as one, a block more than half removed is rebuilt from its live points at once;
//  * updates are exception-safe: a build interrupted (interrupt::Interrupted) leaves the parts as
//    they were, with every point inserted so far in one part (inserts go to the tail first);
//  * queries are const and may run concurrently (the Python layer's readers-writer lock keeps
//    updates apart); they answer exactly what a static structure over the live points answers
//    (report/count/empty: the same sets; topk: the same ids and scores, ties to the smaller id;
//    sum: the same counts, weights and sums up to the float64 order of the additions).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "hsrgeom/brute_force.hpp"
#include "hsrgeom/parallel.hpp"
#include "hsrgeom/query.hpp"
#include "hsrgeom/report.hpp"
#include "hsrgeom/sums.hpp"
#include "hsrgeom/topk.hpp"
#include "hsrgeom/types.hpp"

namespace hsrgeom {

// The ids of one part as its queries see them: local id i is global id gids[i]; with `alive`
// (the index's bitset over global ids) removed ids are dropped in the sink, with `map` the sink
// is handed global ids instead of local ones.
struct PartIds {
  const std::int64_t* gids = nullptr;
  const std::uint64_t* alive = nullptr;  // nullptr: no tombstones to check
  bool map = false;
  HSRGEOM_INLINE bool live(std::int64_t local) const {
    if (!alive) return true;
    const std::int64_t g = gids[local];
    return (alive[g >> 6] >> (g & 63)) & 1;
  }
  HSRGEOM_INLINE std::int64_t id(std::int64_t local) const { return map ? gids[local] : local; }
};

// The sink a part's traversal feeds when it has tombstones or its ids are mapped: drops removed
// ids before they reach the inner sink (nanoflann's dynamic adaptor checks its removed set the
// same way), hands the inner sink live runs of a range (or, mapped, point by point with global
// ids). It takes no whole nodes (a node's precomputed sums include its removed points).
template <class Sink>
struct LiveSink {
  static constexpr int kNeeds = Sink::kNeeds < kNeedIds ? kNeedIds : Sink::kNeeds;  // the ids, to check them
  static constexpr bool kStopsEarly = Sink::kStopsEarly;
  Sink& inner;
  const PartIds& ids;
  int d;
  template <class P>
  HSRGEOM_INLINE bool point(std::int64_t id, const P* x, double score) {
    return !ids.live(id) || inner.point(ids.id(id), x, score);
  }
  template <class P>
  bool range(const std::int64_t* local, const P* x, index_t n) {
    const index_t dd = x ? d : 0;
    if (ids.map) {
      for (index_t t = 0; t < n; ++t)
        if (!point(local[t], x + t * dd, kNoScore)) return false;
      return true;
    }
    for (index_t t = 0; t < n;) {
      while (t < n && !ids.live(local[t])) ++t;
      index_t u = t;
      while (u < n && ids.live(local[u])) ++u;
      if (u > t && !inner.range(local + t, x + t * dd, u - t)) return false;
      t = u;
    }
    return true;
  }
};

// A structure S seen through PartIds: the same traversal, with every sink wrapped in a LiveSink
// (block scans: each point checked and mapped before it reaches its cell). The drivers of
// query.hpp run on it as on S; it has no sum_split (one sink per query) and no top-k (a part's
// top-k is filtered by the dynamic index, below: a structure may bound the k-th best from its
// own points before any sink sees them, as ConvexLayers does).
template <class S, class T>
class LiveView {
 public:
  LiveView(const S& s, const PartIds& ids) : s_(s), ids_(ids) {}
  static constexpr bool kBlockScan = detail::is_block_scan<S>::value;
  index_t size() const { return s_.size(); }
  int dim() const { return s_.dim(); }
  double query_work(index_t m) const { return s_.query_work(m); }
  auto prepare(const T* normal, double b) const { return s_.prepare(normal, b); }
  template <class Q, class Sink>
  void visit(const Q& qq, Counters& c, Sink& sink) const {
    LiveSink<Sink> live{sink, ids_, s_.dim()};
    s_.visit(qq, c, live);
  }
  template <class C, class On>
  void scan_cells(const Halfspaces<T>& q, QueryStats* st, int threads, std::vector<std::vector<C>>& cells,
                  On&& on) const {
    s_.scan_cells(q, st, threads, cells, [&](C& cell, index_t j, index_t id, const T* x, const double* a, double sc) {
      if (ids_.live(id)) on(cell, j, static_cast<index_t>(ids_.id(id)), x, a, sc);
    });
  }

 private:
  const S& s_;
  const PartIds& ids_;
};

// One static part of a dynamic index, local ids 0..size()-1 (the member functions of the
// structures, type-erased). `ids` (may be null): the part's tombstones and id map (PartIds),
// checked in the sinks.
template <class T>
class Part {
 public:
  virtual ~Part() = default;
  virtual index_t size() const = 0;
  virtual size_t memory_bytes() const = 0;
  virtual ReportResult report(const Halfspaces<T>& q, QueryStats* st, int threads, bool scores, bool sorted,
                              const PartIds* ids) const = 0;
  virtual std::vector<std::int64_t> count(const Halfspaces<T>& q, QueryStats* st, int threads,
                                          const PartIds* ids) const = 0;
  virtual std::vector<std::uint8_t> empty(const Halfspaces<T>& q, QueryStats* st, int threads,
                                          const PartIds* ids) const = 0;
  virtual void topk(const T* queries, index_t m, index_t k, double* scores, std::int64_t* ids, QueryStats* st,
                    int threads) const = 0;
  virtual SumResult sum(const Halfspaces<T>& q, const SumSpec<float>& sp, QueryStats* st, int threads,
                        const PartIds* ids) const = 0;
  virtual SumResult sum(const Halfspaces<T>& q, const SumSpec<double>& sp, QueryStats* st, int threads,
                        const PartIds* ids) const = 0;
  // Per-node sums of attached values (structures that keep them; a no-op elsewhere).
  virtual bool keeps_value_sums() const { return false; }
  virtual void set_value_sums(const float*, int, index_t, int) {}
  virtual void set_value_sums(const double*, int, index_t, int) {}
};

namespace detail {
template <class S, class = void>
struct has_value_sums : std::false_type {};
template <class S>
struct has_value_sums<S, std::void_t<decltype(std::declval<const S&>().has_value_sums())>> : std::true_type {};
}  // namespace detail

// Part<T> over a structure S held by a shared_ptr (whose deleter may keep an owner alive).
template <class S, class T>
class PartOf final : public Part<T> {
 public:
  explicit PartOf(std::shared_ptr<S> s) : s_(std::move(s)) {}
  const S& structure() const { return *s_; }
  index_t size() const override { return s_->size(); }
  size_t memory_bytes() const override { return s_->memory_bytes(); }
  ReportResult report(const Halfspaces<T>& q, QueryStats* st, int threads, bool scores, bool sorted,
                      const PartIds* ids) const override {
    if (ids) return report_visit(LiveView<S, T>(*s_, *ids), q, st, threads, scores, sorted);
    return s_->report(q, st, threads, scores, sorted);
  }
  std::vector<std::int64_t> count(const Halfspaces<T>& q, QueryStats* st, int threads,
                                  const PartIds* ids) const override {
    if (ids) return count_visit(LiveView<S, T>(*s_, *ids), q, st, threads);
    return s_->count(q, st, threads);
  }
  std::vector<std::uint8_t> empty(const Halfspaces<T>& q, QueryStats* st, int threads,
                                  const PartIds* ids) const override {
    if (ids) return empty_visit(LiveView<S, T>(*s_, *ids), q, st, threads);
    return s_->empty(q, st, threads);
  }
  void topk(const T* queries, index_t m, index_t k, double* scores, std::int64_t* ids, QueryStats* st,
            int threads) const override {
    s_->topk(queries, m, k, scores, ids, st, threads);
  }
  SumResult sum(const Halfspaces<T>& q, const SumSpec<float>& sp, QueryStats* st, int threads,
                const PartIds* ids) const override {
    return sum_any(q, sp, st, threads, ids);
  }
  SumResult sum(const Halfspaces<T>& q, const SumSpec<double>& sp, QueryStats* st, int threads,
                const PartIds* ids) const override {
    return sum_any(q, sp, st, threads, ids);
  }
  bool keeps_value_sums() const override { return detail::has_value_sums<S>::value; }
  void set_value_sums(const float* v, int dv, index_t offset, int threads) override { set_any(v, dv, offset, threads); }
  void set_value_sums(const double* v, int dv, index_t offset, int threads) override { set_any(v, dv, offset, threads); }

 private:
  template <class V>
  SumResult sum_any(const Halfspaces<T>& q, const SumSpec<V>& sp, QueryStats* st, int threads,
                    const PartIds* ids) const {
    if (ids) return sum_visit(LiveView<S, T>(*s_, *ids), q, sp, st, threads);
    return s_->sum(q, sp, st, threads);
  }
  template <class V>
  void set_any(const V* v, int dv, index_t offset, int threads) {
    if constexpr (detail::has_value_sums<S>::value) s_->set_value_sums(v, dv, offset, threads);
  }
  std::shared_ptr<S> s_;
};

// Rows of values attached to a dynamic index (row i for id i), float32 or float64; used to
// give new blocks of node-summing structures their per-node sums.
struct ValueRows {
  const float* f32 = nullptr;
  const double* f64 = nullptr;
  int dv = 0;
  bool any() const { return f32 || f64; }
};

template <class T>
class DynamicIndex {
 public:
  using PartPtr = std::shared_ptr<Part<T>>;
  // Builds a static part of the index's kind and parameters over n points (copied).
  using Builder = std::function<PartPtr(PointsView<T> points, int threads)>;
  static constexpr index_t kTail = 256;

  // `first` (may be null when ids is empty) holds the points `pts` (row-major, local order) with
  // the global ids `ids` (ascending, < next_id); `value_sums`: it already has the per-node sums
  // of the attached values (rows ids[0] ..., ids consecutive).
  DynamicIndex(int d, Builder build, PartPtr first, std::vector<T> pts, std::vector<std::int64_t> ids,
               std::int64_t next_id, bool value_sums = false)
      : d_(d), build_(std::move(build)) {
    if (next_id < static_cast<std::int64_t>(ids.size())) throw std::invalid_argument("next_id < n");
    grow_ids(next_id);
    next_ = next_id;
    for (auto id : ids) set_alive(id, true);
    live_ = static_cast<std::int64_t>(ids.size());
    if (!ids.empty()) {
      if (!first || first->size() != static_cast<index_t>(ids.size()))
        throw std::invalid_argument("the first part must hold the given ids");
      blocks_.push_back(Entry{std::move(first), std::move(ids), std::move(pts), 0, value_sums});
    }
  }

  int dim() const { return d_; }
  std::int64_t size() const { return live_; }
  std::int64_t next_id() const { return next_; }
  bool alive(std::int64_t id) const { return id >= 0 && id < next_ && ((alive_[id >> 6] >> (id & 63)) & 1); }

  // Sizes of the blocks (largest first), then of the tail (0 when empty).
  std::vector<std::int64_t> part_sizes() const {
    std::vector<std::int64_t> s;
    for (const Entry& e : blocks_) s.push_back(static_cast<std::int64_t>(e.gids.size()));
    s.push_back(static_cast<std::int64_t>(tail_.gids.size()));
    return s;
  }
  // Tombstones per block (same order as part_sizes), then of the tail (always 0).
  std::vector<std::int64_t> part_removed() const {
    std::vector<std::int64_t> s;
    for (const Entry& e : blocks_) s.push_back(e.removed);
    s.push_back(0);
    return s;
  }

  size_t memory_bytes() const {
    size_t b = alive_.size() * sizeof(std::uint64_t);
    for_parts([&](const Entry& e) {
      b += (e.part ? e.part->memory_bytes() : 0) + e.gids.size() * sizeof(std::int64_t) + e.pts.size() * sizeof(T);
    });
    return b;
  }

  // The live points (row-major) and their ids, ascending.
  void live_points(std::vector<T>& pts, std::vector<std::int64_t>& ids) const {
    pts.assign(static_cast<size_t>(live_) * d_, T(0));
    ids.assign(live_, 0);
    // rank of a live id among the live ids: popcounts of the words before it
    std::vector<std::int64_t> before(alive_.size() + 1, 0);
    for (size_t w = 0; w < alive_.size(); ++w) before[w + 1] = before[w] + __builtin_popcountll(alive_[w]);
    for_parts([&](const Entry& e) {
      for (size_t i = 0; i < e.gids.size(); ++i) {
        const std::int64_t g = e.gids[i];
        if (!alive(g)) continue;
        const std::int64_t r = before[g >> 6] + __builtin_popcountll(alive_[g >> 6] & ((std::uint64_t{1} << (g & 63)) - 1));
        ids[r] = g;
        std::copy(e.pts.begin() + i * d_, e.pts.begin() + (i + 1) * d_, pts.begin() + r * d_);
      }
    });
  }

  // ---- updates -----------------------------------------------------------------------------
  // Adds m points (row-major); returns the first new id (the others follow). `vals` (optional):
  // the attached values, rows 0 .. next_id() + m - 1, for the per-node sums of new blocks.
  std::int64_t insert(PointsView<T> p, const ValueRows& vals, int threads) {
    const std::int64_t first = next_;
    grow_ids(next_ + p.n);
    index_t start = 0;
    while (true) {
      const index_t take = std::min<index_t>(kTail - static_cast<index_t>(tail_.gids.size()), p.n - start);
      if (take > 0) {
        tail_.pts.reserve(static_cast<size_t>(kTail) * d_);  // no reallocation below: nothing half-appended
        tail_.gids.reserve(kTail);
        tail_.pts.insert(tail_.pts.end(), p.row(start), p.row(start) + take * d_);
        for (index_t i = 0; i < take; ++i) tail_.gids.push_back(next_ + i);
        tail_.part.reset();  // the scan is rebuilt by the next query
        // live once in the tail: an insert interrupted in a block's build below keeps the
        // points inserted so far, each in one part
        for (index_t i = 0; i < take; ++i) set_alive(next_ + i, true);
        next_ += take;
        live_ += take;
        start += take;
      }
      if (static_cast<index_t>(tail_.gids.size()) == kTail) {
        push_block(tail_.pts, tail_.gids, -1, vals, threads);
        tail_ = Entry();
      }
      if (start >= p.n) break;
    }
    return first;
  }

  // Removes ids; std::invalid_argument (nothing removed) for an id not in the index or given twice.
  void remove(const std::int64_t* ids, index_t m, const ValueRows& vals, int threads) {
    // 1. checks and the tombstones each block gets (each id found by a binary search in the
    //    blocks' ascending id maps): interruptible, nothing changed yet
    std::vector<std::int64_t> per_block(blocks_.size(), 0);
    std::vector<std::uint64_t> seen(m > 1 ? alive_.size() : 0, 0);
    for (index_t i = 0; i < m; ++i) {
      if ((i & 16383) == 0) interrupt::check();
      if (!alive(ids[i])) throw std::invalid_argument("ids: " + std::to_string(ids[i]) + " is not in the index");
      if (m > 1) {
        std::uint64_t& w = seen[ids[i] >> 6];
        const std::uint64_t bit = std::uint64_t{1} << (ids[i] & 63);
        if (w & bit) throw std::invalid_argument("ids contains duplicates");
        w |= bit;
      }
      for (size_t b = 0; b < blocks_.size(); ++b)
        if (std::binary_search(blocks_[b].gids.begin(), blocks_[b].gids.end(), ids[i])) {
          ++per_block[b];
          break;
        }
    }
    // 2. the tombstones, all at once (no interruption point: a block's count always covers its
    //    dead ids)
    for (index_t i = 0; i < m; ++i) set_alive(ids[i], false);
    live_ -= m;
    for (size_t b = 0; b < blocks_.size(); ++b) blocks_[b].removed += per_block[b];
    // 3. blocks more than half removed are rebuilt (an interrupted rebuild leaves the block as
    //    it was, tombstones included; the next remove tries again)
    for (size_t b = 0; b < blocks_.size();) {
      Entry& e = blocks_[b];
      if (e.removed * 2 <= static_cast<std::int64_t>(e.gids.size())) {
        ++b;
        continue;
      }
      std::vector<T> pts;
      std::vector<std::int64_t> gids;
      keep_live(e, pts, gids);
      if (gids.empty()) {
        blocks_.erase(blocks_.begin() + b);
      } else {
        push_block(std::move(pts), std::move(gids), static_cast<std::int64_t>(b), vals, threads);
        b = 0;  // the blocks were reordered: look again (rebuilt blocks have no tombstones)
      }
    }
    if (count_dead(tail_)) {
      std::vector<T> pts;
      std::vector<std::int64_t> gids;
      keep_live(tail_, pts, gids);
      set_tail(std::move(pts), std::move(gids));
    }
  }

  // Per-node sums of the attached values in every block with consecutive ids (rows offset ..).
  void set_value_sums(const ValueRows& vals, int threads) {
    for (Entry& e : blocks_) give_value_sums(e, vals, threads);
  }

  // ---- queries -----------------------------------------------------------------------------
  // report/count/empty/sum: each part's traversal with its tombstones checked in the sink
  // (PartIds, LiveSink), so a part answers for its live points only.
  ReportResult report(const Halfspaces<T>& q, QueryStats* st, int threads, bool scores, bool sorted) const {
    const index_t m = q.m;
    std::vector<const Entry*> parts = part_list();
    std::vector<ReportResult> rs(parts.size());
    std::vector<QueryStats> sts(parts.size());
    const bool one = parts.size() == 1;  // its sorted local order is the sorted global order
    for (size_t p = 0; p < parts.size(); ++p) {
      const PartIds ids = part_ids(*parts[p], false);
      rs[p] = parts[p]->part->report(q, &sts[p], threads, scores, sorted && one, ids.alive ? &ids : nullptr);
    }
    ReportResult r;
    r.lims.assign(m + 1, 0);
    for (index_t j = 0; j < m; ++j) {
      std::int64_t c = 0;
      for (size_t p = 0; p < parts.size(); ++p) c += rs[p].lims[j + 1] - rs[p].lims[j];
      r.lims[j + 1] = r.lims[j] + c;
    }
    r.ids.resize(r.lims[m]);
    if (scores) r.scores.resize(r.lims[m]);
    parallel_for(m, threads_for_work(threads, static_cast<double>(r.lims[m]) * 16), [&](index_t j, int) {
      std::int64_t w = r.lims[j];
      for (size_t p = 0; p < parts.size(); ++p) {
        const Entry& e = *parts[p];
        const ReportResult& pr = rs[p];
        for (std::int64_t t = pr.lims[j]; t < pr.lims[j + 1]; ++t, ++w) {
          r.ids[w] = e.gids[pr.ids[t]];
          if (scores) r.scores[w] = pr.scores[t];
        }
      }
      if (sorted && !one) sort_range(r, j, scores);
    });
    if (st) add_stats(*st, sts, m, [&](index_t j) { return r.lims[j + 1] - r.lims[j]; });
    return r;
  }

  std::vector<std::int64_t> count(const Halfspaces<T>& q, QueryStats* st, int threads) const {
    const index_t m = q.m;
    std::vector<std::int64_t> out(m, 0);
    std::vector<const Entry*> parts = part_list();
    std::vector<QueryStats> sts(parts.size());
    for (size_t p = 0; p < parts.size(); ++p) {
      const PartIds ids = part_ids(*parts[p], false);
      std::vector<std::int64_t> c = parts[p]->part->count(q, &sts[p], threads, ids.alive ? &ids : nullptr);
      for (index_t j = 0; j < m; ++j) out[j] += c[j];
    }
    if (st) add_stats(*st, sts, m, [&](index_t j) { return out[j]; });
    return out;
  }

  std::vector<std::uint8_t> empty(const Halfspaces<T>& q, QueryStats* st, int threads) const {
    const index_t m = q.m;
    std::vector<std::uint8_t> out(m, 1);
    std::vector<const Entry*> parts = part_list();
    std::vector<QueryStats> sts(parts.size());
    for (size_t p = 0; p < parts.size(); ++p) {
      const PartIds ids = part_ids(*parts[p], false);
      std::vector<std::uint8_t> c = parts[p]->part->empty(q, &sts[p], threads, ids.alive ? &ids : nullptr);
      for (index_t j = 0; j < m; ++j) out[j] &= c[j];
    }
    if (st) add_stats(*st, sts, m, [&](index_t j) { return static_cast<std::int64_t>(!out[j]); });
    return out;
  }

  // Exact top-k over the live points (k <= size()): each part gives its best k + (its
  // tombstones) candidates (so at least k live ones when it has k), the live ones are ranked
  // again exactly over the parts' stored points (no copies), ties to the smaller id. Tombstones
  // are checked here, not in the part's sink: a structure may bound the k-th best from its own
  // points (dead ones included) before its sink sees any (ConvexLayers' first k layers).
  void topk(const T* queries, index_t m, index_t k, double* scores, std::int64_t* ids, QueryStats* st,
            int threads) const {
    if (k > live_) throw std::invalid_argument("k must be in [0, n]");
    if (st) st->resize(m);
    if (k == 0 || m == 0) return;
    std::vector<const Entry*> parts = part_list();
    std::vector<index_t> kk(parts.size());
    std::vector<std::vector<double>> ps(parts.size());
    std::vector<std::vector<std::int64_t>> pi(parts.size());
    std::vector<QueryStats> sts(parts.size());
    for (size_t p = 0; p < parts.size(); ++p) {
      const Entry& e = *parts[p];
      kk[p] = std::min<index_t>(k + e.removed, static_cast<index_t>(e.gids.size()));
      ps[p].resize(static_cast<size_t>(m) * kk[p]);
      pi[p].resize(static_cast<size_t>(m) * kk[p]);
      e.part->topk(queries, m, kk[p], ps[p].data(), pi[p].data(), &sts[p], threads);
    }
    const double work = static_cast<double>(m) * parts.size() * (k + 1) * d_ * 4;
    parallel_for(m, threads_for_work(threads, work), [&](index_t j, int) {
      std::vector<double> a(queries + j * static_cast<index_t>(d_), queries + (j + 1) * static_cast<index_t>(d_));
      TopKCollector<T> col(a.data(), d_, k);
      for (size_t p = 0; p < parts.size(); ++p) {
        const Entry& e = *parts[p];
        for (index_t r = 0; r < kk[p]; ++r) {
          const std::int64_t local = pi[p][j * kk[p] + r];
          const std::int64_t g = e.gids[local];
          if (e.removed && !alive(g)) continue;
          // the score the part reported is topk_score; refine() gives it its rigorous enclosure
          col.push(ps[p][j * kk[p] + r], std::numeric_limits<double>::infinity(), g, e.pts.data() + local * d_);
        }
      }
      write_topk(col.finish(), a.data(), d_, j, k, scores, ids);
    });
    if (st) add_stats(*st, sts, m, [&](index_t) { return static_cast<std::int64_t>(k); });
  }

  // sum() with values rows for global ids (sp.offset must be 0): a part whose ids are
  // consecutive and all alive sums as a static structure (rows gids[0] ..., with its node sums
  // when sp.node_sums and it has them); any other part with its sinks handed global ids and its
  // tombstones dropped (PartIds).
  template <class V>
  SumResult sum(const Halfspaces<T>& q, const SumSpec<V>& sp, QueryStats* st, int threads) const {
    const index_t m = q.m;
    SumResult res(m, sp.dv);
    std::vector<const Entry*> parts = part_list();
    std::vector<QueryStats> sts(parts.size());
    for (size_t p = 0; p < parts.size(); ++p) {
      const Entry& e = *parts[p];
      SumResult part(m, sp.dv);
      if (!e.removed && consecutive(e)) {
        SumSpec<V> local = sp;
        local.offset = sp.offset + e.gids[0];
        local.node_sums = sp.node_sums && e.value_sums;
        part = e.part->sum(q, local, &sts[p], threads, nullptr);
      } else {
        SumSpec<V> global = sp;
        global.node_sums = false;
        const PartIds ids = part_ids(e, true);
        part = e.part->sum(q, global, &sts[p], threads, &ids);
      }
      for (index_t j = 0; j < m; ++j) {
        res.counts[j] += part.counts[j];
        res.weights[j] += part.weights[j];
      }
      for (size_t t = 0; t < res.sums.size(); ++t) res.sums[t] += part.sums[t];
    }
    if (st) add_stats(*st, sts, m, [&](index_t j) { return res.counts[j]; });
    return res;
  }

 private:
  struct Entry {
    PartPtr part;                     // local ids 0 .. gids.size() - 1
    std::vector<std::int64_t> gids;   // local -> global id, ascending
    std::vector<T> pts;               // the part's points in local order (merges, top-k ranking)
    std::int64_t removed = 0;         // tombstones among gids
    bool value_sums = false;          // the part has per-node sums of the attached values
  };

  template <class F>
  void for_parts(F&& f) const {
    for (const Entry& e : blocks_) f(e);
    if (!tail_.gids.empty()) f(tail_);
  }
  // The parts a query asks: the blocks, then the tail (its scan built here when missing).
  std::vector<const Entry*> part_list() const {
    std::vector<const Entry*> v;
    for (const Entry& e : blocks_) v.push_back(&e);
    if (!tail_.gids.empty()) {
      const std::lock_guard<std::mutex> lock(tail_mu_);
      if (!tail_.part) {
        PointsView<T> pv{tail_.pts.data(), static_cast<index_t>(tail_.gids.size()), d_};
        tail_.part = std::make_shared<PartOf<BruteForce<T>, T>>(std::make_shared<BruteForce<T>>(pv));
      }
      v.push_back(&tail_);
    }
    return v;
  }
  static bool consecutive(const Entry& e) {
    return !e.gids.empty() && e.gids.back() - e.gids.front() + 1 == static_cast<std::int64_t>(e.gids.size());
  }
  // What the sinks of part e check: its tombstones (when it has any), its global ids (map).
  PartIds part_ids(const Entry& e, bool map) const {
    PartIds ids;
    ids.gids = e.gids.data();
    ids.alive = e.removed ? alive_.data() : nullptr;
    ids.map = map;
    return ids;
  }
  void sort_range(ReportResult& r, index_t j, bool scores) const {
    IdList& l = id_scratch();
    l.ids.assign(r.ids.begin() + r.lims[j], r.ids.begin() + r.lims[j + 1]);
    if (scores) l.scores.assign(r.scores.begin() + r.lims[j], r.scores.begin() + r.lims[j + 1]);
    sort_ids(l, next_);
    std::copy(l.ids.begin(), l.ids.end(), r.ids.begin() + r.lims[j]);
    if (scores) std::copy(l.scores.begin(), l.scores.end(), r.scores.begin() + r.lims[j]);
  }
  template <class Reported>
  static void add_stats(QueryStats& st, const std::vector<QueryStats>& sts, index_t m, Reported&& reported) {
    st.resize(m);
    for (const QueryStats& s : sts) {
      if (s.nodes_visited.size() != static_cast<size_t>(m)) continue;
      for (index_t j = 0; j < m; ++j) {
        st.nodes_visited[j] += s.nodes_visited[j];
        st.points_tested[j] += s.points_tested[j];
        st.exact_checks[j] += s.exact_checks[j];
      }
    }
    for (index_t j = 0; j < m; ++j) st.points_reported[j] = reported(j);
  }

  void grow_ids(std::int64_t bound) {
    const size_t words = static_cast<size_t>((bound + 63) / 64);
    if (words > alive_.size()) alive_.resize(std::max(words, 2 * alive_.size()), 0);
  }
  void set_alive(std::int64_t id, bool on) {
    if (on) alive_[id >> 6] |= std::uint64_t{1} << (id & 63);
    else alive_[id >> 6] &= ~(std::uint64_t{1} << (id & 63));
  }
  std::int64_t count_dead(const Entry& e) const {
    std::int64_t c = 0;
    for (auto g : e.gids) c += !alive(g);
    return c;
  }
  void keep_live(const Entry& e, std::vector<T>& pts, std::vector<std::int64_t>& gids) const {
    for (size_t i = 0; i < e.gids.size(); ++i) {
      if (!alive(e.gids[i])) continue;
      gids.push_back(e.gids[i]);
      pts.insert(pts.end(), e.pts.begin() + i * d_, e.pts.begin() + (i + 1) * d_);
    }
  }

  // The tail's points; its scan is built by the next query (part_list).
  void set_tail(std::vector<T> pts, std::vector<std::int64_t> gids) {
    Entry t;
    t.gids = std::move(gids);
    t.pts = std::move(pts);
    tail_ = std::move(t);
  }

  static int level(size_t size) {
    return static_cast<int>(std::ceil(std::log2(static_cast<double>(std::max<size_t>(size, 1)) / kTail)));
  }

  void give_value_sums(Entry& e, const ValueRows& vals, int threads) {
    if (!vals.any() || !e.part->keeps_value_sums() || !consecutive(e)) return;
    if (vals.f32) e.part->set_value_sums(vals.f32, vals.dv, e.gids[0], threads);
    else e.part->set_value_sums(vals.f64, vals.dv, e.gids[0], threads);
    e.value_sums = true;
  }

  // Adds a block of (pts, gids) and merges it with blocks of the same size class (binary
  // counter); the block at index `replaces` (>= 0) is dropped with the merged ones. The blocks
  // change only once the new one is built (an interrupted build leaves them as they were).
  void push_block(std::vector<T> pts, std::vector<std::int64_t> gids, std::int64_t replaces, const ValueRows& vals,
                  int threads) {
    std::vector<char> merged(blocks_.size(), 0);
    if (replaces >= 0) merged[replaces] = 1;
    while (true) {
      size_t b = 0;
      while (b < blocks_.size() && (merged[b] || level(blocks_[b].gids.size()) != level(gids.size()))) ++b;
      if (b == blocks_.size()) break;
      merged[b] = 1;
      std::vector<T> kp;
      std::vector<std::int64_t> kg;
      keep_live(blocks_[b], kp, kg);
      // two ascending id lists: merge them (with their points)
      std::vector<T> mp;
      std::vector<std::int64_t> mg;
      mp.reserve(kp.size() + pts.size());
      mg.reserve(kg.size() + gids.size());
      size_t x = 0, y = 0;
      while (x < kg.size() || y < gids.size()) {
        const bool left = y == gids.size() || (x < kg.size() && kg[x] < gids[y]);
        if (left) {
          mg.push_back(kg[x]);
          mp.insert(mp.end(), kp.begin() + x * d_, kp.begin() + (x + 1) * d_);
          ++x;
        } else {
          mg.push_back(gids[y]);
          mp.insert(mp.end(), pts.begin() + y * d_, pts.begin() + (y + 1) * d_);
          ++y;
        }
      }
      pts = std::move(mp);
      gids = std::move(mg);
    }
    Entry e;
    e.part = build_(PointsView<T>{pts.data(), static_cast<index_t>(gids.size()), d_}, threads);
    e.gids = std::move(gids);
    e.pts = std::move(pts);
    give_value_sums(e, vals, threads);
    std::vector<Entry> kept;
    for (size_t b = 0; b < blocks_.size(); ++b)
      if (!merged[b]) kept.push_back(std::move(blocks_[b]));
    kept.push_back(std::move(e));
    std::stable_sort(kept.begin(), kept.end(), [](const Entry& a, const Entry& b) { return a.gids.size() > b.gids.size(); });
    blocks_ = std::move(kept);
  }

  int d_;
  Builder build_;
  std::vector<Entry> blocks_;  // largest first
  // at most kTail points, no tombstones; its part (a scan) is made lazily under tail_mu_ by a
  // query (queries may run concurrently; updates run alone)
  mutable Entry tail_;
  mutable std::mutex tail_mu_;
  std::vector<std::uint64_t> alive_;  // bit i: id i is live (capacity doubles)
  std::int64_t next_ = 0;       // ids given so far
  std::int64_t live_ = 0;       // live ids
};

}  // namespace hsrgeom
