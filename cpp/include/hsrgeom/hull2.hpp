// Exact 2-D hull primitives: the orientation predicate (filtered, exact when unsure) and the
// monotone-chain hull built on it. Contract: orient2d returns the sign of the exact orientation
// of three double points, so hulls built with it are exactly (strictly) convex.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include "hsrgeom/predicate.hpp"
#include "hsrgeom/types.hpp"

namespace hsrgeom {

// Exact sign of the orientation of (p, q, r): +1 counter-clockwise, -1 clockwise, 0 collinear.
// orient = (q - p) x (r - p) = p x q + q x r + r x p, a sum of six exact products.
inline int orient2d_exact(const double* p, const double* q, const double* r) {
  ExactAccumulator acc;
  acc.add_product(p[0], q[1]);
  acc.add_product(-p[1], q[0]);
  acc.add_product(q[0], r[1]);
  acc.add_product(-q[1], r[0]);
  acc.add_product(r[0], p[1]);
  acc.add_product(-r[1], p[0]);
  return acc.sign();
}

// Filtered orientation: a double evaluation with a rigorous error bound, exact when unsure.
inline int orient2d(const double* p, const double* q, const double* r) {
  const double l = (q[0] - p[0]) * (r[1] - p[1]), rr = (q[1] - p[1]) * (r[0] - p[0]);
  const double det = l - rr;
  // Shewchuk's orient2d error bound, with extra slack for underflow.
  const double bound = (3.3306690738754716e-16 + 1e-30) * (std::fabs(l) + std::fabs(rr)) + 1e-300;
  if (det > bound) return 1;
  if (det < -bound) return -1;
  // two equal points: collinear (the exact sum is 0; identical points made every test of a
  // peel exact)
  if ((p[0] == q[0] && p[1] == q[1]) || (q[0] == r[0] && q[1] == r[1]) || (p[0] == r[0] && p[1] == r[1])) return 0;
  return orient2d_exact(p, q, r);
}

// Strictly convex hull (CCW) of m points sorted lexicographically, xy(t) giving point t's
// coordinates (doubles, exact copies); fills `hull` with their positions t.
template <class XY>
void monotone_chain_of(size_t m, XY&& xy, std::vector<size_t>& hull) {
  hull.clear();
  if (m == 0) return;
  if (m == 1) {
    hull.push_back(0);
    return;
  }
  hull.resize(2 * m);
  size_t k = 0;
  for (size_t pass = 0; pass < 2; ++pass) {
    const size_t base = k;
    for (size_t t = 0; t < m; ++t) {
      const size_t i = pass == 0 ? t : m - 1 - t;
      const double* C = xy(i);
      while (k >= base + 2 && orient2d(xy(hull[k - 2]), xy(hull[k - 1]), C) <= 0) --k;
      hull[k++] = i;
    }
    --k;  // the last point of a chain is the first of the other
  }
  hull.resize(k);
  // all points identical: keep one; identical duplicates of a vertex stay for later layers
  if (k == 0) hull.push_back(0);
  if (hull.size() == 2) {
    const double *P = xy(hull[0]), *Q = xy(hull[1]);
    if (P[0] == Q[0] && P[1] == Q[1]) hull.pop_back();
  }
}

// The same over the points `ids` of p (sorted lexicographically); hull gets ids.
template <class T>
void monotone_chain(const PointsView<T>& p, const std::vector<index_t>& ids, std::vector<index_t>& hull) {
  std::vector<double> xy(2 * ids.size());
  for (size_t t = 0; t < ids.size(); ++t)
    for (int i = 0; i < 2; ++i) xy[2 * t + i] = static_cast<double>(p.row(ids[t])[i]);
  std::vector<size_t> h;
  monotone_chain_of(ids.size(), [&](size_t t) { return &xy[2 * t]; }, h);
  hull.resize(h.size());
  for (size_t i = 0; i < h.size(); ++i) hull[i] = ids[h[i]];
}

}  // namespace hsrgeom
