"""Expert backbones: every one is an :class:`AbstractExpert`."""

from ._base import AbstractExpert as AbstractExpert
from ._base import MLPField as MLPField
from ._coda import CoDA as CoDA
from ._geps import GEPS as GEPS
from ._ncf import NCF as NCF
from ._shplrnn import SHPLRNN as SHPLRNN

BACKBONES = {"geps": GEPS, "coda": CoDA, "ncf": NCF, "shplrnn": SHPLRNN}
