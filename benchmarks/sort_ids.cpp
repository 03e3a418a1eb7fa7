// Cost per id of sorting a report's ids (report.hpp sort_ids_into, what return_sorted=True adds
// to each query), against the two other one-pass ideas it could use at 1,000-30,000 ids: the
// bucket pass and insertion sort it keeps for up to 255 ids (bucket_ids), and the pass over a
// bitmap of [0, n) it takes for k >= n / 32 (bitmap_ids). 200 sets of k random distinct ids < n each,
// best of 7; each method copies its input first, as a report's scratch would be.
//
//   g++ -std=c++17 -O3 -march=native -DNDEBUG -Icpp/include benchmarks/sort_ids.cpp -o /tmp/sort_ids
//   /tmp/sort_ids            # (add -march=x86-64-v3 instead of native for the AVX2 path)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "hsrgeom/report.hpp"

using namespace hsrgeom;

int main() {
  std::mt19937_64 rng(1);
  const char* names[3] = {"sort_ids_into", "bucket_ids", "bitmap"};
  std::printf("%9s %6s  ns per id: %14s %11s %8s\n", "n", "k", names[0], names[1], names[2]);
  for (index_t n : {index_t{1000000}, index_t{10000000}})
    for (size_t k : {1000, 3000, 10000, 30000}) {
      std::vector<std::vector<std::int64_t>> sets(200);
      std::vector<char> seen(static_cast<size_t>(n));
      for (auto& s : sets) {
        std::fill(seen.begin(), seen.end(), 0);
        while (s.size() < k) {
          const auto v = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(n));
          if (!seen[v]) seen[v] = 1, s.push_back(v);
        }
      }
      std::vector<std::int64_t> dst(k), ref(k);
      double best[3] = {1e30, 1e30, 1e30};
      for (int rep = 0; rep < 7; ++rep)
        for (int method = 0; method < 3; ++method) {
          const auto t0 = std::chrono::steady_clock::now();
          for (const auto& s : sets) {
            IdList in;
            in.ids.assign(s.begin(), s.end());
            if (method == 0) sort_ids_into(in, n, dst.data(), nullptr);
            if (method == 1 && !detail::bucket_ids(in.ids.data(), k, 0, static_cast<std::uint64_t>(n), dst.data()))
              std::sort(dst.begin(), dst.end());  // (uneven buckets: never with random ids)
            if (method == 2) detail::bitmap_ids(in.ids.data(), k, n, dst.data());
          }
          const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          best[method] = std::min(best[method], t / static_cast<double>(sets.size() * k) * 1e9);
          ref.assign(sets.back().begin(), sets.back().end());
          std::sort(ref.begin(), ref.end());
          if (ref != dst) return std::printf("%s: wrong order\n", names[method]), 1;
        }
      std::printf("%9ld %6zu  %25.2f %11.2f %8.2f\n", static_cast<long>(n), k, best[0], best[1], best[2]);
    }
}
