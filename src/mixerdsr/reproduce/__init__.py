"""Reproduce the paper's tables: cells of (dataset, backbone, variant, seed), one JSON each.

``mixerdsr reproduce TABLE --budget smoke|cpu|paper`` runs every cell of a table whose JSON is
not there yet (``--force`` runs them again), so a table is built up over several sittings and
an interrupted cell continues from its checkpoint; ``--report`` rebuilds the Markdown table
(ours as mean ± std over seeds beside the paper's value) from the JSON files alone.

Tables: ``fig2`` (ODEBench-2: MixER-1, the gradient gate, MixER-2, MixER-auto), ``table2`` (ODEBench-10A),
``table3`` (ODEBench-10B, relMSE and TPRMSE), ``table4`` (LV, GO, SM: MixER-3, the single
meta-learners and CAVIA at the paper's active parameter counts) and ``gate`` (the gate
schedule: an update after every inner step, every 4th, or once per inner loop).

Modules: ``_tables`` (the paper's numbers, tables and cells as data), ``_budgets`` (a cell's
settings at a budget: budgets, variants and per-backbone choices as data, width matching),
``_runner`` (a cell in a fresh process, one JSON each) and ``_report`` (Markdown, Figure 2).
"""

from ._budgets import BACKBONE_CHOICES as BACKBONE_CHOICES
from ._budgets import VARIANTS as VARIANTS
from ._budgets import BackboneChoice as BackboneChoice
from ._budgets import matched_width as matched_width
from ._budgets import paper_active_parameters as paper_active_parameters
from ._budgets import settings as settings
from ._report import figure2 as figure2
from ._report import load_cells as load_cells
from ._report import report as report
from ._runner import cell_record as cell_record
from ._runner import run_cell as run_cell
from ._runner import run_table as run_table
from ._tables import BUDGETS as BUDGETS
from ._tables import TABLES as TABLES
from ._tables import Cell as Cell
from ._tables import cells as cells
from ._tables import preset_of as preset_of
from ._tables import results_dir as results_dir
from ._tables import shard_cells as shard_cells
