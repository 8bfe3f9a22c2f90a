"""Training a MixER layer: the state, the compiled outer step, the host loop.

- :func:`train` runs a whole training (checkpoints, resume, history, model selection);
  :func:`prepare_training` gives the arrays it trains on, and :func:`init_state` /
  :func:`make_outer_step` the pieces to step a state by hand (benchmarks);
- ``_state``: :class:`TrainState`, :class:`TrainData`, the optimisers;
- ``_step``: the compiled outer step (proximal alternating minimisation + the gate's update);
- ``_inner_loop``: the outer step of an expert that trains with an inner loop (CAVIA);
- ``_records``: :class:`TrainResult`, the history file, resume checks;
- ``_loop``: the host loop.
"""

from ._inner_loop import inner_loop_contexts as inner_loop_contexts
from ._jit import LOW_MEMORY_OPTIONS as LOW_MEMORY_OPTIONS
from ._loop import TrainInputs as TrainInputs
from ._loop import prepare_training as prepare_training
from ._loop import train as train
from ._records import ResumeError as ResumeError
from ._records import TrainResult as TrainResult
from ._records import check_resume as check_resume
from ._records import env_weights as env_weights
from ._records import read_history as read_history
from ._records import split_validation as split_validation
from ._state import LossCache as LossCache
from ._state import TrainData as TrainData
from ._state import TrainState as TrainState
from ._state import forcing_at as forcing_at
from ._state import init_state as init_state
from ._state import optimisers as optimisers
from ._step import expert_losses as expert_losses
from ._step import make_outer_step as make_outer_step
