"""The project's top-level names (zoo, tasks, kernels) must be ours: ``tasks`` and ``kernels`` exist on PyPI too."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["zoo", "tasks", "kernels"])
def test_top_level_packages_resolve_to_this_project(name):
    module = importlib.import_module(name)
    assert Path(module.__file__).resolve().parent == ROOT / name, (
        f"import {name} found {module.__file__}, not this project's package: another distribution named "
        f"'{name}' shadows it; uninstall it or run from a clean environment"
    )


def test_importing_zoo_is_cheap():
    import subprocess
    import sys

    code = "import sys, zoo, zoo.registries; print('torch' in sys.modules, 'lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
