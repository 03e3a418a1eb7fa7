// Thin pybind11 bindings. Input validation and documentation live in the Python layer
// (python/hsrgeom); these functions expect C-contiguous arrays of the right dtype and shape and
// only check what would otherwise be memory-unsafe. Every call releases the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "hsrgeom/brute_force.hpp"
#include "hsrgeom/convex_layers.hpp"
#include "hsrgeom/partition_tree.hpp"

namespace py = pybind11;
using namespace hsrgeom;

namespace {

template <class T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

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
  return {a.data(), static_cast<index_t>(a.shape(0)), static_cast<int>(a.shape(1))};
}

template <class T>
Halfspaces<T> halfspaces(const CArray<T>& normals, const CArray<double>& offsets, int d) {
  if (normals.ndim() != 2 || normals.shape(1) != d || offsets.ndim() != 1 ||
      offsets.shape(0) != normals.shape(0))
    throw py::value_error("normals must be (m, d) and offsets (m,)");
  return {normals.data(), offsets.data(), static_cast<index_t>(normals.shape(0))};
}

py::dict stats_dict(QueryStats&& s) {
  py::dict d;
  d["nodes_visited"] = to_numpy(std::move(s.nodes_visited));
  d["points_tested"] = to_numpy(std::move(s.points_tested));
  d["points_reported"] = to_numpy(std::move(s.points_reported));
  d["exact_checks"] = to_numpy(std::move(s.exact_checks));
  return d;
}

// Binds the query interface shared by every structure: report, count, empty, topk.
// Each returns (result..., stats dict).
template <class S, class T, class PyClass>
void bind_queries(PyClass& cls) {
  cls.def("report", [](const S& self, const CArray<T>& normals, const CArray<double>& offsets, int threads) {
        auto q = halfspaces<T>(normals, offsets, self.dim());
        QueryStats st;
        ReportResult r;
        {
          py::gil_scoped_release nogil;
          r = self.report(q, &st, threads);
        }
        return py::make_tuple(to_numpy(std::move(r.lims)), to_numpy(std::move(r.ids)), stats_dict(std::move(st)));
      }, py::arg("normals"), py::arg("offsets"), py::arg("threads") = 0)
      .def("count", [](const S& self, const CArray<T>& normals, const CArray<double>& offsets, int threads) {
        auto q = halfspaces<T>(normals, offsets, self.dim());
        QueryStats st;
        std::vector<std::int64_t> c;
        {
          py::gil_scoped_release nogil;
          c = self.count(q, &st, threads);
        }
        return py::make_tuple(to_numpy(std::move(c)), stats_dict(std::move(st)));
      }, py::arg("normals"), py::arg("offsets"), py::arg("threads") = 0)
      .def("empty", [](const S& self, const CArray<T>& normals, const CArray<double>& offsets, int threads) {
        auto q = halfspaces<T>(normals, offsets, self.dim());
        QueryStats st;
        std::vector<std::uint8_t> e;
        {
          py::gil_scoped_release nogil;
          e = self.empty(q, &st, threads);
        }
        return py::make_tuple(to_numpy(std::move(e)), stats_dict(std::move(st)));
      }, py::arg("normals"), py::arg("offsets"), py::arg("threads") = 0)
      .def("topk", [](const S& self, const CArray<T>& queries, index_t k, int threads) {
        if (queries.ndim() != 2 || queries.shape(1) != self.dim()) throw py::value_error("queries must be (m, d)");
        if (k < 0 || k > self.size()) throw py::value_error("k must be in [0, n]");
        const index_t m = queries.shape(0);
        std::vector<double> scores(m * k);
        std::vector<std::int64_t> ids(m * k);
        QueryStats st;
        {
          py::gil_scoped_release nogil;
          self.topk(queries.data(), m, k, scores.data(), ids.data(), &st, threads);
        }
        return py::make_tuple(to_numpy(std::move(scores), {m, k}), to_numpy(std::move(ids), {m, k}),
                              stats_dict(std::move(st)));
      }, py::arg("queries"), py::arg("k"), py::arg("threads") = 0)
      .def_property_readonly("n", &S::size)
      .def_property_readonly("d", &S::dim)
      .def_property_readonly("memory_bytes", &S::memory_bytes);
}

template <class T>
void bind_dtype(py::module_& m, const std::string& suffix) {
  using BF = BruteForce<T>;
  py::class_<BF> bf(m, ("BruteForce" + suffix).c_str());
  bf.def(py::init([](const CArray<T>& pts) {
           auto v = points_view<T>(pts);
           py::gil_scoped_release nogil;
           return new BF(v);
         }), py::arg("points"))
      .def("points", [](const BF& self) {
        std::vector<T> copy = self.points();
        return to_numpy(std::move(copy), {static_cast<py::ssize_t>(self.size()), self.dim()});
      });
  bind_queries<BF, T>(bf);

  using PT = PartitionTree<T>;
  py::class_<PT> pt(m, ("PartitionTree" + suffix).c_str());
  pt.def(py::init([](const CArray<T>& pts, int leaf_size, int split, int threads) {
           auto v = points_view<T>(pts);
           py::gil_scoped_release nogil;
           return new PT(v, leaf_size, static_cast<SplitRule>(split), threads);
         }), py::arg("points"), py::arg("leaf_size"), py::arg("split"), py::arg("threads") = 0)
      .def("points", [](const PT& self) {
        return to_numpy(self.original_points(), {static_cast<py::ssize_t>(self.size()), self.dim()});
      })
      .def_property_readonly("node_count", &PT::node_count)
      .def_property_readonly("leaf_size", &PT::leaf_size);
  bind_queries<PT, T>(pt);

  using CL = ConvexLayers<T>;
  py::class_<CL> cl(m, ("ConvexLayers" + suffix).c_str());
  cl.def(py::init([](const CArray<T>& pts) {
           auto v = points_view<T>(pts);
           py::gil_scoped_release nogil;
           return new CL(v);
         }), py::arg("points"))
      .def("points", [](const CL& self) {
        return to_numpy(self.original_points(), {static_cast<py::ssize_t>(self.size()), 2});
      })
      .def_property_readonly("layers", &CL::layers);
  bind_queries<CL, T>(cl);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "hsrgeom compiled core (use the hsrgeom package, which validates input)";
  bind_dtype<float>(m, "F32");
  bind_dtype<double>(m, "F64");
  m.def("set_num_threads", [](int n) { default_threads_ref() = n; }, py::arg("n"));
  m.def("get_num_threads", []() { return resolve_threads(0); });
  m.def("exact_sign", [](const CArray<double>& a, const CArray<double>& x, double b) {
    if (a.ndim() != 1 || x.ndim() != 1 || a.shape(0) != x.shape(0)) throw py::value_error("a and x must be 1-D of equal length");
    return exact_sign(a.data(), x.data(), b, static_cast<int>(a.shape(0)));
  }, py::arg("a"), py::arg("x"), py::arg("b"), "Exact sign of <a, x> - b (testing aid).");
}
