"""mixerdsr: hierarchical dynamical system reconstruction with MixER.

The public API is what this module re-exports.
"""

from .data import DataError as DataError
from .data import EnvData as EnvData
from .data import load_dataset as load_dataset
from .data import save_dataset as save_dataset
from .data import generate_dataset as generate_dataset
from .data import list_datasets as list_datasets
from . import metrics as metrics
from .metrics import adjusted_rand_index as adjusted_rand_index
from .metrics import matched_accuracy as matched_accuracy
from .metrics import mse as mse
from .metrics import per_env_mse as per_env_mse
from .metrics import per_env_rel_mse as per_env_rel_mse
from .metrics import purity as purity
from .metrics import rel_mse as rel_mse
from .metrics import tprmse as tprmse

__version__ = "0.1.0"
