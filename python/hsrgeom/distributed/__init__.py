"""hsrgeom.distributed: one exact half-space index over shards living in Dask workers.

>>> import hsrgeom.distributed as hd                                  # doctest: +SKIP
>>> with hd.ShardedIndex.build(X, "idx_dir", partition="kd") as idx:  # doctest: +SKIP
...     res = idx.report(normals, offsets)   # the local index's HalfspaceResult, global ids

Each shard is the output of a Dask task "read this shard's file -> build its index", so Dask
rebuilds a lost shard from that lineage on another worker (the first time, the task takes the
index its build task built in that worker: a shard is built once); a query batch runs one
task per worker thread on the futures of the shards that worker holds. With no ``client=``, a
``distributed.LocalCluster`` (one single-threaded worker process per core) is started and
closed with the index.

Needs the optional dependencies ``pip install 'hsrgeom[distributed]'`` (dask[array,dataframe],
distributed, zarr); the core package never imports this module. ``docs/distributed.md`` has the
design, the on-disk layout and measurements.
"""
from ._index import ShardedIndex, ShardedStats

__all__ = ["ShardedIndex", "ShardedStats"]
