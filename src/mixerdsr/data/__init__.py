"""Datasets: the EnvData schema, .npz I/O, and the built-in benchmark generators."""

from ._envdata import SPLITS as SPLITS
from ._envdata import DataError as DataError
from ._envdata import EnvData as EnvData
from ._envdata import load_dataset as load_dataset
from ._envdata import read_meta as read_meta
from ._envdata import save_dataset as save_dataset
from ._expr import CompiledRHS as CompiledRHS
from ._expr import compile_rhs as compile_rhs
from ._families import FamilySpec as FamilySpec
from ._families import env_parameters as env_parameters
from ._families import generate_families as generate_families
from ._families import initial_conditions as initial_conditions
from ._families import load_family_spec as load_family_spec
from ._families import padded_params as padded_params
from ._families import parse_family_spec as parse_family_spec
from ._families import plan_families as plan_families
from ._classic import generate_go as generate_go
from ._classic import generate_lv as generate_lv
from ._classic import generate_sm as generate_sm
from ._registry import generate_dataset as generate_dataset
from ._registry import list_datasets as list_datasets
from ._registry import load_any as load_any
