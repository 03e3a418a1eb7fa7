// Helpers shared by the binding translation units (bindings.cpp, bindings_dynamic.cpp):
// C-contiguous array arguments, the interrupt scope around a call without the GIL, vectors
// handed to numpy without a copy, argument views, the stats array, and the query bindings
// (bind_searches; run_sum, the value handling of sum()).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "hsrgeom/interrupt.hpp"
#include "hsrgeom/report.hpp"
#include "hsrgeom/sums.hpp"
#include "hsrgeom/types.hpp"

// hidden like the module's own symbols (pybind11 builds with -fvisibility=hidden)
namespace hsrgeom {
namespace __attribute__((visibility("hidden"))) bind {

namespace py = pybind11;

template <class T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

// ---- interrupts ------------------------------------------------------------------------------
// Python runs signal handlers on its main thread only, and only when that thread asks: the
// structures check for an interrupt per block of work (interrupt.hpp), and on the calling
// thread, every ~50 ms, this takes the GIL and runs PyErr_CheckSignals(). A handler that raises
// (SIGINT: KeyboardInterrupt) stops the call; the workers drain, and the exception it raised is
// re-raised once the GIL is held again. The result of an interrupted call is discarded: a
// structure being built is destroyed, one being queried is unchanged.
inline unsigned long& main_thread_ident() {
  static unsigned long id = 0;  // threading.main_thread().ident, set at import
  return id;
}

struct PythonInterrupt {
  std::optional<py::error_already_set> error;  // what the signal handler raised

  static bool poll(void* self) {
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() == 0) return false;
    try {
      static_cast<PythonInterrupt*>(self)->error.emplace();  // fetches (and clears) the exception
    } catch (...) {  // not fetched: raise() falls back to KeyboardInterrupt
      PyErr_Clear();
    }
    return true;
  }
  [[noreturn]] void raise() {
    if (error) throw *error;
    PyErr_SetNone(PyExc_KeyboardInterrupt);
    throw py::error_already_set();
  }
};

// Calls f() (with the GIL held) with the GIL released, under an interrupt scope polled from this
// thread when it is Python's main thread (elsewhere signals can't be handled: never interrupted).
template <class F>
auto interruptible(F&& f) -> decltype(f()) {
  using R = decltype(f());
  PythonInterrupt py_int;
  const interrupt::Scope scope(PyThread_get_thread_ident() == main_thread_ident() ? &PythonInterrupt::poll : nullptr,
                               &py_int);
  try {
    if constexpr (std::is_void_v<R>) {
      {
        py::gil_scoped_release nogil;
        f();
      }
      if (scope.stopped()) py_int.raise();  // stopped after the last check: the handler raised all the same
    } else {
      R r = [&] {
        py::gil_scoped_release nogil;
        return f();
      }();
      if (scope.stopped()) py_int.raise();
      return r;
    }
  } catch (const interrupt::Interrupted&) {
    py_int.raise();
  }
}

// Hands a vector's buffer to numpy without a copy.
template <class V>
py::array_t<typename V::value_type> to_numpy(V&& v, std::vector<py::ssize_t> shape = {}) {
  auto* heap = new V(std::move(v));
  py::capsule owner(heap, [](void* p) { delete static_cast<V*>(p); });
  if (shape.empty()) shape = {static_cast<py::ssize_t>(heap->size())};
  return py::array_t<typename V::value_type>(shape, heap->data(), owner);
}

template <class T>
PointsView<T> points_view(const CArray<T>& a) {
  if (a.ndim() != 2) throw py::value_error("points must be 2-D");
  // d is a C++ int: the Python layer bounds it (_validate.MAX_D); this only keeps it from wrapping
  if (a.shape(1) > std::numeric_limits<int>::max())
    throw py::value_error("points has d=" + std::to_string(a.shape(1)) + " columns, more than this build supports");
  return {a.data(), static_cast<index_t>(a.shape(0)), static_cast<int>(a.shape(1))};
}

// Raises ValueError naming the first NaN or inf of a C-contiguous array (index (i,) or (i, j)).
// The Python layer leaves this check to the query functions: a pass over m * (d + 1) values here
// costs nanoseconds, numpy's isfinite().all() ~1.5 us per call.
template <class T>
void check_finite(const CArray<T>& a, const char* name) {
  const T* p = a.data();
  const py::ssize_t size = a.size();
  bool ok = true;
  for (py::ssize_t i = 0; i < size; ++i) ok &= std::isfinite(p[i]);  // branch-free: vectorises
  if (ok) return;
  py::ssize_t i = 0;
  while (std::isfinite(p[i])) ++i;
  std::string where = a.ndim() == 2 ? "(" + std::to_string(i / a.shape(1)) + ", " + std::to_string(i % a.shape(1)) + ")"
                                    : "(" + std::to_string(i) + ",)";
  std::string why = std::is_same_v<T, float> ? " in the index dtype float32: values beyond its range become inf" : "";
  throw py::value_error(std::string(name) + " contains NaN or inf (first at index " + where + ")" + why);
}

template <class T>
Halfspaces<T> halfspaces(const CArray<T>& normals, const CArray<double>& offsets, int d) {
  if (normals.ndim() != 2 || normals.shape(1) != d || offsets.ndim() != 1 ||
      offsets.shape(0) != normals.shape(0))
    throw py::value_error("normals must be (m, d) and offsets (m,)");
  check_finite(normals, "normals");
  check_finite(offsets, "offsets");
  return {normals.data(), offsets.data(), static_cast<index_t>(normals.shape(0))};
}

// The four counters of QueryStats as one (4, m) int64 array, rows in QueryStats's order: one numpy
// array per call instead of four and a dict (each array handed to Python costs ~0.3 us).
inline py::array_t<std::int64_t> stats_array(QueryStats&& s) {
  const size_t m = s.nodes_visited.size();
  std::vector<std::int64_t> rows(4 * m);
  std::int64_t* at = rows.data();
  for (const auto* v : {&s.nodes_visited, &s.points_tested, &s.points_reported, &s.exact_checks})
    at = std::copy(v->begin(), v->end(), at);
  return to_numpy(std::move(rows), {4, static_cast<py::ssize_t>(m)});
}

// Binds report, count, empty and topk of any class S with the structures' batch member functions
// (query.hpp's QueryMethods, DynamicIndex): each returns (result..., stats array (4, m)).
template <class S, class T, class PyClass>
void bind_searches(PyClass& cls) {
  cls.def("report", [](const S& self, const CArray<T>& normals, const CArray<double>& offsets, int threads,
                       bool scores, bool sorted) {
        auto q = halfspaces<T>(normals, offsets, self.dim());
        QueryStats st;
        ReportResult r = interruptible([&] { return self.report(q, &st, threads, scores, sorted); });
        py::object sc = scores ? py::object(to_numpy(std::move(r.scores))) : py::none();
        return py::make_tuple(to_numpy(std::move(r.lims)), to_numpy(std::move(r.ids)), sc, stats_array(std::move(st)));
      }, py::arg("normals"), py::arg("offsets"), py::arg("threads") = 0, py::arg("scores") = false,
         py::arg("sorted") = true)
      .def("count", [](const S& self, const CArray<T>& normals, const CArray<double>& offsets, int threads) {
        auto q = halfspaces<T>(normals, offsets, self.dim());
        QueryStats st;
        std::vector<std::int64_t> c = interruptible([&] { return self.count(q, &st, threads); });
        return py::make_tuple(to_numpy(std::move(c)), stats_array(std::move(st)));
      }, py::arg("normals"), py::arg("offsets"), py::arg("threads") = 0)
      .def("empty", [](const S& self, const CArray<T>& normals, const CArray<double>& offsets, int threads) {
        auto q = halfspaces<T>(normals, offsets, self.dim());
        QueryStats st;
        std::vector<std::uint8_t> e = interruptible([&] { return self.empty(q, &st, threads); });
        return py::make_tuple(to_numpy(std::move(e)), stats_array(std::move(st)));
      }, py::arg("normals"), py::arg("offsets"), py::arg("threads") = 0)
      .def("topk", [](const S& self, const CArray<T>& queries, index_t k, int threads) {
        if (queries.ndim() != 2 || queries.shape(1) != self.dim()) throw py::value_error("queries must be (m, d)");
        if (k < 0 || k > self.size()) throw py::value_error("k must be in [0, n]");
        const index_t m = queries.shape(0);
        std::vector<double> scores(m * k);
        std::vector<std::int64_t> ids(m * k);
        QueryStats st;
        interruptible([&] { self.topk(queries.data(), m, k, scores.data(), ids.data(), &st, threads); });
        return py::make_tuple(to_numpy(std::move(scores), {m, k}), to_numpy(std::move(ids), {m, k}),
                              stats_array(std::move(st)));
      }, py::arg("queries"), py::arg("k"), py::arg("threads") = 0);
}

// True for a float32 array (by kind and size: a loaded file's dtype object may be an equal but
// not identical float32 descriptor, so dtype().is() is not the test).
inline bool is_float32(const py::array& a) { return a && a.dtype().kind() == 'f' && a.dtype().itemsize() == 4; }

// sum() of any class with the structures' batch sum (QueryMethods, DynamicIndex): values is None
// or a 2-D array (float32 read as float32, anything else as float64) whose rows offset ..
// offset + rows - 1 belong to the points (rows: the structure's n, or the dynamic index's
// next_id); returns (counts, weights, sums (m, dv), stats array).
template <class S, class T>
py::tuple run_sum(const S& self, const CArray<T>& normals, const CArray<double>& offsets, const py::object& values,
                  index_t offset, index_t rows, int power, const CArray<double>& shift, int threads, bool node_sums) {
  auto q = halfspaces<T>(normals, offsets, self.dim());
  if (shift.ndim() != 1 || shift.shape(0) != q.m) throw py::value_error("shift must be (m,)");
  if (power < 0) throw py::value_error("power must be >= 0");
  auto run = [&](auto* tag) {
    using V = std::remove_pointer_t<decltype(tag)>;
    SumSpec<V> sp;
    CArray<V> vals;
    if (!values.is_none()) {
      vals = values.cast<CArray<V>>();
      if (vals.ndim() != 2) throw py::value_error("values must be 2-D");
      if (offset < 0 || offset + rows > vals.shape(0)) throw py::value_error("values has too few rows");
      sp.values = vals.data();
      sp.dv = static_cast<int>(vals.shape(1));
    }
    sp.offset = offset;
    sp.power = power;
    sp.node_sums = node_sums;
    sp.shift = shift.data();
    QueryStats st;
    SumResult r = interruptible([&] { return self.sum(q, sp, &st, threads); });
    return py::make_tuple(to_numpy(std::move(r.counts)), to_numpy(std::move(r.weights)),
                          to_numpy(std::move(r.sums), {static_cast<py::ssize_t>(q.m), sp.dv}),
                          stats_array(std::move(st)));
  };
  if (!values.is_none() && is_float32(py::array::ensure(values))) return run(static_cast<float*>(nullptr));
  return run(static_cast<double*>(nullptr));
}


}  // namespace bind
}  // namespace hsrgeom
