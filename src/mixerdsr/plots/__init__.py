"""Plots (matplotlib on its own Agg canvas per figure: no pyplot state, no style changes).

Each ``plot_*`` function writes a PNG and has a ``*_figure`` builder that returns the
matplotlib ``Figure`` without writing it. By kind: a training run (losses, gate heatmaps,
routes, route history, and :func:`plot_run` for all of a run's figures), predictions against
data, contexts, a dataset's overview, the paper's Figure 2, and the Markdown report.
"""

from ._canvas import family_label as family_label
from ._canvas import new_figure as new_figure
from ._canvas import save_figure as save_figure
from ._canvas import shown_rel_mse as shown_rel_mse
from ._contexts import context_pca_figure as context_pca_figure
from ._contexts import contexts_by_expert_figure as contexts_by_expert_figure
from ._contexts import plot_context_pca as plot_context_pca
from ._data import dataset_overview_figure as dataset_overview_figure
from ._data import plot_dataset_overview as plot_dataset_overview
from ._figure2 import figure2_figure as figure2_figure
from ._figure2 import plot_figure2 as plot_figure2
from ._predictions import adapt_forecast_figure as adapt_forecast_figure
from ._predictions import plot_adapt_forecast as plot_adapt_forecast
from ._predictions import plot_predictions as plot_predictions
from ._predictions import predictions_figure as predictions_figure
from ._report import render_report as render_report
from ._report import write_report as write_report
from ._training import gate_heatmaps_figure as gate_heatmaps_figure
from ._training import losses_figure as losses_figure
from ._training import plot_gate_heatmaps as plot_gate_heatmaps
from ._training import plot_losses as plot_losses
from ._training import plot_route_history as plot_route_history
from ._training import plot_routes as plot_routes
from ._training import plot_run as plot_run
from ._training import route_history_figure as route_history_figure
from ._training import routes_figure as routes_figure
