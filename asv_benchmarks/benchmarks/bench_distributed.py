"""hsrgeom.distributed: the sharded build and a query batch on a small LocalCluster.

The cluster is in-process (``processes=False``, 2 single-threaded workers), so a sample
measures hsrgeom's work plus Dask's scheduling round trips, not process start-up or pickling
between processes. Every benchmark's setup starts its own cluster (asv runs each in a fresh
process), so data and grids are small (5·10^4 points, d = 2, 16 shards) to keep ``asv run
--quick -b bench_distributed`` near a minute. Skipped (NotImplementedError) where the
``distributed`` extra is not installed.
"""
import os
import shutil
import tempfile

import numpy as np

from .common import halfspaces, points

N, D, SHARDS = 50_000, 2, 16


def _close(obj):
    """Closes what setup made (asv calls teardown also after setup raised NotImplementedError,
    when the distributed extra is missing and nothing was made)."""
    for name in ("index", "client", "cluster"):
        if getattr(obj, name, None) is not None:
            getattr(obj, name).close()
    if getattr(obj, "tmp", None):
        shutil.rmtree(obj.tmp, ignore_errors=True)


def _cluster():
    try:
        from distributed import Client, LocalCluster

        import hsrgeom.distributed  # noqa: F401 - the extra's other dependencies
    except ImportError:
        raise NotImplementedError from None
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0",
                           silence_logs=50)
    return cluster, Client(cluster)


class ShardedBuild:
    """Build a sharded index (kd or chunks, 16 shards of PartitionTree) from a numpy array: the
    kd sample and shuffle through the directory, the shard builds and their loads."""

    params = (["kd", "chunks"],)
    param_names = ["partition"]
    number = 1
    repeat = (1, 5, 20.0)
    timeout = 120

    def setup(self, partition):
        self.cluster, self.client = _cluster()
        self.x = points(N, D, np.float32)
        self.tmp = tempfile.mkdtemp(prefix="hsrgeom-asv-")
        self.runs = 0

    def teardown(self, partition):
        _close(self)

    def time_build(self, partition):
        from hsrgeom.distributed import ShardedIndex

        self.runs += 1
        path = os.path.join(self.tmp, f"i{self.runs}")
        ShardedIndex.build(self.x, path, client=self.client, shards=SHARDS, partition=partition,
                           kind="partition_tree").close()


class ShardedQuery:
    """A batch of m half-spaces of ~100 points each, 16 kd shards (PartitionTree)."""

    params = ([1, 100], ["report", "topk"])
    param_names = ["m", "op"]
    timeout = 120

    def setup(self, m, op):
        self.cluster, self.client = _cluster()  # first: NotImplementedError without the extra
        from hsrgeom.distributed import ShardedIndex

        x = points(N, D, np.float32)
        self.a, self.b = halfspaces(x, m, 100)
        self.a = self.a.astype(np.float32)
        self.tmp = tempfile.mkdtemp(prefix="hsrgeom-asv-")
        self.index = ShardedIndex.build(x, os.path.join(self.tmp, "i"), client=self.client, shards=SHARDS,
                                        partition="kd", kind="partition_tree")
        self.index.report(self.a[:1], self.b[:1])  # warm-up

    def teardown(self, m, op):
        _close(self)

    def time_batch(self, m, op):
        if op == "report":
            self.index.report(self.a, self.b)
        else:
            self.index.topk(self.a, 10)

    def track_tasks(self, m, op):
        """Dask tasks per batch (one per worker thread holding visited shards)."""
        self.time_batch(m, op)
        return self.index.stats.tasks

    track_tasks.unit = "tasks"
