// Half-space range reporting with CGAL's kd-tree (Spatial_searching), as a peer for hsrgeom.
//
// Build (Debian: apt-get install libcgal-dev; CGAL 5.x is header-only):
//   g++ -O2 -std=c++17 -DNDEBUG -DCGAL_NDEBUG benchmarks/peers/cgal_halfspace.cpp -o cgal_halfspace -lgmp -lmpfr
// (benchmarks/peers/run.py runs exactly this command into benchmarks/peers/build/ when the binary
// is missing or older than this file.)
//
// Usage: cgal_halfspace POINTS QUERIES IDS_OUT [repeat=3] [max_seconds=10]
//   POINTS : int64 n, int64 d, then n*d float64 (row-major)
//   QUERIES: int64 m, int64 d, then m*d float64 normals, then m float64 offsets
//   IDS_OUT: for each query: int64 count, then count int64 ids (ascending), from the last repeat
//   stdout : one JSON object {"build_s": ..., "query_s": best batch time of the search alone,
//            "query_sorted_s": best batch time of search + ids in ascending order, ...}
//
// The tree is CGAL::Kd_tree with CGAL::Search_traits over a user point type (a pointer into the
// coordinate array; dimension fixed at compile time for d in {2, 3, 4, 8, 16}, dynamic otherwise),
// default splitter (Sliding_midpoint, bucket size 10), extended nodes and the points cache on. Kd_tree::search takes any FuzzyQueryItem; HalfspaceQuery below is one for
// {x : <a, x> >= b}. Single-threaded (CGAL's search is sequential).
//
// Exactness: the point test is <a, x> >= b in double precision, not exact; the box tests are
// conservative with a relative tolerance (a box is pruned or reported wholesale only when the
// bound clears b by more than the tolerance, so boxes never cause wrong answers beyond what the
// point test itself would do). run.py places every offset in a gap of the projected values far
// wider than the rounding error, so the reported sets are well defined and are verified there.
#include <CGAL/Kd_tree.h>
#include <CGAL/Kd_tree_rectangle.h>
#include <CGAL/Search_traits.h>
#include <CGAL/Splitters.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace {

// A point is a pointer to its d coordinates in one row-major array (its id is the offset / d),
// so the tree and its output hold 8-byte handles, no copies of coordinates.
struct Pt {
  const double* c;
};
int g_dim = 0;  // dimension for the Dynamic_dimension_tag instantiation

template <int D>
struct ConstructIt {
  typedef const double* result_type;
  const double* operator()(const Pt& p) const { return p.c; }
  const double* operator()(const Pt& p, int) const { return p.c + (D > 0 ? D : g_dim); }
};

// FuzzyQueryItem for the closed half-space {x : <a, x> >= b}.
template <class Traits>
class HalfspaceQuery {
 public:
  typedef typename Traits::Point_d Point_d;
  typedef typename Traits::FT FT;
  typedef typename Traits::Dimension Dimension;

  HalfspaceQuery(const double* a, double b, int d)
      : a_(a, a + d), b_(b), d_(d) {
    double s = std::fabs(b);
    for (double v : a_) s += std::fabs(v);
    tol_ = 1e-12 * s;  // scaled below by the box's coordinate magnitude
  }

  // Used when the tree has no points cache.
  bool contains(const Point_d& p) const { return dot(p.c) >= b_; }

  // Used with Enable_points_cache: the tree passes the cached coordinates of the point.
  template <class Coord_iterator>
  bool contains_point_given_as_coordinates(Coord_iterator it, Coord_iterator /*end*/) const {
    double s = 0.0;
    for (int i = 0; i < d_; ++i, ++it) s += a_[i] * static_cast<double>(*it);
    return s >= b_;
  }

  // May the cell contain a point of the half-space?  max over the box of <a, x> >= b (minus tol).
  bool inner_range_intersects(const CGAL::Kd_tree_rectangle<FT, Dimension>& r) const {
    double lo, hi, mag;
    box_range(r, lo, hi, mag);
    return hi >= b_ - tol_ * mag;
  }

  // Is the whole cell inside?  min over the box of <a, x> >= b (plus tol).
  bool outer_range_contains(const CGAL::Kd_tree_rectangle<FT, Dimension>& r) const {
    double lo, hi, mag;
    box_range(r, lo, hi, mag);
    return lo >= b_ + tol_ * mag;
  }

 private:
  // min and max of <a, x> over the box, and the largest coordinate magnitude in it (>= 1).
  void box_range(const CGAL::Kd_tree_rectangle<FT, Dimension>& r, double& lo, double& hi, double& mag) const {
    lo = hi = 0.0;
    mag = 1.0;
    for (int i = 0; i < d_; ++i) {
      const double lo_i = r.min_coord(i), hi_i = r.max_coord(i);
      lo += a_[i] >= 0 ? a_[i] * lo_i : a_[i] * hi_i;
      hi += a_[i] >= 0 ? a_[i] * hi_i : a_[i] * lo_i;
      mag = std::max(mag, std::max(std::fabs(lo_i), std::fabs(hi_i)));
    }
  }
  double dot(const double* x) const {
    double s = 0.0;
    for (int i = 0; i < d_; ++i) s += a_[i] * x[i];
    return s;
  }
  std::vector<double> a_;
  double b_, tol_;
  int d_;
};

std::vector<double> read_matrix(std::ifstream& f, std::int64_t& rows, std::int64_t& cols) {
  f.read(reinterpret_cast<char*>(&rows), 8);
  f.read(reinterpret_cast<char*>(&cols), 8);
  if (!f || rows < 0 || cols <= 0) throw std::runtime_error("bad header");
  std::vector<double> v(static_cast<std::size_t>(rows * cols));
  f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * 8));
  if (!f) throw std::runtime_error("short file");
  return v;
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <int D>
int run(const std::vector<double>& X, std::int64_t n, int d, const std::vector<double>& A,
        const std::vector<double>& B, std::int64_t m, const char* ids_out, int repeat, double max_s) {
  typedef typename std::conditional<D == 0, CGAL::Dynamic_dimension_tag, CGAL::Dimension_tag<D>>::type Dim;
  typedef CGAL::Search_traits<double, Pt, const double*, ConstructIt<D>, Dim> Traits;
  typedef CGAL::Sliding_midpoint<Traits> Splitter;
  typedef CGAL::Kd_tree<Traits, Splitter, CGAL::Tag_true, CGAL::Tag_true> Tree;  // points cache on
  g_dim = d;

  double t0 = now();
  std::vector<Pt> pts(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) pts[i].c = X.data() + i * d;
  Tree tree(pts.begin(), pts.end());
  tree.build();
  const double build_s = now() - t0;

  std::vector<HalfspaceQuery<Traits>> qs;
  for (std::int64_t j = 0; j < m; ++j) qs.emplace_back(A.data() + j * d, B[j], d);
  // Pass 1: the search alone, output in the tree's order (CGAL's own contract).
  // Pass 2: the search plus turning handles into int64 ids in ascending order (hsrgeom's contract,
  // and what FAISS's CSR result gives), so the two can be compared like for like.
  std::vector<std::vector<Pt>> out(static_cast<std::size_t>(m));
  std::vector<std::vector<std::int64_t>> sorted(static_cast<std::size_t>(m));
  double best = 1e300, best_sorted = 1e300;
  int done = 0;
  std::size_t reported = 0;
  for (int pass = 0; pass < 2; ++pass) {
    double total = 0.0;
    for (int r = 0; r < repeat; ++r) {
      for (auto& o : out) o.clear();
      for (auto& o : sorted) o.clear();
      reported = 0;
      const double t = now();
      for (std::int64_t j = 0; j < m; ++j) {
        tree.search(std::back_inserter(out[j]), qs[j]);
        reported += out[j].size();
        if (pass == 1) {
          auto& v = sorted[j];
          v.reserve(out[j].size());
          for (const Pt& p : out[j]) v.push_back((p.c - X.data()) / d);
          std::sort(v.begin(), v.end());
        }
      }
      const double dt = now() - t;
      double& slot = pass == 0 ? best : best_sorted;
      slot = std::min(slot, dt);
      total += dt;
      if (pass == 0) ++done;
      if (total > max_s) break;
    }
  }

  std::ofstream f(ids_out, std::ios::binary);
  for (auto& v : sorted) {
    const std::int64_t c = static_cast<std::int64_t>(v.size());
    f.write(reinterpret_cast<const char*>(&c), 8);
    f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 8));
  }
  std::printf(
      "{\"build_s\": %.6f, \"query_s\": %.6f, \"query_sorted_s\": %.6f, \"repeats\": %d, \"n\": %lld, \"d\": %d, \"m\": %lld, "
      "\"reported\": %zu, \"fixed_dimension\": %s, \"threads\": 1}\n",
      build_s, best, best_sorted, done, static_cast<long long>(n), d, static_cast<long long>(m), reported,
      D == 0 ? "false" : "true");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s POINTS QUERIES IDS_OUT [repeat=3] [max_seconds=10]\n", argv[0]);
    return 2;
  }
  try {
    const int repeat = argc > 4 ? std::atoi(argv[4]) : 3;
    const double max_s = argc > 5 ? std::atof(argv[5]) : 10.0;
    std::int64_t n, d, m, dq;
    std::ifstream fp(argv[1], std::ios::binary), fq(argv[2], std::ios::binary);
    if (!fp || !fq) throw std::runtime_error("cannot open input");
    const std::vector<double> X = read_matrix(fp, n, d);
    const std::vector<double> A = read_matrix(fq, m, dq);
    if (dq != d) throw std::runtime_error("dimension mismatch");
    std::vector<double> B(static_cast<std::size_t>(m));
    fq.read(reinterpret_cast<char*>(B.data()), static_cast<std::streamsize>(m * 8));
    if (!fq) throw std::runtime_error("short query file");
    const int di = static_cast<int>(d);
    switch (di) {
      case 2: return run<2>(X, n, di, A, B, m, argv[3], repeat, max_s);
      case 3: return run<3>(X, n, di, A, B, m, argv[3], repeat, max_s);
      case 4: return run<4>(X, n, di, A, B, m, argv[3], repeat, max_s);
      case 8: return run<8>(X, n, di, A, B, m, argv[3], repeat, max_s);
      case 16: return run<16>(X, n, di, A, B, m, argv[3], repeat, max_s);
      default: return run<0>(X, n, di, A, B, m, argv[3], repeat, max_s);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
