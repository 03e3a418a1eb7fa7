// The one membership predicate every hsrgeom structure uses.
//
// A point x is in the closed half-space (a, b) iff  <a, x> >= b  holds for the *exact* real
// value of the given floating-point numbers (a and x in the index dtype, b a double). No
// structure ever decides membership with a rounded dot product alone: it evaluates a fast
// floating-point filter, and when the rounded value lies within a rigorous error bound of the
// threshold it falls back to exact arithmetic (ExactAccumulator). So every structure returns
// the same set, independent of summation order, BLAS kernel, FMA use or thread count.
//
// Error bound used everywhere (Higham, "Accuracy and Stability of Numerical Algorithms", 3.1):
// a dot product of d terms evaluated in any order (any summation tree, with or without FMA) in a
// floating-point format with unit roundoff u satisfies
//     |fl(<a,x>) - <a,x>| <= gamma_d * sum_i |a_i x_i| + d * eta,     gamma_d = d u / (1 - d u),
// where eta bounds the absolute error of one underflowing product (half the smallest subnormal).
// Comparing v = fl(s - b) adds at most u64 * |s - b| more. Bounding sum |a_i x_i| by
// ||a|| * ||x|| (Cauchy-Schwarz) with both norms rounded *up*, and doubling for the rounding of
// the bound itself, gives the margin computed by `margin()` below:
//     v >  M  =>  <a,x> > b  (in);      v < -M  =>  <a,x> < b  (out);     else: exact.
// Pruning bounds (box, ball) reuse the same margin with the node's norms in place of ||x||.
// An overflowing bound is +inf, which sends the decision to exact arithmetic: never wrong.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

// Forces inlining of the few-instruction helpers of query loops (GCC would otherwise keep some
// of them as calls inside the large traversal functions, ~30 % slower at d = 2).
#if defined(__GNUC__)
#define HSRGEOM_INLINE inline __attribute__((always_inline))
#else
#define HSRGEOM_INLINE inline
#endif

namespace hsrgeom {

using index_t = std::int64_t;

// Exact sum of products of doubles, in a two's-complement fixed-point accumulator: bit 0 of limb 0
// has weight 2^-Offset. ExactAccumulator (below) is wide enough for every product of two finite
// doubles (2^-2148 .. 2^2048) plus 2^100 terms of carry headroom; ExactAccumulator3 for every
// product of three (2^-3222 .. 2^3072, for 3-D orientation determinants).
template <int Offset, int Limbs>
class BasicExactAccumulator {
 public:
  static constexpr int kOffset = Offset;
  static constexpr int kLimbs = Limbs;

  BasicExactAccumulator() { std::memset(limb_, 0, sizeof(limb_)); }

  // Adds a * b exactly.
  void add_product(double a, double b) {
    std::uint64_t ma, mb;
    int ea, eb;
    bool na, nb;
    if (!decompose(a, ma, ea, na) || !decompose(b, mb, eb, nb)) return;
    unsigned __int128 m = static_cast<unsigned __int128>(ma) * mb;
    add_shifted(m, ea + eb + kOffset, na != nb);
  }

  // Adds a * b * c exactly (needs the range of ExactAccumulator3). The 106-bit product of two
  // mantissas is split at bit 53 so that each part times the third mantissa fits in 128 bits.
  void add_product3(double a, double b, double c) {
    std::uint64_t ma, mb, mc;
    int ea, eb, ec;
    bool na, nb, nc;
    if (!decompose(a, ma, ea, na) || !decompose(b, mb, eb, nb) || !decompose(c, mc, ec, nc)) return;
    const unsigned __int128 m = static_cast<unsigned __int128>(ma) * mb;
    const std::uint64_t hi = static_cast<std::uint64_t>(m >> 53), lo = static_cast<std::uint64_t>(m) & ((std::uint64_t{1} << 53) - 1);
    const bool neg = na != nb ? !nc : nc;
    const int e = ea + eb + ec + kOffset;
    add_shifted(static_cast<unsigned __int128>(hi) * mc, e + 53, neg);
    add_shifted(static_cast<unsigned __int128>(lo) * mc, e, neg);
  }

  // Adds a exactly.
  void add(double a) {
    std::uint64_t ma;
    int ea;
    bool na;
    if (!decompose(a, ma, ea, na)) return;
    add_shifted(static_cast<unsigned __int128>(ma), ea + kOffset, na);
  }

  // -1, 0 or +1: the sign of the exact sum.
  int sign() const {
    if (limb_[kLimbs - 1] >> 63) return -1;
    for (int i = kLimbs - 1; i >= 0; --i)
      if (limb_[i]) return 1;
    return 0;
  }

 private:
  // x = (neg ? -1 : 1) * m * 2^e exactly; returns false for zero.
  static bool decompose(double x, std::uint64_t& m, int& e, bool& neg) {
    std::uint64_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    neg = bits >> 63;
    const int expo = static_cast<int>((bits >> 52) & 0x7ff);
    const std::uint64_t frac = bits & ((std::uint64_t{1} << 52) - 1);
    if (expo == 0) {
      m = frac;
      e = -1074;
    } else {
      m = frac | (std::uint64_t{1} << 52);
      e = expo - 1075;
    }
    return m != 0;
  }

  void add_shifted(unsigned __int128 m, int pos, bool negative) {
    const int L = pos >> 6, s = pos & 63;
    const std::uint64_t lo = static_cast<std::uint64_t>(m), hi = static_cast<std::uint64_t>(m >> 64);
    std::uint64_t w[3];
    w[0] = lo << s;
    w[1] = s ? ((lo >> (64 - s)) | (hi << s)) : hi;
    w[2] = s ? (hi >> (64 - s)) : 0;
    if (!negative) {
      unsigned carry = 0;
      int i = L;
      for (int k = 0; k < 3 && i < kLimbs; ++k, ++i) {
        unsigned __int128 t = static_cast<unsigned __int128>(limb_[i]) + w[k] + carry;
        limb_[i] = static_cast<std::uint64_t>(t);
        carry = static_cast<unsigned>(t >> 64);
      }
      for (; carry && i < kLimbs; ++i) carry = (++limb_[i] == 0);
    } else {
      unsigned borrow = 0;
      int i = L;
      for (int k = 0; k < 3 && i < kLimbs; ++k, ++i) {
        const std::uint64_t old = limb_[i];
        const std::uint64_t sub = w[k] + borrow;
        const unsigned over = (borrow && sub == 0);  // w[k] + borrow wrapped to 2^64
        limb_[i] = old - sub;
        borrow = over || (old < sub);
      }
      for (; borrow && i < kLimbs; ++i) borrow = (limb_[i]-- == 0);
    }
  }

  std::uint64_t limb_[kLimbs];
};

using ExactAccumulator = BasicExactAccumulator<2148, 68>;   // 4352 bits
using ExactAccumulator3 = BasicExactAccumulator<3222, 102>;  // 6528 bits: 2^-3222 .. 2^3072 + headroom

namespace detail {

// Sign of the exact sum of the n doubles t[] (n <= 9), none of them overflowing when added:
// Shewchuk's grow-expansion with zero elimination ("Adaptive Precision Floating-Point
// Arithmetic", 1997). Each term is added to a nonoverlapping expansion, smallest component
// first, by Knuth's two-sum (exact barring overflow, also for subnormals), so the expansion
// always equals the exact sum and its largest component carries the sign.
inline int sign_of_sum(const double* t, int n) {
  double e[9];
  int m = 0;
  for (int i = 0; i < n; ++i) {
    double q = t[i];
    int k = 0;
    for (int j = 0; j < m; ++j) {
      const double s = q + e[j], bv = s - q, err = (q - (s - bv)) + (e[j] - bv);
      if (err != 0) e[k++] = err;
      q = s;
    }
    if (q != 0) e[k++] = q;
    m = k;
  }
  return m == 0 ? 0 : (e[m - 1] > 0 ? 1 : -1);
}

// Exact sign of <a, x> - b with the wide fixed-point accumulator: any finite values, any d.
template <class T>
int exact_sign_wide(const double* a, const T* x, double b, int d) {
  ExactAccumulator acc;
  for (int i = 0; i < d; ++i) acc.add_product(a[i], static_cast<double>(x[i]));
  acc.add(-b);
  return acc.sign();
}

}  // namespace detail

// Exact sign of <a, x> - b (b = +-inf allowed: every finite <a, x> is below +inf, above -inf).
// For d <= 4 and magnitudes far from overflow and underflow, each product is split exactly
// into p + e with an fma (e = fma(a_i, x_i, -p): exact when |p| >= 2^-900, as the rounding error
// of a product is then a normal double) and the sign of the sum of those 2 d + 1 doubles is
// found by expansion arithmetic: ~10x cheaper than the wide accumulator (a tie at d = 2 cost
// ~60 ns with it), which takes every other case.
template <class T>
inline int exact_sign(const double* a, const T* x, double b, int d) {
  if (std::isinf(b)) return b > 0 ? -1 : 1;
  if (d <= 4 && std::fabs(b) <= 0x1p1000) {
    double t[9];
    int n = 0;
    bool ok = true;
    for (int i = 0; i < d; ++i) {
      const double xi = static_cast<double>(x[i]), p = a[i] * xi, ap = std::fabs(p);
      if (a[i] == 0 || xi == 0) continue;
      ok &= ap >= 0x1p-900 && ap <= 0x1p1000;
      t[n++] = p;
      t[n++] = std::fma(a[i], xi, -p);
    }
    if (ok) {
      t[n++] = -b;
      return detail::sign_of_sum(t, n);
    }
  }
  return detail::exact_sign_wide(a, x, b, d);
}

// Exact sign of <q, x> - <q, y>.
template <class T>
inline int exact_compare(const double* q, const T* x, const T* y, int d) {
  ExactAccumulator acc;
  for (int i = 0; i < d; ++i) {
    acc.add_product(q[i], static_cast<double>(x[i]));
    acc.add_product(-q[i], static_cast<double>(y[i]));
  }
  return acc.sign();
}

// Sign of <q, x> - <q, y>: a double evaluation with a rigorous bound (each dot product errs by at
// most gamma_d sum |q_i x_i|, the subtraction by u times the sum; 8 u covers d <= 3 with room;
// 1e-300 covers underflow), exact when the difference is within the bound.
template <class T>
inline int compare_dots(const double* q, const T* x, const T* y, int d) {
  double sx = 0, sy = 0, mag = 0;
  for (int i = 0; i < d; ++i) {
    const double xi = static_cast<double>(x[i]), yi = static_cast<double>(y[i]);
    sx += q[i] * xi;
    sy += q[i] * yi;
    mag += std::fabs(q[i]) * (std::fabs(xi) + std::fabs(yi));
  }
  const double err = 8 * (std::numeric_limits<double>::epsilon() / 2) * d * mag + 1e-300;
  if (sx - sy > err) return 1;
  if (sy - sx > err) return -1;
  return exact_compare(q, x, y, d);
}

// Floating-point error model of a format used to evaluate dot products.
template <class Acc>
struct Rounding {
  static constexpr double u = std::numeric_limits<Acc>::epsilon() / 2;
  static constexpr double eta = static_cast<double>(std::numeric_limits<Acc>::denorm_min());
};

// gamma_k in the format with unit roundoff u, rounded up (k u < 0.5 always holds here: k <= 2^20).
inline double gamma_k(double k, double u) { return (k * u / (1.0 - k * u)) * (1.0 + 1e-6); }

namespace detail {
// Sum of v(i)^2 over i < d in float64: four partial sums (for d <= 3 the one sum, in order); one
// chain of d dependent additions per point was ~30 % of a d = 16 PartitionTree's build (the node
// radius pass and the leaves' norm bounds).
template <class V>
HSRGEOM_INLINE double sum_squares_of(V v, int d) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int i = 0;
  for (; i + 4 <= d; i += 4) {
    const double t0 = v(i), t1 = v(i + 1), t2 = v(i + 2), t3 = v(i + 3);
    s0 += t0 * t0, s1 += t1 * t1, s2 += t2 * t2, s3 += t3 * t3;
  }
  for (; i < d; ++i) {
    const double t = v(i);
    s0 += t * t;
  }
  return (s0 + s1) + (s2 + s3);
}
}  // namespace detail

// Sum of the squares of d values (detail::sum_squares_of), and of their differences from c.
template <class T>
HSRGEOM_INLINE double sum_squares(const T* x, int d) {
  return detail::sum_squares_of([x](int i) { return static_cast<double>(x[i]); }, d);
}
template <class T>
HSRGEOM_INLINE double sum_squares(const T* x, int d, const double* c) {
  return detail::sum_squares_of([x, c](int i) { return static_cast<double>(x[i]) - c[i]; }, d);
}

// Upper bound of the Euclidean norm of d values whose squares sum_squares summed to s (in any
// order: relative error of the sum <= gamma_{d+1}; sqrt halves it and adds one rounding).
// Non-decreasing in s, so the largest bound of several vectors is the bound of their largest s.
HSRGEOM_INLINE double norm_up_of_squares(double s, int d) {
  return std::sqrt(s) * (1.0 + gamma_k(d + 4, Rounding<double>::u)) + std::sqrt(d * Rounding<double>::eta) * 4;
}

// Upper bound of the Euclidean norm of a vector of d values (rounded up generously).
template <class T>
HSRGEOM_INLINE double norm_up(const T* x, int d) {
  return norm_up_of_squares(sum_squares(x, d), d);
}

// Margin M such that |fl(fl(<a,x>) - b) - (<a,x> - b)| <= M whenever ||a|| <= norm_a,
// ||x|| <= norm_x and the dot product was evaluated in a format with unit roundoff `u` and
// underflow error `eta` per product (see the comment at the top of this file).
struct Margin {
  double g, abs_term;
  Margin(int d, double u, double eta)
      : g(2.0 * gamma_k(d + 2, u)), abs_term(2.0 * (d + 2) * eta + 4 * Rounding<double>::eta) {}
  double operator()(double norm_a, double norm_x, double b) const {
    return g * (norm_a * norm_x + std::fabs(b)) * (1.0 + 1e-6) + abs_term;
  }
};

// Three-way decision of the filter: +1 surely in, -1 surely out, 0 undecided.
// An s that overflowed (inf, or NaN from inf - inf) says nothing about the exact value, whose
// products the exact accumulator holds without overflow: exact arithmetic decides.
HSRGEOM_INLINE int filter_decide(double s, double b, double margin) {
  if (!(std::fabs(s) <= std::numeric_limits<double>::max())) return 0;
  const double v = s - b;
  if (v > margin) return 1;
  if (v < -margin) return -1;
  return 0;
}

// filter_decide's cases as flags, without a branch (for bit masks over many points): `in` for
// +1, `undecided` for 0.
HSRGEOM_INLINE void filter_flags(double s, double b, double margin, bool& in, bool& undecided) {
  const bool finite = std::fabs(s) <= std::numeric_limits<double>::max();
  const double v = s - b;
  in = finite & (v > margin);
  undecided = !(in | (finite & (v < -margin)));
}

// The predicate itself: filter first, exact only when the filter can't decide.
// `s` is a rounded evaluation of <a,x> whose error is covered by `margin`.
template <class T>
HSRGEOM_INLINE bool in_halfspace(double s, double margin, const double* a, const T* x, double b, int d,
                         std::int64_t* exact_checks = nullptr) {
  const int f = filter_decide(s, b, margin);
  if (f) return f > 0;
  if (exact_checks) ++*exact_checks;
  return exact_sign(a, x, b, d) >= 0;
}

}  // namespace hsrgeom
