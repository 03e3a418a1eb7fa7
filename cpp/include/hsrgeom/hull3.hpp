// Exact 3-D convex hulls: a filtered orientation predicate and Quickhull over it.
//
// orient3d(p, q, r, s) = det[q - p, r - p, s - p] = <s - p, (q - p) x (r - p)>: positive when s is
// on the side of the normal (q - p) x (r - p), i.e. when the triangle (p, q, r) is counter-
// clockwise seen from s. It is evaluated in double with Shewchuk's error bound for exactly this
// evaluation order (|error| <= (7 u + 56 u^2) * permanent, u = 2^-53; we use 1e-15 * permanent plus
// an absolute 1e-300 for underflow), and in exact arithmetic (24 triple products in
// ExactAccumulator3) when the rounded value is within the bound. Overflow gives inf/NaN, which
// also falls through to exact arithmetic.
//
// Hull: Quickhull (Barber, Dobkin, Huhdanpaa 1996) with every visibility test exact and strict
// (a point is outside a face only if orient3d > 0). Consequences, proven in the comments below:
// every hull vertex was strictly outside the hull when it was added; faces are non-degenerate
// triangles; coplanar neighbouring triangles may occur (flat faces are triangulated); every input
// point that is not a hull vertex lies in the (closed) hull. Inputs with fewer than four affinely
// independent points have no 3-D hull ("flat").
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "hsrgeom/interrupt.hpp"
#include "hsrgeom/predicate.hpp"

namespace hsrgeom {

// The plane of a triangle (a, b, c), prepared for many orientation tests against it.
struct OrientPlane {
  double a[3];   // first vertex
  double n[3];   // (b - a) x (c - a), rounded exactly like the filter's evaluation order
  double pn[3];  // |u_y v_z| + |u_z v_y| etc.: the permanent's coefficients
  const double *pa, *pb, *pc;

  OrientPlane(const double* p, const double* q, const double* r) : pa(p), pb(q), pc(r) {
    const double u[3] = {q[0] - p[0], q[1] - p[1], q[2] - p[2]};
    const double v[3] = {r[0] - p[0], r[1] - p[1], r[2] - p[2]};
    for (int i = 0; i < 3; ++i) a[i] = p[i];
    const double t[6] = {u[1] * v[2], u[2] * v[1], u[2] * v[0], u[0] * v[2], u[0] * v[1], u[1] * v[0]};
    for (int i = 0; i < 3; ++i) {
      n[i] = t[2 * i] - t[2 * i + 1];
      pn[i] = std::fabs(t[2 * i]) + std::fabs(t[2 * i + 1]);
    }
  }

  // Rounded orientation value and its error bound.
  double approx(const double* s, double& bound) const {
    const double w[3] = {s[0] - a[0], s[1] - a[1], s[2] - a[2]};
    bound = 1e-15 * (std::fabs(w[0]) * pn[0] + std::fabs(w[1]) * pn[1] + std::fabs(w[2]) * pn[2]) + 1e-300;
    return w[0] * n[0] + w[1] * n[1] + w[2] * n[2];
  }

  // +1 / -1 when the filter is sure, 0 when unsure (no exact fallback: for conservative tests).
  int filtered(const double* s) const {
    double bound;
    const double det = approx(s, bound);
    if (det > bound) return 1;
    if (det < -bound) return -1;
    return 0;
  }

  int sign(const double* s) const;
};

// det of the rows (a, b, c), added exactly with sign `sg`.
inline void add_det3(ExactAccumulator3& acc, const double* a, const double* b, const double* c, double sg) {
  acc.add_product3(sg * a[0], b[1], c[2]);
  acc.add_product3(-sg * a[0], b[2], c[1]);
  acc.add_product3(-sg * a[1], b[0], c[2]);
  acc.add_product3(sg * a[1], b[2], c[0]);
  acc.add_product3(sg * a[2], b[0], c[1]);
  acc.add_product3(-sg * a[2], b[1], c[0]);
}

// Exact sign of det[q - p, r - p, s - p] = det[q,r,s] - det[p,r,s] - det[q,p,s] - det[q,r,p].
inline int orient3d_exact(const double* p, const double* q, const double* r, const double* s) {
  ExactAccumulator3 acc;
  add_det3(acc, q, r, s, 1.0);
  add_det3(acc, p, r, s, -1.0);
  add_det3(acc, q, p, s, -1.0);
  add_det3(acc, q, r, p, -1.0);
  return acc.sign();
}

inline int OrientPlane::sign(const double* s) const {
  const int f = filtered(s);
  return f ? f : orient3d_exact(pa, pb, pc, s);
}

inline int orient3d(const double* p, const double* q, const double* r, const double* s) {
  return OrientPlane(p, q, r).sign(s);
}

// Exact: are p, q, r collinear (or not pairwise distinct)? Their cross product is zero iff all
// three coordinate projections are collinear; each projection is an exact 2-D orientation.
inline bool collinear3(const double* p, const double* q, const double* r) {
  for (int i = 0; i < 3; ++i) {
    const int j = (i + 1) % 3;
    ExactAccumulator acc;  // (q - p) x (r - p) in the (i, j) plane: p x q + q x r + r x p
    acc.add_product(p[i], q[j]);
    acc.add_product(-p[j], q[i]);
    acc.add_product(q[i], r[j]);
    acc.add_product(-q[j], r[i]);
    acc.add_product(r[i], p[j]);
    acc.add_product(-r[j], p[i]);
    if (acc.sign() != 0) return false;
  }
  return true;
}

// Convex hull of m points xyz[3 * i .. 3 * i + 2]. After run(): flat() or faces() (outward,
// counter-clockwise seen from outside) over local point indices.
class Quickhull {
 public:
  struct Face {
    std::int32_t v[3];
    std::int32_t nb[3];  // nb[i]: face across edge (v[i], v[i+1])
    bool alive;
  };

  Quickhull(const double* xyz, std::int32_t m) : x_(xyz), m_(m) {}

  // Returns false when the points span less than 3 dimensions (flat: no hull).
  bool run() {
    std::int32_t s[4];
    if (!initial_simplex(s)) return false;
    const std::int32_t fid[4][3] = {{s[0], s[1], s[2]}, {s[0], s[3], s[1]}, {s[1], s[3], s[2]}, {s[2], s[3], s[0]}};
    for (auto& f : fid) add_face(f[0], f[1], f[2]);
    link_all();
    for (std::int32_t i = 0; i < m_; ++i) {
      if (i == s[0] || i == s[1] || i == s[2] || i == s[3]) continue;
      assign(i, 0, 4);
    }
    std::vector<std::int32_t> stack;
    for (std::int32_t f = 0; f < 4; ++f)
      if (!conflicts_[f].empty()) stack.push_back(f);
    mark_.assign(faces_.size(), 0);
    for (std::uint32_t added = 0; !stack.empty();) {
      if ((++added & 255) == 0) interrupt::check();
      const std::int32_t f = stack.back();
      stack.pop_back();
      if (!faces_[f].alive || conflicts_[f].empty()) continue;
      add_point(f, stack);
    }
    return true;
  }

  const std::vector<Face>& faces() const { return faces_; }
  // Outward normal (b - a) x (c - a) of a face, rounded (for heuristics only).
  const double* normal(std::int32_t f) const { return planes_[f].n; }

 private:
  const double* p(std::int32_t i) const { return x_ + 3 * static_cast<std::int64_t>(i); }

  bool initial_simplex(std::int32_t* s) {
    if (m_ < 4) return false;
    // s0: lexicographically smallest; s1: farthest from it (must differ exactly)
    std::int32_t a = 0;
    for (std::int32_t i = 1; i < m_; ++i)
      if (std::lexicographical_compare(p(i), p(i) + 3, p(a), p(a) + 3)) a = i;
    auto dist2 = [&](std::int32_t i, const double* o) {
      double s2 = 0;
      for (int k = 0; k < 3; ++k) s2 += (p(i)[k] - o[k]) * (p(i)[k] - o[k]);
      return s2;
    };
    std::int32_t b = -1;
    double best = -1;
    for (std::int32_t i = 0; i < m_; ++i) {
      const bool same = p(i)[0] == p(a)[0] && p(i)[1] == p(a)[1] && p(i)[2] == p(a)[2];
      if (!same && dist2(i, p(a)) > best) best = dist2(i, p(a)), b = i;
    }
    if (b < 0) return false;
    // s2: farthest from the line (approximately), checked exactly; a scan if that one is collinear
    double u[3], w[3];
    for (int k = 0; k < 3; ++k) u[k] = p(b)[k] - p(a)[k];
    std::int32_t c = -1;
    best = -1;
    for (std::int32_t i = 0; i < m_; ++i) {
      for (int k = 0; k < 3; ++k) w[k] = p(i)[k] - p(a)[k];
      const double cx = u[1] * w[2] - u[2] * w[1], cy = u[2] * w[0] - u[0] * w[2], cz = u[0] * w[1] - u[1] * w[0];
      const double q = cx * cx + cy * cy + cz * cz;
      if (q > best) best = q, c = i;
    }
    // c < 0: every q overflowed (NaN), as with coordinates near 1e200; the scan decides exactly
    if (c < 0 || collinear3(p(a), p(b), p(c))) {
      c = -1;
      for (std::int32_t i = 0; i < m_ && c < 0; ++i)
        if (!collinear3(p(a), p(b), p(i))) c = i;
      if (c < 0) return false;
    }
    OrientPlane pl(p(a), p(b), p(c));
    std::int32_t d = -1;
    best = -1;
    for (std::int32_t i = 0; i < m_; ++i) {
      double bound;
      const double v = std::fabs(pl.approx(p(i), bound));
      if (v > best) best = v, d = i;
    }
    int o = d >= 0 ? pl.sign(p(d)) : 0;  // d < 0: every estimate overflowed
    if (o == 0) {
      d = -1;
      for (std::int32_t i = 0; i < m_ && d < 0; ++i)
        if ((o = pl.sign(p(i))) != 0) d = i;
      if (d < 0) return false;
    }
    // orient(a, b, c, d) < 0: d below (a, b, c), so (a, b, c) faces outward
    if (o > 0) std::swap(b, c);
    s[0] = a, s[1] = b, s[2] = c, s[3] = d;
    return true;
  }

  std::int32_t add_face(std::int32_t a, std::int32_t b, std::int32_t c) {
    faces_.push_back({{a, b, c}, {-1, -1, -1}, true});
    planes_.emplace_back(p(a), p(b), p(c));
    conflicts_.emplace_back();
    mark_.push_back(0);
    return static_cast<std::int32_t>(faces_.size()) - 1;
  }

  // Neighbours of the initial four faces (each directed edge (u, v) meets its reverse (v, u)).
  void link_all() {
    for (std::int32_t f = 0; f < 4; ++f)
      for (int i = 0; i < 3; ++i)
        for (std::int32_t g = 0; g < 4; ++g)
          for (int j = 0; j < 3; ++j)
            if (faces_[f].v[i] == faces_[g].v[(j + 1) % 3] && faces_[f].v[(i + 1) % 3] == faces_[g].v[j])
              faces_[f].nb[i] = g;
  }

  // Gives point i to the first face in [f0, f1) that sees it strictly; none: inside, dropped.
  void assign(std::int32_t i, std::int32_t f0, std::int32_t f1) {
    for (std::int32_t f = f0; f < f1; ++f)
      if (planes_[f].sign(p(i)) > 0) {
        conflicts_[f].push_back(i);
        return;
      }
  }

  void add_point(std::int32_t f0, std::vector<std::int32_t>& stack) {
    // the conflict point farthest (approximately) above the face: any choice is correct
    std::int32_t e = conflicts_[f0][0];
    double best = -1;
    for (std::int32_t i : conflicts_[f0]) {
      double bound;
      const double v = planes_[f0].approx(p(i), bound);
      if (v > best) best = v, e = i;
    }
    const double* pe = p(e);
    // visible faces (strictly: orient > 0) by a depth-first search from f0, and the horizon:
    // edges (u, v) of visible faces whose neighbour is not visible. ++epoch_ marks this round.
    ++epoch_;
    const std::int32_t kVisible = 2 * epoch_, kHidden = 2 * epoch_ + 1;
    std::vector<std::int32_t> visible{f0}, todo{f0};
    std::vector<std::array<std::int32_t, 3>> horizon;  // (u, v, hidden face)
    mark_[f0] = kVisible;
    while (!todo.empty()) {
      const std::int32_t f = todo.back();
      todo.pop_back();
      for (int k = 0; k < 3; ++k) {
        const std::int32_t g = faces_[f].nb[k];
        if (mark_[g] != kVisible && mark_[g] != kHidden) {
          if (planes_[g].sign(pe) > 0) {
            mark_[g] = kVisible;
            visible.push_back(g);
            todo.push_back(g);
          } else {
            mark_[g] = kHidden;
          }
        }
        if (mark_[g] == kHidden)
          horizon.push_back({faces_[f].v[k], faces_[f].v[(k + 1) % 3], g});
      }
    }
    // The strictly visible faces form a disc bounded by a simple cycle (e is strictly outside),
    // so each horizon vertex starts exactly one horizon edge. New faces (u, v, e) are never
    // degenerate: if e were on the line uv it would lie in the plane of the visible face at uv.
    const std::int32_t first = static_cast<std::int32_t>(faces_.size());
    if (start_.size() < static_cast<size_t>(m_)) start_.assign(m_, -1);
    for (auto& h : horizon) {
      const std::int32_t nf = add_face(h[0], h[1], e);
      faces_[nf].nb[0] = h[2];
      Face& g = faces_[h[2]];
      for (int k = 0; k < 3; ++k)
        if (g.v[k] == h[1] && g.v[(k + 1) % 3] == h[0]) g.nb[k] = nf;
      start_[h[0]] = nf;
    }
    const std::int32_t last = static_cast<std::int32_t>(faces_.size());
    for (std::int32_t nf = first; nf < last; ++nf) {
      Face& f = faces_[nf];
      const std::int32_t nxt = start_[f.v[1]];  // the new face (v, w, e): its edge 2 is (e, v)
      f.nb[1] = nxt;
      faces_[nxt].nb[2] = nf;
    }
    for (std::int32_t nf = first; nf < last; ++nf) start_[faces_[nf].v[0]] = -1;
    // conflict points of the removed faces go to the new faces that see them, or are inside
    for (std::int32_t f : visible) {
      faces_[f].alive = false;
      std::vector<std::int32_t> pts;
      pts.swap(conflicts_[f]);
      for (std::int32_t i : pts)
        if (i != e) assign(i, first, last);
    }
    for (std::int32_t nf = first; nf < last; ++nf)
      if (!conflicts_[nf].empty()) stack.push_back(nf);
  }

  const double* x_;
  std::int32_t m_;
  std::vector<Face> faces_;
  std::vector<OrientPlane> planes_;
  std::vector<std::vector<std::int32_t>> conflicts_;
  std::vector<std::int32_t> mark_, start_;
  std::int32_t epoch_ = 0;
};

}  // namespace hsrgeom
