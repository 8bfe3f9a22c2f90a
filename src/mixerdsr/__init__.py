"""mixerdsr: hierarchical dynamical system reconstruction with MixER.

The public API is what this module re-exports.
"""

import os as _os

# Equinox's runtime checks inside compiled code (diffrax uses them) are host callbacks unless
# EQX_ON_ERROR says otherwise; a function holding a host callback is never stored in JAX's
# persistent compilation cache nor exported, so every process would compile it again. mixerdsr
# already reports what they would raise as failed solves (non-finite results), so they return
# NaN instead. Set EQX_ON_ERROR before importing mixerdsr to choose otherwise.
_os.environ.setdefault("EQX_ON_ERROR", "nan")

from . import metrics as metrics
from ._config import AdaptSettings as AdaptSettings
from ._config import Config as Config
from ._config import DataSettings as DataSettings
from ._config import EvalSettings as EvalSettings
from ._config import ModelSettings as ModelSettings
from ._config import TrainSettings as TrainSettings
from ._config import list_presets as list_presets
from ._config import load_config as load_config
from ._diagnostics import diagnose as diagnose
from ._run import RunResult as RunResult
from ._run import run as run
from .adaptation import Adaptation as Adaptation
from .adaptation import adapt_contexts as adapt_contexts
from .adaptation import adapt_new as adapt_new
from .adaptation import expert_starts as expert_starts
from .data import DataError as DataError
from .data import EnvData as EnvData
from .data import generate_dataset as generate_dataset
from .data import list_datasets as list_datasets
from .data import load_dataset as load_dataset
from .data import save_dataset as save_dataset
from .evaluation import evaluate_split as evaluate_split
from .experts import AbstractExpert as AbstractExpert
from .experts import AbstractSequenceExpert as AbstractSequenceExpert
from .experts import AbstractVectorFieldExpert as AbstractVectorFieldExpert
from .experts import ExpertSettings as ExpertSettings
from .experts import SolverSettings as SolverSettings
from .experts import register_expert as register_expert
from .inference import predict as predict
from .inference import routes as routes
from .metrics import adjusted_rand_index as adjusted_rand_index
from .metrics import matched_accuracy as matched_accuracy
from .metrics import mse as mse
from .metrics import per_env_mse as per_env_mse
from .metrics import per_env_rel_mse as per_env_rel_mse
from .metrics import purity as purity
from .metrics import rel_mse as rel_mse
from .metrics import tprmse as tprmse
from .mixer import MixER as MixER
from .mixer import make_mixer as make_mixer
from .models import TrainedModel as TrainedModel
from .models import list_pretrained as list_pretrained
from .models import load_model as load_model
from .models import load_pretrained as load_pretrained
from .models import save_model as save_model
from .routing import GateSettings as GateSettings
from .routing import WarmStartSettings as WarmStartSettings
from .training import TrainResult as TrainResult
from .training import train as train


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mixerdsr")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
        return "0+unknown"


__version__ = _version()
