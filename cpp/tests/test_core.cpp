// Unit tests of the C++ core's shared pieces, without Python: the exact predicates
// (predicate.hpp, hull2.hpp), the id sort of reports (report.hpp: sort_ids), the exact top-k
// collector (topk.hpp), the query concept's sinks and drivers (query.hpp, over a toy
// structure; the block top-k driver over BruteForce) and the dynamic index's tombstone sink
// (dynamic.hpp LiveSink/LiveView), the candidate lists' filter and id order (filter.hpp), QuantizedScan's block dot-product kernels (quantize.hpp, every
// instruction set this CPU runs) and its scan with each of them, and the attention scan's int8 x
// int16 dot products (attend.hpp int_dots, the build's instruction set), and PartitionTree's median
// splits (partition_tree.hpp select). Every expected answer is known exactly, independently of the code
// under test: small integers (whose products and sums are exact in int64 and in double) scaled
// by powers of two (which scale the exact value without changing its sign), or sums whose exact
// value is evident (1 + 2^-60 > 1).
//
// Built by CMake with -DHSRGEOM_BUILD_TESTS=ON (target test_core; tests/test_cpp_unit.py does
// it); prints each failed check and ends with "test_core: N passed, M failed" (exit 1 on failures).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "hsrgeom/attend.hpp"
#include "hsrgeom/brute_force.hpp"
#include "hsrgeom/buffer.hpp"
#include "hsrgeom/convex_layers.hpp"
#include "hsrgeom/dynamic.hpp"
#include "hsrgeom/filter.hpp"
#include "hsrgeom/hull2.hpp"
#include "hsrgeom/partition_tree.hpp"
#include "hsrgeom/predicate.hpp"
#include "hsrgeom/quantize.hpp"
#include "hsrgeom/quantized_scan.hpp"
#include "hsrgeom/query.hpp"
#include "hsrgeom/report.hpp"
#include "hsrgeom/shallow_cutting3.hpp"
#include "hsrgeom/sort_network.hpp"
#include "hsrgeom/topk.hpp"

namespace {

long g_passed = 0, g_failed = 0;

#define CHECK(cond)                                                 \
  do {                                                              \
    if (cond) {                                                     \
      ++g_passed;                                                   \
    } else {                                                        \
      ++g_failed;                                                   \
      std::printf("FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond); \
    }                                                               \
  } while (0)

#define CHECK_EQ(a, b)                                                                                                \
  do {                                                                                                                \
    const auto va_ = (a);                                                                                             \
    const auto vb_ = (b);                                                                                             \
    if (va_ == vb_) {                                                                                                 \
      ++g_passed;                                                                                                     \
    } else {                                                                                                          \
      ++g_failed;                                                                                                     \
      std::printf("FAILED %s:%d: %s == %s (%lld vs %lld)\n", __FILE__, __LINE__, #a, #b, static_cast<long long>(va_), \
                  static_cast<long long>(vb_));                                                                       \
    }                                                                                                                 \
  } while (0)

using hsrgeom::index_t;

double p2(int e) { return std::ldexp(1.0, e); }

int sgn(long long v) { return (v > 0) - (v < 0); }

// ---- exact predicates -----------------------------------------------------------------------

void test_exact_sign_known() {
  using hsrgeom::exact_sign;
  {  // an exact tie of small integers: 3*7 + 5*11 = 76
    const double a[] = {3, 5}, x[] = {7, 11};
    CHECK_EQ(exact_sign(a, x, 76.0, 2), 0);
    CHECK_EQ(exact_sign(a, x, 75.0, 2), 1);
    CHECK_EQ(exact_sign(a, x, 77.0, 2), -1);
  }
  {  // 1 + 2^-60 rounds to 1 in double: the rounded value ties with b = 1, the exact one does not
    const double a[] = {1, 1}, x[] = {1, p2(-60)};
    CHECK(1.0 + p2(-60) == 1.0);
    CHECK_EQ(exact_sign(a, x, 1.0, 2), 1);
    const double y[] = {1, -p2(-60)};
    CHECK_EQ(exact_sign(a, y, 1.0, 2), -1);
  }
  {  // products that overflow double (2^2000): inf - inf is NaN, the exact sum is 0
    const double a[] = {p2(1000), -p2(1000)}, x[] = {p2(1000), p2(1000)};
    CHECK(std::isnan(a[0] * x[0] + a[1] * x[1]));
    CHECK_EQ(exact_sign(a, x, 0.0, 2), 0);
    const double y[] = {p2(1000), p2(1000) * (1 - p2(-53))};  // 2^2000 (1 - (1 - 2^-53)) = 2^1947
    CHECK_EQ(exact_sign(a, y, 0.0, 2), 1);
    CHECK_EQ(exact_sign(a, y, std::numeric_limits<double>::max(), 2), 1);  // 2^1947 > every double
    CHECK_EQ(exact_sign(a, y, -std::numeric_limits<double>::max(), 2), 1);
  }
  {  // the largest products (2^2046 each) cancel; a product of two subnormals (2^-2148) decides
    const double big = p2(1023), tiny = std::numeric_limits<double>::denorm_min();
    const double a[] = {big, big, -big, -big, tiny}, x[] = {big, big, big, big, tiny};
    CHECK(tiny * tiny == 0.0);
    CHECK_EQ(exact_sign(a, x, 0.0, 5), 1);
    const double y[] = {big, big, big, big, -tiny};
    CHECK_EQ(exact_sign(a, y, 0.0, 5), -1);
    const double z[] = {big, big, big, big, 0};
    CHECK_EQ(exact_sign(a, z, 0.0, 5), 0);
  }
  {  // infinite offsets: every finite <a, x> is below +inf and above -inf
    const double a[] = {p2(1000)}, x[] = {p2(1000)};
    const double inf = std::numeric_limits<double>::infinity();
    CHECK_EQ(exact_sign(a, x, inf, 1), -1);
    CHECK_EQ(exact_sign(a, x, -inf, 1), 1);
  }
  {  // float coordinates: 2^-24 is lost in float(1 + 2^-24) but not in the exact sum
    const double a[] = {1, 1};
    const float x[] = {1.0f, std::ldexp(1.0f, -24)};
    CHECK_EQ(exact_sign(a, x, 1.0, 2), 1);
  }
  {  // many equal terms: carries across limbs (2^20 copies of 2^1000 * 2^1000 = 2^2020)
    const int d = 1 << 10;
    std::vector<double> a(d, p2(1000)), x(d, p2(1000));
    CHECK_EQ(exact_sign(a.data(), x.data(), 0.0, d), 1);
    for (int i = 0; i < d; i += 2) a[i] = -a[i];
    CHECK_EQ(exact_sign(a.data(), x.data(), 0.0, d), 0);
  }
}

// Random small integers (|v| < 2^20, d <= 6: the exact value fits int64 and is exact in double),
// scaled by powers of two over the whole exponent range; b is the exact value, or one off it, so
// a third of the cases are exact ties.
void test_exact_sign_random() {
  std::mt19937_64 rng(19);
  std::uniform_int_distribution<int> val(-(1 << 20) + 1, (1 << 20) - 1), dim(1, 6), ex(-1000, 1000), off(-1, 1);
  int mismatches = 0;
  for (int it = 0; it < 20000; ++it) {
    const int d = dim(rng);
    int ea = ex(rng), exx = ex(rng);
    if (std::abs(ea + exx) > 950) exx = -ea / 2;  // keep b = value * 2^(ea + ex) a normal double
    double a[6], x[6];
    long long ai[6], dot = 0;
    for (int i = 0; i < d; ++i) {
      const int xi = val(rng);
      ai[i] = val(rng);
      a[i] = std::ldexp(static_cast<double>(ai[i]), ea);
      x[i] = std::ldexp(static_cast<double>(xi), exx);
      dot += ai[i] * xi;
    }
    const int o = off(rng);
    const double b = std::ldexp(static_cast<double>(dot + o), ea + exx);  // |dot| < 2^43: exact
    if (hsrgeom::exact_sign(a, x, b, d) != sgn(-o)) ++mismatches;
    // exact_compare / compare_dots against a second integer vector
    double y[6];
    long long doty = 0;
    for (int i = 0; i < d; ++i) {
      const int yi = val(rng);
      y[i] = std::ldexp(static_cast<double>(yi), exx);
      doty += ai[i] * yi;
    }
    if (it % 3 == 0) std::copy(x, x + d, y), doty = dot;  // ties
    if (hsrgeom::exact_compare(a, x, y, d) != sgn(dot - doty)) ++mismatches;
    if (hsrgeom::compare_dots(a, x, y, d) != sgn(dot - doty)) ++mismatches;
  }
  CHECK_EQ(mismatches, 0);
}

// exact_sign's two paths (expansions for d <= 4 away from overflow, the wide accumulator
// otherwise) against each other on full 53-bit mantissas, where rounded sums are wrong: b is the
// rounded <a, x>, a neighbour of it, or an exact cancellation's 0, and the magnitudes sweep the
// fast path's limits (products near 2^-900 and 2^1000) so that both sides of them are checked.
void test_exact_sign_paths() {
  std::mt19937_64 rng(23);
  std::uniform_real_distribution<double> mant(1.0, 2.0);
  std::uniform_int_distribution<int> dim(1, 4), ex(-470, 510), pick(0, 4), flip(0, 1);
  int mismatches = 0, ties = 0;
  for (int it = 0; it < 200000; ++it) {
    const int d = dim(rng);
    double a[4], x[4];
    for (int i = 0; i < d; ++i) {
      a[i] = std::ldexp(mant(rng), ex(rng)) * (flip(rng) ? -1 : 1);
      x[i] = std::ldexp(mant(rng), ex(rng)) * (flip(rng) ? -1 : 1);
      if (pick(rng) == 0) x[i] = 0;
    }
    if (d >= 2 && pick(rng) == 0) x[1] = -x[0], a[1] = a[0];  // two products cancel exactly
    double s = 0;
    for (int i = 0; i < d; ++i) s += a[i] * x[i];
    double b = std::isfinite(s) ? s : 0.0;
    const int p = pick(rng);
    if (p == 1) b = std::nextafter(b, 1e308);
    if (p == 2) b = std::nextafter(b, -1e308);
    const int fast = hsrgeom::exact_sign(a, x, b, d), wide = hsrgeom::detail::exact_sign_wide(a, x, b, d);
    mismatches += fast != wide;
    ties += wide == 0;
  }
  CHECK_EQ(mismatches, 0);
  CHECK(ties > 1000);  // the cancellations and the exact sums of few terms give true ties
}

void test_compare_and_filter() {
  const double q[] = {1, 1}, x[] = {1, p2(-60)}, y[] = {1, 0};
  CHECK_EQ(hsrgeom::exact_compare(q, x, y, 2), 1);
  CHECK_EQ(hsrgeom::exact_compare(q, y, x, 2), -1);
  CHECK_EQ(hsrgeom::exact_compare(q, x, x, 2), 0);
  CHECK_EQ(hsrgeom::compare_dots(q, x, y, 2), 1);
  CHECK_EQ(hsrgeom::compare_dots(q, y, x, 2), -1);
  // the filter never decides on an overflowed score
  const double inf = std::numeric_limits<double>::infinity();
  CHECK_EQ(hsrgeom::filter_decide(inf, 0.0, 1.0), 0);
  CHECK_EQ(hsrgeom::filter_decide(-inf, 0.0, 1.0), 0);
  CHECK_EQ(hsrgeom::filter_decide(std::nan(""), 0.0, 1.0), 0);
  CHECK_EQ(hsrgeom::filter_decide(2.0, 0.0, 1.0), 1);
  CHECK_EQ(hsrgeom::filter_decide(-2.0, 0.0, 1.0), -1);
  CHECK_EQ(hsrgeom::filter_decide(0.5, 0.0, 1.0), 0);
  // filter_flags (the trees' branch-free leaves) gives filter_decide's cases on every pair
  const double big = std::numeric_limits<double>::max();
  const double vals[] = {-inf, -big, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, big, inf, std::nan("")};
  for (double sv : vals)
    for (double bv : {-big, -1.0, 0.0, 1.0, big})
      for (double mv : {0.0, 1.0, inf}) {
        bool in = false, undecided = false;
        hsrgeom::filter_flags(sv, bv, mv, in, undecided);
        const int f = hsrgeom::filter_decide(sv, bv, mv);
        CHECK(in == (f > 0) && undecided == (f == 0));
      }
  // in_halfspace: an undecided filter goes to exact arithmetic and counts it
  std::int64_t exact = 0;
  CHECK(hsrgeom::in_halfspace(1.0, 1e-12, q, x, 1.0, 2, &exact));  // 1 + 2^-60 >= 1
  CHECK(!hsrgeom::in_halfspace(1.0, 1e-12, q, x, 1.0 + p2(-52), 2, &exact));
  CHECK_EQ(exact, 2);
  CHECK(hsrgeom::in_halfspace(5.0, 1e-12, q, x, 1.0, 2, &exact));  // the filter decides
  CHECK_EQ(exact, 2);
}

void test_orient2d() {
  {  // small integers: the cross product is exact
    const double p[] = {0, 0}, q[] = {4, 0}, r[] = {0, 3}, s[] = {8, 0};
    CHECK_EQ(hsrgeom::orient2d(p, q, r), 1);
    CHECK_EQ(hsrgeom::orient2d(p, r, q), -1);
    CHECK_EQ(hsrgeom::orient2d(p, q, s), 0);
    CHECK_EQ(hsrgeom::orient2d(p, p, r), 0);
  }
  {  // nearly collinear: r is one ulp (2^-53) above the line y = x through p and q
    const double p[] = {0, 0}, q[] = {1, 1}, r[] = {0.5, 0.5 + p2(-53)}, s[] = {0.5, 0.5};
    CHECK_EQ(hsrgeom::orient2d(p, q, r), 1);
    CHECK_EQ(hsrgeom::orient2d_exact(p, q, r), 1);
    CHECK_EQ(hsrgeom::orient2d(p, q, s), 0);
  }
  {  // huge and tiny coordinates: powers of two scale the orientation without changing it
    for (int e : {-1070, -600, 0, 400, 500}) {
      const double p[] = {0, 0}, q[] = {p2(e) * 4, p2(e) * 0}, r[] = {p2(e) * 1, p2(e) * 3};
      CHECK_EQ(hsrgeom::orient2d(p, q, r), 1);
      CHECK_EQ(hsrgeom::orient2d(q, p, r), -1);
    }
  }
}

// ---- sort_ids -------------------------------------------------------------------------------

// Sorts `ids` (distinct, in [0, n)) with sort_ids (in place) and sort_ids_into (into a separate
// buffer, twice: the per-thread bitmap and scratch must be left clean), scores (when
// with_scores) a function of the id, and checks the results against std::sort.
void check_sort(std::vector<std::int64_t> ids, index_t n, bool with_scores) {
  auto score = [](std::int64_t id) { return static_cast<double>(id) * 0.5 - 3.0; };
  auto make = [&] {
    hsrgeom::IdList l;
    l.ids.assign(ids.begin(), ids.end());
    if (with_scores)
      for (auto id : ids) l.scores.push_back(score(id));
    return l;
  };
  std::vector<std::int64_t> want = ids;
  std::sort(want.begin(), want.end());
  auto same = [&](const std::int64_t* got_ids, const double* got_scores, size_t k) {
    bool ok = k == want.size() && std::equal(want.begin(), want.end(), got_ids);
    for (size_t i = 0; ok && got_scores && i < k; ++i) ok = got_scores[i] == score(got_ids[i]);
    return ok;
  };
  hsrgeom::IdList l = make();
  hsrgeom::sort_ids(l, n);
  CHECK(same(l.ids.data(), with_scores ? l.scores.data() : nullptr, l.ids.size()));
  CHECK(with_scores || l.scores.empty());
  for (int round = 0; round < 2; ++round) {
    hsrgeom::IdList in = make();
    std::vector<std::int64_t> dst(ids.size() + 1, -7);
    std::vector<double> dsc(ids.size() + 1, -7.0);
    hsrgeom::sort_ids_into(in, n, dst.data(), with_scores ? dsc.data() : nullptr);
    CHECK(same(dst.data(), with_scores ? dsc.data() : nullptr, ids.size()));
    CHECK(dst.back() == -7 && dsc.back() == -7.0);  // nothing written past k
  }
}

// detail::radix_ids32 alone on ids < 2^bits (sort_ids_into sends few ids to the bucket sort).
void check_radix32(std::vector<std::int64_t> ids, int bits) {
  std::vector<std::int64_t> want = ids, dst(ids.size() + 1, -7);
  std::sort(want.begin(), want.end());
  hsrgeom::detail::radix_ids32(ids.data(), ids.size(), bits, dst.data());
  CHECK(std::equal(want.begin(), want.end(), dst.begin()));
  CHECK(dst.back() == -7);
}

std::vector<std::int64_t> distinct_ids(std::mt19937_64& rng, size_t k, std::int64_t lo, std::int64_t hi) {
  std::vector<std::int64_t> v;
  if (static_cast<std::int64_t>(k) * 2 > hi - lo) {  // dense: shuffle the whole range, take k
    v.resize(static_cast<size_t>(hi - lo));
    std::iota(v.begin(), v.end(), lo);
    std::shuffle(v.begin(), v.end(), rng);
    v.resize(k);
    return v;
  }
  std::uniform_int_distribution<std::int64_t> u(lo, hi - 1);
  std::vector<std::int64_t> sorted;
  while (v.size() < k) {
    const std::int64_t id = u(rng);
    if (std::binary_search(sorted.begin(), sorted.end(), id)) continue;
    sorted.insert(std::upper_bound(sorted.begin(), sorted.end(), id), id);
    v.push_back(id);
  }
  return v;
}

// network_sort_ids on any values < 2^32, duplicates and 2^32 - 1 (its padding) among them:
// ascending, nothing written past k.
void test_sort_network() {
  std::mt19937_64 rng(11);
  for (size_t k = 0; k <= hsrgeom::kNetworkMaxIds; ++k)
    for (std::uint64_t range : {std::uint64_t{3}, std::uint64_t{1000}, std::uint64_t{1} << 32}) {
      std::vector<std::int64_t> ids(k), dst(k + 1, -7);
      for (auto& id : ids) id = static_cast<std::int64_t>(UINT32_MAX - rng() % range);
      if (!hsrgeom::network_sort_ids(ids.data(), k, dst.data())) return;  // (no vector extensions)
      std::sort(ids.begin(), ids.end());
      CHECK(std::equal(ids.begin(), ids.end(), dst.begin()) && dst[k] == -7);
    }
}

void test_sort_ids() {
  std::mt19937_64 rng(7);
  // trivial sizes
  check_sort({}, 10, false);
  check_sort({}, 10, true);
  check_sort({5}, 10, true);
  // the sorting network: up to kNetworkMaxIds ids without scores, n <= 2^32 (every size, random
  // and descending, ids at both ends of [0, 2^32)); then the comparison sort for fewer than 32
  // ids above 2^32
  const std::int64_t two32 = std::int64_t{1} << 32;
  for (size_t k = 0; k <= hsrgeom::kNetworkMaxIds; ++k) {
    check_sort(distinct_ids(rng, k, 0, 1000000), 1000000, false);
    std::vector<std::int64_t> down(k);
    std::iota(down.rbegin(), down.rend(), std::int64_t{0});
    check_sort(down, std::max<std::int64_t>(static_cast<std::int64_t>(k), 1), false);
  }
  for (size_t k : {2, 8, 9, 100, 128}) {
    auto ids = distinct_ids(rng, k - 2, 1, two32 - 1);
    ids.push_back(two32 - 1);
    ids.push_back(0);
    check_sort(ids, two32, false);
  }
  // with scores: ids < 2^25 sorted with their positions (ids at both ends of [0, 2^25)); above,
  // the radix sort
  const std::int64_t two25 = std::int64_t{1} << 25;
  for (size_t k = 1; k <= hsrgeom::kNetworkMaxIds; ++k) check_sort(distinct_ids(rng, k, 0, 1000000), 1000000, true);
  for (size_t k : {2, 100, 128}) {
    auto ids = distinct_ids(rng, k - 2, 1, two25 - 1);
    ids.push_back(two25 - 1);
    ids.push_back(0);
    check_sort(ids, two25, true);
    ids.back() = two25;
    check_sort(ids, two25 + 1, true);
  }
  check_sort({3, 1, 2}, 4, false);
  check_sort(distinct_ids(rng, 31, 0, std::int64_t{1} << 40), std::int64_t{1} << 40, false);
  // bitmap: ids without scores, at least n / 32 of them (here also the whole range, and ids
  // at both ends of [0, n))
  check_sort(distinct_ids(rng, 1000, 0, 2000), 2000, false);
  check_sort(distinct_ids(rng, 160, 0, 5120), 5120, false);          // exactly n / 32
  check_sort(distinct_ids(rng, 40000, 0, 1000000), 1000000, false);  // n / 25, ids < 2^20
  check_sort(distinct_ids(rng, 200, 0, 1000), 1000, false);          // a bitmap smaller than the last one
  check_sort(distinct_ids(rng, 130, 0, 130), 130, false);
  check_sort(distinct_ids(rng, 64, 0, 64), 64, false);
  {
    auto ids = distinct_ids(rng, 400, 1, 12799);
    ids.push_back(0);
    ids.push_back(12799);
    check_sort(ids, 12800, false);
  }
  // radix: many ids sparse in [0, n), or any ids with scores (even a few); 8-bit digits below
  // 2048 ids, up to 11 bits from there
  check_sort(distinct_ids(rng, 1000, 0, 10000000), 10000000, false);
  check_sort(distinct_ids(rng, 20000, 0, 1000000), 1000000, false);   // 2 passes of 10 bits
  check_sort(distinct_ids(rng, 20000, 0, 1000000), 1000000, true);
  check_sort(distinct_ids(rng, 2048, 0, 100000000), 100000000, true);  // 3 passes of 9 bits
  check_sort(distinct_ids(rng, 4000, 0, 4000), 4000, true);            // 2 passes of 6 bits
  check_sort(distinct_ids(rng, 5, 0, 100), 100, true);
  check_sort(distinct_ids(rng, 31, 0, 1000000), 1000000, true);
  check_sort(distinct_ids(rng, 1000, 0, 2000), 2000, true);  // 2 passes (ids < 2^11)
  check_sort(distinct_ids(rng, 200, 0, 256), 256, true);     // 1 pass: the result is copied back
  check_sort(distinct_ids(rng, 5000, 0, std::int64_t{1} << 40), std::int64_t{1} << 40, true);  // 5 passes
  // radix on 32-bit words (no scores, n <= 2^32, more than kBucketSortMaxIds ids or uneven
  // buckets): passes by the cost model (histograms counted by 1, 2, 3 or 4 and more passes),
  // digits that are the same for every id skipped (one live pass, then the copy to dst). Checked through sort_ids_into and, for the pass
  // structures only a few ids give, on radix_ids32 itself.
  check_radix32(distinct_ids(rng, 100, 0, 1000000), 20);              // 3 passes of 7 bits
  check_sort(distinct_ids(rng, 5000, 0, 1000000), 1000000, false);    // 2 passes of 10 bits
  check_radix32(distinct_ids(rng, 100, 0, 128), 20);                  // 1 live pass of 3 (7 bits)
  check_radix32(distinct_ids(rng, 1000, 0, 2048), 22);                // 2 live passes of 3 (8 bits)
  {  // a digit that all ids but a few share still moves them
    auto ids = distinct_ids(rng, 190, 0, 256);
    for (auto id : distinct_ids(rng, 10, 256, 1000000)) ids.push_back(id);
    check_radix32(ids, 20);
    check_sort(ids, 1000000, false);  // uneven buckets on [0, n) and on the range: the radix sort
  }
  check_radix32(distinct_ids(rng, 1000, 0, two32), 32);               // 4 passes of 8 bits
  {
    auto ids = distinct_ids(rng, 5000, 1, two32 - 1);                   // 3 passes of 11 bits
    ids.push_back(0);
    ids.push_back(two32 - 1);
    check_sort(ids, two32, false);
  }
  // bucket pass + insertion sort (no scores, kNetworkMaxIds + 1..kBucketSortMaxIds ids, even
  // buckets; from 32 ids above 2^32)
  static_assert(hsrgeom::kBucketSortMaxIds == 255, "the cases below are sized for 255");
  check_sort(distinct_ids(rng, 129, 0, 1000000), 1000000, false);
  check_sort(distinct_ids(rng, 32, 0, std::int64_t{1} << 40), std::int64_t{1} << 40, false);
  check_sort(distinct_ids(rng, 200, 0, 10000000), 10000000, false);
  check_sort(distinct_ids(rng, 255, 0, 10000000), 10000000, false);
  check_sort(distinct_ids(rng, 256, 0, 10000000), 10000000, false);   // one more: radix
  check_sort(distinct_ids(rng, 200, 0, std::int64_t{1} << 40), std::int64_t{1} << 40, false);
  {
    auto ids = distinct_ids(rng, 198, 1, two32 - 1);  // both ends of [0, n)
    ids.push_back(0);
    ids.push_back(two32 - 1);
    check_sort(ids, two32, false);
  }
  {  // a contiguous run of ids (a sorted input's half-plane): uneven on [0, n), even on its range
    std::vector<std::int64_t> ids(250);
    std::iota(ids.begin(), ids.end(), 777777);
    std::shuffle(ids.begin(), ids.end(), rng);
    check_sort(ids, 10000000, false);
    std::sort(ids.begin(), ids.end(), std::greater<>());  // descending: the insertion sort's worst order
    check_sort(ids, 10000000, false);
  }
  {  // crowded ids and one far away: uneven on both, so the radix sort
    auto ids = distinct_ids(rng, 200, 0, 800);
    ids.push_back(9999999);
    check_sort(ids, 10000000, false);
  }
  check_sort(distinct_ids(rng, 5000, two32 - 10000, two32 + 1), two32 + 1, false);  // 33 bits: 64-bit words
  check_sort(distinct_ids(rng, 5000, 0, std::int64_t{1} << 40), std::int64_t{1} << 40, false);
  // passes whose digit is the same for every id are skipped (here bytes 1 and 2 of the ids)
  check_sort(distinct_ids(rng, 200, std::int64_t{5} << 24, (std::int64_t{5} << 24) + 256), std::int64_t{1} << 30, true);
  check_sort(distinct_ids(rng, 200, std::int64_t{5} << 24, (std::int64_t{5} << 24) + 256), std::int64_t{1} << 30,
             false);
  // already sorted and reversed input
  {
    std::vector<std::int64_t> v(3000);
    std::iota(v.begin(), v.end(), std::int64_t{100000});
    check_sort(v, 1 << 20, true);
    std::reverse(v.begin(), v.end());
    check_sort(v, 1 << 20, true);
    check_sort(v, 1 << 20, false);
  }
}

// ---- top-k ----------------------------------------------------------------------------------

using Cands = std::vector<hsrgeom::TopKCollector<double>::Cand>;

// Exact top-k of integer points (scores exact in double) by the definition: largest <q, x>
// first, ties by smaller id.
std::vector<std::int64_t> reference_topk(const std::vector<double>& q, const std::vector<double>& pts, int d,
                                         index_t k) {
  const index_t n = static_cast<index_t>(pts.size()) / d;
  std::vector<std::pair<double, std::int64_t>> s;
  for (index_t i = 0; i < n; ++i) {
    double v = 0;
    for (int t = 0; t < d; ++t) v += q[t] * pts[i * d + t];
    s.push_back({-v, i});
  }
  std::sort(s.begin(), s.end());
  std::vector<std::int64_t> ids;
  for (index_t r = 0; r < std::min(k, n); ++r) ids.push_back(s[r].second);
  return ids;
}

std::vector<std::int64_t> ids_of(const Cands& c) {
  std::vector<std::int64_t> v;
  for (const auto& x : c) v.push_back(x.id);
  return v;
}

// Feeds every point (in the order `order`) with a rounded score and a valid error bound.
Cands run_topk(const std::vector<double>& q, const std::vector<double>& pts, int d, index_t k,
               const std::vector<index_t>& order, double err) {
  hsrgeom::TopKCollector<double> c(q.data(), d, k);
  for (index_t i : order) {
    double s = 0;
    for (int t = 0; t < d; ++t) s += q[t] * pts[i * d + t];
    c.push(s, err, i, &pts[i * d]);
  }
  return c.finish();
}

// filter.hpp: filter_blocks' slots (kWantSlots) name the same candidates as its ids, on the
// vector path and the scalar tail, ties decided exactly; IdOrder gives the ids of any subset of
// a list's first cnt slots ascending, and ranks no list longer than kMaxList; report_band and
// report_ids leave up to kNetworkMaxIds ids in list order.
void test_id_order() {
  using Block = hsrgeom::CandIdBlock<double, 2>;
  std::mt19937_64 rng(11);
  hsrgeom::IdOrder order;
  std::vector<std::vector<Block>> lists;
  const std::int64_t lens[] = {0, 1, 7, 8, 9, 100, 1000, 5000, 65535, 65536};
  for (std::int64_t len : lens) {
    std::vector<Block> blocks((len + 7) / 8);
    std::vector<std::int64_t> ids = distinct_ids(rng, static_cast<int>(len), 0, 4 * len + 10);
    std::shuffle(ids.begin(), ids.end(), rng);
    for (std::int64_t i = 0; i < len; ++i) {
      blocks[i / 8].id[i % 8] = static_cast<std::uint32_t>(len == 1000 && i == 17 ? UINT32_MAX : ids[i]);  // one id 2^32 - 1
      blocks[i / 8].x[0][i % 8] = static_cast<double>(rng() % 5);  // small integers: ties with b
      blocks[i / 8].x[1][i % 8] = static_cast<double>(rng() % 5);
    }
    order.add_list(blocks.data(), len);
    lists.push_back(std::move(blocks));
  }
  order.done();
  const double a[2] = {1, -1};
  for (size_t l = 0; l < lists.size(); ++l) {
    const std::int64_t len = lens[l];
    const Block* c = lists[l].data();
    for (std::int64_t cnt : {std::int64_t{1}, len / 16, len / 5, len / 4 + 1, len / 2, len}) {
      if (cnt <= 0 || cnt > len) continue;
      const std::int64_t band = order.band(static_cast<std::int64_t>(l), cnt);
      // a sorted report filters up to kNetworkMaxIds candidates in list order
      CHECK_EQ(order.report_band(static_cast<std::int64_t>(l), cnt),
               cnt > static_cast<std::int64_t>(hsrgeom::kNetworkMaxIds) ? band : -1);
      if (len > hsrgeom::IdOrder::kMaxList) {
        CHECK_EQ(band, -1);
        continue;
      }
      // the shortest ranked prefix holding cnt is used unless it is over 4 cnt + 64 (only the
      // L / 16 prefix can be: the others are < 2 cnt + 2), its bitmap and id lines then sparse
      const std::int64_t p16 = (len + 15) / 16;
      CHECK_EQ(band >= 0, !(p16 >= cnt && p16 > 4 * cnt + 64));
      if (band < 0) continue;
      for (double b : {-1.0, 0.0, 2.0}) {
        std::vector<std::int64_t> ids(cnt + 8), sids(cnt + 8), want;
        std::vector<index_t> slots(cnt + 8);
        auto decide = [&](const Block& q, int i) { return q.x[0][i] - q.x[1][i] >= b; };  // exact: small integers
        const index_t w = hsrgeom::filter_blocks<1, 2>(a, b, 0.5, c, cnt, nullptr, ids.data(), decide);
        const index_t ws = hsrgeom::filter_blocks<hsrgeom::kWantSlots, 2>(a, b, 0.5, c, cnt, slots.data(), sids.data(), decide);
        CHECK_EQ(ws, w);
        for (std::int64_t i = 0; i < cnt; ++i)
          if (c[i / 8].x[0][i % 8] - c[i / 8].x[1][i % 8] >= b) want.push_back(c[i / 8].id[i % 8]);
        CHECK_EQ(static_cast<std::int64_t>(want.size()), w);
        bool same_ids = true;  // the slots name the ids, both in list order
        for (index_t i = 0; i < std::min(w, ws); ++i)
          same_ids &= c[slots[i] / 8].id[slots[i] % 8] == ids[i] && sids[i] == ids[i];
        CHECK(same_ids);
        std::sort(want.begin(), want.end());
        std::vector<std::int64_t> got(w + 9, -7);  // 8 spare slots, then a guard
        order.ids_ascending(band, slots.data(), ws, got.data());
        CHECK_EQ(got[w + 8], -7);
        got.resize(w);
        CHECK(got == want);
        // report_ids: ascending past kNetworkMaxIds ids, else in list order (filter_blocks' ids)
        std::vector<std::int64_t> rep(sids.begin(), sids.begin() + w + 8);
        order.report_ids(band, slots.data(), ws, rep.data());
        rep.resize(w);
        ids.resize(w);
        CHECK(rep == (w > static_cast<index_t>(hsrgeom::kNetworkMaxIds) ? want : ids));
      }
    }
  }
  // a second pass over the same bitmap: it was left clear
  std::vector<index_t> one = {0};
  std::vector<std::int64_t> got(9);
  order.ids_ascending(order.band(1, 1), one.data(), 1, got.data());
  CHECK_EQ(got[0], lists[1][0].id[0]);
}

// filter.hpp filter_rows (the d = 2, 3 trees' leaves): the same in / unsure bits as
// filter_flags on dot_f64<D>, row by row, for every w <= 64 (vector steps and the scalar tail),
// on random rows mixed with values whose products overflow, NaN and +-inf, float and double;
// and kept_ids: the ids at the set bits, in order.
template <class T, int D>
void test_filter_rows_of() {
  std::mt19937_64 g(7);
  std::normal_distribution<double> nd;
  const double inf = std::numeric_limits<double>::infinity();
  const double big = std::is_same_v<T, float> ? 3e38 : 1e300;
  std::vector<T> x(64 * D);
  for (int trial = 0; trial < 400; ++trial) {
    for (auto& v : x) {
      const int kind = static_cast<int>(g() % 16);
      v = static_cast<T>(kind == 0 ? big * nd(g) : kind == 1 ? inf : kind == 2 ? std::nan("") : kind == 3 ? 0.0 : nd(g));
    }
    double a[D];
    for (int t = 0; t < D; ++t) a[t] = trial % 5 == 0 ? 1e300 * nd(g) : nd(g);
    const double b = trial % 7 == 0 ? 0.0 : nd(g), margin = trial % 3 == 0 ? 0.0 : 0.5 * std::fabs(nd(g));
    for (int w = 0; w <= 64; ++w) {
      std::uint64_t in = 0, unsure = 0, in_ref = 0, unsure_ref = 0;
      hsrgeom::filter_rows<D>(a, b, margin, x.data(), w, in, unsure);
      for (int t = 0; t < w; ++t) {
        bool yes, undecided;
        hsrgeom::filter_flags(hsrgeom::dot_f64<D>(a, x.data() + t * D, D), b, margin, yes, undecided);
        in_ref |= static_cast<std::uint64_t>(yes) << t;
        unsure_ref |= static_cast<std::uint64_t>(undecided) << t;
      }
      CHECK(in == in_ref && unsure == unsure_ref);
    }
  }
  std::vector<std::int64_t> ids(64), out(64 + 8);
  std::iota(ids.begin(), ids.end(), 1000);
  for (int trial = 0; trial < 200; ++trial) {
    const std::uint64_t bits = trial == 0 ? ~std::uint64_t{0} : trial == 1 ? 0 : g() & g();
    const int got = hsrgeom::kept_ids(ids.data(), bits, out.data());
    std::vector<std::int64_t> want;
    for (int t = 0; t < 64; ++t)
      if (bits >> t & 1) want.push_back(ids[t]);
    CHECK(got == static_cast<int>(want.size()) && std::equal(want.begin(), want.end(), out.begin()));
  }
}

void test_filter_rows() {
  test_filter_rows_of<float, 2>();
  test_filter_rows_of<float, 3>();
  test_filter_rows_of<double, 2>();
  test_filter_rows_of<double, 3>();
}

// filter.hpp filter_rows32 (float32 leaves of the d = 2, 3 trees, scored in float32): every
// decided row decided right (exact_sign), rows with a non-finite value never decided, rows past
// the returned count untouched; on random rows mixed with huge, subnormal, tied (b = a row's
// score) and non-finite values, normals of every scale, for every w <= 64.
template <int D>
void test_filter_rows32_of() {
  std::mt19937_64 g(11);
  std::normal_distribution<double> nd;
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<float> x(64 * D);
  int decided = 0, rows = 0;
  for (int trial = 0; trial < 600; ++trial) {
    const int style = trial % 6;  // 0: plain, 1: huge values, 2: subnormal, 3: non-finite, 4: ties, 5: grid
    for (auto& v : x) {
      const int kind = static_cast<int>(g() % 8);
      double val = nd(g);
      if (style == 1 && kind == 0) val *= 3e38;
      if (style == 2 && kind < 4) val *= 1e-40;
      if (style == 3 && kind == 0) val = g() % 2 ? inf : std::nan("");
      if (style == 5) val = static_cast<double>(static_cast<int>(g() % 5) - 2);
      v = static_cast<float>(val);
    }
    double a[D];
    const double scale = trial % 4 == 0 ? 1e30 : trial % 4 == 1 ? 1e-30 : 1.0;
    for (int t = 0; t < D; ++t) a[t] = static_cast<float>(style == 5 ? static_cast<double>(static_cast<int>(g() % 5) - 2) : scale * nd(g));
    double xnorm = 0;
    for (int k = 0; k < 64; ++k) {
      const double nk = hsrgeom::norm_up(x.data() + k * D, D);
      if (std::isfinite(nk)) xnorm = std::max(xnorm, nk);
    }
    double b = nd(g) * scale;
    if (style == 4 || style == 5) b = hsrgeom::dot_f64<D>(a, x.data() + (g() % 64) * D, D);  // a tie (or close)
    if (!std::isfinite(b)) b = 0;
    const double na = hsrgeom::norm_up(a, D);
    hsrgeom::Rows32 r;
    CHECK(r.make(a, D, b, na, xnorm));
    for (int w = 0; w <= 64; ++w) {
      std::uint64_t in = 0, unsure = 0;
      const int done = hsrgeom::filter_rows32<D>(r, x.data(), w, in, unsure);
      CHECK(done >= 0 && done <= w);
      const std::uint64_t part = done == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << done) - 1;
      CHECK((in & ~part) == 0 && (unsure & ~part) == 0 && (in & unsure) == 0);
      for (int t = 0; t < done; ++t) {
        const float* xt = x.data() + t * D;
        bool finite = true;
        for (int i = 0; i < D; ++i) finite = finite && std::isfinite(xt[i]);
        const bool is_in = in >> t & 1, is_unsure = unsure >> t & 1;
        if (!finite) {
          CHECK(is_unsure);
          continue;
        }
        ++rows;
        if (is_unsure) continue;
        ++decided;
        CHECK(is_in == (hsrgeom::exact_sign(a, xt, b, D) >= 0));
      }
    }
  }
  // without SIMD filter_rows32 decides nothing; with it most rows of these inputs are decided
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
  CHECK(decided > rows / 2);
#endif
  double a_wide[D] = {};
  a_wide[0] = 0.1;  // not a float32 value: make() refuses
  hsrgeom::Rows32 r;
  CHECK(!r.make(a_wide, D, 0.0, 1.0, 1.0));
}

void test_filter_rows32() {
  test_filter_rows32_of<2>();
  test_filter_rows32_of<3>();
}

// ReportSink's room (query.hpp ids_room): ids written there and handed over stay in place; a
// room not used by the next range() is dropped; sinks with scores or without room offer none.
void test_report_sink_room() {
  hsrgeom::IdList out;
  const double a[2] = {1, 0};
  hsrgeom::ReportSink<false> sink{out, a, 2};
  sink.point(7, static_cast<const double*>(nullptr), 0.0);
  std::int64_t* r = hsrgeom::ids_room(sink, 10);
  CHECK(r == out.ids.data() + 1);
  r[0] = 3, r[1] = 5;
  sink.range(r, static_cast<const double*>(nullptr), 2);
  CHECK(out.ids == hsrgeom::IdVector({7, 3, 5}));
  hsrgeom::ids_room(sink, 10);  // not used: the next range() copies its own ids
  const std::int64_t other[2] = {1, 2};
  sink.range(other, static_cast<const double*>(nullptr), 2);
  CHECK(out.ids == hsrgeom::IdVector({7, 3, 5, 1, 2}));
  sink.range(other, static_cast<const double*>(nullptr), 1);
  CHECK(out.ids == hsrgeom::IdVector({7, 3, 5, 1, 2, 1}));
  hsrgeom::IdList out2;
  hsrgeom::ReportSink<true> scored{out2, a, 2};
  CHECK(hsrgeom::ids_room(scored, 4) == nullptr);
  hsrgeom::CountSink count;
  CHECK(hsrgeom::ids_room(count, 4) == nullptr);
}

// OutputPool (buffer.hpp): a freed output block of >= 1 MiB is handed to the next output of its
// size class (or one up to 25 % smaller), never across the huge / not-huge line, and at most
// kMaxBytes are kept. (The pool is process-wide: this test empties it first.)
void test_output_pool() {
  using Pool = hsrgeom::OutputPool;
  CHECK(Pool::rounded(Pool::kFrom) == Pool::kFrom);
  CHECK(Pool::rounded(Pool::kFrom + 1) == Pool::kFrom + Pool::kFrom / 8);
  for (std::size_t bytes : {std::size_t{1} << 20, std::size_t{3} << 20, std::size_t{40} << 20, std::size_t{1} << 30}) {
    const std::size_t r = Pool::rounded(bytes + 12345);
    CHECK(r >= bytes + 12345 && r <= (bytes + 12345) + (bytes + 12345) / 8 && Pool::rounded(r) == r);
  }
  Pool::clear();  // (what other tests left)
  const std::size_t n = (std::size_t{3} << 20) / sizeof(std::int64_t);
  const std::int64_t* first = nullptr;
  {
    hsrgeom::IdVector v(n);
    v[0] = 1;
    first = v.data();
  }
  {
    hsrgeom::IdVector v;
    v.reserve(n - 1000);  // the same class: the same block
    CHECK(v.data() == first);
    hsrgeom::ScoreVector w;
    w.reserve(n / 2);  // 1.5 MiB: another class, a block of its own
    CHECK(static_cast<const void*>(w.data()) != static_cast<const void*>(first));
  }
  void* huge = Pool::take(Pool::rounded(std::size_t{40} << 20), true);
  CHECK(huge == nullptr);  // (none kept of that kind)
  void* small = Pool::take(Pool::rounded(std::size_t{3} << 20), false);
  CHECK(small == first);
  Pool::release(small, false);
  // a block larger than kMaxBytes is not kept; blocks over the total evict the oldest
  CHECK(!Pool::give(nullptr, Pool::kMaxBytes + 1, true));
  std::vector<void*> kept;
  for (int i = 0; i < 3; ++i) {
    void* p = ::operator new(std::size_t{100} << 20);
    CHECK(Pool::give(p, std::size_t{100} << 20, false));
    kept.push_back(p);
  }
  void* second = Pool::take(std::size_t{100} << 20, false);  // the first was evicted (freed)
  void* third = Pool::take(std::size_t{100} << 20, false);
  CHECK(second == kept[1] && third == kept[2] && Pool::take(std::size_t{100} << 20, false) == nullptr);
  Pool::release(second, false);
  Pool::release(third, false);
  Pool::clear();
}

void test_topk_random() {
  std::mt19937_64 rng(11);
  std::uniform_int_distribution<int> small(-2, 2);  // many ties
  const int d = 3;
  const index_t n = 500;
  std::vector<double> pts(n * d);
  for (auto& v : pts) v = small(rng);
  std::vector<index_t> order(n);
  std::iota(order.begin(), order.end(), index_t{0});
  for (int rep = 0; rep < 20; ++rep) {
    std::vector<double> q = {double(small(rng)), double(small(rng)), double(small(rng))};
    std::shuffle(order.begin(), order.end(), rng);
    for (index_t k : {index_t{0}, index_t{1}, index_t{7}, index_t{50}, index_t{499}, n}) {
      // err: a valid bound (the scores are exact here), large enough to keep ties and more alive
      const Cands best = run_topk(q, pts, d, k, order, rep % 2 ? 0.0 : 0.75);
      CHECK(ids_of(best) == reference_topk(q, pts, d, k));
    }
  }
}

void test_topk_cases() {
  {  // k = 0: nothing, and write_topk writes nothing
    const std::vector<double> q = {1, 0}, pts = {1, 0, 2, 0};
    const Cands best = run_topk(q, pts, 2, 0, {0, 1}, 0.0);
    CHECK(best.empty());
    hsrgeom::write_topk(best, q.data(), 2, 0, 0, nullptr, nullptr);
  }
  {  // all points tied: the smallest ids, whatever the push order
    const index_t n = 300;
    const std::vector<double> q = {1, 2};
    std::vector<double> pts(n * 2, 1.0);
    std::vector<index_t> order(n);
    std::iota(order.rbegin(), order.rend(), index_t{0});  // n-1 .. 0
    const Cands best = run_topk(q, pts, 2, 5, order, 1e-12);
    CHECK((ids_of(best) == std::vector<std::int64_t>{0, 1, 2, 3, 4}));
  }
  {  // k = n: every point, best first (values 0, 2, -2, 2)
    const std::vector<double> q = {1, -1}, pts = {0, 0, 3, 1, 1, 3, 2, 0};
    const Cands best = run_topk(q, pts, 2, 4, {3, 2, 1, 0}, 0.0);
    CHECK((ids_of(best) == std::vector<std::int64_t>{1, 3, 0, 2}));
  }
  {  // rounded scores equal, exact values not (1 + 2^-60 vs 1): exact arithmetic orders them
    const std::vector<double> q = {1, 1}, pts = {1, 0, 1, p2(-60), 1, -p2(-60)};
    const Cands best = run_topk(q, pts, 2, 3, {0, 1, 2}, 1e-15);
    CHECK((ids_of(best) == std::vector<std::int64_t>{1, 0, 2}));
  }
  {  // overflowed scores (inf, NaN from inf - inf, -inf): exact comparisons decide
    const double h = p2(1000);
    const std::vector<double> q = {h, h};
    const std::vector<double> pts = {-h, -h,  // id 0: -2^2001 (score -inf)
                                     h,  -h,  // id 1: exactly 0 (score NaN)
                                     h,  h,   // id 2: 2^2001 (score +inf)
                                     0,  1};  // id 3: 2^1000 (finite score)
    hsrgeom::TopKCollector<double> c(q.data(), 2, 3);
    for (index_t i : {0, 1, 2, 3}) {
      const double s = q[0] * pts[2 * i] + q[1] * pts[2 * i + 1];
      c.push(s, std::fabs(s) * 1e-15, i, &pts[2 * i]);  // inf/NaN bounds for the overflowed ones
    }
    const Cands best = c.finish();
    CHECK((ids_of(best) == std::vector<std::int64_t>{2, 3, 1}));
    double scores[3];
    std::int64_t ids[3];
    hsrgeom::write_topk(best, q.data(), 2, 0, 3, scores, ids);
    CHECK(ids[0] == 2 && ids[1] == 3 && ids[2] == 1);
    CHECK(std::isinf(scores[0]) && scores[0] > 0);
    CHECK(scores[1] == h);
    CHECK(std::isnan(scores[2]));
  }
  {  // write_topk: fewer candidates than k is an internal error, not garbage
    const std::vector<double> q = {1, 0}, pts = {1, 0};
    const Cands best = run_topk(q, pts, 2, 1, {0}, 0.0);
    double scores[2];
    std::int64_t ids[2];
    bool threw = false;
    try {
      hsrgeom::write_topk(best, q.data(), 2, 0, 2, scores, ids);
    } catch (const std::logic_error&) {
      threw = true;
    }
    CHECK(threw);
  }
  {  // topk_score: left-to-right float64 sum of rounded products, no fma
    const double a[] = {1, 1, -1}, x[] = {p2(-60), 1, 1};
    CHECK(hsrgeom::topk_score(a, x, 3) == 0.0);  // (2^-60 + 1) - 1 rounds to 0
  }
}


// ---- query.hpp: sinks and drivers over a toy structure ----------------------------------------
// Integer points in the plane (exact scores). visit hands the first four points to sink.range
// when all four are inside, then the others point by point in descending stored order; ids are a
// permutation, so the emitted ids are not ascending. `handed` counts the points handed over.
struct Toy {
  std::vector<double> pts;
  std::vector<std::int64_t> ids;
  mutable hsrgeom::index_t handed = 0;
  hsrgeom::index_t size() const { return static_cast<hsrgeom::index_t>(ids.size()); }
  int dim() const { return 2; }
  double query_work(hsrgeom::index_t) const { return 0; }
  struct Query {
    double a[2];
    double b;
    const double* normal() const { return a; }
  };
  Query prepare(const double* n, double b) const { return {{n[0], n[1]}, b}; }
  bool inside(const Query& q, hsrgeom::index_t k) const { return q.a[0] * pts[2 * k] + q.a[1] * pts[2 * k + 1] >= q.b; }
  template <class Sink>
  void visit(const Query& q, hsrgeom::Counters&, Sink& sink) const {
    bool all = true;
    for (hsrgeom::index_t k = 0; k < 4; ++k) all = all && inside(q, k);
    if (all) {
      handed += 4;
      if (!sink.range(ids.data(), pts.data(), 4)) return;
    } else {
      for (hsrgeom::index_t k = 0; k < 4; ++k)
        if (inside(q, k) && (++handed, !sink.point(ids[k], &pts[2 * k], hsrgeom::kNoScore))) return;
    }
    for (hsrgeom::index_t k = size() - 1; k >= 4; --k)
      if (inside(q, k) && (++handed, !sink.point(ids[k], &pts[2 * k], hsrgeom::kNoScore))) return;
  }
  using TopKRow = double;
  void visit_topk(const double*, hsrgeom::Counters&, hsrgeom::TopKSink<double>& sink) const {
    for (hsrgeom::index_t k = size() - 1; k >= 0; --k) sink.point(ids[k], &pts[2 * k], hsrgeom::kNoScore);
  }
};

// Records the ids in the order a structure hands them over.
struct Recorder {
  static constexpr int kNeeds = hsrgeom::kNeedIds;
  static constexpr bool kStopsEarly = false;
  std::vector<std::int64_t>& out;
  bool point(std::int64_t id, const double*, double) {
    out.push_back(id);
    return true;
  }
  bool range(const std::int64_t* ids, const double*, hsrgeom::index_t n) {
    out.insert(out.end(), ids, ids + n);
    return true;
  }
};

Toy make_toy() {
  Toy t;
  // (x, y) = (k mod 4, k / 4) for k < 12, ids 7k mod 12
  for (int k = 0; k < 12; ++k) {
    t.pts.push_back(k % 4);
    t.pts.push_back(k / 4);
    t.ids.push_back((7 * k) % 12);
  }
  return t;
}

void test_query_sinks() {
  using namespace hsrgeom;
  {  // CountSink, EmptySink on their own
    CountSink c;
    CHECK(c.range(static_cast<const std::int64_t*>(nullptr), static_cast<const double*>(nullptr), 5));
    CHECK(c.point(3, static_cast<const double*>(nullptr), kNoScore));
    CHECK_EQ(c.count, 6);
    EmptySink e;
    CHECK(e.range(static_cast<const std::int64_t*>(nullptr), static_cast<const double*>(nullptr), 0));  // nothing: go on
    CHECK(!e.found);
    CHECK(!e.range(static_cast<const std::int64_t*>(nullptr), static_cast<const double*>(nullptr), 2));
    CHECK(e.found);
    EmptySink e2;
    CHECK(!e2.point(1, static_cast<const double*>(nullptr), kNoScore));
    CHECK(e2.found);
  }
  const Toy toy = make_toy();
  // half-spaces: y >= 1 (8 points, not the first four), x + y >= 0 (all), y >= 5 (none),
  // x >= 3 (3 points)
  const double normals[] = {0, 1, 1, 1, 0, 1, 1, 0};
  const double offsets[] = {1, 0, 5, 3};
  const Halfspaces<double> q{normals, offsets, 4};
  std::vector<std::vector<std::int64_t>> want(4);
  for (int j = 0; j < 4; ++j)
    for (int k = 0; k < 12; ++k)
      if (normals[2 * j] * toy.pts[2 * k] + normals[2 * j + 1] * toy.pts[2 * k + 1] >= offsets[j])
        want[j].push_back(toy.ids[k]);
  {  // report, sorted: ids ascending, scores alongside
    QueryStats st;
    const ReportResult r = report_visit(toy, q, &st, 1, true, true);
    for (int j = 0; j < 4; ++j) {
      std::vector<std::int64_t> w = want[j];
      std::sort(w.begin(), w.end());
      const std::vector<std::int64_t> got(r.ids.begin() + r.lims[j], r.ids.begin() + r.lims[j + 1]);
      CHECK(got == w);
      CHECK_EQ(st.points_reported[j], static_cast<std::int64_t>(w.size()));
      for (std::int64_t e = r.lims[j]; e < r.lims[j + 1]; ++e) {
        const std::int64_t id = r.ids[e];
        int k = 0;
        while (toy.ids[k] != id) ++k;
        CHECK(r.scores[e] == normals[2 * j] * toy.pts[2 * k] + normals[2 * j + 1] * toy.pts[2 * k + 1]);
      }
    }
  }
  {  // report, unsorted: the order the structure emitted (same set)
    const ReportResult r = report_visit(toy, q, nullptr, 1, false, false);
    CHECK(r.scores.empty());
    for (int j = 0; j < 4; ++j) {
      std::vector<std::int64_t> emitted;
      Recorder rec{emitted};
      Counters c;
      toy.visit(toy.prepare(normals + 2 * j, offsets[j]), c, rec);
      const std::vector<std::int64_t> got(r.ids.begin() + r.lims[j], r.ids.begin() + r.lims[j + 1]);
      CHECK(got == emitted);
      std::vector<std::int64_t> a = got, b = want[j];
      std::sort(a.begin(), a.end());
      std::sort(b.begin(), b.end());
      CHECK(a == b);
    }
    CHECK(!std::is_sorted(r.ids.begin() + r.lims[0], r.ids.begin() + r.lims[1]));  // the test means something
  }
  {  // count and empty; empty stops at the first point (or range) handed over
    const std::vector<std::int64_t> cnt = count_visit(toy, q, nullptr, 1);
    for (int j = 0; j < 4; ++j) CHECK_EQ(cnt[j], static_cast<std::int64_t>(want[j].size()));
    for (int j = 0; j < 4; ++j) {
      toy.handed = 0;
      const Halfspaces<double> one{normals + 2 * j, offsets + j, 1};
      const std::vector<std::uint8_t> e = empty_visit(toy, one, nullptr, 1);
      CHECK_EQ(e[0], want[j].empty() ? 1 : 0);
      CHECK_EQ(toy.handed, want[j].empty() ? 0 : (j == 1 ? 4 : 1));  // j = 1: the range of four
    }
  }
  {  // sum: power 0 and 1 with a shift, values by id; integers: exact in double
    std::vector<double> values(12 * 2);
    for (int i = 0; i < 24; ++i) values[i] = (i * 5) % 7 - 3;
    const double shift[] = {0, 1, -2, 2};
    for (int power = 0; power <= 1; ++power) {
      SumSpec<double> sp;
      sp.values = values.data();
      sp.dv = 2;
      sp.power = power;
      sp.shift = shift;
      QueryStats st;
      const SumResult r = sum_visit(toy, q, sp, &st, 1);
      for (int j = 0; j < 4; ++j) {
        double w = 0, s0 = 0, s1 = 0;
        for (int k = 0; k < 12; ++k) {
          const double sc = normals[2 * j] * toy.pts[2 * k] + normals[2 * j + 1] * toy.pts[2 * k + 1];
          if (sc < offsets[j]) continue;
          const double wk = power == 0 ? 1.0 : std::max(sc - shift[j], 0.0);
          w += wk;
          s0 += wk * values[2 * toy.ids[k]];
          s1 += wk * values[2 * toy.ids[k] + 1];
        }
        CHECK_EQ(r.counts[j], static_cast<std::int64_t>(want[j].size()));
        CHECK(r.weights[j] == w);
        CHECK(r.sums[2 * j] == s0);
        CHECK(r.sums[2 * j + 1] == s1);
        CHECK_EQ(st.points_reported[j], static_cast<std::int64_t>(want[j].size()));
      }
    }
  }
  {  // top-k: ties broken by the smaller id; the sink's bound rises to the k-th best
    const double up[] = {0, 1};  // score y: rows of four tied points
    std::vector<double> sc(5);
    std::vector<std::int64_t> id(5);
    topk_visit(toy, up, 1, 5, sc.data(), id.data(), nullptr, 1);
    // y = 2: stored 8..11 (ids 8, 3, 10, 5), then y = 1: stored 4..7 (ids 4, 11, 6, 1) -> id 1
    const std::vector<std::int64_t> w = {3, 5, 8, 10, 1};
    CHECK(id == w);
    CHECK(sc[0] == 2 && sc[3] == 2 && sc[4] == 1);
    // points (0, t), t = 299 down to 0, k = 2: once the candidates are pruned, the bound is
    // within rounding below the exact 2nd best, 298
    TopKSink<double> sink(up, 2, 2);
    CHECK(sink.bound() == -std::numeric_limits<double>::infinity());
    std::vector<double> line(600, 0.0);
    for (int t = 299; t >= 0; --t) {
      line[2 * t + 1] = t;
      sink.point(t, &line[2 * t], kNoScore);
    }
    CHECK(sink.bound() <= 298.0);
    CHECK(sink.bound() > 297.0);
    const auto best = sink.col.finish();
    CHECK(best.size() == 2 && best[0].id == 299 && best[1].id == 298);
  }
}


// SumSink::node: whole nodes from their sums where the sink is told to use them and the power
// is 0 or 1, else point by point; a node whose sums don't apply (add_sums false) point by point.
struct FakeNode {
  const std::int64_t* ids;
  const double* x;
  hsrgeom::index_t n;
  bool has_sums;
  mutable int asked = 0;
  template <class V>
  bool add_sums(const hsrgeom::SumSpec<V>&, hsrgeom::index_t, hsrgeom::SumAcc& acc) const {
    ++asked;
    if (!has_sums) return false;
    acc.count += n;
    acc.weight += 1000;  // recognisable: not what the points give
    return true;
  }
};

void test_sum_nodes() {
  using namespace hsrgeom;
  const std::vector<double> x = {1, 0, 2, 0, 3, 0};
  const std::vector<std::int64_t> ids = {5, 6, 7};
  const double a[] = {1, 0}, shift[] = {0};
  for (int power = 0; power <= 2; ++power)
    for (int use = 0; use <= 1; ++use)
      for (int has = 0; has <= 1; ++has) {
        SumSpec<double> sp;
        sp.power = power;
        sp.shift = shift;
        SumAcc acc;
        SumSink<double> sink{acc, sp, 0, a, 2, nullptr, use == 1};
        const FakeNode nd{ids.data(), x.data(), 3, has == 1};
        CHECK(sink.node(nd));
        const bool from_sums = use && power <= 1 && has;
        CHECK_EQ(nd.asked, use && power <= 1 ? 1 : 0);
        CHECK_EQ(acc.count, 3);
        const double by_points = power == 0 ? 3.0 : power == 1 ? 6.0 : 14.0;
        CHECK(acc.weight == (from_sums ? 1000.0 : by_points));
      }
  {  // stored rows: value rows by the position of the point's row, not by its id
    const std::vector<double> values = {10, 20, 30, 40, 50, 60, 70, 80};  // rows 0..7, dv = 1
    SumSpec<double> sp;
    sp.values = values.data();
    sp.dv = 1;
    sp.shift = shift;
    SumAcc by_id, by_pos;
    SumSink<double>{by_id, sp, 0, a, 2}.range(ids.data(), x.data(), 3);
    SumSink<double, true>{by_pos, sp, 0, a, 2, x.data()}.range(ids.data() + 1, x.data() + 2, 2);  // stored 1, 2
    SumSink<double, true>{by_pos, sp, 0, a, 2, x.data()}.point(99, x.data(), kNoScore);          // stored 0
    by_id.flush(sp);
    by_pos.flush(sp);
    CHECK(by_id.sum[0] == 60 + 70 + 80);
    CHECK(by_pos.sum[0] == 10 + 20 + 30);
  }
}

// The block top-k driver (topk_visit over BruteForce::topk_cells): the exact top-k of integer
// points with many ties, for thread counts that split the points into chunks or not.
void test_block_topk() {
  using namespace hsrgeom;
  std::mt19937_64 rng(11);
  std::uniform_int_distribution<int> coord(-3, 3);
  for (int d : {2, 5}) {
    const index_t n = 20000;  // > 4 point blocks: chunked when threads > 1
    std::vector<double> pts(n * d);
    for (auto& v : pts) v = coord(rng);
    const BruteForce<double> bf(PointsView<double>{pts.data(), n, d});
    const index_t m = 3, k = 7;
    std::vector<double> q(m * d);
    for (auto& v : q) v = coord(rng);
    for (int threads : {1, 2}) {
      std::vector<double> sc(m * k);
      std::vector<std::int64_t> id(m * k);
      QueryStats st;
      bf.topk(q.data(), m, k, sc.data(), id.data(), &st, threads);
      for (index_t j = 0; j < m; ++j) {
        const std::vector<double> qj(q.begin() + j * d, q.begin() + (j + 1) * d);
        const std::vector<std::int64_t> got(id.begin() + j * k, id.begin() + (j + 1) * k);
        CHECK(got == reference_topk(qj, pts, d, k));
        CHECK_EQ(st.points_tested[j], n);
        CHECK_EQ(st.points_reported[j], k);
      }
    }
  }
}

// The dynamic index's tombstones, checked in the sink: LiveView over the toy structure drops
// removed ids from ranges and points (a range with a dead id in the middle is split), maps local
// to global ids when asked; count/empty/sum agree.
void test_live_sink() {
  using namespace hsrgeom;
  const Toy toy = make_toy();
  std::vector<std::int64_t> gids(12);
  for (int i = 0; i < 12; ++i) gids[i] = 100 + 3 * i;
  std::vector<std::uint64_t> alive(3, 0);
  auto live = [&](std::int64_t g) { return (alive[g >> 6] >> (g & 63)) & 1; };
  for (int i = 0; i < 12; ++i)
    if (i % 3 != 1) alive[gids[i] >> 6] |= std::uint64_t{1} << (gids[i] & 63);  // local 1, 4, 7, 10 removed
  const double normals[] = {1, 1, 0, 1, 0, 1};  // x + y >= 0: all (the first four as a range)
  const double offsets[] = {0, 1, 5};
  const Halfspaces<double> q{normals, offsets, 3};
  for (int map = 0; map <= 1; ++map) {
    PartIds pid;
    pid.gids = gids.data();
    pid.alive = alive.data();
    pid.map = map == 1;
    const LiveView<Toy, double> view(toy, pid);
    const ReportResult r = report_visit(view, q, nullptr, 1, false, true);
    const std::vector<std::int64_t> cnt = count_visit(view, q, nullptr, 1);
    const std::vector<std::uint8_t> emp = empty_visit(view, q, nullptr, 1);
    for (int j = 0; j < 3; ++j) {
      std::vector<std::int64_t> want;
      for (int k = 0; k < 12; ++k) {
        const std::int64_t local = toy.ids[k];
        if (normals[2 * j] * toy.pts[2 * k] + normals[2 * j + 1] * toy.pts[2 * k + 1] >= offsets[j] &&
            live(gids[local]))
          want.push_back(map ? gids[local] : local);
      }
      std::sort(want.begin(), want.end());
      const std::vector<std::int64_t> got(r.ids.begin() + r.lims[j], r.ids.begin() + r.lims[j + 1]);
      CHECK(got == want);
      CHECK_EQ(cnt[j], static_cast<std::int64_t>(want.size()));
      CHECK_EQ(emp[j], want.empty() ? 1 : 0);
    }
    CHECK_EQ(cnt[0], 8);  // the test means something: 4 of 12 removed
  }
  {  // sum with mapped ids: value rows by global id
    std::vector<double> values(200);
    for (int i = 0; i < 200; ++i) values[i] = i;
    const double shift[] = {0, 0, 0};
    SumSpec<double> sp;
    sp.values = values.data();
    sp.dv = 1;
    sp.shift = shift;
    PartIds pid{gids.data(), alive.data(), true};
    const SumResult r = sum_visit(LiveView<Toy, double>(toy, pid), q, sp, nullptr, 1);
    double want = 0;
    for (int i = 0; i < 12; ++i)
      if (live(gids[i])) want += static_cast<double>(gids[i]);
    CHECK(r.sums[0] == want);
    CHECK_EQ(r.counts[0], 8);
  }
  {  // a range with every id removed hands nothing; EmptySink through LiveSink stops at a live point
    std::vector<std::uint64_t> none(3, 0);
    PartIds pid{gids.data(), none.data(), false};
    CountSink c;
    LiveSink<CountSink> ls{c, pid, 2};
    const std::int64_t loc[] = {0, 1, 2};
    const double xs[] = {0, 0, 0, 0, 0, 0};
    CHECK(ls.range(loc, xs, 3));
    CHECK_EQ(c.count, 0);
    EmptySink e;
    const PartIds some{gids.data(), alive.data(), false};
    LiveSink<EmptySink> le{e, some, 2};
    CHECK(le.range(loc, xs, 1) == false);  // local 0 is live: found, stop
    CHECK(e.found);
  }
}

// QuantizedScan's block kernels (quantize.hpp block_dots): every kernel this CPU runs against an
// int64 sum over the unpacked codes, at the extremes (|c| = 127, |q| = qmax, odd d, odd m) and
// random values; then QuantizedScan with each kernel (HSRGEOM_SCAN_KERNEL) against BruteForce on
// points with ties on the boundary, n not a multiple of 16.
void test_block_dots() {
  using namespace hsrgeom;
  std::mt19937_64 rng(5);
  for (int d : {1, 2, 3, 8, 15, 16, 17, 33, 64, 129}) {
    const int dh = (d + 1) / 2;
    const int qmax = static_cast<int>(std::min(32767.0, std::floor(2147483647.0 / (127.0 * d))));
    for (int extreme = 0; extreme <= 1; ++extreme) {
      const index_t nb = 3, m = 5;
      std::vector<std::int8_t> c(nb * 16 * d);  // point-major
      std::vector<std::int16_t> q(m * d);
      std::uniform_int_distribution<int> cr(-127, 127), qr(-qmax, qmax), sg(0, 1);
      for (auto& v : c) v = static_cast<std::int8_t>(extreme ? (sg(rng) ? 127 : -127) : cr(rng));
      for (auto& v : q) v = static_cast<std::int16_t>(extreme ? (sg(rng) ? qmax : -qmax) : qr(rng));
      if (extreme) {  // the largest sum: every product +127 qmax for point 0 of block 0 and query 0
        for (int k = 0; k < d; ++k) c[k] = 127, q[k] = static_cast<std::int16_t>(qmax);
        for (int k = 0; k < d; ++k) c[d + k] = -127;  // and the smallest for point 1
      }
      std::vector<std::int8_t> blocks(nb * code_block_bytes(d), 0);
      for (index_t i = 0; i < nb * 16; ++i)
        for (int k = 0; k < d; ++k)
          blocks[(i / 16) * code_block_bytes(d) + (k / 2) * 32 + (i % 16) * 2 + (k & 1)] = c[i * d + k];
      std::vector<std::int32_t> qp(m * dh);
      for (index_t j = 0; j < m; ++j)
        for (int t = 0; t < dh; ++t)
          qp[j * dh + t] = pack_pair(q[j * d + 2 * t], 2 * t + 1 < d ? q[j * d + 2 * t + 1] : std::int16_t{0});
      for (int isa = 0; isa <= static_cast<int>(best_dot_isa()); ++isa)
        for (index_t mm : {index_t{1}, index_t{2}, m}) {
          std::vector<std::int32_t> out(nb * mm * 16, -1);
          block_dots_kernel(static_cast<DotIsa>(isa))(blocks.data(), nb, qp.data(), mm, dh, out.data());
          long bad = 0;
          for (index_t b = 0; b < nb; ++b)
            for (index_t j = 0; j < mm; ++j)
              for (int p = 0; p < 16; ++p) {
                long long want = 0;
                for (int k = 0; k < d; ++k) want += static_cast<long long>(q[j * d + k]) * c[(b * 16 + p) * d + k];
                bad += out[(b * mm + j) * 16 + p] != want;
              }
          CHECK_EQ(bad, 0);
        }
      if (extreme) {
        std::vector<std::int32_t> out(16);
        block_dots_kernel(best_dot_isa())(blocks.data(), 1, qp.data(), 1, dh, out.data());
        CHECK_EQ(out[0], 127LL * qmax * d);  // the test reaches the int32 bound it relies on
        CHECK_EQ(out[1], -127LL * qmax * d);
      }
    }
  }
  const char* names[] = {"scalar", "sse2", "avx2", "avx512"};
  std::uniform_int_distribution<int> coord(-4, 4);
  for (int d : {3, 16, 17}) {
    const index_t n = 5000 + 7;  // a padded last block; > one chunk when threads > 1
    std::vector<double> pts(n * d);
    for (auto& v : pts) v = coord(rng) * 0.25;
    for (index_t i = 0; i < 40; ++i) pts[i * d] = 1e300;  // uncodable: always candidates
    const BruteForce<double> bf(PointsView<double>{pts.data(), n, d});
    const index_t m = 7;
    std::vector<double> normals(m * d), offsets(m);
    for (auto& v : normals) v = coord(rng);
    for (index_t j = 0; j < m; ++j) offsets[j] = coord(rng) * 0.25;  // many points exactly on the boundary
    const Halfspaces<double> q{normals.data(), offsets.data(), m};
    const ReportResult want = bf.report(q, nullptr, 1);
    for (int isa = 0; isa <= static_cast<int>(best_dot_isa()); ++isa) {
      setenv("HSRGEOM_SCAN_KERNEL", names[isa], 1);
      const QuantizedScan<double> qs(PointsView<double>{pts.data(), n, d}, 1);
      for (int threads : {1, 2}) {
        const ReportResult got = qs.report(q, nullptr, threads);
        CHECK(got.lims == want.lims);
        CHECK(std::equal(got.ids.begin(), got.ids.end(), want.ids.begin(), want.ids.end()));
      }
    }
    unsetenv("HSRGEOM_SCAN_KERNEL");
    CHECK(want.lims.back() > 0 && want.lims.back() < m * n);  // the test means something
  }
}

}  // namespace

// attend::int_dots (tiles of 2 keys x 4 rows, the vector width of the build) against an int64
// sum, at the extremes its bound allows (|c| <= 127, |q| <= 32767 for d <= 516), for every
// remainder of keys (odd nb), rows (h % 4) and coordinates (d % 16, d % 32).
void test_int_dots() {
  std::mt19937_64 g(7);
  const index_t stride = 9;
  for (int d : {1, 15, 16, 17, 31, 32, 33, 64, 100, 256, 259, 516})
    for (index_t h : {1, 2, 3, 4, 5, 7, 8})
      for (index_t nb : {1, 2, 3, 8, 9}) {
        std::vector<std::int8_t> c(static_cast<size_t>(nb) * d);
        std::vector<std::int16_t> q(static_cast<size_t>(h) * d);
        const bool extreme = (d + h + nb) % 2 == 0;  // all at the bound, or random
        for (auto& v : c) v = static_cast<std::int8_t>(extreme ? (g() % 2 ? 127 : -127) : static_cast<int>(g() % 255) - 127);
        for (auto& v : q) v = static_cast<std::int16_t>(extreme ? 32767 : static_cast<int>(g() % 65535) - 32767);
        std::vector<std::int32_t> out(static_cast<size_t>(h) * stride, -1);
        hsrgeom::attend::int_dots(c.data(), nb, q.data(), h, d, out.data(), stride);
        bool ok = true;
        for (index_t j = 0; j < h; ++j)
          for (index_t i = 0; i < stride; ++i) {
            std::int64_t want = -1;  // slots past nb untouched
            if (i < nb) {
              want = 0;
              for (int k = 0; k < d; ++k) want += std::int64_t{q[j * d + k]} * c[i * d + k];
            }
            ok &= out[j * stride + i] == want;
          }
        CHECK(ok);
      }
}

// ---- PartitionTree's splits (partition_tree.hpp select) -----------------------------------------

// Every node of more than leaf_size points splits at its middle (sizes alone: PartitionTree::
// skeleton) by the median of its widest box axis, ties broken by id: all of the left child's
// (coordinate, id) are below all of the right child's. Checked from the stored order alone, on
// random points, a grid (ties on every axis) and many copies of one point, 1 and 2 threads (the
// build splits nodes above 32,768 points into tasks: 70,000 points at d = 2).
template <class T>
void check_splits(const std::vector<T>& x, index_t n, int d, const hsrgeom::PartitionTree<T>& t, index_t b, index_t e,
                  int leaf, long& bad) {
  if (e - b <= leaf) return;
  int axis = 0;
  double w = -1;
  for (int i = 0; i < d; ++i) {
    double lo = INFINITY, hi = -INFINITY;
    for (index_t k = b; k < e; ++k) {
      const double v = x[t.stored_id(k) * d + i];
      lo = std::min(lo, v), hi = std::max(hi, v);
    }
    if (hi - lo > w) w = hi - lo, axis = i;
  }
  const index_t m = b + (e - b) / 2;
  if (w > 0) {  // (all rows equal: no split to check)
    std::pair<T, index_t> left{-INFINITY, -1}, right{INFINITY, n};
    for (index_t k = b; k < m; ++k) left = std::max(left, std::make_pair(x[t.stored_id(k) * d + axis], t.stored_id(k)));
    for (index_t k = m; k < e; ++k) right = std::min(right, std::make_pair(x[t.stored_id(k) * d + axis], t.stored_id(k)));
    if (!(left < right)) ++bad;
  }
  check_splits(x, n, d, t, b, m, leaf, bad);
  check_splits(x, n, d, t, m, e, leaf, bad);
}

template <class T>
void test_tree_splits_of() {
  std::mt19937_64 g(7);
  std::uniform_real_distribution<double> u(0, 1);
  for (int d : {1, 2, 3, 8}) {
    for (index_t n : {1, 2, 5, 100, 3000, 70000}) {
      if (n > 3000 && d != 2) continue;
      for (int kind = 0; kind < 3; ++kind) {
        std::vector<T> x(static_cast<size_t>(n * d));
        for (auto& v : x) v = static_cast<T>(kind == 1 ? std::floor(u(g) * 3) : u(g));
        if (kind == 2)
          for (index_t k = 0; k < n / 2; ++k) std::copy(x.begin(), x.begin() + d, x.begin() + k * d);
        for (int threads : {1, 2}) {
          const hsrgeom::PartitionTree<T> t(hsrgeom::PointsView<T>{x.data(), n, d}, 4, hsrgeom::SplitRule::Widest,
                                            threads);
          std::vector<index_t> ids(static_cast<size_t>(n));
          for (index_t k = 0; k < n; ++k) ids[k] = t.stored_id(k);
          std::sort(ids.begin(), ids.end());
          std::vector<index_t> all(static_cast<size_t>(n));
          std::iota(all.begin(), all.end(), index_t{0});
          CHECK(ids == all);  // a permutation of the points
          long bad = 0;
          check_splits(x, n, d, t, 0, n, 4, bad);
          CHECK_EQ(bad, 0);
        }
      }
    }
  }
}

void test_tree_splits() {
  test_tree_splits_of<float>();
  test_tree_splits_of<double>();
}

// The structures that keep 32-bit ids in candidate blocks (filter.hpp) refuse more than 2^32
// points, before reading any (the view's rows are never touched here).
void test_block_point_limit() {
  const float row[3] = {0, 0, 0};
  const index_t over = static_cast<index_t>(hsrgeom::kMaxBlockPoints) + 1;
  auto refused = [](auto&& build) {
    try {
      build();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what()).rfind("points:", 0) == 0;
    }
    return false;
  };
  CHECK(refused([&] { hsrgeom::ConvexLayers<float>(hsrgeom::PointsView<float>{row, over, 2}); }));
  CHECK(refused([&] { hsrgeom::ShallowCutting3<float>(hsrgeom::PointsView<float>{row, over, 3}, 16, 1024, 444, 100, 1); }));
}

// stream_ids / copy_out_ids (buffer.hpp): every length around the vector width and the
// streaming threshold, at every alignment of dst; uint32 ids zero-extended (ids >= 2^31 too);
// nothing written outside [dst, dst + n). And a ReportSink block of more than kStreamIds ids into
// a streamed output, and a radix sort streamed into its output.
void test_stream_ids() {
  const std::ptrdiff_t lengths[] = {0, 1, 7, 8, 9, 63, 511, 512, 513, 520, 1037};
  std::vector<std::int64_t> src64(1100);
  std::vector<std::uint32_t> src32(1100);
  for (size_t i = 0; i < src64.size(); ++i) {
    src64[i] = static_cast<std::int64_t>(i) * 0x100000001LL - 5;  // negative, and past 2^32
    src32[i] = static_cast<std::uint32_t>(0xFFFFFFF0u - 3 * i);  // >= 2^31: a sign extension shows
  }
  for (std::ptrdiff_t n : lengths)
    for (int shift = 0; shift < 8; ++shift)
      for (int wide = 0; wide < 2; ++wide) {
        std::vector<std::int64_t> buf(1200, -1);
        std::int64_t* dst = buf.data() + 8 + shift;
        if (wide) hsrgeom::copy_out_ids(dst, src64.data() + 1, n, true);
        else hsrgeom::copy_out_ids(dst, src32.data() + 1, n, true);
        bool ok = true;
        for (std::ptrdiff_t k = 0; k < static_cast<std::ptrdiff_t>(buf.size()); ++k) {
          const std::ptrdiff_t at = k - 8 - shift;
          const std::int64_t want = at < 0 || at >= n ? -1 : wide ? src64[at + 1] : static_cast<std::int64_t>(src32[at + 1]);
          ok = ok && buf[k] == want;
        }
        CHECK(ok);
      }
  hsrgeom::IdList out;
  const double a[2] = {1, 0};
  out.stream = true;
  hsrgeom::ReportSink<false> sink{out, a, 2};
  sink.point(7, static_cast<const double*>(nullptr), 0.0);
  sink.range(src64.data(), static_cast<const double*>(nullptr), 1000);
  CHECK(out.ids.size() == 1001 && out.ids[0] == 7 && std::equal(src64.begin(), src64.begin() + 1000, out.ids.begin() + 1));
  std::vector<std::int64_t> ids(3000), want(3000), got(3001, -1);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int64_t>((i * 7919) % 1000003);
  want = ids;
  std::sort(want.begin(), want.end());
  hsrgeom::detail::radix_ids32(ids.data(), ids.size(), 20, got.data() + 1, true);
  CHECK(got[0] == -1 && std::equal(want.begin(), want.end(), got.begin() + 1));
}

int main() {
  test_exact_sign_known();
  test_exact_sign_random();
  test_exact_sign_paths();
  test_compare_and_filter();
  test_orient2d();
  test_sort_network();
  test_sort_ids();
  test_id_order();
  test_block_point_limit();
  test_filter_rows();
  test_filter_rows32();
  test_report_sink_room();
  test_output_pool();
  test_stream_ids();
  test_topk_random();
  test_topk_cases();
  test_query_sinks();
  test_sum_nodes();
  test_block_topk();
  test_live_sink();
  test_block_dots();
  test_int_dots();
  test_tree_splits();
  std::printf("test_core: %ld passed, %ld failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
