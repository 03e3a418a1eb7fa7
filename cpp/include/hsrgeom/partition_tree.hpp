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
    skeleton(0, n_);
    this->allocate_nodes(static_cast<index_t>(nodes_.size()));
    const int nt = threads_for_work(threads, 20.0 * n_ * d_);
    std::vector<double> y;
    if (split_ == SplitRule::PCA) y = principal_frame(p, nt);
    const PointsView<double> yv{y.data(), n_, d_};
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#pragma omp single
#endif
    {
      if (split_ == SplitRule::PCA)
        fill(0, yv, p, nt > 1);
      else
        fill(0, p, p, nt > 1);
    }
    this->store_points(p);
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

  // Computes the bounds of node v (on frame points f), its original-frame norm bound and
  // degeneracy (on the original points p), partitions its range of perm_, recurses.
  template <class F>
  void fill(std::int32_t v, const PointsView<F>& f, const PointsView<T>& p, bool parallel) {
    const Node nd = nodes_[v];
    index_t* ids = perm_.data() + nd.begin;
    const index_t cnt = nd.end - nd.begin;
    this->summarize(v, f, p, ids, cnt);
    const bool same = this->degenerate_[v];
    if (nd.left < 0) return;
    if (!same) {
      int axis = 0;
      double w = -1;
      for (int i = 0; i < d_; ++i) {
        const double e = bounds_.hi(v)[i] - bounds_.lo(v)[i];
        if (e > w) w = e, axis = i;
      }
      std::nth_element(ids, ids + cnt / 2, ids + cnt, [&](index_t x, index_t y) {
        const F fx = f.row(x)[axis], fy = f.row(y)[axis];
        return fx < fy || (fx == fy && x < y);
      });
    }
#ifdef _OPENMP
    if (parallel && cnt > 32768) {
#pragma omp task
      fill(nd.left, f, p, parallel);
      fill(nd.right, f, p, parallel);
#pragma omp taskwait
      return;
    }
#endif
    fill(nd.left, f, p, false);
    fill(nd.right, f, p, false);
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
