// BruteForce: the reference structure and the fallback for high d.
//
// Scores are computed with Eigen matrix products over tiles of (point block x query block) in the
// index dtype, then every score goes through the shared predicate (filter with a rigorous error
// margin, exact arithmetic when undecided). Work is split over contiguous point chunks (few
// queries) or query blocks (many queries), so ids come out sorted without a sort.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "hsrgeom/dispatch.hpp"
#include "hsrgeom/interrupt.hpp"
#include "hsrgeom/parallel.hpp"
#include "hsrgeom/predicate.hpp"
#include "hsrgeom/query.hpp"
#include "hsrgeom/report.hpp"
#include "hsrgeom/sums.hpp"
#include "hsrgeom/topk.hpp"
#include "hsrgeom/types.hpp"

namespace hsrgeom {

template <class T>
class BruteForce : public QueryMethods<BruteForce<T>, T> {
 public:
  using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using ColMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
  static constexpr index_t kPointBlock = 2048;
  static constexpr index_t kQueryBlock = 64;

  BruteForce() = default;
  explicit BruteForce(PointsView<T> p) : n_(p.n), d_(p.d), pts_(p.data, p.data + p.n * p.d) {
    norms_.resize(n_);
    block_norm_.assign((n_ + kPointBlock - 1) / kPointBlock, 0.0);
    for (index_t i = 0; i < n_; ++i) {
      if ((i & 65535) == 0) interrupt::check();
      norms_[i] = norm_up(row(i), d_);
      block_norm_[i / kPointBlock] = std::max(block_norm_[i / kPointBlock], norms_[i]);
    }
  }

  index_t size() const { return n_; }
  int dim() const { return d_; }
  const T* row(index_t i) const { return pts_.data() + i * static_cast<index_t>(d_); }
  const std::vector<T>& points() const { return pts_; }
  size_t memory_bytes() const { return pts_.size() * sizeof(T) + (norms_.size() + block_norm_.size()) * sizeof(double); }

  // report/count/empty/sum/topk come from QueryMethods (query.hpp's block drivers over
  // scan_cells and topk_cells: ids come out ascending whatever `sorted` says, chunks are
  // contiguous and merged in order; empty is a full scan, no early exit pays off in a blocked
  // product).
  // The block visit (query.hpp): cells[chunk][query] of contiguous point chunks, and
  // on(cell, j, id, x, a, score) for each point inside half-space j (a: its float64 normal;
  // score: kNoScore, the tile's score is in T).
  static constexpr bool kBlockScan = true;
  template <class C, class On>
  void scan_cells(const Halfspaces<T>& q, QueryStats* st, int threads, std::vector<std::vector<C>>& cells,
                  On&& on) const {
    Grid<C> g(q.m, plan(q.m, threads));
    scan(q, threads, st, g, [&](C& cell, index_t j, index_t i, const double* a) { on(cell, j, i, row(i), a, kNoScore); });
    cells = std::move(g.cells);
  }

  // The block top-k visit (query.hpp topk_visit): cells[chunk][query] (TopKSinks) made by
  // make(j), and cell.push(score, err, id, x) for every point of the chunk, score its <a_j, x>
  // in T (from the tile's product) and err a bound of that score's error.
  using TopKRow = T;
  template <class C, class Make>
  void topk_cells(const T* queries, index_t m, QueryStats* st, int threads, std::vector<std::vector<C>>& cells,
                  Make&& make) const {
    const Plan pl = plan(m, threads);
    std::vector<double> qnorm(m);
    for (index_t j = 0; j < m; ++j) qnorm[j] = norm_up(queries + j * d_, d_);
    const Margin margin(d_, Rounding<T>::u, Rounding<T>::eta);
    cells.assign(pl.chunks, {});
    for (auto& c : cells) {
      c.reserve(m);
      for (index_t j = 0; j < m; ++j) c.push_back(make(j));
    }
    tiles(m, pl, threads, [&](index_t chunk, index_t p0, index_t p1, index_t j0, index_t j1,
                              const ColMat& S) {
      for (index_t j = j0; j < j1; ++j) {
        auto& cl = cells[chunk][j];
        const double na = qnorm[j];
        for (index_t i = p0; i < p1; ++i)
          cl.push(static_cast<double>(S(i - p0, j - j0)), margin(na, norms_[i], 0.0), i, row(i));
      }
    }, queries);
    if (st) {
      st->resize(m);
      for (index_t j = 0; j < m; ++j) st->points_tested[j] = n_;
    }
  }

 private:
  struct Plan {
    index_t chunks;  // contiguous point chunks processed in parallel
  };
  template <class C>
  struct Grid {
    std::vector<std::vector<C>> cells;  // cells[chunk][query]
    Grid(index_t m, Plan p) : cells(p.chunks, std::vector<C>(m)) {}
  };

  Plan plan(index_t m, int threads) const {
    threads = threads_for_work(threads, static_cast<double>(n_) * m * d_);
    const index_t qblocks = (m + kQueryBlock - 1) / kQueryBlock;
    if (qblocks >= 2 * threads || n_ < 4 * kPointBlock) return {1};
    index_t c = std::min<index_t>(4 * threads, (n_ + kPointBlock - 1) / kPointBlock);
    return {std::max<index_t>(c, 1)};
  }

  // Runs f(chunk, p0, p1, j0, j1, S) over all tiles; S(i - p0, j - j0) = <x_i, a_j> in T.
  template <class F>
  void tiles(index_t m, Plan pl, int threads, F&& f, const T* normals) const {
    if (m == 0 || n_ == 0) return;
    const index_t qblocks = (m + kQueryBlock - 1) / kQueryBlock;
    // chunks of whole point blocks, so every tile is one block of block_norm_
    const index_t per_chunk = ((n_ + pl.chunks - 1) / pl.chunks + kPointBlock - 1) / kPointBlock * kPointBlock;
    parallel_for(pl.chunks * qblocks, threads_for_work(threads, static_cast<double>(n_) * m * d_),
                 [&](index_t w, int) {
      const index_t chunk = w / qblocks, qb = w % qblocks;
      const index_t c0 = chunk * per_chunk, c1 = std::min(n_, c0 + per_chunk);
      const index_t j0 = qb * kQueryBlock, j1 = std::min(m, j0 + kQueryBlock);
      Eigen::Map<const RowMat> A(normals + j0 * d_, j1 - j0, d_);
      ColMat S;
      for (index_t p0 = c0; p0 < c1; p0 += kPointBlock) {
        interrupt::check();  // per tile: kPointBlock points x kQueryBlock queries
        const index_t p1 = std::min(c1, p0 + kPointBlock);
        Eigen::Map<const RowMat> X(row(p0), p1 - p0, d_);
        if (j1 - j0 <= kFewQueries && (d_ <= kFixedDims || d_ > 40)) {
          few_products(A, p0, p1, S);
        } else {
          S.noalias() = X * A.transpose();
        }
        f(chunk, p0, p1, j0, j1, S);
      }
    });
  }

  // S = X A^T for a tile and a few queries: one dot product per point and query. Measured for one
  // query over 10^6 points on one thread (docs/performance.md): d = 8 1.8 vs 3.9 ms with Eigen's
  // matrix-vector kernel, d = 64 11.8 vs 18.2 ms, d = 128 19 vs 52 ms; Eigen stays faster for
  // 8 < d <= 40. Any summation order in T is covered by the predicate's margin.
  static constexpr index_t kFewQueries = 4;
  void few_products(const Eigen::Map<const RowMat>& A, index_t p0, index_t p1, ColMat& S) const {
    S.resize(p1 - p0, A.rows());
    for (index_t j = 0; j < A.rows(); ++j)
      with_dim_in<1, kFixedDims>(d_, [&](auto D) { dots<decltype(D)::value>(A.data() + j * d_, p0, p1, S.data() + j * S.rows()); });
  }
  // d <= kFixedDims: compiled for the fixed d (the dot product unrolls); larger d: a simd loop.
  static constexpr int kFixedDims = 8;
  template <int D>
  void dots(const T* a, index_t p0, index_t p1, T* out) const {
    for (index_t i = p0; i < p1; ++i) {
      const T* x = row(i);
      T s = 0;
      if constexpr (D > 0) {
        for (int t = 0; t < D; ++t) s += a[t] * x[t];
      } else {
#pragma omp simd reduction(+ : s)
        for (int t = 0; t < d_; ++t) s += a[t] * x[t];
      }
      out[i - p0] = s;
    }
  }

  // Applies the shared predicate to every (point, query) pair; on(cell, j, i, a) for each point i
  // in half-space j, whose normal is a (float64).
  template <class C, class On>
  void scan(const Halfspaces<T>& q, int threads, QueryStats* st, Grid<C>& grid, On on) const {
    std::vector<double> ad(q.normals, q.normals + q.m * d_);
    std::vector<double> anorm(q.m);
    for (index_t j = 0; j < q.m; ++j) anorm[j] = norm_up(q.normals + j * d_, d_);
    std::vector<std::vector<std::int64_t>> exact(grid.cells.size(),
                                                 std::vector<std::int64_t>(q.m, 0));
    const Margin margin(d_, Rounding<T>::u, Rounding<T>::eta);
    tiles(q.m, Plan{static_cast<index_t>(grid.cells.size())}, threads,
          [&](index_t chunk, index_t p0, index_t p1, index_t j0, index_t j1, const ColMat& S) {
            // One margin per tile, from the largest norm in its block (the margin grows with
            // ||x||). A branch-free pass keeps the scores not below b - margin and those that
            // overflowed in T (+-inf, NaN: the exact test decides them); only those are looked
            // at again, with their own margin where the tile's can't decide.
            const double xmax = block_norm_[p0 / kPointBlock];
            const index_t len = p1 - p0;
            std::int32_t cand[kPointBlock];
            for (index_t j = j0; j < j1; ++j) {
              const double b = q.offsets[j], na = anorm[j];
              const double* a = ad.data() + j * d_;
              const double mt = margin(na, xmax, b);
              const T lo = round_down<T>(b - mt);
              C& cell = grid.cells[chunk][j];
              std::int64_t& ex = exact[chunk][j];
              const T* col = S.data() + (j - j0) * S.rows();
              index_t nc = 0;
              for (index_t i = 0; i < len; ++i) {
                cand[nc] = static_cast<std::int32_t>(i);
                nc += !(col[i] < lo) | (col[i] == -std::numeric_limits<T>::infinity());
              }
              for (index_t c = 0; c < nc; ++c) {
                const index_t i = p0 + cand[c];
                const double sc = static_cast<double>(col[cand[c]]);
                if (filter_decide(sc, b, mt) > 0 || in_halfspace(sc, margin(na, norms_[i], b), a, row(i), b, d_, &ex))
                  on(cell, j, i, a);
              }
            }
          },
          q.normals);
    if (st) {
      st->resize(q.m);
      for (index_t j = 0; j < q.m; ++j) {
        st->points_tested[j] = n_;
        for (auto& e : exact) st->exact_checks[j] += e[j];
      }
    }
  }

  index_t n_ = 0;
  int d_ = 0;
  std::vector<T> pts_;
  std::vector<double> norms_;  // upper bounds of ||x_i||
  std::vector<double> block_norm_;  // max of norms_ over points [k, k + 1) * kPointBlock

  // The largest U not above x (so that t >= round_down(x) keeps every t >= x); NaN stays NaN.
  template <class U>
  static U round_down(double x) {
    const U top = std::numeric_limits<U>::max();
    if (x >= static_cast<double>(top)) return top;
    if (x < -static_cast<double>(top)) return -std::numeric_limits<U>::infinity();
    U r = static_cast<U>(x);
    if (static_cast<double>(r) > x) r = std::nextafter(r, -std::numeric_limits<U>::infinity());
    return r;
  }
};

}  // namespace hsrgeom
