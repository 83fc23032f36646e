"""In-process K-site runner: the same strategy code as over Flower, one process."""

from engine.simulation.runner import load_sites, resume, simulate, simulate_sites

__all__ = ["load_sites", "resume", "simulate", "simulate_sites"]
