from ._auto import build_index as build_index
from ._base import Index as Index
from ._results import HalfspaceResult as HalfspaceResult
from ._results import HalfspaceSums as HalfspaceSums
from ._results import QueryStats as QueryStats
from ._results import gather_weighted_sum as gather_weighted_sum
from ._results import release_memory as release_memory
from ._structures import BruteForce as BruteForce
from ._structures import ConvexLayers as ConvexLayers
from ._structures import ConvexLayers3 as ConvexLayers3
from ._structures import PartitionTree as PartitionTree
from ._structures import QuantizedScan as QuantizedScan
from ._structures import ShallowCutting3 as ShallowCutting3
from ._structures import SimplicialPartitionTree as SimplicialPartitionTree
from ._structures import load as load

__version__: str

def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def get_verbose() -> bool: ...
def set_verbose(on: bool) -> bool: ...
