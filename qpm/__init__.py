"""QPM: globally interpretable image classification by discrete feature-class assignment.

``qpm.load(run_dir)`` returns a trained model (see :mod:`qpm.inference`); it is imported on
first use, so ``import qpm`` stays light (no torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["__version__", "load"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports it lazily
    from qpm.inference import load


def __getattr__(name: str):
    if name == "load":
        from qpm.inference import load

        return load
    raise AttributeError(f"module 'qpm' has no attribute {name!r}")
