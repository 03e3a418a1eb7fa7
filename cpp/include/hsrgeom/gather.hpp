// Gather kernel for consumers of reported ids (hsrgeom.attention): for CSR rows (lims, ids) over
// a point set X, the weighted sums sum_j w_ij x_j of the reported rows only, accumulated in
// double. (The inner products <q_i, x_j> come with the ids: report(..., scores).)
//
// Work is split into chunks of consecutive entries (not rows), so a single query row with many
// entries (decoding) uses every thread as well as many rows do (prefill). A chunk writes the
// partial sums of the rows it touches into its own buffer; buffers are added up afterwards, in
// chunk order, so the result does not depend on the number of threads.
#pragma once

#include <algorithm>
#include <vector>

#include "hsrgeom/interrupt.hpp"
#include "hsrgeom/parallel.hpp"

namespace hsrgeom {

struct EntryChunks {
  std::vector<index_t> begin;  // chunk c covers entries [begin[c], begin[c + 1])
  EntryChunks(index_t nnz, int threads) {
    const index_t size = std::max<index_t>(2048, nnz / (8 * std::max(threads, 1)) + 1);
    for (index_t e = 0; e < nnz; e += size) begin.push_back(e);
    begin.push_back(nnz);
  }
  index_t count() const { return static_cast<index_t>(begin.size()) - 1; }
};

// Rows are gathered in id order, with gaps: hardware prefetchers don't follow them, so the rows
// kPrefetch entries ahead are requested explicitly (measured: decode at n = 1e6, d = 128,
// 63k entries, one thread: weighted sum 12 -> 6.5 ms).
constexpr index_t kPrefetch = 16;

template <class T>
inline void prefetch_row(const T* X, int d, const index_t* ids, index_t e, index_t end) {
  if (e + kPrefetch >= end) return;
  const char* p = reinterpret_cast<const char*>(X + static_cast<size_t>(ids[e + kPrefetch]) * d);
  for (size_t off = 0; off < sizeof(T) * static_cast<size_t>(d); off += 64) __builtin_prefetch(p + off);
}

// Row of entry e: the i with lims[i] <= e < lims[i + 1] (lims non-decreasing, m + 1 values).
inline index_t row_of(const index_t* lims, index_t m, index_t e) {
  return static_cast<index_t>(std::upper_bound(lims, lims + m + 1, e) - lims) - 1;
}

// out[i] = sum over the entries e of row i of w[e] * X[ids[e]]  (out: m x dx, zeroed here).
template <class T>
void gather_weighted_sum(const T* X, int dx, const index_t* lims, index_t m, const index_t* ids,
                         const double* w, double* out, int threads) {
  std::fill(out, out + static_cast<size_t>(m) * dx, 0.0);
  const index_t nnz = lims[m];
  if (nnz == 0) return;
  const int nt = threads_for_work(threads, static_cast<double>(nnz) * dx);
  const EntryChunks chunks(nnz, nt);
  std::vector<index_t> first(chunks.count());
  std::vector<std::vector<double>> part(chunks.count());
  parallel_for(chunks.count(), nt, [&](index_t c, int) {
    index_t e = chunks.begin[c];
    const index_t end = chunks.begin[c + 1];
    const index_t r0 = row_of(lims, m, e), r1 = row_of(lims, m, end - 1);
    first[c] = r0;
    std::vector<double>& acc = part[c];
    acc.assign(static_cast<size_t>(r1 - r0 + 1) * dx, 0.0);
    for (index_t i = r0; e < end; ++i) {
      if ((i & 255) == 0) interrupt::check();
      double* a = acc.data() + static_cast<size_t>(i - r0) * dx;
      for (const index_t stop = std::min(end, lims[i + 1]); e < stop; ++e) {
        prefetch_row(X, dx, ids, e, end);
        const T* x = X + static_cast<size_t>(ids[e]) * dx;
        const double we = w[e];
        for (int k = 0; k < dx; ++k) a[k] += we * static_cast<double>(x[k]);
      }
    }
  });
  for (index_t c = 0; c < chunks.count(); ++c) {
    double* o = out + static_cast<size_t>(first[c]) * dx;
    for (size_t k = 0; k < part[c].size(); ++k) o[k] += part[c][k];
  }
}

}  // namespace hsrgeom
