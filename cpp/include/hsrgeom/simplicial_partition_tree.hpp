// SimplicialPartitionTree: an r-way partition tree whose partitions are built with the
// multiplicative-weights (iterative reweighting) method of Matousek (1992) and Chan (2012), so
// that a hyperplane crosses few cells of each node's partition (theory: O(r^(1-1/d))).
//
// Node split (a node of s > leaf_size points gets r' = min(r, ceil(s / leaf_size)) children of
// g = ceil(s / r') points, the last one of the rest):
//   * Test set H: h = clamp(s / 8, 32, 256) hyperplanes, unit normals: half random directions
//     with the offset of a random point of the node (a random quantile), half (for 2 <= d <= 8)
//     the hyperplanes through d random points of the node. Weights w(h) = 1.
//   * Repeat while more than g points remain: draw hyperplanes from H one by one with
//     probability proportional to w (without repetition), grouping the remaining points by
//     their sign vector w.r.t. the hyperplanes drawn so far (each group = the points in one cell
//     of the arrangement of the drawn hyperplanes: a convex region); stop before the largest
//     group would drop below g points. The typical number drawn is t ~ (d! r / 2)^(1/d), the
//     size of a sample whose arrangement has ~r cells, as in a (1/t)-cutting. For nodes with
//     more than 8192 remaining points the drawing runs on a random sample of 8192 of them and
//     the chosen cell is then applied to all (shrinking the cell to a super-cell if the sample
//     misjudged its size). The largest group is cut down to exactly g points by a hyperplane
//     across its widest direction (among the drawn normals, the axes and two weighted draws
//     from H: it keeps cells fat); the child = those g points (a convex region again).
//     Then every h in H that has child points strictly on both sides (checked on up to 64 of
//     the child's points; this only steers the heuristic, never the answer) has its weight
//     doubled, so later children avoid the hyperplanes that already cross many children.
//   * The points left (<= g) form the last child.
// Children own contiguous ranges of the reordered points, as in PartitionTree; each node keeps
// NodeBounds (box + ball, conservative under rounding) for the queries, which are shared with
// PartitionTree (range_tree.hpp): all out -> skip, all in -> copy the range, else recurse;
// leaves test their points with the shared exact predicate (predicate.hpp). So the partition's
// quality affects only the cost, never the result. Measured (docs/simplicial.md): crossings
// are of order r^(1-1/d) averaged over nodes, but at the root worse than a kd-tree's first
// log2(r) levels (the last, greedily carved children are scattered leftovers).
//
// Determinism: each node's random generator is seeded from (seed, node range), so the tree is
// the same for any number of threads. Subtrees are built in parallel (OpenMP tasks) into local
// node arrays that are spliced in a fixed order.
//
// crossing_stats() measures, for query hyperplanes, how many children of each visited node
// have points on both sides (the crossing number of the partition's point sets) and how many
// the box+ball bounds fail to decide (what a query actually pays).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>
#include <Eigen/Dense>

#include "hsrgeom/interrupt.hpp"
#include "hsrgeom/parallel.hpp"
#include "hsrgeom/progress.hpp"
#include "hsrgeom/range_tree.hpp"

namespace hsrgeom {

// Per visited node of a crossing measurement (see SimplicialPartitionTree::crossing_stats).
struct CrossingRecord {
  std::int32_t depth, fanout, crossed_sets, undecided, node_crossed;
};

template <class T>
class SimplicialPartitionTree : public RangeTree<SimplicialPartitionTree<T>, T> {
  using Base = RangeTree<SimplicialPartitionTree<T>, T>;
  friend Base;
  using Base::n_, Base::d_, Base::perm_;
  using typename Base::Query;

 public:
  struct Node {
    index_t begin, end;
    std::int32_t first_child, children;  // children at nodes_[first_child, +children); 0: leaf
  };

  SimplicialPartitionTree() = default;
  SimplicialPartitionTree(PointsView<T> p, int r, int leaf_size, std::uint64_t seed, int threads)
      : Base(p), r_(std::min(std::max(2, r), 256)), leaf_size_(std::max(1, leaf_size)), seed_(seed) {
    if (n_ == 0) return;
    BuildProgress progress("SimplicialPartitionTree", n_, d_);
    const int nt = threads_for_work(threads, 100.0 * n_ * d_);
    interrupt::State* const cancel = interrupt::current();
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
      const interrupt::Adopt adopt(cancel);  // build runs in tasks: it stops, never throws
#ifdef _OPENMP
#pragma omp single
#endif
      nodes_ = build(p, 0, n_, nt > 1);
    }
    interrupt::check();  // an interrupted build left a partial tree: this object is discarded
    const index_t nn = static_cast<index_t>(nodes_.size());
    this->allocate_nodes(nn);
    parallel_for(nn, nt, [&](index_t v, int) {
      const Node& nd = nodes_[v];
      this->summarize(static_cast<std::int32_t>(v), p, p, perm_.data() + nd.begin, nd.end - nd.begin);
    });
    this->store_points(p);
    this->code_leaves(nt);
    progress.done("done: %lld nodes", static_cast<long long>(nodes_.size()));
  }

  int r() const { return r_; }
  int leaf_size() const { return leaf_size_; }
  std::uint64_t seed() const { return seed_; }
  index_t node_count() const { return static_cast<index_t>(nodes_.size()); }
  int depth() const {
    int best = 0;
    std::vector<std::pair<std::int32_t, int>> st;
    if (!nodes_.empty()) st.push_back({0, 0});
    while (!st.empty()) {
      auto [v, dep] = st.back();
      st.pop_back();
      best = std::max(best, dep);
      for (std::int32_t c = 0; c < nodes_[v].children; ++c) st.push_back({nodes_[v].first_child + c, dep + 1});
    }
    return best;
  }
  size_t memory_bytes() const { return this->base_memory_bytes() + nodes_.size() * sizeof(Node); }

  // For every query and every node whose bounds do not decide it (the nodes a report visits
  // and recurses into), one record: the node's depth, its number of children, how many of
  // them have points on both sides of the hyperplane <a, x> = b (decided exactly), how many
  // the bounds leave undecided, and whether the node itself has points on both sides.
  // lims[j] .. lims[j+1] index the records of query j.
  void crossing_stats(const Halfspaces<T>& q, std::vector<std::int64_t>& lims,
                      std::vector<CrossingRecord>& recs, int threads) const {
    std::vector<std::vector<CrossingRecord>> per(q.m);
    const double work = static_cast<double>(q.m) * n_ * d_;
    parallel_for(q.m, threads_for_work(threads, work), [&](index_t j, int) {
      if (n_ == 0) return;
      const Query qq = this->make_query(q.normals + j * d_, q.offsets[j]);
      sides(0, 0, qq, per[j]);
    });
    lims.assign(q.m + 1, 0);
    for (index_t j = 0; j < q.m; ++j) lims[j + 1] = lims[j] + static_cast<std::int64_t>(per[j].size());
    recs.clear();
    recs.reserve(lims.back());
    for (auto& v : per) recs.insert(recs.end(), v.begin(), v.end());
  }

 private:
  std::pair<index_t, index_t> node_range(std::int32_t v) const { return {nodes_[v].begin, nodes_[v].end}; }
  template <class F>
  int each_child(std::int32_t v, F&& f) const {
    const Node& nd = nodes_[v];
    for (std::int32_t ch = nd.first_child + nd.children - 1; ch >= nd.first_child; --ch) f(ch);
    return nd.children;
  }

  // Returns bit 0: the node has a point inside, bit 1: a point outside. Records every node the
  // bounds leave undecided (see crossing_stats).
  int sides(std::int32_t v, int depth, const Query& q, std::vector<CrossingRecord>& out) const {
    Counters c;
    const int cls = this->classify(v, q, c);
    if (cls > 0) return 1;
    if (cls < 0) return 2;
    const Node& nd = nodes_[v];
    if (nd.children == 0) {
      index_t inside = 0;
      this->test_leaf(v, q, c, [&](index_t) { ++inside; return true; });
      return (inside > 0 ? 1 : 0) | (inside < nd.end - nd.begin ? 2 : 0);
    }
    const size_t at = out.size();
    out.push_back({depth, nd.children, 0, 0, 0});
    int s = 0, crossed = 0, undecided = 0;
    for (std::int32_t ch = nd.first_child; ch < nd.first_child + nd.children; ++ch) {
      const int cs = sides(ch, depth + 1, q, out);
      s |= cs;
      crossed += cs == 3;
      undecided += this->classify(ch, q, c) == 0;
    }
    out[at].crossed_sets = crossed;
    out[at].undecided = undecided;
    out[at].node_crossed = s == 3;
    return s;
  }

  // ---- build -----------------------------------------------------------------------------------
  static std::uint64_t mix(std::uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  // Builds the subtree of perm_[b, e): element 0 is its root, elements 1..k the root's children,
  // then the rest of each child's subtree; indices are local to the returned vector.
  std::vector<Node> build(const PointsView<T>& p, index_t b, index_t e, bool parallel) {
    const index_t s = e - b;
    std::vector<Node> out{{b, e, -1, 0}};
    if (s <= leaf_size_ || interrupt::stop_requested()) return out;
    index_t* ids = perm_.data() + b;
    {
      const T* x0 = p.row(ids[0]);
      bool same = true;
      for (index_t k = 1; k < s && same; ++k) same = std::equal(x0, x0 + d_, p.row(ids[k]));
      if (same) return out;  // decided by one exact test at query time
    }
    std::vector<index_t> cuts = split(p, ids, s, mix(seed_ ^ mix(static_cast<std::uint64_t>(b) * 0x100000001b3ULL ^ static_cast<std::uint64_t>(s))));
    const int k = static_cast<int>(cuts.size()) - 1;
    std::vector<std::vector<Node>> sub(k);
#ifdef _OPENMP
    if (parallel && s > 32768) {
      for (int j = 0; j < k; ++j) {
#pragma omp task shared(sub, p, cuts)
        sub[j] = build(p, b + cuts[j], b + cuts[j + 1], true);
      }
#pragma omp taskwait
    } else
#endif
    {
      for (int j = 0; j < k; ++j) sub[j] = build(p, b + cuts[j], b + cuts[j + 1], false);
    }
    size_t total = 1;
    for (auto& sv : sub) total += sv.size();
    out.reserve(total);
    out[0].first_child = 1;
    out[0].children = k;
    for (int j = 0; j < k; ++j) out.push_back(sub[j][0]);
    for (int j = 0; j < k; ++j) {
      const std::int32_t off = static_cast<std::int32_t>(out.size()) - 1;  // local x>=1 -> off + x
      for (size_t x = 1; x < sub[j].size(); ++x) out.push_back(sub[j][x]);
      auto remap = [&](Node& nd) {
        if (nd.children) nd.first_child += off;
      };
      remap(out[1 + j]);
      for (size_t x = 1; x < sub[j].size(); ++x) remap(out[off + x]);
    }
    return out;
  }

  // Splits ids[0, s) into children (reordering ids); returns the child boundaries 0 = c_0 < ... = s.
  std::vector<index_t> split(const PointsView<T>& p, index_t* ids, index_t s, std::uint64_t seed) const {
    const int d = d_;
    const index_t rr = std::min<index_t>(r_, (s + leaf_size_ - 1) / leaf_size_);
    const index_t g = (s + rr - 1) / rr;
    std::mt19937_64 rng(seed);
    auto uniform = [&](index_t n) { return static_cast<index_t>(rng() % static_cast<std::uint64_t>(n)); };
    std::normal_distribution<double> gauss;

    // test set H
    const int h = static_cast<int>(std::min<index_t>(256, std::max<index_t>(32, s / 8)));
    std::vector<double> hn(static_cast<size_t>(h) * d), ho(h), w(h, 1.0);
    for (int i = 0; i < h; ++i) {
      double* nrm = &hn[static_cast<size_t>(i) * d];
      const T* x0 = p.row(ids[uniform(s)]);
      bool done = false;
      if ((i & 1) && d >= 2 && d <= 8) {  // through d random points
        Eigen::MatrixXd D(d - 1, d);
        for (int r = 0; r < d - 1; ++r) {
          const T* x = p.row(ids[uniform(s)]);
          for (int c = 0; c < d; ++c) D(r, c) = static_cast<double>(x[c]) - static_cast<double>(x0[c]);
        }
        Eigen::JacobiSVD<Eigen::MatrixXd> svd(D, Eigen::ComputeFullV);
        const Eigen::VectorXd v = svd.matrixV().col(d - 1);
        if (v.allFinite() && v.norm() > 0.5) {
          for (int c = 0; c < d; ++c) nrm[c] = v(c);
          done = true;
        }
      }
      if (!done)
        for (int c = 0; c < d; ++c) nrm[c] = gauss(rng);
      double nn = 0;
      for (int c = 0; c < d; ++c) nn += nrm[c] * nrm[c];
      nn = std::sqrt(nn);
      if (!(nn > 0)) {
        std::fill(nrm, nrm + d, 0.0);
        nrm[i % d] = 1.0, nn = 1.0;
      }
      for (int c = 0; c < d; ++c) nrm[c] /= nn;
      ho[i] = dot_f64(nrm, x0, d);
    }
    auto side = [&](int hi, const T* x) { return dot_f64(&hn[static_cast<size_t>(hi) * d], x, d) >= ho[hi]; };

    std::vector<index_t> cuts{0};
    index_t pos = 0;
    const index_t kSample = 8192;
    std::vector<std::uint64_t> keys;
    std::vector<index_t> sample, buf;
    std::vector<std::uint64_t> tkey;
    std::vector<index_t> tcnt;
    std::vector<char> used(h);
    std::vector<double> cum(h);
    while (s - pos > g) {
      if (interrupt::stop_requested()) break;  // the caller's build stops too
      index_t* R = ids + pos;
      const index_t rem = s - pos;
      // 1. draw hyperplanes by weight, grouping (a sample of) the remaining points by sign vector
      sample.clear();
      if (rem <= kSample) {
        for (index_t k = 0; k < rem; ++k) sample.push_back(k);
      } else {
        for (index_t k = 0; k < kSample; ++k) sample.push_back(uniform(rem));
      }
      const index_t ns = static_cast<index_t>(sample.size());
      const double gs = static_cast<double>(g) * ns / rem * (rem > kSample ? 1.1 : 1.0);
      keys.assign(ns, 0);
      std::fill(used.begin(), used.end(), 0);
      std::vector<int> chosen;
      int stall = 0, fails = 0;
      index_t last_best = ns;
      while (static_cast<int>(chosen.size()) < 62 && fails < 4 && stall < 6) {
        double tot = 0;
        for (int i = 0; i < h; ++i) cum[i] = (tot += used[i] ? 0.0 : w[i]);
        if (!(tot > 0)) break;
        const double u = std::uniform_real_distribution<double>(0, tot)(rng);
        int hi = static_cast<int>(std::upper_bound(cum.begin(), cum.end(), u) - cum.begin());
        hi = std::min(hi, h - 1);
        while (used[hi] && hi > 0) --hi;
        if (used[hi]) break;
        used[hi] = 1;
        const std::uint64_t bit = std::uint64_t{1} << chosen.size();
        for (index_t k = 0; k < ns; ++k)
          if (side(hi, p.row(R[sample[k]]))) keys[k] |= bit;
        const index_t best = largest_group(keys, ns, (bit << 1) - 1, tkey, tcnt, nullptr);
        if (static_cast<double>(best) < gs) {  // this one splits too finely: try another
          for (index_t k = 0; k < ns; ++k) keys[k] &= ~bit;
          ++fails;
          continue;
        }
        chosen.push_back(hi);
        stall = best < last_best ? 0 : stall + 1;  // draws that split nothing
        last_best = best;
        if (static_cast<double>(best) <= gs * 1.05) break;
      }
      // 2. sign vectors of all remaining points; the largest cell, shrunk to a super-cell if needed
      const int tc = static_cast<int>(chosen.size());
      keys.assign(rem, 0);
      for (int c = 0; c < tc; ++c)
        for (index_t k = 0; k < rem; ++k)
          if (side(chosen[c], p.row(R[k]))) keys[k] |= std::uint64_t{1} << c;
      std::uint64_t key = 0;
      index_t gsize = rem;
      for (int tt = tc; tt >= 0; --tt) {
        const std::uint64_t mask = tt == 64 ? ~0ULL : (std::uint64_t{1} << tt) - 1;
        gsize = largest_group(keys, rem, mask, tkey, tcnt, &key);
        if (gsize >= g) {
          for (index_t k = 0; k < rem; ++k) keys[k] &= mask;
          break;
        }
      }
      // move the group to the front
      buf.assign(R, R + rem);
      index_t front = 0, back = gsize;
      for (index_t k = 0; k < rem; ++k) (keys[k] == key ? R[front++] : R[back++]) = buf[k];
      // 3. cut the group down to g points across its widest direction
      if (gsize > g) {
        std::vector<const double*> cand;
        std::vector<double> axes;
        for (int c : chosen) cand.push_back(&hn[static_cast<size_t>(c) * d]);
        if (d <= 16) {
          axes.assign(static_cast<size_t>(d) * d, 0.0);
          for (int c = 0; c < d; ++c) axes[static_cast<size_t>(c) * d + c] = 1.0;
          for (int c = 0; c < d; ++c) cand.push_back(&axes[static_cast<size_t>(c) * d]);
        }
        for (int x = 0; x < 2; ++x) cand.push_back(&hn[static_cast<size_t>(uniform(h)) * d]);
        const index_t step = std::max<index_t>(1, gsize / 256);
        const double* bestdir = cand[0];
        double bw = -1;
        for (const double* u : cand) {
          double lo = INFINITY, hi = -INFINITY;
          for (index_t k = 0; k < gsize; k += step) {
            const double v = dot_f64(u, p.row(R[k]), d);
            lo = std::min(lo, v), hi = std::max(hi, v);
          }
          if (hi - lo > bw) bw = hi - lo, bestdir = u;
        }
        std::vector<std::pair<double, index_t>> pr(gsize);
        for (index_t k = 0; k < gsize; ++k) pr[k] = {dot_f64(bestdir, p.row(R[k]), d), R[k]};
        std::nth_element(pr.begin(), pr.begin() + g, pr.end());
        for (index_t k = 0; k < gsize; ++k) R[k] = pr[k].second;
      }
      // 4. double the weight of every test hyperplane crossing the child
      {
        const index_t step = std::max<index_t>(1, g / 64);
        for (int i = 0; i < h; ++i) {
          const double* nrm = &hn[static_cast<size_t>(i) * d];
          bool lo = false, hi = false;
          for (index_t k = 0; k < g && !(lo && hi); k += step) {
            const double v = dot_f64(nrm, p.row(R[k]), d) - ho[i];
            lo = lo || v < 0;
            hi = hi || v > 0;
          }
          if (lo && hi) w[i] *= 2;
        }
      }
      pos += g;
      cuts.push_back(pos);
    }
    cuts.push_back(s);
    return cuts;
  }

  // Size of the largest group of keys (masked), ties -> the smaller key (stored in *key).
  static index_t largest_group(const std::vector<std::uint64_t>& keys, index_t n, std::uint64_t mask,
                               std::vector<std::uint64_t>& tkey, std::vector<index_t>& tcnt,
                               std::uint64_t* key) {
    size_t cap = 16;
    while (cap < 2 * static_cast<size_t>(n)) cap <<= 1;
    tkey.assign(cap, ~0ULL);
    tcnt.assign(cap, 0);
    index_t best = 0;
    std::uint64_t bk = 0;
    for (index_t k = 0; k < n; ++k) {
      const std::uint64_t kk = keys[k] & mask;
      size_t slot = mix(kk) & (cap - 1);
      while (tkey[slot] != kk && tkey[slot] != ~0ULL) slot = (slot + 1) & (cap - 1);
      tkey[slot] = kk;
      const index_t c = ++tcnt[slot];
      if (c > best || (c == best && kk < bk)) best = c, bk = kk;
    }
    if (key) *key = bk;
    return best;
  }

  int r_ = 16;
  int leaf_size_ = 32;
  std::uint64_t seed_ = 0;
  std::vector<Node> nodes_;
};

}  // namespace hsrgeom
