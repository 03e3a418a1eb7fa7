// Half-space sums (sum()): the query parameters (SumSpec), one query's running accumulator
// (SumAcc) and the batch result (SumResult). The contract is stated on SumSpec below.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "hsrgeom/types.hpp"

namespace hsrgeom {

// ---- half-space sums ---------------------------------------------------------------------------
// sum(): aggregates over the points of each half-space without listing them (a semigroup range
// query). For the points x (id i) with exact <a_j, x> >= b_j:
//   counts[j] = their number,  weights[j] = sum of w,  sums[j] = sum of w * values[offset + i],
// with w = max(s - shift_j, 0)^power (power 0: w = 1) and s the float64 <a_j, x> of the stored
// coordinates (the score report() returns). Membership is exact; the sums are float64
// accumulations whose order depends on the structure (and for scans on the thread count).
template <class V>
struct SumSpec {
  const V* values = nullptr;  // rows of dv values; nullptr when dv == 0
  int dv = 0;
  index_t offset = 0;  // point i uses row offset + i
  int power = 0;
  const double* shift = nullptr;  // one per query
  bool node_sums = false;  // the structure's value sums (set_value_sums) were made from these values
  bool needs_score() const { return power > 0; }
  double weight(double s, index_t j) const {
    if (power == 0) return 1.0;
    const double x = s - shift[j];
    if (!(x > 0)) return 0.0;
    return int_power(x, power);
  }
  // x^p for p >= 1 in O(log p) multiplications: up to kPowerLoop by repeated multiplication
  // (x * x * ... * x, left to right, as before), beyond by binary exponentiation (squaring).
  // python/hsrgeom/_results.py (_weights) evaluates the same operations in the same order.
  static constexpr int kPowerLoop = 16;
  static double int_power(double x, int p) {
    if (p <= kPowerLoop) {
      double w = x;
      for (int t = 1; t < p; ++t) w *= x;
      return w;
    }
    double r = 1, b = x;
    while (true) {
      if (p & 1) r *= b;
      p >>= 1;
      if (!p) return r;
      b *= b;
    }
  }
  const V* row(index_t i) const { return values + (offset + i) * static_cast<index_t>(dv); }
  void prefetch(index_t i) const {
    if (dv == 0) return;
    const char* p = reinterpret_cast<const char*>(row(i));
    for (size_t off = 0; off < sizeof(V) * static_cast<size_t>(dv); off += 64) __builtin_prefetch(p + off);
  }
};

// What one query (or one part of it) has summed so far. The value rows of a tree's points come
// in no particular order (unless attached, then in tree order), so each row is prefetched when
// its point is found and added kLag points later (a software pipeline: measured ~2x on 63k
// scattered rows of 10^6).
struct SumAcc {
  static constexpr int kLag = 16;
  std::int64_t count = 0;
  double weight = 0;
  std::vector<double> sum;  // dv values, allocated on the first non-zero weight

  // (always inlined: called per point in every sum traversal, which GCC stopped inlining once the
  // query concept added instantiations to the one translation unit)
  template <class V>
  HSRGEOM_INLINE void add(const SumSpec<V>& sp, index_t j, index_t i, double score) {
    ++count;
    const double w = sp.weight(score, j);
    if (w == 0) return;
    weight += w;
    if (sp.dv == 0) return;
    row(sp.dv);
    sp.prefetch(i);
    const int slot = static_cast<int>(pending_++ % kLag);
    if (pending_ > kLag) add_row(sp, ring_[slot]);
    ring_[slot] = {i, w};
  }
  // Adds the rows still in the pipeline; call before reading sum.
  template <class V>
  void flush(const SumSpec<V>& sp) {
    const std::int64_t k = std::min<std::int64_t>(pending_, kLag);
    for (std::int64_t t = pending_ - k; t < pending_; ++t) add_row(sp, ring_[t % kLag]);
    pending_ = 0;
  }
  // The dv sums, zero-filled on first use.
  double* row(int dv) {
    if (sum.empty()) sum.assign(dv, 0.0);
    return sum.data();
  }
  void merge(const SumAcc& o) {
    count += o.count;
    weight += o.weight;
    if (o.sum.empty()) return;
    double* s = row(static_cast<int>(o.sum.size()));
    for (size_t k = 0; k < o.sum.size(); ++k) s[k] += o.sum[k];
  }

 private:
  struct Entry {
    index_t id;
    double w;
  };
  template <class V>
  void add_row(const SumSpec<V>& sp, Entry e) {
    const V* v = sp.row(e.id);
    double* s = sum.data();
    for (int k = 0; k < sp.dv; ++k) s[k] += e.w * static_cast<double>(v[k]);
  }
  Entry ring_[kLag];
  std::int64_t pending_ = 0;
};

// Results of sum() for m queries: counts (m), weights (m), sums (m x dv row-major).
struct SumResult {
  std::vector<std::int64_t> counts;
  std::vector<double> weights, sums;
  SumResult(index_t m, int dv) : counts(m, 0), weights(m, 0.0), sums(static_cast<size_t>(m) * dv, 0.0) {}
  void store(index_t j, const SumAcc& a) {
    counts[j] = a.count;
    weights[j] = a.weight;
    if (!a.sum.empty()) std::copy(a.sum.begin(), a.sum.end(), sums.begin() + j * static_cast<index_t>(a.sum.size()));
  }
};

// Sums of a scan over chunks of consecutive points (cells[chunk][query]) added in chunk order.
template <class V>
SumResult merge_sums(std::vector<std::vector<SumAcc>>& cells, index_t m, const SumSpec<V>& sp, QueryStats* st) {
  SumResult res(m, sp.dv);
  for (index_t j = 0; j < m; ++j) {
    SumAcc total;
    for (auto& chunk : cells) {
      chunk[j].flush(sp);
      total.merge(chunk[j]);
    }
    res.store(j, total);
    if (st) st->points_reported[j] = total.count;
  }
  return res;
}

}  // namespace hsrgeom
