"""Shared fixtures: the real Hydra config, composed and shrunk to CPU-test size (as lightning-hydra-template does)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

# Without a GPU, Triton kernels run under its CPU interpreter. Triton reads TRITON_INTERPRET when it is imported
# (torch imports it), so this must happen before anything imports torch.
if not os.environ.get("TRITON_INTERPRET") and importlib.util.find_spec("triton") is not None:
    _cuda = os.path.exists("/dev/nvidia0") or os.environ.get("CUDA_VISIBLE_DEVICES") not in (None, "")
    if not _cuda:
        os.environ["TRITON_INTERPRET"] = "1"

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from tasks.app.runner import register_resolvers
from tasks.data.fashion_mnist import DEBIAN_DIR, FILES, find_file
from tests.skip_policy import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401 (pytest hooks)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# A tiny ResNet-20 (widths 4/8/8) on a few batches of the real data: each fit takes a second or two.
TINY = [
    "+model.backbone_kwargs.widths=[4,8,8]",
    "data.batch_size=16",
    "data.eval_batch_size=64",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1",
    "logger=csv",
]


def fashion_mnist_available() -> bool:
    directory = Path(os.environ.get("ZOO_FASHION_MNIST") or DEBIAN_DIR)
    return all(find_file(directory, stem) for stems in FILES.values() for stem in stems)


needs_fashion_mnist = pytest.mark.skipif(
    not fashion_mnist_available(), reason="Fashion-MNIST missing: apt-get install dataset-fashion-mnist"
)


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The real ``conf/train.yaml`` with ``overrides``, its run directory set to ``output_dir``."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*overrides, f"paths.output_dir={output_dir}"])
    with open_dict(cfg):
        cfg.paths.log_dir = str(output_dir.parent / "logs")
    return cfg


@pytest.fixture
def make_cfg(tmp_path):
    """``make_cfg(*overrides, tiny=True, name="run")``: a composed config writing under ``tmp_path / name``."""

    def factory(*overrides: str, tiny: bool = True, name: str = "run") -> DictConfig:
        return compose_config([*(TINY if tiny else []), *overrides], tmp_path / name)

    return factory


def run_tool(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run ``python <args>`` from ``cwd`` with the project importable; return the finished process."""
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def consolidated(tmp_path: Path, name: str) -> dict:
    """Consolidate run ``tmp_path/name``'s sharded ``last.ckpt`` with ``tools/consolidate.py`` (into
    ``tmp_path/name.safetensors`` and a single-file ``tmp_path/name.ckpt``) and return that checkpoint."""
    import torch

    out = tmp_path / f"{name}.ckpt"
    result = run_tool(
        str(ROOT / "tools" / "consolidate.py"), str(tmp_path / name / "checkpoints" / "last.ckpt"),
        "--output", str(tmp_path / f"{name}.safetensors"), "--ckpt", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out, weights_only=False)
