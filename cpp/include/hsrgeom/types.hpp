// The types every structure shares: point and query views, and the per-query cost counters.
// Views do not own their data (a structure copies what it keeps); QueryStats holds one entry per
// query of a batch, Counters the entries of one query while it runs.
#pragma once

#include <cstdint>
#include <vector>

#include "hsrgeom/predicate.hpp"

namespace hsrgeom {

// A row-major n x d view of points; the structure copies what it keeps.
template <class T>
struct PointsView {
  const T* data = nullptr;
  index_t n = 0;
  int d = 0;
  const T* row(index_t i) const { return data + i * static_cast<index_t>(d); }
};

// A batch of half-spaces {x : <a_j, x> >= b_j}; normals row-major m x d.
template <class T>
struct Halfspaces {
  const T* normals = nullptr;
  const double* offsets = nullptr;
  index_t m = 0;
};

// Per-query cost counters: what a query really did, so cost is measured and not guessed.
struct QueryStats {
  std::vector<std::int64_t> nodes_visited, points_tested, points_reported, exact_checks;
  void resize(index_t m) {
    nodes_visited.assign(m, 0);
    points_tested.assign(m, 0);
    points_reported.assign(m, 0);
    exact_checks.assign(m, 0);
  }
};

// Counters of one query while it runs (kept in registers, written to QueryStats at the end).
struct Counters {
  std::int64_t nodes = 0, tested = 0, reported = 0, exact = 0;
  void store(QueryStats& s, index_t j) const {
    s.nodes_visited[j] = nodes;
    s.points_tested[j] = tested;
    s.points_reported[j] = reported;
    s.exact_checks[j] = exact;
  }
};

}  // namespace hsrgeom
