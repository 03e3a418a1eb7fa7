// LeafCodes: 8-bit codes of a tree's leaf points, relative to their leaf, so that a query
// decides most points of a boundary leaf from d bytes each instead of the float row.
//
// A tree's query tests the points of the leaves its half-space's boundary crosses. At d = 8 that
// read 32 bytes per point (float32) and cost ~4 ns per point in float64 dot products, ~half the
// query (docs/performance.md). Here each leaf stores its points as codes c in [-127, 127]^d
// around a center m with one step s (x ~ m + s c), in QuantizedScan's 16-point blocks
// (quantize.hpp). With the query normal a ~ sa q (int_normal):
//
//   <a, x> = <a, m> + s sa <q, c> + s <a - sa q, c> + <a, x - m - s c>,
//
// so <a, x> lies within W = s ra C + na E of <a, m> + s sa D, where D = <q, c> is an exact int32
// (block_dots), C >= max ||c|| and E >= max ||x - m - s c|| over the leaf (rounded up at build),
// ra >= ||a - sa q|| and na >= ||a||. With the rounding of <a, m> folded into W, a point is surely
// inside when D >= t_in and surely outside when D <= t_out, two integer thresholds per leaf and
// query (thresholds()); the others are decided by the shared exact predicate on their rows. So
// the codes decide which rows are read, never the answer.
//
// Memory: d bytes per point (d rounded up to even, each leaf to whole 16-point blocks) and
// d + 4 doubles per leaf. A leaf whose extent is 0, not finite or outside [1e-280, 1e280] gets no
// codes (its points are tested on their rows).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "hsrgeom/parallel.hpp"
#include "hsrgeom/predicate.hpp"
#include "hsrgeom/quantize.hpp"
#include "hsrgeom/types.hpp"

namespace hsrgeom {

class LeafCodes {
 public:
  // A query normal as the leaves' codes need it (int_normal, and the int16 pairs of block_dots).
  struct Normal {
    std::vector<std::int32_t> qp;
    double sa = 0, ra = 0, na = 0;
    bool usable() const { return sa > 0; }
  };

  LeafCodes() = default;

  bool empty() const { return slot_.empty(); }
  size_t memory_bytes() const {
    return codes_.size() * sizeof(Block) + rec_.size() * sizeof(double) + block0_.size() * sizeof(index_t) +
           slot_.size() * sizeof(std::int32_t);
  }

  // Codes for the leaves `leaves` (node ids) of a tree of `nodes` nodes whose leaf v holds the
  // rows [range(v).first, range(v).second) of pts (row-major, d columns).
  template <class T, class Range>
  void build(const T* pts, int d, index_t nodes, const std::vector<std::int32_t>& leaves, Range&& range,
             int threads) {
    d_ = d;
    dh_ = (d + 1) / 2;
    stride_ = d + 4;
    dots_ = block_dots_kernel(scan_dot_isa());
    slot_.assign(nodes, -1);
    block0_.assign(leaves.size() + 1, 0);
    for (size_t i = 0; i < leaves.size(); ++i) {
      const auto [b0, b1] = range(leaves[i]);
      slot_[leaves[i]] = static_cast<std::int32_t>(i);
      block0_[i + 1] = block0_[i] + (b1 - b0 + kCodeLanes - 1) / kCodeLanes;
    }
    codes_.assign(static_cast<size_t>(block0_.back()) * dh_, Block{});
    rec_.assign(leaves.size() * stride_, 0.0);
    const double work = 8.0 * static_cast<double>(block0_.back()) * kCodeLanes * d;
    parallel_for(static_cast<index_t>(leaves.size()), threads_for_work(threads, work), [&](index_t i, int) {
      const auto [b0, b1] = range(leaves[i]);
      code_leaf(i, pts + b0 * static_cast<index_t>(d), b1 - b0);
    });
  }

  template <class T>
  Normal normal(const T* a) const {
    Normal r;
    IntNormal in = int_normal(a, d_, int16_qmax(d_));
    r.sa = in.sa, r.ra = in.ra, r.na = in.na;
    r.qp.resize(dh_);
    for (int t = 0; t < dh_; ++t)
      r.qp[t] = pack_pair(in.q[2 * t], 2 * t + 1 < d_ ? in.q[2 * t + 1] : std::int16_t{0});
    return r;
  }

  // Leaf v's thresholds for the half-space <a, x> >= b (a: the normal in float64, q its integer
  // form): points with D >= *tin are inside, with D <= *tout outside. False when v has no codes
  // or the bounds are not finite (the caller tests the rows).
  bool thresholds(std::int32_t v, const double* a, const Normal& q, double b, const Margin& mg, std::int32_t* tin,
                  std::int32_t* tout) const {
    const std::int32_t i = slot_[v];
    if (i < 0 || !q.usable()) return false;
    const double* r = &rec_[static_cast<size_t>(i) * stride_];
    const double s = r[kStep];
    if (s == 0) return false;
    constexpr double u = Rounding<double>::u;
    const double am = dot_f64(a, r + kCenter, d_);
    // W, with the rounding of am (Margin: <a, m> in float64) and of b - am -/+ W below
    const double w0 = (s * q.ra * r[kCnorm] + q.na * r[kResid]) * (1 + 8 * u) + mg(q.na, r[kMnorm], 0.0);
    const double w = w0 + 8 * u * (std::fabs(b) + std::fabs(am) + w0);
    const double ss = s * q.sa;
    const double hi = (b - am + w) / ss, lo = (b - am - w) / ss;
    if (!(std::isfinite(hi) && std::isfinite(lo))) return false;
    // D >= hi (1 + 4u) is inside, D < lo (1 - 4u) outside (the division and s sa round); |D| <
    // 2^31 - 1 (block_dots: 127 d qmax <= 2^31 - 1, a prime, so never equal), so clamping a
    // threshold to int32 keeps every decision
    const double t_in = std::ceil(hi + 4 * u * std::fabs(hi));
    const double t_out = std::ceil(lo - 4 * u * std::fabs(lo)) - 1;
    constexpr double lim = 2147483647.0;
    *tin = static_cast<std::int32_t>(std::max(-lim, std::min(lim, t_in)));
    *tout = static_cast<std::int32_t>(std::max(-lim - 1, std::min(lim, t_out)));
    return true;
  }

  // Bits of points [p0, p0 + w) of leaf v (w <= 64, p0 a multiple of 64): *in those surely
  // inside, *unsure those the codes can't decide.
  HSRGEOM_INLINE void classify(std::int32_t v, index_t p0, index_t w, const Normal& q, std::int32_t tin,
                               std::int32_t tout, std::uint64_t* in, std::uint64_t* unsure) const {
    alignas(64) std::int32_t dot[64];
    const index_t nb = (w + kCodeLanes - 1) / kCodeLanes;
    const index_t blk = block0_[slot_[v]] + p0 / kCodeLanes;
    dots_(reinterpret_cast<const std::int8_t*>(&codes_[static_cast<size_t>(blk) * dh_]), nb, q.qp.data(), 1, dh_,
          dot);
    std::uint64_t yes = 0, no = 0;
    for (index_t b = 0; b < nb; ++b) {  // 16 lanes at a time: two compares and two masks
      std::uint32_t y = 0, n = 0;
      for (int p = 0; p < kCodeLanes; ++p) {
        y |= static_cast<std::uint32_t>(dot[b * kCodeLanes + p] >= tin) << p;
        n |= static_cast<std::uint32_t>(dot[b * kCodeLanes + p] <= tout) << p;
      }
      yes |= static_cast<std::uint64_t>(y) << (b * kCodeLanes);
      no |= static_cast<std::uint64_t>(n) << (b * kCodeLanes);
    }
    const std::uint64_t all = w == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << w) - 1;
    *in = yes & all;
    *unsure = ~(yes | no) & all;
  }

 private:
  // 32 bytes: a coordinate pair of one block's 16 points (quantize.hpp's layout, dh per block)
  struct alignas(32) Block {
    std::int8_t c[32];
  };
  enum { kStep = 0, kCnorm = 1, kResid = 2, kMnorm = 3, kCenter = 4 };

  template <class T>
  void code_leaf(index_t i, const T* x, index_t cnt) {
    double* r = &rec_[static_cast<size_t>(i) * stride_];
    double* m = r + kCenter;
    std::vector<double> lo(x, x + d_), hi(x, x + d_);
    for (index_t k = 0; k < cnt; ++k)
      for (int j = 0; j < d_; ++j) {
        lo[j] = std::min(lo[j], static_cast<double>(x[k * d_ + j]));
        hi[j] = std::max(hi[j], static_cast<double>(x[k * d_ + j]));
      }
    double h = 0;
    for (int j = 0; j < d_; ++j) {
      m[j] = 0.5 * lo[j] + 0.5 * hi[j];
      h = std::max(h, std::max(hi[j] - m[j], m[j] - lo[j]));
    }
    if (!(h >= 1e-280 && h <= 1e280)) {  // no codes (h == 0: a degenerate leaf, decided whole)
      r[kStep] = 0;
      return;
    }
    constexpr double u = Rounding<double>::u;
    const double s = h / 127;
    double cmax = 0, emax = 0;
    std::int8_t* blocks = codes_[static_cast<size_t>(block0_[i]) * dh_].c;
    for (index_t k = 0; k < cnt; ++k) {
      double c2 = 0, e2 = 0;
      std::int8_t* bk = blocks + (k / kCodeLanes) * 32 * dh_ + 2 * (k % kCodeLanes);
      for (int j = 0; j < d_; ++j) {
        const double y = static_cast<double>(x[k * d_ + j]) - m[j];
        const double c = std::max(-127.0, std::min(127.0, std::nearbyint(y / s)));
        const double e = y - s * c;
        c2 += c * c;
        e2 += e * e;
        bk[(j / 2) * 2 * kCodeLanes + (j & 1)] = static_cast<std::int8_t>(c);
      }
      cmax = std::max(cmax, c2);
      emax = std::max(emax, e2);
    }
    r[kStep] = s;
    r[kCnorm] = std::sqrt(cmax) * (1 + 4 * u);  // c2: an exact integer
    // each e rounds three times (y, s c, the difference): <= 3 u (|y| + |s c|) <= 3 u 256 s;
    // the norm's own rounding: (d + 8) u
    r[kResid] = (std::sqrt(emax) * (1 + (d_ + 8) * u) + 1024 * u * s * std::sqrt(d_ + 1.0)) * (1 + 4 * u) +
                4 * std::sqrt(d_ * Rounding<double>::eta);
    r[kMnorm] = norm_up(m, d_);
  }

  int d_ = 0, dh_ = 0;
  index_t stride_ = 0;
  BlockDotsFn dots_ = nullptr;
  std::vector<Block> codes_;          // per leaf, its blocks (block0_)
  std::vector<double> rec_;           // per leaf: s, C, E, ||m||, m (d)
  std::vector<index_t> block0_;       // per leaf: its first block; one past the last at the end
  std::vector<std::int32_t> slot_;    // per node: its leaf index, or -1
};

}  // namespace hsrgeom
