"""Figures for notebooks and reports: matplotlib (static, land in HTML) and plotly views."""
from .conversion import (activation_scatter, error_vs_T_per_layer, firing_rates, layer_heatmap,
                         layer_heatmap_plotly, membrane_traces, replaced_ops_table)
from .dynamics import (if_loss_tightening, if_trajectory, lr_gamma_figure, range_bound_figure,
                       schedule_errors, signgd_approximation, signgd_trajectories, target_errors)
from .notebook import setup_notebook
from .timesteps import accuracy_figure, energy_figure

__all__ = [
    "accuracy_figure", "activation_scatter", "energy_figure", "error_vs_T_per_layer",
    "firing_rates", "if_loss_tightening", "if_trajectory", "layer_heatmap", "layer_heatmap_plotly",
    "lr_gamma_figure", "membrane_traces", "range_bound_figure", "replaced_ops_table",
    "schedule_errors", "setup_notebook", "signgd_approximation", "signgd_trajectories",
    "target_errors",
]
