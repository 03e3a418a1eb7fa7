// Bindings of the fused decoding kernel (attend.hpp) for hsrgeom.attention: one call per kv head
// and decoding step for all its query rows, GIL released, interruptible. A module of its own
// (hsrgeom.attention._attend), so that the structures' translation units are untouched; it reuses
// bind_util.hpp's helpers (its statics, e.g. the main thread's id, are this module's own copies).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>

#include "bind_util.hpp"
#include "hsrgeom/attend.hpp"

namespace py = pybind11;
using namespace hsrgeom;
using namespace hsrgeom::bind;

namespace {

template <class T>
void check_rows(const CArray<T>& a, const char* name, index_t rows, int cols) {
  if (a.ndim() == 2 && (rows < 0 || a.shape(0) == rows) && a.shape(1) == cols) return;
  std::string got = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) got += (i ? ", " : "") + std::to_string(a.shape(i));
  throw py::value_error(std::string(name) + " must have shape (" + (rows >= 0 ? std::to_string(rows) : "n") + ", " +
                        std::to_string(cols) + "), got " + got + ")");
}

py::tuple selection_tuple(attend::Selection&& s, index_t m) {
  const auto tested = s.tested;
  return py::make_tuple(to_numpy(std::move(s.lims), {static_cast<py::ssize_t>(m + 1)}), to_numpy(std::move(s.ids)),
                        to_numpy(std::move(s.scores)), tested);
}

template <class T>
void bind_one(py::module_& m, const std::string& suffix) {
  using H = attend::HeadCodes<T>;
  py::class_<H>(m, ("HeadCodes" + suffix).c_str())
      .def(py::init<int, int>(), py::arg("d"), py::arg("dv"))
      .def_property_readonly("n", &H::size)
      .def_property_readonly("d", &H::dim)
      .def_property_readonly("memory_bytes", &H::memory_bytes)
      .def_property_readonly("value_norm_max", &H::value_norm_max)
      .def("append",
           [](H& self, const CArray<T>& keys, const CArray<T>& values) {
             check_rows(keys, "keys", -1, self.dim());
             check_rows(values, "values", keys.shape(0), self.value_dim());
             check_finite(keys, "keys");
             const index_t count = keys.shape(0);
             const T *k = keys.data(), *v = values.data();
             py::gil_scoped_release nogil;
             self.append(k, v, count);
           })
      // (lims, ids, scores, tested): exact top-r (r >= 1) or, with thresholds t, every key with
      // float64 score >= t_j, per row of Q; K: the coded keys (n x d, same order).
      .def("select",
           [](const H& self, const CArray<T>& Q, const CArray<T>& K, std::int64_t r, py::object t, int threads) {
             check_rows(Q, "q", -1, self.dim());
             check_rows(K, "keys", self.size(), self.dim());
             check_finite(Q, "q");
             const index_t mq = Q.shape(0);
             CArray<double> tt;
             const double* tp = nullptr;
             if (!t.is_none()) {
               tt = t.cast<CArray<double>>();
               if (tt.ndim() != 1 || tt.shape(0) != mq) throw py::value_error("t must have one value per row of q");
               tp = tt.data();
             } else if (r < 1) {
               throw py::value_error("r must be >= 1");
             }
             auto sel = interruptible([&] { return self.select(Q.data(), mq, K.data(), r, tp, threads); });
             return selection_tuple(std::move(sel), mq);
           },
           py::arg("q"), py::arg("keys"), py::arg("r") = 0, py::arg("t") = py::none(), py::arg("threads") = 0)
      // Softmax over the exact top-r of each row of Q, in one call: None when a row needs the
      // general path (inner products beyond the plain range, or a weighted sum not finite);
      // else (out (m, dv) float64, entries, dropped_mass_bound, lims, ids, tested).
      .def("softmax_top_r",
           [](const H& self, const CArray<T>& Q, const CArray<T>& K, const CArray<T>& V, std::int64_t r, double scale,
              int threads) -> py::object {
             check_rows(Q, "q", -1, self.dim());
             check_rows(K, "keys", self.size(), self.dim());
             check_rows(V, "values", self.size(), self.value_dim());
             check_finite(Q, "q");
             if (r < 1) throw py::value_error("r must be >= 1");
             if (!(scale > 0) || !std::isfinite(scale)) throw py::value_error("scale must be finite and > 0");
             const index_t mq = Q.shape(0);
             const int dv = self.value_dim();
             if (!self.plain(Q.data(), mq)) return py::none();
             std::vector<double> out(static_cast<size_t>(mq) * dv), bound(mq), qk(mq);
             std::vector<std::int64_t> entries(mq);
             for (index_t j = 0; j < mq; ++j) qk[j] = norm_up(Q.data() + j * self.dim(), self.dim()) * self.key_norm_max();
             bool ok = true;
             auto sel = interruptible([&] {
               auto s = self.select(Q.data(), mq, K.data(), r, nullptr, threads);
               ok = attend::softmax_rows(s, mq, V.data(), dv, self.size(), scale, nullptr, qk.data(), self.dim(),
                                         out.data(), bound.data(), entries.data());
               return s;
             });
             if (!ok) return py::none();
             const auto tested = sel.tested;
             return py::make_tuple(to_numpy(std::move(out), {static_cast<py::ssize_t>(mq), dv}),
                                   to_numpy(std::move(entries)), to_numpy(std::move(bound)),
                                   to_numpy(std::move(sel.lims), {static_cast<py::ssize_t>(mq + 1)}),
                                   to_numpy(std::move(sel.ids)), tested);
           },
           py::arg("q"), py::arg("keys"), py::arg("values"), py::arg("r"), py::arg("scale"), py::arg("threads") = 0)
      // Certified top-p (0 < p < 1) of each row of Q in one call (HeadCodes::softmax_top_p: one
      // scan of the codes, the report's float64 scores, the prefix, the softmax and V gather): None
      // where the general path must run; else as softmax_top_r (entries, dropped_mass_bound: the
      // certificate).
      .def("softmax_top_p",
           [](const H& self, const CArray<T>& Q, const CArray<T>& K, const CArray<T>& V, double p, double scale,
              int threads) -> py::object {
             check_rows(Q, "q", -1, self.dim());
             check_rows(K, "keys", self.size(), self.dim());
             check_rows(V, "values", self.size(), self.value_dim());
             check_finite(Q, "q");
             if (!(p > 0 && p < 1)) throw py::value_error("p must be in (0, 1)");
             if (!(scale > 0) || !std::isfinite(scale)) throw py::value_error("scale must be finite and > 0");
             const index_t mq = Q.shape(0), n = self.size();
             const int dv = self.value_dim();
             if (!self.plain(Q.data(), mq) || n == 0) return py::none();
             std::vector<double> out(static_cast<size_t>(mq) * dv), bound(mq);
             std::vector<std::int64_t> entries(mq);
             bool ok = true;
             attend::Selection kept;
             interruptible([&] {
               ok = self.softmax_top_p(Q.data(), mq, K.data(), V.data(), p, scale, threads, out.data(), bound.data(),
                                       entries.data(), &kept);
             });
             const std::int64_t tested = kept.tested;
             if (!ok) return py::none();
             return py::make_tuple(to_numpy(std::move(out), {static_cast<py::ssize_t>(mq), dv}),
                                   to_numpy(std::move(entries)), to_numpy(std::move(bound)),
                                   to_numpy(std::move(kept.lims), {static_cast<py::ssize_t>(mq + 1)}),
                                   to_numpy(std::move(kept.ids)), tested);
           },
           py::arg("q"), py::arg("keys"), py::arg("values"), py::arg("p"), py::arg("scale"), py::arg("threads") = 0);
}

}  // namespace

PYBIND11_MODULE(_attend, m) {
  main_thread_ident() = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
  // a process forked after the core module was loaded (and maybe ran OpenMP threads) runs on one
  // thread here too, though this module was loaded after the fork (parallel.hpp forked_child)
  if (py::module_::import("hsrgeom._core").attr("_forked_child")().cast<bool>()) detail::forked_flag() = true;
  m.doc() = "The fused decoding kernel of hsrgeom.attention (attend.hpp): 8-bit key codes per kv head";
  bind_one<float>(m, "F32");
  bind_one<double>(m, "F64");
}
