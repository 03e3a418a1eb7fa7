// Cancellation of long calls (builds, batch queries): how Ctrl-C stops them within ~0.1 s.
//
// A caller that wants its call to be interruptible opens an interrupt::Scope on its thread (the
// Python bindings do, for every call; see bindings.cpp), with a poll function that says whether
// the call should stop (the bindings' takes the GIL and runs PyErr_CheckSignals(), like FAISS's
// PythonInterruptCallback). Long loops call
//   check()           -- throws Interrupted once the call is to stop (outside OpenMP regions, or
//                        inside parallel_for, which catches and drains, see parallel.hpp), or
//   stop_requested()  -- the same without throwing (inside OpenMP tasks; the code after the
//                        region then calls check()).
// Contract:
//  * Without a Scope (the C++ core used on its own, or a thread the caller did not mark) both are
//    a thread-local load and return / do nothing: never interrupted.
//  * The poll function runs only on the thread that opened the Scope, at most once per kPeriod
//    seconds; other threads (parallel_for's workers, which adopt the Scope's state) only read
//    the stop flag (one relaxed atomic load). The flag is sticky: once set, every later check
//    of the call stops.
//  * Cost: a check is a thread-local load, a relaxed atomic load and (on the owner thread) a
//    decrement; the clock is read once every `stride_` checks (adapted so that reads are ~a few
//    ms apart, at most 64 checks apart). Call it per block of work (thousands of points, a
//    node of a traversal every ~1000, a query of a batch), never per point.
//  * A structure being built when Interrupted is thrown is destroyed by the exception (no
//    half-built object); a query leaves the structure unchanged (queries are const; mutating
//    calls such as set_value_sums assign their results only at the end).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>

namespace hsrgeom {
namespace interrupt {

// Thrown by check() when the running call is to stop.
struct Interrupted : std::exception {
  const char* what() const noexcept override { return "hsrgeom: interrupted"; }
};

// Returns true when the call should stop. Called on the Scope's thread only; must not throw.
using PollFn = bool (*)(void* ctx);

// The cancellation state of one call.
class State {
 public:
  static constexpr double kPeriod = 0.05;  // seconds between two polls
  static constexpr long kMaxStride = 64;   // checks between two clock reads, at most

  State(PollFn poll, void* ctx) : poll_(poll), ctx_(ctx), read_(Clock::now()), polled_(read_) {}
  State(const State&) = delete;
  State& operator=(const State&) = delete;

  bool stopped() const { return stop_.load(std::memory_order_relaxed); }
  void request_stop() { stop_.store(true, std::memory_order_relaxed); }

  // On the owner thread: counts a check, polls when kPeriod has passed; true once stopped.
  bool tick() {
    if (--countdown_ > 0 || !poll_) return false;
    const Clock::time_point now = Clock::now();
    const double since_read = seconds(now - read_);
    read_ = now;
    // cheap checks: read the clock less often; a slow stretch: at every check again
    stride_ = since_read < kPeriod / 16 ? std::min(2 * stride_, kMaxStride) : since_read > kPeriod / 4 ? 1 : stride_;
    countdown_ = stride_;
    if (seconds(now - polled_) < kPeriod) return false;
    polled_ = now;
    if (!poll_(ctx_)) return false;
    request_stop();
    return true;
  }

 private:
  using Clock = std::chrono::steady_clock;
  static double seconds(Clock::duration t) { return std::chrono::duration<double>(t).count(); }
  std::atomic<bool> stop_{false};
  PollFn poll_;
  void* ctx_;
  long countdown_ = 1, stride_ = 1;  // owner thread only
  Clock::time_point read_, polled_;  // owner thread only
};

// This thread's view: the state of the call it works for, and whether it may poll.
struct Local {
  State* state = nullptr;
  bool owner = false;
};
inline Local& local() {
  static thread_local Local l;
  return l;
}

// The state this thread works for (nullptr: none); pass it to the threads of a parallel region.
inline State* current() { return local().state; }

// True when the current call is to stop (polls on the owner thread). Never throws.
inline bool stop_requested() {
  const Local& l = local();
  if (!l.state) return false;
  if (l.state->stopped()) return true;
  return l.owner && l.state->tick();
}

// Throws Interrupted when the current call is to stop.
inline void check() {
  if (stop_requested()) throw Interrupted();
}

// Makes the calling thread the owner of a new call state (the previous one is restored on exit).
class Scope {
 public:
  Scope(PollFn poll, void* ctx) : state_(poll, ctx), prev_(local()) { local() = {&state_, true}; }
  ~Scope() { local() = prev_; }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;
  bool stopped() const { return state_.stopped(); }

 private:
  State state_;
  Local prev_;
};

// Makes a worker thread of a parallel region follow `s` (the owner thread, already on `s`,
// keeps polling); restores the thread's previous state on exit.
class Adopt {
 public:
  explicit Adopt(State* s) : prev_(local()) {
    if (local().state != s) local() = {s, false};
  }
  ~Adopt() { local() = prev_; }
  Adopt(const Adopt&) = delete;
  Adopt& operator=(const Adopt&) = delete;

 private:
  Local prev_;
};

}  // namespace interrupt
}  // namespace hsrgeom
