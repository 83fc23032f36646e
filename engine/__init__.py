"""FedSeg Studio engine: everything that is not GUI (never imports Qt or ``app``)."""

__version__ = "0.1.0"
