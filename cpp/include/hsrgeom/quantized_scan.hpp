// QuantizedScan: a scan over 8-bit codes of the points, then an exact check of the candidates.
//
// Where nothing can be pruned (high d, spread-out data) a scan must read every point; this one
// reads 1 byte per coordinate instead of 4 (float32) or 8 (float64). Each point x is stored as
// codes c in [-127, 127]^d with a per-point scale s (x ~ s c, s = max|x_k| / 127); each query
// normal a as 16-bit integers q with a scale s_a (a ~ s_a q). Then <q, c> is an exact integer
// (int32 sums, vectorised as 16-bit multiply-adds) and
//
//   <a, x> = s s_a <q, c> + s <a - s_a q, c> + <a, x - s c>
//         <= s s_a <q, c> + ||a - s_a q|| (s ||c||) + ||a|| ||x - s c||,
//
// with the per-point factors g = s ||c|| and r >= ||x - s c|| computed at build time and rounded
// up, and the per-query ra >= ||a - s_a q||, na >= ||a|| likewise. A point is a candidate unless
// this upper bound (plus the rounding of its own evaluation) is below b; candidates are decided
// by the shared exact predicate on the full-precision row (float64 filter, exact arithmetic when
// undecided), which also gives the float64 score. Points that cannot be coded safely
// (max|x_k| outside [1e-290, 1e290]) are always candidates. The answer is therefore exactly the
// brute-force set; the codes only decide which rows are read.
//
// Like faiss's IndexScalarQuantizer (8-bit) followed by IndexRefineFlat, but the refinement is
// driven by a proven bound, not by a candidate count. Memory: the points plus n (d + 32) bytes.
// top-k is answered by the exact scan's cells (BruteForce::topk_cells) over the stored points.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "hsrgeom/brute_force.hpp"
#include "hsrgeom/dispatch.hpp"
#include "hsrgeom/interrupt.hpp"
#include "hsrgeom/parallel.hpp"
#include "hsrgeom/predicate.hpp"
#include "hsrgeom/quantize.hpp"
#include "hsrgeom/query.hpp"
#include "hsrgeom/report.hpp"
#include "hsrgeom/sums.hpp"
#include "hsrgeom/types.hpp"

namespace hsrgeom {

template <class T>
class QuantizedScan : public QueryMethods<QuantizedScan<T>, T> {
 public:
  QuantizedScan() = default;
  QuantizedScan(PointsView<T> p, int threads) : full_(p), n_(p.n), d_(p.d) {
    codes_.resize(static_cast<size_t>(n_) * d_);
    scale_.resize(n_);
    cfac_.resize(n_);
    resid_.resize(n_);
    xnorm_.resize(n_);
    parallel_for((n_ + 4095) / 4096, threads_for_work(threads, 8.0 * n_ * d_), [&](index_t c, int) {
      for (index_t i = c * 4096; i < std::min(n_, (c + 1) * 4096); ++i) code(i);
    });
  }

  index_t size() const { return n_; }
  int dim() const { return d_; }
  const T* row(index_t i) const { return full_.row(i); }
  const std::vector<T>& points() const { return full_.points(); }
  size_t memory_bytes() const {
    return full_.memory_bytes() + codes_.size() +
           (scale_.size() + cfac_.size() + resid_.size() + xnorm_.size()) * sizeof(double);
  }

  // report/count/empty/sum/topk come from QueryMethods (query.hpp's block drivers over
  // scan_cells and topk_cells: ids come out ascending whatever `sorted` says, a scan meets them
  // in that order; top-k scores the stored points exactly, as BruteForce does).
  // The block visit (query.hpp): cells[chunk][query] of contiguous point chunks, and
  // on(cell, j, id, x, a, score) for each point inside half-space j, with the float64 score of
  // its exact check.
  static constexpr bool kBlockScan = true;
  template <class C, class On>
  void scan_cells(const Halfspaces<T>& q, QueryStats* st, int threads, std::vector<std::vector<C>>& cells,
                  On&& on) const {
    scan(q, st, threads, cells, on);
  }

  // Top-k: the exact scan's cells (BruteForce::topk_cells) over the stored points.
  using TopKRow = T;
  template <class C, class Make>
  void topk_cells(const T* queries, index_t m, QueryStats* st, int threads, std::vector<std::vector<C>>& cells,
                  Make&& make) const {
    full_.topk_cells(queries, m, st, threads, cells, make);
  }

 private:
  static constexpr double kInf = std::numeric_limits<double>::infinity();

  // Codes of point i, its scale s, g >= s ||c|| and r >= ||x - s c|| (see the header comment).
  void code(index_t i) {
    const T* x = row(i);
    std::int8_t* c = &codes_[static_cast<size_t>(i) * d_];
    double mx = 0;
    for (int k = 0; k < d_; ++k) mx = std::max(mx, std::fabs(static_cast<double>(x[k])));
    xnorm_[i] = norm_up(x, d_);
    std::fill(c, c + d_, std::int8_t{0});
    scale_[i] = cfac_[i] = 0;
    resid_[i] = 0;
    if (mx == 0) return;  // exact: all codes 0
    if (mx < 1e-290 || mx > 1e290) {  // always a candidate
      resid_[i] = kInf;
      return;
    }
    double c2 = 0;
    const double s = to_integers(x, d_, mx, 127.0, c, &resid_[i], &c2);
    scale_[i] = s;
    cfac_[i] = s * std::sqrt(c2) * (1 + 4 * Rounding<double>::u);
  }

  // A query normal as integers: q = round(a / s_a) with |q| small enough that a d-term sum of
  // q_k c_k fits in int32; ra >= ||a - s_a q||.
  struct IntQuery {
    std::vector<std::int16_t> q;
    double sa = 0, ra = 0, na = 0;
  };
  IntQuery quantize(const T* a) const {
    IntQuery r;
    r.q.assign(d_, 0);
    r.na = norm_up(a, d_);
    double mx = 0;
    for (int k = 0; k < d_; ++k) mx = std::max(mx, std::fabs(static_cast<double>(a[k])));
    if (mx == 0) return r;
    const double qmax = std::min(32767.0, std::floor(2147483647.0 / (127.0 * d_)));
    if (mx < 1e-290 || mx > 1e290 || qmax < 1) {  // no integer form: ra = ||a|| (q = 0)
      r.ra = r.na;
      return r;
    }
    double q2 = 0;
    r.sa = to_integers(a, d_, mx, qmax, r.q.data(), &r.ra, &q2);
    return r;
  }

  // For each query j and point i that may lie in the half-space (by the codes), decides it
  // exactly and calls on(parts[chunk][j], j, i, x_i, a_j, <a_j, x_i> in float64) for each point
  // inside.
  // Chunks of consecutive points run in parallel, so the ids of a chunk come in ascending order.
  template <class C, class On>
  void scan(const Halfspaces<T>& q, QueryStats* st, int threads, std::vector<std::vector<C>>& parts,
            On& on) const {
    const index_t m = q.m;
    std::vector<double> ad(q.normals, q.normals + m * d_);
    std::vector<IntQuery> iq(m);
    for (index_t j = 0; j < m; ++j) iq[j] = quantize(q.normals + j * d_);
    const int nt = threads_for_work(threads, static_cast<double>(n_) * m * d_ / 4);
    const index_t chunks = std::max<index_t>(1, std::min<index_t>((n_ + 4095) / 4096, nt > 1 ? 8 * nt : 1));
    const index_t per = (n_ + chunks - 1) / chunks;
    parts.assign(chunks, std::vector<C>(m));
    std::vector<std::vector<std::int64_t>> tested(chunks, std::vector<std::int64_t>(m, 0)),
        exact(chunks, std::vector<std::int64_t>(m, 0));
    const Margin margin(d_, Rounding<double>::u, Rounding<double>::eta);
    const double u = Rounding<double>::u;
    parallel_for(chunks, nt, [&](index_t ch, int) {
      // candidates of a group of points are collected first, then their rows are read with
      // software prefetch (the rows are scattered: a plain loop waits on every one)
      std::vector<std::pair<index_t, index_t>> cand;  // (point, query)
      const index_t end = std::min(n_, (ch + 1) * per);
      for (index_t g0 = ch * per; g0 < end; g0 += 2048) {
        cand.clear();
        interrupt::check();  // per group: 2048 points x m queries (a check inside the point loop cost ~15 %)
        for (index_t id = g0; id < std::min(end, g0 + 2048); ++id) {
          const std::int8_t* c = &codes_[static_cast<size_t>(id) * d_];
          for (index_t j = 0; j < m; ++j) {
            const IntQuery& qj = iq[j];
            const std::int16_t* qq = qj.q.data();
            std::int32_t dot = 0;
#pragma omp simd reduction(+ : dot)
            for (int k = 0; k < d_; ++k) dot += static_cast<std::int32_t>(qq[k]) * static_cast<std::int32_t>(c[k]);
            const double main = scale_[id] * (qj.sa * dot), w = qj.ra * cfac_[id] + qj.na * resid_[id];
            // surely outside unless this holds (NaN or inf: a candidate)
            if (!(main + w + 4 * u * (std::fabs(main) + w) + 1e-300 < q.offsets[j])) cand.emplace_back(id, j);
          }
        }
        for (size_t e = 0; e < cand.size(); ++e) {
          if (e + 8 < cand.size()) {
            const char* p = reinterpret_cast<const char*>(row(cand[e + 8].first));
            for (size_t off = 0; off < sizeof(T) * static_cast<size_t>(d_); off += 64) __builtin_prefetch(p + off);
          }
          const auto [id, j] = cand[e];
          ++tested[ch][j];
          const double* a = ad.data() + j * d_;
          const T* x = row(id);
          const double v = dot_f64(a, x, d_), b = q.offsets[j];
          if (in_halfspace(v, margin(iq[j].na, xnorm_[id], b), a, x, b, d_, &exact[ch][j])) on(parts[ch][j], j, id, x, a, v);
        }
      }
    });
    if (st) {
      st->resize(m);
      for (index_t j = 0; j < m; ++j)
        for (index_t ch = 0; ch < chunks; ++ch) {
          st->points_tested[j] += tested[ch][j];
          st->exact_checks[j] += exact[ch][j];
        }
    }
  }

  BruteForce<T> full_;
  index_t n_ = 0;
  int d_ = 0;
  std::vector<std::int8_t> codes_;
  std::vector<double> scale_, cfac_, resid_, xnorm_;  // per point: s, s ||c||, ||x - s c||, ||x||
};

}  // namespace hsrgeom
