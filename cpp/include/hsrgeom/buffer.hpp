// Output arrays (reported ids, scores): std::vector with OutputAllocator, which
//  - leaves elements uninitialised on resize (every element is written before it is read: an
//    output is filled right after it is sized, so zero-filling it first would write it twice);
//  - puts blocks of >= 32 MB on transparent huge pages (madvise MADV_HUGEPAGE, as numpy does for
//    its arrays): glibc maps blocks that large afresh for every allocation (32 MB is the most its
//    adaptive mmap threshold rises to), and filling fresh memory costs one page fault per 4 KB,
//    several times the cost of writing the 4 KB (smaller blocks: advising them too made 16 MB
//    outputs 25 % slower);
//  - keeps freed blocks of >= 1 MiB for the next outputs (OutputPool: at most 8 blocks, 256 MiB
//    in all, per process). Fresh memory is zeroed by the kernel page by page on first touch,
//    and glibc returns large freed blocks to the kernel: 200 queries of 30,000 ids (48 MB) took
//    24-25 huge-page faults on every call, and with two threads the arenas (~30 MB each) 11,700
//    faults; kept blocks made those calls 1.3x (one thread) and 2.2x (two) faster
//    (PartitionTree, d = 3, 10^6 points; docs/performance.md, session 35).
//  - are written with non-temporal stores (stream_ids) where a report expects more ids per thread
//    than the caches hold (kStreamOutputBytes): a plain store reads each line before writing it.
// The vectors are handed to numpy without a copy (bindings' to_numpy), so a user's result array
// is such a block, and it returns to the pool when numpy frees it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

namespace hsrgeom {

// Freed output blocks kept for reuse. Block sizes are rounded up to classes 1/8 of a power of
// two apart (<= 12.5 % unused), so that the same report size asks for the same class again; a
// request takes a kept block of its class or up to 25 % larger, allocated the same way (huge or
// not). give() returns false when the block is not kept (the caller frees it).
class OutputPool {
 public:
  static constexpr std::size_t kFrom = std::size_t{1} << 20;       // smaller blocks: malloc's heap
  static constexpr std::size_t kMaxBytes = std::size_t{256} << 20;  // kept in all, at most
  static constexpr int kMaxBlocks = 8;

  static std::size_t rounded(std::size_t bytes) {
    const int e = 63 - __builtin_clzll(static_cast<unsigned long long>(bytes));  // floor(log2)
    const std::size_t step = std::size_t{1} << (e - 3);  // (bytes >= kFrom: e >= 20)
    return (bytes + step - 1) / step * step;
  }
  static void* take(std::size_t bytes, bool huge) {
    OutputPool& pool = get();
    std::lock_guard<std::mutex> lock(pool.mutex_);
    int best = -1;
    for (int i = 0; i < pool.count_; ++i) {
      const Block& b = pool.blocks_[i];
      if (b.huge == huge && b.bytes >= bytes && b.bytes - bytes <= bytes / 4 &&
          (best < 0 || b.bytes < pool.blocks_[best].bytes))
        best = i;
    }
    return best < 0 ? nullptr : pool.erase(best).p;
  }
  static bool give(void* p, std::size_t bytes, bool huge) noexcept {
    if (bytes > kMaxBytes) return false;
    OutputPool& pool = get();
    Block evicted[kMaxBlocks];
    int n_evicted = 0;
    {
      std::lock_guard<std::mutex> lock(pool.mutex_);
      while (pool.count_ == kMaxBlocks || pool.total_ + bytes > kMaxBytes)  // the oldest go
        evicted[n_evicted++] = pool.erase(0);
      pool.blocks_[pool.count_++] = {p, bytes, huge};
      pool.total_ += bytes;
    }
    for (int i = 0; i < n_evicted; ++i) release(evicted[i].p, evicted[i].huge);
    return true;
  }
  // Frees every kept block; returns their bytes.
  static std::size_t clear() noexcept {
    OutputPool& pool = get();
    Block kept[kMaxBlocks];
    int n = 0;
    std::size_t bytes = 0;
    {
      std::lock_guard<std::mutex> lock(pool.mutex_);
      for (n = 0; n < pool.count_; ++n) kept[n] = pool.blocks_[n];
      bytes = pool.total_;
      pool.count_ = 0;
      pool.total_ = 0;
    }
    for (int i = 0; i < n; ++i) release(kept[i].p, kept[i].huge);
    return bytes;
  }
  static void release(void* p, bool huge) noexcept {
    if (huge) std::free(p);
    else ::operator delete(p);
  }

 private:
  struct Block {
    void* p = nullptr;
    std::size_t bytes = 0;
    bool huge = false;
  };
  // Removes kept block i (the caller holds the mutex) and returns it.
  Block erase(int i) {
    const Block b = blocks_[i];
    total_ -= b.bytes;
    for (; i + 1 < count_; ++i) blocks_[i] = blocks_[i + 1];
    --count_;
    return b;
  }
  // never destroyed: numpy may free result arrays (and give their blocks here) at exit
  static OutputPool& get() {
    static OutputPool* pool = make();
    return *pool;
  }
  // The mutex is held across fork(2) (taken before, released after in both processes), so a
  // child forked while another thread was in take or give does not inherit it locked.
  static OutputPool* make() {
    auto* pool = new OutputPool;
#if defined(__unix__) || defined(__APPLE__)
    pthread_atfork([] { get().mutex_.lock(); }, [] { get().mutex_.unlock(); }, [] { get().mutex_.unlock(); });
#endif
    return pool;
  }
  std::mutex mutex_;
  Block blocks_[kMaxBlocks];  // oldest first
  int count_ = 0;
  std::size_t total_ = 0;
};

template <class T>
struct OutputAllocator {
  using value_type = T;
  static constexpr std::size_t kHugeFrom = std::size_t{32} << 20;  // bytes
  static constexpr std::size_t kHugePage = std::size_t{2} << 20;

  OutputAllocator() noexcept = default;
  template <class U>
  OutputAllocator(const OutputAllocator<U>&) noexcept {}

  T* allocate(std::size_t n) {
    if (n > static_cast<std::size_t>(-1) / sizeof(T)) throw std::bad_array_new_length();
    const std::size_t bytes = n * sizeof(T);
    if (bytes < OutputPool::kFrom) return static_cast<T*>(::operator new(bytes));
    // (classes above 32 MB are multiples of 4 MB: whole huge pages)
    const std::size_t block = OutputPool::rounded(bytes);
    const bool huge = block >= kHugeFrom;
    if (void* p = OutputPool::take(block, huge)) return static_cast<T*>(p);
    if (!huge) return static_cast<T*>(::operator new(block));
    void* p = std::aligned_alloc(kHugePage, block);
    if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(p, block, MADV_HUGEPAGE);  // advice only: failure changes nothing but speed
#endif
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    const std::size_t bytes = n * sizeof(T);
    if (bytes < OutputPool::kFrom) return ::operator delete(p);
    const std::size_t block = OutputPool::rounded(bytes);
    const bool huge = block >= kHugeFrom;
    if (!OutputPool::give(p, block, huge)) OutputPool::release(p, huge);
  }
  // Default-initialisation (no zero-fill) for resize(n); construct(p, args...) as usual.
  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <class U>
  bool operator==(const OutputAllocator<U>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const OutputAllocator<U>&) const noexcept { return false; }
};

using IdVector = std::vector<std::int64_t, OutputAllocator<std::int64_t>>;
using ScoreVector = std::vector<double, OutputAllocator<double>>;

// A report streams its output (stream_ids) when it expects at least this many bytes of ids per
// thread: past a core's L2 (2 MiB on the machines measured), where a plain store first reads
// each line it writes. Smaller outputs stay in the caches, where the user reads them next.
constexpr std::size_t kStreamOutputBytes = std::size_t{4} << 20;
// Copies of fewer ids than this are plain copies even then.
constexpr std::ptrdiff_t kStreamIds = 512;

// Copies n ids (int64, or uint32 widened) to dst with non-temporal stores: dst's lines are not
// read before they are written, nor kept in the caches (docs/performance.md, session 37).
template <class Id>
void stream_ids(std::int64_t* dst, const Id* src, std::ptrdiff_t n) {
  static_assert(std::is_same_v<Id, std::int64_t> || std::is_same_v<Id, std::uint32_t>, "int64 or uint32 ids");
  std::ptrdiff_t k = 0;
#if defined(__AVX512F__)
  for (; k < n && (reinterpret_cast<std::uintptr_t>(dst + k) & 63); ++k) dst[k] = static_cast<std::int64_t>(src[k]);
  for (; k + 8 <= n; k += 8) {
    __m512i v;
    if constexpr (sizeof(Id) == 8) v = _mm512_loadu_si512(src + k);
    else v = _mm512_cvtepu32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + k)));
    _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + k), v);
  }
  _mm_sfence();
#elif defined(__AVX2__)
  for (; k < n && (reinterpret_cast<std::uintptr_t>(dst + k) & 31); ++k) dst[k] = static_cast<std::int64_t>(src[k]);
  for (; k + 4 <= n; k += 4) {
    __m256i v;
    if constexpr (sizeof(Id) == 8) v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + k));
    else v = _mm256_cvtepu32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k)));
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + k), v);
  }
  _mm_sfence();
#endif
  for (; k < n; ++k) dst[k] = static_cast<std::int64_t>(src[k]);
}

// Copies n ids into a report's output: by stream_ids when `stream` and n >= kStreamIds.
template <class Id>
void copy_out_ids(std::int64_t* dst, const Id* src, std::ptrdiff_t n, bool stream) {
  if (stream && n >= kStreamIds) return stream_ids(dst, src, n);
  std::copy(src, src + n, dst);
}

}  // namespace hsrgeom
