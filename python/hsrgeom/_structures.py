"""The structures: one :class:`~hsrgeom.Index` subclass per compiled structure.

Each class validates its parameters, builds its compiled structure (``_core.<Name>F32/F64``)
in ``_build`` and names its parameters in ``_params`` (what ``repr``, dynamic rebuilds and the
file format use); queries, updates and persistence are inherited from :class:`Index`.
``STRUCTURES`` lists them (the kinds ``build_index`` and the file format know), and
:func:`load` reads any of them back.
"""
from __future__ import annotations

import numpy as np

from . import _core, _format
from . import _validate as V
from ._base import Index, _fmt_bytes
from ._sync import reader as _reader


def _compiled(name, points):
    """The compiled class ``name`` for the dtype of ``points`` (float32 or float64)."""
    return getattr(_core, name + ("F32" if points.dtype == np.float32 else "F64"))


class BruteForce(Index):
    """Exact half-space reporting by a blocked, multi-threaded scan.

    The reference every other structure is tested against, and the right choice in high
    dimension where no partition prunes. Scores are computed with blocked matrix products
    (Eigen) in the index dtype; points whose rounded score is within a rigorous error bound of
    the threshold are decided in exact arithmetic, so the result is exact.

    Parameters
    ----------
    points : array_like, shape (n, d), float32 or float64
        Copied; the caller's array is never modified.
    """

    kind = "brute_force"

    def __init__(self, points):
        self._build(V.points(points))

    def _build(self, points):
        self._impl = _compiled("BruteForce", points)(points)
        self._init_common(points)


class QuantizedScan(Index):
    """Exact half-space reporting by a scan over 8-bit codes of the points, then an exact check
    of the candidates.

    For high dimension, where no partition prunes and every point must be looked at: each point
    is also stored as 8-bit codes with a per-point scale and a proven bound on the coding error,
    so the scan reads 1 byte per coordinate (4x less than float32). A point whose bound cannot
    rule it out is a candidate and is decided by the same exact predicate as :class:`BruteForce`
    on its full-precision row, so the result is exactly the brute-force set; only candidates'
    rows are read (``stats.points_tested`` counts them). Like FAISS's 8-bit scalar quantizer
    followed by ``IndexRefineFlat``, except that the refinement is driven by a bound instead of a
    fixed candidate count. Memory: the points plus about ``n * (d + 32)`` bytes. ``topk`` scans
    the full-precision points. The code scan uses the widest instructions the CPU has (AVX-512,
    AVX2, SSE2 or plain C++, chosen at run time, whatever the build's target); the environment
    variable ``HSRGEOM_SCAN_KERNEL`` (``scalar``, ``sse2``, ``avx2``, ``avx512``), read when the
    index is built, forces a lower one. Every choice returns the same points.

    Parameters
    ----------
    points : array_like, shape (n, d), float32 or float64
        Copied; the caller's array is never modified.
    n_threads : int, optional
        Threads for the build.
    """

    kind = "quantized_scan"

    def __init__(self, points, *, n_threads=None):
        self._build(V.points(points), n_threads=n_threads)

    def _build(self, points, n_threads=None):
        self._impl = _compiled("QuantizedScan", points)(points, V.threads(n_threads))
        self._init_common(points)


_SPLITS = {"widest": 0, "pca": 1}


class PartitionTree(Index):
    """Hierarchical space partition for exact half-space reporting in any dimension.

    A binary tree over contiguous ranges of reordered points. Each node keeps conservative
    bounds (an axis-aligned box and a ball); a query skips nodes that lie outside the
    half-space, reports nodes that lie inside as a range, and tests points one by one only in
    leaves that cross the boundary.

    Parameters
    ----------
    points : array_like, shape (n, d), float32 or float64
        Copied (reordered internally); the caller's array is never modified.
    leaf_size : int, default 128
        Maximum number of points in a leaf (1 to 2**31 - 1). At d >= 4 a leaf keeps 8-bit codes
        of its points (d bytes each) that decide most of them without reading their rows, so
        leaves larger than a kd-tree's usual 10-32 points pay (docs/performance.md).
    split : {"widest", "pca"}, default "widest"
        "widest": median split along the widest box axis (a kd-tree); "pca": median split
        along the principal direction of the node's points (for correlated or low-rank data).
    n_threads : int, optional
        Threads used for the build.
    """

    kind = "partition_tree"
    node_sums = True

    def __init__(self, points, leaf_size=128, split="widest", *, n_threads=None):
        self._build(V.points(points), leaf_size=leaf_size, split=split, n_threads=n_threads)

    def _build(self, points, leaf_size=128, split="widest", n_threads=None):
        leaf_size = V.positive_int(leaf_size, "leaf_size")
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
        cls = _compiled("PartitionTree", points)
        self._impl = cls(points, leaf_size, _SPLITS[split], V.threads(n_threads))
        self.leaf_size = leaf_size
        self.split = split
        self._init_common(points)

    @property
    def node_count(self):
        return self._impl.node_count

    def _params(self):
        return {"leaf_size": self.leaf_size, "split": self.split}


class SimplicialPartitionTree(Index):
    """An r-way partition tree whose partitions are built for a low crossing number.

    Theory (Matousek 1992, Chan 2012): every node splits its points into about r cells of equal
    size such that any hyperplane crosses only O(r^(1-1/d)) of them; the partition is found by
    multiplicative weights ("iterative reweighting") over a test set of hyperplanes, and a
    half-space report then costs O(n^(1-1/d) + k) in the worst case, for any query.

    This implementation is a heuristic version of that construction: per node it builds a test
    set of a few hundred hyperplanes (random directions at random point offsets, and
    hyperplanes through d random points), and carves the children one at a time as cells of
    the arrangement of test hyperplanes drawn with probability proportional to their weights;
    each hyperplane that crosses a new child has its weight doubled, so later children avoid
    it. No crossing-number bound is proven for it -- measure it with :meth:`crossing_stats`
    (see docs/simplicial.md). Queries use the same conservative box + ball bounds and the same
    exact predicate as :class:`PartitionTree`, so the result is exact; the partition affects
    only the cost. Build is deterministic for a given ``seed`` and any number of threads.

    Parameters
    ----------
    points : array_like, shape (n, d), float32 or float64
        Copied (reordered internally); the caller's array is never modified.
    r : int, default 16
        Fan-out: children per node (2 <= r <= 256).
    leaf_size : int, default 32
        Maximum number of points in a leaf.
    seed : int, default 0
        Seed of the randomised partition (0 <= seed < 2**64).
    n_threads : int, optional
        Threads used for the build.
    """

    kind = "simplicial"
    node_sums = True

    def __init__(self, points, r=16, leaf_size=32, seed=0, *, n_threads=None):
        self._build(V.points(points), r=r, leaf_size=leaf_size, seed=seed, n_threads=n_threads)

    def _build(self, points, r=16, leaf_size=32, seed=0, n_threads=None):
        r = V.positive_int(r, "r", minimum=2, maximum=256)
        leaf_size = V.positive_int(leaf_size, "leaf_size")
        seed = V.positive_int(seed, "seed", minimum=0, maximum=2**64 - 1)
        cls = _compiled("SimplicialPartitionTree", points)
        self._impl = cls(points, r, leaf_size, seed, V.threads(n_threads))
        self.r, self.leaf_size, self.seed = r, leaf_size, seed
        self._init_common(points)

    @property
    def node_count(self):
        """Number of tree nodes."""
        return self._impl.node_count

    @property
    def depth(self):
        """Depth of the tree (0: the root is a leaf)."""
        return self._impl.depth

    def _params(self):
        return {"r": self.r, "leaf_size": self.leaf_size, "seed": self.seed}

    @_reader
    def crossing_stats(self, normals, offsets, *, n_threads=None):
        """Measure how the partition's cells meet the hyperplanes ``<normals[j], x> = offsets[j]``.

        For every query and every internal node whose bounds do not decide it (the nodes a
        report recurses into), one record. Returns a dict of arrays: ``lims`` (int64, m + 1;
        the records of query j are ``lims[j]:lims[j+1]``), and per record ``depth`` (0 at the
        root), ``fanout`` (number of children), ``crossed`` (children with points strictly on
        both sides of the hyperplane, decided exactly: the crossing number of the node's
        partition), ``undecided`` (children the box + ball bounds cannot decide: what the query
        pays) and ``node_crossed`` (1 if the node itself has points on both sides).

        Measures the static tree; an index changed by insert/remove raises RuntimeError.
        """
        if self._dyn:
            raise RuntimeError("crossing_stats measures the static tree; it is not available after insert/remove")
        a, b = self._halfspaces(normals, offsets)
        return self._impl.crossing_stats(a, b, V.threads(n_threads))


class ConvexLayers(Index):
    """Onion layers for output-sensitive half-plane reporting (d = 2 only).

    Layer 0 is the convex hull of the points, layer 1 the hull of the rest, and so on. A query
    finds each layer's vertex extreme in the normal's direction by a search over the edges'
    angles, reports the contiguous arc of that layer inside the half-plane, and stops at the
    first layer whose extreme vertex is outside (every deeper point lies in that layer's hull).
    Query cost O((layers reached) log n + k). Hulls use exact orientation predicates, so the
    layers are exactly nested and the result is exact.

    Shallow table (the equivalent of fractional cascading the layers, for the first
    ``table_layers`` layers): the normal directions are cut into up to 1024 arcs; for each arc
    and each level j the table keeps the few vertices of layer j that are extreme for the
    arc's directions, and the points of the layers above j that a half-plane missing layer j
    can hold (measured: ~1.06 k candidates for k = 100 reported). A query whose half-plane
    misses one of those layers (decided exactly) finds the first such level with two
    vectorised comparisons (every eighth level, then the eight after the last inside), and
    tests that level's candidates, stored contiguously; deeper queries take the layer-by-layer
    walk. At 10^6 uniform points 128 layers hold the answers of queries reporting up to ~1,000
    points (0.67 ns per id instead of the walk's 8.9), 256 up to ~3,000 (the budget below stops
    at 241 levels; 0.86 ns per id), at 2.7x the build time of 64 (3.5 s). Building it finds, for each
    vertex of the covered layers and each deeper covered layer, the edges the vertex sees
    (the vertices in parallel; +2.7 s at 10^7 uniform points, measured on one thread); memory 16 (float32) or 24
    (float64) bytes per candidate (32-bit ids: at most 2^32 points), and ~11.6 more for their id order (sorted
    reports), at most 4 candidates per point (levels past that are dropped).

    The build peels the layers in batches: the live points outside a polygon slightly inside
    the current hull are collected once (a kd-tree skips the boxes inside it), and layer after
    layer is peeled from them with a monotone chain while the layer still encloses that polygon
    (checked exactly). Peeling every point is superlinear (uniform points have about n^(2/3)
    layers): measured 3 s at n = 10^6 and 81 s at 10^7 (uniform, float32). With
    ``max_layers``, peeling stops after that many layers (``max_layers=table_layers + 1`` is all the
    shallow table uses), and a :class:`PartitionTree` over all the points answers every query
    the table does not (measured at 10^7 uniform points: build 12.5 s with 65 layers and 13.9 s
    with 129 instead of 81 s, the same 0.15 us per table query; a deep query costs what the
    tree's costs).

    Parameters
    ----------
    points : array_like, shape (n, 2), float32 or float64
    table_layers : int, default 128
        Layers the shallow table covers, at most 512 (0: no table, every query walks the
        layers). Fewer when the table would hold more than ``max_candidates``, or when
        fewer than ``table_layers + 1`` layers are peeled.
    max_layers : int, optional
        Most layers peeled (default: all). When the peel stops early, the tree answers what
        the table does not (the layer-by-layer walk is not used). The peel also stops early
        when it stalls: on degenerate data (identical or collinear points, a few locations)
        every layer holds one or a few points and costs a pass over the rest, O(n^2) in all;
        the peel stops once its work exceeds ~256 per peeled point plus 32 per point (sets of
        up to 4096 points are always peeled completely). ``peeled`` and ``layers`` say where it
        stopped.
    max_candidates : int, optional
        The table's budget of stored candidates, all levels together (default: 4 per point,
        at least 4096); the levels past it are dropped. A query reporting k points reads ~k of
        them from a level that holds them; ``auto`` probes a sample with the budget of all n
        points, so that the sample's table reaches the depth the full one will.
    n_threads : int, optional
        Threads used to build that tree (peeling is sequential).
    """

    kind = "convex_layers"
    _added_params = {"max_candidates": None}  # files written before it: the default rebuilds them

    def __init__(self, points, table_layers=128, max_layers=None, max_candidates=None, *, n_threads=None):
        self._build(V.points(points), table_layers=table_layers, max_layers=max_layers,
                    max_candidates=max_candidates, n_threads=n_threads)

    def _build(self, points, table_layers=128, max_layers=None, max_candidates=None, n_threads=None):
        if points.shape[1] != 2:
            raise ValueError(f"ConvexLayers needs points of shape (n, 2), got d={points.shape[1]}")
        table_layers = V.positive_int(table_layers, "table_layers", minimum=0, maximum=512)
        if max_layers is not None:
            max_layers = V.positive_int(max_layers, "max_layers", minimum=0, maximum=V.INDEX_MAX)
        if max_candidates is not None:
            max_candidates = V.positive_int(max_candidates, "max_candidates", minimum=0, maximum=V.INDEX_MAX)
        cls = _compiled("ConvexLayers", points)
        self._impl = cls(points, table_layers, -1 if max_layers is None else max_layers,
                         -1 if max_candidates is None else max_candidates, V.threads(n_threads))
        self.table_layers = table_layers
        self.max_layers = max_layers
        self.max_candidates = max_candidates
        self._init_common(points)

    @property
    def layers(self):
        """Number of peeled convex layers."""
        return self._impl.layers

    @property
    def peeled(self):
        """Points on the peeled layers (n unless ``max_layers`` or a stall stopped the peel)."""
        return self._impl.peeled

    def layer_sizes(self):
        """Number of vertices of each layer, outermost first (int64 array)."""
        return self._impl.layer_sizes()

    def _params(self):
        return {"table_layers": self.table_layers, "max_layers": self.max_layers, "max_candidates": self.max_candidates}


class ConvexLayers3(Index):
    """Onion layers of 3-D convex hulls for output-sensitive half-space reporting (d = 3 only).

    Layer 0 is the convex hull of the points, layer 1 the hull of the rest, and so on; each
    layer keeps its hull vertices and hull edges. A query, from the outside in, finds the
    layer's vertex extreme in the normal's direction by hill-climbing along hull edges (exact
    comparisons, so ties and rounding cannot stop the walk early: on a convex polytope a vertex
    without a better neighbour is a global maximum), stops at the first layer whose extreme
    vertex is outside (every deeper point lies in that layer's hull), and otherwise reports the
    layer's vertices inside by a search over hull edges from it (they form a connected
    subgraph). Hulls use exact orientation predicates, so the layers are exactly nested and the
    result is exact.

    Cost per query: O(sum over the layers reached of (walk length + k_layer)) + the core (below).
    Measured walks are short (a handful of steps per layer, starting from the previous layer's
    answer); in the worst case one walk can visit every vertex of its layer, so the proven bound
    is only O((layers reached) * h + k) with h the largest layer size. The optimal O(log n + k)
    structures for d = 3 (Afshani & Chan's shallow cuttings, 2009) are not implemented;
    :class:`ShallowCutting3` is a shallow cutting on a fixed grid of directions (no worst-case
    bound, faster on the data measured).

    Build: one Quickhull per layer over the points not known to be deep (O(n) per layer, about
    n^(1/2) layers for uniform points), so peeling stops after ``max_layers`` layers or when it
    reaches a deep "guard" polytope (inner points at the 90 % quantile in 64 sampled
    directions); the remaining points (and any flat remainder: coplanar, collinear, fewer than 4
    points) form a core kept in a PartitionTree, searched only when every layer's extreme vertex
    is inside the half-space. Measured: n = 10^6 (uniform, gaussian) in 14-19 s on one core
    (docs/layers3.md).

    Stats: ``nodes_visited`` counts walk positions (at least one per layer reached),
    ``points_tested`` membership tests (plus the core's).

    Parameters
    ----------
    points : array_like, shape (n, 3), float32 or float64
    max_layers : int, default 256
        Most layers peeled; the rest goes to the core.
    n_threads : int, optional
        Threads used to build the core tree (peeling is sequential).
    """

    kind = "convex_layers3"

    def __init__(self, points, max_layers=256, *, n_threads=None):
        self._build(V.points(points), max_layers=max_layers, n_threads=n_threads)

    def _build(self, points, max_layers=256, n_threads=None):
        if points.shape[1] != 3:
            raise ValueError(f"ConvexLayers3 needs points of shape (n, 3), got d={points.shape[1]}")
        max_layers = V.positive_int(max_layers, "max_layers", minimum=0, maximum=V.INDEX_MAX)
        cls = _compiled("ConvexLayers3", points)
        self._impl = cls(points, max_layers, V.threads(n_threads))
        self.max_layers = max_layers
        self._init_common(points)

    @property
    def layers(self):
        """Number of peeled convex layers (0 when the points are flat or too few)."""
        return self._impl.layers

    @property
    def core_size(self):
        """Points left in the core (not on a peeled layer)."""
        return self._impl.core_size

    def layer_sizes(self):
        """Number of vertices of each layer, outermost first (int64 array)."""
        return self._impl.layer_sizes()

    def _params(self):
        return {"max_layers": self.max_layers}

    @_reader
    def __repr__(self):
        return (
            f"ConvexLayers3(n={self.n}, layers={self._impl.layers}, core={self._impl.core_size}, "
            f"dtype={self.dtype.name}, max_layers={self.max_layers}, memory={_fmt_bytes(self.memory_bytes)})"
        )


# ShallowCutting3's default candidate budget per point: 12 up to 2*10^6 points, 6 above. With the
# 2 per point it had before, levels for outputs of 200-444 points were starved at 10^6 points
# (uniform 444-point queries 11.8 ns per id against 3.2, Gaussian 31.7 against 2.5; 10^5 points:
# alike or better, 9 -> 11 MiB); at 10^7 neither 2 n nor 6 n is reached (docs/cuttings.md)
_CUTTING_BUDGET, _CUTTING_BUDGET_MAX_N, _CUTTING_BUDGET_LARGE = 12, 2_000_000, 6


class ShallowCutting3(Index):
    """A shallow cutting of the dual arrangement over a grid of directions (d = 3 only), with a
    PartitionTree for the queries it cannot answer.

    Dual view: point x is the linear function a -> <a, x>, and a query reports the functions at
    or above b at its normal a. Normals are mapped to the faces of a cube (``a / max_i |a_i|``);
    each face is cut into ``grid`` x ``grid`` squares of two triangles. At each grid direction
    c and for growing depths k_0 < k_1 < ... (8, 10, 12, ... up to ``max_depth``, ~1.25x apart)
    the structure keeps the k_j-th largest <c, x>; over a triangle these values, interpolated
    linearly, form a surface lying above every point outside the triangle's *conflict list* at
    level j (the points among the top k_j of one of its three corners). A query finds its
    triangle, the shallowest level whose surface is below b at its normal (a certificate with
    rigorous rounding margins), and tests only that list: every point inside is in it. Queries
    that no level certifies (deeper than ``max_depth``, zero normals) are answered by the tree.
    The result is exact on any input (every reported point passes the shared exact predicate).

    Cost per query: locating the triangle and a binary search over the levels (O(log levels)),
    then the list: ~k plus the points near the query's plane that a corner direction ranks
    higher (measured in docs/cuttings.md). The grid is fixed, not placed as in the optimal
    constructions (Afshani & Chan 2009, Chan & Tsakalidis 2016), so no O(k) bound on a list
    holds in the worst case; the certificate only fails over to the tree, it never loses points.
    ``topk`` is the tree's.

    Deep levels on coarser grids ("tiers"): a triangle's lists hold ~k_j points times a
    factor set by its size, so the levels deeper than ``fine_depth`` are kept on grids halved
    per tier (tier t: ``grid / 2^t`` up to depth ``fine_depth * 4^t``; the grid-1 tier up to
    ``max_depth``), each storing about as many candidates as the fine grid. A query tries the
    tiers from the finest. This is what makes outputs of 10^3-10^4 points cheap per point
    (docs/cuttings.md, "Tiers").

    Build: the tree, the top k points of each grid direction for its tier's deepest k (6 (g +
    1)^2 directions on grid g; a threshold query on the tree, ties in any order; a direction
    whose k-th value more than 8 k points share keeps no list), and the lists (their total,
    all tiers, capped at ``max_candidates``; the deepest levels go first when over it). A
    candidate takes 16 (float32) or 32 (float64) bytes, its id 32 bits: at most 2^32 points.

    Parameters
    ----------
    points : array_like, shape (n, 3), float32 or float64
    grid : int, optional
        Squares per cube-face side, a power of two up to 256. Default: from n (finer for more
        points: 16 at 10^6, 32 at 10^7).
    max_depth : int, default 1024
        The deepest level's k (queries reporting up to about this many points use the cutting).
    fine_depth : int, optional
        The deepest level's k on the fine grid, at least 8; deeper levels go to the coarser
        tiers. Default: ``max_depth`` (one grid, no tiers).
    max_candidates : int, optional
        Cap on the stored list entries of all triangles together; default
        ``default_max_candidates(n)``: 12 n up to 2 000 000 points, 6 n above (31 bytes each
        for float32 points, 43 for float64, with their id order). The default was 2 n until December 2026: at ~10^6
        points that left the levels for outputs of a few hundred points too few candidates
        (444-point queries 4-13x slower, docs/cuttings.md); at 10^7 the 6 n cap is not reached.
    n_threads : int, optional
        Threads used by the build.
    """

    kind = "shallow_cutting3"
    # parameters added after the format's first files: the value that rebuilds those files' index
    _added_params = {"fine_depth": None}

    def __init__(self, points, grid=None, max_depth=1024, max_candidates=None, fine_depth=None, *, n_threads=None):
        self._build(V.points(points), grid=grid, max_depth=max_depth, max_candidates=max_candidates,
                    fine_depth=fine_depth, n_threads=n_threads)

    @staticmethod
    def default_max_candidates(n):
        """The ``max_candidates`` used for n points when none is given."""
        return (_CUTTING_BUDGET if n <= _CUTTING_BUDGET_MAX_N else _CUTTING_BUDGET_LARGE) * n

    @staticmethod
    def default_grid(n):
        """The grid used for n points when none is given: the finest with at least 300 points
        per triangle (12 grid^2 triangles)."""
        g = 1
        while g < 256 and 12 * (2 * g) ** 2 * 300 <= n:
            g *= 2
        return g

    def _build(self, points, grid=None, max_depth=1024, max_candidates=None, fine_depth=None, n_threads=None):
        if points.shape[1] != 3:
            raise ValueError(f"ShallowCutting3 needs points of shape (n, 3), got d={points.shape[1]}")
        n = len(points)
        grid = self.default_grid(n) if grid is None else V.positive_int(grid, "grid", maximum=256)
        if grid & (grid - 1):
            raise ValueError(f"grid must be a power of two in [1, 256], got {grid}")
        max_depth = V.positive_int(max_depth, "max_depth", minimum=0, maximum=V.INDEX_MAX)
        max_candidates = self.default_max_candidates(n) if max_candidates is None else V.positive_int(
            max_candidates, "max_candidates", minimum=0, maximum=V.INDEX_MAX)
        first = _core.ShallowCutting3F64.first_depth
        fine_depth = max(max_depth, first) if fine_depth is None else V.positive_int(
            fine_depth, "fine_depth", minimum=first, maximum=V.INDEX_MAX)
        cls = _compiled("ShallowCutting3", points)
        self._impl = cls(points, grid, max_depth, fine_depth, max_candidates, V.threads(n_threads))
        self.max_depth, self.max_candidates, self.fine_depth = max_depth, max_candidates, fine_depth
        self._init_common(points)

    @property
    def grid(self):
        """Squares per cube-face side."""
        return self._impl.grid

    @property
    def levels(self):
        """Number of levels kept (0: every query goes to the tree)."""
        return self._impl.levels

    @property
    def candidates(self):
        """Stored conflict-list entries, all triangles and levels."""
        return self._impl.candidates

    def depths(self):
        """k_j of each kept level (int64 array)."""
        return self._impl.depths()

    def level_grids(self):
        """The grid of each kept level's tier, aligned with :meth:`depths` (int64 array)."""
        return self._impl.level_grids()

    def _params(self):
        return {"grid": self.grid, "max_depth": self.max_depth, "max_candidates": self.max_candidates,
                "fine_depth": self.fine_depth}

    @_reader
    def __repr__(self):
        return (
            f"ShallowCutting3(n={self.n}, grid={self.grid}, fine_depth={self.fine_depth}, levels={self.levels}, "
            f"depth<={self._impl.max_depth}, candidates={self.candidates}, dtype={self.dtype.name}, "
            f"memory={_fmt_bytes(self.memory_bytes)})"
        )


STRUCTURES = (BruteForce, QuantizedScan, PartitionTree, SimplicialPartitionTree, ConvexLayers, ConvexLayers3, ShallowCutting3)


def load(path):
    """Read an index written by ``index.save(path)``.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :meth:`save` (a pipe works too: it is read up to the checksum).

    Returns
    -------
    The index, of the class that was saved, with its ids, parameters and attached values.

    Raises
    ------
    ValueError
        For any file that is not exactly what ``save`` writes: the message names the path and
        the field. OSError for a path that cannot be opened (missing, a directory).

    Notes
    -----
    Every file is checked before it is trusted, like the constructor checks its arguments, so
    a truncated, corrupted or crafted file never crashes, hangs or answers wrongly, and no size
    read from it is used before it was checked against the file:

    - magic, format version (1 or 2), and a header length of at most 1 MiB that fits in the
      file are checked before the header is read;
    - the header is JSON of nesting depth at most 8 with exactly the writer's keys: a known
      class, dtype float32 or float64, integers n >= 0, d >= 1, next_id >= n, params with
      exactly the class's parameter names (one the class added later may be missing in an
      older file: it then takes the value that rebuilds what that version built), whose values
      the build checks as the constructor does (build-time options such as ``n_threads`` are
      never stored);
    - the sizes the header implies must match the file exactly before the payload is read; a
      stream of unknown size (a pipe) is read in bounded chunks and must end right after the
      checksum (trailing data is an error); the sha256 checksum must match;
    - points must be finite; ids unique, ascending and in [0, next_id); next_id is trusted
      only where the payload holds its value rows, otherwise it is at most
      ``max(1024 n, 2**26)`` (an index keeps one bit per id ever given, removed ones
      included: a file of an index that gave more ids than that and kept fewer than 1/1024 of
      them is refused).

    Unpickling an index runs the same checks, and also checks that the state is a dict
    ``{"hsrgeom": bytes}`` holding the class being unpickled.
    """
    return _format.load(path, STRUCTURES)


def _from_bytes(data):
    """The index held by ``data`` (see :func:`hsrgeom.load`)."""
    return _format.from_bytes(data, STRUCTURES)
