// Vectors rounded to small integers with a certified residual: the 8-bit codes of QuantizedScan
// and of the attention kernels' keys (attend.hpp), and their integer query normals.
#pragma once

#include <algorithm>
#include <cmath>

#include "hsrgeom/predicate.hpp"

namespace hsrgeom {

// q_k = round(v_k / s) in [-qmax, qmax], s = mx / qmax (mx = max|v_k| in [1e-290, 1e290]);
// returns s, sets *resid >= ||v - s q|| and *q2 = ||q||^2 (exact: integers < 2^53).
template <class T, class I>
double to_integers(const T* v, int d, double mx, double qmax, I* q, double* resid, double* q2) {
  const double s = mx / qmax, u = Rounding<double>::u;
  double r2 = 0, c2 = 0;
  for (int k = 0; k < d; ++k) {
    const double w = std::max(-qmax, std::min(qmax, std::nearbyint(static_cast<double>(v[k]) / s)));
    q[k] = static_cast<I>(w);
    const double diff = static_cast<double>(v[k]) - s * w;
    r2 += diff * diff;
    c2 += w * w;
  }
  *q2 = c2;
  // computed norm: relative error <= (d + 4) u; each diff's rounding: <= 2 u mx per coordinate
  *resid = (std::sqrt(r2) * (1 + (d + 8) * u) + 4 * u * mx * std::sqrt(d + 1.0)) * (1 + 4 * u);
  return s;
}

}  // namespace hsrgeom
