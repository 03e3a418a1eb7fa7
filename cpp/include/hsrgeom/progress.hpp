// Progress lines of long builds on stderr (hsrgeom.set_verbose); silent unless switched on.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdio>


namespace hsrgeom {

// ---- progress of long builds -----------------------------------------------------------------
// hsrgeom.set_verbose(True): builds of at least kMinPoints points print a line on stderr when
// they start, then at most one every 5 s while they run (where the build has a natural count to
// show), and one when done, with the elapsed time (FAISS's `verbose` convention; C-level stderr,
// so Jupyter shows them in the server's log, not the notebook).
inline std::atomic<bool>& verbose_flag() {
  static std::atomic<bool> on{false};
  return on;
}

class BuildProgress {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr long long kMinPoints = 100000;
  BuildProgress(const char* what, long long n, int d) : what_(what), on_(verbose_flag().load() && n >= kMinPoints) {
    if (!on_) return;
    t0_ = last_ = Clock::now();
    std::fprintf(stderr, "hsrgeom %s: building on %lld points, d = %d\n", what_, n, d);
    std::fflush(stderr);
  }
  // A progress line (printf-style), if 5 s passed since the last one.
  template <class... A>
  void tick(const char* fmt, A... args) {
    if (!on_ || seconds(Clock::now() - last_) < 5.0) return;
    line(fmt, args...);
  }
  template <class... A>
  void done(const char* fmt, A... args) {
    if (on_) line(fmt, args...);
  }

 private:
  static double seconds(Clock::duration t) { return std::chrono::duration<double>(t).count(); }
  template <class... A>
  void line(const char* fmt, A... args) {
    last_ = Clock::now();
    char buf[256];
    std::snprintf(buf, sizeof buf, fmt, args...);
    std::fprintf(stderr, "hsrgeom %s: %s (%.1f s)\n", what_, buf, seconds(last_ - t0_));
    std::fflush(stderr);
  }
  const char* what_;
  bool on_;
  Clock::time_point t0_, last_;
};

}  // namespace hsrgeom
