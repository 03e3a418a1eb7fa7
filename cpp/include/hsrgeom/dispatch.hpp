// Compile-time dimension dispatch (with_dim) and the float64 dot product it specialises.
// with_dim(d, f) calls f with a compile-time D = d for the small dimensions whose traversals are
// worth unrolling and D = 0 otherwise; every kernel written against D must give the same result
// for D = d and D = 0 (only the summation order of float scores may differ, see dot_f64).
#pragma once

#include <type_traits>
#include <utility>

#include "hsrgeom/predicate.hpp"

namespace hsrgeom {

// <a, x> with a in float64 and float64 accumulation (the score reported with an id). Any
// summation order is covered by the predicate's margins, so the compiler may vectorise it.
// D > 0: d == D known at compile time (see with_dim), so the loop unrolls.
template <int D = 0, class P>
HSRGEOM_INLINE double dot_f64(const double* a, const P* x, int d) {
  if constexpr (D > 0) {  // straight-line code (an `omp simd` loop would not unroll)
    double s = 0;
    for (int i = 0; i < D; ++i) s += a[i] * static_cast<double>(x[i]);
    return s;
  }
  // four partial sums: an `omp simd` reduction paid its vector prologue and remainder on every
  // call and made the d = 5-8 trees' leaf tests 1.6-1.8x slower (docs/performance.md)
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int i = 0;
  for (; i + 4 <= d; i += 4) {
    s0 += a[i] * static_cast<double>(x[i]);
    s1 += a[i + 1] * static_cast<double>(x[i + 1]);
    s2 += a[i + 2] * static_cast<double>(x[i + 2]);
    s3 += a[i + 3] * static_cast<double>(x[i + 3]);
  }
  for (; i < d; ++i) s0 += a[i] * static_cast<double>(x[i]);
  return (s0 + s1) + (s2 + s3);
}

// Calls f(std::integral_constant<int, D>{}) with D = d when Lo <= d <= Hi, D = 0 (d known at run
// time only) otherwise, for hot loops worth compiling for a fixed small d.
template <int Lo, int Hi, class F>
decltype(auto) with_dim_in(int d, F&& f) {
  if constexpr (Lo > Hi) {
    return f(std::integral_constant<int, 0>{});
  } else {
    if (d == Lo) return f(std::integral_constant<int, Lo>{});
    return with_dim_in<Lo + 1, Hi>(d, std::forward<F>(f));
  }
}

// The dimensions whose traversals are compiled for the fixed d (2, 3, 4: a traversal's per-node
// and per-point work is then a few straight-line multiply-adds).
template <class F>
decltype(auto) with_dim(int d, F&& f) {
  return with_dim_in<2, 4>(d, std::forward<F>(f));
}

}  // namespace hsrgeom
