from os import PathLike
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from hsrgeom import HalfspaceResult, HalfspaceSums

__all__ = ["ShardedIndex", "ShardedStats"]

class ShardedStats:
    queries: int
    shards_visited: np.ndarray
    shards_inside: np.ndarray
    tasks: int
    bytes_moved: int
    seconds: float

class ShardedIndex:
    path: str
    d: int
    dtype: np.dtype
    @classmethod
    def build(
        cls,
        X: ArrayLike | str | PathLike[str] | Any,
        path: str | PathLike[str],
        client: Any = None,
        kind: str = "auto",
        partition: Literal["auto", "kd", "chunks"] = "auto",
        shard_size: int | None = None,
        values: ArrayLike | None = None,
        *,
        shards: int | None = None,
        seed: int = 0,
        timeout: float = 30.0,
        **params: Any,
    ) -> ShardedIndex: ...
    @classmethod
    def open(cls, path: str | PathLike[str], client: Any = None, *, timeout: float = 30.0) -> ShardedIndex: ...
    @property
    def client(self) -> Any: ...
    @property
    def n(self) -> int: ...
    @property
    def partition(self) -> str: ...
    @property
    def stats(self) -> ShardedStats: ...
    @property
    def shards(self) -> list[dict[str, Any]]: ...
    def __len__(self) -> int: ...
    def close(self) -> None: ...
    def __enter__(self) -> ShardedIndex: ...
    def __exit__(self, *exc: object) -> None: ...
    def report(
        self, normals: ArrayLike, offsets: ArrayLike, *, return_scores: bool = False,
        output: Literal["numpy", "dask"] = "numpy",
    ) -> HalfspaceResult | Any: ...
    def count(self, normals: ArrayLike, offsets: ArrayLike) -> np.ndarray: ...
    def empty(self, normals: ArrayLike, offsets: ArrayLike) -> np.ndarray: ...
    def topk(self, queries: ArrayLike, k: int) -> tuple[np.ndarray, np.ndarray]: ...
    def sum(
        self, normals: ArrayLike, offsets: ArrayLike, values: ArrayLike | str | None = None, *, power: int = 0,
        shift: ArrayLike | None = None,
    ) -> HalfspaceSums: ...
    def insert(self, points: ArrayLike, values: ArrayLike | None = None) -> np.ndarray: ...
    def remove(self, ids: ArrayLike) -> None: ...
    def flush(self) -> None: ...
