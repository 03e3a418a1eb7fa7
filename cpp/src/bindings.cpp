// Thin pybind11 bindings. Input validation and documentation live in the Python layer
// (python/hsrgeom); these functions expect C-contiguous arrays of the right dtype and shape and
// only check what would otherwise be memory-unsafe. Every call releases the GIL, and every long
// one can be interrupted (Ctrl-C; see `interruptible`).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>

#include "bind_util.hpp"
#include "hsrgeom/brute_force.hpp"
#include "hsrgeom/convex_layers.hpp"
#include "hsrgeom/convex_layers3.hpp"
#include "hsrgeom/shallow_cutting3.hpp"
#include "hsrgeom/gather.hpp"
#include "hsrgeom/interrupt.hpp"
#include "hsrgeom/partition_tree.hpp"
#include "hsrgeom/quantized_scan.hpp"
#include "hsrgeom/simplicial_partition_tree.hpp"

namespace py = pybind11;
using namespace hsrgeom;

namespace {

using namespace hsrgeom::bind;  // CArray, interruptible, to_numpy, halfspaces, stats_array (bind_util.hpp)

template <class S, class T, class PyClass>
void bind_sum(PyClass& cls);

// Binds the query interface every structure has (query.hpp: one traversal, the shared drivers):
// report, count, empty, topk, sum. Each returns (result..., stats array (4, m)).
template <class S, class T, class PyClass>
void bind_queries(PyClass& cls) {
  bind_sum<S, T>(cls);
  bind_searches<S, T>(cls);
  cls.def_property_readonly("n", &S::size)
      .def_property_readonly("d", &S::dim)
      .def_property_readonly("memory_bytes", &S::memory_bytes);
}

// Binds sum(normals, offsets, values, offset, power, shift, threads) -> (counts, weights, sums,
// stats). values: None or a 2-D float32/float64 array whose
// rows offset .. offset + n - 1 belong to the points.
template <class S, class T, class PyClass>
void bind_sum(PyClass& cls) {
  cls.def("sum", [](const S& self, const CArray<T>& normals, const CArray<double>& offsets, py::object values,
                    index_t offset, int power, const CArray<double>& shift, int threads, bool node_sums) {
    return run_sum<S, T>(self, normals, offsets, values, offset, self.size(), power, shift, threads, node_sums);
  }, py::arg("normals"), py::arg("offsets"), py::arg("values"), py::arg("offset"), py::arg("power"),
     py::arg("shift"), py::arg("threads") = 0, py::arg("node_sums") = false);
}

// Binds set_value_sums(values, offset, threads) (RangeTree structures): per-node sums of the
// values' rows offset .. offset + n - 1, which sum(..., node_sums=True) then uses.
template <class S, class PyClass>
void bind_value_sums(PyClass& cls) {
  cls.def("set_value_sums", [](S& self, py::array values, index_t offset, int threads) {
    auto run = [&](auto* tag) {
      using V = std::remove_pointer_t<decltype(tag)>;
      auto vals = values.cast<CArray<V>>();
      if (vals.ndim() != 2) throw py::value_error("values must be 2-D");
      if (offset < 0 || offset + self.size() > vals.shape(0)) throw py::value_error("values has too few rows");
      interruptible([&] { self.set_value_sums(vals.data(), static_cast<int>(vals.shape(1)), offset, threads); });
    };
    if (is_float32(values)) run(static_cast<float*>(nullptr));
    else run(static_cast<double*>(nullptr));
  }, py::arg("values"), py::arg("offset"), py::arg("threads") = 0)
      .def_property_readonly("has_value_sums", &S::has_value_sums);
}

template <class T>
void bind_dtype(py::module_& m, const std::string& suffix) {
  using BF = BruteForce<T>;
  py::class_<BF> bf(m, ("BruteForce" + suffix).c_str());
  bf.def(py::init([](const CArray<T>& pts) {
           auto v = points_view<T>(pts);
           return interruptible([&] { return std::make_unique<BF>(v); });
         }), py::arg("points"))
      .def("points", [](const BF& self) {
        std::vector<T> copy = self.points();
        return to_numpy(std::move(copy), {static_cast<py::ssize_t>(self.size()), self.dim()});
      });
  bind_queries<BF, T>(bf);

  using QS = QuantizedScan<T>;
  py::class_<QS> qs(m, ("QuantizedScan" + suffix).c_str());
  qs.def(py::init([](const CArray<T>& pts, int threads) {
           auto v = points_view<T>(pts);
           return interruptible([&] { return std::make_unique<QS>(v, threads); });
         }), py::arg("points"), py::arg("threads") = 0)
      .def("points", [](const QS& self) {
        std::vector<T> copy = self.points();
        return to_numpy(std::move(copy), {static_cast<py::ssize_t>(self.size()), self.dim()});
      });
  bind_queries<QS, T>(qs);

  using PT = PartitionTree<T>;
  py::class_<PT> pt(m, ("PartitionTree" + suffix).c_str());
  pt.def(py::init([](const CArray<T>& pts, int leaf_size, int split, int threads) {
           auto v = points_view<T>(pts);
           return interruptible([&] { return std::make_unique<PT>(v, leaf_size, static_cast<SplitRule>(split), threads); });
         }), py::arg("points"), py::arg("leaf_size"), py::arg("split"), py::arg("threads") = 0)
      .def("points", [](const PT& self) {
        return to_numpy(self.original_points(), {static_cast<py::ssize_t>(self.size()), self.dim()});
      })
      .def_property_readonly("node_count", &PT::node_count)
      .def_property_readonly("leaf_size", &PT::leaf_size);
  bind_queries<PT, T>(pt);
  bind_value_sums<PT>(pt);

  using SPT = SimplicialPartitionTree<T>;
  py::class_<SPT> spt(m, ("SimplicialPartitionTree" + suffix).c_str());
  spt.def(py::init([](const CArray<T>& pts, int r, int leaf_size, std::uint64_t seed, int threads) {
            auto v = points_view<T>(pts);
            return interruptible([&] { return std::make_unique<SPT>(v, r, leaf_size, seed, threads); });
          }), py::arg("points"), py::arg("r"), py::arg("leaf_size"), py::arg("seed"), py::arg("threads") = 0)
      .def("points", [](const SPT& self) {
        return to_numpy(self.original_points(), {static_cast<py::ssize_t>(self.size()), self.dim()});
      })
      .def("crossing_stats", [](const SPT& self, const CArray<T>& normals, const CArray<double>& offsets, int threads) {
        auto q = halfspaces<T>(normals, offsets, self.dim());
        std::vector<std::int64_t> lims;
        std::vector<CrossingRecord> recs;
        interruptible([&] { self.crossing_stats(q, lims, recs, threads); });
        std::vector<std::int32_t> depth(recs.size()), fanout(recs.size()), crossed(recs.size()),
            undecided(recs.size()), node_crossed(recs.size());
        for (size_t i = 0; i < recs.size(); ++i) {
          depth[i] = recs[i].depth;
          fanout[i] = recs[i].fanout;
          crossed[i] = recs[i].crossed_sets;
          undecided[i] = recs[i].undecided;
          node_crossed[i] = recs[i].node_crossed;
        }
        py::dict d;
        d["lims"] = to_numpy(std::move(lims));
        d["depth"] = to_numpy(std::move(depth));
        d["fanout"] = to_numpy(std::move(fanout));
        d["crossed"] = to_numpy(std::move(crossed));
        d["undecided"] = to_numpy(std::move(undecided));
        d["node_crossed"] = to_numpy(std::move(node_crossed));
        return d;
      }, py::arg("normals"), py::arg("offsets"), py::arg("threads") = 0)
      .def_property_readonly("node_count", &SPT::node_count)
      .def_property_readonly("depth", &SPT::depth)
      .def_property_readonly("r", &SPT::r)
      .def_property_readonly("leaf_size", &SPT::leaf_size);
  bind_queries<SPT, T>(spt);
  bind_value_sums<SPT>(spt);

  using CL = ConvexLayers<T>;
  py::class_<CL> cl(m, ("ConvexLayers" + suffix).c_str());
  cl.def(py::init([](const CArray<T>& pts, index_t table_layers, index_t max_layers, index_t max_candidates,
                     int threads) {
           auto v = points_view<T>(pts);
           return interruptible(
               [&] { return std::make_unique<CL>(v, table_layers, max_layers, threads, max_candidates); });
         }), py::arg("points"), py::arg("table_layers") = CL::kDefaultTableLayers, py::arg("max_layers") = -1,
         py::arg("max_candidates") = -1, py::arg("threads") = 0)
      .def("points", [](const CL& self) {
        return to_numpy(self.original_points(), {static_cast<py::ssize_t>(self.size()), 2});
      })
      .def_property_readonly("layers", &CL::layers)
      .def_property_readonly("table_layers", &CL::table_layers)
      .def_property_readonly("peeled", &CL::peeled)
      .def_property_readonly("table_directions", &CL::table_directions)
      .def("layer_sizes", [](const CL& self) { return to_numpy(self.layer_sizes()); });
  bind_queries<CL, T>(cl);

  using CL3 = ConvexLayers3<T>;
  py::class_<CL3> cl3(m, ("ConvexLayers3" + suffix).c_str());
  cl3.def(py::init([](const CArray<T>& pts, index_t max_layers, int threads) {
           auto v = points_view<T>(pts);
           return interruptible([&] { return std::make_unique<CL3>(v, max_layers, threads); });
         }), py::arg("points"), py::arg("max_layers"), py::arg("threads") = 0)
      .def("points", [](const CL3& self) {
        return to_numpy(self.original_points(), {static_cast<py::ssize_t>(self.size()), 3});
      })
      .def("layer_sizes", [](const CL3& self) { return to_numpy(self.layer_sizes()); })
      .def_property_readonly("layers", &CL3::layers)
      .def_property_readonly("max_layers", &CL3::max_layers)
      .def_property_readonly("layer_points", &CL3::layer_points)
      .def_property_readonly("core_size", &CL3::core_size);
  bind_queries<CL3, T>(cl3);

  using SC3 = ShallowCutting3<T>;
  py::class_<SC3> sc3(m, ("ShallowCutting3" + suffix).c_str());
  sc3.def(py::init([](const CArray<T>& pts, int grid, index_t max_depth, index_t fine_depth, index_t max_candidates,
                       int threads) {
           auto v = points_view<T>(pts);
           return interruptible(
               [&] { return std::make_unique<SC3>(v, grid, max_depth, fine_depth, max_candidates, threads); });
         }), py::arg("points"), py::arg("grid"), py::arg("max_depth"), py::arg("fine_depth"), py::arg("max_candidates"),
         py::arg("threads") = 0)
      .def("points", [](const SC3& self) {
        return to_numpy(self.original_points(), {static_cast<py::ssize_t>(self.size()), 3});
      })
      .def("depths", [](const SC3& self) { return to_numpy(self.depths()); })
      .def("level_grids", [](const SC3& self) { return to_numpy(self.level_grids()); })
      .def_property_readonly("grid", &SC3::grid)
      .def_property_readonly("levels", &SC3::levels)
      .def_property_readonly("max_depth", &SC3::max_depth)
      .def_property_readonly("triangles", &SC3::triangles)
      .def_property_readonly("candidates", &SC3::candidates);
  sc3.attr("first_depth") = py::int_(SC3::kFirstDepth);
  bind_queries<SC3, T>(sc3);
}

// CSR (lims, ids) over the rows of X, checked so that no index can leave the arrays.
void check_csr(const CArray<index_t>& lims, const CArray<index_t>& ids, py::ssize_t rows, py::ssize_t n) {
  if (lims.ndim() != 1 || ids.ndim() != 1 || lims.shape(0) != rows + 1)
    throw py::value_error("lims must be 1-D of length m + 1 and ids 1-D");
  const index_t* l = lims.data();
  if (l[0] != 0 || l[rows] != ids.shape(0)) throw py::value_error("lims must start at 0 and end at len(ids)");
  for (py::ssize_t i = 0; i < rows; ++i)
    if (l[i + 1] < l[i]) throw py::value_error("lims must be non-decreasing");
  const index_t* p = ids.data();
  for (py::ssize_t e = 0; e < ids.shape(0); ++e)
    if (p[e] < 0 || p[e] >= n) throw py::value_error("ids out of range");
}

template <class T>
void bind_gather(py::module_& m) {
  m.def("gather_weighted_sum", [](const CArray<T>& X, const CArray<index_t>& lims, const CArray<index_t>& ids,
                                  const CArray<double>& w, int threads) {
    if (X.ndim() != 2) throw py::value_error("X must be 2-D");
    const py::ssize_t rows = lims.shape(0) - 1;
    if (rows < 0) throw py::value_error("lims must not be empty");
    check_csr(lims, ids, rows, X.shape(0));
    if (w.ndim() != 1 || w.shape(0) != ids.shape(0)) throw py::value_error("w must be 1-D like ids");
    std::vector<double> out(static_cast<size_t>(rows) * X.shape(1));
    interruptible([&] {
      gather_weighted_sum(X.data(), static_cast<int>(X.shape(1)), lims.data(), static_cast<index_t>(rows), ids.data(),
                          w.data(), out.data(), threads);
    });
    return to_numpy(std::move(out), {rows, X.shape(1)});
  }, py::arg("X"), py::arg("lims"), py::arg("ids"), py::arg("w"), py::arg("threads") = 0,
     "sum over the CSR entries e of row i of w[e] * X[ids[e]], in float64, shape (m, X.shape[1]).");
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  main_thread_ident() = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
  m.doc() = "hsrgeom compiled core (use the hsrgeom package, which validates input)";
  bind_dtype<float>(m, "F32");
  bind_dtype<double>(m, "F64");
  bind_gather<float>(m);
  bind_gather<double>(m);
  void bind_dynamic(py::module_&); bind_dynamic(m);  // DynamicF32/F64 (bindings_dynamic.cpp)
  // Any Python int is checked here (pybind11's int conversion would reject large ones without
  // naming the argument); the threads actually started follow parallel.hpp's policy.
  m.def("set_num_threads", [](py::handle n) {
    if (!PyLong_Check(n.ptr()) && !PyIndex_Check(n.ptr()))
      throw py::type_error(std::string("n must be an integer, got ") + Py_TYPE(n.ptr())->tp_name);
    if (PyBool_Check(n.ptr())) throw py::type_error("n must be an integer, got bool");
    int overflow = 0;
    py::object i = py::reinterpret_steal<py::object>(PyNumber_Index(n.ptr()));
    if (!i) throw py::error_already_set();
    const long long v = PyLong_AsLongLongAndOverflow(i.ptr(), &overflow);
    if (overflow || v < 0 || v > kMaxThreads)
      throw py::value_error("n must be in [0, " + std::to_string(kMaxThreads) + "] (0: all processors), got " +
                            py::str(i).cast<std::string>());
    default_threads_ref() = static_cast<int>(v);
  }, py::arg("n"),
        "Default thread count of every call (0: all processors). At most 4096; a call starts at most as many threads "
        "as there are processors, work items, and threads the process can start.");
  m.def("get_num_threads", []() { return resolve_threads(0); },
        "Threads a call without n_threads uses at most (set_num_threads, bounded by the processors; 1 in a process forked after hsrgeom was loaded).");
  m.def("_forked_child", []() { return forked_child(); },
        "True in a process forked after hsrgeom was loaded (its calls run on one thread).");
  m.def("release_memory", []() { return OutputPool::clear(); },
        "Free the output buffers kept for later reports (up to 256 MiB of freed result arrays); returns their bytes.");
  m.def("set_verbose", [](bool on) { return verbose_flag().exchange(on); }, py::arg("on"),
        "Progress lines on stderr for builds of >= 10^5 points (start, every 5 s, done); returns the previous setting.");
  m.def("get_verbose", []() { return verbose_flag().load(); });
  m.def("exact_sign", [](const CArray<double>& a, const CArray<double>& x, double b) {
    if (a.ndim() != 1 || x.ndim() != 1 || a.shape(0) != x.shape(0)) throw py::value_error("a and x must be 1-D of equal length");
    return exact_sign(a.data(), x.data(), b, static_cast<int>(a.shape(0)));
  }, py::arg("a"), py::arg("x"), py::arg("b"), "Exact sign of <a, x> - b (testing aid).");
}
