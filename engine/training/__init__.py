"""Local training (loss, optimiser, AMP/CUDA) and evaluation metrics."""
