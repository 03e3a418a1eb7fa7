"""Dynamic updates for every structure: the logarithmic method (Bentley & Saxe, 1980).

An index that has seen ``insert`` or ``remove`` keeps its points in static blocks of the same
kind and parameters, plus a small unindexed tail. Block sizes follow a binary counter: a full
tail of ``TAIL`` points becomes a block; two blocks of the same size class are rebuilt as one.
Each point is rebuilt O(log(n / TAIL)) times over its life, so an insert costs amortised
O(log n) times the per-point build cost. Removed points are masked ("tombstones") and dropped
at the next rebuild of their block; a block more than half removed is rebuilt at once.

Ids are stable: the points an index was built with have ids 0..n-1, inserted points get the
next ids in order, and a removed id is never reused.
"""
from __future__ import annotations

import numpy as np

from ._results import HalfspaceResult, _sums_from_report

TAIL = 256  # unindexed points scanned by a brute-force block rebuilt on demand


class Block:
    __slots__ = ("index", "gids", "removed")

    def __init__(self, index, gids):
        self.index = index  # a static Index of local ids 0..len(gids)-1
        self.gids = gids  # int64, ascending: local -> global id
        self.removed = 0

    @property
    def size(self):
        return len(self.gids)


class DynamicState:
    """Blocks, tail and tombstones of one index. ``build(points)`` builds a static block (of the
    index's kind and parameters), ``scan(points)`` an exact scan (the tail, top-k re-ranking):
    the caller gives both, so this module depends on no index class."""

    def __init__(self, build, scan, first, ids, next_id):
        """``first``: a static index holding the points with global ids ``ids`` (ascending)."""
        self.build = build
        self.scan = scan
        self.on_build = None  # called as on_build(index, gids) for every new block
        self.d = first.d
        self.dtype = first.dtype
        self.blocks = [Block(first, ids)] if len(ids) else []
        self._alive = np.zeros(max(next_id, 16), dtype=bool)  # capacity doubles on insert
        self._alive[ids] = True
        self._next = next_id
        self.tail_pts = np.zeros((0, self.d), dtype=self.dtype)
        self.tail_ids = np.zeros(0, dtype=np.int64)
        self._tail_index = None

    # -- state -------------------------------------------------------------------------------
    @property
    def alive(self):
        """alive[i]: id i is in the index (a view of the first next_id entries)."""
        return self._alive[: self._next]

    def set_alive(self, ids, next_id):
        self._alive = np.zeros(max(next_id, 16), dtype=bool)
        self._alive[ids] = True
        self._next = next_id

    @property
    def next_id(self):
        return self._next

    @property
    def n(self):
        return int(self.alive.sum())

    def parts(self):
        """(static index, gids) of every block and of the tail."""
        out = [(b.index, b.gids) for b in self.blocks]
        if len(self.tail_ids):
            if self._tail_index is None:
                self._tail_index = self.scan(self.tail_pts)
            out.append((self._tail_index, self.tail_ids))
        return out

    def live_points(self):
        """(points, ids) of the live points, ids ascending."""
        pts, ids = [], []
        for index, gids in self.parts():
            keep = self.alive[gids]
            pts.append(index.points()[keep])
            ids.append(gids[keep])
        if not pts:
            return np.zeros((0, self.d), dtype=self.dtype), np.zeros(0, dtype=np.int64)
        pts, ids = np.concatenate(pts), np.concatenate(ids)
        order = np.argsort(ids, kind="stable")
        return pts[order], ids[order]

    # -- updates -----------------------------------------------------------------------------
    def insert(self, points):
        m = len(points)
        ids = np.arange(self._next, self._next + m, dtype=np.int64)
        if self._next + m > len(self._alive):
            grown = np.zeros(max(2 * len(self._alive), self._next + m), dtype=bool)
            grown[: self._next] = self.alive
            self._alive = grown
        start = 0
        while start < m:
            take = min(TAIL - len(self.tail_ids), m - start)
            self.tail_pts = np.concatenate([self.tail_pts, points[start : start + take]])
            self.tail_ids = np.concatenate([self.tail_ids, ids[start : start + take]])
            self._tail_index = None
            # live once in the tail: an insert interrupted in a block's build (KeyboardInterrupt)
            # leaves the points inserted so far, each in one part
            self._alive[self._next : self._next + take] = True
            self._next += take
            start += take
            if len(self.tail_ids) == TAIL:
                self._push_block(self.tail_pts, self.tail_ids)
                self.tail_pts = np.zeros((0, self.d), dtype=self.dtype)
                self.tail_ids = np.zeros(0, dtype=np.int64)
        return ids

    def remove(self, ids):
        self._alive[ids] = False
        for b in list(self.blocks):
            if b not in self.blocks:  # merged into a block rebuilt above
                continue
            b.removed = int((~self.alive[b.gids]).sum())
            if b.removed * 2 > b.size:
                keep = self.alive[b.gids]
                if keep.any():
                    self._push_block(b.index.points()[keep], b.gids[keep], replaces=b)
                else:
                    self.blocks.remove(b)
        keep = self.alive[self.tail_ids]
        if not keep.all():
            self.tail_pts, self.tail_ids = self.tail_pts[keep], self.tail_ids[keep]
            self._tail_index = None

    def _push_block(self, pts, gids, replaces=None):
        """Adds a block and merges blocks of the same size class (binary counter); the block
        `replaces` (if given) is dropped with the merged ones."""
        def level(size):
            return int(np.ceil(np.log2(max(size, 1) / TAIL)))

        merged = [replaces] if replaces is not None else []  # dropped once the new block is built
        # (a build may be interrupted: KeyboardInterrupt then leaves the blocks as they were)
        while True:
            same = [b for b in self.blocks if level(b.size) == level(len(gids)) and b not in merged]
            if not same:
                break
            b = same[0]
            merged.append(b)
            keep = self.alive[b.gids]
            pts = np.concatenate([b.index.points()[keep], pts])
            gids = np.concatenate([b.gids[keep], gids])
            order = np.argsort(gids, kind="stable")
            pts, gids = pts[order], gids[order]
        index = self.build(np.ascontiguousarray(pts))
        if self.on_build is not None:
            self.on_build(index, gids)
        self.blocks = [b for b in self.blocks if b not in merged] + [Block(index, gids)]
        self.blocks.sort(key=lambda b: -b.size)

    # -- queries -----------------------------------------------------------------------------
    def report(self, a, b, n_threads, scores=False, sort=True):
        """(lims, ids, scores or None, stats dict) merged over the parts, dead ids dropped, ids
        ascending (sort=True) or grouped by query in part order (sort=False)."""
        m = len(a)
        qs, gs, ss, stats = [], [], [], []
        for index, gids in self.parts():
            lims, ids, sc, st = index._impl.report(a, b, n_threads, scores, sort)
            g = gids[ids]
            q = np.repeat(np.arange(m, dtype=np.int64), np.diff(lims))
            keep = self.alive[g]
            qs.append(q[keep])
            gs.append(g[keep])
            if scores:
                ss.append(sc[keep])
            stats.append(st)
        if qs:
            q, g = np.concatenate(qs), np.concatenate(gs)
            order = np.lexsort((g, q)) if sort else np.argsort(q, kind="stable")
            q, g = q[order], g[order]
            s = np.concatenate(ss)[order] if scores else None
        else:
            q = g = np.zeros(0, dtype=np.int64)
            s = np.zeros(0) if scores else None
        lims = HalfspaceResult.from_rows(q, g, m).lims
        return lims, g, s, _sum_stats(stats, m, reported=np.diff(lims))

    def sum(self, a, b, values, power, shift, n_threads, node_sums=False):
        """(counts, weights, sums, stats dict) of Index.sum, added over the parts. A part whose
        ids are consecutive and all alive (every part of an append-only index) sums natively
        over its rows of ``values`` (with its node sums when ``node_sums``: the values are the
        index's attached ones); any other part sums over its report."""
        m = len(a)
        counts = np.zeros(m, dtype=np.int64)
        weights = np.zeros(m)
        sums = np.zeros((m, 0 if values is None else values.shape[1]))
        stats = []
        for index, gids in self.parts():
            live = self.alive[gids]
            if len(gids) and gids[-1] - gids[0] + 1 == len(gids) and live.all() and hasattr(index._impl, "sum"):
                c, w, s, st = index._impl.sum(a, b, values, int(gids[0]), power, shift, n_threads, node_sums)
            else:
                lims, ids, sc, st = index._impl.report(a, b, n_threads, True, False)
                keep = live[ids]
                rows = np.repeat(np.arange(m, dtype=np.int64), np.diff(lims))[keep]
                part = HalfspaceResult.from_rows(rows, gids[ids[keep]], m, sc[keep])
                c, w, s = _sums_from_report(part.lims, part.ids, part.scores, values, power, shift, n_threads)
            counts += c
            weights += w
            sums += s
            stats.append(st)
        return counts, weights, sums, _sum_stats(stats, m, reported=counts)

    def topk(self, q, k, n_threads):
        """Exact top-k merged over the parts: each part gives its top (k + removed) live
        candidates; the union is ranked again by an exact BruteForce over the candidates."""
        m = len(q)
        if k == 0:  # nothing to rank (also when every point was removed: there are no parts)
            return np.zeros((m, 0)), np.zeros((m, 0), dtype=np.int64), _sum_stats([], m, reported=np.zeros(m))
        cand_pts, cand_ids, stats = [[] for _ in range(m)], [[] for _ in range(m)], []
        for index, gids in self.parts():
            dead = int((~self.alive[gids]).sum())
            kk = min(k + dead, len(gids))
            scores, ids, st = index._impl.topk(q, kk, n_threads)
            stats.append(st)
            pts = index.points()
            for j in range(m):
                keep = self.alive[gids[ids[j]]]
                cand_pts[j].append(pts[ids[j][keep]])
                cand_ids[j].append(gids[ids[j][keep]])
        out_s = np.zeros((m, k))
        out_i = np.zeros((m, k), dtype=np.int64)
        for j in range(m):
            g = np.concatenate(cand_ids[j])
            order = np.argsort(g)  # local order == global order, so ties go to the smaller id
            rerank = self.scan(np.ascontiguousarray(np.concatenate(cand_pts[j])[order]))
            s, loc = rerank._impl.topk(q[j : j + 1], k, 1)[:2]
            out_s[j], out_i[j] = s[0], g[order][loc[0]]
        return out_s, out_i, _sum_stats(stats, m, reported=np.full(m, k))


def _sum_stats(stats, m, reported):
    keys = ("nodes_visited", "points_tested", "points_reported", "exact_checks")
    out = {key: np.zeros(m, dtype=np.int64) for key in keys}
    for st in stats:
        for key in keys:
            out[key] += st[key]
    out["points_reported"] = np.asarray(reported, dtype=np.int64)
    return out
