"""Datasets: the EnvData schema, .npz I/O, and the built-in benchmark generators."""

from ._envdata import SPLITS as SPLITS
from ._envdata import DataError as DataError
from ._envdata import EnvData as EnvData
from ._envdata import load_dataset as load_dataset
from ._envdata import read_meta as read_meta
from ._envdata import save_dataset as save_dataset
