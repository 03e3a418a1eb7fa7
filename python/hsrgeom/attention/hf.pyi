from collections.abc import Iterable
from typing import Any, Literal

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from ._cache import DecodeCache

MIN_KEYS: int
MIN_KEYS_SCAN: int
MIN_KEYS_TOP_P: int

class Settings:
    mode: str
    top_r: int | None
    threshold: float | None
    top_p: float | None
    min_keys: int
    index: str
    def __init__(self, mode: Literal["softmax"] = ..., *, top_r: int | None = ..., threshold: float | None = ...,
                 top_p: float | None = ..., min_keys: int | None = ..., index: str = ...) -> None: ...
    def knobs(self) -> dict[str, Any]: ...

def attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, dropout: float = ..., scaling: float | None = ...,
              **kwargs: Any) -> tuple[torch.Tensor, None]: ...

class HsrgeomLayer(DynamicLayer):
    decode: DecodeCache | None
    last_stats: dict[str, Any] | None
    def __init__(self, **kwargs: Any) -> None: ...
    def decode_cache(self, index: str = ...) -> DecodeCache: ...

class HsrgeomCache(DynamicCache):
    def __init__(self, config: Any = ..., **kwargs: Any) -> None: ...

def register(name: str = ...) -> str: ...
def enable(model: Any, mode: Literal["softmax"] = ..., *, top_r: int | None = ..., threshold: float | None = ...,
           top_p: float | None = ..., layers: Literal["full", "all"] | Iterable[int] = ...,
           min_keys: int | None = ..., index: str = ..., name: str = ...) -> Any: ...
def disable(model: Any) -> Any: ...
def settings(model: Any) -> dict[int, Settings | None]: ...

__all__: list[str]
