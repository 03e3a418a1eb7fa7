// Report results: per-query id lists (IdList), the compressed batch result (ReportResult), the
// id sort that makes outputs ascending (sort_ids), and the per-thread arenas a batch report
// fills (report_queries). Contract: a sorted report lists each query's ids ascending
// with their scores (when asked for) permuted alongside; the ids are the same for any thread count.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "hsrgeom/buffer.hpp"
#include "hsrgeom/dispatch.hpp"
#include "hsrgeom/parallel.hpp"
#include "hsrgeom/sort_network.hpp"
#include "hsrgeom/types.hpp"

namespace hsrgeom {

// One query's reported ids and, when asked for, their scores <a, x> (float64 accumulation of
// the stored coordinates, in the same order as ids).
struct IdList {
  IdVector ids;
  ScoreVector scores;
  bool stream = false;  // a report's output past the caches: large blocks go in by stream_ids
  void clear() {
    ids.clear();
    scores.clear();
  }
  // Appends id, and <a, x> when with_score (x: the point's stored coordinates).
  template <class P>
  HSRGEOM_INLINE void add(std::int64_t id, bool with_score, const double* a, const P* x, int d) {
    ids.push_back(id);
    if (with_score) scores.push_back(dot_f64(a, x, d));
  }
  // Appends count ids at once, with the scores of their points stored row after row from x.
  template <class P>
  void add_rows(const std::int64_t* id, index_t count, bool with_score, const double* a, const P* x, int d) {
    ids.insert(ids.end(), id, id + count);
    if (with_score)
      for (index_t k = 0; k < count; ++k) scores.push_back(dot_f64(a, x + k * static_cast<index_t>(d), d));
  }
};

// Compressed rows like faiss::RangeSearchResult: ids of query j are ids[lims[j] : lims[j+1]],
// scores (when asked for; else empty) alongside, like its distances.
struct ReportResult {
  std::vector<std::int64_t> lims;
  IdVector ids;
  ScoreVector scores;
  static ReportResult from_lists(std::vector<IdList>& lists, bool with_scores) {
    ReportResult r;
    r.lims.resize(lists.size() + 1);
    r.lims[0] = 0;
    for (size_t j = 0; j < lists.size(); ++j) r.lims[j + 1] = r.lims[j] + lists[j].ids.size();
    r.ids.resize(r.lims.back());
    if (with_scores) r.scores.resize(r.lims.back());
    for (size_t j = 0; j < lists.size(); ++j) {
      std::copy(lists[j].ids.begin(), lists[j].ids.end(), r.ids.begin() + r.lims[j]);
      if (with_scores) std::copy(lists[j].scores.begin(), lists[j].scores.end(), r.scores.begin() + r.lims[j]);
      IdList().ids.swap(lists[j].ids);
      IdList().scores.swap(lists[j].scores);
    }
    return r;
  }
};

// Per-query lists of a scan over chunks of consecutive points (cells[chunk][query]) joined in
// chunk order, so ids stay ascending; the cells are freed on the way.
inline std::vector<IdList> join_chunks(std::vector<std::vector<IdList>>& cells, index_t m, QueryStats* st) {
  std::vector<IdList> out(m);
  for (index_t j = 0; j < m; ++j) {
    for (auto& chunk : cells) {
      out[j].ids.insert(out[j].ids.end(), chunk[j].ids.begin(), chunk[j].ids.end());
      out[j].scores.insert(out[j].scores.end(), chunk[j].scores.begin(), chunk[j].scores.end());
      chunk[j] = IdList();
    }
    if (st) st->points_reported[j] = static_cast<std::int64_t>(out[j].ids.size());
  }
  return out;
}

// empty() of a structure that counts anyway: 1 where the count is 0.
inline std::vector<std::uint8_t> zero_counts(const std::vector<std::int64_t>& counts) {
  std::vector<std::uint8_t> out(counts.size());
  for (size_t j = 0; j < counts.size(); ++j) out[j] = counts[j] == 0;
  return out;
}

// A cleared per-thread buffer for one query's ids (see report_queries).
inline IdList& id_scratch() {
  static thread_local IdList v;
  v.clear();
  return v;
}

namespace detail {

// The radix sorts' histograms: per pass p of r-bit digits, how many of the k ids at src (read as
// W words) have each digit, passes x 2^r counts in a per-thread buffer; live[0..nlive) gets the
// passes whose digit is not the same for every id (the others would not move them).
template <class W>
std::uint32_t* digit_histograms(const std::int64_t* src, size_t k, int passes, int r, int* live, int& nlive) {
  const size_t buckets = size_t{1} << r;
  const W mask = static_cast<W>(buckets - 1);
  static thread_local std::vector<std::uint32_t> store;
  store.assign(static_cast<size_t>(passes) * buckets, 0);
  std::uint32_t* hist = store.data();
  auto count = [&](auto kPasses) {  // the passes a compile-time constant: the loop over them unrolled
    // (a loop over a run-time number of passes cost ~0.9 ns per id at 10,000 ids, of ~5.5 sorted)
    for (size_t i = 0; i < k; ++i) {
      const auto id = static_cast<W>(src[i]);
      for (int p = 0; p < kPasses; ++p) ++hist[p * buckets + ((id >> (r * p)) & mask)];
    }
  };
  switch (passes) {
    case 1: count(std::integral_constant<int, 1>{}); break;
    case 2: count(std::integral_constant<int, 2>{}); break;
    case 3: count(std::integral_constant<int, 3>{}); break;
    default: count(passes);
  }
  nlive = 0;
  for (int p = 0; p < passes; ++p)
    if (hist[p * buckets + ((static_cast<W>(src[0]) >> (r * p)) & mask)] != k) live[nlive++] = p;
  return hist;
}

// Each live pass's counts (digit_histograms) become the offsets at which its buckets start.
inline void bucket_offsets(std::uint32_t* hist, size_t buckets, const int* live, int nlive) {
  for (int t = 0; t < nlive; ++t) {
    std::uint32_t* h = hist + live[t] * buckets;
    std::uint32_t sum = 0;
    for (size_t j = 0; j < buckets; ++j) {
      const std::uint32_t c = h[j];
      h[j] = sum;
      sum += c;
    }
  }
}

// LSD radix sort of the k ids at src (all < 2^bits; scores at ssrc alongside when not null) into
// dst (sdst), passing through tmp (tsc): digits of r bits, r = 8 for a few ids (the 256-entry
// histograms stay cheap next to k) and up to 11 for many (fewer passes over the ids); a pass
// whose digit is the same for every id is skipped. src may be overwritten.
inline void radix_ids(std::int64_t* src, double* ssrc, size_t k, int bits, std::int64_t* dst, double* sdst,
                      std::int64_t* tmp, double* tsc) {
  const int passes = std::max(1, (bits + (k >= 2048 ? 10 : 7)) / (k >= 2048 ? 11 : 8));
  const int r = (bits + passes - 1) / passes;
  const size_t buckets = size_t{1} << r;
  const std::uint64_t mask = buckets - 1;
  int live[8], nlive = 0;  // the passes that move ids
  std::uint32_t* hist = digit_histograms<std::uint64_t>(src, k, passes, r, live, nlive);
  if (nlive == 0) {
    std::copy(src, src + k, dst);
    if (ssrc) std::copy(ssrc, ssrc + k, sdst);
    return;
  }
  bucket_offsets(hist, buckets, live, nlive);
  // ping-pong so that the last live pass writes dst: src -> (tmp|dst) -> ... -> dst
  std::int64_t* to = (nlive % 2) ? dst : tmp;
  double* sto = (nlive % 2) ? sdst : tsc;
  for (int t = 0; t < nlive; ++t) {
    const int p = live[t];
    std::uint32_t* h = hist + p * buckets;
    for (size_t i = 0; i < k; ++i) {
      const std::uint32_t at = h[(static_cast<std::uint64_t>(src[i]) >> (r * p)) & mask]++;
      to[at] = src[i];
      if (ssrc) sto[at] = ssrc[i];
    }
    if (to == dst) {
      src = dst, ssrc = sdst, to = tmp, sto = tsc;
    } else {
      src = tmp, ssrc = tsc, to = dst, sto = sdst;
    }
  }
}

// LSD radix sort of k ids < 2^bits, bits <= 32, read from src, as words W moved between
// per-thread buffers from the first pass to the last, then handed to finish(words) in order: W =
// uint32 holds the id alone (half the bytes of radix_ids), W = uint64 the id in its high half and
// its position in src in the low one (k <= 2^32: ids are distinct and < 2^32), so that scores
// can follow with one gather at the end instead of moving beside the ids in every pass. The
// number of passes p minimises p (k + 2^(bits / p) / 3), the ids moved and the histograms cleared
// and summed (fitted on random ids: ~1.2 ns per id and pass, 0.4 per bucket). Sorted
// PartitionTree reports (d = 2, 200 queries, one thread) went from 10.2-10.3 to 9.8-9.9 ns per
// id (10^6 points, 1,000 ids per query) and 7.2-7.5 to 6.7-6.8 (10^7, 10,000).
// The last pass scatters into a cached buffer and finish copies it out sequentially: dst is a
// report's fresh output, and scattered into directly it cost ~1.3 ns per id more (10^6 points,
// 10,000 ids: 6.5 -> 5.2 ns per id sorted, d = 2; with the histograms' passes unrolled 4.5, and
// d = 3 9.0-9.4 -> 6.9).
template <class W, class Finish>
void radix_words32(const std::int64_t* src, size_t k, int bits, Finish&& finish) {
  static_assert(std::is_same_v<W, std::uint32_t> || std::is_same_v<W, std::uint64_t>, "id, or id and position");
  constexpr int kIdAt = sizeof(W) == 8 ? 32 : 0;  // where the id sits in a word
  int passes = 1;
  double best = -1;
  for (int p = 1; p <= 4; ++p) {
    const int r = (bits + p - 1) / p;
    if (r > 16) continue;
    const double cost = p * (static_cast<double>(k) + static_cast<double>(size_t{1} << r) / 3);
    if (best < 0 || cost < best) best = cost, passes = p;
  }
  const int r = (bits + passes - 1) / passes;
  const size_t buckets = size_t{1} << r;
  const std::uint32_t mask = static_cast<std::uint32_t>(buckets - 1);
  static thread_local std::vector<W> a, b;
  a.resize(k);
  b.resize(k);
  W *x = a.data(), *y = b.data();
  auto word = [](std::int64_t id, size_t i) {
    if constexpr (kIdAt == 0) return static_cast<W>(id);
    else return static_cast<W>(id) << kIdAt | static_cast<W>(i);
  };
  int live[4], nlive = 0;  // the passes that move ids
  std::uint32_t* hist = digit_histograms<std::uint32_t>(src, k, passes, r, live, nlive);
  if (nlive == 0) {  // one id (distinct ids differ in some digit)
    for (size_t i = 0; i < k; ++i) y[i] = word(src[i], i);
    return finish(static_cast<const W*>(y));
  }
  bucket_offsets(hist, buckets, live, nlive);
  {  // the first pass reads src
    std::uint32_t* h = hist + live[0] * buckets;
    const int shift = r * live[0];
    for (size_t i = 0; i < k; ++i) {
      const auto id = static_cast<std::uint32_t>(src[i]);
      y[h[(id >> shift) & mask]++] = word(src[i], i);
    }
  }
  for (int t = 1; t < nlive; ++t) {
    std::swap(x, y);
    std::uint32_t* h = hist + live[t] * buckets;
    const int shift = kIdAt + r * live[t];
    for (size_t i = 0; i < k; ++i) y[h[static_cast<std::uint32_t>(x[i] >> shift) & mask]++] = x[i];
  }
  finish(static_cast<const W*>(y));
}

// Ids alone: the words copied and widened into dst.
// (stream: dst is a report's output past the caches, see copy_out_ids)
inline void radix_ids32(const std::int64_t* src, size_t k, int bits, std::int64_t* dst, bool stream = false) {
  radix_words32<std::uint32_t>(src, k, bits, [&](const std::uint32_t* w) {
    copy_out_ids(dst, w, static_cast<std::ptrdiff_t>(k), stream);
  });
}

// Ids and their scores (ssrc[i] the score of src[i]): ids into dst, scores gathered into sdst.
// Sorted reports with scores (d = 2, 10^6 points, one thread), against moving the scores in
// every pass of radix_ids: see docs/performance.md.
inline void radix_scored32(const std::int64_t* src, const double* ssrc, size_t k, int bits, std::int64_t* dst,
                           double* sdst) {
  radix_words32<std::uint64_t>(src, k, bits, [&](const std::uint64_t* w) {
    for (size_t i = 0; i < k; ++i) {
      dst[i] = static_cast<std::int64_t>(w[i] >> 32);
      sdst[i] = ssrc[static_cast<std::uint32_t>(w[i])];
    }
  });
}

// Sorts k >= 1 distinct ids, all in [lo, lo + span), from src into dst: one pass into about k
// buckets on the top bits of id - lo, then an insertion sort, which only moves ids within their
// bucket. Returns false, with dst unused, when the buckets are so uneven that the insertion sort
// would cost more than ~k moves (the sum of squared bucket sizes above 4 k: random ids give
// ~1.5-2 k; ids crowded into a few buckets would cost up to k^2 / 4). Measured on random ids,
// per id: 100 ids < 2^20 2.3 ns against 5.8 for radix_ids32's 3 passes.
inline bool bucket_ids(const std::int64_t* src, size_t k, std::int64_t lo, std::uint64_t span, std::int64_t* dst) {
  const int span_bits = span > 1 ? 64 - __builtin_clzll(span - 1) : 0;  // bits of the largest id - lo
  const int r = std::min(span_bits, 64 - __builtin_clzll(static_cast<std::uint64_t>(k)));
  const int shift = span_bits - r;
  const size_t buckets = size_t{1} << r;
  static thread_local std::vector<std::uint32_t> hist_store;
  hist_store.assign(buckets, 0);
  std::uint32_t* h = hist_store.data();
  for (size_t i = 0; i < k; ++i) ++h[static_cast<std::uint64_t>(src[i] - lo) >> shift];
  std::uint32_t sum = 0;
  std::uint64_t squares = 0;
  for (size_t j = 0; j < buckets; ++j) {
    const std::uint32_t c = h[j];
    h[j] = sum;
    sum += c;
    squares += std::uint64_t{c} * c;
  }
  if (squares > 4 * static_cast<std::uint64_t>(k)) return false;
  for (size_t i = 0; i < k; ++i) dst[h[static_cast<std::uint64_t>(src[i] - lo) >> shift]++] = src[i];
  for (size_t i = 1; i < k; ++i) {
    const std::int64_t v = dst[i];
    size_t j = i;
    for (; j > 0 && dst[j - 1] > v; --j) dst[j] = dst[j - 1];
    dst[j] = v;
  }
  return true;
}

// Sorts k distinct ids, all in [0, n), from src into dst by a pass over a bitmap of [0, n) (the
// bitmap cleared as it is read and kept per thread).
inline void bitmap_ids(const std::int64_t* src, size_t k, index_t n, std::int64_t* dst) {
  static thread_local std::vector<std::uint64_t> bits;  // all zero between calls
  const size_t words = (static_cast<size_t>(n) + 63) / 64;
  if (bits.size() < words) bits.resize(words, 0);
  for (size_t i = 0; i < k; ++i) bits[static_cast<std::uint64_t>(src[i]) >> 6] |= std::uint64_t{1} << (src[i] & 63);
  size_t w = 0;
  for (size_t i = 0; i < words; ++i) {
    std::uint64_t b = bits[i];
    if (!b) continue;
    bits[i] = 0;
    const auto base = static_cast<std::int64_t>(i * 64);
    do {
      dst[w++] = base + __builtin_ctzll(b);
      b &= b - 1;
    } while (b);
  }
}

}  // namespace detail

// Sorts the distinct ids of `in` (all in [0, n); scores alongside when in.scores is not empty)
// ascending into dst (k = in.ids.size() ids, and k scores into dscores when given). `in` is
// scratch afterwards (stream: dst is a report's output past the caches, see copy_out_ids).
// Up to kNetworkMaxIds ids < 2^32 (with scores < 2^25, each with its position
// in 32 bits): a sorting network in vector registers (sort_network.hpp); else a comparison sort
// for a few ids; a pass over a bitmap of [0, n) when the
// ids are dense (k >= n / 32, ids only: at most 32 bits scanned per id, the bitmap cleared as it
// is read and kept per thread); a bucket pass and an insertion sort for up to kBucketSortMaxIds
// ids without scores whose buckets come out even (over [0, n), or over the ids' range: a
// contiguous run of ids); else an LSD radix sort: for n <= 2^32 on 32-bit words (ids alone) or
// 64-bit words (an id and its position, the scores gathered at the end) through cached buffers,
// else on the 64-bit ids with their scores moving alongside (radix_ids).
// (On random ids alone the bucket sort is faster up to ~10,000 ids; inside reports, where it runs
// between traversals, it was 1.5x faster at 100 ids and ~10 % slower at 500-1,000 ids, where its
// insertion sort mispredicts more: it is kept below 256.)
constexpr size_t kBucketSortMaxIds = 255;
inline void sort_ids_into(IdList& in, index_t n, std::int64_t* dst, double* dscores, bool stream = false) {
  auto& ids = in.ids;
  const size_t k = ids.size();
  const bool sc = !in.scores.empty();
  if (!sc && k <= kNetworkMaxIds && static_cast<std::uint64_t>(n) <= (std::uint64_t{1} << 32) &&
      network_sort_ids(ids.data(), k, dst))
    return;
  if (sc && k <= kNetworkMaxIds && static_cast<std::uint64_t>(n) <= (std::uint64_t{1} << kNetworkIdBits)) {
    // with scores: each id and its position in 32 bits (k <= 128: 7 bits), sorted by the
    // network, the scores gathered by position
    std::int64_t word[128], sorted[128];  // (kNetworkMaxIds <= 128: sort_network.hpp)
    for (size_t i = 0; i < k; ++i) word[i] = ids[i] << kNetworkPosBits | static_cast<std::int64_t>(i);
    if (network_sort_ids(word, k, sorted)) {
      for (size_t i = 0; i < k; ++i) {
        dst[i] = sorted[i] >> kNetworkPosBits;
        dscores[i] = in.scores[static_cast<size_t>(sorted[i] & ((1 << kNetworkPosBits) - 1))];
      }
      return;
    }
  }
  if (k < 32 && !sc) {
    std::sort(ids.begin(), ids.end());
    std::copy(ids.begin(), ids.end(), dst);
    return;
  }
  if (k == 0) return;
  if (!sc && static_cast<double>(k) * 32 >= static_cast<double>(n)) return detail::bitmap_ids(ids.data(), k, n, dst);
  if (!sc && k <= kBucketSortMaxIds) {  // buckets over [0, n), else over the ids' own range
    if (detail::bucket_ids(ids.data(), k, 0, static_cast<std::uint64_t>(n), dst)) return;
    const auto [lo, hi] = std::minmax_element(ids.begin(), ids.end());
    if (detail::bucket_ids(ids.data(), k, *lo, static_cast<std::uint64_t>(*hi - *lo) + 1, dst)) return;
  }
  const std::uint64_t top = static_cast<std::uint64_t>(std::max<index_t>(n - 1, 1));
  const int bits = 64 - __builtin_clzll(top);
  if (bits <= 32) {
    if (!sc) return detail::radix_ids32(ids.data(), k, bits, dst, stream);
    return detail::radix_scored32(ids.data(), in.scores.data(), k, bits, dst, dscores);
  }
  static thread_local IdList tmp;
  tmp.ids.resize(k);
  if (sc) tmp.scores.resize(k);
  detail::radix_ids(ids.data(), sc ? in.scores.data() : nullptr, k, bits, dst, sc ? dscores : nullptr,
                    tmp.ids.data(), sc ? tmp.scores.data() : nullptr);
}

// Sorts out's distinct ids in [0, n) ascending, in place (and its scores with them).
inline void sort_ids(IdList& out, index_t n) {
  const size_t k = out.ids.size();
  if (k < 2) return;
  static thread_local IdList sorted;
  sorted.ids.resize(k);
  if (!out.scores.empty()) sorted.scores.resize(k);
  sort_ids_into(out, n, sorted.ids.data(), out.scores.empty() ? nullptr : sorted.scores.data());
  std::swap(out.ids, sorted.ids);
  if (!out.scores.empty()) std::swap(out.scores, sorted.scores);
}

// The thread policy's work units (parallel.hpp kParallelWork) per id a report writes: ~4 ns per
// sorted id, where a traversal's unit is a fraction of a nanosecond (a 200-query batch of
// 1,000-id ConvexLayers queries, ~1 ms sorted, ran on one thread by its traversal estimate alone).
constexpr double kWorkPerId = 32;

// A whole report without an allocation per query: fill(j, counters, out) appends query j's ids
// (and scores) to `out`; they go to the running thread's arena (sorted by id first when
// `sorted`, through the per-thread scratch) and are gathered into one ReportResult at the end
// (FAISS's RangeSearchPartialResult idea). Stores each query's counters in *st when given.
template <class Fill>
ReportResult report_queries(index_t m, QueryStats* st, int threads, double work, index_t n, bool sorted,
                            bool scores, Fill&& fill) {
  if (st) st->resize(m);
  // Growing the arenas by doubling cost ~30 % of a 100-id query (measured); start them at the
  // size the last report in this process needed per query (a hint: trimmed below if it was
  // far too large). The same hint adds the ids' cost to the work that decides the threads.
  static std::atomic<double> ids_per_query{0};
  const double hint = std::min(ids_per_query.load(), static_cast<double>(n));
  const double per_query = std::min(hint * 1.25, static_cast<double>(n));
  work += static_cast<double>(m) * hint * kWorkPerId;
  const int nt = static_cast<int>(std::min<index_t>(threads_for_work(threads, work), std::max<index_t>(m, 1)));
  const size_t guess = static_cast<size_t>(std::min(per_query * static_cast<double>(m) / nt, 16777216.0));
  std::vector<IdList> arena(nt);
  const bool stream = guess * sizeof(std::int64_t) >= kStreamOutputBytes;
  for (IdList& a : arena) {
    a.stream = stream;
    a.ids.reserve(guess);
    if (scores) a.scores.reserve(guess);
  }
  std::vector<std::int64_t> start(m), len(m);
  std::vector<int> owner(m);
  parallel_for(m, nt, [&](index_t j, int t) {
    Counters c;
    IdList& a = arena[t];
    start[j] = static_cast<std::int64_t>(a.ids.size());
    owner[j] = t;
    if (sorted) {  // sorted straight into the arena
      IdList& out = id_scratch();
      fill(j, c, out);
      const size_t at = a.ids.size(), k = out.ids.size();
      a.ids.resize(at + k);
      if (scores) a.scores.resize(at + k);
      if (!scores && std::is_sorted(out.ids.begin(), out.ids.end()))  // handed over in id order
        copy_out_ids(a.ids.data() + at, out.ids.data(), static_cast<std::ptrdiff_t>(k), stream);
      else
        sort_ids_into(out, n, a.ids.data() + at, scores ? a.scores.data() + at : nullptr, stream);
    } else {
      fill(j, c, a);
    }
    len[j] = static_cast<std::int64_t>(a.ids.size()) - start[j];
    c.reported = len[j];
    if (st) c.store(*st, j);
  });
  ReportResult r;
  r.lims.resize(m + 1);
  r.lims[0] = 0;
  for (index_t j = 0; j < m; ++j) r.lims[j + 1] = r.lims[j] + len[j];
  if (m > 0) ids_per_query = static_cast<double>(r.lims[m]) / static_cast<double>(m);
  if (nt == 1) {  // one arena, already in query order
    r.ids = std::move(arena[0].ids);
    if (scores) r.scores = std::move(arena[0].scores);
    if (r.ids.capacity() > 2 * r.ids.size() + 4096) r.ids.shrink_to_fit(), r.scores.shrink_to_fit();
    return r;
  }
  r.ids.resize(r.lims[m]);
  if (scores) r.scores.resize(r.lims[m]);
  const bool stream_all = static_cast<size_t>(r.lims[m]) * sizeof(std::int64_t) >= kStreamOutputBytes;
  for (index_t j = 0; j < m; ++j) {
    const IdList& a = arena[owner[j]];
    copy_out_ids(r.ids.data() + r.lims[j], a.ids.data() + start[j], len[j], stream_all);
    if (scores)
      std::copy(a.scores.begin() + start[j], a.scores.begin() + start[j] + len[j], r.scores.begin() + r.lims[j]);
  }
  return r;
}

}  // namespace hsrgeom
