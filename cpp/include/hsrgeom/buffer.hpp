// Output arrays (reported ids, scores): std::vector with OutputAllocator, which
//  - leaves elements uninitialised on resize (every element is written before it is read: an
//    output is filled right after it is sized, so zero-filling it first would write it twice);
//  - puts blocks of >= 32 MB on transparent huge pages (madvise MADV_HUGEPAGE, as numpy does for
//    its arrays): glibc maps blocks that large afresh for every allocation (32 MB is the most its
//    adaptive mmap threshold rises to), and filling fresh memory costs one page fault per 4 KB,
//    several times the cost of writing the 4 KB. Smaller blocks come from malloc's heap, which
//    reuses freed memory without faults (advising them too made 16 MB outputs 25 % slower).
// The vectors are handed to numpy without a copy (bindings' to_numpy), so a user's result array
// is such a block.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace hsrgeom {

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
    if (bytes < kHugeFrom) return static_cast<T*>(::operator new(bytes));
    const std::size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    void* p = std::aligned_alloc(kHugePage, rounded);
    if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(p, rounded, MADV_HUGEPAGE);  // advice only: failure changes nothing but speed
#endif
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    if (n * sizeof(T) < kHugeFrom) ::operator delete(p);
    else std::free(p);
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

}  // namespace hsrgeom
