"""A feature whose optional extra is missing stops with one paragraph naming the extra, not a traceback."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_tool
from zoo.errors import ZooError
from zoo.extras import EXTRAS, MissingExtraError, require


def hide(monkeypatch, *modules: str) -> None:
    """Make ``import module`` fail in this process, as if the package were not installed."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def shadow_package(tmp_path: Path, name: str) -> Path:
    """A directory that, first on PYTHONPATH, makes ``import name`` fail in a subprocess."""
    package = tmp_path / "shadow" / name
    package.mkdir(parents=True)
    hidden = f"raise ModuleNotFoundError({name!r} + ' hidden by the test', name={name!r})\n"
    (package / "__init__.py").write_text(hidden)
    return package.parent


def test_require_names_the_extra_and_the_install_command(monkeypatch):
    hide(monkeypatch, "pycocotools")
    with pytest.raises(MissingExtraError) as info:
        require("pycocotools", "detection", needed_for="task=detection (COCO AP)")
    error = info.value
    assert isinstance(error, ZooError) and isinstance(error, ImportError)
    assert error.extra == "detection" and error.module == "pycocotools"
    assert str(error).startswith("task=detection (COCO AP) needs pycocotools")
    assert str(error).endswith("install the [detection] extra: pip install -e '.[detection]'")
    assert require("json", "dev", needed_for="x").__name__ == "json"
    with pytest.raises(ValueError, match="unknown extra 'detectron'; valid: dev, hf, detection, mmdet, bench"):
        require("json", "detectron", needed_for="x")


def test_every_extra_is_declared_in_pyproject():
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(declared) == set(EXTRAS)


def test_hf_interop_without_transformers(monkeypatch):
    from zoo.interop import minimax
    from zoo.models import HybridLM, HybridLMConfig

    hide(monkeypatch, "transformers")
    with pytest.raises(MissingExtraError, match=r"Hugging Face interop .* needs transformers .*\[hf\]"):
        config = HybridLMConfig(vocab_size=11, hidden_size=8, num_layers=1, attention="L", num_heads=1)
        minimax.to_hf(HybridLM(config), "x")


def test_mmdet_bridge_without_mmdet(monkeypatch):
    hide(monkeypatch, "mmdet", "mmdet.registry")
    monkeypatch.delitem(sys.modules, "zoo.integrations.mmdet", raising=False)
    with pytest.raises(MissingExtraError, match=r"the mmdet bridge .* needs mmdet\.registry .*\[mmdet\].* full mmcv"):
        importlib.import_module("zoo.integrations.mmdet")


@pytest.mark.slow
def test_detection_run_without_pycocotools_exits_2_with_one_paragraph(tmp_path):
    done = run_tool(
        str(ROOT / "tools" / "train.py"),
        "task=detection",
        "trainer.fast_dev_run=true",
        f"data.root={tmp_path / 'data'}",
        cwd=tmp_path,
        env={
            "PYTHONPATH": f"{shadow_package(tmp_path, 'pycocotools')}:{ROOT}",
            "ZOO_LOG_DIR": str(tmp_path / "logs"),
        },
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "error: task=detection (COCO box and mask AP in torchmetrics) needs pycocotools" in done.stderr
    assert "pip install -e '.[detection]'" in done.stderr


def test_fla_benchmark_without_fla(tmp_path):
    done = run_tool(
        str(ROOT / "tools" / "bench" / "lightning_attention.py"),
        cwd=tmp_path,
        env={"PYTHONPATH": f"{shadow_package(tmp_path, 'fla')}:{ROOT}"},
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "needs fla" in done.stderr and "pip install -e '.[bench]'" in done.stderr and "--without-fla" in done.stderr


def test_a_transformers_that_cannot_import_its_minimax_model_names_the_pin(monkeypatch):
    import types

    from zoo.interop import minimax

    class Broken(types.ModuleType):  # transformers ≥ 5.25 beside our kernels/: the lazy class import fails
        __version__ = "5.25.0"

        def __getattr__(self, name):
            raise ImportError("cannot import name 'CUDAProperties' from 'kernels'")

    monkeypatch.setitem(sys.modules, "transformers", Broken("transformers"))
    with pytest.raises(MissingExtraError, match=r"transformers 5\.25\.0 .*'kernels'.*transformers < 5\.25"):
        minimax._transformers()
