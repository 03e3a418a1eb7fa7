// Conservative bounds of <a, y> over the points y of a node: an axis-aligned box and a ball.
// (y are the stored points, or their coordinates in a rotated frame: see PartitionTree.)
//
// Box: the exact coordinate-wise min/max of the node's points (as doubles: exact for float32
// and float64 input). Over the box, min <a,x> = sum_i min(a_i lo_i, a_i hi_i) exactly; its rounded value
// is within gamma_{d} * ||a|| * ||corner|| of that, and ||corner|| <= bnorm (the norm of the
// farthest corner, rounded up).
// Ball: center c (double, the centroid) and radius r >= max ||x - c|| (rounded up), so
// <a,x> lies in <a,c> -/+ ||a|| r; the rounding of that is within gamma * ||a|| (||c|| + r).
// Decisions use the shared Margin (predicate.hpp): a node is "all in" or "all out" only if the
// rounded bound clears the threshold by more than the margin. A node whose points are all
// identical ("degenerate") is decided by one exact test of its first point.
// A node's bounds are one record of whole cache lines (a traversal prefetches its children's).
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "hsrgeom/dispatch.hpp"
#include "hsrgeom/predicate.hpp"
#include "hsrgeom/types.hpp"

namespace hsrgeom {

class NodeBounds {
 public:
  NodeBounds() = default;
  NodeBounds(index_t nodes, int d)
      : d_(d), lines_((3 * static_cast<index_t>(d) + 3 + 7) / 8), rec_(static_cast<size_t>(nodes * lines_)) {}

  int dim() const { return d_; }
  size_t memory_bytes() const { return rec_.size() * sizeof(Line); }

  // Computes the bounds of node `v` from the points ids[0..count) of `pts`.
  template <class P>
  void compute(index_t v, const PointsView<P>& pts, const index_t* ids, index_t count) {
    double* lo = lo_of(v);
    double* hi = hi_of(v);
    double* c = center_of(v);
    const P* x0 = pts.row(ids ? ids[0] : 0);
    std::copy(x0, x0 + d_, lo);
    std::copy(x0, x0 + d_, hi);
    std::fill(c, c + d_, 0.0);
    for (index_t k = 0; k < count; ++k) {
      const P* x = pts.row(ids ? ids[k] : k);
      for (int i = 0; i < d_; ++i) {
        lo[i] = std::min(lo[i], static_cast<double>(x[i]));
        hi[i] = std::max(hi[i], static_cast<double>(x[i]));
        c[i] += static_cast<double>(x[i]);
      }
    }
    double bn = 0;
    for (int i = 0; i < d_; ++i) {
      c[i] /= static_cast<double>(count);
      // the centroid rounds, but it only has to be *a* center: clamp it into the box
      c[i] = std::min(std::max(c[i], lo[i]), hi[i]);
      const double m = std::max(std::fabs(lo[i]), std::fabs(hi[i]));
      bn += m * m;
    }
    double r2 = 0;
    for (index_t k = 0; k < count; ++k) {
      const P* x = pts.row(ids ? ids[k] : k);
      r2 = std::max(r2, sum_squares(x, d_, c));  // (rounded up below for any order of summation)
    }
    const double up = 1.0 + 4.0 * gamma_k(d_ + 4, Rounding<double>::u);
    const double tiny = std::sqrt(static_cast<double>(d_)) * 4 * std::sqrt(Rounding<double>::eta);
    double* r = rec(v);
    r[kRadius] = std::sqrt(r2) * up + tiny;
    r[kBnorm] = std::sqrt(bn) * up + tiny;
    r[kCnorm] = norm_up(c, d_);
  }

  double bnorm(index_t v) const { return rec(v)[kBnorm]; }
  const double* lo(index_t v) const { return rec(v) + kScalars; }
  const double* hi(index_t v) const { return lo(v) + d_; }

  // Starts loading node v's bounds (a traversal calls it for the children it will visit next).
  void prefetch(index_t v) const {
    const Line* l = &rec_[static_cast<size_t>(v * lines_)];
    for (index_t i = 0; i < lines_; ++i) __builtin_prefetch(l + i);
  }

  // +1: every point of v is in {<a,y> >= b}; -1: none is; 0: can't tell from the bounds.
  // D > 0: the dimension is D (a compile-time constant, see with_dim).
  template <int D = 0>
  HSRGEOM_INLINE int classify(index_t v, const double* a, double na, double b, const Margin& mg,
               double extra = 0) const {
    const double* r = rec(v);
    double blo, bhi;
    box_range<D>(r, a, blo, bhi);
    const double mbox = mg(na, r[kBnorm], b) + extra;
    if (bhi - b < -mbox) return -1;
    if (blo - b > mbox) return 1;
    const double ac = dot<D>(r, a), rr = na * r[kRadius];
    const double mball = mg(na, r[kCnorm] + r[kRadius], b) + extra;
    if (ac + rr - b < -mball) return -1;
    if (ac - rr - b > mball) return 1;
    return 0;
  }

  // An upper bound of max <a, y> over the node that is never below the exact maximum.
  double upper(index_t v, const double* a, double na, const Margin& mg, double extra = 0) const {
    const double* r = rec(v);
    double blo, bhi;
    box_range(r, a, blo, bhi);
    const double ubox = bhi + mg(na, r[kBnorm], 0.0);
    const double uball = dot(r, a) + na * r[kRadius] + mg(na, r[kCnorm] + r[kRadius], 0.0);
    return std::min(ubox, uball) + extra;
  }

 private:
  // One record per node, in whole cache lines: the scalars, then lo, hi and the center (d each).
  // (Six arrays before: a node's classification touched six cache lines in six places.)
  struct alignas(64) Line {
    double v[8];
  };
  enum { kBnorm = 0, kRadius = 1, kCnorm = 2, kScalars = 3 };
  const double* rec(index_t v) const { return rec_[static_cast<size_t>(v * lines_)].v; }
  double* rec(index_t v) { return rec_[static_cast<size_t>(v * lines_)].v; }
  double* lo_of(index_t v) { return rec(v) + kScalars; }
  double* hi_of(index_t v) { return lo_of(v) + d_; }
  double* center_of(index_t v) { return lo_of(v) + 2 * d_; }

  template <int D = 0>
  HSRGEOM_INLINE void box_range(const double* r, const double* a, double& mn, double& mx) const {
    const int d = D > 0 ? D : d_;
    const double* lo = r + kScalars;
    const double* hi = lo + d;
    double lo_sum = 0, hi_sum = 0;  // any summation order is covered by the margin
    auto term = [&](int i) {
      const double p = a[i] * lo[i], q = a[i] * hi[i];
      lo_sum += std::min(p, q);
      hi_sum += std::max(p, q);
    };
    if constexpr (D > 0) {  // straight-line code
      for (int i = 0; i < D; ++i) term(i);
    } else {
#pragma omp simd reduction(+ : lo_sum, hi_sum)
      for (int i = 0; i < d; ++i) term(i);
    }
    mn = lo_sum;
    mx = hi_sum;
  }
  template <int D = 0>
  HSRGEOM_INLINE double dot(const double* r, const double* a) const {
    const int d = D > 0 ? D : d_;
    return dot_f64<D>(a, r + kScalars + 2 * d, d_);
  }

  int d_ = 0;
  index_t lines_ = 0;  // cache lines per node
  std::vector<Line> rec_;
};

}  // namespace hsrgeom
