// Threads inside one call: the thread-count policy (resolve_threads), a parallel loop that
// carries exceptions and interrupts across the region (parallel_for), and the per-query loop
// of a batch (for_each_query). The policy and its guarantees are stated below.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define HSRGEOM_ATFORK 1
#else
#define HSRGEOM_ATFORK 0
#endif

#include "hsrgeom/interrupt.hpp"
#include "hsrgeom/types.hpp"

namespace hsrgeom {

// ---- threads ---------------------------------------------------------------------------------
// Policy: a thread count (n_threads=, set_num_threads) is an upper bound, never a command. A
// parallel region starts at most
//   - kMaxThreads (the Python layer rejects larger requests with a ValueError),
//   - the processors OpenMP reports (omp_get_num_procs: more threads only oversubscribe),
//   - the work items it has (parallel_for),
//   - the threads the process can start now (startable_threads): libgomp ends the process
//     ("Thread creation failed") when pthread_create fails, e.g. under an address-space limit,
//     so a count this calling thread has not started before is first tried with std::thread,
//     whose failure is an exception, and lowered to what started;
//   - one in a process forked from one that had loaded hsrgeom (forked_child): libgomp's
//     threads do not survive a fork, and a child's parallel region then waited forever for them
//     (os.fork() after a 2-thread build, then a 2-thread report: measured). As PyTorch does, a
//     forked child runs every call on its calling thread (multiprocessing's "spawn" and
//     "forkserver" workers, and Dask's, are not forked children of the loading process).
// The result never depends on the thread count (only float sums' rounding may, as documented).
constexpr int kMaxThreads = 4096;
inline std::atomic<int>& default_threads_ref() {
  static std::atomic<int> n{0};  // 0: all cores (atomic: set while other threads' calls read it)
  return n;
}
namespace detail {
inline std::atomic<bool>& forked_flag() {
  static std::atomic<bool> forked{false};
  return forked;
}
// Registers the fork handler once per loaded module (the namespace-scope variable below calls
// it when the module is loaded, before any thread or fork of ours).
inline bool watch_forks() {
#if HSRGEOM_ATFORK
  static const bool registered = pthread_atfork(nullptr, nullptr, [] { forked_flag().store(true); }) == 0;
  return registered;
#else
  return false;
#endif
}
inline const bool kWatchingForks = watch_forks();
}  // namespace detail
// True in a process forked (fork(2), os.fork, multiprocessing's "fork") after hsrgeom was loaded.
inline bool forked_child() { return detail::forked_flag().load(std::memory_order_relaxed); }
inline int max_threads() {
#ifdef _OPENMP
  if (forked_child()) return 1;
  return std::max(1, std::min(omp_get_num_procs(), kMaxThreads));
#else
  return 1;
#endif
}
// At most `want` (>= 1): how many threads, the caller included, can run at once. Each calling
// thread remembers the largest count it has seen start (libgomp keeps a pool of workers per
// calling thread, so those are not created again); a larger count is tried by starting the
// missing threads together (they wait until all are up, then end) and joining them.
inline int startable_threads(int want) {
  thread_local int known = 1;
  if (want <= known) return want;
  std::mutex mu;
  std::condition_variable cv;
  bool go = false;
  std::vector<std::thread> started;
  started.reserve(static_cast<size_t>(want - 1));
  try {
    while (static_cast<int>(started.size()) + 1 < want)
      started.emplace_back([&] {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return go; });
      });
  } catch (const std::system_error&) {
    // EAGAIN/ENOMEM: no more threads now; run with those that started
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    go = true;
  }
  cv.notify_all();
  for (std::thread& t : started) t.join();
  const int got = static_cast<int>(started.size()) + 1;
  known = std::max(known, got);
  return got;
}
// Threads for a call asking for `requested` (<= 0: the default, set_num_threads; 0 there: all
// processors), within the policy above.
inline int resolve_threads(int requested) {
  int n = requested > 0 ? requested : default_threads_ref().load();
  if (n <= 0) n = max_threads();
  return startable_threads(std::max(1, std::min(n, max_threads())));
}

// Waking a second thread costs up to ~10 ms on some virtual machines (measured: a 2-thread
// region around a 256-point build took 12 ms instead of 0.06 ms), so work below this many
// "units" (roughly flops) runs on the calling thread.
constexpr double kParallelWork = 4e6;
inline int threads_for_work(int threads, double work) {
  return work < kParallelWork ? 1 : resolve_threads(threads);
}

// Calls f(i, thread_id) for i in [0, count), dynamically scheduled over `threads` threads.
// An exception thrown by f (interrupt::Interrupted included: every 8th iteration of a thread
// checks for an interrupt) skips the iterations not yet started and is rethrown after the region. The
// workers follow the calling thread's interrupt state (interrupt.hpp).
template <class F>
void parallel_for(index_t count, int threads, F&& f) {
  threads = static_cast<int>(std::min<index_t>(std::min(threads, max_threads()), std::max<index_t>(count, 1)));
#ifdef _OPENMP
  if (threads > 1) threads = startable_threads(threads);
  if (threads > 1) {
    std::exception_ptr err = nullptr;
    std::atomic<bool> failed{false};
    interrupt::State* const cancel = interrupt::current();
#pragma omp parallel num_threads(threads)
    {
      const interrupt::Adopt adopt(cancel);
      unsigned done = 0;  // this thread's iterations
#pragma omp for schedule(dynamic, 1)
      for (index_t i = 0; i < count; ++i) {
        if (failed.load(std::memory_order_relaxed)) continue;  // drain: no exception crosses the region
        try {
          if ((done++ & 7) == 0) interrupt::check();
          f(i, omp_get_thread_num());
        } catch (...) {
          failed.store(true, std::memory_order_relaxed);
#pragma omp critical
          if (!err) err = std::current_exception();
        }
      }
    }
    if (err) std::rethrow_exception(err);
    return;
  }
#endif
  for (index_t i = 0; i < count; ++i) {
    if ((i & 7) == 0) interrupt::check();
    f(i, 0);
  }
}

// Runs f(j, counters) for every query j in [0, m), in parallel when the estimated total `work`
// (roughly flops) pays for it, and stores each query's counters in *st when given.
template <class F>
void for_each_query(index_t m, QueryStats* st, int threads, double work, F&& f) {
  if (st) st->resize(m);
  parallel_for(m, threads_for_work(threads, work), [&](index_t j, int) {
    Counters c;
    f(j, c);
    if (st) c.store(*st, j);
  });
}

}  // namespace hsrgeom
