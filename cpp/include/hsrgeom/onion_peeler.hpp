// The onion peeler of ConvexLayers (d = 2): peels the convex layers of a point set one layer at
// a time, each layer the exact strictly convex hull (CCW) of the points not yet peeled. How a
// batch of layers avoids a pass over every live point is stated on the class below.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "hsrgeom/hull2.hpp"
#include "hsrgeom/types.hpp"

namespace hsrgeom {

// Peels convex layers. Hull vertices of the remaining set S can't lie strictly inside any polygon
// P spanned by points of S (P is inside conv(S), and a vertex of conv(S) is not interior to it),
// so a batch of layers: (1) takes points of S extreme in kDirs directions (approximately: any
// point of S will do) from a kd-tree with live counts, (2) collects the live points not strictly
// inside their hull P, shrunk (whole kd-tree boxes strictly inside P are skipped, tested with
// exact orientation), and (3) runs the monotone chain on those candidates only, layer after
// layer while the layer still holds P (see next_layer).
template <class T>
class OnionPeeler {
 public:
  static constexpr int kDirs = 32;
  static constexpr index_t kLeaf = 16;

  // `sorted`: all ids in lexicographic order of their points.
  OnionPeeler(const PointsView<T>& p, std::vector<index_t> sorted)
      : p_(p), sorted_rank_(p.n), alive_(p.n, 1), live_(p.n) {
    for (index_t r = 0; r < p.n; ++r) sorted_rank_[sorted[r]] = r;
    order_.resize(p.n);
    std::iota(order_.begin(), order_.end(), index_t{0});
    pos_.resize(p.n);
    if (p.n) build(0, p.n, 0);
    for (index_t k = 0; k < p.n; ++k) pos_[order_[k]] = k;
  }

  // The next layer (CCW ids); false when no point is left.
  //
  // Layers are peeled in batches: a batch collects once the live points not strictly inside a
  // polygon P (the hull of the extreme points, shrunk towards its centre by a factor 1 - eps), a
  // ring of candidates C, and then peels layer after layer from C alone, as long as the layer's
  // hull H contains P (checked exactly): every other live point is strictly inside P, so
  // strictly inside H, and the hull of C is the hull of all live points. When H no longer
  // contains P the next batch starts. eps adapts so that a batch yields ~kBatchLayers layers
  // (collecting costs a walk along the whole boundary of the point set; peeling a layer from C
  // costs O(|C|)). The first layer of a batch always holds P (P lies inside the polygon of
  // extreme points, whose corners are vertices of H); a batch whose first layer fails anyway
  // (rounding of the shrunk corners) is redone without a polygon, from every live point. A
  // batch without a polygon (few points left, or extreme points on a line) is one layer.
  bool next_layer(std::vector<index_t>& hull) {
    if (live_ == 0) return false;
    bool fresh = false;
    if (cand_.empty()) start_batch(false), fresh = true;
    std::vector<size_t> h;
    while (true) {
      work_ += static_cast<std::int64_t>(cand_.size());
      monotone_chain_of(cand_.size(), [&](size_t t) { return cand_[t].xy; }, h);
      if (poly_.empty() || covers(h, poly_)) break;
      start_batch(fresh);
      fresh = true;
    }
    hull.resize(h.size());
    for (size_t i = 0; i < h.size(); ++i) {
      hull[i] = cand_[h[i]].id;
      kill(hull[i]);
    }
    peeled_ += static_cast<index_t>(h.size());
    cand_.erase(std::remove_if(cand_.begin(), cand_.end(), [&](const Cand& c) { return !alive_[c.id]; }), cand_.end());
    ++batch_layers_;
    if (poly_.empty()) cand_.clear();  // no polygon (few or degenerate points): one layer per batch
    return true;
  }

  // Points handled so far: candidates collected plus candidates chained, summed over the
  // layers (the build's cost up to a log factor). Uniform data costs a few tens per point;
  // degenerate data (identical, collinear points, a few locations), whose layers hold one to a
  // few points each, costs ~n per layer, n^2 / 2 in all.
  std::int64_t work() const { return work_; }

  // True when the peel has stopped making progress: its work exceeds kStallWork per peeled
  // point plus kStallWork / 8 per point of the set (the slack pays for thick first rings). A
  // peel of non-degenerate data stays far below (measured ~40-80 per point, uniform and
  // Gaussian, 10^5-3*10^5 points); on degenerate data, whose layers hold one or a few points
  // each while every layer costs the live set, it stops after ~kStallWork / 8 layers: O(n) work
  // instead of O(n^2). (Sets of at most kStallMinPoints points are always peeled: <= 16M units.)
  static constexpr std::int64_t kStallWork = 256, kStallMinPoints = 4096;
  bool stalled() const {
    const std::int64_t n = static_cast<std::int64_t>(alive_.size());
    return n > kStallMinPoints && work_ > kStallWork * (static_cast<std::int64_t>(peeled_) + n / 8);
  }

 private:
  struct Node {
    index_t begin, end;
    std::int32_t left, right;
    double lo[2], hi[2];
    index_t live;
  };

  std::int32_t build(index_t b, index_t e, int depth) {
    const auto v = static_cast<std::int32_t>(nodes_.size());
    nodes_.push_back({b, e, -1, -1, {0, 0}, {0, 0}, e - b});
    double lo[2] = {std::numeric_limits<double>::infinity(), std::numeric_limits<double>::infinity()};
    double hi[2] = {-lo[0], -lo[1]};
    for (index_t k = b; k < e; ++k)
      for (int i = 0; i < 2; ++i) {
        const double x = static_cast<double>(p_.row(order_[k])[i]);
        lo[i] = std::min(lo[i], x);
        hi[i] = std::max(hi[i], x);
      }
    for (int i = 0; i < 2; ++i) nodes_[v].lo[i] = lo[i], nodes_[v].hi[i] = hi[i];
    if (e - b > kLeaf) {
      const int axis = (hi[0] - lo[0] >= hi[1] - lo[1]) ? 0 : 1;
      const index_t mid = b + (e - b) / 2;
      std::nth_element(order_.begin() + b, order_.begin() + mid, order_.begin() + e,
                       [&](index_t x, index_t y) { return p_.row(x)[axis] < p_.row(y)[axis]; });
      const std::int32_t l = build(b, mid, depth + 1);
      const std::int32_t r = build(mid, e, depth + 1);
      nodes_[v].left = l;
      nodes_[v].right = r;
    }
    return v;
  }

  void kill(index_t id) {
    alive_[id] = 0;
    --live_;
    const index_t k = pos_[id];
    std::int32_t v = 0;
    while (true) {
      --nodes_[v].live;
      const Node& nd = nodes_[v];
      if (nd.left < 0) break;
      v = k < nodes_[nd.left].end ? nd.left : nd.right;
    }
  }

  // A live point (approximately) maximising <u, x>.
  index_t extreme(const double* u) const {
    index_t best = -1;
    double best_s = -std::numeric_limits<double>::infinity();
    std::int32_t stack[128];
    int top = 0;
    stack[top++] = 0;
    while (top) {
      const Node& nd = nodes_[stack[--top]];
      if (nd.live == 0) continue;
      const double ub = std::max(u[0] * nd.lo[0], u[0] * nd.hi[0]) + std::max(u[1] * nd.lo[1], u[1] * nd.hi[1]);
      if (ub <= best_s) continue;
      if (nd.left < 0) {
        for (index_t k = nd.begin; k < nd.end; ++k) {
          const index_t id = order_[k];
          if (!alive_[id]) continue;
          const double s = u[0] * static_cast<double>(p_.row(id)[0]) + u[1] * static_cast<double>(p_.row(id)[1]);
          if (s > best_s) best_s = s, best = id;
        }
        continue;
      }
      // visit the more promising child first
      const Node& l = nodes_[nd.left];
      const Node& r = nodes_[nd.right];
      const double ul = std::max(u[0] * l.lo[0], u[0] * l.hi[0]) + std::max(u[1] * l.lo[1], u[1] * l.hi[1]);
      const double ur = std::max(u[0] * r.lo[0], u[0] * r.hi[0]) + std::max(u[1] * r.lo[1], u[1] * r.hi[1]);
      if (ul > ur) stack[top++] = nd.right, stack[top++] = nd.left;
      else stack[top++] = nd.left, stack[top++] = nd.right;
    }
    return best;
  }

  // Hull (CCW, strictly convex) of the extreme points in kDirs directions; empty if degenerate.
  void inner_polygon(std::vector<std::array<double, 2>>& poly) const {
    std::vector<index_t> ext;
    for (int t = 0; t < kDirs; ++t) {
      const double ang = 2 * 3.14159265358979323846 * t / kDirs;
      const double u[2] = {std::cos(ang), std::sin(ang)};
      const index_t id = extreme(u);
      if (id >= 0) ext.push_back(id);
    }
    std::sort(ext.begin(), ext.end(), [&](index_t a, index_t b) { return sorted_rank_[a] < sorted_rank_[b]; });
    ext.erase(std::unique(ext.begin(), ext.end()), ext.end());
    std::vector<index_t> h;
    monotone_chain(p_, ext, h);
    poly.clear();
    if (h.size() < 3) return;
    for (index_t id : h) poly.push_back({static_cast<double>(p_.row(id)[0]), static_cast<double>(p_.row(id)[1])});
  }

  // New candidates: the live points not strictly inside the shrunk polygon of extreme points
  // (every live point when `whole`, or when there are few), sorted lexicographically.
  void start_batch(bool whole) {
    if (batch_layers_ > 0 && !poly_.empty())  // the previous batch's yield steers the ring's width
      eps_ = std::min(0.5, std::max(1e-9, eps_ * std::min(4.0, std::max(0.25, double(kBatchLayers) / batch_layers_))));
    batch_layers_ = 0;
    poly_.clear();
    if (!whole && live_ > 64) {
      inner_polygon(poly_);
      double c[2] = {0, 0};
      for (const auto& v : poly_) c[0] += v[0] / poly_.size(), c[1] += v[1] / poly_.size();
      for (auto& v : poly_)
        for (int i = 0; i < 2; ++i) v[i] = c[i] + (1 - eps_) * (v[i] - c[i]);
    }
    std::vector<index_t> ids;
    collect(0, poly_, ids);
    work_ += static_cast<std::int64_t>(ids.size());
    std::sort(ids.begin(), ids.end(), [&](index_t a, index_t b) { return sorted_rank_[a] < sorted_rank_[b]; });
    cand_.resize(ids.size());
    for (size_t t = 0; t < ids.size(); ++t)
      cand_[t] = {{static_cast<double>(p_.row(ids[t])[0]), static_cast<double>(p_.row(ids[t])[1])}, ids[t]};
  }

  // Every corner of poly inside or on the strictly convex CCW polygon of the candidates at
  // positions `hull`, exactly.
  bool covers(const std::vector<size_t>& hull, const std::vector<std::array<double, 2>>& poly) const {
    const size_t h = hull.size();
    if (h < 3) return false;
    for (const auto& v : poly)
      for (size_t i = 0; i < h; ++i)
        if (orient2d(cand_[hull[i]].xy, cand_[hull[i + 1 == h ? 0 : i + 1]].xy, v.data()) < 0) return false;
    return true;
  }

  bool strictly_inside(const std::vector<std::array<double, 2>>& poly, const double* x) const {
    const size_t h = poly.size();
    for (size_t i = 0; i < h; ++i)
      if (orient2d(poly[i].data(), poly[(i + 1) % h].data(), x) <= 0) return false;
    return true;
  }

  void collect(std::int32_t v, const std::vector<std::array<double, 2>>& poly, std::vector<index_t>& out) const {
    const Node& nd = nodes_[v];
    if (nd.live == 0) return;
    if (!poly.empty()) {
      const double c[4][2] = {{nd.lo[0], nd.lo[1]}, {nd.hi[0], nd.lo[1]}, {nd.hi[0], nd.hi[1]}, {nd.lo[0], nd.hi[1]}};
      bool all = true;
      for (int i = 0; i < 4 && all; ++i) all = strictly_inside(poly, c[i]);
      if (all) return;  // a convex polygon containing the corners contains the box
    }
    if (nd.left < 0) {
      for (index_t k = nd.begin; k < nd.end; ++k) {
        const index_t id = order_[k];
        if (!alive_[id]) continue;
        const double x[2] = {static_cast<double>(p_.row(id)[0]), static_cast<double>(p_.row(id)[1])};
        if (poly.empty() || !strictly_inside(poly, x)) out.push_back(id);
      }
      return;
    }
    collect(nd.left, poly, out);
    collect(nd.right, poly, out);
  }

  static constexpr int kBatchLayers = 32;  // layers a batch of candidates aims to yield
  PointsView<T> p_;
  struct Cand {
    double xy[2];
    index_t id;
  };
  std::vector<Cand> cand_;                    // the current batch's live candidates, sorted
  std::vector<std::array<double, 2>> poly_;   // its shrunk polygon (empty: every live point)
  double eps_ = 0.01;                         // how much the polygon is shrunk
  index_t batch_layers_ = 0;                  // layers the current batch has yielded
  std::int64_t work_ = 0;                     // see work()
  index_t peeled_ = 0;                        // points on the layers returned so far
  std::vector<index_t> sorted_rank_, order_, pos_;
  std::vector<std::uint8_t> alive_;
  index_t live_;
  std::vector<Node> nodes_;
};

}  // namespace hsrgeom
