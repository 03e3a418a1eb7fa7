// The float64 routines of attend.hpp on their own: a hash of their outputs over fixed inputs
// (equal on every build: AVX-512, AVX2 + FMA, scalar) and their speed. Not part of the package.
//
//   for m in native x86-64-v3 x86-64; do
//     g++ -std=c++17 -O3 -ffp-contract=off -march=$m -Icpp/include benchmarks/attention/attend_routines.cpp -o /tmp/ar-$m
//     /tmp/ar-$m          # hashes and timings; `/tmp/ar-$m time`: timings only
//   done
//
// (-ffp-contract=off as CMakeLists.txt.) The code before the AVX2 paths (main 0a3ee0e) is timed with
// -DBEFORE and -I pointing at that commit's cpp/include (it had dots4, no dots<R>; no hashes then).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>

#include "hsrgeom/attend.hpp"

using namespace hsrgeom;

#ifdef BEFORE
#define DOTS4(A, x, d, s, nx) attend::dots4(A, x, d, s, nx)
#else
#define DOTS4(A, x, d, s, nx) attend::dots<4>(A, x, d, s, nx)
#endif

static std::uint64_t H;
static void mix(const void* p, size_t n) {
  const auto* c = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) H = (H ^ c[i]) * 1099511628211ull;  // FNV-1a
}

template <class F>
static double median_seconds(F f, int reps) {
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto a = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

#ifndef BEFORE
template <class T>
static void hash_dots(std::mt19937_64& g) {
  std::normal_distribution<double> N;
  for (int d : {1, 3, 4, 15, 16, 17, 31, 32, 33, 64, 100, 256, 259}) {
    std::vector<double> A(4 * d);
    std::vector<T> x(d);
    for (int it = 0; it < 50; ++it) {
      for (auto& a : A) a = N(g) * (it % 5 == 0 ? 1e10 : 1);
      for (auto& v : x) v = static_cast<T>(N(g));
      double s[4], s1;
      attend::dots<4>(A.data(), x.data(), d, s, x.data());
      mix(s, sizeof s);
      for (int r = 0; r < 4; ++r) {
        attend::dots<1>(A.data() + r * d, x.data(), d, &s1);
        if (s1 != s[r]) std::printf("dots<1> != dots<4> (d = %d)\n", d);
      }
    }
  }
}

template <class T>
static void hash_gather(std::mt19937_64& g) {
  std::normal_distribution<double> N;
  for (int dv : {1, 5, 8, 12, 16, 17, 24, 33, 64, 256, 261}) {
    const index_t n = 40;
    std::vector<T> V(n * dv);
    for (auto& v : V) v = static_cast<T>(N(g));
    std::vector<index_t> ids = {0, 3, 4, 7, 9, 11, 20, 39}, pf = {1, 2};
    std::vector<double> W(4 * 8), acc(4 * dv);
    for (auto& w : W) w = std::exp(-std::fabs(N(g)) * 10);
    for (auto& a : acc) a = N(g);
    attend::gather4(V.data(), dv, ids.data(), W.data(), 8, 8, acc.data(), pf.data(), 2);
    attend::gather4(V.data(), dv, ids.data(), W.data(), 8, 5, acc.data(), pf.data(), 0);
    mix(acc.data(), acc.size() * sizeof(double));
  }
}

static void hashes() {
  std::mt19937_64 g(7);
  std::uniform_real_distribution<double> U(0, 1);
  std::vector<double> x;
  for (int i = 0; i < 200000; ++i) x.push_back(U(g) * 1100);
  for (int i = 0; i < 200000; ++i) x.push_back(700 + U(g) * 50);  // subnormal results
  for (int i = 0; i < 100000; ++i) x.push_back(U(g) * 1e-3);
  for (double v : {0.0, 1e-300, 708.0, 708.39641853226408, 709.0, 744.0, 744.44007192138121, 745.13321910194122, 745.2,
                   1000.0, 1e300, std::numeric_limits<double>::infinity(), std::nan("")})
    x.push_back(v);
  std::vector<double> w(x.size());
  attend::exp_neg(x.data(), w.data(), x.size());
  double maxulp = 0, maxsub = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i])) continue;
    const long double e = std::exp(-static_cast<long double>(x[i]));
    const double ed = static_cast<double>(e);
    if (ed >= 0x1p-1022)
      maxulp = std::max(maxulp, static_cast<double>(std::fabs((w[i] - e) / (std::nextafter(ed, 1.0) - ed))));
    else
      maxsub = std::max(maxsub, static_cast<double>(std::fabs(w[i] - e) / 0x1p-1074));
  }
  H = 1469598103934665603ull;
  mix(w.data(), w.size() * sizeof(double));
  std::printf("exp_neg  %016llx  (max error: %.3f ulp for normal results, %.3f subnormal ulp below)\n",
              static_cast<unsigned long long>(H), maxulp, maxsub);
  H = 1469598103934665603ull;
  hash_dots<float>(g);
  hash_dots<double>(g);
  std::printf("dots     %016llx\n", static_cast<unsigned long long>(H));
  H = 1469598103934665603ull;
  hash_gather<float>(g);
  hash_gather<double>(g);
  std::printf("gather4  %016llx\n", static_cast<unsigned long long>(H));
}
#endif

// exp_neg over 4096 values; dots4 and gather4 over 2048 float32 rows of d = 256 (the 2 MB the
// rounds re-read, as top-p's candidate and kept rows), blocks of 8 keys as softmax_top_p; int_dots
// over 32K keys' codes (-DBEFORE: the per-key int_dots of main 88adc55 and earlier).
static void timings() {
  std::mt19937_64 g(1);
  std::normal_distribution<double> N;
  std::uniform_real_distribution<double> U(0, 30);
  const size_t ne = 4096;
  std::vector<double> x(ne), w(ne);
  for (auto& v : x) v = U(g);
  const double te = median_seconds([&] { for (int r = 0; r < 100; ++r) attend::exp_neg(x.data(), w.data(), ne); }, 31) / 100;
  const int d = 256;
  const index_t n = 32768, nk = 2048;
  std::vector<float> K(static_cast<size_t>(n) * d);
  for (auto& v : K) v = static_cast<float>(N(g));
  std::vector<index_t> ids(nk);
  for (index_t i = 0; i < nk; ++i) ids[i] = i * (n / nk) + (i * 7) % 13;
  std::vector<double> A(4 * d), W(4 * nk), acc(4 * d);
  for (auto& a : A) a = N(g);
  for (auto& v : W) v = std::fabs(N(g));
  double sink = 0;
  const double td = median_seconds([&] {
    for (index_t e = 0; e < nk; ++e) {
      double s[4];
      DOTS4(A.data(), &K[ids[e] * d], d, s, &K[ids[std::min(e + 2, nk - 1)] * d]);
      sink += s[0] + s[1] + s[2] + s[3];
    }
  }, 31);
  const double tg = median_seconds([&] {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (index_t b0 = 0; b0 < nk; b0 += 8)
      attend::gather4(K.data(), d, ids.data() + b0, W.data() + b0, nk, 8, acc.data(), ids.data() + b0 + 8,
                      b0 + 8 < nk ? 8 : 0);
    sink += acc[3];
  }, 31);
  // the int8 code scan: 32K keys' codes (8 MB) against 4 and 1 int16 query rows, in scan blocks
  // of 256 keys (HeadCodes::scan); best of 15, as the scan's time depends on what else runs
  const index_t kb = 256;
  std::vector<std::int8_t> codes(static_cast<size_t>(n) * d);
  for (auto& c : codes) c = static_cast<std::int8_t>(static_cast<int>(g() % 255) - 127);
  std::vector<std::int16_t> qi(4 * d);
  for (auto& v : qi) v = static_cast<std::int16_t>(static_cast<int>(g() % 65535) - 32767);
  std::vector<std::int32_t> dots(4 * kb);
  double ti[2];
  for (int h : {4, 1}) {
    std::vector<double> t;
    for (int r = 0; r < 15; ++r)
      t.push_back(median_seconds([&] {
        for (index_t b0 = 0; b0 < n; b0 += kb) {
#ifdef BEFORE
          for (index_t i = 0; i < kb; ++i) attend::int_dots(&codes[(b0 + i) * d], qi.data(), h, d, dots.data() + i, kb);
#else
          attend::int_dots(&codes[b0 * d], kb, qi.data(), h, d, dots.data(), kb);
#endif
          sink += dots[5];
        }
      }, 3));
    ti[h == 4 ? 0 : 1] = *std::min_element(t.begin(), t.end());
  }
  std::printf("time: exp_neg %.2f ns / value | dots4 %.0f us / %d rows | gather4 %.0f us / %d rows | "
              "int_dots %.0f / %.0f us / %d keys x 4 / 1 rows   (%d)\n",
              te / ne * 1e9, td * 1e6, static_cast<int>(nk), tg * 1e6, static_cast<int>(nk), ti[0] * 1e6, ti[1] * 1e6,
              static_cast<int>(n), sink != 0);
}

int main(int argc, char** argv) {
  const bool time_only = argc > 1 && std::string(argv[1]) == "time";  // the same allocations as -DBEFORE
#ifndef BEFORE
  if (!time_only) hashes();
#endif
  (void)time_only;
  timings();
}
