from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt

from . import reference as reference

_Arr = npt.ArrayLike
_Out = npt.NDArray[np.floating[Any]]
_Stats = dict[str, Any]

@overload
def relu_attention(q: _Arr, k: _Arr, v: _Arr, *, bias: _Arr, alpha: int = ..., scale: float | None = ...,
                   causal: bool = ..., index: str = ..., return_stats: Literal[False] = ...) -> _Out: ...
@overload
def relu_attention(q: _Arr, k: _Arr, v: _Arr, *, bias: _Arr, alpha: int = ..., scale: float | None = ...,
                   causal: bool = ..., index: str = ..., return_stats: Literal[True]) -> tuple[_Out, _Stats]: ...
@overload
def softmax_attention(q: _Arr, k: _Arr, v: _Arr, *, top_r: int | None = ..., threshold: _Arr | None = ...,
                      top_p: float | None = ..., scale: float | None = ..., causal: bool = ...,
                      return_stats: Literal[False] = ..., index: str = ...) -> _Out: ...
@overload
def softmax_attention(q: _Arr, k: _Arr, v: _Arr, *, top_r: int | None = ..., threshold: _Arr | None = ...,
                      top_p: float | None = ..., scale: float | None = ..., causal: bool = ...,
                      return_stats: Literal[True, "exact"], index: str = ...) -> tuple[_Out, _Stats]: ...
def prefill(q: _Arr, k: _Arr, v: _Arr, *, causal: bool = ..., mode: Literal["relu", "softmax"] = ...,
            block: int | None = ..., index: str = ..., return_stats: bool = ..., **kwargs: Any) -> Any: ...

class DecodeCache:
    kind: str
    output_size: float | None
    params: dict[str, Any]
    codes: bool
    dtype: np.dtype[Any] | None
    def __init__(self, kind: str = ..., output_size: float | None = ..., *, codes: bool = ...,
                 **params: Any) -> None: ...
    def __len__(self) -> int: ...
    @property
    def shape(self) -> tuple[int, int, int, int, int] | None: ...
    def append(self, k: _Arr, v: _Arr) -> DecodeCache: ...
    def keys(self) -> _Out: ...
    def values(self) -> _Out: ...
    def attend(self, q: _Arr, mode: Literal["relu", "softmax"] = ..., *, bias: _Arr | None = ..., alpha: int = ...,
               top_r: int | None = ..., threshold: _Arr | None = ..., top_p: float | None = ...,
               scale: float | None = ..., return_stats: bool | Literal["exact"] = ...) -> Any: ...

__all__: list[str]
