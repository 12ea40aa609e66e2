"""Warnings that point at the caller's line, not at analysis' own internals."""

from __future__ import annotations

import os
import sys
import warnings

_HERE = os.path.dirname(os.path.abspath(__file__))


def warn_caller(message: str, category: type[Warning] = UserWarning) -> None:
  """warnings.warn with the stacklevel of the first frame outside the analysis package
  (a notebook cell, a script, sae_jax.cli), however deep inside analysis the cause is."""
  level, frame = 2, sys._getframe(1)  # level 2 = our caller  # pylint: disable=protected-access
  while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _HERE:
    level, frame = level + 1, frame.f_back
  warnings.warn(message, category, stacklevel=level)
