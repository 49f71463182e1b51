"""Weak supervision: label tasks, labelling functions and label models.

`run` is the body of the DVC stage `label@<dataset>` (stages/label.py).
"""

from datakiln.label.stage import run

__all__ = ["run"]
