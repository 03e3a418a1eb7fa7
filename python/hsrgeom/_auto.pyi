from typing import Any

from numpy.typing import ArrayLike

from ._structures import _AnyIndex

def build_index(
    points: ArrayLike, kind: str = ..., *, batch_size: int | None = ..., output_size: float | None = ..., **params: Any
) -> _AnyIndex: ...
