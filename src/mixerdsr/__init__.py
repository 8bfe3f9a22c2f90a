"""mixerdsr: hierarchical dynamical system reconstruction with MixER.

The public API is what this module re-exports.
"""

from .data import DataError as DataError
from .data import EnvData as EnvData
from .data import load_dataset as load_dataset
from .data import save_dataset as save_dataset
from .data import generate_dataset as generate_dataset
from .data import list_datasets as list_datasets

__version__ = "0.1.0"
