"""Live plots of a federated run and the Dirichlet densities of Auto-FedAvg's weights.

``history`` (no Qt) builds a run's state from its events; ``dirichlet`` (no Qt) computes
the densities; ``model`` is the Qt model the views subscribe to; ``line_plots``,
``density_plots`` and ``round_slider`` are the views; ``run_plots.RunPlotsWidget``
combines them for the main window. Nothing is imported here so that the Qt-free modules
stay importable without Qt.
"""
