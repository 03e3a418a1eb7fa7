// PartitionTree: the practical hierarchical partition for any d.
//
// Points are reordered so that every node owns a contiguous range [begin, end) of the stored
// points; a node entirely inside the half-space is reported by copying that range of ids. Nodes
// split their range at the median along the widest box axis ("widest", a kd-tree) or along the
// principal direction of the node's points ("pca", good for correlated / low-rank data). The
// tree's shape depends only on n and leaf_size (a node of more than leaf_size points has two
// children of sizes floor(s/2) and ceil(s/2)), so the build is deterministic for any number of
// threads. Bounds per node: NodeBounds (box + ball), the shared predicate at the leaves.
#pragma once

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "hsrgeom/bounds.hpp"
#include "hsrgeom/common.hpp"
#include "hsrgeom/predicate.hpp"

namespace hsrgeom {

enum class SplitRule { Widest = 0, PCA = 1 };

template <class T>
class PartitionTree {
 public:
  struct Node {
    index_t begin, end;
    std::int32_t left, right;  // -1 for a leaf
  };

  PartitionTree() = default;
  PartitionTree(PointsView<T> p, int leaf_size, SplitRule split, int threads)
      : n_(p.n), d_(p.d), leaf_size_(std::max(1, leaf_size)), split_(split) {
    perm_.resize(n_);
    std::iota(perm_.begin(), perm_.end(), index_t{0});
    if (n_ == 0) return;
    skeleton(0, n_);
    bounds_ = NodeBounds<T>(static_cast<index_t>(nodes_.size()), d_);
    const int nt = resolve_threads(threads);
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#pragma omp single
#endif
    fill(0, p, nt > 1);
    pts_.resize(n_ * static_cast<index_t>(d_));
    for (index_t k = 0; k < n_; ++k) std::copy(p.row(perm_[k]), p.row(perm_[k]) + d_, &pts_[k * d_]);
  }

  index_t size() const { return n_; }
  int dim() const { return d_; }
  int leaf_size() const { return leaf_size_; }
  SplitRule split() const { return split_; }
  index_t node_count() const { return static_cast<index_t>(nodes_.size()); }
  size_t memory_bytes() const {
    return pts_.size() * sizeof(T) + perm_.size() * sizeof(index_t) +
           nodes_.size() * sizeof(Node) + bounds_.memory_bytes();
  }
  // The user's points in their original order.
  std::vector<T> original_points() const {
    std::vector<T> out(pts_.size());
    for (index_t k = 0; k < n_; ++k) std::copy(row(k), row(k) + d_, &out[perm_[k] * d_]);
    return out;
  }

  ReportResult report(const Halfspaces<T>& q, QueryStats* st, int threads) const {
    std::vector<std::vector<std::int64_t>> lists(q.m);
    run(q, st, threads, [&](index_t j, const double* a, double na, double b, Counters& c) {
      auto& out = lists[j];
      traverse(a, na, b, c, [&](index_t b0, index_t b1) {
        out.insert(out.end(), perm_.begin() + b0, perm_.begin() + b1);
        return true;
      }, [&](index_t k) { out.push_back(perm_[k]); return true; });
      sort_ids(out, n_);
      c.reported = static_cast<std::int64_t>(out.size());
    });
    return ReportResult::from_lists(lists);
  }

  std::vector<std::int64_t> count(const Halfspaces<T>& q, QueryStats* st, int threads) const {
    std::vector<std::int64_t> out(q.m, 0);
    run(q, st, threads, [&](index_t j, const double* a, double na, double b, Counters& c) {
      std::int64_t cnt = 0;
      traverse(a, na, b, c, [&](index_t b0, index_t b1) { cnt += b1 - b0; return true; },
               [&](index_t) { ++cnt; return true; });
      out[j] = c.reported = cnt;
    });
    return out;
  }

  // True where the half-space holds no point; stops at the first point found.
  std::vector<std::uint8_t> empty(const Halfspaces<T>& q, QueryStats* st, int threads) const {
    std::vector<std::uint8_t> out(q.m, 1);
    run(q, st, threads, [&](index_t j, const double* a, double na, double b, Counters& c) {
      traverse(a, na, b, c, [&](index_t, index_t) { out[j] = 0; return false; },
               [&](index_t) { out[j] = 0; return false; });
      c.reported = out[j] ? 0 : 1;
    });
    return out;
  }

  // Exact top-k by inner product (ties: smaller id first), best-first branch and bound.
  void topk(const T* queries, index_t m, index_t k, double* scores, std::int64_t* ids,
            QueryStats* st, int threads) const {
    if (st) st->resize(m);
    const Margin mg(d_, Rounding<double>::u, Rounding<double>::eta);
    parallel_for(m, resolve_threads(threads), [&](index_t j, int) {
      std::vector<double> q(queries + j * d_, queries + (j + 1) * d_);
      const double nq = norm_up(q.data(), d_);
      TopKCollector<T> col(q.data(), d_, k);
      Counters c;
      using Item = std::pair<double, std::int32_t>;  // (upper bound, node)
      std::vector<Item> heap;
      if (n_ > 0 && k > 0) heap.push_back({bounds_.upper(0, q.data(), nq, mg), 0});
      while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end());
        const Item it = heap.back();
        heap.pop_back();
        if (it.first < col.kth_lower()) break;  // nothing left can reach the k-th best
        ++c.nodes;
        const Node& nd = nodes_[it.second];
        if (nd.left < 0) {
          const double err = mg(nq, bounds_.bnorm(it.second), 0.0);
          for (index_t t = nd.begin; t < nd.end; ++t) {
            col.push(dot(q.data(), row(t)), err, perm_[t], row(t));
            ++c.tested;
          }
          continue;
        }
        for (std::int32_t ch : {nd.left, nd.right}) {
          heap.push_back({bounds_.upper(ch, q.data(), nq, mg), ch});
          std::push_heap(heap.begin(), heap.end());
        }
      }
      auto best = col.finish();
      for (index_t r = 0; r < k; ++r) {
        ids[j * k + r] = best[r].id;
        scores[j * k + r] = best[r].s;
      }
      c.reported = k;
      if (st) c.store(*st, j);
    });
  }

 private:
  const T* row(index_t k) const { return pts_.data() + k * static_cast<index_t>(d_); }
  static double dot(const double* a, const T* x, int d) {
    double s = 0;
    for (int i = 0; i < d; ++i) s += a[i] * static_cast<double>(x[i]);
    return s;
  }
  double dot(const double* a, const T* x) const { return dot(a, x, d_); }

  // Runs body(j, a, ||a||, b, counters) for every query in parallel.
  template <class Body>
  void run(const Halfspaces<T>& q, QueryStats* st, int threads, Body&& body) const {
    if (st) st->resize(q.m);
    parallel_for(q.m, resolve_threads(threads), [&](index_t j, int) {
      std::vector<double> a(q.normals + j * d_, q.normals + (j + 1) * d_);
      Counters c;
      body(j, a.data(), norm_up(a.data(), d_), q.offsets[j], c);
      if (st) c.store(*st, j);
    });
  }

  // Depth-first traversal. range(b0, b1) is called for stored points [b0, b1) all inside,
  // point(k) for a single stored point inside; either returns false to stop early.
  template <class Range, class Point>
  void traverse(const double* a, double na, double b, Counters& c, Range&& range,
                Point&& point) const {
    if (n_ == 0) return;
    const Margin mg(d_, Rounding<double>::u, Rounding<double>::eta);
    std::int32_t stack[128];
    int top = 0;
    stack[top++] = 0;
    while (top) {
      const std::int32_t v = stack[--top];
      const Node& nd = nodes_[v];
      ++c.nodes;
      int cls;
      if (bounds_.degenerate(v)) {
        ++c.exact;
        cls = exact_sign(a, row(nd.begin), b, d_) >= 0 ? 1 : -1;
      } else {
        cls = bounds_.classify(v, a, na, b, mg);
      }
      if (cls < 0) continue;
      if (cls > 0) {
        if (!range(nd.begin, nd.end)) return;
        continue;
      }
      if (nd.left < 0) {
        const double margin = mg(na, bounds_.bnorm(v), b);
        for (index_t k = nd.begin; k < nd.end; ++k) {
          ++c.tested;
          if (in_halfspace(dot(a, row(k)), margin, a, row(k), b, d_, &c.exact) && !point(k))
            return;
        }
        continue;
      }
      stack[top++] = nd.right;
      stack[top++] = nd.left;
    }
  }

  // Node layout from sizes alone (preorder).
  std::int32_t skeleton(index_t b, index_t e) {
    const auto v = static_cast<std::int32_t>(nodes_.size());
    nodes_.push_back({b, e, -1, -1});
    if (e - b > leaf_size_) {
      const index_t mid = b + (e - b) / 2;
      const std::int32_t l = skeleton(b, mid);
      const std::int32_t r = skeleton(mid, e);
      nodes_[v].left = l;
      nodes_[v].right = r;
    }
    return v;
  }

  // Computes bounds of node v, partitions its range of perm_ for the children, recurses.
  void fill(std::int32_t v, const PointsView<T>& p, bool parallel) {
    const Node nd = nodes_[v];
    index_t* ids = perm_.data() + nd.begin;
    const index_t cnt = nd.end - nd.begin;
    bounds_.compute(v, p, ids, cnt);
    if (nd.left < 0) return;
    const index_t mid = (nd.end - nd.begin) / 2;
    if (!bounds_.degenerate(v)) partition(v, p, ids, cnt, mid);
#ifdef _OPENMP
    if (parallel && cnt > 32768) {
#pragma omp task
      fill(nd.left, p, parallel);
      fill(nd.right, p, parallel);
#pragma omp taskwait
      return;
    }
#endif
    fill(nd.left, p, false);
    fill(nd.right, p, false);
  }

  void partition(std::int32_t v, const PointsView<T>& p, index_t* ids, index_t cnt, index_t mid) {
    std::vector<double> dir(d_, 0.0);
    if (split_ == SplitRule::PCA) {
      principal_direction(v, p, ids, cnt, dir);
    } else {
      int axis = 0;
      double w = -1;
      for (int i = 0; i < d_; ++i) {
        const double e = static_cast<double>(bounds_.hi(v)[i]) - static_cast<double>(bounds_.lo(v)[i]);
        if (e > w) w = e, axis = i;
      }
      std::nth_element(ids, ids + mid, ids + cnt, [&](index_t x, index_t y) {
        return p.row(x)[axis] < p.row(y)[axis] || (p.row(x)[axis] == p.row(y)[axis] && x < y);
      });
      return;
    }
    std::vector<std::pair<double, index_t>> key(cnt);
    for (index_t k = 0; k < cnt; ++k) key[k] = {dot(dir.data(), p.row(ids[k]), d_), ids[k]};
    std::nth_element(key.begin(), key.begin() + mid, key.end());
    for (index_t k = 0; k < cnt; ++k) ids[k] = key[k].second;
  }

  // Top principal direction of (a sample of) the node's points, by power iteration on the
  // centered points (never forming the d x d covariance).
  void principal_direction(std::int32_t v, const PointsView<T>& p, const index_t* ids, index_t cnt,
                           std::vector<double>& dir) const {
    const index_t sample = std::min<index_t>(cnt, 256);
    const index_t step = cnt / sample;
    std::vector<double> mean(d_, 0.0), y(sample * d_);
    for (index_t s = 0; s < sample; ++s)
      for (int i = 0; i < d_; ++i) mean[i] += static_cast<double>(p.row(ids[s * step])[i]);
    for (int i = 0; i < d_; ++i) mean[i] /= static_cast<double>(sample);
    for (index_t s = 0; s < sample; ++s)
      for (int i = 0; i < d_; ++i) y[s * d_ + i] = static_cast<double>(p.row(ids[s * step])[i]) - mean[i];
    // start from the widest box axis, so a degenerate spectrum still gives a sensible split
    int axis = 0;
    double w = -1;
    for (int i = 0; i < d_; ++i) {
      const double e = static_cast<double>(bounds_.hi(v)[i]) - static_cast<double>(bounds_.lo(v)[i]);
      if (e > w) w = e, axis = i;
    }
    std::fill(dir.begin(), dir.end(), 0.0);
    dir[axis] = 1.0;
    std::vector<double> proj(sample), next(d_);
    for (int it = 0; it < 8; ++it) {
      for (index_t s = 0; s < sample; ++s) proj[s] = ddot(dir.data(), &y[s * d_], d_);
      std::fill(next.begin(), next.end(), 0.0);
      for (index_t s = 0; s < sample; ++s)
        for (int i = 0; i < d_; ++i) next[i] += proj[s] * y[s * d_ + i];
      double nn = 0;
      for (double t : next) nn += t * t;
      if (!(nn > 0)) break;
      nn = 1.0 / std::sqrt(nn);
      for (int i = 0; i < d_; ++i) dir[i] = next[i] * nn;
    }
  }
  static double ddot(const double* a, const double* x, int d) {
    double s = 0;
    for (int i = 0; i < d; ++i) s += a[i] * x[i];
    return s;
  }

  index_t n_ = 0;
  int d_ = 0;
  int leaf_size_ = 32;
  SplitRule split_ = SplitRule::Widest;
  std::vector<T> pts_;        // points in tree order
  std::vector<index_t> perm_; // perm_[k] = original id of stored point k
  std::vector<Node> nodes_;
  NodeBounds<T> bounds_;
};

}  // namespace hsrgeom
