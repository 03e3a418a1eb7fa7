// A sorting network in vector registers for a few ids (up to kNetworkMaxIds): bitonic, on 8 lanes
// of 32 bits (GCC / Clang vector extensions: AVX2 or AVX-512 instructions on x86-64-v3 and
// native builds, pairs of SSE registers on baseline x86-64, NEON on arm64). Every compare-
// exchange is a min and a max of two registers, one lane permutation and one blend; no branch
// depends on the ids. Sorting 100 random ids < 10^6 from and into int64 arrays: 1.7-1.8 ns per
// id, against 3.8-4.2 for report.hpp's bucket sort (AVX-512 and x86-64-v3 builds alike;
// docs/performance.md, session 33).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__clang__) ? (__clang_major__ >= 13) : (defined(__GNUC__) && __GNUC__ >= 12)
#define HSRGEOM_SORT_NETWORK 1
#else
#define HSRGEOM_SORT_NETWORK 0
#endif

namespace hsrgeom {

constexpr size_t kNetworkMaxIds = HSRGEOM_SORT_NETWORK ? 128 : 0;  // (0: no network, see network_sort_ids)
// A position among kNetworkMaxIds takes 7 bits: ids below 2^25 sort with theirs in 32 bits.
constexpr int kNetworkPosBits = 7, kNetworkIdBits = 32 - kNetworkPosBits;
static_assert(kNetworkMaxIds <= 128 && size_t{1} << kNetworkPosBits >= 128, "positions of up to 128 ids");

#if HSRGEOM_SORT_NETWORK
namespace network {

typedef std::uint32_t Lanes __attribute__((vector_size(32)));

#define HSRGEOM_NET_INLINE inline __attribute__((always_inline))

// One compare-exchange step within a register: lane i against lane P_i (P an involution), the
// smaller value to the lower lane.
template <int P0, int P1, int P2, int P3, int P4, int P5, int P6, int P7>
HSRGEOM_NET_INLINE Lanes exchange(Lanes v) {
  const Lanes p = __builtin_shufflevector(v, v, P0, P1, P2, P3, P4, P5, P6, P7);
  const Lanes lo = v < p ? v : p, hi = v < p ? p : v;
  return __builtin_shufflevector(lo, hi, 0 < P0 ? 0 : 8, 1 < P1 ? 1 : 9, 2 < P2 ? 2 : 10, 3 < P3 ? 3 : 11,
                                 4 < P4 ? 4 : 12, 5 < P5 ? 5 : 13, 6 < P6 ? 6 : 14, 7 < P7 ? 7 : 15);
}
HSRGEOM_NET_INLINE Lanes reversed(Lanes v) { return __builtin_shufflevector(v, v, 7, 6, 5, 4, 3, 2, 1, 0); }

// A register whose lanes are a bitonic sequence, sorted (half-cleaners of strides 4, 2, 1).
HSRGEOM_NET_INLINE Lanes clean(Lanes v) {
  v = exchange<4, 5, 6, 7, 0, 1, 2, 3>(v);
  v = exchange<2, 3, 0, 1, 6, 7, 4, 5>(v);
  return exchange<1, 0, 3, 2, 5, 4, 7, 6>(v);
}

// One register sorted: merges of 2, 4 and 8 lanes, each a flip (lane i against its mirror in the
// merged block) then half-cleaners.
HSRGEOM_NET_INLINE Lanes sorted(Lanes v) {
  v = exchange<1, 0, 3, 2, 5, 4, 7, 6>(v);
  v = exchange<3, 2, 1, 0, 7, 6, 5, 4>(v);
  v = exchange<1, 0, 3, 2, 5, 4, 7, 6>(v);
  v = exchange<7, 6, 5, 4, 3, 2, 1, 0>(v);
  v = exchange<2, 3, 0, 1, 6, 7, 4, 5>(v);
  return exchange<1, 0, 3, 2, 5, 4, 7, 6>(v);
}

// R registers (a power of two) sorted as one sequence of 8 R lanes, register-major: each register
// sorted, then runs of S / 2 registers merged into runs of S (S = 2, 4, ..., R): the flip pairs
// register v with the reverse of register v ^ (S - 1), the half-cleaners of strides of whole
// registers pair v with v ^ T, and each register ends with its own half-cleaners.
template <int R>
HSRGEOM_NET_INLINE void sort_registers(Lanes* r) {
#pragma GCC unroll 16
  for (int v = 0; v < R; ++v) r[v] = sorted(r[v]);
#pragma GCC unroll 8
  for (int S = 2; S <= R; S *= 2) {
#pragma GCC unroll 16
    for (int v = 0; v < R; ++v) {
      const int w = v ^ (S - 1);
      if (v < w) {
        const Lanes b = reversed(r[w]);
        const Lanes lo = r[v] < b ? r[v] : b, hi = r[v] < b ? b : r[v];
        r[v] = lo, r[w] = reversed(hi);
      }
    }
#pragma GCC unroll 8
    for (int T = S / 4; T >= 1; T /= 2) {
#pragma GCC unroll 16
      for (int v = 0; v < R; ++v) {
        const int w = v ^ T;
        if (v < w) {
          const Lanes lo = r[v] < r[w] ? r[v] : r[w], hi = r[v] < r[w] ? r[w] : r[v];
          r[v] = lo, r[w] = hi;
        }
      }
    }
#pragma GCC unroll 16
    for (int v = 0; v < R; ++v) r[v] = clean(r[v]);
  }
}

// k <= 8 R ids, all in [0, 2^32), from src ascending into dst; the lanes past k hold 2^32 - 1,
// which sorts last (an id equal to it is the same value, so the first k lanes are right).
template <int R>
void sort_ids(const std::int64_t* src, size_t k, std::int64_t* dst) {
  alignas(32) std::uint32_t lane[8 * R];
  for (size_t i = 0; i < k; ++i) lane[i] = static_cast<std::uint32_t>(src[i]);
  for (size_t i = k; i < 8 * R; ++i) lane[i] = UINT32_MAX;
  Lanes r[R];
  std::memcpy(r, lane, sizeof lane);
  sort_registers<R>(r);
  std::memcpy(lane, r, sizeof lane);
  for (size_t i = 0; i < k; ++i) dst[i] = lane[i];
}

#undef HSRGEOM_NET_INLINE

}  // namespace network
#endif

// Sorts k <= kNetworkMaxIds ids, all in [0, 2^32), from src ascending into dst (distinct or not).
// Returns false, dst unused, where the compiler has no vector extensions for the network.
inline bool network_sort_ids(const std::int64_t* src, size_t k, std::int64_t* dst) {
#if HSRGEOM_SORT_NETWORK
  if (k <= 8) network::sort_ids<1>(src, k, dst);
  else if (k <= 16) network::sort_ids<2>(src, k, dst);
  else if (k <= 32) network::sort_ids<4>(src, k, dst);
  else if (k <= 64) network::sort_ids<8>(src, k, dst);
  else network::sort_ids<16>(src, k, dst);
  return true;
#else
  (void)src, (void)k, (void)dst;
  return false;
#endif
}

}  // namespace hsrgeom
