"""The single place that makes ``robustbench`` importable next to PyPI's ``pyautoattack``.

robustbench 1.1.1 does ``from autoattack import AutoAttack`` (and ``autoattack.state``) at import
time, but the AutoAttack release on PyPI is the package ``pyautoattack`` with a keyword-only API.
We register ``pyautoattack`` under the module name ``autoattack`` before importing robustbench.
Nothing in this package calls ``robustbench.eval.benchmark`` (it expects the old positional API);
evaluation calls ``pyautoattack.AutoAttack`` directly (see ``evaluate/autoattack.py``).

robustbench also imports ``pkg_resources``, which needs ``setuptools<81`` (a declared dependency).
Always import robustbench through :func:`import_robustbench`, never directly.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType


def _alias_autoattack() -> None:
    """Make ``import autoattack`` and ``import autoattack.state`` resolve to pyautoattack."""
    if "autoattack" in sys.modules:
        return
    pyautoattack = importlib.import_module("pyautoattack")
    sys.modules["autoattack"] = pyautoattack
    for sub in ("state", "autoattack", "autopgd_base", "fab_pt", "square", "checks", "other_utils"):
        sys.modules[f"autoattack.{sub}"] = importlib.import_module(f"pyautoattack.{sub}")


def import_robustbench() -> ModuleType:
    """Return the ``robustbench`` module, importing it with the autoattack alias in place."""
    if "robustbench" in sys.modules:
        return sys.modules["robustbench"]
    _alias_autoattack()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pkg_resources deprecation noise
        return importlib.import_module("robustbench")


def robustbench_version() -> str:
    """Installed robustbench version, without importing it."""
    from importlib.metadata import version

    return version("robustbench")
