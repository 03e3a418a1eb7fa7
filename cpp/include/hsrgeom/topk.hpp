// Exact top-k: the candidate collector every structure feeds (TopKCollector), the score reported
// with each id (topk_score) and the writer of one query's row (write_topk). Contract: the
// answer is the k largest exact <q, x>, ties broken by smaller id, whatever the rounding of the
// scores that guided the search.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <stdexcept>
#include <utility>
#include <vector>

#include "hsrgeom/predicate.hpp"
#include "hsrgeom/types.hpp"

namespace hsrgeom {

// ---- exact top-k -----------------------------------------------------------------------------
// Collects candidates for the k largest exact inner products <q, x>, ties broken by smaller id.
// Scores are rounded evaluations with a per-candidate error bound `err`; a candidate is dropped
// only when its score is surely below the current k-th best, so the final exact sort sees every
// point that can be in the answer.
template <class T>
class TopKCollector {
 public:
  struct Cand {
    double s, err;
    std::int64_t id;
    const T* x;
  };
  TopKCollector(const double* q, int d, index_t k) : q_(q), d_(d), k_(k) {}

  index_t k() const { return k_; }
  // Lower bound of the exact k-th best value among candidates so far (-inf if fewer than k).
  double kth_lower() const { return kth_lower_; }

  HSRGEOM_INLINE void push(double s, double err, std::int64_t id, const T* x) {
    if (!(std::fabs(s) <= std::numeric_limits<double>::max()) || !(err <= std::numeric_limits<double>::max()))
      s = 0, err = std::numeric_limits<double>::infinity();  // overflowed: no enclosure, exact comparisons decide
    if (s + err < kth_lower_) return;
    cand_.push_back({s, err, id, x});
    if (static_cast<index_t>(cand_.size()) >= next_prune_) {
      prune();
      // ties survive a prune: with many candidates tied at the k-th value, pruning again at
      // every push would be quadratic (20 000 identical points: 0.37 s per query), so wait
      // until the list has doubled
      next_prune_ = std::max(2 * k_ + 64, 2 * static_cast<index_t>(cand_.size()));
    }
  }

  // Exact top-k, best first.
  std::vector<Cand> finish() {
    prune();
    refine();
    auto better = [this](const Cand& a, const Cand& b) {
      if (a.s - a.err > b.s + b.err) return true;
      if (b.s - b.err > a.s + a.err) return false;
      const int c = std::equal(a.x, a.x + d_, b.x) ? 0 : exact_compare(q_, a.x, b.x, d_);
      if (c) return c > 0;
      return a.id < b.id;
    };
    std::sort(cand_.begin(), cand_.end(), better);
    if (static_cast<index_t>(cand_.size()) > k_) cand_.resize(k_);
    return std::move(cand_);
  }

 private:
  // Tightens each survivor's enclosure with a float64 re-evaluation before the final sort:
  // |fl(sum p_t) - sum p_t| <= gamma_{d+1} sum |p_t| (+ underflow), against the index-dtype
  // score's norm-based bound. Without it, candidates whose float32 enclosures overlap (common
  // for large k: ~1e-5 relative at d = 256) were ordered by exact arithmetic in the sort
  // (top-512 of 4300 keys, d = 256: 12 ms per query, ~0.2 ms with this).
  void refine() {
    const double g = gamma_k(d_ + 1, Rounding<double>::u) * 1.01;
    const double tiny = 2.0 * (d_ + 1) * Rounding<double>::eta;
    for (Cand& c : cand_) {
      double s = 0, a = 0;
      for (int t = 0; t < d_; ++t) {
        const double p = q_[t] * static_cast<double>(c.x[t]);
        s += p;
        a += std::fabs(p);
      }
      const double e = g * a + tiny;
      if (e < c.err) c.s = s, c.err = e;
    }
  }

  void prune() {
    if (static_cast<index_t>(cand_.size()) < k_ || k_ == 0) return;
    // k-th largest lower bound s - err: at least k candidates have exact value >= it.
    std::vector<double> lows(cand_.size());
    for (size_t i = 0; i < cand_.size(); ++i) lows[i] = cand_[i].s - cand_[i].err;
    std::nth_element(lows.begin(), lows.begin() + (k_ - 1), lows.end(), std::greater<double>());
    kth_lower_ = std::max(kth_lower_, lows[k_ - 1]);
    // Keep a candidate unless its upper bound is strictly below: ties must survive.
    cand_.erase(std::remove_if(cand_.begin(), cand_.end(),
                               [this](const Cand& c) { return c.s + c.err < kth_lower_; }),
                cand_.end());
  }

  const double* q_;
  int d_;
  index_t k_;
  index_t next_prune_ = 2 * k_ + 64;
  double kth_lower_ = -std::numeric_limits<double>::infinity();
  std::vector<Cand> cand_;
};

// The score topk() reports with an id: the float64 evaluation a_0 x_0 + a_1 x_1 + ... summed
// left to right, each product rounded (no fused multiply-add), +-inf where it overflows (NaN
// for inf - inf); the ranking is exact all the same (the exact value of every product of two
// finite doubles is held by the exact accumulator). Every structure reports this value, so the
// scores of equal answers agree bit for bit across structures (and with a Python loop).
template <class P>
inline double topk_score(const double* a, const P* x, int d) {
  double s = 0;
  for (int t = 0; t < d; ++t) {
    volatile double p = a[t] * static_cast<double>(x[t]);  // volatile: not contracted into an fma
    s += p;
  }
  return s;
}

// Writes the k best candidates of query j (from TopKCollector::finish, query vector a of d
// values) into row j of the m x k row-major outputs, with topk_score as the score. Every slot
// is written: fewer than k candidates (a structure skipped one it should have pushed) is an
// internal error, raised rather than filled with garbage.
template <class Cands>
void write_topk(const Cands& best, const double* a, int d, index_t j, index_t k, double* scores, std::int64_t* ids) {
  if (static_cast<index_t>(best.size()) < k)
    throw std::logic_error("hsrgeom internal error: top-k found fewer than k candidates");
  for (index_t r = 0; r < k; ++r) {
    ids[j * k + r] = best[r].id;
    scores[j * k + r] = topk_score(a, best[r].x, d);
  }
}

}  // namespace hsrgeom
