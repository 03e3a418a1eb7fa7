// ConvexLayers3 (d = 3): onion layers of 3-D convex hulls, searched along hull edges.
//
// Layer 0 is the convex hull of all points, layer 1 the hull of the rest, ... Each layer keeps
// its hull vertices and the hull's edges (adjacency in CSR). Every point of a deeper layer lies in
// the hull of each earlier one, so a query {<a, x> >= b}, for each layer from the outside in:
//   1. finds the layer's vertex maximising <a, x> by hill-climbing along hull edges (exact
//      comparisons; on a triangulated convex surface the vertices with <a, x> >= c are connected
//      for every c, so a vertex with no strictly better neighbour whose equal-valued plateau has
//      no strictly better neighbour either is a global maximum);
//   2. stops if that vertex is outside: every deeper point is in this hull, hence outside too;
//   3. reports the layer's vertices inside by a search over hull edges from it (they are
//      connected, by the same fact).
// Peeling every layer costs O(n) per layer (about n^(1/2) layers for uniform points), so the
// build peels at most `max_layers` layers and stops early once it reaches a deep "guard"
// polytope; the remaining points (and any flat remainder: coplanar, collinear, < 4 points) form
// a core searched by a PartitionTree, reached only when every layer's extreme vertex is inside.
//
// Exactness: hulls use the exact orient3d of hull3.hpp, so layers are exactly nested; every point
// reported passed the shared predicate; walk comparisons are exact (compare_dots).
//
// Build speed-up ("guard"): R = a few sample points at the 1 - kGuardFraction quantile in kGuardDirs
// directions. While no point of R has been peeled, conv(R) lies inside the hull of the remaining
// points, so a point strictly inside conv(R) (decided by the orientation filter alone; unsure
// means "keep") can't be a vertex of the next layer and is not given to Quickhull. Once a layer
// contains a point of R, peeling stops.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

#include "hsrgeom/hull3.hpp"
#include "hsrgeom/interrupt.hpp"
#include "hsrgeom/parallel.hpp"
#include "hsrgeom/partition_tree.hpp"
#include "hsrgeom/predicate.hpp"
#include "hsrgeom/progress.hpp"
#include "hsrgeom/query.hpp"
#include "hsrgeom/report.hpp"
#include "hsrgeom/topk.hpp"
#include "hsrgeom/types.hpp"

namespace hsrgeom {

// Roughly uniform unit directions (a Fibonacci sphere).
inline std::vector<double> sphere_directions(int k) {
  std::vector<double> u(3 * k);
  const double golden = 3.14159265358979323846 * (3.0 - std::sqrt(5.0));
  for (int i = 0; i < k; ++i) {
    const double z = 1.0 - 2.0 * (i + 0.5) / k, r = std::sqrt(std::max(0.0, 1.0 - z * z));
    u[3 * i] = r * std::cos(golden * i);
    u[3 * i + 1] = r * std::sin(golden * i);
    u[3 * i + 2] = z;
  }
  return u;
}

template <class T>
class ConvexLayers3 : public QueryMethods<ConvexLayers3<T>, T> {
 public:
  static constexpr int kStartDirs = 32;          // start table of layer 0
  static constexpr int kGuardDirs = 64;          // directions of the guard polytope
  static constexpr double kGuardFraction = 0.1;  // fraction of a sample beyond each guard point
  static constexpr index_t kGuardMinN = 4096;    // no guard below this n
  static constexpr index_t kSample = 20000;

  ConvexLayers3() = default;
  ConvexLayers3(PointsView<T> p, index_t max_layers, int threads) : n_(p.n), max_layers_(max_layers) {
    if (p.d != 3) throw std::invalid_argument("ConvexLayers3 needs d = 3");
    std::vector<double> X(3 * n_);
    for (index_t i = 0; i < 3 * n_; ++i) X[i] = static_cast<double>(p.data[i]);
    std::vector<std::uint8_t> peeled(n_, 0), guard(n_, 0);
    std::vector<index_t> pool = guard_pool(X, guard);
    std::vector<double> buf;
    std::vector<std::int32_t> local(n_, -1);
    layer_start_.push_back(0);
    adj_start_.push_back(0);
    std::vector<double> vnormal;  // per stored vertex: sum of its faces' unit normals
    BuildProgress progress("ConvexLayers3", n_, 3);
    while (layers() < max_layers_ && pool.size() >= 4) {
      interrupt::check();
      progress.tick("%lld layers (at most %lld), %lld points peeled", static_cast<long long>(layers()),
                    static_cast<long long>(max_layers_), static_cast<long long>(ids_.size()));
      buf.resize(3 * pool.size());
      for (size_t i = 0; i < pool.size(); ++i)
        for (int k = 0; k < 3; ++k) buf[3 * i + k] = X[3 * pool[i] + k];
      Quickhull qh(buf.data(), static_cast<std::int32_t>(pool.size()));
      if (!qh.run()) break;  // flat remainder: goes to the core
      bool hit_guard = false;
      const index_t base = static_cast<index_t>(ids_.size());
      std::vector<std::int32_t> verts;  // local (pool) indices, in order of first appearance
      for (const auto& f : qh.faces()) {
        if (!f.alive) continue;
        for (int k = 0; k < 3; ++k)
          if (local[f.v[k]] < 0) {
            local[f.v[k]] = static_cast<std::int32_t>(base + verts.size());
            verts.push_back(f.v[k]);
          }
      }
      // adjacency: each face edge (u, v) once per direction over the two faces sharing it
      std::vector<std::int32_t> deg(verts.size() + 1, 0);
      for (const auto& f : qh.faces())
        if (f.alive)
          for (int k = 0; k < 3; ++k) ++deg[local[f.v[k]] - base + 1];
      for (size_t i = 0; i < verts.size(); ++i) adj_start_.push_back(adj_start_.back() + deg[i + 1]);
      adj_.resize(adj_start_.back());
      vnormal.resize(3 * (base + verts.size()), 0.0);
      std::vector<index_t> fill(verts.size(), 0);
      for (size_t fi = 0; fi < qh.faces().size(); ++fi) {
        const auto& f = qh.faces()[fi];
        if (!f.alive) continue;
        const double* nf = qh.normal(static_cast<std::int32_t>(fi));
        const double len = std::sqrt(nf[0] * nf[0] + nf[1] * nf[1] + nf[2] * nf[2]);
        for (int k = 0; k < 3; ++k) {
          const index_t u = local[f.v[k]], v = local[f.v[(k + 1) % 3]];
          adj_[adj_start_[u] + fill[u - base]++] = static_cast<std::int32_t>(v);
          if (len > 0)
            for (int c = 0; c < 3; ++c) vnormal[3 * u + c] += nf[c] / len;
        }
      }
      for (std::int32_t v : verts) {
        const index_t id = pool[v];
        ids_.push_back(id);
        for (int k = 0; k < 3; ++k) xyz_.push_back(p.row(id)[k]);
        peeled[id] = 1;
        hit_guard |= guard[id] != 0;
        local[v] = -1;
      }
      layer_start_.push_back(static_cast<index_t>(ids_.size()));
      pool.erase(std::remove_if(pool.begin(), pool.end(), [&](index_t id) { return peeled[id] != 0; }), pool.end());
      if (hit_guard) break;
    }
    if (ids_.size() >= static_cast<size_t>(std::numeric_limits<std::int32_t>::max()))
      throw std::length_error("ConvexLayers3: too many hull vertices");
    xnorm_.resize(ids_.size());
    for (size_t k = 0; k < ids_.size(); ++k) xnorm_[k] = norm_up(&xyz_[3 * k], 3);
    build_starts(vnormal);
    // the core: every point not peeled, in ascending id order (core id order = id order)
    std::vector<T> core_pts;
    for (index_t id = 0; id < n_; ++id)
      if (!peeled[id]) {
        core_ids_.push_back(id);
        for (int k = 0; k < 3; ++k) core_pts.push_back(p.row(id)[k]);
      }
    const index_t nc = static_cast<index_t>(core_ids_.size());
    core_ = PartitionTree<T>({core_pts.data(), nc, 3}, 32, SplitRule::Widest, threads);
    core_pos_.resize(nc);
    for (index_t k = 0; k < nc; ++k) core_pos_[core_.stored_id(k)] = k;
    progress.done("done: %lld layers, a core of %lld points", static_cast<long long>(layers()), static_cast<long long>(nc));
  }

  index_t size() const { return n_; }
  int dim() const { return 3; }
  index_t layers() const { return static_cast<index_t>(layer_start_.size()) - 1; }
  index_t max_layers() const { return max_layers_; }
  index_t layer_points() const { return static_cast<index_t>(ids_.size()); }
  index_t core_size() const { return static_cast<index_t>(core_ids_.size()); }
  std::vector<index_t> layer_sizes() const {
    std::vector<index_t> s(layers());
    for (index_t l = 0; l < layers(); ++l) s[l] = layer_start_[l + 1] - layer_start_[l];
    return s;
  }
  size_t memory_bytes() const {
    return xyz_.size() * sizeof(T) + (ids_.size() + layer_start_.size() + adj_start_.size() + core_ids_.size() +
                                      core_pos_.size()) * sizeof(index_t) +
           (adj_.size() + link_.size() + start_.size()) * sizeof(std::int32_t) + xnorm_.size() * sizeof(double) +
           core_.memory_bytes();
  }
  std::vector<T> original_points() const {
    std::vector<T> out(3 * n_);
    for (size_t k = 0; k < ids_.size(); ++k) std::copy(&xyz_[3 * k], &xyz_[3 * k] + 3, &out[3 * ids_[k]]);
    for (index_t k = 0; k < core_size(); ++k)
      std::copy(core_.stored_row(k), core_.stored_row(k) + 3, &out[3 * core_ids_[core_.stored_id(k)]]);
    return out;
  }

  // The query concept (query.hpp; report, count, empty, sum, topk come from QueryMethods).
  using Query = SmallQuery<T, 3>;
  Query prepare(const T* normal, double b) const { return Query::make(normal, b); }

  // The half-space traversal (query.hpp): layer vertices and core points one by one.
  template <class Sink>
  void visit(const Query& q, Counters& c, Sink& sink) const {
    visit(q.normal_t, q.b, scratch(), c, [&](std::int64_t id, const T* x) { return sink.point(id, x, kNoScore); });
  }

  // Exact top-k. With at least k layers: the extreme vertices of the first k layers are k points,
  // the one of layer i at least as good as every deeper point, so min over them of a lower bound
  // of <a, x> is <= the exact k-th best; a visit with that threshold (ties included, core
  // included) gives every candidate, ranked exactly. With fewer layers: all layer points plus the
  // core's own exact top-k (core ids ascend with ids, so its tie-break agrees).
  using TopKRow = T;
  void visit_topk(const T* qt, Counters& c, TopKSink<T>& sink) const {
    const index_t k = sink.col.k();
    const double* a = sink.a;
    const Margin mg(3, Rounding<double>::u, Rounding<double>::eta);
    const double na = norm_up(a, 3);
    Scratch& s = scratch();
    auto push = [&](std::int64_t id, const T* x) { return sink.point(id, x, kNoScore); };
    if (layers() >= k) {
      double lower = std::numeric_limits<double>::infinity();
      index_t e = -1;
      for (index_t l = 0; l < k; ++l) {
        e = climb(start_vertex(l, e, a), a, s, c);
        const T* x = &xyz_[3 * e];
        const double sx = a[0] * x[0] + a[1] * x[1] + a[2] * x[2];
        // an overflowed sx (+-inf, NaN) bounds nothing: -inf (std::min would drop a NaN)
        const double lo = std::isfinite(sx) ? sx - mg(na, xnorm_[e], 0.0) : -std::numeric_limits<double>::infinity();
        lower = std::min(lower, lo);
      }
      if (lower >= -std::numeric_limits<double>::max()) {  // else no float64 threshold works: below
        visit(qt, lower, s, c, push);
        return;
      }
    }
    for (index_t t = 0; t < layer_points(); ++t) push(ids_[t], &xyz_[3 * t]);
    c.tested += layer_points();
    const index_t kc = std::min(k, core_size());
    std::vector<double> cs(kc);
    std::vector<std::int64_t> ci(kc);
    if (kc > 0) core_.topk(qt, 1, kc, cs.data(), ci.data(), nullptr, 1);
    for (index_t r = 0; r < kc; ++r) push(core_ids_[ci[r]], core_.stored_row(core_pos_[ci[r]]));
  }

  double query_work(index_t m) const { return static_cast<double>(m) * 256 * std::log2(2.0 + n_); }

 private:
  struct Scratch {
    std::vector<std::uint32_t> mark;
    std::uint32_t epoch = 0;
    std::vector<std::int32_t> queue;
    std::uint32_t next(size_t size) {
      if (mark.size() < size) mark.assign(size, 0);
      if (++epoch == 0) {
        std::fill(mark.begin(), mark.end(), 0);
        epoch = 1;
      }
      queue.clear();
      return epoch;
    }
  };

  // The running thread's scratch of a query (marks of the vertices seen; any instance may use it:
  // every query takes a new epoch, and the marks grow to the largest instance). Not inlined: the
  // traversal then holds a plain reference, not a thread_local it would look up at every access
  // (__tls_get_addr in a shared library).
  __attribute__((noinline)) static Scratch& scratch() {
    static thread_local Scratch s;
    return s;
  }

  // Picks the guard polytope R (see the top of the file) and returns the ids not surely
  // strictly inside conv(R); marks R in `guard`.
  std::vector<index_t> guard_pool(const std::vector<double>& X, std::vector<std::uint8_t>& guard) const {
    std::vector<index_t> all(n_);
    std::iota(all.begin(), all.end(), index_t{0});
    if (n_ < kGuardMinN) return all;
    std::mt19937_64 rng(12345);
    const index_t s = std::min(n_, kSample);
    std::vector<index_t> sample(s);
    for (auto& i : sample) i = static_cast<index_t>(rng() % static_cast<std::uint64_t>(n_));
    double c[3] = {0, 0, 0};
    for (index_t i : sample)
      for (int k = 0; k < 3; ++k) c[k] += X[3 * i + k] / s;
    const std::vector<double> dirs = sphere_directions(kGuardDirs);
    std::vector<std::pair<double, index_t>> proj(s);
    std::vector<index_t> R;
    const index_t q = static_cast<index_t>((1.0 - kGuardFraction) * (s - 1));
    const index_t band = std::max<index_t>(1, s / 100);
    for (int t = 0; t < kGuardDirs; ++t) {
      const double* u = &dirs[3 * t];
      for (index_t r = 0; r < s; ++r) {
        const double* x = &X[3 * sample[r]];
        proj[r] = {u[0] * (x[0] - c[0]) + u[1] * (x[1] - c[1]) + u[2] * (x[2] - c[2]), sample[r]};
      }
      // the band of sample ranks around the quantile; in it, the point nearest the axis c + t u
      const index_t lo = std::max<index_t>(0, q - band), hi = std::min<index_t>(s, q + band + 1);
      std::nth_element(proj.begin(), proj.begin() + lo, proj.end());
      std::nth_element(proj.begin() + lo, proj.begin() + (hi - 1), proj.end());
      index_t best = -1;
      double best_d = std::numeric_limits<double>::infinity();
      for (index_t r = lo; r < hi; ++r) {
        const double* x = &X[3 * proj[r].second];
        double d2 = 0;
        for (int k = 0; k < 3; ++k) {
          const double w = x[k] - c[k] - proj[r].first * u[k];
          d2 += w * w;
        }
        if (d2 < best_d) best_d = d2, best = proj[r].second;
      }
      if (best >= 0) R.push_back(best);
    }
    std::sort(R.begin(), R.end());
    R.erase(std::unique(R.begin(), R.end()), R.end());
    std::vector<double> rx(3 * R.size());
    for (size_t i = 0; i < R.size(); ++i)
      for (int k = 0; k < 3; ++k) rx[3 * i + k] = X[3 * R[i] + k];
    Quickhull qh(rx.data(), static_cast<std::int32_t>(R.size()));
    if (!qh.run()) return all;
    std::vector<OrientPlane> planes;
    for (const auto& f : qh.faces())
      if (f.alive) {
        planes.emplace_back(&rx[3 * f.v[0]], &rx[3 * f.v[1]], &rx[3 * f.v[2]]);
        for (int k = 0; k < 3; ++k) guard[R[f.v[k]]] = 1;
      }
    std::vector<index_t> pool;
    size_t last = 0;  // the plane that rejected the previous point: neighbours tend to agree
    for (index_t i = 0; i < n_; ++i) {
      const double* x = &X[3 * i];
      bool inside = planes[last].filtered(x) < 0;
      for (size_t f = 0; f < planes.size() && inside; ++f)
        if (planes[f].filtered(x) >= 0) inside = false, last = f;
      if (!inside || guard[i]) pool.push_back(i);
    }
    return pool;
  }

  // Start vertices: layer 0 from a table of extreme vertices in fixed directions; layer l + 1
  // from link_[v], the vertex of layer l + 1 extreme (approximately) in the mean normal of v.
  void build_starts(const std::vector<double>& vnormal) {
    dirs_ = sphere_directions(kStartDirs);
    link_.assign(ids_.size(), 0);
    if (layers() == 0) return;
    start_.resize(kStartDirs);
    for (int t = 0; t < kStartDirs; ++t) start_[t] = approx_climb(0, &dirs_[3 * t]);
    for (index_t l = 0; l + 1 < layers(); ++l) {
      std::int32_t from = static_cast<std::int32_t>(layer_start_[l + 1]);
      for (index_t v = layer_start_[l]; v < layer_start_[l + 1]; ++v)
        from = link_[v] = approx_climb(from, &vnormal[3 * v]);
    }
  }

  // Greedy climb in rounded arithmetic (build only: any start vertex is correct).
  std::int32_t approx_climb(std::int32_t v, const double* u) const {
    auto val = [&](std::int32_t k) {
      return u[0] * static_cast<double>(xyz_[3 * k]) + u[1] * static_cast<double>(xyz_[3 * k + 1]) +
             u[2] * static_cast<double>(xyz_[3 * k + 2]);
    };
    for (bool moved = true; moved;) {
      moved = false;
      for (index_t e = adj_start_[v]; e < adj_start_[v + 1]; ++e)
        if (val(adj_[e]) > val(v)) {
          v = adj_[e];
          moved = true;
          break;
        }
    }
    return v;
  }

  index_t start_vertex(index_t l, index_t prev, const double* a) const {
    if (l > 0) return link_[prev];
    int best = 0;
    double bv = -std::numeric_limits<double>::infinity();
    for (int t = 0; t < kStartDirs; ++t) {
      const double v = a[0] * dirs_[3 * t] + a[1] * dirs_[3 * t + 1] + a[2] * dirs_[3 * t + 2];
      if (v > bv) bv = v, best = t;
    }
    return start_[best];
  }

  // Exact hill-climb to a vertex maximising <a, x> on its layer (see the top of the file).
  index_t climb(index_t v, const double* a, Scratch& s, Counters& c) const {
    auto cmp = [&](index_t i, index_t j) { return compare_dots(a, &xyz_[3 * i], &xyz_[3 * j], 3); };
    while (true) {
      ++c.nodes;
      index_t up = -1;
      bool tie = false;
      for (index_t e = adj_start_[v]; e < adj_start_[v + 1] && up < 0; ++e) {
        const int r = cmp(adj_[e], v);
        if (r > 0) up = adj_[e];
        tie |= r == 0;
      }
      if (up < 0 && tie) {  // a plateau: search it for a strictly better neighbour
        const std::uint32_t ep = s.next(ids_.size());
        s.mark[v] = ep;
        s.queue.push_back(static_cast<std::int32_t>(v));
        for (size_t h = 0; h < s.queue.size() && up < 0; ++h)
          for (index_t e = adj_start_[s.queue[h]]; e < adj_start_[s.queue[h] + 1] && up < 0; ++e) {
            const std::int32_t w = adj_[e];
            if (s.mark[w] == ep) continue;
            const int r = cmp(w, v);
            if (r > 0) up = w;
            if (r == 0) s.mark[w] = ep, s.queue.push_back(w);
          }
      }
      if (up < 0) return v;
      v = up;
    }
  }

  // Calls out(id, x) for every point with <a, x> >= b; out returns false to stop.
  template <class Out>
  void visit(const T* normal, double b, Scratch& s, Counters& c, Out&& out) const {
    const double a[3] = {static_cast<double>(normal[0]), static_cast<double>(normal[1]), static_cast<double>(normal[2])};
    const Margin mg(3, Rounding<double>::u, Rounding<double>::eta);
    const double na = norm_up(a, 3);
    auto inside = [&](index_t k) {
      ++c.tested;
      const T* x = &xyz_[3 * k];
      const double sx = a[0] * x[0] + a[1] * x[1] + a[2] * x[2];
      return in_halfspace(sx, mg(na, xnorm_[k], b), a, x, b, 3, &c.exact);
    };
    const bool zero = a[0] == 0 && a[1] == 0 && a[2] == 0;
    index_t e = -1;
    for (index_t l = 0; l < layers(); ++l) {
      if (zero) {  // every point or none
        if (0 < b) return;
        for (index_t k = layer_start_[l]; k < layer_start_[l + 1]; ++k)
          if (!out(ids_[k], &xyz_[3 * k])) return;
        continue;
      }
      e = climb(start_vertex(l, e, a), a, s, c);
      if (!inside(e)) return;
      if (!out(ids_[e], &xyz_[3 * e])) return;
      const std::uint32_t ep = s.next(ids_.size());
      s.mark[e] = ep;
      s.queue.push_back(static_cast<std::int32_t>(e));
      for (size_t h = 0; h < s.queue.size(); ++h)
        for (index_t t = adj_start_[s.queue[h]]; t < adj_start_[s.queue[h] + 1]; ++t) {
          const std::int32_t w = adj_[t];
          if (s.mark[w] == ep) continue;
          s.mark[w] = ep;
          if (!inside(w)) continue;
          if (!out(ids_[w], &xyz_[3 * w])) return;
          s.queue.push_back(w);
        }
    }
    core_.visit(normal, b, c,
                [&](index_t b0, index_t b1) {
                  for (index_t k = b0; k < b1; ++k)
                    if (!out(core_ids_[core_.stored_id(k)], core_.stored_row(k))) return false;
                  return true;
                },
                [&](index_t k) { return out(core_ids_[core_.stored_id(k)], core_.stored_row(k)); });
  }

  index_t n_ = 0, max_layers_ = 0;
  std::vector<index_t> layer_start_;  // vertices of layer l: stored [layer_start_[l], layer_start_[l+1])
  std::vector<index_t> ids_;          // original id of each stored vertex
  std::vector<T> xyz_;                // its coordinates (exact copies)
  std::vector<double> xnorm_;         // its norm, rounded up
  std::vector<index_t> adj_start_;    // hull edges of stored vertex k: adj_[adj_start_[k] .. adj_start_[k+1])
  std::vector<std::int32_t> adj_;
  std::vector<std::int32_t> link_;    // start vertex in layer l + 1 for a walk that ended at k
  std::vector<std::int32_t> start_;   // layer 0: extreme vertex for each of dirs_
  std::vector<double> dirs_;
  std::vector<index_t> core_ids_;     // core id -> original id (ascending)
  std::vector<index_t> core_pos_;     // core id -> stored position in core_
  PartitionTree<T> core_;
};

}  // namespace hsrgeom
