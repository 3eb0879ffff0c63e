"""soraflow: the Open-Sora 1.1 training recipe as an MLOps pipeline."""

__version__ = "0.1.0"
