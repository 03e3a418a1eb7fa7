// Bindings of DynamicIndex (dynamic.hpp): DynamicF32 / DynamicF64, one C++ call per insert,
// remove and query. Like bindings.cpp, input validation lives in the Python layer
// (python/hsrgeom/_dynamic.py); this checks only what would otherwise be memory-unsafe. Every
// call releases the GIL under the same interrupt scope as the static structures.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

#include "bind_util.hpp"
#include "hsrgeom/brute_force.hpp"
#include "hsrgeom/convex_layers.hpp"
#include "hsrgeom/convex_layers3.hpp"
#include "hsrgeom/dynamic.hpp"
#include "hsrgeom/partition_tree.hpp"
#include "hsrgeom/quantized_scan.hpp"
#include "hsrgeom/shallow_cutting3.hpp"
#include "hsrgeom/simplicial_partition_tree.hpp"

namespace py = pybind11;
using namespace hsrgeom;
using namespace hsrgeom::bind;

namespace {

template <class T>
using Dyn = DynamicIndex<T>;

// A part over the structure held by the Python object `obj` (the index's static _impl): the
// part keeps the object alive, and releases it with the GIL held wherever it is destroyed.
template <class S, class T>
typename Dyn<T>::PartPtr borrow(const py::object& obj) {
  S* s = obj.cast<S*>();
  auto* keep = new py::object(obj);
  std::shared_ptr<S> held(s, [keep](S*) {
    py::gil_scoped_acquire gil;
    delete keep;
  });
  return std::make_shared<PartOf<S, T>>(std::move(held));
}

template <class S, class T>
typename Dyn<T>::PartPtr own(std::unique_ptr<S> s) {
  return std::make_shared<PartOf<S, T>>(std::shared_ptr<S>(std::move(s)));
}

// The builder of `kind` with the structure's constructor arguments `args` (as bindings.cpp
// passes them: see _dynamic._BUILD_ARGS), and the first part borrowed from `first` (or null).
template <class T>
std::pair<typename Dyn<T>::Builder, typename Dyn<T>::PartPtr> kind_of(const std::string& kind, const py::tuple& args,
                                                                      const py::object& first) {
  using Builder = typename Dyn<T>::Builder;
  auto arg = [&](size_t i) {
    if (i >= args.size()) throw py::value_error("too few build arguments for " + kind);
    return py::reinterpret_borrow<py::object>(args[i]);
  };
  Builder b;
  typename Dyn<T>::PartPtr p;
  auto pick = [&](auto* tag, auto make) {
    using S = std::remove_pointer_t<decltype(tag)>;
    b = [make](PointsView<T> v, int threads) { return own<S, T>(make(v, threads)); };
    if (!first.is_none()) p = borrow<S, T>(first);
  };
  if (kind == "brute_force") {
    pick(static_cast<BruteForce<T>*>(nullptr), [](PointsView<T> v, int) { return std::make_unique<BruteForce<T>>(v); });
  } else if (kind == "quantized_scan") {
    pick(static_cast<QuantizedScan<T>*>(nullptr),
         [](PointsView<T> v, int t) { return std::make_unique<QuantizedScan<T>>(v, t); });
  } else if (kind == "partition_tree") {
    const int leaf = py::cast<int>(arg(0)), split = py::cast<int>(arg(1));
    pick(static_cast<PartitionTree<T>*>(nullptr), [=](PointsView<T> v, int t) {
      return std::make_unique<PartitionTree<T>>(v, leaf, static_cast<SplitRule>(split), t);
    });
  } else if (kind == "simplicial") {
    const int r = py::cast<int>(arg(0)), leaf = py::cast<int>(arg(1));
    const auto seed = py::cast<std::uint64_t>(arg(2));
    pick(static_cast<SimplicialPartitionTree<T>*>(nullptr), [=](PointsView<T> v, int t) {
      return std::make_unique<SimplicialPartitionTree<T>>(v, r, leaf, seed, t);
    });
  } else if (kind == "convex_layers") {
    const auto table = py::cast<index_t>(arg(0)), layers = py::cast<index_t>(arg(1)), cands = py::cast<index_t>(arg(2));
    pick(static_cast<ConvexLayers<T>*>(nullptr),
         [=](PointsView<T> v, int t) { return std::make_unique<ConvexLayers<T>>(v, table, layers, t, cands); });
  } else if (kind == "convex_layers3") {
    const auto layers = py::cast<index_t>(arg(0));
    pick(static_cast<ConvexLayers3<T>*>(nullptr),
         [=](PointsView<T> v, int t) { return std::make_unique<ConvexLayers3<T>>(v, layers, t); });
  } else if (kind == "shallow_cutting3") {
    const int grid = py::cast<int>(arg(0));
    const auto depth = py::cast<index_t>(arg(1)), fine = py::cast<index_t>(arg(2)), cands = py::cast<index_t>(arg(3));
    pick(static_cast<ShallowCutting3<T>*>(nullptr), [=](PointsView<T> v, int t) {
      return std::make_unique<ShallowCutting3<T>>(v, grid, depth, fine, cands, t);
    });
  } else {
    throw py::value_error("unknown kind " + kind);
  }
  return {std::move(b), std::move(p)};
}

// Attached values (None or a 2-D float32/float64 array of at least `rows` rows) as ValueRows;
// `keep` holds the array for the call.
ValueRows value_rows(const py::object& values, std::int64_t rows, py::object& keep) {
  ValueRows v;
  if (values.is_none()) return v;
  py::array arr = py::array::ensure(values);
  if (!arr || arr.ndim() != 2 || arr.shape(0) < rows) throw py::value_error("values must be 2-D with a row per id");
  if (is_float32(arr)) {
    auto a = arr.cast<CArray<float>>();
    v.f32 = a.data();
    keep = a;
  } else {
    auto a = arr.cast<CArray<double>>();
    v.f64 = a.data();
    keep = a;
  }
  v.dv = static_cast<int>(arr.shape(1));
  return v;
}

template <class T>
void bind_one(py::module_& m, const std::string& suffix) {
  py::class_<Dyn<T>> cls(m, ("Dynamic" + suffix).c_str());
  cls.def(py::init([](const std::string& kind, const py::tuple& args, const py::object& first,
                      const CArray<std::int64_t>& ids, std::int64_t next_id, int d, bool value_sums) {
            if (ids.ndim() != 1) throw py::value_error("ids must be 1-D");
            const py::ssize_t n = ids.shape(0);
            for (py::ssize_t i = 0; i < n; ++i)
              if (ids.data()[i] < 0 || ids.data()[i] >= next_id || (i && ids.data()[i] <= ids.data()[i - 1]))
                throw py::value_error("ids must be ascending in [0, next_id)");
            auto [build, part] = kind_of<T>(kind, args, n ? first : py::none());
            std::vector<T> pts;
            if (n) {
              auto arr = first.attr("points")().cast<CArray<T>>();
              if (arr.ndim() != 2 || arr.shape(0) != n || arr.shape(1) != d)
                throw py::value_error("the first part's points must be (len(ids), d)");
              pts.assign(arr.data(), arr.data() + arr.size());
            }
            std::vector<std::int64_t> g(ids.data(), ids.data() + n);
            return std::make_unique<Dyn<T>>(d, std::move(build), std::move(part), std::move(pts), std::move(g), next_id,
                                             value_sums);
          }),
          py::arg("kind"), py::arg("args"), py::arg("first"), py::arg("ids"), py::arg("next_id"), py::arg("d"),
          py::arg("value_sums") = false)
      .def("insert", [](Dyn<T>& self, const CArray<T>& pts, const py::object& values, int threads) {
        auto v = points_view<T>(pts);
        if (v.d != self.dim()) throw py::value_error("points must be (m, d)");
        check_finite(pts, "points");
        py::object keep;
        const ValueRows vals = value_rows(values, self.next_id() + v.n, keep);
        return interruptible([&] { return self.insert(v, vals, threads); });
      }, py::arg("points"), py::arg("values"), py::arg("threads") = 0)
      .def("remove", [](Dyn<T>& self, const CArray<std::int64_t>& ids, const py::object& values, int threads) {
        if (ids.ndim() != 1) throw py::value_error("ids must be 1-D");
        py::object keep;
        const ValueRows vals = value_rows(values, self.next_id(), keep);
        try {
          interruptible([&] { self.remove(ids.data(), static_cast<index_t>(ids.shape(0)), vals, threads); });
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
      }, py::arg("ids"), py::arg("values"), py::arg("threads") = 0)
      .def("alive", [](const Dyn<T>& self, const CArray<std::int64_t>& ids) {
        std::vector<std::uint8_t> out(ids.size());
        for (py::ssize_t i = 0; i < ids.size(); ++i) out[i] = self.alive(ids.data()[i]);
        return to_numpy(std::move(out));
      }, py::arg("ids"))
      .def("set_value_sums", [](Dyn<T>& self, const py::object& values, int threads) {
        py::object keep;
        const ValueRows vals = value_rows(values, self.next_id(), keep);
        interruptible([&] { self.set_value_sums(vals, threads); });
      }, py::arg("values"), py::arg("threads") = 0)
      .def("live_points", [](const Dyn<T>& self) {
        std::vector<T> pts;
        std::vector<std::int64_t> ids;
        self.live_points(pts, ids);
        const auto n = static_cast<py::ssize_t>(ids.size());
        return py::make_tuple(to_numpy(std::move(pts), {n, self.dim()}), to_numpy(std::move(ids)));
      });
  bind_searches<Dyn<T>, T>(cls);  // report, count, empty, topk (bind_util.hpp)
  cls.def("sum", [](const Dyn<T>& self, const CArray<T>& normals, const CArray<double>& offsets, py::object values,
                     int power, const CArray<double>& shift, int threads, bool node_sums) {
        // values: a row per id (offset 0, rows next_id)
        return run_sum<Dyn<T>, T>(self, normals, offsets, values, 0, self.next_id(), power, shift, threads, node_sums);
      }, py::arg("normals"), py::arg("offsets"), py::arg("values"), py::arg("power"), py::arg("shift"),
         py::arg("threads") = 0, py::arg("node_sums") = false)
      .def_property_readonly("n", &Dyn<T>::size)
      .def_property_readonly("d", &Dyn<T>::dim)
      .def_property_readonly("next_id", &Dyn<T>::next_id)
      .def_property_readonly("memory_bytes", &Dyn<T>::memory_bytes)
      .def_property_readonly("part_sizes", &Dyn<T>::part_sizes)
      .def_property_readonly("part_removed", &Dyn<T>::part_removed)
      .def_property_readonly_static("tail", [](py::object) { return Dyn<T>::kTail; });
}

}  // namespace

void bind_dynamic(py::module_& m) {
  bind_one<float>(m, "F32");
  bind_one<double>(m, "F64");
}
