// The fused decoding kernel of hsrgeom.attention: the keys of one kv head as 8-bit codes with
// proven error bounds (HeadCodes), and, for all query rows of that kv head at once (the query
// heads of a GQA group), exact top-r / threshold selection by the float64 score and the softmax
// over the selected keys with its V gather and certified dropped-mass bound, in one call.
//
// Codes (as QuantizedScan, written again here so that the attention layer does not depend on a
// structure's internals): a key x is stored as c in [-127, 127]^d with a per-key scale s
// (x ~ s c, s = max|x_k| / 127), a query row a as 16-bit integers q with a scale s_a. With the
// per-key g >= s ||c||, r >= ||x - s c||, ||x|| <= xn and the per-row ra >= ||a - s_a q||,
// na >= ||a||, the float64 score fl(<a, x>) (dot_f64, any summation order) satisfies
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
// The scan reads n d bytes of codes once for all rows (cache-resident per key) instead of the
// n d floats of a GEMV; the full rows are read for the candidates only.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
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
  r.q.assign(d, 0);
  r.ad.assign(a, a + d);
  r.na0 = norm_up(a, d);
  std::vector<double> as(d);
  for (int k = 0; k < d; ++k) as[k] = r.ad[k] * cs[k];
  r.na = norm_up(as.data(), d);
  double mx = 0;
  for (int k = 0; k < d; ++k) mx = std::max(mx, std::fabs(as[k]));
  if (mx == 0) return r;
  const double qmax = std::min(32767.0, std::floor(2147483647.0 / (127.0 * d)));
  if (!(mx >= 1e-290 && mx <= 1e290) || qmax < 1) {  // no integer form: q = 0, ra = ||a'||
    r.ra = r.na;
    return r;
  }
  double q2 = 0;
  r.sa = to_integers(as.data(), d, mx, qmax, r.q.data(), &r.ra, &q2);
  return r;
}

// out[j * stride] = <q_j, c> (exact) for the h rows of q (int16, h x d), 4 rows per pass over c.
// The codes are widened to 16 bits and multiplied pairwise into int32 (pmaddwd): every partial sum
// is bounded by d * 127 * qmax < 2^31 (int_row's qmax).
inline std::int32_t int_dot_tail(const std::int8_t* c, const std::int16_t* q, int k, int d) {
  std::int32_t s = 0;
  for (; k < d; ++k) s += static_cast<std::int32_t>(q[k]) * c[k];
  return s;
}

inline void int_dots(const std::int8_t* c, const std::int16_t* q, index_t h, int d, std::int32_t* out, index_t stride) {
  index_t j = 0;
#if defined(__AVX512BW__)
  constexpr int W = 32;
  for (; j + 4 <= h; j += 4) {
    const std::int16_t *q0 = q + j * d, *q1 = q0 + d, *q2 = q1 + d, *q3 = q2 + d;
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    int k = 0;
    for (; k + W <= d; k += W) {
      const __m512i cw = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + k)));
#if defined(__AVX512VNNI__)  // multiply-add of int16 pairs into int32 in one instruction
      a0 = _mm512_dpwssd_epi32(a0, cw, _mm512_loadu_si512(q0 + k));
      a1 = _mm512_dpwssd_epi32(a1, cw, _mm512_loadu_si512(q1 + k));
      a2 = _mm512_dpwssd_epi32(a2, cw, _mm512_loadu_si512(q2 + k));
      a3 = _mm512_dpwssd_epi32(a3, cw, _mm512_loadu_si512(q3 + k));
#else
      a0 = _mm512_add_epi32(a0, _mm512_madd_epi16(cw, _mm512_loadu_si512(q0 + k)));
      a1 = _mm512_add_epi32(a1, _mm512_madd_epi16(cw, _mm512_loadu_si512(q1 + k)));
      a2 = _mm512_add_epi32(a2, _mm512_madd_epi16(cw, _mm512_loadu_si512(q2 + k)));
      a3 = _mm512_add_epi32(a3, _mm512_madd_epi16(cw, _mm512_loadu_si512(q3 + k)));
#endif
    }
    const __m512i acc[4] = {a0, a1, a2, a3};
    for (int t = 0; t < 4; ++t) {
      alignas(64) std::int32_t lane[16];
      _mm512_store_si512(lane, acc[t]);
      std::int32_t s = 0;
      for (int x = 0; x < 16; ++x) s += lane[x];
      out[(j + t) * stride] = s + int_dot_tail(c, q + (j + t) * d, k, d);
    }
  }
#elif defined(__AVX2__)
  constexpr int W = 16;
  for (; j + 4 <= h; j += 4) {
    const std::int16_t* qj = q + j * d;
    __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
    int k = 0;
    for (; k + W <= d; k += W) {
      const __m256i cw = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + k)));
      for (int t = 0; t < 4; ++t)
        acc[t] = _mm256_add_epi32(
            acc[t], _mm256_madd_epi16(cw, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qj + t * d + k))));
    }
    for (int t = 0; t < 4; ++t) {
      alignas(32) std::int32_t lane[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(lane), acc[t]);
      std::int32_t s = 0;
      for (int x = 0; x < 8; ++x) s += lane[x];
      out[(j + t) * stride] = s + int_dot_tail(c, qj + t * d, k, d);
    }
  }
#endif
  for (; j < h; ++j) out[j * stride] = int_dot_tail(c, q + j * d, 0, d);
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
    std::vector<IntRow> rows(m);
    std::vector<std::int16_t> qall(static_cast<size_t>(m) * d_);
    for (index_t j = 0; j < m; ++j) {
      rows[j] = int_row(Q + j * d_, cs_.data(), d_);
      std::copy(rows[j].q.begin(), rows[j].q.end(), qall.begin() + j * d_);
    }
    const double gam = gamma_k(d_ + 4, kU);
    const int nt = threads_for_work(threads, static_cast<double>(n_) * m * d_);
    const index_t chunks = std::max<index_t>(1, std::min<index_t>((n_ + kChunk - 1) / kChunk, nt > 1 ? 8 * nt : 1));
    const index_t per = (n_ + chunks - 1) / chunks;
    const bool topk = t == nullptr;
    // per (chunk, row): candidates (id, ub) in id order and, for top-r, a min-heap of the r largest lb
    std::vector<std::vector<std::pair<index_t, double>>> cand(chunks * m);
    std::vector<std::vector<double>> heap(topk ? chunks * m : 0);
    constexpr index_t kBlock = 256;  // keys whose int dots are taken before their bounds
    parallel_for(chunks, nt, [&](index_t ch, int) {
      std::vector<std::int32_t> dots(static_cast<size_t>(m) * kBlock);
      std::vector<double> lb(kBlock), ub(kBlock);
      const index_t end = std::min(n_, (ch + 1) * per);
      for (index_t b0 = ch * per; b0 < end; b0 += kBlock) {
        interrupt::check();
        const index_t nb = std::min(kBlock, end - b0);
        for (index_t i = 0; i < nb; ++i)
          int_dots(&codes_[static_cast<size_t>(b0 + i) * d_], qall.data(), m, d_, dots.data() + i, kBlock);
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
          if (!topk) {
            for (index_t i = 0; i < nb; ++i)
              if (!(hi[i] < t[j])) c.emplace_back(b0 + i, hi[i]);
            continue;
          }
          auto& hp = heap[ch * m + j];
          for (index_t i = 0; i < nb; ++i) {
            if (static_cast<index_t>(hp.size()) < r) {
              hp.push_back(lo[i]);
              std::push_heap(hp.begin(), hp.end(), std::greater<double>());
              c.emplace_back(b0 + i, hi[i]);
              continue;
            }
            if (hi[i] < hp.front()) continue;  // lb <= ub: neither a candidate nor a heap entry
            if (lo[i] > hp.front()) {
              std::pop_heap(hp.begin(), hp.end(), std::greater<double>());
              hp.back() = lo[i];
              std::push_heap(hp.begin(), hp.end(), std::greater<double>());
            }
            if (!(hi[i] < hp.front())) c.emplace_back(b0 + i, hi[i]);
          }
        }
      }
    });
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
          const double s = dot_f64(a, K + static_cast<size_t>(c[e].first) * d_, d_);
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
// w_e = exp(scale (s_e - s_max)) in float64 (s_max: the row's largest kept score, w <= 1), and
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
    double den = 0;
    for (std::int64_t x = b; x < e; ++x) {
      if (x + 8 < e) {
        const char* p = reinterpret_cast<const char*>(V + static_cast<size_t>(sel.ids[x + 8]) * dv);
        for (size_t off = 0; off < sizeof(T) * static_cast<size_t>(dv); off += 64) __builtin_prefetch(p + off);
      }
      const double w = std::exp(scale * (sel.scores[x] - smax));
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

// Certified top-p over each row's keys (all n visible), as softmax_attention(top_p=p) with
// 0 < p < 1 (docs/attention.md, "Top-p with a certificate"): s* = the row's largest float64
// score (exact top-1, `top1`), R = the keys with score >= t = s* - g / scale - slack
// (`report`, g = log(p n / (1 - p)), slack: the float64 rounding of a score), taken by score
// descending (ties to the smaller id) with w = exp(scale (s - s*)); every key outside R has
// w <= exp(scale (t + slack - s*)), so with U = (n - |R|) that bound the total mass Z lies in
// [Z_R, Z_R + U]; the kept prefix P is the shortest with Z_P >= p (Z_R + U), and its dropped
// share is at most (Z_R - Z_P + U) / (Z_R + U) (bound). Writes out (m x dv: the softmax over P),
// bound, entries = |P|, and the CSR of P (ids ascending) into *kept. Returns false when an
// output is not finite (the caller takes the general path).
template <class T>
bool softmax_top_p_rows(const Selection& report, index_t m, index_t n, const T* V, int dv, double scale,
                        const double* t, const double* slack, double p, double* out, double* bound,
                        std::int64_t* entries, Selection* kept) {
  bool ok = true;
  kept->lims.assign(m + 1, 0);
  kept->ids.clear();
  kept->scores.clear();
  std::vector<std::pair<double, index_t>> row;
  for (index_t j = 0; j < m; ++j) {
    double* o = out + static_cast<size_t>(j) * dv;
    std::fill(o, o + dv, 0.0);
    row.clear();
    for (std::int64_t x = report.lims[j]; x < report.lims[j + 1]; ++x) row.emplace_back(report.scores[x], report.ids[x]);
    std::sort(row.begin(), row.end(), [](const auto& a, const auto& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    const index_t r = static_cast<index_t>(row.size());
    if (r == 0) {  // cannot happen (s*'s key is in R); no certificate without it
      entries[j] = 0;
      bound[j] = 1.0;
      kept->lims[j + 1] = kept->lims[j];
      ok = false;
      continue;
    }
    const double top = row[0].first;
    std::vector<double> w(r);
    double zk = 0;
    for (index_t e = 0; e < r; ++e) zk += (w[e] = std::exp(scale * (row[e].first - top)));
    const double u = r == n ? 0.0 : static_cast<double>(n - r) * std::exp(std::min(scale * (t[j] + slack[j] - top), 700.0));
    const double need = p * (zk + u);
    double zp = 0, prior = 0;
    index_t take = 0;
    for (; take < r && prior < need; ++take) prior += w[take];
    for (index_t e = 0; e < take; ++e) {
      zp += w[e];
      const T* v = V + static_cast<size_t>(row[e].second) * dv;
      for (int k = 0; k < dv; ++k) o[k] += w[e] * static_cast<double>(v[k]);
    }
    for (int k = 0; k < dv; ++k) {
      o[k] /= zp;
      ok &= std::isfinite(o[k]);
    }
    entries[j] = take;
    bound[j] = take == n ? 0.0 : (std::max(zk - zp, 0.0) + u) / (zk + u);
    std::vector<std::pair<index_t, double>> ids(take);
    for (index_t e = 0; e < take; ++e) ids[e] = {row[e].second, row[e].first};
    std::sort(ids.begin(), ids.end());
    for (const auto& [id, sc] : ids) {
      kept->ids.push_back(id);
      kept->scores.push_back(sc);
    }
    kept->lims[j + 1] = static_cast<std::int64_t>(kept->ids.size());
  }
  return ok;
}

}  // namespace attend
}  // namespace hsrgeom
