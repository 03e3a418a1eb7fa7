// PartitionTree: the practical hierarchical partition for any d.
//
// Points are reordered so that every node owns a contiguous range [begin, end) of the stored
// points; a node entirely inside the half-space is reported by copying that range of ids. Nodes
// split their range at the median of their widest box axis. The tree's shape depends only on n
// and leaf_size (a node of s > leaf_size points has children of floor(s/2) and ceil(s/2)
// points), so the build is deterministic for any number of threads.
//
// Frames. split = Widest builds the boxes on the points as given (a kd-tree). split = PCA first
// expresses the points in the principal-axes frame of the data, y = U^T (x - mu) (U from the
// covariance of a sample), and builds splits and bounds on y: the first splits follow the
// principal directions and the boxes are tight for correlated and low-rank data. Queries map
// a -> U^T a and b -> b - <a, mu>. The rounding of y, of U^T a, of <a, mu> and the
// non-orthogonality of the computed U (delta = ||U U^T - I||_F, measured) perturb <a, x - mu>
// by at most
//     ||a|| ||x - mu|| (delta + 2 gamma_d sqrt(d) + u)  (1 + small)
// (expand <U^T a + e_a, U^T(x - mu + e_w) + e_y>, with |e_w| <= u |x - mu| and
// ||e_a||, ||e_y|| <= gamma_d sqrt(d) times the norms); with ||x - mu|| <= 1.01 ||y|| <=
// 1.01 bnorm this is folded into the node margin's relative term, and the error of <a, mu> and
// of b - <a, mu> into a per-query absolute term. Leaves always test the original points with the
// shared predicate, so the rotation can only cost pruning, never exactness. A node whose
// original points are all identical ("degenerate") is decided by one exact test.
#pragma once

#include <algorithm>
#include <cmath>
#include <numeric>
#include <Eigen/Dense>
#include <vector>

#include "hsrgeom/interrupt.hpp"
#include "hsrgeom/parallel.hpp"
#include "hsrgeom/progress.hpp"
#include "hsrgeom/range_tree.hpp"

namespace hsrgeom {

enum class SplitRule { Widest = 0, PCA = 1 };

template <class T>
class PartitionTree : public RangeTree<PartitionTree<T>, T> {
  using Base = RangeTree<PartitionTree<T>, T>;
  friend Base;
  using Base::n_, Base::d_, Base::margin_, Base::frame_margin_, Base::perm_, Base::bounds_, Base::frame_,
      Base::mu_, Base::munorm_;

 public:
  struct Node {
    index_t begin, end;
    std::int32_t left, right;  // -1 for a leaf
  };

  PartitionTree() = default;
  PartitionTree(PointsView<T> p, int leaf_size, SplitRule split, int threads)
      : Base(p), leaf_size_(std::max(1, leaf_size)), split_(split) {
    if (n_ == 0) return;
    BuildProgress progress("PartitionTree", n_, d_);
    skeleton(0, n_);
    this->allocate_nodes(static_cast<index_t>(nodes_.size()));
    const int nt = threads_for_work(threads, 20.0 * n_ * d_);
    // The build works on copies whose rows it permutes along with perm_ (every node's points
    // are then contiguous rows, read sequentially at every level); the copy of the points ends
    // up in tree order and becomes the stored points.
    std::vector<T> x(p.data, p.data + n_ * static_cast<index_t>(d_));
    std::vector<double> y;
    if (split_ == SplitRule::PCA) y = principal_frame(p, nt);
    interrupt::State* const cancel = interrupt::current();
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
      const interrupt::Adopt adopt(cancel);  // fill runs in tasks: it stops, never throws
#ifdef _OPENMP
#pragma omp single
#endif
      {
        if (split_ == SplitRule::PCA)
          fill(0, y.data(), x.data(), nt > 1);
        else
          fill(0, x.data(), static_cast<T*>(nullptr), nt > 1);
      }
    }
    interrupt::check();  // an interrupted fill left nodes unset: this object is discarded
    this->pts_ = std::move(x);
    this->code_leaves(nt);
    progress.done("done: %lld nodes", static_cast<long long>(nodes_.size()));
  }

  int leaf_size() const { return leaf_size_; }
  SplitRule split() const { return split_; }
  index_t node_count() const { return static_cast<index_t>(nodes_.size()); }
  size_t memory_bytes() const { return this->base_memory_bytes() + nodes_.size() * sizeof(Node); }

 private:
  std::pair<index_t, index_t> node_range(std::int32_t v) const { return {nodes_[v].begin, nodes_[v].end}; }
  template <class F>
  int each_child(std::int32_t v, F&& f) const {
    if (nodes_[v].left < 0) return 0;
    f(nodes_[v].right);
    f(nodes_[v].left);
    return 2;
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

  // Computes the bounds of node v (on frame points f), splits its rows at the median of the
  // widest box axis, recurses; then its original-frame norm bound and degeneracy (on the
  // original points: x, or f itself when x is null) from its children's (leaves: from their
  // points). f and x are row-major n x d working copies whose rows move with perm_.
  template <class F>
  void fill(std::int32_t v, F* f, T* x, bool parallel) {
    if (interrupt::stop_requested()) return;
    const Node nd = nodes_[v];
    const index_t cnt = nd.end - nd.begin;
    const T* xs = x ? x : reinterpret_cast<const T*>(f);  // x null: f holds the points (F == T)
    const PointsView<F> fv{f + nd.begin * d_, cnt, d_};
    if (nd.left < 0) {
      this->summarize(v, fv, PointsView<T>{xs + nd.begin * d_, cnt, d_}, nullptr, cnt);
      return;
    }
    bounds_.compute(v, fv, nullptr, cnt);
    int axis = 0;
    double w = -1;
    for (int i = 0; i < d_; ++i) {
      const double e = bounds_.hi(v)[i] - bounds_.lo(v)[i];
      if (e > w) w = e, axis = i;
    }
    if (w > 0) select(f, x, nd.begin, nd.end, nd.begin + cnt / 2, axis);  // w == 0: all rows equal
#ifdef _OPENMP
    if (parallel && cnt > 32768) {
#pragma omp task
      fill(nd.left, f, x, parallel);
      fill(nd.right, f, x, parallel);
#pragma omp taskwait
    } else
#endif
    {
      fill(nd.left, f, x, false);
      fill(nd.right, f, x, false);
    }
    const T* a = xs + nodes_[nd.left].begin * d_;
    const T* b = xs + nodes_[nd.right].begin * d_;
    this->xnorm_[v] = std::max(this->xnorm_[nd.left], this->xnorm_[nd.right]);
    this->degenerate_[v] = this->degenerate_[nd.left] && this->degenerate_[nd.right] && std::equal(a, a + d_, b);
  }

  // Quickselect on rows [b, e): afterwards row k holds the k-th smallest (f[axis], id), rows
  // before it smaller ones, rows after larger ones (ids make every key distinct, so the split
  // is the same whatever the order the rows came in). Pivots from a generator seeded by the
  // range: expected linear time, deterministic. Hoare's partition: it swaps ~1/6 of the rows
  // per round where Lomuto's swapped ~1/2 (a row is d values, in x too for the pca split).
  template <class F>
  void select(F* f, T* x, index_t b, index_t e, index_t k, int axis) {
    auto swap_rows = [&](index_t i, index_t j) {
      std::swap_ranges(f + i * d_, f + (i + 1) * d_, f + j * d_);
      if (x) std::swap_ranges(x + i * d_, x + (i + 1) * d_, x + j * d_);
      std::swap(perm_[i], perm_[j]);
    };
    std::uint64_t state = static_cast<std::uint64_t>(b) * 0x9E3779B97F4A7C15ull + static_cast<std::uint64_t>(e);
    index_t lo = b, hi = e - 1, seen = 0;
    while (lo < hi) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      swap_rows(lo + static_cast<index_t>((state >> 33) % static_cast<std::uint64_t>(hi - lo + 1)), lo);
      // the pivot at lo: the scan from above stops there at the latest, so j < hi (progress)
      const F pk = f[lo * d_ + axis];
      const index_t pid = perm_[lo];
      auto below = [&](index_t i) {  // (f[axis], id) of row i < the pivot's
        const F fi = f[i * d_ + axis];
        return fi < pk || (fi == pk && perm_[i] < pid);
      };
      auto above = [&](index_t i) {  // ... > the pivot's
        const F fi = f[i * d_ + axis];
        return fi > pk || (fi == pk && perm_[i] > pid);
      };
      index_t i = lo - 1, j = hi + 1;
      for (;;) {
        do ++i; while (below(i));
        do --j; while (above(j));
        if (i >= j) break;
        swap_rows(i, j);
      }
      seen += hi - lo + 1;
      if (seen > 65536) {
        seen = 0;
        if (interrupt::stop_requested()) return;  // in a task: stop, never throw
      }
      if (k <= j) hi = j;  // rows lo..j <= the pivot <= rows j+1..hi
      else lo = j + 1;
    }
  }

  // Principal-axes frame from a sample; returns y = (x - mu) U for all points (n x d, row-major)
  // and sets frame_, mu_, munorm_, frame_margin_.
  std::vector<double> principal_frame(const PointsView<T>& p, int threads) {
    using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const index_t sample = std::min<index_t>(n_, 20000);
    const index_t step = n_ / sample;
    mu_.assign(d_, 0.0);
    for (index_t k = 0; k < n_; ++k)
      for (int i = 0; i < d_; ++i) mu_[i] += static_cast<double>(p.row(k)[i]);
    for (int i = 0; i < d_; ++i) mu_[i] /= static_cast<double>(n_);
    Mat S(sample, d_);
    for (index_t s = 0; s < sample; ++s)
      for (int i = 0; i < d_; ++i) S(s, i) = static_cast<double>(p.row(s * step)[i]) - mu_[i];
    const Eigen::MatrixXd C = S.transpose() * S;
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(C);
    Mat U = es.eigenvectors().rowwise().reverse();  // columns: principal axes, largest first
    const double delta = (U * U.transpose() - Eigen::MatrixXd::Identity(d_, d_)).norm();
    frame_.assign(U.data(), U.data() + d_ * d_);
    munorm_ = norm_up(mu_.data(), d_);
    // the rotation's rounding, relative to ||a|| ||x - mu|| (see the comment at the top)
    frame_margin_ = margin_;
    frame_margin_.g += 1.1 * (delta + 2 * gamma_k(d_ + 2, Rounding<double>::u) * std::sqrt(d_) +
                              Rounding<double>::u) * 1.02;
    std::vector<double> y(n_ * static_cast<index_t>(d_));
    const index_t block = 4096;
    parallel_for((n_ + block - 1) / block, threads, [&](index_t bi, int) {
      const index_t b0 = bi * block, b1 = std::min(n_, b0 + block);
      Mat W(b1 - b0, d_);
      for (index_t k = b0; k < b1; ++k)
        for (int i = 0; i < d_; ++i) W(k - b0, i) = static_cast<double>(p.row(k)[i]) - mu_[i];
      Eigen::Map<Mat>(&y[b0 * d_], b1 - b0, d_).noalias() = W * U;
    });
    return y;
  }

  int leaf_size_ = 32;
  SplitRule split_ = SplitRule::Widest;
  std::vector<Node> nodes_;
};

}  // namespace hsrgeom
