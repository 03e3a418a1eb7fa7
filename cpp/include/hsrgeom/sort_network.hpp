// A sorting network in vector registers for a few ids (up to kNetworkMaxIds): bitonic, on 8 lanes
// of 32 bits (GCC / Clang vector extensions: AVX2 or AVX-512 instructions on x86-64-v3 and
// native builds, pairs of SSE registers on baseline x86-64, NEON on arm64). Every compare-
// exchange within a register is a min and a max of two registers, one lane permutation and one
// blend; no branch depends on the ids. 8 and 16 registers first sort each lane down the
// registers (Batcher's odd-even merge sort: min and max only) and transpose, so that the bitonic
// merges start from runs of 8 or 16 ids: 10-20 % faster than sorting each register alone.
// Sorting 100 random ids < 10^6 from and into int64 arrays: 1.4-1.6 ns per id, against 3.8-4.2
// for report.hpp's bucket sort (docs/performance.md, sessions 33 and 38).
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

// The smaller of a and b to a, the larger to b, lane by lane.
HSRGEOM_NET_INLINE void exchange(Lanes& a, Lanes& b) {
  const Lanes lo = a < b ? a : b, hi = a < b ? b : a;
  a = lo, b = hi;
}

// Each lane sorted down the R = 8 or 16 registers: Batcher's odd-even merge sort (19 or 63
// compare-exchanges of whole registers).
template <int R>
HSRGEOM_NET_INLINE void sort_lanes(Lanes* r) {
  static_assert(R == 8 || R == 16, "8 or 16 registers");
  static constexpr int k8[] = {0, 1, 2, 3, 0, 2, 1, 3, 1, 2, 4, 5, 6, 7, 4, 6, 5, 7, 5, 6,
                               0, 4, 2, 6, 2, 4, 1, 5, 3, 7, 3, 5, 1, 2, 3, 4, 5, 6};
  static constexpr int k16[] = {8, 9, 10, 11, 8, 10, 9, 11, 9, 10, 12, 13, 14, 15, 12, 14, 13, 15, 13, 14,
                                8, 12, 10, 14, 10, 12, 9, 13, 11, 15, 11, 13, 9, 10, 11, 12, 13, 14,
                                0, 8, 4, 12, 4, 8, 2, 10, 6, 14, 6, 10, 2, 4, 6, 8, 10, 12,
                                1, 9, 5, 13, 5, 9, 3, 11, 7, 15, 7, 11, 3, 5, 7, 9, 11, 13,
                                1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
#pragma GCC unroll 64
  for (int i = 0; i < 19; ++i) exchange(r[k8[2 * i]], r[k8[2 * i + 1]]);  // registers 0-7
  if constexpr (R == 16) {
#pragma GCC unroll 64
    for (int i = 0; i < 44; ++i) exchange(r[k16[2 * i]], r[k16[2 * i + 1]]);  // 8-15, then the merge
  }
}

// out[j] = lane j of in[0], ..., in[7] (an 8 x 8 transpose).
HSRGEOM_NET_INLINE void transpose8(const Lanes* in, Lanes* out) {
  Lanes t[8], u[8];
#pragma GCC unroll 4
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shufflevector(in[i], in[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(in[i], in[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
#pragma GCC unroll 2
  for (int h = 0; h < 8; h += 4) {
    u[h] = __builtin_shufflevector(t[h], t[h + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    u[h + 1] = __builtin_shufflevector(t[h], t[h + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    u[h + 2] = __builtin_shufflevector(t[h + 1], t[h + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    u[h + 3] = __builtin_shufflevector(t[h + 1], t[h + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    out[i] = __builtin_shufflevector(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    out[i + 4] = __builtin_shufflevector(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// R registers (a power of two) sorted as one sequence of 8 R lanes, register-major: sorted runs
// of one register (fewer than 8 registers: each register sorted alone; 8: each lane sorted down
// the registers, then transposed) or two (16: the same, register 2 j and 2 j + 1 then holding
// lane j), then runs of S / 2 registers merged into runs of S (S = 2 or 4, ..., R): the flip
// pairs register v with the reverse of register v ^ (S - 1), the half-cleaners of strides of
// whole registers pair v with v ^ T, and each register ends with its own half-cleaners.
template <int R>
HSRGEOM_NET_INLINE void sort_registers(Lanes* r) {
  if constexpr (R >= 8) {
    sort_lanes<R>(r);
    Lanes t[16];
    transpose8(r, t);
    if constexpr (R == 16) transpose8(r + 8, t + 8);
#pragma GCC unroll 16
    for (int j = 0; j < R; ++j) r[j] = R == 16 ? t[j % 2 * 8 + j / 2] : t[j];
  } else {
#pragma GCC unroll 16
    for (int v = 0; v < R; ++v) r[v] = sorted(r[v]);
  }
#pragma GCC unroll 8
  for (int S = R == 16 ? 4 : 2; S <= R; S *= 2) {
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
        if (v < w) exchange(r[v], r[w]);
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
