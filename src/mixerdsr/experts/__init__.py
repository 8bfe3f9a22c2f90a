"""Expert backbones: every one is an :class:`AbstractExpert`.

``BACKBONES`` maps the names a run configuration accepts (``backbone = "geps"``) to expert
classes; :func:`register_expert` adds a user's own class under a new name.
"""

from ._base import AbstractExpert as AbstractExpert
from ._base import AbstractInnerLoopExpert as AbstractInnerLoopExpert
from ._base import AbstractSequenceExpert as AbstractSequenceExpert
from ._base import AbstractVectorFieldExpert as AbstractVectorFieldExpert
from ._base import ExpertSettings as ExpertSettings
from ._base import MLPField as MLPField
from ._base import MLPSettings as MLPSettings
from ._base import ScaledField as ScaledField
from ._cavia import CAVIA as CAVIA
from ._cavia import CAVIASettings as CAVIASettings
from ._coda import CoDA as CoDA
from ._geps import GEPS as GEPS
from ._integrate import SolverSettings as SolverSettings
from ._ncf import NCF as NCF
from ._ncf import NCFSettings as NCFSettings
from ._shplrnn import SHPLRNN as SHPLRNN
from ._shplrnn import SHPLRNNSettings as SHPLRNNSettings

BACKBONES: dict[str, type[AbstractExpert]] = {
    "geps": GEPS,
    "coda": CoDA,
    "ncf": NCF,
    "shplrnn": SHPLRNN,
    "cavia": CAVIA,
}


def register_expert(name: str, cls: type[AbstractExpert]) -> None:
    """Make an expert class available to run configurations as ``backbone = name``.

    Args:
        name: the backbone name (lower case, not one of the built-in names unless ``cls`` is
            that same class).
        cls: a concrete subclass of :class:`AbstractVectorFieldExpert` or
            :class:`AbstractSequenceExpert` whose ``__init__`` takes ``(state_size,
            context_size, key=key)`` and, by name, the fields of its ``Settings`` dataclass
            (given in a run configuration as the table ``[model.<name>]``).

    Raises:
        TypeError: ``cls`` is not an expert class.
        ValueError: ``name`` is taken by another class.
    """
    if not (isinstance(cls, type) and issubclass(cls, AbstractExpert)):
        raise TypeError(f"register_expert({name!r}, ...): expected a subclass of AbstractExpert, found {cls!r}")
    if BACKBONES.get(name, cls) is not cls:
        raise ValueError(f"backbone name {name!r} is already used by {BACKBONES[name].__name__}")
    BACKBONES[name] = cls
