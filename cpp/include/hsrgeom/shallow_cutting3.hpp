// ShallowCutting3 (d = 3): a shallow cutting of the dual arrangement over a fixed grid of
// directions, with conflict lists, for output-sensitive half-space reporting; a PartitionTree
// answers what the cutting cannot.
//
// Dual view. Point x is the linear function f_x(a) = <a, x> of the normal; a query (a, b)
// reports the functions at or above b at a. Directions are cut by a cube map: on the face of
// axis i and sign s a normal is scaled to a' = a / |a_i| = s e_i + u e_j + v e_k with (u, v) in
// [-1, 1]^2; each face's square is cut into G x G cells of two triangles. Over each grid vertex
// c and for a growing list of depths k_0 < k_1 < ... (level j) the cutting keeps beta_j(c), an
// upper bound of the k_j-th largest <c, x>. On a triangle with corners c_1..c_3 the surface
// T_j(a') = sum_i lambda_i beta_j(c_i) (lambda: a''s barycentric coordinates) lies above every
// function f_x outside the triangle's conflict list at level j, the points among the top k_j
// of some corner: for such x, f_x(c_i) <= beta_j(c_i) at each corner and f_x is linear, so
// f_x(a') <= T_j(a'). A query therefore finds its triangle, the smallest level j with
// |a_i| T_j(a') < b (rigorous rounding margins, below), and tests only that conflict list (it
// holds every point inside). A query with no such level (deeper than the largest depth, or a
// zero normal) goes to the tree.
//
// This is a shallow cutting in the sense of Matousek (cells of the lifted triangulation above the
// <= k_j-level, each with a conflict list) but its vertices sit on a fixed grid of directions,
// not where the optimal constructions put them (Afshani-Chan, Chan-Tsakalidis), so no worst-case
// O(k) bound holds for the conflict lists: their sizes are measured (docs/cuttings.md). The
// answers are exact on any input: a query tests every point of a list with the shared
// predicate, and a list is used only when the rounded certificate proves it complete.
//
// Storage: per triangle, its conflict lists for all levels as one array ordered by the first
// level that needs each point (so level j's list is a prefix), in blocks of eight candidates
// (filter.hpp), and their id order (filter.hpp IdOrder: a sorted report takes the list's ids
// in id order instead of sorting them); per grid vertex, beta_j for every level. Levels past a budget of
// `max_candidates` stored candidates (all triangles together) are dropped.
//
// Tiers: a list's size is ~k_j times a factor set by how far apart a triangle's corners are,
// so deep levels on the fine grid cost ~k_j candidates per triangle. Levels up to `fine_depth`
// are kept on the grid asked for (tier 0); deeper ones on grids halved per tier, tier t up to
// fine_depth 4^t (the grid-1 tier takes all the rest), so each tier stores about as many
// candidates as the fine one while the depths reach 10^4 and more. A query tries the tiers from
// the finest; the first whose deepest level it certifies answers (same certificate, same list
// format, on that tier's grid).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <limits>
#include <stdexcept>
#include <vector>

#include "hsrgeom/filter.hpp"
#include "hsrgeom/parallel.hpp"
#include "hsrgeom/partition_tree.hpp"
#include "hsrgeom/predicate.hpp"
#include "hsrgeom/progress.hpp"
#include "hsrgeom/query.hpp"
#include "hsrgeom/report.hpp"
#include "hsrgeom/types.hpp"

namespace hsrgeom {

template <class T>
class ShallowCutting3 : public QueryMethods<ShallowCutting3<T>, T> {
 public:
  static constexpr double kGrowth = 1.25;  // k_{j+1} ~ 1.25 k_j
  static constexpr index_t kFirstDepth = 8;
  static constexpr int kMaxGrid = 256;
  static constexpr index_t kTierGrowth = 4;  // a tier's deepest k is 4x the previous tier's, on half its grid

  ShallowCutting3() = default;
  // grid: cells per cube-face side (G, a power of two); max_depth: the largest k_j; fine_depth:
  // the largest k_j kept on grid G (tier 0); deeper levels go to tiers t = 1, 2, ... on grid
  // G / 2^t, tier t up to fine_depth 4^t (the grid-1 tier up to max_depth); max_candidates: the
  // budget of stored candidates, all tiers together (levels past it are dropped, deepest first).
  ShallowCutting3(PointsView<T> p, int grid, index_t max_depth, index_t fine_depth, index_t max_candidates, int threads)
      : n_(p.n), grid_(grid) {
    if (p.d != 3) throw std::invalid_argument("ShallowCutting3 needs d = 3");
    if (grid < 1 || grid > kMaxGrid || (grid & (grid - 1)) != 0)
      throw std::invalid_argument("grid must be a power of two in [1, 256]");
    if (max_depth < 0 || max_candidates < 0) throw std::invalid_argument("max_depth and max_candidates must be >= 0");
    if (fine_depth < kFirstDepth) throw std::invalid_argument("fine_depth must be >= 8");
    if (static_cast<std::uint64_t>(p.n) > kMaxBlockPoints)  // (32-bit ids in the lists: filter.hpp)
      throw std::invalid_argument("points: ShallowCutting3 holds at most 2^32 points");
    tree_ = PartitionTree<T>(p, 32, SplitRule::Widest, threads);
    if (n_ == 0) return;
    BuildProgress progress("ShallowCutting3", n_, 3);
    for (index_t i = 0; i < n_; ++i) {
      double s = 0;
      for (int t = 0; t < 3; ++t) s += std::fabs(static_cast<double>(p.row(i)[t]));
      x1_ = std::max(x1_, s);
    }
    x1_ *= 1 + 1e-15;
    xnorm_ = x1_;  // the 1-norm bounds the 2-norm
    // depths k_j (distinct, growing ~kGrowth), all < n: a level needs points outside its lists
    std::vector<index_t> depth;
    for (double k = static_cast<double>(kFirstDepth); static_cast<index_t>(k) <= std::min(max_depth, n_ - 1);
         k *= kGrowth)
      if (depth.empty() || static_cast<index_t>(k) > depth.back()) depth.push_back(static_cast<index_t>(k));
    // split into tiers; the budget is spent tier by tier, and a tier that had to drop levels
    // is the last
    size_t budget = static_cast<size_t>(max_candidates), first = 0;
    for (int g = grid; first < depth.size(); g = std::max(1, g / 2)) {
      const index_t top = g == 1 ? std::numeric_limits<index_t>::max() : fine_depth;
      size_t last = first;
      while (last < depth.size() && depth[last] <= top) ++last;
      if (g > 1 && fine_depth <= std::numeric_limits<index_t>::max() / kTierGrowth) fine_depth *= kTierGrowth;
      else fine_depth = std::numeric_limits<index_t>::max();
      if (last == first) continue;
      Tier tier;
      tier.grid = g;
      const std::vector<index_t> tier_depth(depth.begin() + first, depth.begin() + last);
      build_tier(p, tier, tier_depth, budget, threads, progress);
      const bool whole = tier.levels == static_cast<index_t>(tier_depth.size());
      if (tier.levels > 0) budget -= static_cast<size_t>(tier.candidates()), tiers_.push_back(std::move(tier));
      if (!whole || budget == 0) break;
      first = last;
    }
    index_t cands = 0;
    for (const Tier& t : tiers_) cands += t.candidates();
    progress.done("done: %lld levels (depth up to %lld) in %lld tiers, %lld candidates",
                  static_cast<long long>(levels()), static_cast<long long>(this->max_depth()),
                  static_cast<long long>(tiers_.size()), static_cast<long long>(cands));
  }

  index_t size() const { return n_; }
  int dim() const { return 3; }
  int grid() const { return grid_; }
  index_t levels() const {
    index_t s = 0;
    for (const Tier& t : tiers_) s += t.levels;
    return s;
  }
  index_t max_depth() const { return tiers_.empty() ? 0 : tiers_.back().depth.back(); }
  index_t triangles() const {  // of all tiers
    index_t s = 0;
    for (const Tier& t : tiers_) s += t.bucket_count();
    return s;
  }
  index_t candidates() const {
    index_t s = 0;
    for (const Tier& t : tiers_) s += t.candidates();
    return s;
  }
  std::vector<index_t> depths() const {
    std::vector<index_t> out;
    for (const Tier& t : tiers_) out.insert(out.end(), t.depth.begin(), t.depth.end());
    return out;
  }
  // the grid of each level's tier (aligned with depths())
  std::vector<index_t> level_grids() const {
    std::vector<index_t> out;
    for (const Tier& t : tiers_) out.insert(out.end(), static_cast<size_t>(t.levels), t.grid);
    return out;
  }
  size_t memory_bytes() const {
    size_t s = tree_.memory_bytes();
    for (const Tier& t : tiers_)
      s += t.cand.size() * sizeof(Block) + t.order.memory_bytes() + t.beta.size() * sizeof(double) +
           t.prefix.size() * sizeof(std::int32_t) +
           (t.off.size() + t.depth.size()) * sizeof(index_t);
    return s;
  }
  std::vector<T> original_points() const { return tree_.original_points(); }

  // The query concept (query.hpp; report, count, empty, sum, topk come from QueryMethods).
  // Top-k is the embedded tree's traversal (best-first branch and bound).
  using TopKRow = T;
  void visit_topk(const T* normal, Counters& c, TopKSink<T>& sink) const { tree_.visit_topk(normal, c, sink); }
  using Query = SmallQuery<T, 3>;
  Query prepare(const T* normal, double b) const { return Query::make(normal, b); }

  // The half-space traversal (query.hpp): a certified level's conflict list goes to sink.range
  // at once (filtered) when the sink reads ids only and does not stop early; otherwise its
  // points, and the tree's, one by one.
  template <class Sink>
  void visit(const Query& q, Counters& c, Sink& sink) const {
    visit<kTakesIdBlocks<Sink>>(
        q.normal_t, q.a, q.b, c, [&](std::int64_t id, const T* x, double s) { return sink.point(id, x, s); },
        [&](const std::int64_t* id, index_t w) { sink.range(id, static_cast<const T*>(nullptr), w); },
        wants_ascending(sink), [&](index_t n) { return ids_room(sink, n); });
  }

  double query_work(index_t m) const { return static_cast<double>(m) * 256 * std::log2(2.0 + n_); }

  // Software prefetch of the next query's cell.
  void prefetch_ahead(const Halfspaces<T>& q, index_t j) const {
    if (j + 1 < q.m) prefetch(q.normals + 3 * (j + 1));
  }

 private:
  using Block = CandIdBlock<T, 3>;

  // One grid of directions and the levels kept on it.
  struct Tier {
    int grid = 1;
    index_t levels = 0;
    std::vector<index_t> depth;        // k_j per level
    std::vector<double> beta;          // per grid vertex, per level: upper bound of its k_j-th largest <c, x>
    std::vector<std::int32_t> prefix;  // per triangle, per level: size of its conflict list
    std::vector<index_t> off;          // per triangle: first block of its candidates in cand
    std::vector<Block> cand;           // candidates, per triangle by the first level needing them
    IdOrder order;                     // each triangle's candidates in id order (sorted reports)

    index_t vertex_count() const { return 6 * static_cast<index_t>(grid + 1) * (grid + 1); }
    index_t bucket_count() const { return 12 * static_cast<index_t>(grid) * grid; }
    index_t candidates() const {
      index_t s = 0;
      for (index_t bk = 0; levels && bk < bucket_count(); ++bk) s += prefix[static_cast<size_t>(bk) * levels + levels - 1];
      return s;
    }
  };

  // Builds tier's levels for the given depths on tier.grid, dropping the deepest while the
  // candidates exceed budget (no level when no list is usable).
  void build_tier(const PointsView<T>& p, Tier& tier, const std::vector<index_t>& depth, size_t budget, int threads,
                  BuildProgress& progress) const {
    index_t J = static_cast<index_t>(depth.size());
    const index_t K = depth.back();
    const int G = tier.grid;
    const index_t V = tier.vertex_count();
    // each grid vertex's top K points (ties in any order): see top_points
    std::vector<std::int64_t> top(static_cast<size_t>(V) * K);
    std::vector<double> beta(static_cast<size_t>(V) * J);
    std::vector<std::uint8_t> usable(V);
    const std::vector<T> sample = sample_points(p);
    parallel_for(V, threads_for_work(threads, 1e9), [&](index_t v, int tid) {
      const auto c = vertex_dir(G, v);
      std::vector<std::pair<double, std::int64_t>> got;
      usable[v] = top_points(c, K, sample, got);
      double prev = std::numeric_limits<double>::infinity();
      for (index_t j = 0; j < J; ++j) {
        // Every point outside the first k_j has rounded <c, x> <= the k_j-th's rounded value s,
        // or was not collected (exact <c, x> below the collection threshold, itself <= the
        // exact value of that point): its exact value is <= s + its rounding error, which is
        // <= 4e-16 sum |c_t x_t| <= 4e-16 max |x|_1 (|c_t| <= 1).
        double up = usable[v] ? got[depth[j] - 1].first + 4e-16 * x1_ + 1e-300 : std::numeric_limits<double>::infinity();
        if (!(std::fabs(up) <= std::numeric_limits<double>::max())) up = std::numeric_limits<double>::infinity();
        // level j's lists contain level j - 1's, so the shallower bound holds too
        prev = std::min(prev, up);
        beta[static_cast<size_t>(v) * J + j] = prev;
      }
      for (index_t r = 0; usable[v] && r < K; ++r) top[static_cast<size_t>(v) * K + r] = got[r].second;
      if (tid == 0)
        progress.tick("grid %d: top-%lld of %lld grid directions", G, static_cast<long long>(K), static_cast<long long>(V));
    });
    // conflict lists per triangle: level by level, the corners' ranks [k_{j-1}, k_j) not yet in
    const index_t B = tier.bucket_count();
    std::vector<std::vector<std::int64_t>> lists(B);
    std::vector<std::vector<std::int32_t>> prefix(B, std::vector<std::int32_t>(J));
    const int nt = threads_for_work(threads, 1e9);
    std::vector<std::vector<std::int32_t>> stamp(nt, std::vector<std::int32_t>(n_, -1));
    parallel_for(B, nt, [&](index_t bk, int tid) {
      index_t corner[3];
      bucket_corners(G, bk, corner);
      std::vector<std::int32_t>& st = stamp[tid];
      std::vector<std::int64_t>& out = lists[bk];
      // a corner without a top list has beta = inf: no level of the triangle can be certified
      const bool any = usable[corner[0]] && usable[corner[1]] && usable[corner[2]];
      for (index_t j = 0; j < J; ++j) {
        if (!any) {
          prefix[bk][j] = 0;
          continue;
        }
        for (int i = 0; i < 3; ++i) {
          const std::int64_t* ids = &top[static_cast<size_t>(corner[i]) * K];
          for (index_t r = j ? depth[j - 1] : 0; r < depth[j]; ++r)
            if (st[ids[r]] != static_cast<std::int32_t>(bk)) st[ids[r]] = static_cast<std::int32_t>(bk), out.push_back(ids[r]);
        }
        prefix[bk][j] = static_cast<std::int32_t>(out.size());
      }
    });
    stamp.clear();
    top.clear();
    top.shrink_to_fit();
    // the budget: the deepest levels go first (and no level when no list is usable)
    while (J > 0) {
      size_t total = 0;
      for (index_t bk = 0; bk < B; ++bk) total += prefix[bk][J - 1];
      if (total <= budget && total > 0) break;
      --J;
    }
    tier.levels = J;
    if (J == 0) return;
    tier.depth.assign(depth.begin(), depth.begin() + J);
    tier.beta.resize(static_cast<size_t>(V) * J);
    for (index_t v = 0; v < V; ++v)
      std::copy_n(&beta[static_cast<size_t>(v) * depth.size()], J, &tier.beta[static_cast<size_t>(v) * J]);
    tier.prefix.resize(static_cast<size_t>(B) * J);
    tier.off.assign(B + 1, 0);
    for (index_t bk = 0; bk < B; ++bk) {
      std::copy_n(prefix[bk].begin(), J, &tier.prefix[static_cast<size_t>(bk) * J]);
      tier.off[bk + 1] = tier.off[bk] + (prefix[bk][J - 1] + 7) / 8;  // each triangle starts a block
    }
    tier.cand.assign(tier.off[B], Block{});
    parallel_for(B, threads_for_work(threads, 1e8), [&](index_t bk, int) {
      Block* blk = tier.cand.data() + tier.off[bk];
      for (index_t i = 0; i < prefix[bk][J - 1]; ++i) {
        const std::int64_t id = lists[bk][i];
        for (int t = 0; t < 3; ++t) blk[i / 8].x[t][i % 8] = p.row(id)[t];
        blk[i / 8].id[i % 8] = static_cast<std::uint32_t>(id);
      }
    });
    for (index_t bk = 0; bk < B; ++bk) tier.order.add_list(tier.cand.data() + tier.off[bk], prefix[bk][J - 1]);
    tier.order.done();
  }

  // A fixed sample of the points (all of them up to 8192), for the collection thresholds.
  static std::vector<T> sample_points(const PointsView<T>& p) {
    const index_t s = std::min<index_t>(p.n, 8192);
    std::vector<T> out(3 * static_cast<size_t>(s));
    for (index_t i = 0; i < s; ++i) {
      const index_t id = static_cast<index_t>((static_cast<double>(i) + 0.5) * static_cast<double>(p.n) / s);
      std::copy_n(p.row(std::min(id, p.n - 1)), 3, &out[3 * static_cast<size_t>(i)]);
    }
    return out;
  }

  // The K points with the largest rounded <c, x> (ties in any order), into got as (rounded
  // value, id), best first. The tree reports the points with exact <c, x> >= t: t starts at the
  // sample's value of rank ~1.5 K s / n and goes down (4x the rank) while fewer than K come
  // back, or up to the collected (2K)-th value while more than kMaxCollect K would. Returns false
  // (no list) when t cannot rise: massive ties (duplicates) at the K-th value, which an exact
  // top-K with a tie-break would pay for at every direction.
  static constexpr index_t kMaxCollect = 8;
  bool top_points(const std::array<double, 3>& c, index_t K, const std::vector<T>& sample,
                  std::vector<std::pair<double, std::int64_t>>& got) const {
    const T ct[3] = {static_cast<T>(c[0]), static_cast<T>(c[1]), static_cast<T>(c[2])};  // exact: dyadic
    auto dot = [&](const T* x) {
      return std::fma(c[2], static_cast<double>(x[2]), std::fma(c[1], static_cast<double>(x[1]), c[0] * static_cast<double>(x[0])));
    };
    auto by_value = [](const auto& x, const auto& y) { return x.first > y.first; };
    const index_t s = static_cast<index_t>(sample.size() / 3), cap = kMaxCollect * K + 1024;
    std::vector<double> proj(s);
    for (index_t i = 0; i < s; ++i) proj[i] = dot(&sample[3 * static_cast<size_t>(i)]);
    const double big = std::numeric_limits<double>::max();
    double want = 1.5 * static_cast<double>(K) + 64, t = 0;
    bool from_sample = true;
    for (int rounds = 0; rounds < 64; ++rounds) {
      if (from_sample) {
        const index_t r = static_cast<index_t>(std::ceil(want * static_cast<double>(s) / static_cast<double>(n_)));
        if (r < s) std::nth_element(proj.begin(), proj.begin() + r, proj.end(), std::greater<double>());
        t = r < s ? std::min(big, std::max(-big, proj[r])) : -big;  // finite
      }
      got.clear();
      Counters cnt;
      bool full = false;
      auto take = [&](index_t k) {
        if (static_cast<index_t>(got.size()) >= cap) return !(full = true);
        got.push_back({dot(tree_.stored_row(k)), tree_.stored_id(k)});
        return true;
      };
      tree_.visit(ct, t, cnt, [&](index_t b0, index_t b1) {
        for (index_t k = b0; k < b1; ++k)
          if (!take(k)) return false;
        return true;
      }, take);
      if (full) {  // too many: up to the collected 2K-th value, if that is higher
        std::nth_element(got.begin(), got.begin() + 2 * K, got.end(), by_value);
        const double up = std::min(big, got[2 * K].first);
        if (!(up > t)) return false;
        t = up;
        from_sample = false;
        continue;
      }
      if (static_cast<index_t>(got.size()) >= K) {
        std::partial_sort(got.begin(), got.begin() + K, got.end(), by_value);
        return true;
      }
      if (!from_sample || want >= static_cast<double>(n_)) return false;  // (fewer than K at -inf: not with K < n)
      want *= 4;
    }
    return false;
  }

  // Grid vertex v = (face f, p, q) of grid G, f = 2 * axis + (sign < 0): s e_axis + u e_j + v e_k
  // with u = -1 + 2p / G, v = -1 + 2q / G (exact: G is a power of two), (j, k) = the next two axes.
  static std::array<double, 3> vertex_dir(int G, index_t v) {
    const index_t W = G + 1, f = v / (W * W), p = (v / W) % W, q = v % W;
    const int i = static_cast<int>(f / 2);
    std::array<double, 3> c{};
    c[i] = f % 2 ? -1.0 : 1.0;
    c[(i + 1) % 3] = -1.0 + 2.0 * static_cast<double>(p) / G;
    c[(i + 2) % 3] = -1.0 + 2.0 * static_cast<double>(q) / G;
    return c;
  }
  // Triangle bk = ((f * G + p) * G + q) * 2 + upper: lower (p, q), (p+1, q), (p, q+1); upper
  // (p+1, q+1), (p, q+1), (p+1, q).
  static void bucket_corners(index_t G, index_t bk, index_t* corner) {
    const index_t cell = bk / 2;
    cell_corners(G, cell / (G * G), (cell / G) % G, cell % G, bk % 2, corner);
  }
  // The same from the triangle's face, cell and half (no division: locate calls it per query).
  static void cell_corners(index_t G, index_t f, index_t p, index_t q, bool upper, index_t* corner) {
    const index_t W = G + 1, base = f * W * W;
    if (upper) {
      corner[0] = base + (p + 1) * W + q + 1, corner[1] = base + p * W + q + 1, corner[2] = base + (p + 1) * W + q;
    } else {
      corner[0] = base + p * W + q, corner[1] = base + (p + 1) * W + q, corner[2] = base + p * W + q + 1;
    }
  }

  // A nonzero normal's triangle, its corners and barycentric coordinates (>= 0; they
  // reproduce a / |a_i| up to rounding, covered by locate's caller), and scale = |a_i|.
  struct Where {
    index_t bucket, corner[3];
    double lambda[3], scale;
  };
  static Where locate(int grid, const double* a) {
    const double m0 = std::fabs(a[0]), m1 = std::fabs(a[1]), m2 = std::fabs(a[2]);
    const int i = m0 >= m1 && m0 >= m2 ? 0 : (m1 >= m2 ? 1 : 2);
    Where w;
    w.scale = std::fabs(a[i]);
    const double u = a[(i + 1) % 3] / w.scale, v = a[(i + 2) % 3] / w.scale, half = 0.5 * grid;
    const double fp = (u + 1) * half, fq = (v + 1) * half;
    const index_t G = grid;
    const index_t p = std::min<index_t>(G - 1, std::max<index_t>(0, static_cast<index_t>(fp)));
    const index_t q = std::min<index_t>(G - 1, std::max<index_t>(0, static_cast<index_t>(fq)));
    const double fu = std::min(1.0, std::max(0.0, fp - p)), fv = std::min(1.0, std::max(0.0, fq - q));
    const index_t f = 2 * i + (a[i] < 0);
    const bool upper = fu + fv > 1;
    w.bucket = ((f * G + p) * G + q) * 2 + upper;
    cell_corners(G, f, p, q, upper, w.corner);
    if (upper) w.lambda[0] = fu + fv - 1, w.lambda[1] = 1 - fu, w.lambda[2] = 1 - fv;
    else w.lambda[0] = std::max(0.0, 1 - fu - fv), w.lambda[1] = fu, w.lambda[2] = fv;
    return w;
  }

  // Is every point inside {<a, x> >= b} in the triangle's level-j list? With a' = a / scale =
  // sum lambda_i c_i + delta, <a, x> = scale (sum lambda_i <c_i, x> + <delta, x>) <= scale
  // (T_j + |delta|_inf |x|_1) for x outside the list. |delta|_inf is a few units of rounding of
  // values <= 1 (the division, the grid coordinates, 1 - fu - fv); 1e-12 bounds it with a wide
  // margin, and also the rounding of T_j's sum (relative to sum lambda_i |beta_i|). Any
  // overflow or NaN makes the comparison false: no certificate, the tree answers.
  bool certified(const Tier& tier, const Where& w, index_t j, double b) const {
    double s = 0, sa = 0;
    for (int t = 0; t < 3; ++t) {
      const double bt = tier.beta[static_cast<size_t>(w.corner[t]) * tier.levels + j];
      s += w.lambda[t] * bt;
      sa += w.lambda[t] * std::fabs(bt);
    }
    double up = w.scale * (s + 1e-12 * (sa + x1_));
    up += std::fabs(up) * 1e-15 + 1e-300;
    return up < b;
  }

  void prefetch(const T* normal) const {
    if (tiers_.empty()) return;
    const double a[3] = {static_cast<double>(normal[0]), static_cast<double>(normal[1]), static_cast<double>(normal[2])};
    if (a[0] == 0 && a[1] == 0 && a[2] == 0) return;
    const Tier& tier = tiers_[0];
    const Where w = locate(tier.grid, a);
    const index_t L = tier.levels;
    for (int t = 0; t < 3; ++t) __builtin_prefetch(&tier.beta[static_cast<size_t>(w.corner[t]) * L + L / 2]);
    __builtin_prefetch(&tier.prefix[static_cast<size_t>(w.bucket) * L]);
    const char* c = reinterpret_cast<const char*>(tier.cand.data() + tier.off[w.bucket]);
    for (size_t l = 0; l < 2 * sizeof(Block); l += 64) __builtin_prefetch(c + l);
  }

  // Calls block(ids, w) with every inside point's id at once when the cutting answers and
  // Ids is true (in id order with ascending, where the list is ranked), else out(id, x, score)
  // per point (x: its coordinates, T[3]; score: its float64 <a, x> or kNoScore); out returns
  // false to stop.
  template <bool Ids, class Out, class BlockF, class Room>
  void visit(const T* normal, const double* a, double b, Counters& c, Out&& out, BlockF&& block, bool ascending,
             Room&& room) const {
    const bool zero = a[0] == 0 && a[1] == 0 && a[2] == 0;
    // the tiers from the finest: the first that certifies a level answers
    for (size_t ti = 0; ti < tiers_.size() && !zero; ++ti) {
      const Tier& tier = tiers_[ti];
      const index_t L = tier.levels;
      const Where w = locate(tier.grid, a);
      // the smallest certified level (T_j decreases with j): binary search, then the list
      if (++c.nodes, !certified(tier, w, L - 1, b)) continue;
      index_t lo = 0, hi = L - 1;
      while (lo < hi) {
        const index_t mid = (lo + hi) / 2;
        ++c.nodes;
        if (certified(tier, w, mid, b)) hi = mid;
        else lo = mid + 1;
      }
      const Margin mg(3, Rounding<double>::u, Rounding<double>::eta);
      const double na = norm_up(a, 3), margin = mg(na, xnorm_, b);
      const index_t cnt = tier.prefix[static_cast<size_t>(w.bucket) * L + lo];
      const Block* cand = tier.cand.data() + tier.off[w.bucket];
      c.tested += cnt;
      // no product can overflow when ||a|| ||x|| and |b| are far from the largest double
      if (Ids && na * xnorm_ <= 1e300 && std::fabs(b) <= 1e300) {
        std::vector<std::int64_t>& ids = id_scratch_();
        // the few within rounding of the boundary are decided exactly
        auto decide = [&](const Block& q, int l) {
          const T x[3] = {q.x[0][l], q.x[1][l], q.x[2][l]};
          ++c.exact;
          return exact_sign(a, x, b, 3) >= 0;
        };
        const std::int64_t band = ascending ? tier.order.report_band(w.bucket, cnt) : -1;
        std::int64_t* dst = room(cnt + 8);  // the report itself, else the scratch (after the slots)
        ids.resize(((band >= 0) + !dst) * (cnt + 8));
        if (!dst) dst = ids.data() + (band >= 0) * (cnt + 8);
        if (band >= 0) {
          index_t* slots = ids.data();
          const index_t got = filter_blocks<kWantSlots, 3>(a, b, margin, cand, cnt, slots, dst, decide);
          tier.order.report_ids(band, slots, got, dst);
          block(dst, got);
          return;
        }
        const index_t got = filter_blocks<1, 3>(a, b, margin, cand, cnt, nullptr, dst, decide);
        block(dst, got);
        return;
      }
      // one by one, with the exact predicate where rounding cannot decide
      for (index_t i = 0; i < cnt; ++i) {
        const Block& q = cand[i / 8];
        const int l = static_cast<int>(i % 8);
        const T x[3] = {q.x[0][l], q.x[1][l], q.x[2][l]};
        const double sx = a[0] * x[0] + a[1] * x[1] + a[2] * x[2];
        if (in_halfspace(sx, margin, a, x, b, 3, &c.exact) && !out(q.id[l], x, sx)) return;
      }
      return;
    }
    tree_.visit(
        normal, b, c,
        [&](index_t b0, index_t b1) {
          for (index_t k = b0; k < b1; ++k)
            if (!out(tree_.stored_id(k), tree_.stored_row(k), kNoScore)) return false;
          return true;
        },
        [&](index_t k, double s) { return out(tree_.stored_id(k), tree_.stored_row(k), s); });
  }

  static std::vector<std::int64_t>& id_scratch_() {
    thread_local std::vector<std::int64_t> v;
    return v;
  }

  index_t n_ = 0;
  int grid_ = 1;
  double x1_ = 0, xnorm_ = 0;  // upper bounds of max |x|_1 and max ||x||_2 over the points
  PartitionTree<T> tree_;      // all points: for queries the cutting cannot certify, and top-k
  std::vector<Tier> tiers_;    // grid, grid / 2, ...: deeper levels on coarser grids
};

}  // namespace hsrgeom
