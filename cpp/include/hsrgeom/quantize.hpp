// Vectors rounded to small integers with a certified residual: the 8-bit codes of QuantizedScan
// and of the attention kernels' keys (attend.hpp), and their integer query normals; and the
// exact int8 x int16 dot products of QuantizedScan's 16-point code blocks (block_dots).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define HSRGEOM_X86_DISPATCH 1
#include <immintrin.h>
#endif

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

// A vector (a query normal) as 16-bit integers: q = round(a / sa) with |q_k| <= qmax (chosen by
// the caller so that a d-term sum of q_k c_k with |c_k| <= 127 fits in int32); ra >= ||a - sa q||,
// na >= ||a||. sa = 0: no integer form (a = 0, exact with q = 0 and ra = 0; or max|a_k| outside
// [1e-290, 1e290], or qmax < 1: q = 0 and ra = na).
struct IntNormal {
  std::vector<std::int16_t> q;
  double sa = 0, ra = 0, na = 0;
};
template <class T>
IntNormal int_normal(const T* a, int d, double qmax) {
  IntNormal r;
  r.q.assign(d, 0);
  r.na = norm_up(a, d);
  double mx = 0;
  for (int k = 0; k < d; ++k) mx = std::max(mx, std::fabs(static_cast<double>(a[k])));
  if (mx == 0) return r;
  if (!(mx >= 1e-290 && mx <= 1e290) || qmax < 1) {
    r.ra = r.na;
    return r;
  }
  double q2 = 0;
  r.sa = to_integers(a, d, mx, qmax, r.q.data(), &r.ra, &q2);
  return r;
}
// The largest qmax for which every d-term sum of q_k c_k (|c_k| <= 127) fits in int32.
inline double int16_qmax(int d) { return std::min(32767.0, std::floor(2147483647.0 / (127.0 * d))); }

// ---- dot products of 16-point code blocks ---------------------------------------------------
// Layout (QuantizedScan): the codes of kCodeLanes consecutive points form one block of
// code_block_bytes(d) bytes; coordinates go in pairs, byte (t * 16 + p) * 2 + h of a block holds
// c[p][2t + h] (0 for a padded coordinate, d odd, or a padded point past n). A query is
// dh = ceil(d / 2) int32 words, word t = the int16 pair (q[2t], q[2t + 1]) (low half first,
// q[d] = 0 for odd d): one pmaddwd lane multiplies a point's coordinate pair by it.
// block_dots(blocks, nb, qp, m, dh, out): out[(b * m + j) * 16 + p] = <q_j, c_p> of point p of
// block b, exactly, for every block b < nb and query j < m. Exact because every partial sum is
// bounded by d * 127 * qmax < 2^31 (|c| <= 127, |q| <= qmax: QuantizedScan's query qmax); the
// order of additions does not matter in integers, so every kernel gives the same int32.
// The kernels differ only in instruction set, picked at run time (block_dots_kernel): the
// vector width of a build's -march does not decide it, and no loop runs over d with a vector
// factor larger than d (a 16-coordinate dot with 32-lane vectors ran as scalar code: the
// native build was 3.6x slower than the portable one, docs/performance.md).
constexpr int kCodeLanes = 16;
inline std::size_t code_block_bytes(int d) { return static_cast<std::size_t>(32) * ((d + 1) / 2); }
inline std::int32_t pack_pair(std::int16_t lo, std::int16_t hi) {
  return static_cast<std::int32_t>(static_cast<std::uint32_t>(static_cast<std::uint16_t>(lo)) |
                                   (static_cast<std::uint32_t>(static_cast<std::uint16_t>(hi)) << 16));
}

using BlockDotsFn = void (*)(const std::int8_t* blocks, index_t nb, const std::int32_t* qp, index_t m, int dh,
                             std::int32_t* out);

// The instruction sets, in order: a request for one the CPU lacks falls back to the best below.
enum class DotIsa : int { kScalar = 0, kSse2 = 1, kAvx2 = 2, kAvx512 = 3 };

inline void block_dots_scalar(const std::int8_t* blocks, index_t nb, const std::int32_t* qp, index_t m, int dh,
                              std::int32_t* out) {
  const std::size_t bb = static_cast<std::size_t>(32) * dh;
  for (index_t b = 0; b < nb; ++b) {
    const std::int8_t* c = blocks + b * bb;
    for (index_t j = 0; j < m; ++j) {
      std::int32_t acc[kCodeLanes] = {};
      for (int t = 0; t < dh; ++t) {
        const std::uint32_t w = static_cast<std::uint32_t>(qp[j * dh + t]);
        const std::int32_t lo = static_cast<std::int16_t>(w & 0xffffu), hi = static_cast<std::int16_t>(w >> 16);
        const std::int8_t* ct = c + 32 * t;
        for (int p = 0; p < kCodeLanes; ++p) acc[p] += lo * ct[2 * p] + hi * ct[2 * p + 1];
      }
      std::memcpy(out + (b * m + j) * kCodeLanes, acc, sizeof(acc));
    }
  }
}

#ifdef HSRGEOM_X86_DISPATCH
// Two queries per pass over a block share its widened codes; an odd last query runs alone.
inline void block_dots_sse2(const std::int8_t* blocks, index_t nb, const std::int32_t* qp, index_t m, int dh,
                            std::int32_t* out) {
  const std::size_t bb = static_cast<std::size_t>(32) * dh;
  for (index_t b = 0; b < nb; ++b) {
    const std::int8_t* c = blocks + b * bb;
    for (index_t j = 0; j < m; j += 2) {
      const bool two = j + 1 < m;
      const std::int32_t* q0 = qp + j * dh;
      const std::int32_t* q1 = two ? q0 + dh : q0;
      __m128i a[4], e[4];
      for (int r = 0; r < 4; ++r) a[r] = e[r] = _mm_setzero_si128();
      for (int t = 0; t < dh; ++t) {
        const __m128i x0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 32 * t));
        const __m128i x1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 32 * t + 16));
        // int8 -> int16: each byte doubled into a 16-bit lane, then shifted down with its sign
        const __m128i w[4] = {_mm_srai_epi16(_mm_unpacklo_epi8(x0, x0), 8), _mm_srai_epi16(_mm_unpackhi_epi8(x0, x0), 8),
                              _mm_srai_epi16(_mm_unpacklo_epi8(x1, x1), 8), _mm_srai_epi16(_mm_unpackhi_epi8(x1, x1), 8)};
        const __m128i v0 = _mm_set1_epi32(q0[t]), v1 = _mm_set1_epi32(q1[t]);
        for (int r = 0; r < 4; ++r) {
          a[r] = _mm_add_epi32(a[r], _mm_madd_epi16(w[r], v0));
          e[r] = _mm_add_epi32(e[r], _mm_madd_epi16(w[r], v1));
        }
      }
      std::int32_t* o = out + (b * m + j) * kCodeLanes;
      for (int r = 0; r < 4; ++r) _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 4 * r), a[r]);
      if (two)
        for (int r = 0; r < 4; ++r) _mm_storeu_si128(reinterpret_cast<__m128i*>(o + kCodeLanes + 4 * r), e[r]);
    }
  }
}

__attribute__((target("avx2"))) inline void block_dots_avx2(const std::int8_t* blocks, index_t nb,
                                                             const std::int32_t* qp, index_t m, int dh,
                                                             std::int32_t* out) {
  const std::size_t bb = static_cast<std::size_t>(32) * dh;
  for (index_t b = 0; b < nb; ++b) {
    const std::int8_t* c = blocks + b * bb;
    for (index_t j = 0; j < m; j += 2) {
      const bool two = j + 1 < m;
      const std::int32_t* q0 = qp + j * dh;
      const std::int32_t* q1 = two ? q0 + dh : q0;
      __m256i a0 = _mm256_setzero_si256(), a1 = a0, e0 = a0, e1 = a0;
      for (int t = 0; t < dh; ++t) {
        const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 32 * t)));
        const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 32 * t + 16)));
        const __m256i v0 = _mm256_set1_epi32(q0[t]), v1 = _mm256_set1_epi32(q1[t]);
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(w0, v0));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(w1, v0));
        e0 = _mm256_add_epi32(e0, _mm256_madd_epi16(w0, v1));
        e1 = _mm256_add_epi32(e1, _mm256_madd_epi16(w1, v1));
      }
      std::int32_t* o = out + (b * m + j) * kCodeLanes;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), a0);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 8), a1);
      if (two) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 16), e0);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 24), e1);
      }
    }
  }
}

__attribute__((target("avx512f,avx512bw"))) inline void block_dots_avx512(const std::int8_t* blocks, index_t nb,
                                                                           const std::int32_t* qp, index_t m, int dh,
                                                                           std::int32_t* out) {
  const std::size_t bb = static_cast<std::size_t>(32) * dh;
  for (index_t b = 0; b < nb; ++b) {
    const std::int8_t* c = blocks + b * bb;
    for (index_t j = 0; j < m; j += 2) {
      const bool two = j + 1 < m;
      const std::int32_t* q0 = qp + j * dh;
      const std::int32_t* q1 = two ? q0 + dh : q0;
      __m512i a = _mm512_setzero_si512(), e = a;
      for (int t = 0; t < dh; ++t) {
        const __m512i w = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 32 * t)));
        a = _mm512_add_epi32(a, _mm512_madd_epi16(w, _mm512_set1_epi32(q0[t])));
        e = _mm512_add_epi32(e, _mm512_madd_epi16(w, _mm512_set1_epi32(q1[t])));
      }
      std::int32_t* o = out + (b * m + j) * kCodeLanes;
      _mm512_storeu_si512(o, a);
      if (two) _mm512_storeu_si512(o + kCodeLanes, e);
    }
  }
}
#endif

// The best instruction set this CPU (and OS: AVX-512 state enabled) runs.
inline DotIsa best_dot_isa() {
#ifdef HSRGEOM_X86_DISPATCH
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) return DotIsa::kAvx512;
  if (__builtin_cpu_supports("avx2")) return DotIsa::kAvx2;
  return DotIsa::kSse2;
#else
  return DotIsa::kScalar;
#endif
}

// The kernel for `want`, or for the best set below it that this CPU runs.
inline BlockDotsFn block_dots_kernel(DotIsa want) {
  const DotIsa isa = static_cast<int>(want) < static_cast<int>(best_dot_isa()) ? want : best_dot_isa();
  switch (isa) {
#ifdef HSRGEOM_X86_DISPATCH
    case DotIsa::kAvx512: return block_dots_avx512;
    case DotIsa::kAvx2: return block_dots_avx2;
    case DotIsa::kSse2: return block_dots_sse2;
#endif
    default: return block_dots_scalar;
  }
}

// The set QuantizedScan uses: the best one, unless the environment variable
// HSRGEOM_SCAN_KERNEL names a lower one ("scalar", "sse2", "avx2", "avx512"; read when an index
// is built), for testing each kernel and comparing them in one build. Results never depend on it.
inline DotIsa scan_dot_isa() {
  const DotIsa best = best_dot_isa();
  const char* e = std::getenv("HSRGEOM_SCAN_KERNEL");
  if (e == nullptr) return best;
  const char* names[] = {"scalar", "sse2", "avx2", "avx512"};
  for (int i = 0; i < 4; ++i)
    if (std::strcmp(e, names[i]) == 0) return std::min(best, static_cast<DotIsa>(i));
  return best;
}

}  // namespace hsrgeom
