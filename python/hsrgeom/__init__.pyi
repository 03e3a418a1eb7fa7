from ._index import BruteForce as BruteForce
from ._index import ConvexLayers as ConvexLayers
from ._index import ConvexLayers3 as ConvexLayers3
from ._index import ShallowCutting3 as ShallowCutting3
from ._index import HalfspaceResult as HalfspaceResult
from ._index import HalfspaceSums as HalfspaceSums
from ._index import PartitionTree as PartitionTree
from ._index import QuantizedScan as QuantizedScan
from ._index import QueryStats as QueryStats
from ._index import SimplicialPartitionTree as SimplicialPartitionTree
from ._index import build_index as build_index
from ._index import load as load

__version__: str

def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def get_verbose() -> bool: ...
def set_verbose(on: bool) -> bool: ...
