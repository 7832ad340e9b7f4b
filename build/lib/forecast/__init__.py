"""forecast: honest parameter-scaling studies of PatchTST-style transformers on market data."""

__version__ = "0.1.0"
