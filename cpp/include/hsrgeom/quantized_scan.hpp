// QuantizedScan: a scan over 8-bit codes of the points, then an exact check of the candidates.
//
// Where nothing can be pruned (high d, spread-out data) a scan must read every point; this one
// reads 1 byte per coordinate instead of 4 (float32) or 8 (float64). Each point x is stored as
// codes c in [-127, 127]^d with a per-point scale s (x ~ s c, s = max|x_k| / 127); each query
// normal a as 16-bit integers q with a scale s_a (a ~ s_a q). Then <q, c> is an exact integer
// (int32 sums of 16-bit multiply-adds, quantize.hpp block_dots) and
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
// Layout: the codes of 16 consecutive points form a block, coordinates in pairs (quantize.hpp,
// code_block_bytes), so one vector instruction takes a coordinate pair of all 16 points; the scan
// works on 16 points x every query at a time, and the bound is evaluated 16 points wide. No
// loop runs over d in vectors, so the speed does not hinge on d versus the vector width.
//
// Like faiss's IndexScalarQuantizer (8-bit) followed by IndexRefineFlat, but the refinement is
// driven by a proven bound, not by a candidate count. Memory: the points plus about n (d + 32)
// bytes (d rounded up to even, n to a multiple of 16).
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
  QuantizedScan(PointsView<T> p, int threads)
      : full_(p), n_(p.n), d_(p.d), dh_((p.d + 1) / 2), bb_(code_block_bytes(p.d)),
        dots_(block_dots_kernel(scan_dot_isa())) {
    const index_t np = (n_ + kCodeLanes - 1) / kCodeLanes * kCodeLanes;  // padded points: codes 0, never reported
    codes_.assign(static_cast<size_t>(np / kCodeLanes) * bb_, std::int8_t{0});
    scale_.assign(np, 0.0);
    cfac_.assign(np, 0.0);
    resid_.assign(np, 0.0);
    xnorm_.assign(np, 0.0);
    // 4096-point chunks: whole blocks, so no two threads write one block
    parallel_for((n_ + 4095) / 4096, threads_for_work(threads, 8.0 * n_ * d_), [&](index_t c, int) {
      std::vector<std::int8_t> tmp(d_);
      for (index_t i = c * 4096; i < std::min(n_, (c + 1) * 4096); ++i) code(i, tmp.data());
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

  // Codes of point i (into its block: byte (t * 16 + p) * 2 + h holds c[2t + h], p = i mod 16),
  // its scale s, g >= s ||c|| and r >= ||x - s c|| (see the header comment). tmp: d bytes.
  void code(index_t i, std::int8_t* c) {
    const T* x = row(i);
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
    std::int8_t* blk = &codes_[static_cast<size_t>(i / kCodeLanes) * bb_] + 2 * (i % kCodeLanes);
    for (int k = 0; k < d_; ++k) blk[(k / 2) * 2 * kCodeLanes + (k & 1)] = c[k];
  }

  // For each query j and point i that may lie in the half-space (by the codes), decides it
  // exactly and calls on(parts[chunk][j], j, i, x_i, a_j, <a_j, x_i> in float64) for each point
  // inside.
  // Chunks of consecutive points (whole blocks) run in parallel; within a chunk, blocks go in
  // order and the ids of each query come in ascending order.
  template <class C, class On>
  void scan(const Halfspaces<T>& q, QueryStats* st, int threads, std::vector<std::vector<C>>& parts,
            On& on) const {
    constexpr index_t L = kCodeLanes, kGroup = 2048;  // points per interrupt check and candidate batch
    const index_t m = q.m;
    std::vector<double> ad(q.normals, q.normals + m * d_);
    std::vector<IntNormal> iq(m);
    std::vector<std::int32_t> qp(static_cast<size_t>(m) * dh_);  // the int16 pairs (quantize.hpp)
    for (index_t j = 0; j < m; ++j) {
      iq[j] = int_normal(q.normals + j * d_, d_, int16_qmax(d_));
      for (int t = 0; t < dh_; ++t)
        qp[j * dh_ + t] = pack_pair(iq[j].q[2 * t], 2 * t + 1 < d_ ? iq[j].q[2 * t + 1] : std::int16_t{0});
    }
    const int nt = threads_for_work(threads, static_cast<double>(n_) * m * d_ / 4);
    const index_t chunks = std::max<index_t>(1, std::min<index_t>((n_ + 4095) / 4096, nt > 1 ? 8 * nt : 1));
    const index_t per = ((n_ + chunks - 1) / chunks + L - 1) / L * L;
    // blocks per kernel call: its dots (nb * m * 16 int32) stay within ~16 KB (L1)
    const index_t gb = std::max<index_t>(1, std::min<index_t>(kGroup / L, 256 / std::max<index_t>(m, 1)));
    parts.assign(chunks, std::vector<C>(m));
    std::vector<std::vector<std::int64_t>> tested(chunks, std::vector<std::int64_t>(m, 0)),
        exact(chunks, std::vector<std::int64_t>(m, 0));
    const Margin margin(d_, Rounding<double>::u, Rounding<double>::eta);
    const double u = Rounding<double>::u;
    parallel_for(chunks, nt, [&](index_t ch, int) {
      // candidates of a group of points are collected first, then their rows are read with
      // software prefetch (the rows are scattered: a plain loop waits on every one)
      std::vector<std::pair<index_t, index_t>> cand;  // (point, query)
      std::vector<std::int32_t> dots(static_cast<size_t>(gb * m * L));
      const index_t end = std::min(n_, (ch + 1) * per);
      for (index_t g0 = ch * per; g0 < end; g0 += kGroup) {
        cand.clear();
        interrupt::check();  // per group: 2048 points x m queries (a check inside the point loop cost ~15 %)
        const index_t g1 = std::min(end, g0 + kGroup);
        for (index_t b0 = g0; b0 < g1; b0 += gb * L) {
          const index_t nb = std::min(gb, (g1 - b0 + L - 1) / L);
          dots_(&codes_[static_cast<size_t>(b0 / L) * bb_], nb, qp.data(), m, dh_, dots.data());
          for (index_t b = 0; b < nb; ++b) {
            const index_t i0 = b0 + b * L;
            const double *sc = &scale_[i0], *cf = &cfac_[i0], *rs = &resid_[i0];
            for (index_t j = 0; j < m; ++j) {
              const IntNormal& qj = iq[j];
              const double sa = qj.sa, ra = qj.ra, na = qj.na, bj = q.offsets[j];
              const std::int32_t* dj = &dots[(b * m + j) * L];
              // the upper bound of <a_j, x_i>, 16 points wide; surely outside unless it is >= b
              // (NaN or inf: a candidate). Two plain loops of fixed trip count, which GCC
              // vectorises at every width (one loop with an `omp simd` flag reduction stayed
              // scalar with SSE2); the flags are summed as doubles, exact (at most 16).
              double up[L];
              for (index_t p = 0; p < L; ++p) {
                const double main = sc[p] * (sa * dj[p]), w = ra * cf[p] + na * rs[p];
                up[p] = main + w + 4 * u * (std::fabs(main) + w) + 1e-300;
              }
              double any = 0;
#pragma omp simd reduction(+ : any)
              for (index_t p = 0; p < L; ++p) any += up[p] < bj ? 0.0 : 1.0;
              if (any != 0)
                for (index_t p = 0; p < L; ++p)
                  if (!(up[p] < bj) && i0 + p < end) cand.emplace_back(i0 + p, j);
            }
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
  int d_ = 0, dh_ = 0;          // dh_ = ceil(d / 2): coordinate pairs
  size_t bb_ = 0;               // bytes per block of 16 points
  BlockDotsFn dots_ = nullptr;  // the block kernel of this CPU (quantize.hpp)
  std::vector<std::int8_t> codes_;  // blocks of 16 points (quantize.hpp layout)
  // per point, padded to whole blocks (0 past n): s, s ||c||, ||x - s c||, ||x||
  std::vector<double> scale_, cfac_, resid_, xnorm_;
};

}  // namespace hsrgeom
