"""Plots (matplotlib, Agg canvas; no pyplot global state, no style changes)."""

from ._data import plot_dataset_overview as plot_dataset_overview
