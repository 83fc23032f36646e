"""FedSeg Studio's desktop app (PySide6 + pyqtgraph) over :mod:`engine`.

``viewer/`` shows CT with mask overlays, ``plots/`` the run's curves and Dirichlet
densities, ``federation/`` the demo/join/host panels; ``workers/`` runs the engine off
the GUI thread and turns its events into Qt signals. The engine never imports this package.
"""
