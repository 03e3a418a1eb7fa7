// Candidate blocks and their vectorised filter, shared by the structures that answer a query
// from a precomputed list of candidates (ConvexLayers' shallow table, ShallowCutting3's
// conflict lists): the candidates are stored eight at a time, coordinates by axis, so that a
// query reads one contiguous stream and tests eight points per instruction; and the lists' id
// order (IdOrder), so that a sorted report needs no sort. Also the same filter over rows as the
// trees store them (filter_rows, d = 2, 3) and the ids at a mask's bits (kept_ids).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

#include "hsrgeom/dispatch.hpp"
#include "hsrgeom/predicate.hpp"
#include "hsrgeom/sort_network.hpp"

namespace hsrgeom {

// Eight candidates in D dimensions: coordinates (in the points' type: exact copies), their ids
// and the owner's stored index of each (read only when the filter is asked for it). Ids and
// indices take 32 bits (the owners hold at most kMaxBlockPoints points): a query streams its
// list from memory, and 64-bit ones made a float32 block of d = 2 three cache lines instead of
// two (docs/performance.md, session 34).
constexpr std::uint64_t kMaxBlockPoints = std::uint64_t{1} << 32;
template <class T, int D>
struct alignas(64) CandBlock {
  T x[D][8];
  std::uint32_t id[8];
  std::uint32_t k[8];
};

// The same without stored indices (16 bytes per float32 candidate in d = 3, 20 before).
template <class T, int D>
struct alignas(64) CandIdBlock {
  T x[D][8];
  std::uint32_t id[8];
};

#if defined(__AVX512F__)
inline __m512d load8_pd(const double* p) { return _mm512_loadu_pd(p); }
inline __m512d load8_pd(const float* p) { return _mm512_cvtps_pd(_mm256_loadu_ps(p)); }
inline __m512i load8_u32(const std::uint32_t* p) {  // widened to 64 bits
  return _mm512_cvtepu32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
// Writes p[l] for the set bits l of m (8 bits) at out, in order, widened (8 slots written).
inline void store_kept8_u32(std::int64_t* out, const std::uint32_t* p, unsigned m) {
  _mm512_storeu_si512(out, _mm512_maskz_compress_epi64(static_cast<__mmask8>(m), load8_u32(p)));
}
#elif defined(__AVX2__) && defined(__FMA__)
inline __m256d load4_pd(const double* p) { return _mm256_loadu_pd(p); }
inline __m256d load4_pd(const float* p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }
inline __m256i load4_u32(const std::uint32_t* p) {  // widened to 64 bits
  return _mm256_cvtepu32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
// AVX2 has no compress: per 4-bit mask, the 32-bit lane indices that move the kept 64-bit
// lanes to the front (_mm256_permutevar8x32_epi32)
struct Compress4 {
  alignas(32) std::int32_t idx[16][8] = {};
  constexpr Compress4() {
    for (int m = 0; m < 16; ++m) {
      int o = 0;
      for (int l = 0; l < 4; ++l)
        if (m >> l & 1) idx[m][2 * o] = 2 * l, idx[m][2 * o + 1] = 2 * l + 1, ++o;
      for (; o < 4; ++o) idx[m][2 * o] = 0, idx[m][2 * o + 1] = 1;
    }
  }
};
inline constexpr Compress4 kCompress4{};
// Stores the lanes of v kept by mask (4 bits) at out, in order (4 slots written).
inline void store_kept4(std::int64_t* out, __m256i v, unsigned mask) {
  const __m256i perm = _mm256_load_si256(reinterpret_cast<const __m256i*>(kCompress4.idx[mask]));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_permutevar8x32_epi32(v, perm));
}
// Writes p[l] for the set bits l of m (8 bits) at out, in order, widened (8 slots written).
inline void store_kept8_u32(std::int64_t* out, const std::uint32_t* p, unsigned m) {
  store_kept4(out, load4_u32(p), m & 0xFu);
  store_kept4(out + __builtin_popcount(m & 0xFu), load4_u32(p + 4), m >> 4);
}
#endif

// The rounded value <a, x> - b of the eight candidates of block q (AVX-512; AVX2: four, from
// lane h) or of lane l: an fma chain from -b, the only arithmetic filter_blocks uses, so that the
// vector and scalar paths classify every candidate alike (fma is correctly rounded: the chains agree).
#if defined(__AVX512F__)
template <int D, class Block>
inline __m512d block_values(const __m512d* av, __m512d nb, const Block& q) {
  __m512d v = nb;
  for (int t = 0; t < D; ++t) v = _mm512_fmadd_pd(av[t], load8_pd(q.x[t]), v);
  return v;
}
#elif defined(__AVX2__) && defined(__FMA__)
template <int D, class Block>
inline __m256d block_values4(const __m256d* av, __m256d nb, const Block& q, int h) {
  __m256d v = nb;
  for (int t = 0; t < D; ++t) v = _mm256_fmadd_pd(av[t], load4_pd(q.x[t] + h), v);
  return v;
}
#endif
template <int D, class Block>
inline double lane_value(const double* a, double b, const Block& q, int l) {
  double v = -b;
  for (int t = 0; t < D; ++t) v = std::fma(a[t], static_cast<double>(q.x[t][l]), v);
  return v;
}

// filter_blocks' Want: 1 writes the ids of the candidates inside, 2 also their stored indices,
// kWantSlots also their slots (i = block * 8 + lane, to in_k).
constexpr int kWantSlots = 3;

// Counts the candidates i < cnt (in blocks c) inside the half-space and, as Want asks (1: ids,
// 2: ids and stored indices, kWantSlots: ids and slots), writes them to in_id[] and in_k[]
// (cnt + 8 slots each). A
// candidate whose rounded <a, x_i> - b exceeds margin is inside; one within margin of b is
// unsure, and decide(block, lane) says exactly whether it is inside (called once per unsure
// candidate, in the same pass, so that ties with b cost no second pass over the list). The
// caller makes sure no product can overflow. AVX-512 does a block at a time, AVX2 (with FMA) a
// half block; the tail, and CPUs without them, take the scalar loop, branch-free like the vector
// ones but for unsure candidates.
// The margin covers the rounding of the values (block_values, lane_value).
template <int Want, int D, class Block, class Decide>
HSRGEOM_INLINE index_t filter_blocks(const double* a, double b, double margin, const Block* c, index_t cnt,
                                     index_t* in_k, std::int64_t* in_id, Decide&& decide) {
  index_t i = 0, w = 0;
  constexpr bool kIds = Want >= 1, kSlots = Want == kWantSlots;
  auto keep = [&](const Block& q, int l) {  // an unsure candidate found inside
    if constexpr (kIds) in_id[w] = q.id[l];
    if constexpr (kSlots) in_k[w] = static_cast<index_t>(&q - c) * 8 + l;
    if constexpr (Want == 2) in_k[w] = q.k[l];
    ++w;
  };
#if defined(__AVX512F__)
  __m512d av[D];
  for (int t = 0; t < D; ++t) av[t] = _mm512_set1_pd(a[t]);
  const __m512d nb = _mm512_set1_pd(-b), hi = _mm512_set1_pd(margin), lo = _mm512_set1_pd(-margin);
  for (const index_t blocks = cnt / 8; i < blocks; ++i) {
    const Block& q = c[i];
    const __m512d v = block_values<D>(av, nb, q);
    const __mmask8 yes = _mm512_cmp_pd_mask(v, hi, _CMP_GT_OQ), maybe = _mm512_cmp_pd_mask(v, lo, _CMP_GT_OQ);
    // compress in a register, then a full store (the outputs have 8 spare slots): a
    // compressing store to memory is microcoded and slow on some CPUs (AMD Zen 4)
    if constexpr (kSlots) {
      const __m512i slots = _mm512_add_epi64(_mm512_set1_epi64(i * 8), _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0));
      _mm512_storeu_si512(in_k + w, _mm512_maskz_compress_epi64(yes, slots));
    }
    if constexpr (kIds) store_kept8_u32(in_id + w, q.id, yes);
    if constexpr (Want == 2) store_kept8_u32(in_k + w, q.k, yes);
    w += __builtin_popcount(yes);
    if (__builtin_expect(yes != maybe, 0))
      for (unsigned m = yes ^ maybe; m; m &= m - 1)
        if (decide(q, __builtin_ctz(m))) keep(q, __builtin_ctz(m));
  }
  i *= 8;
#elif defined(__AVX2__) && defined(__FMA__)
  __m256d av[D];
  for (int t = 0; t < D; ++t) av[t] = _mm256_set1_pd(a[t]);
  const __m256d nb = _mm256_set1_pd(-b), hi = _mm256_set1_pd(margin), lo = _mm256_set1_pd(-margin);
  for (const index_t blocks = cnt / 8; i < blocks; ++i) {
    const Block& q = c[i];
    unsigned yes = 0, maybe = 0;
    for (int h = 0; h < 8; h += 4) {
      const __m256d v = block_values4<D>(av, nb, q, h);
      const unsigned y = static_cast<unsigned>(_mm256_movemask_pd(_mm256_cmp_pd(v, hi, _CMP_GT_OQ)));
      maybe |= static_cast<unsigned>(_mm256_movemask_pd(_mm256_cmp_pd(v, lo, _CMP_GT_OQ))) << h;
      yes |= y << h;
      // the kept lanes to the front, a full store (the outputs have 8 spare slots)
      if constexpr (kSlots)
        store_kept4(in_k + w, _mm256_add_epi64(_mm256_set1_epi64x(i * 8 + h), _mm256_set_epi64x(3, 2, 1, 0)), y);
      if constexpr (kIds) store_kept4(in_id + w, load4_u32(q.id + h), y);
      if constexpr (Want == 2) store_kept4(in_k + w, load4_u32(q.k + h), y);
      w += __builtin_popcount(y);
    }
    if (__builtin_expect(yes != maybe, 0))
      for (unsigned m = yes ^ maybe; m; m &= m - 1)
        if (decide(q, __builtin_ctz(m))) keep(q, __builtin_ctz(m));
  }
  i *= 8;
#endif
  for (; i < cnt; ++i) {
    const Block& q = c[i / 8];
    const int l = static_cast<int>(i % 8);
    const double v = lane_value<D>(a, b, q, l);
    if (__builtin_expect((v > margin) != (v > -margin), 0)) {
      if (decide(q, l)) keep(q, l);
      continue;
    }
    if constexpr (kIds) in_id[w] = q.id[l];
    if constexpr (kSlots) in_k[w] = i;
    if constexpr (Want == 2) in_k[w] = q.k[l];
    w += v > margin;
  }
  return w;
}

// Rows as the points are stored (row after row, D = 2 or 3 coordinates each), for the leaves
// of the trees (range_tree.hpp test_leaf): sets bit t of `in` for row t inside the half-space
// and of `unsure` for a row the filter can't decide (filter_flags' cases), for the rows
// [0, w), w <= 64. The values are filter_flags' and dot_f64<D>'s: 0 + a_0 x_0 + a_1 x_1 (+ a_2 x_2),
// products and sums rounded one by one in that order, so the bits are those of the scalar loop.
// AVX-512 tests 8 rows per step (the coordinates split by axis with two-source permutes), AVX2
// 4; the rest of the rows, and CPUs without them, take filter_flags. The compiler's own
// vectorisation of the scalar loop built the bits with a variable shift per lane: counting at
// d = 3 is 25-30 % faster this way (docs/performance.md, session 30).
namespace detail {
#if defined(__AVX512F__)
// Axis t of rows r .. r + 7 (D coordinates each) as float64.
template <int D>
inline void axes8(const float* x, __m512d* out) {
  const __m512 lo = _mm512_loadu_ps(x);
  const __m512 hi = D == 3 ? _mm512_castps256_ps512(_mm256_loadu_ps(x + 16)) : _mm512_setzero_ps();
  for (int t = 0; t < D; ++t) {
    const __m512i idx = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 7 * D + t, 6 * D + t, 5 * D + t, 4 * D + t,
                                         3 * D + t, 2 * D + t, D + t, t);
    out[t] = _mm512_cvtps_pd(_mm512_castps512_ps256(_mm512_permutex2var_ps(lo, idx, hi)));
  }
}
template <int D>
inline void axes8(const double* x, __m512d* out) {
  const __m512d p0 = _mm512_loadu_pd(x), p1 = _mm512_loadu_pd(x + 8);
  for (int t = 0; t < D; ++t) {
    if constexpr (D == 2) {
      out[t] = _mm512_permutex2var_pd(p0, _mm512_set_epi64(14 + t, 12 + t, 10 + t, 8 + t, 6 + t, 4 + t, 2 + t, t), p1);
    } else {  // row r's coordinate at 3 r + t: rows 0-4 (and 5 when t = 0) in p0, p1, the rest in p2
      const __m512d p2 = _mm512_loadu_pd(x + 16);
      const __m512d u = _mm512_permutex2var_pd(p0, _mm512_set_epi64(0, 0, 15, 12 + t, 9 + t, 6 + t, 3 + t, t), p1);
      out[t] = _mm512_permutex2var_pd(u, _mm512_set_epi64(8 + 5 + t, 8 + 2 + t, t == 0 ? 5 : 8 + t - 1, 4, 3, 2, 1, 0), p2);
    }
  }
}
#elif defined(__AVX2__) && defined(__FMA__)
// Axis t of rows r .. r + 3 as float64.
inline void axes4_load(const float* x, int n, __m256d* v) {
  for (int i = 0; i < n; ++i) v[i] = _mm256_cvtps_pd(_mm_loadu_ps(x + 4 * i));
}
inline void axes4_load(const double* x, int n, __m256d* v) {
  for (int i = 0; i < n; ++i) v[i] = _mm256_loadu_pd(x + 4 * i);
}
template <int D, class T>
inline void axes4(const T* x, __m256d* out) {
  __m256d v[D];
  axes4_load(x, D, v);
  if constexpr (D == 2) {  // v0 = x0 y0 x1 y1, v1 = x2 y2 x3 y3
    out[0] = _mm256_permute4x64_pd(_mm256_unpacklo_pd(v[0], v[1]), 0xD8);  // x0 x2 x1 x3 -> x0 x1 x2 x3
    out[1] = _mm256_permute4x64_pd(_mm256_unpackhi_pd(v[0], v[1]), 0xD8);
  } else {  // v0 = x0 y0 z0 x1, v1 = y1 z1 x2 y2, v2 = z2 x3 y3 z3
    const __m256d xs = _mm256_blend_pd(_mm256_blend_pd(v[0], v[1], 0x4), v[2], 0x2);  // x0 x3 x2 x1
    const __m256d ys = _mm256_blend_pd(_mm256_blend_pd(v[0], v[1], 0x9), v[2], 0x4);  // y1 y0 y3 y2
    const __m256d zs = _mm256_blend_pd(_mm256_blend_pd(v[0], v[1], 0x2), v[2], 0x9);  // z2 z1 z0 z3
    out[0] = _mm256_permute4x64_pd(xs, 0x6C);  // lanes 0 3 2 1
    out[1] = _mm256_permute4x64_pd(ys, 0xB1);  // lanes 1 0 3 2
    out[2] = _mm256_permute4x64_pd(zs, 0xC6);  // lanes 2 1 0 3
  }
}
#endif
}  // namespace detail

template <int D, class T>
HSRGEOM_INLINE void filter_rows(const double* a, double b, double margin, const T* x, int w, std::uint64_t& in,
                                std::uint64_t& unsure) {
  static_assert(D == 2 || D == 3, "filter_rows: D = 2 or 3");
  in = 0, unsure = 0;
  int t = 0;
#if defined(__AVX512F__)
  {
    __m512d av[D], ax[D];
    for (int i = 0; i < D; ++i) av[i] = _mm512_set1_pd(a[i]);
    const __m512d vb = _mm512_set1_pd(b), hi = _mm512_set1_pd(margin), lo = _mm512_set1_pd(-margin),
                  big = _mm512_set1_pd(std::numeric_limits<double>::max());
    for (; t + 8 <= w; t += 8) {
      detail::axes8<D>(x + t * D, ax);
      __m512d s = _mm512_setzero_pd();
      for (int i = 0; i < D; ++i) s = _mm512_add_pd(s, _mm512_mul_pd(av[i], ax[i]));
      const __mmask8 finite = _mm512_cmp_pd_mask(_mm512_abs_pd(s), big, _CMP_LE_OQ);
      const __m512d v = _mm512_sub_pd(s, vb);
      const __mmask8 yes = _mm512_mask_cmp_pd_mask(finite, v, hi, _CMP_GT_OQ);
      const __mmask8 no = _mm512_mask_cmp_pd_mask(finite, v, lo, _CMP_LT_OQ);
      in |= std::uint64_t{yes} << t;
      unsure |= std::uint64_t{static_cast<__mmask8>(~(yes | no))} << t;
    }
  }
#elif defined(__AVX2__) && defined(__FMA__)
  {
    __m256d av[D], ax[D];
    for (int i = 0; i < D; ++i) av[i] = _mm256_set1_pd(a[i]);
    const __m256d vb = _mm256_set1_pd(b), hi = _mm256_set1_pd(margin), lo = _mm256_set1_pd(-margin),
                  big = _mm256_set1_pd(std::numeric_limits<double>::max()), sign = _mm256_set1_pd(-0.0);
    for (; t + 4 <= w; t += 4) {
      detail::axes4<D>(x + t * D, ax);
      __m256d s = _mm256_setzero_pd();
      for (int i = 0; i < D; ++i) s = _mm256_add_pd(s, _mm256_mul_pd(av[i], ax[i]));
      const __m256d finite = _mm256_cmp_pd(_mm256_andnot_pd(sign, s), big, _CMP_LE_OQ);
      const __m256d v = _mm256_sub_pd(s, vb);
      const auto yes = static_cast<unsigned>(_mm256_movemask_pd(_mm256_and_pd(finite, _mm256_cmp_pd(v, hi, _CMP_GT_OQ))));
      const auto no = static_cast<unsigned>(_mm256_movemask_pd(_mm256_and_pd(finite, _mm256_cmp_pd(v, lo, _CMP_LT_OQ))));
      in |= std::uint64_t{yes} << t;
      unsure |= std::uint64_t{~(yes | no) & 0xFu} << t;
    }
  }
#endif
  for (; t < w; ++t) {
    bool yes, undecided;
    filter_flags(dot_f64<D>(a, x + t * D, D), b, margin, yes, undecided);
    in |= static_cast<std::uint64_t>(yes) << t;
    unsure |= static_cast<std::uint64_t>(undecided) << t;
  }
}

// Float32 scores of float32 rows (filter_rows32): <a, x> in float32 arithmetic, twice the lanes
// of float64 and no widening. Rows32 holds what they are compared with: the normal in float32
// (exact: a float32 index's normals are float32 values) and float32 thresholds lo <= hi such
// that a float32 score s < lo proves <a, x> < b and s >= hi proves <a, x> >= b, for points of
// norm <= norm_x (the score's rounding error, at most a float32 Margin, lies outside [lo, hi]).
// Rows32::make returns false when a is not exactly float32 (then the float64 filter alone
// applies).
struct Rows32 {
  float a[3], lo, hi;
  // av: the normal (d <= 3 values), norm_a >= ||av||, norm_x >= every point's norm.
  bool make(const double* av, int d, double b, double norm_a, double norm_x) {
    const double margin32 = Margin(d, Rounding<float>::u, Rounding<float>::eta)(norm_a, norm_x, b);
    for (int i = 0; i < d; ++i) {
      a[i] = static_cast<float>(av[i]);
      if (static_cast<double>(a[i]) != av[i]) return false;
    }
    // b -/+ margin32 (its float64 rounding is far inside the margin's |b| term), rounded outwards
    // to float32; past float32's range they become -/+inf or -/+FLT_MAX, which decide nothing
    // wrongly: a non-finite score is never decided (filter_rows32)
    const double l = b - margin32, h = b + margin32;
    lo = static_cast<float>(l);
    if (static_cast<double>(lo) > l) lo = std::nextafter(lo, -std::numeric_limits<float>::infinity());
    hi = static_cast<float>(h);
    if (static_cast<double>(hi) < h) hi = std::nextafter(hi, std::numeric_limits<float>::infinity());
    return true;
  }
};

#if defined(__AVX512F__)
namespace detail {
// Two-step gather of axis i of 16 rows of 3 float32 values (row k's axis i at 3 k + i):
// kAxes16[i][0] picks those below 32 from the first 32 values, kAxes16[i][1] keeps them and
// takes the rest from the last 16.
struct Axes16 {
  alignas(64) std::int32_t idx[3][2][16];
};
constexpr Axes16 axes16() {
  Axes16 r{};
  for (int i = 0; i < 3; ++i)
    for (int k = 0; k < 16; ++k) {
      const int at = 3 * k + i;
      r.idx[i][0][k] = at < 32 ? at : 0;
      r.idx[i][1][k] = at < 32 ? k : 16 + at - 32;
    }
  return r;
}
alignas(64) inline constexpr Axes16 kAxes16Table = axes16();
inline constexpr const std::int32_t (&kAxes16)[3][2][16] = kAxes16Table.idx;
}  // namespace detail
#endif

// Bits of rows 0 .. w - 1 (w <= 64) as filter_rows sets them, for the first `done` rows (the
// return value; 0 without AVX2 / AVX-512): `in` surely inside, `unsure` not decided here (the
// caller decides those, filter_rows' float64 test first). AVX-512: 16 rows per step, all w rows
// (the last step masked); AVX2: 8 per step, the whole steps.
template <int D>
HSRGEOM_INLINE int filter_rows32(const Rows32& r, const float* x, int w, std::uint64_t& in, std::uint64_t& unsure) {
  static_assert(D == 2 || D == 3, "filter_rows32: D = 2 or 3");
  in = 0, unsure = 0;
  int t = 0;
#if defined(__AVX512F__)
  __m512 av[D];
  for (int i = 0; i < D; ++i) av[i] = _mm512_set1_ps(r.a[i]);
  const __m512 lo = _mm512_set1_ps(r.lo), hi = _mm512_set1_ps(r.hi),
               big = _mm512_set1_ps(std::numeric_limits<float>::max());
  for (; t < w; t += 16) {
    const int rows = std::min(16, w - t), vals = rows * D;
    auto part = [&](int i) {  // values 16 i .. 16 i + 15 of the rows (those past the last: 0)
      const int c = std::min(16, std::max(0, vals - 16 * i));
      return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << c) - 1), x + t * D + 16 * i);
    };
    __m512 ax[D];
    const __m512 p0 = part(0), p1 = part(1);
    if constexpr (D == 2) {
      ax[0] = _mm512_permutex2var_ps(p0, _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0), p1);
      ax[1] = _mm512_permutex2var_ps(p0, _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1), p1);
    } else {  // row k's axis i at 3 k + i: those < 32 from p0, p1, the rest from p2
      const __m512 p2 = part(2);
      for (int i = 0; i < 3; ++i) {
        const __m512 u = _mm512_permutex2var_ps(p0, _mm512_load_si512(detail::kAxes16[i][0]), p1);
        ax[i] = _mm512_permutex2var_ps(u, _mm512_load_si512(detail::kAxes16[i][1]), p2);
      }
    }
    __m512 s = _mm512_mul_ps(av[0], ax[0]);
    for (int i = 1; i < D; ++i) s = _mm512_add_ps(s, _mm512_mul_ps(av[i], ax[i]));
    const __mmask16 live = static_cast<__mmask16>((1u << rows) - 1);
    const __mmask16 finite = _mm512_mask_cmp_ps_mask(live, _mm512_abs_ps(s), big, _CMP_LE_OQ);
    const __mmask16 yes = _mm512_mask_cmp_ps_mask(finite, s, hi, _CMP_GE_OQ);
    const __mmask16 no = _mm512_mask_cmp_ps_mask(finite, s, lo, _CMP_LT_OQ);
    in |= std::uint64_t{yes} << t;
    unsure |= std::uint64_t{static_cast<__mmask16>(live & ~(yes | no))} << t;
  }
  return w;
#elif defined(__AVX2__) && defined(__FMA__)
  __m256 av[D];
  for (int i = 0; i < D; ++i) av[i] = _mm256_set1_ps(r.a[i]);
  const __m256 lo = _mm256_set1_ps(r.lo), hi = _mm256_set1_ps(r.hi),
               big = _mm256_set1_ps(std::numeric_limits<float>::max()), sign = _mm256_set1_ps(-0.0f);
  for (; t + 8 <= w; t += 8) {
    const float* p = x + t * D;
    __m256 ax[D];
    if constexpr (D == 2) {  // v0 = x0 y0 .. x3 y3, v1 = x4 y4 .. x7 y7
      const __m256 v0 = _mm256_loadu_ps(p), v1 = _mm256_loadu_ps(p + 8);
      ax[0] = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(v0, v1, 0x88)), 0xD8));
      ax[1] = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(v0, v1, 0xDD)), 0xD8));
    } else {  // v0 = x0 y0 z0 x1 y1 z1 x2 y2, v1 = z2 x3 y3 z3 x4 y4 z4 x5, v2 = y5 z5 x6 y6 z6 x7 y7 z7
      const __m256 v0 = _mm256_loadu_ps(p), v1 = _mm256_loadu_ps(p + 8), v2 = _mm256_loadu_ps(p + 16);
      const __m256 xs = _mm256_blend_ps(_mm256_blend_ps(v0, v1, 0x92), v2, 0x24);  // x0 x3 x6 x1 x4 x7 x2 x5
      const __m256 ys = _mm256_blend_ps(_mm256_blend_ps(v0, v1, 0x24), v2, 0x49);  // y5 y0 y3 y6 y1 y4 y7 y2
      const __m256 zs = _mm256_blend_ps(_mm256_blend_ps(v0, v1, 0x49), v2, 0x92);  // z2 z5 z0 z3 z6 z1 z4 z7
      ax[0] = _mm256_permutevar8x32_ps(xs, _mm256_setr_epi32(0, 3, 6, 1, 4, 7, 2, 5));
      ax[1] = _mm256_permutevar8x32_ps(ys, _mm256_setr_epi32(1, 4, 7, 2, 5, 0, 3, 6));
      ax[2] = _mm256_permutevar8x32_ps(zs, _mm256_setr_epi32(2, 5, 0, 3, 6, 1, 4, 7));
    }
    __m256 s = _mm256_mul_ps(av[0], ax[0]);
    for (int i = 1; i < D; ++i) s = _mm256_add_ps(s, _mm256_mul_ps(av[i], ax[i]));
    const __m256 finite = _mm256_cmp_ps(_mm256_andnot_ps(sign, s), big, _CMP_LE_OQ);
    const auto yes = static_cast<unsigned>(_mm256_movemask_ps(_mm256_and_ps(finite, _mm256_cmp_ps(s, hi, _CMP_GE_OQ))));
    const auto no = static_cast<unsigned>(_mm256_movemask_ps(_mm256_and_ps(finite, _mm256_cmp_ps(s, lo, _CMP_LT_OQ))));
    in |= std::uint64_t{yes} << t;
    unsure |= std::uint64_t{~(yes | no) & 0xFFu} << t;
  }
  return t;
#else
  (void)r, (void)x, (void)w;
  return t;
#endif
}

// Writes ids[t] for every bit t of `bits` (ids[t] readable for those t only) to out in order
// (out has 8 spare slots); returns how many. AVX-512 moves 8 ids per step with a compress.
HSRGEOM_INLINE int kept_ids(const std::int64_t* ids, std::uint64_t bits, std::int64_t* out) {
  int got = 0;
#if defined(__AVX512F__)
  for (int g = 0; bits; g += 8, bits >>= 8) {  // (no branch on an empty group: it mispredicted)
    const auto m = static_cast<__mmask8>(bits & 0xFF);
    const __m512i v = _mm512_maskz_loadu_epi64(m, ids + g);  // masked lanes are not read
    _mm512_storeu_si512(out + got, _mm512_maskz_compress_epi64(m, v));
    got += __builtin_popcount(m);
  }
#else
  for (; bits; bits &= bits - 1) out[got++] = ids[__builtin_ctzll(bits)];
#endif
  return got;
}

// Candidate lists in id order, for reports that want each query's ids ascending. Lists are
// numbered in the order they are added (a bucket's candidates, stored from a block boundary:
// slot i is block i / 8, lane i % 8) and a query filters a prefix of one. Per list, for the
// prefixes of kBands lengths (L / 16, L / 8, L / 4, L / 2, L of a list of L), each slot's rank
// among the prefix's ids (16 bits) and the prefix's ids ascending (32 bits): ~11.6 bytes per
// candidate; lists longer than kMaxList are not ranked (their reports are sorted as usual). A
// query that took w of the first cnt slots marks their ranks in a bitmap of the shortest prefix
// holding cnt (at most 2x cnt, or L / 16) and reads it in order: its ids come out ascending for
// ~2 ns per id more than in list order, instead of a radix sort of ~3 ns per id
// (docs/performance.md, sessions 26 and 38: prefixes 4x apart cost 9-12 % more per sorted
// 1,000-id report of the tiered cutting, for 14 % less memory). A sorted report asks report_band and report_ids, which
// leave up to kNetworkMaxIds ids in list order: the report's sorting network (sort_network.hpp)
// sorts those for less (session 33).
class IdOrder {
 public:
  static constexpr std::int64_t kMaxList = 65535;
  static constexpr int kBands = 5;  // prefixes L / 2^(kBands - 1), ..., L / 2, L

  // Ranks the next list, of len candidates at blocks c.
  template <class Block>
  void add_list(const Block* c, std::int64_t len) {
    const bool ok = len <= kMaxList;
    std::vector<std::pair<std::uint32_t, std::uint16_t>> by_id;
    for (int band = 0; band < kBands; ++band) {
      const std::int64_t p = ok ? (len + (std::int64_t{1} << (kBands - 1 - band)) - 1) >> (kBands - 1 - band) : 0;
      const std::int64_t at = static_cast<std::int64_t>(rank_.size());
      start_.push_back(at);
      rank_.resize(at + p), id_.resize(at + p);
      by_id.resize(p);
      for (std::int64_t i = 0; i < p; ++i) by_id[i] = {c[i / 8].id[i % 8], static_cast<std::uint16_t>(i)};
      std::sort(by_id.begin(), by_id.end());
      for (std::int64_t r = 0; r < p; ++r) {
        rank_[at + by_id[r].second] = static_cast<std::uint16_t>(r);
        id_[at + r] = by_id[r].first;
      }
    }
  }
  void done() {
    start_.push_back(static_cast<std::int64_t>(rank_.size()));
    id_.resize(id_.size() + 64);  // read (not used) by ids_ascending's last word of the last band
  }
  size_t memory_bytes() const {
    return rank_.size() * sizeof(std::uint16_t) + id_.size() * sizeof(std::uint32_t) + start_.size() * sizeof(std::int64_t);
  }

  // The prefix of list `list` that ranks its first cnt slots for a query (its index into
  // start_), or -1 when there is none or it is over 4 cnt + 64 long: its bitmap and its ids'
  // lines would then be sparse, each kept id a cache miss, dearer than a sort (a 64x limit made
  // clustered d = 2 sorted 1,000-id reports 10 % slower than the sort).
  std::int64_t band(std::int64_t list, std::int64_t cnt) const {
    for (std::int64_t b = list * kBands; b < (list + 1) * kBands && b + 1 < static_cast<std::int64_t>(start_.size()); ++b) {
      const std::int64_t p = start_[b + 1] - start_[b];
      if (p >= cnt) return cnt > 0 && p <= 4 * cnt + 64 ? b : -1;
    }
    return -1;
  }
  // For a sorted report of a query over the first cnt slots of list `list`: the band whose
  // ranks order its answer (report_ids), or -1 for none: up to kNetworkMaxIds candidates (the
  // report's sorting network sorts their answer for less) or no band (band).
  std::int64_t report_band(std::int64_t list, std::int64_t cnt) const {
    return cnt > static_cast<std::int64_t>(kNetworkMaxIds) ? band(list, cnt) : -1;
  }
  // For a sorted report: out holds the ids of the slots[0 .. w) in list order (filter_blocks
  // with kWantSlots, a list with report_band b >= 0; w + 8 slots). Past kNetworkMaxIds of them
  // they are rewritten ascending (ids_ascending); fewer stay as they are, for the report's
  // sorting network, which sorts those for less.
  void report_ids(std::int64_t b, const index_t* slots, index_t w, std::int64_t* out) const {
    if (w > static_cast<index_t>(kNetworkMaxIds)) ids_ascending(b, slots, w, out);
  }
  // Writes the ids of slots[0 .. w) (among the first cnt of the list, band(list, cnt) = b)
  // ascending to out (w + 8 slots).
  void ids_ascending(std::int64_t b, const index_t* slots, index_t w, std::int64_t* out) const {
    static thread_local std::vector<std::uint64_t> bits;  // all zero between calls
    const std::int64_t at = start_[b];
    const size_t words = static_cast<size_t>(start_[b + 1] - at + 63) / 64;
    if (bits.size() < words) bits.resize(words, 0);
    const std::uint16_t* rank = &rank_[at];
    const std::uint32_t* id = &id_[at];
    for (index_t i = 0; i < w; ++i) {
      const unsigned r = rank[slots[i]];
      bits[r >> 6] |= std::uint64_t{1} << (r & 63);
    }
    index_t o = 0;
    for (size_t i = 0; i < words; ++i) {
      std::uint64_t bw = bits[i];
      if (!bw) continue;
      bits[i] = 0;
      const std::uint32_t* row = id + i * 64;
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
      // per 8 ranks: the marked ids moved to the front, widened, 8 written (out has 8 spare
      // slots; id_ has 64 past its last band)
      for (int h = 0; h < 64; h += 8) {
        const unsigned m = static_cast<unsigned>(bw >> h) & 0xFFu;
        store_kept8_u32(out + o, row + h, m);
        o += __builtin_popcount(m);
      }
#else
      // four written without a branch (o moves by the word's count; out has three spare
      // slots), the rest one by one
      const int cnt = __builtin_popcountll(bw);
      for (int t = 0; t < 4; ++t, bw &= bw - 1) out[o + t] = row[bw ? __builtin_ctzll(bw) : 0];
      for (int t = 4; t < cnt; ++t, bw &= bw - 1) out[o + t] = row[__builtin_ctzll(bw)];
      o += cnt;
#endif
    }
  }

 private:
  std::vector<std::int64_t> start_;  // per (list, band): where its ranks and ids start; then the end
  std::vector<std::uint16_t> rank_;  // per (list, band), per slot of the prefix: its rank
  std::vector<std::uint32_t> id_;    // per (list, band): the prefix's ids ascending
};

}  // namespace hsrgeom
