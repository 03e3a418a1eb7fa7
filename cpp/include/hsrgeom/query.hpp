// The query concept: a structure visits, a sink decides. Every structure implements one
// half-space traversal
//
//   Query prepare(const T* normal, double b) const;          // per-query precomputation
//   template <class Sink> void visit(const Query&, Counters&, Sink&) const;
//
// and hands the sink what it finds inside {x : <a, x> >= b}:
//
//   sink.range(ids, x, count)    count points at once, all inside (a tree node, a table's
//                                answer); x: their rows, count * d values, or nullptr when the
//                                sink's kNeeds < kNeedRows
//   sink.point(id, x, score)     one point inside; score: the structure's float64 <a, x> of x
//                                when it has it, else kNoScore (the sink computes it if needed)
//
// Both return whether to go on (nanoflann's ResultSet::addPoint, FAISS's ResultHandler). Sinks
// state what they read (kNeeds: a count only, the ids, or the rows too) and whether they stop
// early (kStopsEarly), so a structure hands over whole blocks where the sink needs no rows. The
// structure decides the order of traversal; the sink decides what is kept and when to stop.
//
// Top-k uses the same sinks through `visit_topk(const T* q, Counters&, TopKSink&)`: a structure
// searching best-first (the trees) prunes against sink.bound(), the rising lower bound of the
// k-th best; others bound the k-th best first and visit the half-space above it.
//
// The drivers below (report_visit, count_visit, empty_visit, sum_visit, topk_visit) are the
// only code that turns a traversal into a batch result: threads (for_each_query /
// report_queries), QueryStats, sorting, sums, top-k rows. A structure provides, besides
// prepare/visit/visit_topk: size(), dim(), query_work(m) (a flop estimate for the thread
// policy), `using TopKRow` (the row type visit_topk pushes) and optionally
// prefetch_ahead(const Halfspaces<T>&, index_t j) (software prefetch for query j + 1, ...).
//
// The blocked scans (BruteForce, QuantizedScan) are the other shape, FAISS's block result
// handlers: a grid of per-(point chunk, query) cells merged in chunk order (report.hpp
// join_chunks, sums.hpp merge_sums, topk_visit's merge), so ids stay ascending without a sort.
// They provide `static constexpr bool kBlockScan = true`, `using TopKRow`,
//   scan_cells(q, st, threads, cells, on)               on(cell, j, id, x, a, score) per point inside
//   topk_cells(queries, m, st, threads, cells, make)    cell.push(score, err, id, x) per point
// (cells[chunk][query]; topk_cells makes cell j of each chunk with make(j), a TopKSink).
#pragma once

#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "hsrgeom/dispatch.hpp"
#include "hsrgeom/interrupt.hpp"
#include "hsrgeom/parallel.hpp"
#include "hsrgeom/predicate.hpp"
#include "hsrgeom/report.hpp"
#include "hsrgeom/sums.hpp"
#include "hsrgeom/topk.hpp"
#include "hsrgeom/types.hpp"

namespace hsrgeom {

// What a sink reads of the points it is handed (Sink::kNeeds).
constexpr int kNeedCount = 0;  // only how many
constexpr int kNeedIds = 1;    // their ids
constexpr int kNeedRows = 2;   // their ids and rows (scores)

// Whether a structure should gather ids into blocks for the sink (a leaf's inside points, a
// filtered candidate list) and hand each over in one sink.range call: the sink reads no rows and
// never stops early, so gathering first loses nothing.
template <class Sink>
constexpr bool kTakesIdBlocks = Sink::kNeeds <= kNeedIds && !Sink::kStopsEarly;

// Whether the sink's driver wants each query's ids ascending (the ReportSink of a sorted report).
// A structure that can hand a block over in id order for less than the driver's sort then does;
// the driver finds the ids sorted and only copies them (report_queries).
template <class Sink, class = void>
struct has_ascending : std::false_type {};
template <class Sink>
struct has_ascending<Sink, std::void_t<decltype(std::declval<const Sink&>().ascending)>> : std::true_type {};
template <class Sink>
bool wants_ascending(const Sink& sink) {
  if constexpr (has_ascending<Sink>::value) {
    return sink.ascending;
  } else {
    return false;
  }
}

// Where a structure may write a block of up to n ids that it then hands to sink.range: the
// sink's own output when the sink offers room (a ReportSink without scores; the ids are then not
// copied), else nullptr (the structure writes to its scratch).
template <class Sink, class = void>
struct has_room : std::false_type {};
template <class Sink>
struct has_room<Sink, std::void_t<decltype(std::declval<Sink&>().room(index_t{1}))>> : std::true_type {};
template <class Sink>
std::int64_t* ids_room(Sink& sink, index_t n) {
  if constexpr (has_room<Sink>::value && Sink::kNeeds <= kNeedIds) {
    return sink.room(n);
  } else {
    return nullptr;
  }
}

// "No score computed" (point()'s score argument).
constexpr double kNoScore = std::numeric_limits<double>::quiet_NaN();

// ---- sinks -----------------------------------------------------------------------------------

// Counts the points inside.
struct CountSink {
  static constexpr int kNeeds = kNeedCount;
  static constexpr bool kStopsEarly = false;
  std::int64_t count = 0;
  template <class P>
  HSRGEOM_INLINE bool point(std::int64_t, const P*, double) {
    ++count;
    return true;
  }
  template <class P>
  HSRGEOM_INLINE bool range(const std::int64_t*, const P*, index_t n) {
    count += n;
    return true;
  }
};

// Stops at the first point inside.
struct EmptySink {
  static constexpr int kNeeds = kNeedCount;
  static constexpr bool kStopsEarly = true;
  bool found = false;
  template <class P>
  HSRGEOM_INLINE bool point(std::int64_t, const P*, double) {
    found = true;
    return false;
  }
  template <class P>
  HSRGEOM_INLINE bool range(const std::int64_t*, const P*, index_t n) {
    found = found || n > 0;
    return !found;
  }
};

// Appends the ids (and with Scores, dot_f64(a, x) of each point's stored row: the same value
// for every structure) to an IdList. Sorting is the driver's business (report_queries).
template <bool Scores>
struct ReportSink {
  static constexpr int kNeeds = Scores ? kNeedRows : kNeedIds;
  static constexpr bool kStopsEarly = false;
  static constexpr size_t kNoRoom = ~size_t{0};
  IdList& out;
  const double* a;
  int d;
  bool ascending = false;      // the report is sorted (see wants_ascending)
  size_t room_at = kNoRoom;    // where the room handed out last starts (see room)
  template <class P>
  HSRGEOM_INLINE bool point(std::int64_t id, const P* x, double) {
    out.ids.push_back(id);
    if constexpr (Scores) out.scores.push_back(dot_f64(a, x, d));
    return true;
  }
  // Room for up to n ids at the end of the output (see ids_room); the next range() call either
  // hands over ids written there, which then stay in place, or drops the room.
  std::int64_t* room(index_t n) {
    static_assert(!Scores, "room holds ids only");
    room_at = out.ids.size();
    out.ids.resize(room_at + static_cast<size_t>(n));
    return out.ids.data() + room_at;
  }
  template <class P>
  HSRGEOM_INLINE bool range(const std::int64_t* ids, const P* x, index_t n) {
    if (room_at != kNoRoom) {
      const size_t at = room_at;
      room_at = kNoRoom;
      if (ids == out.ids.data() + at) {
        out.ids.resize(at + static_cast<size_t>(n));
        return true;
      }
      out.ids.resize(at);
    }
    if (!Scores && out.stream) {  // a large report's output (IdList::stream)
      const size_t at = out.ids.size();
      out.ids.resize(at + static_cast<size_t>(n));
      copy_out_ids(out.ids.data() + at, ids, n, true);
      return true;
    }
    out.ids.insert(out.ids.end(), ids, ids + n);
    if constexpr (Scores)
      for (index_t k = 0; k < n; ++k) out.scores.push_back(dot_f64(a, x + k * static_cast<index_t>(d), d));
    return true;
  }
};

// Adds each point to a SumAcc (sums.hpp) of query j: weight from the structure's score when it
// has one, else dot_f64(a, x); value row by id, or (Stored) by the position of the point's row
// in the structure's stored rows `stored` (a structure whose value rows are kept in its own
// order, SumSplit::stored).
// Whole nodes (kTakesNodes): a structure that keeps per-node sums hands a node inside to
// node(nd) instead of range(): nd.ids, nd.x, nd.n as for range(), and nd.add_sums(sp, j, acc),
// which adds the node from its precomputed sums and returns false where they don't apply (the
// sink then adds its points one by one). The sink uses them only when told (node_sums) and for
// weights linear in the score (power 0 or 1).
template <class V, bool Stored = false>
struct SumSink {
  static constexpr int kNeeds = kNeedRows;
  static constexpr bool kStopsEarly = false;
  static constexpr bool kTakesNodes = true;
  SumAcc& acc;
  const SumSpec<V>& sp;
  index_t j;
  const double* a;
  int d;
  const void* stored = nullptr;  // Stored: rows (of the structure's point type) in value-row order
  bool node_sums = false;
  template <class P>
  HSRGEOM_INLINE index_t position(const P* x) const {
    return static_cast<index_t>((x - static_cast<const P*>(stored)) / d);
  }
  template <class P>
  HSRGEOM_INLINE bool point(std::int64_t id, const P* x, double score) {
    double s = 0;
    if (sp.needs_score()) s = score == score ? score : dot_f64(a, x, d);
    if constexpr (Stored) acc.add(sp, j, position(x), s);
    else acc.add(sp, j, id, s);
    return true;
  }
  template <class P>
  HSRGEOM_INLINE bool range(const std::int64_t* ids, const P* x, index_t n) {
    index_t k0 = 0;
    if constexpr (Stored) k0 = position(x);
    for (index_t k = 0; k < n; ++k) {
      const double s = sp.needs_score() ? dot_f64(a, x + k * static_cast<index_t>(d), d) : 0.0;
      if constexpr (Stored) acc.add(sp, j, k0 + k, s);
      else acc.add(sp, j, ids[k], s);
    }
    return true;
  }
  template <class Node>
  HSRGEOM_INLINE bool node(const Node& nd) {
    if (!(node_sums && sp.power <= 1 && nd.add_sums(sp, j, acc))) range(nd.ids, nd.x, nd.n);
    return true;
  }
};

// How a structure splits each query of a sum into parts (sum_split, optional): the parts are
// visited as visit(query, counters, sink, root) with a sink each, in parallel, and added per
// query in the order of `roots`, so a few queries use every thread and the result does not
// depend on the thread count. The split also says how the sinks read value rows.
template <class V, class P>
struct SumSplit {
  std::vector<std::int32_t> roots;  // the parts of every query (disjoint, covering every point)
  SumSpec<V> spec;                  // what the sinks add with (its rows may be the structure's copy)
  const P* stored = nullptr;        // SumSink::stored
  bool node_sums = false;           // SumSink::node_sums
  double work = 0;                  // estimated work of the batch (the thread policy)
};

// Exact top-k candidates (TopKCollector): bound() is the rising lower bound of the k-th best
// that a best-first traversal prunes against. push() takes a score with its error bound (the
// structure knows a node-level bound); point() computes both from the row.
template <class P>
struct TopKSink {
  static constexpr int kNeeds = kNeedRows;
  static constexpr bool kStopsEarly = false;
  TopKCollector<P> col;
  const double* a;
  int d;
  double na;
  Margin mg;
  TopKSink(const double* a_, int d_, index_t k)
      : col(a_, d_, k), a(a_), d(d_), na(norm_up(a_, d_)), mg(d_, Rounding<double>::u, Rounding<double>::eta) {}
  double bound() const { return col.kth_lower(); }
  HSRGEOM_INLINE void push(double s, double err, std::int64_t id, const P* x) { col.push(s, err, id, x); }
  HSRGEOM_INLINE bool point(std::int64_t id, const P* x, double) {
    if (d == 2) push_row<2>(id, x);
    else if (d == 3) push_row<3>(id, x);
    else push_row<0>(id, x);
    return true;
  }
  // Score and error bound of a row, compiled for D = d where D > 0 (the norm's constants fold);
  // any summation order: the error bound covers it, and the collector ranks exactly.
  template <int D>
  HSRGEOM_INLINE void push_row(std::int64_t id, const P* x) {
    const int dd = D > 0 ? D : d;
    col.push(dot_f64<D>(a, x, dd), mg(na, norm_up(x, dd), 0.0), id, x);
  }
  HSRGEOM_INLINE bool range(const std::int64_t* ids, const P* x, index_t n) {
    for (index_t k = 0; k < n; ++k) point(ids[k], x + k * static_cast<index_t>(d), kNoScore);
    return true;
  }
};

// ---- drivers ---------------------------------------------------------------------------------

namespace detail {
template <class S, class T, class = void>
struct has_prefetch : std::false_type {};
template <class S, class T>
struct has_prefetch<S, T, std::void_t<decltype(std::declval<const S&>().prefetch_ahead(
                              std::declval<const Halfspaces<T>&>(), index_t{0}))>> : std::true_type {};

template <class S, class = void>
struct is_block_scan : std::false_type {};
template <class S>
struct is_block_scan<S, std::void_t<decltype(S::kBlockScan)>> : std::bool_constant<S::kBlockScan> {};

template <class S, class V, class = void>
struct has_sum_split : std::false_type {};
template <class S, class V>
struct has_sum_split<S, V, std::void_t<decltype(std::declval<const S&>().sum_split(
                               std::declval<const std::vector<typename S::Query>&>(),
                               std::declval<const SumSpec<V>&>()))>> : std::true_type {};

template <class Sink, class = void>
struct takes_nodes : std::false_type {};
template <class Sink>
struct takes_nodes<Sink, std::void_t<decltype(Sink::kTakesNodes)>> : std::bool_constant<Sink::kTakesNodes> {};

// The query normal in float64, in a per-thread buffer (valid until the next call on this thread).
template <class T>
const double* normal_f64(const T* normal, int d) {
  static thread_local std::vector<double> a;
  a.assign(normal, normal + d);
  return a.data();
}
}  // namespace detail

// report(): per query, a ReportSink into the running thread's arena (report.hpp report_queries:
// sorted by id when asked, scores alongside).
template <class S, class T>
ReportResult report_visit(const S& s, const Halfspaces<T>& q, QueryStats* st, int threads, bool scores,
                          bool sorted) {
  const int d = s.dim();
  if constexpr (detail::is_block_scan<S>::value) {
    std::vector<std::vector<IdList>> cells;
    auto scan = [&](auto with_scores) {
      constexpr bool kScores = decltype(with_scores)::value;
      s.scan_cells(q, st, threads, cells, [&](IdList& cell, index_t, index_t id, const T* x, const double* a, double sc) {
        ReportSink<kScores>{cell, a, d}.point(static_cast<std::int64_t>(id), x, sc);
      });
    };
    scores ? scan(std::true_type{}) : scan(std::false_type{});
    std::vector<IdList> merged = join_chunks(cells, q.m, st);  // chunk order: ids ascending
    return ReportResult::from_lists(merged, scores);
  } else {
    auto run = [&](auto with_scores) {
      constexpr bool kScores = decltype(with_scores)::value;
      return report_queries(q.m, st, threads, s.query_work(q.m), s.size(), sorted, kScores,
                            [&](index_t j, Counters& c, IdList& out) {
                              if constexpr (detail::has_prefetch<S, T>::value) s.prefetch_ahead(q, j);
                              const auto qq = s.prepare(q.normals + j * d, q.offsets[j]);
                              ReportSink<kScores> sink{out, qq.normal(), d, sorted};
                              s.visit(qq, c, sink);
                            });
    };
    return scores ? run(std::true_type{}) : run(std::false_type{});
  }
}

// count(): a CountSink per query.
template <class S, class T>
std::vector<std::int64_t> count_visit(const S& s, const Halfspaces<T>& q, QueryStats* st, int threads) {
  std::vector<std::int64_t> out(q.m, 0);
  const int d = s.dim();
  if constexpr (detail::is_block_scan<S>::value) {
    std::vector<std::vector<CountSink>> cells;
    s.scan_cells(q, st, threads, cells, [](CountSink& cell, index_t, index_t id, const T* x, const double*, double sc) {
      cell.point(static_cast<std::int64_t>(id), x, sc);
    });
    for (auto& chunk : cells)
      for (index_t j = 0; j < q.m; ++j) out[j] += chunk[j].count;
    if (st) st->points_reported = out;
  } else {
    for_each_query(q.m, st, threads, s.query_work(q.m), [&](index_t j, Counters& c) {
      CountSink sink;
      s.visit(s.prepare(q.normals + j * d, q.offsets[j]), c, sink);
      out[j] = c.reported = sink.count;
    });
  }
  return out;
}

// empty(): an EmptySink per query (1 where the half-space holds no point).
template <class S, class T>
std::vector<std::uint8_t> empty_visit(const S& s, const Halfspaces<T>& q, QueryStats* st, int threads) {
  if constexpr (detail::is_block_scan<S>::value) {
    return zero_counts(count_visit(s, q, st, threads));  // a full scan: no early exit in a tile
  } else {
    std::vector<std::uint8_t> out(q.m, 1);
    const int d = s.dim();
    for_each_query(q.m, st, threads, s.query_work(q.m), [&](index_t j, Counters& c) {
      EmptySink sink;
      s.visit(s.prepare(q.normals + j * d, q.offsets[j]), c, sink);
      out[j] = !sink.found;
      c.reported = sink.found ? 1 : 0;
    });
    return out;
  }
}

// sum(): a SumSink per query (sums.hpp SumSpec for the contract), or per part of a query where
// the structure splits them (sum_split).
template <class S, class T, class V>
SumResult sum_visit(const S& s, const Halfspaces<T>& q, const SumSpec<V>& sp, QueryStats* st, int threads) {
  const int d = s.dim();
  if constexpr (detail::is_block_scan<S>::value) {
    std::vector<std::vector<SumAcc>> cells;
    s.scan_cells(q, st, threads, cells, [&](SumAcc& cell, index_t j, index_t id, const T* x, const double* a, double sc) {
      SumSink<V>{cell, sp, j, a, d}.point(static_cast<std::int64_t>(id), x, sc);
    });
    return merge_sums(cells, q.m, sp, st);  // chunk order
  } else if constexpr (detail::has_sum_split<S, V>::value) {
    const index_t m = q.m;
    SumResult res(m, sp.dv);
    if (st) st->resize(m);
    if (s.size() == 0 || m == 0) return res;
    std::vector<typename S::Query> qs;
    qs.reserve(m);
    for (index_t j = 0; j < m; ++j) qs.push_back(s.prepare(q.normals + j * d, q.offsets[j]));
    const auto split = s.sum_split(qs, sp);
    const index_t r = static_cast<index_t>(split.roots.size());
    std::vector<SumAcc> acc(m * r);
    std::vector<Counters> cnt(m * r);
    auto run = [&](auto stored) {
      parallel_for(m * r, threads_for_work(threads, split.work), [&](index_t w, int) {
        const index_t j = w / r;
        SumSink<V, decltype(stored)::value> sink{acc[w], split.spec, j, qs[j].normal(), d, split.stored, split.node_sums};
        s.visit(qs[j], cnt[w], sink, split.roots[w % r]);
        acc[w].flush(split.spec);
      });
    };
    split.stored ? run(std::true_type{}) : run(std::false_type{});
    for (index_t j = 0; j < m; ++j) {
      SumAcc total;
      Counters c;
      for (index_t t = j * r; t < (j + 1) * r; ++t) {
        total.merge(acc[t]);
        c.nodes += cnt[t].nodes, c.tested += cnt[t].tested, c.exact += cnt[t].exact;
      }
      c.reported = total.count;
      res.store(j, total);
      if (st) c.store(*st, j);
    }
    return res;
  } else {
    SumResult res(q.m, sp.dv);
    for_each_query(q.m, st, threads, s.query_work(q.m), [&](index_t j, Counters& c) {
      const auto qq = s.prepare(q.normals + j * d, q.offsets[j]);
      SumAcc acc;
      SumSink<V> sink{acc, sp, j, qq.normal(), d};
      s.visit(qq, c, sink);
      acc.flush(sp);
      c.reported = acc.count;
      res.store(j, acc);
    });
    return res;
  }
}

// topk(): a TopKSink per query; scores/ids are m x k row-major (topk.hpp write_topk). Block
// scans: a TopKSink per (chunk, query) cell, fed by topk_cells (cell.push with each point's
// score and its error bound), then per query the cells' candidates go to one TopKSink in chunk
// order.
template <class S, class T>
void topk_visit(const S& s, const T* queries, index_t m, index_t k, double* scores, std::int64_t* ids,
                QueryStats* st, int threads) {
  using P = typename S::TopKRow;
  const int d = s.dim();
  if constexpr (detail::is_block_scan<S>::value) {
    std::vector<double> qd(queries, queries + m * d);
    std::vector<std::vector<TopKSink<P>>> cells;
    s.topk_cells(queries, m, st, threads, cells, [&](index_t j) { return TopKSink<P>(qd.data() + j * d, d, k); });
    for (index_t j = 0; j < m; ++j) {
      interrupt::check();
      TopKSink<P> all(qd.data() + j * d, d, k);
      for (auto& chunk : cells)
        for (auto& cand : chunk[j].col.finish()) all.push(cand.s, cand.err, cand.id, cand.x);
      write_topk(all.col.finish(), qd.data() + j * d, d, j, k, scores, ids);
    }
    if (st)
      for (index_t j = 0; j < m; ++j) st->points_reported[j] = k;
  } else {
    for_each_query(m, st, threads, s.query_work(m), [&](index_t j, Counters& c) {
      const T* qt = queries + j * d;
      const double* a = detail::normal_f64(qt, d);
      TopKSink<P> sink(a, d, k);
      if (k > 0 && s.size() > 0) s.visit_topk(qt, c, sink);
      write_topk(sink.col.finish(), a, d, j, k, scores, ids);
      c.reported = k;
    });
  }
}

// The batch member functions every structure has (the bindings and the dynamic index call these),
// each one driver call. Every structure derives from QueryMethods<itself, T> and declares none
// of these itself.
template <class Derived, class T>
class QueryMethods {
 public:
  ReportResult report(const Halfspaces<T>& q, QueryStats* st, int threads, bool scores = false,
                      bool sorted = true) const {
    return report_visit(self(), q, st, threads, scores, sorted);
  }
  std::vector<std::int64_t> count(const Halfspaces<T>& q, QueryStats* st, int threads) const {
    return count_visit(self(), q, st, threads);
  }
  // True where the half-space holds no point.
  std::vector<std::uint8_t> empty(const Halfspaces<T>& q, QueryStats* st, int threads) const {
    return empty_visit(self(), q, st, threads);
  }
  template <class V>
  SumResult sum(const Halfspaces<T>& q, const SumSpec<V>& sp, QueryStats* st, int threads) const {
    return sum_visit(self(), q, sp, st, threads);
  }
  // Exact top-k by inner product (ties: smaller id first); scores/ids are m x k row-major.
  void topk(const T* queries, index_t m, index_t k, double* scores, std::int64_t* ids, QueryStats* st,
            int threads) const {
    topk_visit(self(), queries, m, k, scores, ids, st, threads);
  }

 private:
  const Derived& self() const { return static_cast<const Derived&>(*this); }
};

// The Query of a structure of fixed dimension D: the normal as given (an embedded tree takes it
// in T), in float64, and the offset.
template <class T, int D>
struct SmallQuery {
  const T* normal_t;
  double a[D];
  double b;
  const double* normal() const { return a; }
  static SmallQuery make(const T* normal, double b) {
    SmallQuery q{normal, {}, b};
    for (int t = 0; t < D; ++t) q.a[t] = static_cast<double>(normal[t]);
    return q;
  }
};

}  // namespace hsrgeom
