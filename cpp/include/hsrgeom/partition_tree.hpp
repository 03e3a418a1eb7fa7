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
      : n_(p.n), d_(p.d), leaf_size_(std::max(1, leaf_size)), split_(split),
        margin_(p.d, Rounding<double>::u, Rounding<double>::eta) {
    perm_.resize(n_);
    std::iota(perm_.begin(), perm_.end(), index_t{0});
    if (n_ == 0) return;
    skeleton(0, n_);
    bounds_ = NodeBounds(static_cast<index_t>(nodes_.size()), d_);
    xnorm_.resize(nodes_.size());
    degenerate_.resize(nodes_.size());
    frame_margin_ = margin_;  // no rotation: the bounds' frame is the original one (PCA widens it)
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
           nodes_.size() * (sizeof(Node) + sizeof(double) + 1) + bounds_.memory_bytes() +
           (frame_.size() + mu_.size()) * sizeof(double);
  }
  // The user's points in their original order.
  std::vector<T> original_points() const {
    std::vector<T> out(pts_.size());
    for (index_t k = 0; k < n_; ++k) std::copy(row(k), row(k) + d_, &out[perm_[k] * d_]);
    return out;
  }

  ReportResult report(const Halfspaces<T>& q, QueryStats* st, int threads) const {
    std::vector<std::vector<std::int64_t>> lists(q.m);
    run(q, st, threads, [&](index_t j, const Query& qq, Counters& c) {
      auto& out = lists[j];
      traverse(qq, c, [&](index_t b0, index_t b1) {
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
    run(q, st, threads, [&](index_t j, const Query& qq, Counters& c) {
      std::int64_t cnt = 0;
      traverse(qq, c, [&](index_t b0, index_t b1) { cnt += b1 - b0; return true; },
               [&](index_t) { ++cnt; return true; });
      out[j] = c.reported = cnt;
    });
    return out;
  }

  // True where the half-space holds no point; stops at the first point found.
  std::vector<std::uint8_t> empty(const Halfspaces<T>& q, QueryStats* st, int threads) const {
    std::vector<std::uint8_t> out(q.m, 1);
    run(q, st, threads, [&](index_t j, const Query& qq, Counters& c) {
      traverse(qq, c, [&](index_t, index_t) { out[j] = 0; return false; },
               [&](index_t) { out[j] = 0; return false; });
      c.reported = out[j] ? 0 : 1;
    });
    return out;
  }

  // Exact top-k by inner product (ties: smaller id first), best-first branch and bound.
  void topk(const T* queries, index_t m, index_t k, double* scores, std::int64_t* ids,
            QueryStats* st, int threads) const {
    if (st) st->resize(m);
    const double work = static_cast<double>(m) * (64.0 * d_ + std::sqrt(static_cast<double>(n_)) * d_ * 4);
    parallel_for(m, threads_for_work(threads, work), [&](index_t j, int) {
      const Query qq = make_query(queries + j * d_, 0.0);
      TopKCollector<T> col(qq.a.data(), d_, k);
      Counters c;
      using Item = std::pair<double, std::int32_t>;  // (upper bound of <a, x>, node)
      std::vector<Item> heap;
      auto upper = [&](std::int32_t v) {
        return bounds_.upper(v, qq.frame_a(), qq.na, frame_margin_, qq.extra) + qq.shift;
      };
      if (n_ > 0 && k > 0) heap.push_back({upper(0), 0});
      while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end());
        const Item it = heap.back();
        heap.pop_back();
        if (it.first < col.kth_lower()) break;  // nothing left can reach the k-th best
        ++c.nodes;
        const Node& nd = nodes_[it.second];
        if (nd.left < 0) {
          const double err = margin_(qq.na, xnorm_[it.second], 0.0);
          for (index_t t = nd.begin; t < nd.end; ++t) {
            col.push(dot(qq.a.data(), row(t), d_), err, perm_[t], row(t));
            ++c.tested;
          }
          continue;
        }
        for (std::int32_t ch : {nd.left, nd.right}) {
          heap.push_back({upper(ch), ch});
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

  // One half-space query on the calling thread (for structures that embed a tree): range(b0, b1)
  // and point(k) receive stored positions, mapped by stored_id(k) and stored_row(k).
  template <class Range, class Point>
  void visit(const T* normal, double b, Counters& c, Range&& range, Point&& point) const {
    traverse(make_query(normal, b), c, range, point);
  }
  index_t stored_id(index_t k) const { return perm_[k]; }
  const T* stored_row(index_t k) const { return row(k); }

 private:
  // A query prepared for the tree: a in the original frame (for leaves), a in the bounds' frame,
  // and the offset and extra margin that map bounds of <a_frame, y> to bounds of <a, x>.
  struct Query {
    std::vector<double> a, a_rot;
    double na = 0, b = 0, shift = 0, extra = 0;
    const double* frame_a() const { return a_rot.empty() ? a.data() : a_rot.data(); }
  };

  Query make_query(const T* normal, double b) const {
    Query q;
    q.a.assign(normal, normal + d_);
    q.na = norm_up(q.a.data(), d_);
    q.b = b;
    if (!frame_.empty()) {
      q.a_rot.assign(d_, 0.0);
      for (int r = 0; r < d_; ++r)  // U^T a, U stored row-major d x d (column r = axis r)
        for (int i = 0; i < d_; ++i) q.a_rot[r] += frame_[i * d_ + r] * q.a[i];
      q.shift = dot(q.a.data(), mu_.data(), d_);  // <a, mu>
      q.extra = margin_(q.na, munorm_, 0.0) + 4 * Rounding<double>::u * (std::fabs(b) + std::fabs(q.shift));
    }
    return q;
  }

  const T* row(index_t k) const { return pts_.data() + k * static_cast<index_t>(d_); }
  // Any summation order is covered by the margin (predicate.hpp), so let the compiler vectorise.
  template <class P>
  static double dot(const double* a, const P* x, int d) {
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < d; ++i) s += a[i] * static_cast<double>(x[i]);
    return s;
  }

  // Runs body(j, query, counters) for every query in parallel.
  template <class Body>
  void run(const Halfspaces<T>& q, QueryStats* st, int threads, Body&& body) const {
    if (st) st->resize(q.m);
    const double work = static_cast<double>(q.m) * (64.0 * d_ + std::sqrt(static_cast<double>(n_)) * d_ * 4);
    parallel_for(q.m, threads_for_work(threads, work), [&](index_t j, int) {
      const Query qq = make_query(q.normals + j * d_, q.offsets[j]);
      Counters c;
      body(j, qq, c);
      if (st) c.store(*st, j);
    });
  }

  // Depth-first traversal. range(b0, b1) is called for stored points [b0, b1) all inside,
  // point(k) for a single stored point inside; either returns false to stop early.
  template <class Range, class Point>
  void traverse(const Query& q, Counters& c, Range&& range, Point&& point) const {
    if (n_ == 0) return;
    const double* fa = q.frame_a();
    const double fb = q.b - q.shift;
    std::int32_t stack[128];
    int top = 0;
    stack[top++] = 0;
    while (top) {
      const std::int32_t v = stack[--top];
      const Node& nd = nodes_[v];
      ++c.nodes;
      int cls;
      if (degenerate_[v]) {
        ++c.exact;
        cls = exact_sign(q.a.data(), row(nd.begin), q.b, d_) >= 0 ? 1 : -1;
      } else {
        cls = bounds_.classify(v, fa, q.na, fb, frame_margin_, q.extra);
      }
      if (cls < 0) continue;
      if (cls > 0) {
        if (!range(nd.begin, nd.end)) return;
        continue;
      }
      if (nd.left < 0) {
        const double margin = margin_(q.na, xnorm_[v], q.b);
        for (index_t k = nd.begin; k < nd.end; ++k) {
          ++c.tested;
          if (in_halfspace(dot(q.a.data(), row(k), d_), margin, q.a.data(), row(k), q.b, d_, &c.exact) &&
              !point(k))
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

  // Computes the bounds of node v (on frame points f), its original-frame norm bound and
  // degeneracy (on the original points p), partitions its range of perm_, recurses.
  template <class F>
  void fill(std::int32_t v, const PointsView<F>& f, const PointsView<T>& p, bool parallel) {
    const Node nd = nodes_[v];
    index_t* ids = perm_.data() + nd.begin;
    const index_t cnt = nd.end - nd.begin;
    bounds_.compute(v, f, ids, cnt);
    double xn = 0;
    bool same = true;
    const T* x0 = p.row(ids[0]);
    for (index_t k = 0; k < cnt; ++k) {
      const T* x = p.row(ids[k]);
      xn = std::max(xn, norm_up(x, d_));
      same = same && std::equal(x, x + d_, x0);
    }
    xnorm_[v] = xn;
    degenerate_[v] = same;
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

  index_t n_ = 0;
  int d_ = 0;
  int leaf_size_ = 32;
  SplitRule split_ = SplitRule::Widest;
  Margin margin_{1, 0, 0};        // for <a, x> in double
  Margin frame_margin_{1, 0, 0};  // for the bounds' frame (== margin_ without rotation)
  std::vector<T> pts_;            // points in tree order
  std::vector<index_t> perm_;     // perm_[k] = original id of stored point k
  std::vector<Node> nodes_;
  NodeBounds bounds_;
  std::vector<double> xnorm_;     // per node: upper bound of ||x|| in the original frame
  std::vector<std::uint8_t> degenerate_;
  std::vector<double> frame_, mu_;  // PCA frame U (d x d row-major) and mean; empty: identity
  double munorm_ = 0;
};

}  // namespace hsrgeom
