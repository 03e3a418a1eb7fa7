"""The shape of the package: its internal imports form no circle, hsrgeom.attention is a consumer
of the public API only, and the installed package ships no experiment code."""
import ast
import importlib.util
from pathlib import Path

import hsrgeom

SOURCE = Path(__file__).resolve().parents[1] / "python" / "hsrgeom"
COMPILED = {"hsrgeom._core"}  # modules without a .py source


def _module_name(path):
    parts = ("hsrgeom",) + path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
    """{module name: (path, ast)} of every .py module of the package (packages by __init__)."""
    return {_module_name(p): (p, ast.parse(p.read_text(encoding="utf-8"), str(p))) for p in sorted(SOURCE.rglob("*.py"))}


def _package_of(name, path):
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _imports(name, path, tree, known):
    """(line, imported module, node) of every hsrgeom-internal import in ``tree`` (inside
    functions too). ``from P import x`` counts as an import of ``P.x`` where that is a module,
    of ``P`` otherwise."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, node) for a in node.names if a.name.split(".")[0] == "hsrgeom"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(name, path).split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "hsrgeom":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((node.lineno, sub if sub in known else target, node))
    return out


def test_module_imports_form_no_cycle():
    mods = _modules()
    known = set(mods) | COMPILED
    graph = {name: sorted({t for _, t, _ in _imports(name, p, tree, known) if t in mods and t != name})
             for name, (p, tree) in mods.items()}
    done, path = set(), []

    def visit(m):
        if m in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if m in done:
            return
        path.append(m)
        for t in graph[m]:
            visit(t)
        path.pop()
        done.add(m)

    for m in graph:
        visit(m)


def _private(module):
    return any(part.startswith("_") for part in module.split(".")[1:])


def _private_uses(package):
    """Imports of private hsrgeom names (or hsrgeom._x attributes) by the modules of ``package``."""
    mods = _modules()
    known = set(mods) | COMPILED
    bad = set()
    for name, (path, tree) in mods.items():
        if not name.startswith(package):
            continue
        for line, target, node in _imports(name, path, tree, known):
            if target.startswith(package):
                continue  # its own submodules
            names = [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else []
            if _private(target) or any(n.startswith("_") for n in names):
                bad.add(f"{path.name}:{line} imports {target} {names or ''}")
        for node in ast.walk(tree):  # hsrgeom._x through the package object
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "hsrgeom" \
                    and node.attr.startswith("_") and not node.attr.startswith("__"):
                bad.add(f"{path.name}:{node.lineno} uses hsrgeom.{node.attr}")
    return bad


def test_attention_imports_no_private_name_of_hsrgeom():
    bad = _private_uses("hsrgeom.attention")
    assert not bad, "hsrgeom.attention must use the public API of hsrgeom only:\n" + "\n".join(sorted(bad))


def test_distributed_imports_no_private_name_of_hsrgeom():
    bad = _private_uses("hsrgeom.distributed")
    assert not bad, "hsrgeom.distributed must use the public API of hsrgeom only:\n" + "\n".join(sorted(bad))


def test_core_package_never_imports_dask():
    """dask and distributed are optional (the distributed extra): importing hsrgeom and
    hsrgeom.attention loads neither, and no module outside hsrgeom.distributed imports them."""
    import subprocess
    import sys

    code = ("import sys, hsrgeom, hsrgeom.attention\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
    offenders = []
    for name, (path, tree) in _modules().items():
        if name.startswith("hsrgeom.distributed"):
            continue
        for node in ast.walk(tree):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            offenders += [f"{path.name}:{node.lineno} {m}" for m in mods if m.split(".")[0] in ("dask", "distributed")]
    assert not offenders, offenders


def test_the_checks_see_the_imports():
    """The parser above finds function-level and relative imports (so the two tests cannot
    pass vacuously)."""
    mods = _modules()
    known = set(mods) | COMPILED
    name = "hsrgeom.attention._sparse"
    path, tree = mods[name]
    assert ("hsrgeom" in {t for _, t, _ in _imports(name, path, tree, known)})
    src = ast.parse("def f():\n    from ._structures import BruteForce\n    from . import _core\n")
    targets = {t for _, t, _ in _imports("hsrgeom._base", SOURCE / "_base.py", src, known)}
    assert targets == {"hsrgeom._structures", "hsrgeom._core"}


def test_installed_package_has_no_experiments():
    assert importlib.util.find_spec("hsrgeom.attention.experiments") is None
    installed = Path(hsrgeom.__file__).parent
    assert not [p for p in installed.rglob("*") if "experiments" in p.name], "experiment code in the installed package"


def test_public_base_class():
    pts = [[0.0, 1.0], [1.0, 0.0]]
    for index in (hsrgeom.BruteForce(pts), hsrgeom.build_index(pts, kind="partition_tree")):
        assert isinstance(index, hsrgeom.Index)
    assert all(issubclass(getattr(hsrgeom, n), hsrgeom.Index)
               for n in ("BruteForce", "QuantizedScan", "PartitionTree", "SimplicialPartitionTree",
                         "ConvexLayers", "ConvexLayers3", "ShallowCutting3"))


def test_stubs_name_what_the_runtime_has():
    """Every .pyi beside a module names only what the module has (top-level functions and
    classes, each class's methods and properties), and __init__.pyi re-exports all of
    hsrgeom.__all__."""
    import importlib

    missing = []
    for stub in sorted(SOURCE.rglob("*.pyi")):
        name = _module_name(stub)
        module = importlib.import_module(name)
        for node in ast.parse(stub.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not hasattr(module, node.name):
                missing.append(f"{stub.name}: {node.name}")
            if isinstance(node, ast.ClassDef) and hasattr(module, node.name):
                cls = getattr(module, node.name)
                for item in node.body:  # methods and properties (annotated fields are set per instance)
                    if isinstance(item, ast.FunctionDef) and not item.name.startswith("__") and not hasattr(cls, item.name):
                        missing.append(f"{stub.name}: {node.name}.{item.name}")
    init = ast.parse((SOURCE / "__init__.pyi").read_text(encoding="utf-8"))
    exported = {a.asname or a.name for n in init.body if isinstance(n, ast.ImportFrom) for a in n.names}
    exported |= {n.name for n in init.body if isinstance(n, ast.FunctionDef)}
    missing += [f"__init__.pyi: {n}" for n in hsrgeom.__all__ if n not in exported]
    assert not missing, "stub names the runtime lacks (or misses a public name):\n" + "\n".join(missing)
