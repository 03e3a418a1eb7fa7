// The fused decoding kernel of hsrgeom.attention: the keys of one kv head as 8-bit codes with
// proven error bounds (HeadCodes), and, for all query rows of that kv head at once (the query
// heads of a GQA group), exact top-r / threshold selection by the float64 score and the softmax
// over the selected keys with its V gather and certified dropped-mass bound, in one call.
//
// Codes (as QuantizedScan, written again here so that the attention layer does not depend on a
// structure's internals): a key x is stored as c in [-127, 127]^d with a per-key scale s
// (x ~ s c, s = max|x_k| / 127), a query row a as 16-bit integers q with a scale s_a. With the
// per-key g >= s ||c||, r >= ||x - s c||, ||x|| <= xn and the per-row ra >= ||a - s_a q||,
// na >= ||a||, the float64 score fl(<a, x>) (any summation order; `dots` has the one used here)
// satisfies
//
//   |fl(<a, x>) - s s_a <q, c>| <= ra g + na r + gamma_{d+4} ||a|| xn       (= w)
//
// (<q, c> is an exact int32). main = s s_a <q, c> is evaluated in float64 (two roundings) and w
// in a few operations: lb/ub = main -/+ (w + 4 u (|main| + w) + 1e-300) bracket fl(<a, x>).
// Keys whose max|x_k| is outside [1e-290, 1e290] get r = inf: always candidates. The codes live
// in a channel-scaled space (x / cs, a * cs with per-channel powers of two cs, exact for
// float32 keys; see HeadCodes::channel_scales): every quantity above is taken there, except
// ||a|| and ||x|| in the gamma term, which bound the rounding of fl(<a, x>) itself.
//
// Selection (exact, the same set as ranking every key by its float64 score):
//  * top-r: L = the r-th largest lb over all keys; r keys have fl >= lb >= L, so every member of
//    the top r (ties at the cut included) has ub >= fl >= L. Keys with ub >= L are candidates,
//    their full rows are read and ranked by fl (descending, ties to the smaller id). During the
//    scan each chunk keeps the r largest lb it has seen (a heap whose minimum only rises and is
//    <= L): a key with ub below it is dropped at once.
//  * threshold t: candidates ub >= t, kept where fl >= t.
//  * certified top-p: one scan for the top-1 and the candidates of the report under it, then the
//    prefix of the report by weight buckets (HeadCodes::softmax_top_p, docs/attention.md §6).
// The scan reads n d bytes of codes once for all rows (cache-resident per key) instead of the
// n d floats of a GEMV; the full rows are read for the candidates only.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__AVX2__) || defined(__AVX512BW__)
#include <immintrin.h>
#endif

#include "hsrgeom/dispatch.hpp"
#include "hsrgeom/interrupt.hpp"
#include "hsrgeom/parallel.hpp"
#include "hsrgeom/predicate.hpp"
#include "hsrgeom/quantize.hpp"
#include "hsrgeom/types.hpp"

namespace hsrgeom {
namespace attend {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kU = Rounding<double>::u;
constexpr index_t kChunk = 4096;  // keys per scan chunk (a unit of parallel work)
constexpr size_t kPart = 2048;    // keys per part of the top-p scoring and value passes

// A query row as integers, in the channel-scaled space of the codes: a' = a * cs (exact: cs are
// powers of two, see HeadCodes), q = round(a' / s_a), |q_k| <= qmax so that a d-term sum of
// q_k c_k fits in int32; ra >= ||a' - s_a q||, na >= ||a'||, na0 >= ||a||. ad: a in float64
// (for fl(<a, x>)).
struct IntRow {
  std::vector<std::int16_t> q;
  std::vector<double> ad;
  double sa = 0, ra = 0, na = 0, na0 = 0;
};

template <class T>
IntRow int_row(const T* a, const double* cs, int d) {
  IntRow r;
  r.ad.assign(a, a + d);
  r.na0 = norm_up(a, d);
  std::vector<double> as(d);
  for (int k = 0; k < d; ++k) as[k] = r.ad[k] * cs[k];
  IntNormal in = int_normal(as.data(), d, int16_qmax(d));
  r.q = std::move(in.q);
  r.sa = in.sa, r.ra = in.ra, r.na = in.na;
  return r;
}

// Exact int32 dot products <q_j, c_i> of int16 query rows and int8 key codes. The codes are
// widened to 16 bits and multiplied pairwise into int32 (pmaddwd, or vpdpwssd with AVX-512
// VNNI): every partial sum is bounded by d * 127 * qmax < 2^31 (int_row's qmax), so the sums are
// exact in any order and every build returns the same values.
inline std::int32_t int_dot_tail(const std::int8_t* c, const std::int16_t* q, int k, int d) {
  std::int32_t s = 0;
  for (; k < d; ++k) s += static_cast<std::int32_t>(q[k]) * c[k];
  return s;
}

// A tile of K <= 2 keys (codes c: K x d) by R <= 4 rows (q: R x d): out[t * stride + u] =
// <q_t, c_u>. One pass over the codes for the whole tile, so the keys share the loads of the
// rows, and a key's R sums are reduced together (three hadds) rather than one by one: without
// VNNI, the per-key reductions were as costly as the products.
template <int R, int K>
inline void int_dot_tile(const std::int8_t* c, const std::int16_t* q, int d, std::int32_t* out, index_t stride) {
  int k = 0;
  std::int32_t s[K][4] = {};
#if defined(__AVX2__)
#if defined(__AVX512BW__)
  constexpr int W = 32;
  using V = __m512i;
  auto widen = [](const std::int8_t* p) { return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); };
  // both halves by extract: with a cast for the low half, GCC 12 copied each accumulator twice per
  // iteration around the destructive vpdpwssd (the scan 1.2-1.9x slower)
  auto fold = [](__m512i a) { return _mm256_add_epi32(_mm512_extracti64x4_epi64(a, 0), _mm512_extracti64x4_epi64(a, 1)); };
#if defined(__AVX512VNNI__)
  auto madd = [](__m512i acc, __m512i w, const std::int16_t* p) { return _mm512_dpwssd_epi32(acc, w, _mm512_loadu_si512(p)); };
#else
  auto madd = [](__m512i acc, __m512i w, const std::int16_t* p) {
    return _mm512_add_epi32(acc, _mm512_madd_epi16(w, _mm512_loadu_si512(p)));
  };
#endif
#else
  constexpr int W = 16;
  using V = __m256i;
  auto widen = [](const std::int8_t* p) { return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); };
  auto fold = [](__m256i a) { return a; };
  auto madd = [](__m256i acc, __m256i w, const std::int16_t* p) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(w, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
  };
#endif
  // accumulators x (key 0) and y (key 1), one per row
  V x0{}, x1{}, x2{}, x3{}, y0{}, y1{}, y2{}, y3{};
  for (; k + W <= d; k += W) {
    const V w0 = widen(c + k), w1 = K > 1 ? widen(c + d + k) : w0;
    auto row = [&](V& x, V& y, int t) {
      x = madd(x, w0, q + t * d + k);
      if constexpr (K > 1) y = madd(y, w1, q + t * d + k);
    };
    row(x0, y0, 0);
    if constexpr (R > 1) row(x1, y1, 1);
    if constexpr (R > 2) row(x2, y2, 2);
    if constexpr (R > 3) row(x3, y3, 3);
  }
  auto reduce = [&](V a0, V a1, V a2, V a3, std::int32_t* sums) {
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(fold(a0), fold(a1)), _mm256_hadd_epi32(fold(a2), fold(a3)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(sums), _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1)));
  };
  reduce(x0, x1, x2, x3, s[0]);  // rows past R hold 0
  if constexpr (K > 1) reduce(y0, y1, y2, y3, s[K - 1]);
#endif
  for (int t = 0; t < R; ++t)
    for (int u = 0; u < K; ++u) out[t * stride + u] = s[u][t];
  if (k < d)  // the coordinates past the last full vector
    for (int t = 0; t < R; ++t)
      for (int u = 0; u < K; ++u) out[t * stride + u] += int_dot_tail(c + u * d, q + t * d, k, d);
}

// out[j * stride + i] = <q_j, c_i> for the nb keys of a scan block (codes c: nb x d) and the h
// rows of q (h x d): tiles of 2 keys by 4 rows.
inline void int_dots(const std::int8_t* c, index_t nb, const std::int16_t* q, index_t h, int d, std::int32_t* out,
                     index_t stride) {
  auto rows = [&](auto keys, const std::int8_t* ci, std::int32_t* oi) {
    constexpr int K = decltype(keys)::value;
    index_t j = 0;
    for (; j + 4 <= h; j += 4) int_dot_tile<4, K>(ci, q + j * d, d, oi + j * stride, stride);
    switch (h - j) {
      case 3: int_dot_tile<3, K>(ci, q + j * d, d, oi + j * stride, stride); break;
      case 2: int_dot_tile<2, K>(ci, q + j * d, d, oi + j * stride, stride); break;
      case 1: int_dot_tile<1, K>(ci, q + j * d, d, oi + j * stride, stride); break;
      default: break;
    }
  };
  index_t i = 0;
  for (; i + 2 <= nb; i += 2) rows(std::integral_constant<int, 2>{}, c + i * d, out + i);
  if (i < nb) rows(std::integral_constant<int, 1>{}, c + i * d, out + i);
}

// The float64 dot products of attend.hpp, in ONE order on every build (AVX-512, AVX2 + FMA,
// scalar), so that a build for either instruction set returns the same bits: coordinate k of
// the first d16 = d - d % 16 goes, k ascending, into partial sum k mod 16 by a fused
// multiply-add; the 16 partials are added by the fixed tree sum16; the tail coordinates are then
// fused in one by one, k ascending. A float32 key coordinate times a float64 query coordinate is
// rounded once either way. This is one of the orders the header comment allows (every order,
// fused or not, has |fl - <a, x>| <= gamma_d sum |a_k x_k|: a term passes through at most
// d / 16 + 4 + d % 16 <= d roundings).
inline double sum16(const double* p) {
  double q[8], r[4];
  for (int l = 0; l < 8; ++l) q[l] = p[l] + p[l + 8];
  for (int l = 0; l < 4; ++l) r[l] = q[l] + q[l + 4];
  return (r[0] + r[2]) + (r[1] + r[3]);
}

#if defined(__AVX2__) || defined(__AVX512F__)
// sum16 in registers from its first level q[l] = p[l] + p[l + 8] (qlo: l = 0-3, qhi: l = 4-7)
inline double sum16_from(__m256d qlo, __m256d qhi) {
  const __m256d r = _mm256_add_pd(qlo, qhi);
  const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(r), _mm256_extractf128_pd(r, 1));
  return _mm_cvtsd_f64(s) + _mm_cvtsd_f64(_mm_unpackhi_pd(s, s));
}
#endif

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
// For NR rows, the partial sums [l0, l0 + 4 NV) of each, as NV ymm lanes per row (NR NV
// accumulators and NV key vectors must fit the 16 ymm registers).
template <int NR, int NV, class T>
inline void dots_avx2(const double* A, const T* x, int d, int d16, int l0, double (*p)[16], const T* next) {
  __m256d a[NR][NV];
  for (int r = 0; r < NR; ++r)
    for (int t = 0; t < NV; ++t) a[r][t] = _mm256_setzero_pd();
  for (int k = 0; k < d16; k += 16) {
    if (next) {
      __builtin_prefetch(next + k);
      if constexpr (sizeof(T) == 8) __builtin_prefetch(next + k + 8);
    }
    __m256d xv[NV];
    for (int t = 0; t < NV; ++t) {
      if constexpr (std::is_same_v<T, float>)
        xv[t] = _mm256_cvtps_pd(_mm_loadu_ps(x + k + l0 + 4 * t));
      else
        xv[t] = _mm256_loadu_pd(x + k + l0 + 4 * t);
    }
    for (int r = 0; r < NR; ++r)
      for (int t = 0; t < NV; ++t)
        a[r][t] = _mm256_fmadd_pd(xv[t], _mm256_loadu_pd(A + r * d + k + l0 + 4 * t), a[r][t]);
  }
  for (int r = 0; r < NR; ++r)
    for (int t = 0; t < NV; ++t) _mm256_storeu_pd(p[r] + l0 + 4 * t, a[r][t]);
}
#endif

// s[r] = fl(<A_r, x>) in the order above for the R rows of A (R x d, float64, row-major) and one
// key x: the key is read once for the R rows, and the row `next` (the key after the following
// one; may be null) is prefetched one line per line read, which keeps misses in flight without
// queueing them.
template <int R, class T>
inline void dots(const double* A, const T* x, int d, double* s, const T* next = nullptr) {
  const int d16 = d - d % 16;
  double acc[R];
  (void)next;  // the scalar code prefetches nothing
#if defined(__AVX512F__)
  __m512d lo[R], hi[R];
  for (int r = 0; r < R; ++r) lo[r] = hi[r] = _mm512_setzero_pd();
  for (int k = 0; k < d16; k += 16) {
    __m512d xl, xh;
    if (next) {
      __builtin_prefetch(next + k);
      if constexpr (sizeof(T) == 8) __builtin_prefetch(next + k + 8);
    }
    if constexpr (std::is_same_v<T, float>) {
      xl = _mm512_cvtps_pd(_mm256_loadu_ps(x + k));
      xh = _mm512_cvtps_pd(_mm256_loadu_ps(x + k + 8));
    } else {
      xl = _mm512_loadu_pd(x + k);
      xh = _mm512_loadu_pd(x + k + 8);
    }
    for (int r = 0; r < R; ++r) {
      lo[r] = _mm512_fmadd_pd(xl, _mm512_loadu_pd(A + r * d + k), lo[r]);
      hi[r] = _mm512_fmadd_pd(xh, _mm512_loadu_pd(A + r * d + k + 8), hi[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    const __m512d q = _mm512_add_pd(lo[r], hi[r]);
    acc[r] = sum16_from(_mm512_castpd512_pd256(q), _mm512_extractf64x4_pd(q, 1));
  }
#elif defined(__AVX2__) && defined(__FMA__)
  alignas(32) double p[R][16];
  if constexpr (R == 1) {
    dots_avx2<1, 4>(A, x, d, d16, 0, p, next);
  } else {  // partial sums 0-7 of the R rows, then 8-15: each key vector converted once
    dots_avx2<R, 2>(A, x, d, d16, 0, p, next);
    dots_avx2<R, 2>(A, x, d, d16, 8, p, static_cast<const T*>(nullptr));
  }
  for (int r = 0; r < R; ++r)
    acc[r] = sum16_from(_mm256_add_pd(_mm256_load_pd(p[r]), _mm256_load_pd(p[r] + 8)),
                        _mm256_add_pd(_mm256_load_pd(p[r] + 4), _mm256_load_pd(p[r] + 12)));
#else
  for (int r = 0; r < R; ++r) {
    double p[16] = {};
    for (int k = 0; k < d16; ++k) p[k % 16] = std::fma(A[r * d + k], static_cast<double>(x[k]), p[k % 16]);
    acc[r] = sum16(p);
  }
#endif
  for (int r = 0; r < R; ++r) {
    for (int k = d16; k < d; ++k) acc[r] = std::fma(A[r * d + k], static_cast<double>(x[k]), acc[r]);
    s[r] = acc[r];
  }
}

// w[i] = exp(-x[i]) for x[i] >= 0 (NaN: 0), within 2 ulp of the exact value, the same bits on
// every build: x is capped at 1000 (exp(-1000) = 0 in float64), k = round(-x log2 e) (to nearest
// even), r = -x - k ln 2 with fdlibm's two-part ln 2 (|r| <= ln 2 / 2 + tiny), exp(r) by its
// degree-13 Taylor polynomial (truncation < 4e-18 relative) in Horner form with fused
// multiply-adds, times 2^k rounded once: vscalefpd on AVX-512; elsewhere (p 2^k1) 2^k2 with
// k1 = max(k, -1021), k2 = k - k1 >= -422, both powers of two built from the exponent bits: p
// 2^k1 is a normal number (p > 0.7), exact, so only the second product rounds, into the
// subnormals and 0 as vscalefpd does.
namespace expc {
constexpr double c[14] = {1.0,           1.0,            1.0 / 2,          1.0 / 6,           1.0 / 24,
                          1.0 / 120,     1.0 / 720,      1.0 / 5040,       1.0 / 40320,       1.0 / 362880,
                          1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600, 1.0 / 6227020800.0};
constexpr double log2e = 1.4426950408889634, ln2hi = 6.93147180369123816490e-01, ln2lo = 1.90821492927058770002e-10,
                 cap = 1000.0, kmin = -1021.0;
// 2^j for an integral j in [-1022, 1023]
inline double pow2(double j) {
  const std::uint64_t b = static_cast<std::uint64_t>(static_cast<std::int64_t>(j) + 1023) << 52;
  double v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}
}  // namespace expc

inline void exp_neg(const double* x, double* w, size_t n) {
  using namespace expc;
  size_t i = 0;
#if defined(__AVX512F__)
  for (; i + 8 <= n; i += 8) {
    const __m512d y = _mm512_sub_pd(_mm512_setzero_pd(), _mm512_min_pd(_mm512_loadu_pd(x + i), _mm512_set1_pd(cap)));
    const __m512d k = _mm512_roundscale_pd(_mm512_mul_pd(y, _mm512_set1_pd(log2e)),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512d r = _mm512_fnmadd_pd(k, _mm512_set1_pd(ln2lo), _mm512_fnmadd_pd(k, _mm512_set1_pd(ln2hi), y));
    __m512d p = _mm512_set1_pd(c[13]);
    for (int j = 12; j >= 0; --j) p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(c[j]));
    _mm512_storeu_pd(w + i, _mm512_scalef_pd(p, k));
  }
#elif defined(__AVX2__) && defined(__FMA__)
  // 2^j from the exponent bits: j + 1.5 2^52 holds j (two's complement) in its low bits
  const auto pow2v = [](__m256d j) {
    const __m256i b = _mm256_castpd_si256(_mm256_add_pd(j, _mm256_set1_pd(0x1.8p52)));
    return _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(b, _mm256_set1_epi64x(1023)), 52));
  };
  for (; i + 4 <= n; i += 4) {
    const __m256d y = _mm256_sub_pd(_mm256_setzero_pd(), _mm256_min_pd(_mm256_loadu_pd(x + i), _mm256_set1_pd(cap)));
    const __m256d k = _mm256_round_pd(_mm256_mul_pd(y, _mm256_set1_pd(log2e)),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256d r = _mm256_fnmadd_pd(k, _mm256_set1_pd(ln2lo), _mm256_fnmadd_pd(k, _mm256_set1_pd(ln2hi), y));
    __m256d p = _mm256_set1_pd(c[13]);
    for (int j = 12; j >= 0; --j) p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(c[j]));
    const __m256d k1 = _mm256_max_pd(k, _mm256_set1_pd(kmin));
    _mm256_storeu_pd(w + i, _mm256_mul_pd(_mm256_mul_pd(p, pow2v(k1)), pow2v(_mm256_sub_pd(k, k1))));
  }
#endif
  for (; i < n; ++i) {
    const double y = 0.0 - (x[i] < cap ? x[i] : cap);  // as vminpd: NaN gives the cap
    const double k = std::nearbyint(y * log2e);
    const double r = std::fma(-k, ln2lo, std::fma(-k, ln2hi, y));
    double p = c[13];
    for (int j = 12; j >= 0; --j) p = std::fma(p, r, c[j]);
    const double k1 = std::max(k, kmin);
    w[i] = (p * pow2(k1)) * pow2(k - k1);
  }
}

// acc (4 x dv, float64) += sum_i W[r * ws + i] v_{ids[i]} for a block of nb keys (V: n x dv):
// each value row is read once for the 4 rows (a weight 0 where a row does not keep the key).
// Every coordinate takes the keys in order, one fused multiply-add each, on every build (the
// same bits). Tiled by 16 (AVX-512) or 8 (AVX2) value coordinates so that the 4 rows' sums stay
// in registers over the block (a few keys: as many streams as the hardware prefetcher
// follows); the rows of the next block (pf, npf keys) are prefetched one line per 64 bytes.
template <class T>
inline void gather4(const T* V, int dv, const index_t* ids, const double* W, index_t ws, index_t nb, double* acc,
                    const index_t* pf, index_t npf) {
  int k = 0;
  (void)pf, (void)npf;
#if defined(__AVX512F__)
  for (; k + 16 <= dv; k += 16) {
    for (index_t i = 0; i < npf; ++i) {
      const T* v = V + static_cast<size_t>(pf[i]) * dv + k;
      __builtin_prefetch(v);
      if constexpr (sizeof(T) == 8) __builtin_prefetch(v + 8);
    }
    __m512d l[4], h[4];
    for (int r = 0; r < 4; ++r) l[r] = _mm512_loadu_pd(acc + r * dv + k), h[r] = _mm512_loadu_pd(acc + r * dv + k + 8);
    for (index_t i = 0; i < nb; ++i) {
      const T* v = V + static_cast<size_t>(ids[i]) * dv + k;
      __m512d vl, vh;
      if constexpr (std::is_same_v<T, float>) {
        vl = _mm512_cvtps_pd(_mm256_loadu_ps(v));
        vh = _mm512_cvtps_pd(_mm256_loadu_ps(v + 8));
      } else {
        vl = _mm512_loadu_pd(v);
        vh = _mm512_loadu_pd(v + 8);
      }
      for (int r = 0; r < 4; ++r) {
        const __m512d w = _mm512_set1_pd(W[r * ws + i]);
        l[r] = _mm512_fmadd_pd(w, vl, l[r]);
        h[r] = _mm512_fmadd_pd(w, vh, h[r]);
      }
    }
    for (int r = 0; r < 4; ++r) _mm512_storeu_pd(acc + r * dv + k, l[r]), _mm512_storeu_pd(acc + r * dv + k + 8, h[r]);
  }
#elif defined(__AVX2__) && defined(__FMA__)
  for (; k + 8 <= dv; k += 8) {
    if (sizeof(T) == 8 || k % 16 == 0)
      for (index_t i = 0; i < npf; ++i) __builtin_prefetch(V + static_cast<size_t>(pf[i]) * dv + k);
    __m256d l[4], h[4];
    for (int r = 0; r < 4; ++r) l[r] = _mm256_loadu_pd(acc + r * dv + k), h[r] = _mm256_loadu_pd(acc + r * dv + k + 4);
    for (index_t i = 0; i < nb; ++i) {
      const T* v = V + static_cast<size_t>(ids[i]) * dv + k;
      __m256d vl, vh;
      if constexpr (std::is_same_v<T, float>) {
        const __m256 vf = _mm256_loadu_ps(v);
        vl = _mm256_cvtps_pd(_mm256_castps256_ps128(vf));
        vh = _mm256_cvtps_pd(_mm256_extractf128_ps(vf, 1));
      } else {
        vl = _mm256_loadu_pd(v);
        vh = _mm256_loadu_pd(v + 4);
      }
      for (int r = 0; r < 4; ++r) {
        const __m256d w = _mm256_broadcast_sd(W + r * ws + i);
        l[r] = _mm256_fmadd_pd(w, vl, l[r]);
        h[r] = _mm256_fmadd_pd(w, vh, h[r]);
      }
    }
    for (int r = 0; r < 4; ++r) _mm256_storeu_pd(acc + r * dv + k, l[r]), _mm256_storeu_pd(acc + r * dv + k + 4, h[r]);
  }
#endif
  for (; k < dv; ++k)
    for (index_t i = 0; i < nb; ++i) {
      const double vk = static_cast<double>(V[static_cast<size_t>(ids[i]) * dv + k]);
      for (int r = 0; r < 4; ++r) acc[r * dv + k] = std::fma(W[r * ws + i], vk, acc[r * dv + k]);
    }
}

// Per query row: the CSR of selected keys (ids ascending) with their float64 scores.
struct Selection {
  std::vector<std::int64_t> lims, ids;
  std::vector<double> scores;
  std::int64_t tested = 0;  // full rows read (candidates the codes could not exclude)
};

// The keys (and the running max ||v||) of one kv head as codes; grows by append.
template <class T>
class HeadCodes {
 public:
  HeadCodes(int d, int dv) : d_(d), dv_(dv), cs_(d, 1.0) {}
  int dim() const { return d_; }
  int value_dim() const { return dv_; }
  index_t size() const { return n_; }
  double key_norm_max() const { return kmax_; }
  double value_norm_max() const { return vmax_; }
  size_t memory_bytes() const { return codes_.size() + 4 * sizeof(double) * scale_.size(); }

  // Appends count keys (count x d) and their values (count x dv, for max ||v|| only).
  void append(const T* keys, const T* values, index_t count) {
    if (n_ == 0 && count > 0) channel_scales(keys, count);
    codes_.resize(static_cast<size_t>(n_ + count) * d_);
    for (auto* v : {&scale_, &cfac_, &resid_, &xnorm_}) v->resize(n_ + count);
    for (index_t i = 0; i < count; ++i) {
      code(n_ + i, keys + static_cast<size_t>(i) * d_);
      kmax_ = std::max(kmax_, xnorm_[n_ + i]);
      vmax_ = std::max(vmax_, norm_up(values + static_cast<size_t>(i) * dv_, dv_));
    }
    n_ += count;
  }

  // Every row of Q (m x d) plain: no rescaling needed by the Python layer's ScaledRows (its
  // bound ||q|| max ||k|| within 2^+-400, or zero), so scores and weights stay in range.
  bool plain(const T* Q, index_t m) const {
    for (index_t j = 0; j < m; ++j) {
      const double qk = norm_up(Q + j * d_, d_) * kmax_;
      if (qk != 0 && !(qk <= 0x1p399 && qk >= 0x1p-399)) return false;
    }
    return true;
  }

  // Exact top-r (r >= 1) by float64 score of the rows of Q among the keys K (n x d, the keys
  // coded here, same order), or with thresholds t (m values) every key with score >= t_j.
  Selection select(const T* Q, index_t m, const T* K, index_t r, const double* t, int threads) const {
    std::vector<IntRow> rows;
    std::vector<std::int16_t> qall;
    prepare(Q, m, &rows, &qall);
    const bool topk = t == nullptr;
    Scan sc = scan(rows, qall, m, r, t, threads);
    const index_t chunks = sc.chunks;
    const auto& cand = sc.cand;
    const auto& heap = sc.heap;
    Selection out;
    out.lims.assign(m + 1, 0);
    std::vector<std::vector<std::pair<double, index_t>>> kept(m);
    std::vector<std::int64_t> tested(m, 0);
    parallel_for(m, threads_for_work(threads, 1e3 * m), [&](index_t j, int) {
      double cut = topk ? -kInf : t[j];
      if (topk) {  // L: the r-th largest lb over all chunks (-inf when fewer than r keys)
        std::vector<double> all;
        for (index_t ch = 0; ch < chunks; ++ch) all.insert(all.end(), heap[ch * m + j].begin(), heap[ch * m + j].end());
        if (static_cast<index_t>(all.size()) >= r) {
          std::nth_element(all.begin(), all.begin() + (r - 1), all.end(), std::greater<double>());
          cut = all[r - 1];
        }
      }
      const double* a = rows[j].ad.data();
      auto& kj = kept[j];
      for (index_t ch = 0; ch < chunks; ++ch) {
        const auto& c = cand[ch * m + j];
        for (size_t e = 0; e < c.size(); ++e) {
          if (c[e].second < cut) continue;
          if (e + 4 < c.size()) {
            const char* p = reinterpret_cast<const char*>(K + static_cast<size_t>(c[e + 4].first) * d_);
            for (size_t off = 0; off < sizeof(T) * static_cast<size_t>(d_); off += 64) __builtin_prefetch(p + off);
          }
          ++tested[j];
          double s;
          dots<1>(a, K + static_cast<size_t>(c[e].first) * d_, d_, &s);
          if (topk || s >= t[j]) kj.emplace_back(s, c[e].first);
        }
      }
      if (topk && static_cast<index_t>(kj.size()) > r) {  // score descending, ties to the smaller id
        auto better = [](const std::pair<double, index_t>& x, const std::pair<double, index_t>& y) {
          return x.first > y.first || (x.first == y.first && x.second < y.second);
        };
        std::nth_element(kj.begin(), kj.begin() + (r - 1), kj.end(), better);
        kj.resize(r);
      }
      std::sort(kj.begin(), kj.end(), [](const auto& x, const auto& y) { return x.second < y.second; });
    });
    for (index_t j = 0; j < m; ++j) {
      out.lims[j + 1] = out.lims[j] + static_cast<std::int64_t>(kept[j].size());
      out.tested += tested[j];
    }
    out.ids.reserve(out.lims[m]);
    out.scores.reserve(out.lims[m]);
    for (index_t j = 0; j < m; ++j)
      for (const auto& [s, id] : kept[j]) {
        out.ids.push_back(id);
        out.scores.push_back(s);
      }
    return out;
  }

  // Certified top-p (0 < p < 1) of each row of Q (m x d) over all n keys, the softmax over the
  // kept prefix and its V gather (V: n x dv), as softmax_attention(top_p=p) (docs/attention.md,
  // "Top-p with a certificate"). Per row: s* = the largest float64 score (exact top-1), R = the
  // keys with score >= t = s* - g / scale - slack (g = log(p n / (1 - p)), slack: the float64
  // rounding of a score), w = exp(scale (s - s_R)) with s_R = max over R; every key outside R has
  // w <= exp(scale (t + slack - s_R)), so with U = (n - |R|) that bound the total mass Z lies in
  // [Z_R, Z_R + U]; the kept prefix P (R by score descending, ties to the smaller id) is the
  // shortest with Z_P >= p (Z_R + U), its dropped share is at most (Z_R - Z_P + U) / (Z_R + U)
  // (bound). Writes out (m x dv), bound, entries = |P| and the CSR of P (ids ascending, no
  // scores) into *kept (kept->tested: candidate rows, summed over the rows). Returns false when
  // the general path must run (a threshold or an output not finite).
  //
  // Cost: one scan of the codes finds the top-1 and R's candidates together (scan's `below`);
  // then per group of 4 rows each candidate key row is read once for the 4 rows (dots<4>, float64),
  // R is cut by weight buckets instead of sorted (only the bucket holding the cut is sorted, for
  // the tie rule), and the kept keys' value rows are read once for the 4 rows (gather4); the two
  // passes run in parts of kPart keys over the threads.
  bool softmax_top_p(const T* Q, index_t m, const T* K, const T* V, double p, double scale, int threads, double* out,
                     double* bound, std::int64_t* entries, Selection* kept) const {
    const index_t n = n_;
    const int d = d_, dv = dv_;
    const double gam = (d + 4) * kU / (1 - (d + 4) * kU);
    const double gap = std::max(std::log(p * static_cast<double>(n) / (1.0 - p)), 0.0);
    std::vector<IntRow> rows;
    std::vector<std::int16_t> qall;
    prepare(Q, m, &rows, &qall);
    // One scan for the top-1 and the candidates of R: |s*| <= (1 + gamma) ||q|| max ||k|| bounds
    // the slack below, so a margin of twice gap / scale + that bound keeps every key with ub >= t.
    std::vector<double> t(m), slack(m), qk(m), below(m);
    for (index_t j = 0; j < m; ++j) {
      qk[j] = norm_up(Q + j * d, d) * kmax_;
      below[j] = 2 * (gap / scale + 2 * gam * (2.01 * qk[j]) + 1e-300);
      if (!std::isfinite(below[j])) return false;
    }
    const Scan sc = scan(rows, qall, m, 0, nullptr, threads, below.data());
    std::int64_t tested = 0;
    for (index_t j = 0; j < m; ++j) {  // s*: the exact top-1 among the keys with ub >= max lb
      double mlb = -kInf, smax = -kInf;
      for (index_t ch = 0; ch < sc.chunks; ++ch) mlb = std::max(mlb, sc.heap[ch * m + j][0]);
      for (index_t ch = 0; ch < sc.chunks; ++ch)
        for (const auto& c : sc.cand[ch * m + j])
          if (!(c.second < mlb)) {
            ++tested;
            double s;
            dots<1>(rows[j].ad.data(), K + static_cast<size_t>(c.first) * d, d, &s);
            smax = std::max(smax, s);
          }
      slack[j] = 2 * gam * (qk[j] + std::fabs(smax)) + 1e-300;
      t[j] = smax - gap / scale - slack[j];
      if (!std::isfinite(t[j])) return false;
    }
    kept->lims.assign(m + 1, 0);
    kept->ids.clear();
    kept->scores.clear();
    kept->tested = tested;
    std::vector<std::uint8_t> mask(n, 0);
    std::vector<double> A(4 * static_cast<size_t>(d));
    std::vector<index_t> uni;
    std::vector<double> acc(4 * static_cast<size_t>(dv));
    bool ok = true;
    for (index_t j0 = 0; j0 < m; j0 += 4) {
      const int g = static_cast<int>(std::min<index_t>(4, m - j0));
      // the union of the group's candidates, ids ascending
      uni.clear();
      for (int r = 0; r < g; ++r)
        for (index_t ch = 0; ch < sc.chunks; ++ch) {
          const auto& c = sc.cand[ch * m + j0 + r];
          for (const auto& e : c) {
            if (e.second < t[j0 + r]) continue;
            ++kept->tested;
            if (!mask[e.first]) uni.push_back(e.first);
            mask[e.first] |= static_cast<std::uint8_t>(1u << r);
          }
        }
      ascending(&uni, &mask);
      // R per row: (score, id), ids ascending
      std::fill(A.begin(), A.end(), 0.0);
      for (int r = 0; r < g; ++r) std::copy(rows[j0 + r].ad.begin(), rows[j0 + r].ad.end(), A.begin() + r * d);
      // in parts of kPart keys (a partition by size alone: the same answer for any thread count)
      const size_t nu = uni.size(), parts = std::max<size_t>(1, (nu + kPart - 1) / kPart);
      std::vector<std::vector<double>> ps(parts * g);
      std::vector<std::vector<index_t>> pi(parts * g);
      parallel_for(static_cast<index_t>(parts), threads_for_work(threads, 4.0 * nu * d), [&](index_t b, int) {
        interrupt::check();
        const size_t e1 = std::min(nu, (b + 1) * kPart);
        for (size_t e = b * kPart; e < e1; ++e) {
          double s4[4];
          dots<4>(A.data(), K + static_cast<size_t>(uni[e]) * d, d, s4,
                  K + static_cast<size_t>(uni[std::min(e + 2, e1 - 1)]) * d);
          for (int r = 0; r < g; ++r)  // ub < t implies fl < t: the candidates' filter is implied
            if (s4[r] >= t[j0 + r]) ps[b * g + r].push_back(s4[r]), pi[b * g + r].push_back(uni[e]);
        }
      });
      std::vector<std::vector<double>> rs(g);
      std::vector<std::vector<index_t>> rid(g);
      for (int r = 0; r < g; ++r)
        for (size_t b = 0; b < parts; ++b) {
          rs[r].insert(rs[r].end(), ps[b * g + r].begin(), ps[b * g + r].end());
          rid[r].insert(rid[r].end(), pi[b * g + r].begin(), pi[b * g + r].end());
        }
      // the kept prefix of each row (ids ascending) and its weights
      std::vector<std::vector<index_t>> pid(g);
      std::vector<std::vector<double>> pw(g);
      std::vector<double> zp(g, 0.0);
      for (int r = 0; r < g; ++r)
        if (rs[r].empty()) return false;  // cannot happen (s*'s key is in R); no certificate without it
      parallel_for(g, threads_for_work(threads, 64.0 * nu), [&](index_t r, int) {
        const index_t j = j0 + r;
        double zk = 0, zpr = 0, u = 0;
        const index_t take = cut_prefix(rs[r], rid[r], n, scale, t[j] + slack[j], p, &pid[r], &pw[r], &zk, &zpr, &u);
        zp[r] = zpr;
        entries[j] = take;
        bound[j] = take == n ? 0.0 : (std::max(zk - zpr, 0.0) + u) / (zk + u);
      });
      for (int r = 0; r < g; ++r) {
        kept->ids.insert(kept->ids.end(), pid[r].begin(), pid[r].end());
        kept->lims[j0 + r + 1] = static_cast<std::int64_t>(kept->ids.size());
      }
      // one pass over the union of the kept keys' value rows for the group: the union's ids
      // (ascending) and per row its weights (0 where the row does not keep the key)
      std::fill(acc.begin(), acc.end(), 0.0);
      uni.clear();
      for (int r = 0; r < g; ++r)
        for (index_t id : pid[r]) {
          if (!mask[id]) uni.push_back(id);
          mask[id] = 1;
        }
      ascending(&uni, &mask);
      const size_t nk = uni.size();
      std::vector<double> W(4 * nk, 0.0);
      for (int r = 0; r < g; ++r) {
        size_t e = 0;
        for (size_t x = 0; x < pid[r].size(); ++x) {
          while (uni[e] != pid[r][x]) ++e;
          W[r * nk + e] = pw[r][x];
        }
      }
      // in parts of kPart keys, each with its own sums, added in part order
      constexpr size_t kB = 8;
      const size_t gparts = std::max<size_t>(1, (nk + kPart - 1) / kPart);
      std::vector<double> pacc(gparts * 4 * static_cast<size_t>(dv), 0.0);
      parallel_for(static_cast<index_t>(gparts), threads_for_work(threads, 4.0 * nk * dv), [&](index_t b, int) {
        interrupt::check();
        const size_t e1 = std::min(nk, (b + 1) * kPart);
        double* pa = pacc.data() + b * 4 * static_cast<size_t>(dv);
        for (size_t b0 = b * kPart; b0 < e1; b0 += kB) {
          const size_t nb = std::min(kB, e1 - b0), npf = b0 + kB < e1 ? std::min(kB, e1 - b0 - kB) : 0;
          gather4(V, dv, uni.data() + b0, W.data() + b0, static_cast<index_t>(nk), static_cast<index_t>(nb), pa,
                  uni.data() + b0 + kB, static_cast<index_t>(npf));
        }
      });
      for (size_t b = 0; b < gparts; ++b)
        for (size_t x = 0; x < acc.size(); ++x) acc[x] += pacc[b * acc.size() + x];
      for (int r = 0; r < g; ++r) {
        double* o = out + static_cast<size_t>(j0 + r) * dv;
        for (int k = 0; k < dv; ++k) {
          o[k] = acc[r * dv + k] / zp[r];
          ok &= std::isfinite(o[k]);
        }
      }
    }
    return ok;
  }

  // Sorts the distinct ids *uni (those marked in *mask) ascending and clears their marks: a scan
  // of the marks when they are dense, else a sort.
  static void ascending(std::vector<index_t>* uni, std::vector<std::uint8_t>* mask) {
    const size_t n = mask->size();
    if (uni->size() * 16 >= n) {
      uni->clear();
      for (size_t i = 0; i < n; ++i)
        if ((*mask)[i]) uni->push_back(static_cast<index_t>(i)), (*mask)[i] = 0;
      return;
    }
    std::sort(uni->begin(), uni->end());
    for (index_t id : *uni) (*mask)[id] = 0;
  }

  // The kept prefix of one row's report R (scores s, ids ascending): w = exp(scale (s - s_R)),
  // Z_R (*zr), U = (n - |R|) exp(scale (cut - s_R)) (cut = t + slack), and the shortest prefix P
  // of R by score descending (ties to the smaller id) with Z_P >= p (Z_R + U): its ids ascending
  // (*ids), weights (*w), Z_P (*zp), U (*uu); returns |P|. Selection without a sort of R: x = scale (s_R -
  // s) >= 0 is non-decreasing as s decreases (subtraction and scaling round monotonically), so
  // the buckets floor(x B / x_max) order the keys as their scores do, and equal scores share a
  // bucket. Whole buckets are taken while the mass before them plus theirs stays below the
  // target; only the bucket where the target is reached is sorted (score descending, id
  // ascending) and taken key by key. Keys of one bucket all precede (in score order) those of
  // the next, so P is a prefix of R in the order of the definition.
  static index_t cut_prefix(const std::vector<double>& s, const std::vector<index_t>& id, index_t n, double scale,
                            double cut, double p, std::vector<index_t>* ids, std::vector<double>* w, double* zr,
                            double* zp, double* uu) {
    const size_t nr = s.size();
    const double top = *std::max_element(s.begin(), s.end());
    std::vector<double> x(nr), wt(nr);
    double z = 0, xmax = 0;
    for (size_t e = 0; e < nr; ++e) {
      x[e] = (top - s[e]) * scale;
      xmax = std::max(xmax, x[e]);
    }
    exp_neg(x.data(), wt.data(), nr);
    for (size_t e = 0; e < nr; ++e) z += wt[e];
    const double u = static_cast<index_t>(nr) == n
                         ? 0.0
                         : static_cast<double>(n - static_cast<index_t>(nr)) * std::exp(std::min(scale * (cut - top), 700.0));
    const double need = p * (z + u);
    *zr = z;
    *uu = u;
    size_t nb = 1;
    while (nb < 65536 && nb * 8 < nr) nb <<= 1;
    const double inv = xmax > 0 ? static_cast<double>(nb) / xmax : 0.0;
    std::vector<std::uint32_t> b(nr);
    std::vector<double> bsum(nb, 0.0);
    for (size_t e = 0; e < nr; ++e) {
      b[e] = static_cast<std::uint32_t>(std::min<double>(static_cast<double>(nb - 1), x[e] * inv));
      bsum[b[e]] += wt[e];
    }
    std::vector<std::uint8_t> keep(nr, 0);
    double prior = 0;
    size_t cb = 0;
    for (; cb < nb && prior + bsum[cb] < need; ++cb) prior += bsum[cb];
    for (size_t e = 0; e < nr; ++e) keep[e] = b[e] < cb;
    // key by key from the bucket holding the cut (and, should rounding leave the target unmet,
    // the next ones)
    std::vector<size_t> in;
    for (; cb < nb && prior < need; ++cb) {
      in.clear();
      for (size_t e = 0; e < nr; ++e)
        if (b[e] == cb) in.push_back(e);
      std::sort(in.begin(), in.end(), [&](size_t a, size_t c) { return s[a] > s[c] || (s[a] == s[c] && a < c); });
      for (size_t k = 0; k < in.size() && prior < need; ++k) {
        keep[in[k]] = 1;
        prior += wt[in[k]];
      }
    }
    ids->clear();
    w->clear();
    double zk = 0;
    for (size_t e = 0; e < nr; ++e)
      if (keep[e]) {
        ids->push_back(id[e]);
        w->push_back(wt[e]);
        zk += wt[e];
      }
    *zp = zk;
    return static_cast<index_t>(ids->size());
  }

  // The query rows of Q (m x d) as IntRows and their integer codes side by side (m x d).
  void prepare(const T* Q, index_t m, std::vector<IntRow>* rows, std::vector<std::int16_t>* qall) const {
    rows->resize(m);
    qall->assign(static_cast<size_t>(m) * d_, 0);
    for (index_t j = 0; j < m; ++j) {
      (*rows)[j] = int_row(Q + j * d_, cs_.data(), d_);
      std::copy((*rows)[j].q.begin(), (*rows)[j].q.end(), qall->begin() + j * d_);
    }
  }

  // One scan of the codes: per (chunk, row) the candidates (id, ub) in id order and, for top-r
  // (t == nullptr), a min-heap of the r largest lb seen (see the header comment). With `below`
  // (m margins >= 0, r and t unused): the top-1 and a report under it in one scan, keeping every
  // key with ub >= M - below_j, M the largest lb the chunk has seen so far (heap: {M}); M only
  // rises and stays <= the exact maximum score, so every key whose score is >= (maximum score -
  // below_j) is kept.
  struct Scan {
    index_t chunks = 0;
    std::vector<std::vector<std::pair<index_t, double>>> cand;
    std::vector<std::vector<double>> heap;
  };

  Scan scan(const std::vector<IntRow>& rows, const std::vector<std::int16_t>& qall, index_t m, index_t r,
            const double* t, int threads, const double* below = nullptr) const {
    const double gam = gamma_k(d_ + 4, kU);
    const int nt = threads_for_work(threads, static_cast<double>(n_) * m * d_);
    const index_t chunks = std::max<index_t>(1, std::min<index_t>((n_ + kChunk - 1) / kChunk, nt > 1 ? 8 * nt : 1));
    const index_t per = (n_ + chunks - 1) / chunks;
    const bool topk = t == nullptr;
    Scan out;
    out.chunks = chunks;
    auto& cand = out.cand;
    auto& heap = out.heap;
    cand.resize(chunks * m);
    heap.resize(topk || below ? chunks * m : 0);
    constexpr index_t kBlock = 256;  // keys whose int dots are taken before their bounds
    parallel_for(chunks, nt, [&](index_t ch, int) {
      std::vector<std::int32_t> dots(static_cast<size_t>(m) * kBlock);
      std::vector<double> lb(kBlock), ub(kBlock);
      const index_t end = std::min(n_, (ch + 1) * per);
      for (index_t b0 = ch * per; b0 < end; b0 += kBlock) {
        interrupt::check();
        const index_t nb = std::min(kBlock, end - b0);
        int_dots(&codes_[static_cast<size_t>(b0) * d_], nb, qall.data(), m, d_, dots.data(), kBlock);
        const double *sc = &scale_[b0], *cf = &cfac_[b0], *rs = &resid_[b0], *xn = &xnorm_[b0];
        for (index_t j = 0; j < m; ++j) {
          const double sa = rows[j].sa, ra = rows[j].ra, na = rows[j].na, gna = gam * rows[j].na0;
          const std::int32_t* dj = dots.data() + j * kBlock;
          double* lo = lb.data();
          double* hi = ub.data();
#pragma omp simd
          for (index_t i = 0; i < nb; ++i) {
            const double main = sc[i] * (sa * dj[i]);
            const double w = ra * cf[i] + na * rs[i] + gna * xn[i];
            const double sl = w + 4 * kU * (std::fabs(main) + w) + 1e-300;
            lo[i] = main - sl;  // NaN (inf - inf): a candidate below
            hi[i] = main + sl;
          }
          auto& c = cand[ch * m + j];
          if (below) {
            auto& hp = heap[ch * m + j];
            if (hp.empty()) hp.push_back(-kInf);
            double mx = hp[0];
            for (index_t i = 0; i < nb; ++i) {
              mx = std::max(mx, lo[i]);  // NaN lo (an uncodable key): mx unchanged, the key kept
              if (!(hi[i] < mx - below[j])) c.emplace_back(b0 + i, hi[i]);
            }
            hp[0] = mx;
            continue;
          }
          if (!topk) {
            for (index_t i = 0; i < nb; ++i)
              if (!(hi[i] < t[j])) c.emplace_back(b0 + i, hi[i]);
            continue;
          }
          auto& hp = heap[ch * m + j];
          index_t i = 0;
          for (; i < nb && static_cast<index_t>(hp.size()) < r; ++i) {
            hp.push_back(lo[i]);
            std::push_heap(hp.begin(), hp.end(), std::greater<double>());
            c.emplace_back(b0 + i, hi[i]);
          }
          if (i == nb) continue;
          double cut = hp.front();  // the heap's smallest lb: only rises
          auto one = [&](index_t l) {
            if (hi[l] < cut) return;  // lb <= ub: neither a candidate nor a heap entry
            if (lo[l] > cut) {
              std::pop_heap(hp.begin(), hp.end(), std::greater<double>());
              hp.back() = lo[l];
              std::push_heap(hp.begin(), hp.end(), std::greater<double>());
              cut = hp.front();
            }
            if (!(hi[l] < cut)) c.emplace_back(b0 + l, hi[l]);
          };
          // eight keys at a time: most of a long scan is below the cut (one vector compare)
          for (; i + 8 <= nb; i += 8) {
            bool any = false;
            for (int l = 0; l < 8; ++l) any |= !(hi[i + l] < cut);
            if (any)
              for (int l = 0; l < 8; ++l) one(i + l);
          }
          for (; i < nb; ++i) one(i);
        }
      }
    });
    return out;
  }

 private:
  // Per-channel powers of two cs_k >= max |x_k| over the first keys appended (1 for float64 keys,
  // whose division by cs_k could underflow, and where a channel is 0 or the scale is extreme).
  // Keys are coded as x / cs (exact for float32 keys), queries as a * cs, so <a, x> is unchanged
  // and a channel of large values (the "massive activations" of LLM keys) no longer coarsens the
  // codes of every other channel. Later keys beyond cs_k only widen their own bound (resid).
  void channel_scales(const T* keys, index_t count) {
    cs_.assign(d_, 1.0);
    if (!std::is_same_v<T, float>) return;
    for (int k = 0; k < d_; ++k) {
      double mx = 0;
      for (index_t i = 0; i < count; ++i) mx = std::max(mx, std::fabs(static_cast<double>(keys[i * d_ + k])));
      int e = 0;
      if (mx > 0 && std::isfinite(mx)) std::frexp(mx, &e);  // mx < 2^e
      cs_[k] = std::ldexp(1.0, std::max(-500, std::min(500, e)));
    }
  }

  void code(index_t i, const T* x0) {
    std::int8_t* c = &codes_[static_cast<size_t>(i) * d_];
    xnorm_[i] = norm_up(x0, d_);
    std::vector<double> xs(d_);
    for (int k = 0; k < d_; ++k) xs[k] = static_cast<double>(x0[k]) / cs_[k];
    const double* x = xs.data();
    double mx = 0;
    for (int k = 0; k < d_; ++k) mx = std::max(mx, std::fabs(x[k]));
    std::fill(c, c + d_, std::int8_t{0});
    scale_[i] = cfac_[i] = resid_[i] = 0;
    if (mx == 0) return;  // exact: all codes 0
    if (mx < 1e-290 || mx > 1e290) {  // always a candidate
      resid_[i] = kInf;
      return;
    }
    double c2 = 0;
    scale_[i] = to_integers(x, d_, mx, 127.0, c, &resid_[i], &c2);
    cfac_[i] = scale_[i] * std::sqrt(c2) * (1 + 4 * kU);
  }

  int d_, dv_;
  index_t n_ = 0;
  double kmax_ = 0, vmax_ = 0;
  std::vector<std::int8_t> codes_;
  std::vector<double> cs_;                            // per channel: the scale of the codes
  std::vector<double> scale_, cfac_, resid_, xnorm_;  // per key: s, s ||c||, ||x/cs - s c||, ||x||
};

// Softmax over each row's selected keys: out_j = sum_e w_e v_e / sum_e w_e with
// w_e = exp(scale (s_e - s_max)) in float64 (exp_neg(scale (s_max - s_e)), scale > 0; s_max: the
// row's largest kept score, w <= 1), and
// the certified bound of the dropped share of the mass: every key not kept has a float64 score
// <= cut (the smallest kept one for top-r, the threshold otherwise) plus the float64 slack of a
// score, so dropped <= (visible - kept) exp(scale (cut + slack - s_max)) and the share is
// <= dropped / (den + dropped). Rows: m; V: n x dv; qk[j] >= ||q_j|| max ||k||.
// Returns false when a weighted sum is not finite (values near the float64 maximum): the caller
// then takes the general path.
template <class T>
bool softmax_rows(const Selection& sel, index_t m, const T* V, int dv, index_t visible, double scale,
                  const double* cut, const double* qk, int d, double* out, double* bound, std::int64_t* entries) {
  const double gam = (d + 4) * kU / (1 - (d + 4) * kU);
  bool ok = true;
  for (index_t j = 0; j < m; ++j) {
    double* o = out + static_cast<size_t>(j) * dv;
    std::fill(o, o + dv, 0.0);
    const std::int64_t b = sel.lims[j], e = sel.lims[j + 1];
    entries[j] = e - b;
    if (e == b) {
      bound[j] = visible > 0 ? 1.0 : 0.0;
      continue;
    }
    double smax = -kInf, smin = kInf;
    for (std::int64_t x = b; x < e; ++x) smax = std::max(smax, sel.scores[x]), smin = std::min(smin, sel.scores[x]);
    std::vector<double> xs(e - b), ws(e - b);
    for (std::int64_t x = b; x < e; ++x) xs[x - b] = scale * (smax - sel.scores[x]);
    exp_neg(xs.data(), ws.data(), xs.size());
    double den = 0;
    for (std::int64_t x = b; x < e; ++x) {
      if (x + 8 < e) {
        const char* p = reinterpret_cast<const char*>(V + static_cast<size_t>(sel.ids[x + 8]) * dv);
        for (size_t off = 0; off < sizeof(T) * static_cast<size_t>(dv); off += 64) __builtin_prefetch(p + off);
      }
      const double w = ws[x - b];
      den += w;
      const T* v = V + static_cast<size_t>(sel.ids[x]) * dv;
      for (int k = 0; k < dv; ++k) o[k] += w * static_cast<double>(v[k]);
    }
    for (int k = 0; k < dv; ++k) {
      o[k] /= den;
      ok &= std::isfinite(o[k]);
    }
    const double c = cut ? cut[j] : smin;
    const double slack = 2 * gam * (qk[j] + std::fabs(c)) + 1e-300;
    const double dropped = static_cast<double>(visible - (e - b)) * std::exp(std::min(scale * (c + slack - smax), 700.0));
    bound[j] = visible == e - b ? 0.0 : dropped / (den + dropped);
  }
  return ok;
}

}  // namespace attend
}  // namespace hsrgeom
