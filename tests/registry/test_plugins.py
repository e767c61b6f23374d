"""Third-party components through the ``zoo.plugins`` entry point, installed with real dist-info metadata."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, needs_fashion_mnist, run_tool

PLUGINS = Path(__file__).resolve().parents[1] / "plugin_pkg"


def install(site: Path, package: str, entry_point: str) -> None:
    """What ``pip install`` leaves behind: the package and ``<name>-<version>.dist-info`` with its entry points."""
    shutil.copytree(PLUGINS / package, site / package)
    dist_info = site / f"{package}-0.1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1.0\n")
    (dist_info / "entry_points.txt").write_text(f"[zoo.plugins]\n{entry_point} = {package}\n")
    (dist_info / "RECORD").write_text("")


@pytest.fixture
def site(tmp_path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    install(site, "zoo_example_plugin", "example")
    return site


def test_plugin_component_is_registered_before_first_lookup(site, tmp_path):
    probe = (
        "from zoo.registries import CHANNEL_ATTENTION as R; import torch\n"
        "m = R.build('my_ca', 8)\n"
        "print(type(m).__module__, tuple(m(torch.randn(2, 8, 4, 4)).shape), 'my_ca' in R.names())\n"
    )
    result = run_tool("-c", probe, cwd=tmp_path, env={"PYTHONPATH": f"{site}:{ROOT}"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["zoo_example_plugin", "(2,", "8,", "4,", "4)", "True"]


def test_plugins_can_be_disabled(site, tmp_path):
    probe = "from zoo.registries import CHANNEL_ATTENTION as R; print('my_ca' in R.names())"
    result = run_tool("-c", probe, cwd=tmp_path, env={"PYTHONPATH": f"{site}:{ROOT}", "ZOO_DISABLE_PLUGINS": "1"})
    assert result.stdout.strip() == "False", result.stderr


def test_broken_plugin_warns_by_name_and_the_rest_still_load(site, tmp_path):
    install(site, "zoo_broken_plugin", "broken")
    probe = (
        "import warnings; warnings.simplefilter('always')\n"
        "from zoo.registries import CHANNEL_ATTENTION as R\n"
        "print(sorted(n for n in R.names() if n in ('my_ca', 'mca')))\n"
    )
    result = run_tool("-c", probe, cwd=tmp_path, env={"PYTHONPATH": f"{site}:{ROOT}"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['mca', 'my_ca']"
    assert "zoo plugin 'broken'" in result.stderr and "zoo_broken_plugin" in result.stderr
    assert "needs a library that is not installed" in result.stderr


@pytest.mark.slow
@needs_fashion_mnist
def test_plugin_usable_from_hydra_and_lightning_cli(site, tmp_path):
    env = {"PYTHONPATH": f"{site}:{ROOT}", "ZOO_LOG_DIR": str(tmp_path / "logs")}
    tiny = ["+model.backbone_kwargs.widths=[4,8,8]", "data.batch_size=16", "trainer.fast_dev_run=true", "logger=csv"]
    hydra = run_tool(str(ROOT / "tools/train.py"), "task=vision", "model.ca=my_ca", *tiny, cwd=tmp_path, env=env)
    assert hydra.returncode == 0, hydra.stderr[-3000:]
    [config] = (tmp_path / "logs").glob("vision/runs/*/.hydra/config.yaml")
    assert "ca: my_ca" in config.read_text()

    cli = run_tool(
        str(ROOT / "tools/cli.py"),
        "fit",
        "--config",
        str(ROOT / "conf/cli/vision.yaml"),
        "--model.ca",
        "my_ca",
        "--model.backbone_kwargs",
        "{widths: [4, 8, 8]}",
        "--trainer.fast_dev_run",
        "true",
        "--trainer.default_root_dir",
        str(tmp_path / "cli"),
        cwd=tmp_path,
        env=env,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
