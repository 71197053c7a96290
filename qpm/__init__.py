"""QPM: globally interpretable image classification by discrete feature-class assignment."""

__version__ = "0.1.0"
