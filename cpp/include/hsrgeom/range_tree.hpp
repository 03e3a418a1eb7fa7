// RangeTree: what the hierarchical structures over contiguous ranges share (PartitionTree,
// SimplicialPartitionTree): the stored points in tree order, per-node conservative bounds, and
// the queries (report, count, empty, exact top-k) that run on them.
//
// Every node owns a contiguous range [begin, end) of the reordered points, so a node entirely
// inside the half-space is reported by copying that range of ids. A query skips a node whose
// bounds put it outside, copies a node whose bounds put it inside, recurses otherwise, and tests
// the points of undecided leaves one by one with the shared exact predicate (predicate.hpp).
// A node whose points are all identical ("degenerate") is decided by one exact test. How the
// tree is split affects only the cost of a query, never its result.
//
// Bounds may live in a rotated frame (PartitionTree's split = PCA): frame_ (U, d x d row-major)
// and mu_ map a query to a -> U^T a, b -> b - <a, mu>, with frame_margin_ and a per-query
// absolute term covering the rotation's rounding (see partition_tree.hpp). With frame_ empty the
// bounds are on the points as given and frame_margin_ == margin_.
//
// The derived class (CRTP) builds nodes and provides
//   std::pair<index_t, index_t> node_range(std::int32_t v) const;   // [begin, end) of node v
//   template <class F> int each_child(std::int32_t v, F&& f) const;  // f(child), last child
//                                                                    // first; returns the count
// and fills perm_, bounds_, xnorm_, degenerate_ (summarize()) and pts_ (store_points()).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <type_traits>
#include <utility>
#include <vector>

#include "hsrgeom/bounds.hpp"
#include "hsrgeom/dispatch.hpp"
#include "hsrgeom/filter.hpp"
#include "hsrgeom/interrupt.hpp"
#include "hsrgeom/leaf_codes.hpp"
#include "hsrgeom/parallel.hpp"
#include "hsrgeom/predicate.hpp"
#include "hsrgeom/query.hpp"
#include "hsrgeom/report.hpp"
#include "hsrgeom/sums.hpp"
#include "hsrgeom/topk.hpp"
#include "hsrgeom/types.hpp"

namespace hsrgeom {

namespace detail {
// A leaf chunk's inside points for a point callback that takes them at once: bit t of `in` is
// stored position k0 + t (test_leaf).
struct LeafBits {
  std::uint64_t in;
};
template <class... F>
struct Overload : F... {
  using F::operator()...;
};
template <class... F>
Overload(F...) -> Overload<F...>;
}  // namespace detail

template <class Derived, class T>
class RangeTree : public QueryMethods<Derived, T> {
 public:
  index_t size() const { return n_; }
  int dim() const { return d_; }

  // The user's points in their original order.
  std::vector<T> original_points() const {
    std::vector<T> out(pts_.size());
    for (index_t k = 0; k < n_; ++k) std::copy(row(k), row(k) + d_, &out[perm_[k] * d_]);
    return out;
  }

  // The query concept (query.hpp): report, count, empty, topk and sum come from QueryMethods
  // (sum split into subtrees by sum_split below, whole nodes added from their value sums).
  // A query prepared for the tree: a in the original frame (for leaves), a in the bounds' frame,
  // and the offset and extra margin that map bounds of <a_frame, y> to bounds of <a, x>.
  struct Query {
    std::vector<double> a, a_rot;
    double na = 0, b = 0, shift = 0, extra = 0;
    LeafCodes::Normal coded;  // a for the leaves' codes (when the tree has them)
    Rows32 r32;               // float32 thresholds for the leaves' float32 scores (when f32)
    bool f32 = false;
    const double* frame_a() const { return a_rot.empty() ? a.data() : a_rot.data(); }
    const double* normal() const { return a.data(); }
  };
  Query prepare(const T* normal, double b) const { return make_query(normal, b); }

  // The half-space traversal (query.hpp): a node inside goes to sink.range as its stored ids and
  // rows, a leaf's points inside to sink.point with their float64 scores.
  // A sink that takes nodes (query.hpp) gets sink.node(NodeRef) for a node inside; `root`: the
  // subtree visited (a part of a sum, sum_split).
  template <class Sink>
  void visit(const Query& qq, Counters& c, Sink& sink, std::int32_t root = 0) const {
    auto range = [&](index_t b0, index_t b1, std::int32_t v) {
      if constexpr (detail::takes_nodes<Sink>::value)
        return sink.node(NodeRef{*this, v, qq, perm_.data() + b0, row(b0), b1 - b0});
      else
        return sink.range(perm_.data() + b0, Sink::kNeeds >= kNeedRows ? row(b0) : nullptr, b1 - b0);
    };
    auto point = [&](index_t k, double s) { return sink.point(perm_[k], row(k), s); };
    if constexpr (kTakesIdBlocks<Sink>) {
      // a leaf's inside points (bits of `in` from stored position k0) in one sink.range call
      auto points = [&](index_t k0, detail::LeafBits bits) {
        std::uint64_t in = bits.in;
        const T* none = nullptr;
        if constexpr (Sink::kNeeds == kNeedCount)
          return sink.range(static_cast<const std::int64_t*>(nullptr), none, __builtin_popcountll(in));
        std::int64_t local[64 + 8];
        std::int64_t* room = ids_room(sink, 64 + 8);  // straight into the output when it can
        std::int64_t* ids = room ? room : local;
        return sink.range(ids, none, kept_ids(perm_.data() + k0, in, ids));
      };
      traverse(qq, c, range, detail::Overload{point, points}, root);
    } else {
      traverse(qq, c, range, point, root);
    }
  }

  // Top-k traversal: best first by the nodes' upper bounds, stopping when the best bound left is
  // below the sink's k-th best lower bound.
  using TopKRow = T;
  void visit_topk(const T* normal, Counters& c, TopKSink<T>& sink) const {
    const Query qq = make_query(normal, 0.0);
    using Item = std::pair<double, std::int32_t>;  // (upper bound of <a, x>, node)
    std::vector<Item> heap;
    heap.push_back({upper(0, qq), 0});
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end());
      const Item it = heap.back();
      heap.pop_back();
      if (it.first < sink.bound()) break;  // nothing left can reach the k-th best
      if ((++c.nodes & 1023) == 0) interrupt::check();
      const int kids = self().each_child(it.second, [&](std::int32_t ch) {
        heap.push_back({upper(ch, qq), ch});
        std::push_heap(heap.begin(), heap.end());
      });
      if (kids) continue;
      const auto [b0, b1] = self().node_range(it.second);
      const double err = margin_(qq.na, xnorm_[it.second], 0.0);
      for (index_t t = b0; t < b1; ++t) {
        sink.push(dot_f64(qq.a.data(), row(t), d_), err, perm_[t], row(t));
        ++c.tested;
      }
    }
  }

  double query_work(index_t m) const {
    return static_cast<double>(m) * (64.0 * d_ + std::sqrt(static_cast<double>(n_)) * d_ * 4);
  }

  // Half-space sums (sums.hpp, SumSpec) come from QueryMethods (query.hpp sum_visit) with this
  // split: each query is split into subtrees (the first nodes of a breadth-first expansion from
  // the root, about 64 / m of them) so that a few queries use every thread; the split depends on
  // m only and the parts are combined in a fixed order, so the result does not depend on the
  // number of threads. With node sums (set_value_sums made from these values, SumSpec::node_sums)
  // the sinks read value rows from the tree-order copy and add whole nodes from their sums.
  template <class V>
  SumSplit<V, T> sum_split(const std::vector<Query>& qs, const SumSpec<V>& sp) const {
    SumSplit<V, T> p;
    p.roots = subtrees(std::max<index_t>(1, 64 / std::max<index_t>(1, static_cast<index_t>(qs.size()))));
    p.spec = sp;
    p.node_sums = sp.node_sums && vdv_ == sp.dv && (sp.dv == 0 || !value_rows<V>().empty());
    if (p.node_sums) {
      p.spec.values = sp.dv ? value_rows<V>().data() : nullptr;
      p.spec.offset = 0;
      p.stored = pts_.data();
    }
    p.work = sum_work(qs, p.roots, sp.dv, p.node_sums);
    return p;
  }

  // A node inside the half-space as visit() hands it to a sink that takes nodes (query.hpp
  // SumSink::node): its stored ids and rows, and its value sums.
  struct NodeRef {
    const RangeTree& tree;
    std::int32_t v;
    const Query& q;
    const std::int64_t* ids;
    const T* x;
    index_t n;
    template <class V>
    bool add_sums(const SumSpec<V>& sp, index_t j, SumAcc& acc) const {
      return tree.add_node_sums(v, q, sp, j, acc);
    }
  };

  // Per-node sums of values (rows offset + id, dv columns), and a copy of the rows in tree
  // order (sum() then reads the rows of the points it finds in leaves sequentially, not
  // scattered over the caller's array): for every node of at least
  // node_sum_min_size() points, the mean c of its points, sum v and sum (x - c) v^T (float64),
  // so that sum() with power 0 or 1 adds a node inside the half-space in O(d dv) instead of
  // reading each of its points and value rows:
  //   sum over the node of (<a, x> - s) v = (<a, c> - s) sum v + a^T sum (x - c) v^T.
  // Computed bottom-up (each point is read once, at the lowest nodes that get sums). The caller
  // passes SumSpec::node_sums only with the same values and offset.
  template <class V>
  void set_value_sums(const V* values, int dv, index_t offset, int threads) {
    const index_t nodes = static_cast<index_t>(xnorm_.size());
    const index_t min_size = node_sum_min_size();
    const index_t stride = vstride(dv);
    std::vector<std::int32_t> pre;  // preorder: children after their parent
    pre.reserve(nodes);
    std::vector<std::int32_t> stack{0};
    while (n_ > 0 && !stack.empty()) {
      const std::int32_t v = stack.back();
      stack.pop_back();
      pre.push_back(v);
      self().each_child(v, [&](std::int32_t ch) { stack.push_back(ch); });
    }
    std::vector<std::int32_t> slot(nodes, -1);
    index_t slots = 0;
    for (const std::int32_t v : pre) {
      const auto [b0, b1] = self().node_range(v);
      if (b1 - b0 >= min_size) slot[v] = static_cast<std::int32_t>(slots++);
    }
    std::vector<double> data(static_cast<size_t>(slots * stride), 0.0);
    // a node whose children all have sums (and cover it) combines theirs; the others read points
    std::vector<std::uint8_t> combine(nodes, 0);
    std::vector<std::int32_t> direct;
    for (const std::int32_t v : pre) {
      if (slot[v] < 0) continue;
      index_t covered = 0;
      bool all = true;
      const int kids = self().each_child(v, [&](std::int32_t ch) {
        const auto [c0, c1] = self().node_range(ch);
        covered += c1 - c0;
        all = all && slot[ch] >= 0;
      });
      const auto [b0, b1] = self().node_range(v);
      if (kids && all && covered == b1 - b0) combine[v] = 1;
      else direct.push_back(v);
    }
    const double work = static_cast<double>(n_) * d_ * std::max(dv, 1);
    parallel_for(static_cast<index_t>(direct.size()), threads_for_work(threads, work), [&](index_t i, int) {
      const std::int32_t v = direct[i];
      const auto [b0, b1] = self().node_range(v);
      double* c = &data[slot[v] * stride];
      double* sv = c + d_;
      double* mv = sv + dv;
      for (index_t k = b0; k < b1; ++k)
        for (int t = 0; t < d_; ++t) c[t] += static_cast<double>(row(k)[t]);
      for (int t = 0; t < d_; ++t) c[t] /= static_cast<double>(b1 - b0);
      std::vector<double> y(d_);
      for (index_t k = b0; k < b1; ++k) {
        const V* val = values + (offset + perm_[k]) * static_cast<index_t>(dv);
        for (int t = 0; t < d_; ++t) y[t] = static_cast<double>(row(k)[t]) - c[t];
        for (int u = 0; u < dv; ++u) {
          const double x = static_cast<double>(val[u]);
          sv[u] += x;
          for (int t = 0; t < d_; ++t) mv[t * dv + u] += y[t] * x;
        }
      }
    });
    for (auto it = pre.rbegin(); it != pre.rend(); ++it) {
      const std::int32_t v = *it;
      if (!combine[v]) continue;
      const auto [b0, b1] = self().node_range(v);
      double* c = &data[slot[v] * stride];
      double* sv = c + d_;
      double* mv = sv + dv;
      self().each_child(v, [&](std::int32_t ch) {
        const auto [c0, c1] = self().node_range(ch);
        const double* cc = &data[slot[ch] * stride];
        for (int t = 0; t < d_; ++t) c[t] += static_cast<double>(c1 - c0) * cc[t];
      });
      for (int t = 0; t < d_; ++t) c[t] /= static_cast<double>(b1 - b0);
      self().each_child(v, [&](std::int32_t ch) {  // sum (x - c) v^T = M_ch + (c_ch - c) S_ch^T
        const double* cc = &data[slot[ch] * stride];
        const double* sc = cc + d_;
        const double* mc = sc + dv;
        for (int u = 0; u < dv; ++u) sv[u] += sc[u];
        for (int t = 0; t < d_; ++t) {
          const double dc = cc[t] - c[t];
          for (int u = 0; u < dv; ++u) mv[t * dv + u] += mc[t * dv + u] + dc * sc[u];
        }
      });
    }
    std::vector<V> rows(static_cast<size_t>(n_) * dv);
    for (index_t k = 0; k < n_; ++k) {
      const V* val = values + (offset + perm_[k]) * static_cast<index_t>(dv);
      std::copy(val, val + dv, &rows[k * dv]);
    }
    vslot_ = std::move(slot);
    vdata_ = std::move(data);
    value_rows<V>() = std::move(rows);
    vdv_ = dv;
  }
  // Nodes smaller than this keep no value sums (reading their points is about as fast, and the
  // sums of all larger nodes take at most ~2 bytes per point and value column).
  index_t node_sum_min_size() const { return std::max<index_t>(64, 8 * (d_ + 1)); }
  bool has_value_sums() const { return vdv_ >= 0; }

  // One half-space query on the calling thread (for structures that embed a tree): range(b0, b1)
  // and point(k) receive stored positions, mapped by stored_id(k) and stored_row(k).
  template <class Range, class Point>
  void visit(const T* normal, double b, Counters& c, Range&& range, Point&& point) const {
    traverse(make_query(normal, b), c, range, point);
  }
  index_t stored_id(index_t k) const { return perm_[k]; }
  const T* stored_row(index_t k) const { return row(k); }

 protected:
  RangeTree() = default;
  explicit RangeTree(const PointsView<T>& p)
      : n_(p.n), d_(p.d), margin_(p.d, Rounding<double>::u, Rounding<double>::eta), frame_margin_(margin_) {
    // the bounds and the PCA frame (principal_frame) need a coordinate: d = 0 is rejected
    // here as well as in Python (a crafted file once reached principal_frame with d = 0)
    if (p.d < 1) throw std::invalid_argument("points must have d >= 1");
    perm_.resize(n_);
    std::iota(perm_.begin(), perm_.end(), index_t{0});
  }

  Query make_query(const T* normal, double b) const {
    Query q;
    q.a.assign(normal, normal + d_);
    q.na = norm_up(q.a.data(), d_);
    q.b = b;
    if (!codes_.empty()) q.coded = codes_.normal(q.a.data());
    if constexpr (std::is_same_v<T, float>)
      if ((d_ == 2 || d_ == 3) && n_ > 0) q.f32 = q.r32.make(q.a.data(), d_, b, q.na, xnorm_[0]);
    if (!frame_.empty()) {
      q.a_rot.assign(d_, 0.0);
      for (int r = 0; r < d_; ++r)  // U^T a, U stored row-major d x d (column r = axis r)
        for (int i = 0; i < d_; ++i) q.a_rot[r] += frame_[i * d_ + r] * q.a[i];
      q.shift = dot_f64(q.a.data(), mu_.data(), d_);  // <a, mu>
      q.extra = margin_(q.na, munorm_, 0.0) + 4 * Rounding<double>::u * (std::fabs(b) + std::fabs(q.shift));
    }
    return q;
  }

  const T* row(index_t k) const { return pts_.data() + k * static_cast<index_t>(d_); }

  // +1 every point of v is inside, -1 none is, 0 the bounds can't tell.
  // D > 0: d_ == D (see with_dim).
  template <int D = 0>
  HSRGEOM_INLINE int classify(std::int32_t v, const Query& q, Counters& c) const {
    if (degenerate_[v]) {
      ++c.exact;
      return exact_sign(q.a.data(), row(self().node_range(v).first), q.b, d_) >= 0 ? 1 : -1;
    }
    return bounds_.template classify<D>(v, q.frame_a(), q.na, q.b - q.shift, frame_margin_, q.extra);
  }

  // An upper bound of max <a, x> over node v, never below the exact maximum.
  // (+-inf or NaN, from an overflow, becomes +inf: nothing known, nothing pruned. A -inf
  // would prune the node against any k-th best, though its exact values are finite.)
  double upper(std::int32_t v, const Query& q) const {
    const double u = bounds_.upper(v, q.frame_a(), q.na, frame_margin_, q.extra) + q.shift;
    return std::isfinite(u) ? u : std::numeric_limits<double>::infinity();
  }

  // Exact membership of the points of leaf v: point(k) for every stored k inside; stops (and
  // returns false) when point returns false.
  template <int D = 0, class Point>
  HSRGEOM_INLINE bool test_leaf(std::int32_t v, const Query& q, Counters& c, Point&& point) const {
    const auto [b0, b1] = self().node_range(v);
    const double margin = margin_(q.na, xnorm_[v], q.b);
    c.tested += b1 - b0;
    // In chunks of 64 points: the scores and, branch-free, bit masks of the points the filter
    // puts surely inside and of those it cannot decide (filter_flags), then the inside points in
    // order. A boundary leaf mixes inside and outside points, and a branch per
    // point mispredicted: this halved the d = 2-3 counts at 1,000 outputs (docs/performance.md).
    constexpr index_t W = 64;
    double sc[W];
    const double* a = q.a.data();
    const index_t dd = D > 0 ? D : d_;
    std::int32_t tin = 0, tout = 0;
    // The leaf's codes (leaf_codes.hpp) decide most points: then only the rows of the points
    // they can't decide are read, and of the inside points when the callback takes scores.
    const bool coded = !codes_.empty() && codes_.thresholds(v, a, q.coded, q.b, margin_, &tin, &tout);
    constexpr bool kScores = std::is_invocable_v<Point&, index_t, double> &&
                             !std::is_invocable_v<Point&, index_t, detail::LeafBits>;
    // float32 rows at d = 2, 3: scored in float32 first (filter_rows32), twice the lanes; what
    // that can't decide goes through the float64 filter, then the exact predicate
    [[maybe_unused]] bool f32 = false;
    if constexpr (std::is_same_v<T, float> && (D == 2 || D == 3) && !kScores) f32 = !coded && q.f32;
    for (index_t k0 = b0; k0 < b1; k0 += W) {
      const index_t w = std::min(W, b1 - k0);
      const T* x0 = pts_.data() + k0 * dd;
      std::uint64_t in = 0, unsure = 0;
      if (coded) {
        codes_.classify(v, k0 - b0, w, q.coded, tin, tout, &in, &unsure);
        for (; unsure; unsure &= unsure - 1) {  // the shared predicate on their rows
          const int t = __builtin_ctzll(unsure);
          const T* x = x0 + t * dd;
          in |= static_cast<std::uint64_t>(in_halfspace(dot_f64<D>(a, x, d_), margin, a, x, q.b, d_, &c.exact)) << t;
        }
        if constexpr (kScores)
          for (std::uint64_t r = in; r; r &= r - 1) {
            const int t = __builtin_ctzll(r);
            sc[t] = dot_f64<D>(a, x0 + t * dd, d_);
          }
      } else {
        if constexpr ((D == 2 || D == 3) && !kScores) {  // vectorised (filter.hpp), the same bits
          int done = 0;
          if constexpr (std::is_same_v<T, float>)
            if (f32) done = filter_rows32<D>(q.r32, x0, static_cast<int>(w), in, unsure);
          if (done < w) {
            std::uint64_t in2, unsure2;
            filter_rows<D>(a, q.b, margin, x0 + done * D, static_cast<int>(w) - done, in2, unsure2);
            in |= in2 << done;
            unsure |= unsure2 << done;
          }
        } else {
          for (index_t t = 0; t < w; ++t) {
            const double s = dot_f64<D>(a, x0 + t * dd, d_);
            bool yes, undecided;
            filter_flags(s, q.b, margin, yes, undecided);
            sc[t] = s;
            in |= static_cast<std::uint64_t>(yes) << t;
            unsure |= static_cast<std::uint64_t>(undecided) << t;
          }
        }
        for (; unsure; unsure &= unsure - 1) {  // decided exactly
          const int t = __builtin_ctzll(unsure);
          if (f32) {  // (float32 scores undecided: the shared predicate, its float64 filter first)
            const T* x = x0 + t * dd;
            in |= static_cast<std::uint64_t>(in_halfspace(dot_f64<D>(a, x, d_), margin, a, x, q.b, d_, &c.exact)) << t;
            continue;
          }
          ++c.exact;
          if (exact_sign(a, x0 + t * dd, q.b, d_) >= 0) in |= std::uint64_t{1} << t;
        }
      }
      if constexpr (std::is_invocable_v<Point&, index_t, detail::LeafBits>) {  // all at once (visit)
        if (in && !point(k0, detail::LeafBits{in})) return false;
        continue;
      }
      for (; in; in &= in - 1) {
        const int t = __builtin_ctzll(in);
        const index_t k = k0 + t;
        bool go;
        if constexpr (std::is_invocable_v<Point&, index_t, double>) go = point(k, sc[t]);
        else go = point(k);
        if (!go) {
          c.tested -= b1 - k - 1;  // the points after k were not tested
          return false;
        }
      }
    }
    return true;
  }

  // Depth-first traversal. range(b0, b1) is called for stored points [b0, b1) all inside,
  // point(k) for a single stored point inside; either returns false to stop early.
  template <class Range, class Point>
  void traverse(const Query& q, Counters& c, Range&& range, Point&& point, std::int32_t root = 0) const {
    if (n_ == 0) return;
    with_dim(d_, [&](auto D) { traverse_d<decltype(D)::value>(q, c, range, point, root); });
  }
  template <int D, class Range, class Point>
  void traverse_d(const Query& q, Counters& c, Range& range, Point& point, std::int32_t root) const {
    std::vector<std::int32_t> stack;
    stack.reserve(128);
    stack.push_back(root);
    while (!stack.empty()) {
      const std::int32_t v = stack.back();
      stack.pop_back();
      if ((++c.nodes & 1023) == 0) interrupt::check();
      const int cls = classify<D>(v, q, c);
      if (cls < 0) continue;
      if (cls > 0) {
        const auto [b0, b1] = self().node_range(v);
        if constexpr (std::is_invocable_v<Range&, index_t, index_t, std::int32_t>) {
          if (!range(b0, b1, v)) return;
        } else {
          if (!range(b0, b1)) return;
        }
        continue;
      }
      if (self().each_child(v, [&](std::int32_t ch) {
            bounds_.prefetch(ch);  // loads while the siblings' subtrees are visited
            stack.push_back(ch);
          }))
        continue;
      if (!test_leaf<D>(v, q, c, point)) return;
    }
  }

  index_t vstride(int dv) const { return d_ + dv + static_cast<index_t>(d_) * dv; }
  template <class V>
  std::vector<V>& value_rows() {
    if constexpr (std::is_same_v<V, float>) return vrows_f_; else return vrows_d_;
  }
  template <class V>
  const std::vector<V>& value_rows() const {
    if constexpr (std::is_same_v<V, float>) return vrows_f_; else return vrows_d_;
  }

  // Adds node v (inside the half-space of query j) from its value sums; false when it has none,
  // or (power 1) when its bounds can't show every point at or above the shift (points in
  // between weigh 0, not <a, x> - shift: the caller adds them one by one).
  template <class V>
  bool add_node_sums(std::int32_t v, const Query& q, const SumSpec<V>& sp, index_t j, SumAcc& acc) const {
    const std::int32_t s = vslot_[v];
    if (s < 0) return false;
    const double shift = sp.power == 1 ? sp.shift[j] : 0.0;
    if (sp.power == 1 && shift > q.b &&
        (degenerate_[v] || bounds_.classify(v, q.frame_a(), q.na, shift - q.shift, frame_margin_, q.extra) <= 0))
      return false;
    const auto [b0, b1] = self().node_range(v);
    const double cnt = static_cast<double>(b1 - b0);
    const int dv = sp.dv;
    const double* c = &vdata_[s * vstride(dv)];
    const double* sv = c + d_;
    const double* mv = sv + dv;
    acc.count += b1 - b0;
    if (sp.power == 0) {
      acc.weight += cnt;
      if (dv) {
        double* out = acc.row(dv);
        for (int u = 0; u < dv; ++u) out[u] += sv[u];
      }
      return true;
    }
    const double wc = dot_f64(q.a.data(), c, d_) - shift;
    acc.weight += cnt * wc;
    if (dv) {
      double* out = acc.row(dv);
      for (int u = 0; u < dv; ++u) out[u] += wc * sv[u];
      for (int t = 0; t < d_; ++t) {
        const double at = q.a[t];
        const double* mt = mv + t * dv;
        for (int u = 0; u < dv; ++u) out[u] += at * mt[u];
      }
    }
    return true;
  }

  // Estimated work of a sum over the given subtrees, from their classification (a few per
  // query): points of undecided subtrees may cost a traversal, points of subtrees inside add a
  // row of values. Rough weights, set so that one decoding query at n = 10^6, d = 4 (~1.5 ms on
  // one thread) uses both threads and n = 2000 (~30 us) does not.
  double sum_work(const std::vector<Query>& qs, const std::vector<std::int32_t>& roots, int dv, bool node_sums) const {
    double work = 0;
    Counters c;
    for (size_t j = 0; j < qs.size() && work < kParallelWork; ++j) {
      const Query& qq = qs[j];
      for (const std::int32_t v : roots) {
        const auto [b0, b1] = self().node_range(v);
        const int cls = classify(v, qq, c);
        if (cls == 0) work += 8.0 * (b1 - b0) * d_;
        if (cls > 0) work += node_sums && vslot_[v] >= 0 ? 2.0 * vstride(dv) : 2.0 * (b1 - b0) * (dv + d_);
      }
    }
    return work;
  }

  // Disjoint subtrees covering every point: the root's descendants in breadth-first order,
  // expanded until there are at least `want` of them (or only leaves are left).
  std::vector<std::int32_t> subtrees(index_t want) const {
    std::vector<std::int32_t> out{0};
    for (size_t i = 0; i < out.size() && static_cast<index_t>(out.size()) < want;) {
      std::vector<std::int32_t> kids;
      if (!self().each_child(out[i], [&](std::int32_t ch) { kids.push_back(ch); })) {
        ++i;
        continue;
      }
      std::reverse(kids.begin(), kids.end());  // each_child gives the last child first
      out.erase(out.begin() + i);
      out.insert(out.end(), kids.begin(), kids.end());
    }
    return out;
  }

  // Bounds (on frame points f), original-frame norm bound and degeneracy (on the original points
  // p) of node v, whose points are ids[0, count) (ids == nullptr: rows 0 .. count - 1).
  template <class F>
  void summarize(std::int32_t v, const PointsView<F>& f, const PointsView<T>& p, const index_t* ids, index_t count) {
    bounds_.compute(v, f, ids, count);
    double s = 0;  // the largest sum of squares: its bound is the largest norm_up (two sqrts and a division less per point)
    bool same = true;
    const T* x0 = p.row(ids ? ids[0] : 0);
    for (index_t k = 0; k < count; ++k) {
      const T* x = p.row(ids ? ids[k] : k);
      s = std::max(s, sum_squares(x, d_));
      same = same && std::equal(x, x + d_, x0);
    }
    xnorm_[v] = count > 0 ? norm_up_of_squares(s, d_) : 0.0;
    degenerate_[v] = same;
  }

  void allocate_nodes(index_t nodes) {
    bounds_ = NodeBounds(nodes, d_);
    xnorm_.assign(nodes, 0.0);
    degenerate_.assign(nodes, 0);
  }

  // The leaves' codes (leaf_codes.hpp), for d >= kCodedMinDim (below it a leaf's point costs a few
  // multiply-adds in float64 and the codes would not pay). After store_points.
  static constexpr int kCodedMinDim = 4;
  void code_leaves(int threads) {
    if (n_ == 0 || d_ < kCodedMinDim) return;
    std::vector<std::int32_t> leaves;
    const auto nodes = static_cast<std::int32_t>(xnorm_.size());
    for (std::int32_t v = 0; v < nodes; ++v)
      if (self().each_child(v, [](std::int32_t) {}) == 0 && !degenerate_[v]) leaves.push_back(v);
    codes_.build(pts_.data(), d_, nodes, leaves, [&](std::int32_t v) { return self().node_range(v); }, threads);
  }

  // Copies the points into tree order (after perm_ is final).
  void store_points(const PointsView<T>& p) {
    pts_.resize(n_ * static_cast<index_t>(d_));
    for (index_t k = 0; k < n_; ++k) std::copy(p.row(perm_[k]), p.row(perm_[k]) + d_, &pts_[k * d_]);
  }

  // Bytes of everything but the derived class's node array.
  size_t base_memory_bytes() const {
    return pts_.size() * sizeof(T) + perm_.size() * sizeof(index_t) + xnorm_.size() * (sizeof(double) + 1) +
           vdata_.size() * sizeof(double) + vslot_.size() * sizeof(std::int32_t) +
           vrows_f_.size() * sizeof(float) + vrows_d_.size() * sizeof(double) +
           bounds_.memory_bytes() + codes_.memory_bytes() + (frame_.size() + mu_.size()) * sizeof(double);
  }

  const Derived& self() const { return static_cast<const Derived&>(*this); }

  index_t n_ = 0;
  int d_ = 0;
  Margin margin_{1, 0, 0};        // for <a, x> in double
  Margin frame_margin_{1, 0, 0};  // for the bounds' frame (== margin_ without rotation)
  std::vector<T> pts_;            // points in tree order
  std::vector<index_t> perm_;     // perm_[k] = original id of stored point k
  NodeBounds bounds_;
  std::vector<double> xnorm_;     // per node: upper bound of ||x|| in the original frame
  std::vector<std::uint8_t> degenerate_;
  LeafCodes codes_;               // the leaves' 8-bit codes (d >= kCodedMinDim)
  std::vector<double> frame_, mu_;  // frame U (d x d row-major) and mean; empty: identity
  double munorm_ = 0;
  int vdv_ = -1;                       // value columns of the node sums; -1: none
  std::vector<std::int32_t> vslot_;    // per node: its sums in vdata_, or -1
  std::vector<double> vdata_;          // per slot: mean (d), sum v (dv), sum (x - mean) v^T (d x dv)
  std::vector<float> vrows_f_;         // the values' rows in tree order (one of the two)
  std::vector<double> vrows_d_;
};

}  // namespace hsrgeom
