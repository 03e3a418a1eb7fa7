// ConvexLayers (d = 2): onion layers for output-sensitive half-plane reporting.
//
// Layer 0 is the convex hull of all points, layer 1 the hull of the rest, and so on. Every point
// of a deeper layer lies in the hull of each earlier layer, so a half-plane that misses the hull
// of layer i misses every deeper layer too. A query therefore, for i = 0, 1, ...:
//   1. finds the vertex of layer i extreme in direction a (a search on the edges' angles, then
//      an exact hill-climb over neighbours: the angles are rounded, the comparisons are not);
//   2. stops if that vertex is outside the half-plane;
//   3. reports the contiguous arc of the layer around it that is inside.
// Cost O(sum over the layers reached of log h_i, + k). The hulls are computed with exact
// orientation predicates (ExactAccumulator), so the layers are exactly convex and nested, and
// every reported point passes the shared predicate: the result is exact. Hull polygons are
// strictly convex (points in the middle of a hull edge go to a later layer: still inside the
// hull, so the stopping rule holds).
//
// Build: OnionPeeler (onion_peeler.hpp) -- batches of layers, each a monotone chain over the points that can
// be on the hull (those not strictly inside a polygon slightly inside the hull, found once per
// batch with a kd-tree).
//
// Partial peel (max_layers): peeling stops after max_layers layers, and a PartitionTree over
// all the points answers every query the shallow table (below) does not; the walk is not used.
// Peeling all of 10^7 uniform points takes ~80 s (tens of thousands of layers); the table needs
// only the first table_layers + 1 layers, which a partial peel builds in seconds.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "hsrgeom/dispatch.hpp"
#include "hsrgeom/filter.hpp"
#include "hsrgeom/hull2.hpp"
#include "hsrgeom/interrupt.hpp"
#include "hsrgeom/onion_peeler.hpp"
#include "hsrgeom/parallel.hpp"
#include "hsrgeom/partition_tree.hpp"
#include "hsrgeom/predicate.hpp"
#include "hsrgeom/progress.hpp"
#include "hsrgeom/query.hpp"
#include "hsrgeom/report.hpp"
#include "hsrgeom/topk.hpp"
#include "hsrgeom/types.hpp"

namespace hsrgeom {

// Number of i < cnt with rounded <a, (x_i, y_i)> >= b (a guide only: rounded).
inline index_t count_at_least_2d(const double* a, double b, const double* x, const double* y, index_t cnt) {
  index_t i = 0, c = 0;
#if defined(__AVX512F__)
  const __m512d a0 = _mm512_set1_pd(a[0]), a1 = _mm512_set1_pd(a[1]), bb = _mm512_set1_pd(b);
  for (; i + 8 <= cnt; i += 8) {
    const __m512d sc = _mm512_fmadd_pd(a1, _mm512_loadu_pd(y + i), _mm512_mul_pd(a0, _mm512_loadu_pd(x + i)));
    c += __builtin_popcount(_mm512_cmp_pd_mask(sc, bb, _CMP_GE_OQ));
  }
#endif
  for (; i < cnt; ++i) c += a[0] * x[i] + a[1] * y[i] >= b;
  return c;
}

template <class T>
class ConvexLayers : public QueryMethods<ConvexLayers<T>, T> {
 public:
  ConvexLayers() = default;
  // max_layers < 0: peel every point; otherwise at most max_layers layers, and if points are
  // left, a PartitionTree over all points (built with `threads`) answers what the table does not.
  // max_candidates: the table's budget of stored candidates (< 0: max(4096, 4 n)); the levels
  // past it are dropped.
  explicit ConvexLayers(PointsView<T> p, index_t table_layers = kDefaultTableLayers, index_t max_layers = -1,
                        int threads = 0, index_t max_candidates = -1)
      : n_(p.n) {
    if (p.d != 2) throw std::invalid_argument("ConvexLayers needs d = 2");
    if (static_cast<std::uint64_t>(p.n) > kMaxBlockPoints)  // (32-bit ids in the table: filter.hpp)
      throw std::invalid_argument("points: ConvexLayers holds at most 2^32 points");
    if (table_layers < 0 || table_layers > kMaxTableLayers)
      throw std::invalid_argument("table_layers must be in [0, 512]");
    if (max_layers < 0) max_layers = std::numeric_limits<index_t>::max();
    std::vector<index_t> order(n_);
    std::iota(order.begin(), order.end(), index_t{0});
    std::uint32_t compared = 0;
    std::sort(order.begin(), order.end(), [&](index_t a, index_t b) {
      if ((++compared & 0xFFFF) == 0) interrupt::check();  // std::sort passes exceptions on
      const T* x = p.row(a);
      const T* y = p.row(b);
      return x[0] < y[0] || (x[0] == y[0] && (x[1] < y[1] || (x[1] == y[1] && a < b)));
    });
    layer_start_.push_back(0);
    OnionPeeler<T> peeler(p, std::move(order));
    std::vector<index_t> hull;
    BuildProgress progress("ConvexLayers", n_, 2);
    // The peel also stops when it stalls (degenerate data, see OnionPeeler::stalled): the
    // partial peel's tree then answers what the layers and the table do not, as for max_layers.
    while (layers() < max_layers && !peeler.stalled() && (interrupt::check(), peeler.next_layer(hull))) {
      for (index_t id : hull) {
        ids_.push_back(id);
        xy_.push_back(static_cast<double>(p.row(id)[0]));
        xy_.push_back(static_cast<double>(p.row(id)[1]));
      }
      layer_start_.push_back(static_cast<index_t>(ids_.size()));
      progress.tick("%lld layers, %lld of %lld points peeled", static_cast<long long>(layers()),
                    static_cast<long long>(ids_.size()), static_cast<long long>(n_));
    }
    progress.done("done: %lld layers", static_cast<long long>(layers()));
    layer_end_ = static_cast<index_t>(ids_.size());
    // angle of each edge's outward normal, for the extreme-vertex search
    angle_.resize(ids_.size());
    for (size_t l = 0; l + 1 < layer_start_.size(); ++l) {
      const index_t s = layer_start_[l], h = layer_start_[l + 1] - s;
      for (index_t i = 0; i < h; ++i) {
        const double* a = &xy_[2 * (s + i)];
        const double* b = &xy_[2 * (s + (i + 1) % h)];
        // CCW polygon: outward normal of edge a->b is (dy, -dx)
        angle_[s + i] = std::atan2(-(b[0] - a[0]), b[1] - a[1]);
      }
      // start each layer at the edge of smallest normal angle: the angles are then sorted
      const index_t w = static_cast<index_t>(std::min_element(&angle_[s], &angle_[s] + h) - &angle_[s]);
      std::rotate(angle_.begin() + s, angle_.begin() + s + w, angle_.begin() + s + h);
      std::rotate(ids_.begin() + s, ids_.begin() + s + w, ids_.begin() + s + h);
      std::rotate(xy_.begin() + 2 * s, xy_.begin() + 2 * (s + w), xy_.begin() + 2 * (s + h));
    }
    xnorm_.resize(layers());  // per layer, the largest ||x|| (for the predicate's margin)
    for (index_t l = 0; l < layers(); ++l)
      for (index_t k = layer_start_[l]; k < layer_start_[l + 1]; ++k)
        xnorm_[l] = std::max(xnorm_[l], norm_up(&xy_[2 * k], 2));
    if (layer_end_ < n_) {  // partial peel: a tree over all points, stored after the layers in its order
      tree_ = PartitionTree<T>(p, 32, SplitRule::Widest, threads);
      // stored index layer_end_ + k is the tree's position k: a node's points are contiguous here too
      for (index_t k = 0; k < n_; ++k) {
        const index_t id = tree_.stored_id(k);
        ids_.push_back(id);
        xy_.push_back(static_cast<double>(p.row(id)[0])), xy_.push_back(static_cast<double>(p.row(id)[1]));
      }
    }
    build_table(table_layers, max_candidates < 0 ? std::max<index_t>(4096, 4 * n_) : max_candidates, threads);
  }

  static constexpr index_t kDefaultTableLayers = 128, kMaxTableLayers = 512;

  index_t size() const { return n_; }
  int dim() const { return 2; }
  index_t layers() const { return static_cast<index_t>(layer_start_.size()) - 1; }
  std::vector<index_t> layer_sizes() const {
    std::vector<index_t> out(layers());
    for (index_t l = 0; l < layers(); ++l) out[l] = layer_start_[l + 1] - layer_start_[l];
    return out;
  }
  index_t table_layers() const { return tab_levels_; }
  // Stored indices [all_begin(), all_begin() + n) hold every point once.
  index_t all_begin() const { return layer_end_ < n_ ? layer_end_ : 0; }
  // Points on the peeled layers (n unless max_layers stopped the peel).
  index_t peeled() const { return layer_end_; }
  index_t table_directions() const { return tab_buckets_; }
  size_t memory_bytes() const {
    return ids_.size() * sizeof(index_t) + xy_.size() * sizeof(double) + angle_.size() * sizeof(double) +
           layer_start_.size() * sizeof(index_t) + xnorm_.size() * sizeof(double) +
           tab_.size() * sizeof(TableEntry) + coarse_.size() * sizeof(double) +
           groups_.size() * sizeof(GuideGroup) + tab_off_.size() * sizeof(index_t) + cand_.size() * sizeof(Cand8) +
           order_.memory_bytes() +
           tree_.memory_bytes();
  }
  std::vector<T> original_points() const {
    std::vector<T> out(2 * n_);
    for (size_t k = 0; k < ids_.size(); ++k) {
      out[2 * ids_[k]] = static_cast<T>(xy_[2 * k]);
      out[2 * ids_[k] + 1] = static_cast<T>(xy_[2 * k + 1]);
    }
    return out;
  }

  // The query concept (query.hpp; report, count, empty, sum, topk come from QueryMethods).
  using Query = SmallQuery<T, 2>;
  Query prepare(const T* normal, double b) const { return Query::make(normal, b); }

  // The half-space traversal (query.hpp): the table's answer and the partial peel's tree nodes go
  // to sink.range at once when the sink reads no rows; everything else point by point (rows:
  // the stored float64 copies, exact).
  template <class Sink>
  void visit(const Query& q, Counters& c, Sink& sink) const {
    constexpr int Want = Sink::kNeeds;
    visit<Want>(
        q.a, q.b, c, [&](index_t k, std::int64_t id) { return sink.point(id, &xy_[2 * k], kNoScore); },
        [&](const index_t* k, const std::int64_t* id, index_t w) {
          if constexpr (Want <= kNeedIds) {
            return sink.range(id, static_cast<const double*>(nullptr), w);
          } else {
            for (index_t i = 0; i < w; ++i)
              if (!sink.point(id[i], &xy_[2 * k[i]], kNoScore)) return false;
            return true;
          }
        },
        wants_ascending(sink), [&](index_t n) { return ids_room(sink, n); });
  }

  // Exact top-k. Each layer's extreme vertex beats every deeper point or ties with it, so the
  // first k layers hold k points whose k-th best value v_k is at least the exact k-th best; a
  // second pass reports every point with <a, x> >= (a lower bound of v_k) -- ties in deeper
  // layers included -- into the sink, which ranks them exactly.
  using TopKRow = double;
  void visit_topk(const T* normal, Counters& c, TopKSink<double>& sink) const {
    const Query q = prepare(normal, 0.0);
    const double* a = q.a;
    const index_t k = static_cast<index_t>(sink.col.k());
    TopKSink<double> first(a, 2, k);
    // (any k points give a valid bound: all of them when the peeled layers hold fewer)
    const index_t last = std::min<index_t>(k, layers());
    const bool few = layer_start_[last] < k;
    for (index_t t = few ? all_begin() : 0, e = few ? all_begin() + n_ : layer_start_[last]; t < e; ++t)
      first.point(ids_[t], &xy_[2 * t], kNoScore);
    double lower = std::numeric_limits<double>::infinity();
    for (auto& cand : first.col.finish()) lower = std::min(lower, cand.s - cand.err);
    if (lower >= -std::numeric_limits<double>::max()) {
      visit<kNeedRows>(a, lower, c, [&](index_t t, std::int64_t id) { return sink.point(id, &xy_[2 * t], kNoScore); });
    } else {  // a score overflowed (its enclosure is unbounded) or its bound did: no float64
              // threshold is below the exact k-th best, so every point is a candidate
      for (index_t t = all_begin(); t < all_begin() + n_; ++t) sink.point(ids_[t], &xy_[2 * t], kNoScore);
      c.tested += n_;
    }
  }

  // ~1 us per query at n = 10^6 reporting ~100 points
  double query_work(index_t m) const { return static_cast<double>(m) * 256 * std::log2(2.0 + n_); }

  // Software prefetch for the next queries of a batch (see prefetch).
  void prefetch_ahead(const Halfspaces<T>& q, index_t j) const {
    prefetch(q, j + 2, 0);
    prefetch(q, j + 1, 1);
  }

 private:
  // Calls out(k, id) for each stored vertex k (id: its point's id) inside {<a,x> >= b}; out
  // returns false to stop.
  template <int Want = 2, class Out>
  void visit(const double* a, double b, Counters& c, Out&& out) const {
    visit<Want>(a, b, c, out, [&](const index_t* k, const std::int64_t* id, index_t w) {
      for (index_t i = 0; i < w; ++i)
        if (!out(k[i], id[i])) return false;
      return true;
    });
  }
  // The same, with block(k, id, w) receiving all the points at once when the table answers (or,
  // Want <= 1, a node of the partial peel's tree is inside); block returns false to stop.
  // Want says what block reads: 0 only w, 1 the ids too, 2 also the stored indices k. With
  // ascending (and Want 1), the table's answer comes in id order where its list is ranked;
  // room(n) may give where to write it (query.hpp ids_room), else nullptr.
  template <int Want, class Out, class Block, class Room = std::nullptr_t (*)(index_t)>
  void visit(const double* a, double b, Counters& c, Out&& out, Block&& block, bool ascending = false,
             Room room = [](index_t) { return nullptr; }) const {
    const Margin mg(2, Rounding<double>::u, Rounding<double>::eta);
    const double na = norm_up(a, 2);
    if (a[0] == 0 && a[1] == 0) {  // every point or none
      if (0 >= b)
        for (index_t k = all_begin(); k < all_begin() + n_; ++k)
          if (!out(k, ids_[k])) return;
      return;
    }
    double margin = 0;  // of the current layer
    auto inside = [&](index_t k) {
      ++c.tested;
      const double* x = &xy_[2 * k];
      return in_halfspace(a[0] * x[0] + a[1] * x[1], margin, a, x, b, 2, &c.exact);
    };
    if (tab_levels_ > 0) {
      // Shallow table: the smallest level j whose layer misses the half-plane, then the
      // bucket's candidates for that level (see build_table).
      const index_t J = tab_levels_;
      const index_t bkt = bucket(a);
      const index_t G = tab_groups_;
      const GuideGroup* gg = &groups_[static_cast<size_t>(bkt) * G];
      auto certified = [&](index_t j) {  // does layer j miss the half-plane? exact
        ++c.nodes;
        ++c.tested;
        const GuideGroup& q = gg[(j - 1) / 8];
        const int l = static_cast<int>((j - 1) % 8);
        const double v[2] = {q.x[l], q.y[l]};  // vertex s
        if (in_halfspace(a[0] * v[0] + a[1] * v[1], mg(na, norm_up(v, 2), b), a, v, b, 2, &c.exact)) return false;
        if (q.count[l] == 1) return true;
        const TableEntry& e = tab_[static_cast<size_t>(bkt) * J + j - 1];  // the other vertices
        margin = mg(na, e.xnorm, b);
        for (index_t t = 1, k = e.first + 1; t < q.count[l]; ++t, ++k) {
          if (k == e.end) k = e.start;
          if (inside(k)) return false;
        }
        return true;
      };
      // Guide: the levels whose vertex s is (rounded) inside, counted among every eighth level,
      // then among the eight after the last of those. The values decrease with j (nested hulls),
      // so the next level is the one to try; only the exact test lets a level be used, and a
      // level deeper than needed only costs more candidates.
      const double* co = &coarse_[static_cast<size_t>(bkt) * 2 * tab_coarse_];
      const index_t group = count_at_least_2d(a, b, co, co + tab_coarse_, tab_coarse_);
      const index_t first = group >= G ? J + 1 : 8 * group + 1 + count_at_least_2d(a, b, gg[group].x, gg[group].y, 8);
      for (index_t j = first; j <= J; ++j) {
        if (!certified(j)) continue;
        margin = mg(na, xnorm_[0], b);  // layer 0 holds the largest norm
        const index_t off = tab_off_[bkt], cnt = gg[(j - 1) / 8].prefix[(j - 1) % 8];
        std::vector<std::int64_t>& scratch = index_scratch();
        scratch.resize(2 * (cnt + 8));
        index_t* in_k = scratch.data();
        std::int64_t* in_id = in_k + cnt + 8;
        if constexpr (Want == 1)
          if (std::int64_t* r = room(cnt + 8)) in_id = r;
        const Cand8* cand = cand_.data() + off;  // (may be empty: then cnt = 0)
        // no product can overflow when ||a|| ||x|| and |b| are far from the largest double
        index_t w = 0;
        if (!(na * xnorm_[0] <= 1e300 && std::fabs(b) <= 1e300)) {  // decide each exactly
          for (index_t i = 0; i < cnt; ++i) {
            const index_t k = cand[i / 8].k[i % 8];
            ++c.exact;
            if (exact_sign(a, &xy_[2 * k], b, 2) >= 0) in_k[w] = k, in_id[w++] = cand[i / 8].id[i % 8];
          }
        } else {
          // the few within rounding of the boundary are decided exactly
          auto decide = [&](const Cand8& q, int l) {
            ++c.exact;
            return exact_sign(a, &xy_[2 * q.k[l]], b, 2) >= 0;
          };
          const std::int64_t band = Want == 1 && ascending ? order_.report_band(bkt, cnt) : -1;
          if (band >= 0) {
            w = filter_blocks<kWantSlots, 2>(a, b, margin, cand, cnt, in_k, in_id, decide);
            order_.report_ids(band, in_k, w, in_id);
          } else {
            w = filter_blocks<Want, 2>(a, b, margin, cand, cnt, in_k, in_id, decide);
          }
        }
        c.tested += cnt;
        block(in_k, in_id, w);
        return;
      }
    }
    if (layer_end_ < n_) {  // partial peel: the tree answers what the table does not (exact in T:
      // the normal came from one). Its position k is stored index layer_end_ + k.
      const T normal[2] = {static_cast<T>(a[0]), static_cast<T>(a[1])};
      tree_.visit(
          normal, b, c,
          [&](index_t b0, index_t b1) {
            if constexpr (Want <= 1) {  // a node inside: its ids at once, like the table's answer
              return block(nullptr, &ids_[layer_end_ + b0], b1 - b0);
            }
            for (index_t k = layer_end_ + b0; k < layer_end_ + b1; ++k)
              if (!out(k, ids_[k])) return false;
            return true;
          },
          [&](index_t k) { return out(layer_end_ + k, ids_[layer_end_ + k]); });
      return;
    }
    const double theta = std::atan2(a[1], a[0]);
    for (index_t l = 0; l < layers(); ++l) {
      ++c.nodes;
      const index_t s = layer_start_[l], h = layer_start_[l + 1] - s;
      margin = mg(na, xnorm_[l], b);
      const index_t e = s + extreme(s, h, a, theta);
      if (!inside(e)) return;
      if (!out(e, ids_[e])) return;
      // the arc inside: counter-clockwise from e, then clockwise from e, h - 1 vertices at most
      index_t ccw = 0;
      for (index_t k = e + 1 == s + h ? s : e + 1; ccw < h - 1; k = k + 1 == s + h ? s : k + 1, ++ccw) {
        if (!inside(k)) break;
        if (!out(k, ids_[k])) return;
      }
      for (index_t k = e == s ? s + h - 1 : e - 1, cw = 0; ccw + cw < h - 1; k = k == s ? s + h - 1 : k - 1, ++cw) {
        if (!inside(k)) break;
        if (!out(k, ids_[k])) return;
      }
    }
  }

  // The table's bucket of a nonzero normal a.
  index_t bucket(const double* a) const {
    return std::min<index_t>(tab_buckets_ - 1,
                             std::max<index_t>(0, static_cast<index_t>(pseudo_angle(a) * (tab_buckets_ / 4.0))));
  }

  // Software prefetch for query j of a batch, called two queries ahead (stage 0: its bucket's
  // coarse guide and candidate offset) and one query ahead (stage 1: the guide group the
  // coarse guide points to and the first candidate blocks). Each query reads these from a
  // random bucket, a cache miss apiece that was ~25 % of a query at 10^6 points (perf).
  void prefetch(const Halfspaces<T>& q, index_t j, int stage) const {
    if (tab_levels_ == 0 || j >= q.m) return;
    const double a[2] = {static_cast<double>(q.normals[2 * j]), static_cast<double>(q.normals[2 * j + 1])};
    if (a[0] == 0 && a[1] == 0) return;
    const index_t bkt = bucket(a);
    const double* co = &coarse_[static_cast<size_t>(bkt) * 2 * tab_coarse_];
    if (stage == 0) {
      for (index_t l = 0; l < 2 * tab_coarse_; l += 8) __builtin_prefetch(co + l);
      __builtin_prefetch(&tab_off_[bkt]);
      return;
    }
    const index_t group = count_at_least_2d(a, q.offsets[j], co, co + tab_coarse_, tab_coarse_);
    if (group < tab_groups_) {
      const char* g = reinterpret_cast<const char*>(&groups_[static_cast<size_t>(bkt) * tab_groups_ + group]);
      for (size_t l = 0; l < sizeof(GuideGroup); l += 64) __builtin_prefetch(g + l);
    }
    const index_t off = tab_off_[bkt], blocks = std::min<index_t>(tab_off_[bkt + 1] - off, 2);
    const char* c = reinterpret_cast<const char*>(cand_.data() + off);
    for (size_t l = 0; l < blocks * sizeof(Cand8); l += 64) __builtin_prefetch(c + l);
  }

  // Index (within the layer) of a vertex maximising <a, v>.
  index_t extreme(index_t s, index_t h, const double* a, double theta) const {
    if (h <= 2) {
      if (h == 2 && better(s + 1, s, a)) return 1;
      return 0;
    }
    // vertex i is extreme for directions between the normals of edges i-1 and i; the normals'
    // angles increase around a CCW polygon, with one wrap-around.
    const double* ang = &angle_[s];  // ascending (see the constructor)
    index_t v = static_cast<index_t>(std::lower_bound(ang, ang + h, theta) - ang) % h;
    // v: first edge with normal angle >= theta; its start vertex is (nearly) extreme
    // exact hill-climb to a true maximum (a strictly convex polygon has no false local maxima)
    for (index_t steps = 0; steps < h; ++steps) {
      const index_t nx = (v + 1) % h, pv = (v + h - 1) % h;
      if (better(s + nx, s + v, a)) v = nx;
      else if (better(s + pv, s + v, a)) v = pv;
      else break;
    }
    return v;
  }

  // <a, x_i> > <a, x_j>, exactly.
  bool better(index_t i, index_t j, const double* a) const {
    return compare_dots(a, &xy_[2 * i], &xy_[2 * j], 2) > 0;
  }

  // ---- shallow table ------------------------------------------------------------------------
  // The directions are cut into M buckets (arcs of pseudo-angle 4 / M, see pseudo_angle,
  // widened by kArcSlack on both sides so that the rounded pseudo-angle of a query's normal
  // always falls in an arc that contains the normal). For bucket B and level j (1 <= j <= J) the table keeps
  //   * the vertices s..e (counter-clockwise) of layer j extreme for B's two end directions:
  //     for every normal a in B, a vertex of layer j maximising <a, x> is among them, so the
  //     query "does layer j miss the half-plane?" is a few exact tests;
  //   * how many of B's candidates belong to level j. A vertex p of a layer above j is a
  //     candidate of (B, j) when it is strictly outside one of the edges (s, s+1) .. (e-1, e) of
  //     layer j, or beyond the line through v_s normal to B's first direction u0, or beyond the
  //     one through v_e normal to its last u1 (exact tests). Every other point x is in the
  //     region Q cut out by those half-planes (deeper points: in layer j's hull). Their normals
  //     u0, n_s, .., n_(e-1), u1 turn counter-clockwise and any a in B lies between two
  //     consecutive ones (v_s is extreme for u0, v_e for u1), whose lines meet at one of
  //     v_s..v_e: so max over Q of <a, x> is attained there (LP duality), and when layer j misses
  //     the half-plane, so does Q: every point inside is a candidate of (B, j).
  // Candidates are stored per bucket in order of the first level that needs them, so the
  // candidates of (B, j) are a prefix. A query at the level it needs tests ~k + a few points
  // (measured: 106 candidates for 100 reported at n = 10^6). Queries that reach deeper than J
  // layers take the layer-by-layer walk. J <= 512, and the candidates are at most
  // max_candidates (default 4 per point, 4096 for few points): levels past that budget are dropped.
  // Each bucket's list also has its id order (filter.hpp IdOrder), for sorted reports.
  using Cand8 = CandBlock<T, 2>;  // eight table candidates (filter.hpp)
  struct TableEntry {     // level j of a bucket, for chains of more than one vertex
    double xnorm;         // of layer j
    index_t start, end;   // stored vertices of layer j
    index_t first;        // stored index of vertex s
  };
  struct alignas(64) GuideGroup {  // per bucket, eight levels 8g + 1 .. 8g + 8
    double x[8], y[8];             // vertex s
    std::int32_t count[8];         // vertices s..e
    std::int32_t prefix[8];        // candidates of the levels up to this one
  };
  static std::vector<std::int64_t>& index_scratch() {
    thread_local std::vector<std::int64_t> v;
    return v;
  }
  static constexpr double kArcSlack = 1e-9;

  // A pseudo-angle in [0, 4], increasing counter-clockwise from direction (1, 0) like the angle
  // (quadrant q + the fraction |second| / (|x| + |y|) in it): one division instead of atan2.
  static double pseudo_angle(const double* a) {
    const double x = a[0], y = a[1], s = std::fabs(x) + std::fabs(y);
    if (y >= 0) return x >= 0 ? y / s : 1 - x / s;
    return x < 0 ? 2 - y / s : 3 + x / s;
  }
  // A direction with pseudo-angle p (taken modulo 4).
  static std::array<double, 2> pseudo_direction(double p) {
    p = std::fmod(p + 8, 4.0);
    const int q = std::min(3, static_cast<int>(p));
    const double t = p - q;
    switch (q) {
      case 0: return {1 - t, t};
      case 1: return {-t, 1 - t};
      case 2: return {t - 1, -t};
      default: return {t, t - 1};
    }
  }

  index_t layer_size(index_t l) const { return layer_start_[l + 1] - layer_start_[l]; }

  void build_table(index_t want, index_t budget, int threads) {
    index_t J = 0;  // level j needs layer j to be a polygon (>= 3 vertices)
    while (J < want && J + 1 < layers() && layer_size(J + 1) >= 3) ++J;
    if (J == 0) return;
    index_t M = 16;  // directions: more for more points (a bucket's extra candidates shrink)
    while (M < 1024 && M * 16 < n_) M *= 2;
    const double step = 4.0 / static_cast<double>(M);
    // the ends of each bucket's arc of directions (widened)
    std::vector<std::array<double, 4>> dirs(M);
    for (index_t bk = 0; bk < M; ++bk)
      for (int t = 0; t < 2; ++t) {
        const auto u = pseudo_direction(step * static_cast<double>(bk + t) + (t ? kArcSlack : -kArcSlack));
        dirs[bk][2 * t] = u[0];
        dirs[bk][2 * t + 1] = u[1];
      }
    // per level, the buckets whose edges s-1 .. e hold each edge (CSR over the layer's edges)
    std::vector<std::vector<index_t>> edge_off(J + 1), edge_bkt(J + 1), edge_run(J + 1);
    std::vector<std::vector<std::array<index_t, 2>>> ends_of(J + 1);  // s, e of (level, bucket)
    for (index_t j = 1; j <= J; ++j) {
      const index_t s = layer_start_[j], h = layer_size(j);
      std::vector<index_t>& off = edge_off[j];
      off.assign(h + 1, 0);
      std::vector<std::array<index_t, 2>> chains(M);
      ends_of[j].resize(M);
      for (index_t bk = 0; bk < M; ++bk) {
        index_t* ends = ends_of[j][bk].data();
        for (int t = 0; t < 2; ++t) {
          const double* u = &dirs[bk][2 * t];
          ends[t] = extreme(s, h, u, std::atan2(u[1], u[0]));
        }
        const index_t cnt = (ends[1] - ends[0] + h) % h + 1;
        chains[bk] = {(ends[0] + h - 1) % h, std::min<index_t>(cnt + 1, h)};  // first edge, edges
        for (index_t t = 0; t < chains[bk][1]; ++t) ++off[(chains[bk][0] + t) % h + 1];
      }
      for (index_t i = 0; i < h; ++i) off[i + 1] += off[i];
      std::vector<index_t> fill(off.begin(), off.end() - 1);
      edge_bkt[j].resize(off[h]);
      for (index_t bk = 0; bk < M; ++bk)
        for (index_t t = 0; t < chains[bk][1]; ++t) edge_bkt[j][fill[(chains[bk][0] + t) % h]++] = bk;
      // an edge's buckets (listed ascending) are one cyclic run b, b + 1, ... (mod M) when the
      // chains' ends move monotonically with the direction, as they do on a convex polygon:
      // then edge_run holds b (else -1 and the list is read bucket by bucket)
      edge_run[j].assign(h, -1);
      for (index_t i = 0; i < h; ++i) {
        const index_t* bl = edge_bkt[j].data() + off[i];
        const index_t c = off[i + 1] - off[i];
        index_t gaps = 0, start = c ? bl[0] : 0;
        for (index_t t = 1; t < c; ++t)
          if (bl[t] != bl[t - 1] + 1) ++gaps, start = bl[t];
        if (gaps == 0 || (gaps == 1 && bl[0] == 0 && bl[c - 1] == M - 1)) edge_run[j][i] = start;
      }
    }
    // Each vertex p of layers 0..J-1, level by level: the edges of layer j it sees, and their
    // buckets. Bucket B's region at level j is cut by its edges s..e-1 and by the lines through
    // v_s and v_e normal to B's arc ends; a point beyond one of those lines sees edge s-1 or s
    // (resp. e-1 or e), so the edges s-1 and e are looked at, and then the line decides.
    struct Need {
      std::int32_t bucket, level;
      index_t vertex;
    };
    // Levels in ranges [j0, j1] of doubling width, so that levels past the budget are not
    // searched (at 12,500 points the default budget keeps 12 of 128 levels). Per range, the
    // vertices of layers 0 .. j1-1 in chunks of kChunk, in parallel; each (range, chunk) list
    // in vertex order. seen: the buckets vertex k is already a candidate of (at a shallower
    // level: it is listed once), first from its lists of the earlier ranges; a bitset, so that
    // the runs of buckets k already has are skipped a word at a time (as levels deepen, k sees
    // more of each layer, and nearly all of its buckets are old: 100 bucket checks per
    // candidate found, at 50,000 uniform points).
    const index_t W = (M + 63) / 64, kChunk = 256;
    const size_t cap = std::min<size_t>(static_cast<size_t>(budget), INT32_MAX);
    std::vector<std::vector<std::vector<Need>>> parts;  // [range][chunk]
    std::vector<size_t> per_level(J + 1, 0);
    size_t total = 0;
    for (index_t j0 = 1, width = 8, j_end = J; j0 <= j_end; j0 += width, width *= 2) {
      const index_t j1 = std::min(j_end, j0 + width - 1), V = layer_start_[j1];
      std::vector<std::vector<Need>>& range = parts.emplace_back((V + kChunk - 1) / kChunk);
      parallel_for(static_cast<index_t>(range.size()), threads_for_work(threads, 256.0 * V * (j1 - j0 + 1)),
                   [&](index_t c, int) {
        std::vector<std::uint64_t> seen(W);
        std::vector<size_t> at(parts.size() - 1, 0);  // read positions in the earlier ranges' lists
        std::vector<Need>& needs = range[c];
        index_t l = static_cast<index_t>(std::upper_bound(layer_start_.begin(), layer_start_.end(), c * kChunk) -
                                         layer_start_.begin()) - 1;
        for (index_t k = c * kChunk; k < std::min(V, (c + 1) * kChunk); ++k) {
          while (k == layer_start_[l + 1]) ++l;
          std::fill(seen.begin(), seen.end(), 0);
          for (size_t r = 0; r + 1 < parts.size(); ++r) {
            if (static_cast<size_t>(c) >= parts[r].size()) continue;
            const std::vector<Need>& prev = parts[r][c];
            for (size_t& q = at[r]; q < prev.size() && prev[q].vertex == k; ++q)
              seen[prev[q].bucket / 64] |= std::uint64_t{1} << (prev[q].bucket % 64);
          }
          for (index_t j = std::max(l + 1, j0); j <= j1; ++j)
            visible_edges(j, &xy_[2 * k], [&](index_t i) {
              const index_t s = layer_start_[j], h = layer_size(j);
              auto consider = [&](index_t bk) {  // bk not yet seen
                const index_t vs = ends_of[j][bk][0], ve = ends_of[j][bk][1];
                const bool first = i == (vs + h - 1) % h, last = i == ve;
                if ((first || last) &&
                    !(first && compare_dots(&dirs[bk][0], &xy_[2 * k], &xy_[2 * (s + vs)], 2) > 0) &&
                    !(last && compare_dots(&dirs[bk][2], &xy_[2 * k], &xy_[2 * (s + ve)], 2) > 0))
                  return;
                seen[bk / 64] |= std::uint64_t{1} << (bk % 64);
                needs.push_back({static_cast<std::int32_t>(bk), static_cast<std::int32_t>(j), k});
              };
              const index_t lo = edge_off[j][i], cnt = edge_off[j][i + 1] - lo, b0 = edge_run[j][i];
              if (b0 < 0) {
                for (index_t q = lo; q < lo + cnt; ++q) {
                  const index_t bk = edge_bkt[j][q];
                  if (!(seen[bk / 64] >> (bk % 64) & 1)) consider(bk);
                }
                return;
              }
              // the run b0 .. b0 + cnt - 1 (mod M): at most two ranges [a, e)
              const index_t e0 = std::min(b0 + cnt, M);
              for (auto [a, e] : {std::array<index_t, 2>{b0, e0}, std::array<index_t, 2>{0, b0 + cnt - e0}})
                for (index_t w = a / 64; a < e && w <= (e - 1) / 64; ++w) {
                  std::uint64_t bits = ~seen[w];
                  if (w == a / 64) bits &= ~std::uint64_t{0} << (a % 64);
                  if (w == (e - 1) / 64 && e % 64) bits &= ~(~std::uint64_t{0} << (e % 64));
                  for (; bits; bits &= bits - 1) consider(w * 64 + static_cast<index_t>(__builtin_ctzll(bits)));
                }
            });
        }
      });
      // memory: at most 4 candidates per point (and 4096 for few points); levels past that go
      for (const std::vector<Need>& part : range)
        for (const Need& nd : part) ++per_level[nd.level];
      for (index_t j = j0; j <= j1; ++j) {
        if (total + per_level[j] > cap) {
          J = j - 1;
          j_end = 0;  // no further range
          break;
        }
        total += per_level[j];
      }
    }
    if (J == 0) return;
    std::vector<Need> needs;
    {  // by (bucket, level, vertex): a stable counting sort on (bucket, level), as each level's
       // needs are made in ascending vertex order (std::sort took 15 % of the build at 50,000 points)
      std::vector<size_t> at(static_cast<size_t>(M) * J + 1, 0);
      for (const auto& range : parts)
        for (const std::vector<Need>& part : range)
          for (const Need& nd : part)
            if (nd.level <= J) ++at[static_cast<size_t>(nd.bucket) * J + nd.level];
      std::partial_sum(at.begin(), at.end(), at.begin());
      needs.resize(at.back());
      for (auto& range : parts)
        for (std::vector<Need>& part : range) {
          for (const Need& nd : part)
            if (nd.level <= J) needs[at[static_cast<size_t>(nd.bucket) * J + nd.level - 1]++] = nd;
          std::vector<Need>().swap(part);
        }
    }
    // the levels' entries and the guide (NaN / 0 past J: never counted as inside)
    const index_t G = (J + 7) / 8;
    std::vector<TableEntry> tab(static_cast<size_t>(M) * J);
    const index_t C = (G + 7) / 8 * 8;  // coarse entries per bucket, a multiple of 8 (NaN past G)
    coarse_.assign(static_cast<size_t>(M) * 2 * C, std::numeric_limits<double>::quiet_NaN());
    groups_.assign(static_cast<size_t>(M) * G, GuideGroup{});
    const double nan = std::numeric_limits<double>::quiet_NaN();
    for (index_t bk = 0; bk < M; ++bk) {
      for (index_t g = 0; g < G; ++g) std::fill_n(groups_[bk * G + g].x, 8, nan), std::fill_n(groups_[bk * G + g].y, 8, nan);
      for (index_t j = 1; j <= J; ++j) {
        const index_t s = layer_start_[j], h = layer_size(j), vs = ends_of[j][bk][0], ve = ends_of[j][bk][1];
        const index_t cnt = (ve - vs + h) % h + 1;
        tab[static_cast<size_t>(bk) * J + (j - 1)] = {xnorm_[j], s, s + h, s + vs};
        GuideGroup& gg = groups_[bk * G + (j - 1) / 8];
        const int l = static_cast<int>((j - 1) % 8);
        gg.x[l] = xy_[2 * (s + vs)];
        gg.y[l] = xy_[2 * (s + vs) + 1];
        gg.count[l] = static_cast<std::int32_t>(cnt);
        if (l == 7) {
          double* co = &coarse_[static_cast<size_t>(bk) * 2 * C];
          co[(j - 1) / 8] = gg.x[l];
          co[C + (j - 1) / 8] = gg.y[l];
        }
      }
    }
    std::vector<Cand8> cand;
    tab_off_.assign(M + 1, 0);  // in blocks of 8 candidates; each bucket starts a block
    size_t q = 0;
    for (index_t bk = 0; bk < M; ++bk) {
      tab_off_[bk] = static_cast<index_t>(cand.size());
      index_t got = 0;
      for (index_t j = 1; j <= J; ++j) {
        for (; q < needs.size() && needs[q].bucket == bk && needs[q].level == j; ++q, ++got) {
          if (got % 8 == 0) cand.push_back(Cand8{});
          const index_t k = needs[q].vertex;
          Cand8& c8 = cand.back();
          c8.x[0][got % 8] = static_cast<T>(xy_[2 * k]);  // exact copies, so that a query reads one stream
          c8.x[1][got % 8] = static_cast<T>(xy_[2 * k + 1]);
          c8.k[got % 8] = static_cast<std::uint32_t>(k);
          c8.id[got % 8] = static_cast<std::uint32_t>(ids_[k]);
        }
        groups_[bk * G + (j - 1) / 8].prefix[(j - 1) % 8] = static_cast<std::int32_t>(got);
      }
    }
    order_ = IdOrder();
    for (index_t bk = 0; bk < M; ++bk) order_.add_list(cand.data() + tab_off_[bk], groups_[bk * G + G - 1].prefix[(J - 1) % 8]);
    order_.done();
    tab_off_[M] = static_cast<index_t>(cand.size());
    cand_ = std::move(cand);
    tab_ = std::move(tab);
    tab_groups_ = G;
    tab_coarse_ = C;
    tab_levels_ = J;
    tab_buckets_ = M;
  }

  // Calls f(i) for each edge i (from vertex i to i + 1, within the layer) of layer j that has
  // point p strictly outside (exact). Those edges are consecutive; a guess from p's direction
  // finds one, a scan of the layer settles the rare miss.
  template <class F>
  void visible_edges(index_t j, const double* p, F&& f) const {
    const index_t s = layer_start_[j], h = layer_size(j);
    auto sees = [&](index_t i) { return orient2d(&xy_[2 * (s + i)], &xy_[2 * (s + (i + 1) % h)], p) < 0; };
    double cx = 0, cy = 0;  // any interior point serves the guess; the first three vertices' mean
    for (int t = 0; t < 3; ++t) cx += xy_[2 * (s + t)] / 3, cy += xy_[2 * (s + t) + 1] / 3;
    const double* ang = &angle_[s];
    const index_t g = static_cast<index_t>(std::lower_bound(ang, ang + h, std::atan2(p[1] - cy, p[0] - cx)) - ang);
    index_t found = -1;
    for (index_t t = 0; t < 5 && t < h && found < 0; ++t) {
      const index_t i = (g + h + (t % 2 ? -(t + 1) / 2 : t / 2)) % h;
      if (sees(i)) found = i;
    }
    if (found < 0) {
      for (index_t i = 0; i < h; ++i)
        if (sees(i)) f(i);
      return;
    }
    index_t fwd = 0;
    for (index_t i = found; fwd < h && sees(i); i = (i + 1) % h, ++fwd) f(i);
    for (index_t i = (found + h - 1) % h, back = 0; fwd + back < h && sees(i); i = (i + h - 1) % h, ++back) f(i);
  }

  index_t n_ = 0, layer_end_ = 0;     // stored points [0, layer_end_): the layers; then, after a
                                      // partial peel, every point again in tree_'s order
  std::vector<index_t> layer_start_;  // vertices of layer l: [layer_start_[l], layer_start_[l+1])
  std::vector<index_t> ids_;          // original id of each stored point
  std::vector<double> xy_;            // coordinates of each stored point (exact copies)
  std::vector<double> angle_;         // outward normal angle of edge (k, k+1) of its layer
  std::vector<double> xnorm_;         // per layer: upper bound of the norms of its vertices
  index_t tab_levels_ = 0, tab_buckets_ = 0;  // shallow table (build_table): J levels, M buckets
  std::vector<TableEntry> tab_;               // entry (bucket B, level j) at B * J + j - 1
  index_t tab_coarse_ = 0;                    // coarse guide entries per bucket (a multiple of 8)
  std::vector<double> coarse_;                // per bucket: x then y of vertex s of levels 8, 16, ..
  std::vector<GuideGroup> groups_;            // per bucket, tab_groups_ of them
  index_t tab_groups_ = 0;
  std::vector<index_t> tab_off_;              // candidate blocks of bucket B: cand_[tab_off_[B] .. tab_off_[B + 1])
  std::vector<Cand8> cand_;                   // candidates per bucket, by the first level needing them
  IdOrder order_;                             // each bucket's candidates in id order (sorted reports)
  PartitionTree<T> tree_;                     // partial peel: over all points; else empty
};

}  // namespace hsrgeom
