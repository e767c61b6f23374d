"""DetectionTask on a tiny synthetic set (rectangles and ellipses with masks on noise), self-contained: CPU, seconds."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from tasks.detection import DetectionTask
from zoo.errors import ConfigError
from zoo.registries import DETECTOR

CONF = Path(__file__).resolve().parents[2] / "conf"
DETECTORS = ("faster_rcnn", "retinanet", "mask_rcnn")
TINY = dict(backbone="resnet18", min_size=64, max_size=96, anchor_sizes=[8, 16, 32, 64, 128])
# few proposals and detections: an untrained two-stage detector otherwise scores 1000 RoIs an image on the CPU
FEW = dict(
    rpn_pre_nms_top_n_train=200,
    rpn_post_nms_top_n_train=100,
    rpn_pre_nms_top_n_test=100,
    rpn_post_nms_top_n_test=50,
    box_batch_size_per_image=64,
    box_detections_per_img=20,
)


class Shapes(Dataset):
    """Noise images ``[3, H, W]`` with 1–3 filled rectangles (class 1) or ellipses (class 2), boxes and masks."""

    num_classes = 2

    def __init__(self, n: int = 4, seed: int = 0) -> None:
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(self.seed * 1000 + i)
        h, w = (int(v) for v in torch.randint(64, 97, (2,), generator=g))
        image = torch.rand(3, h, w, generator=g) * 0.3
        masks, boxes, labels = [], [], []
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            bw, bh = (int(v) for v in torch.randint(12, 33, (2,), generator=g))
            x0, y0 = int(torch.randint(0, w - bw, (1,), generator=g)), int(torch.randint(0, h - bh, (1,), generator=g))
            label = int(torch.randint(1, 3, (1,), generator=g))
            if label == 1:
                mask = (xx >= x0) & (xx < x0 + bw) & (yy >= y0) & (yy < y0 + bh)
            else:
                cx, cy = x0 + bw / 2 - 0.5, y0 + bh / 2 - 0.5
                mask = ((xx - cx) / (bw / 2)) ** 2 + ((yy - cy) / (bh / 2)) ** 2 <= 1
            image[:, mask] = torch.rand(3, 1, generator=g) * 0.5 + 0.5
            ys, xs = mask.nonzero(as_tuple=True)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            masks.append(mask.to(torch.uint8))
            labels.append(label)
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": torch.stack(masks),
            "image_id": i,
        }
        return image, target


def collate(items):
    images, targets = zip(*items, strict=True)
    return list(images), list(targets)


class ShapesData(L.LightningDataModule):
    num_classes = Shapes.num_classes

    def _loader(self, seed: int) -> DataLoader:
        return DataLoader(Shapes(4, seed), batch_size=2, collate_fn=collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader(0)

    def val_dataloader(self) -> DataLoader:
        return self._loader(1)

    def test_dataloader(self) -> DataLoader:
        return self._loader(2)


def _task(detector: str, ca: str = "none", **kwargs) -> DetectionTask:
    if detector != "retinanet":
        kwargs.setdefault("detector_kwargs", FEW)
    return DetectionTask(**{**TINY, "detector": detector, "ca": ca, "num_classes": Shapes.num_classes, **kwargs})


def test_synthetic_data_matches_the_batch_contract():
    images, targets = collate([Shapes()[i] for i in range(2)])
    for image, target in zip(images, targets, strict=True):
        n = target["boxes"].shape[0]
        assert image.dtype == torch.float32 and image.shape[0] == 3 and image.min() >= 0 and image.max() <= 1
        assert target["labels"].dtype == torch.int64 and target["labels"].min() >= 1
        assert target["masks"].shape == (n, *image.shape[1:]) and target["masks"].dtype == torch.uint8
        b = target["boxes"]
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()


@pytest.mark.parametrize("ca", ["none", "mca"])
@pytest.mark.parametrize("detector", DETECTORS)
def test_train_and_validation_step(detector, ca):
    torch.manual_seed(0)
    task = _task(detector, ca)
    n_mca = sum(type(m).__name__ == "MomentChannelAttention" for m in task.model.backbone.body.modules())
    assert n_mca == (8 if ca == "mca" else 0)  # one per BasicBlock of ResNet-18, inside the FPN's body
    batch = collate([Shapes()[i] for i in range(2)])
    task.train()
    losses = task.model(batch[0], task._targets(batch[1]))
    assert ("loss_mask" in losses) == (detector == "mask_rcnn")
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in task.model.backbone.body.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    task.eval()
    with torch.no_grad():
        task.validation_step(batch, 0)
        preds = task(batch[0])
    assert len(preds) == 2 and preds[0]["boxes"].shape[-1] == 4
    for iou_type, metric in task.val_map.items():
        result = metric.compute()
        for key in ("map", "map_50", "map_75", "map_small", "map_medium", "map_large"):
            value = float(result[key])
            assert value == -1 or 0 <= value <= 1, (iou_type, key, value)
    assert set(task.val_map) == ({"bbox", "segm"} if detector == "mask_rcnn" else {"bbox"})


@pytest.mark.parametrize("detector", DETECTORS)
def test_fast_dev_run_fit_and_test(detector, tmp_path):
    torch.manual_seed(0)
    task = _task(detector, "mca")
    trainer = L.Trainer(
        fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.fit(task, datamodule=ShapesData())
    metrics = trainer.callback_metrics
    assert math.isfinite(float(metrics["train/loss"]))
    assert -1 <= float(metrics["val/bbox_map"]) <= 1
    if detector == "mask_rcnn":
        assert -1 <= float(metrics["val/segm_map_50"]) <= 1
    (result,) = trainer.test(task, datamodule=ShapesData(), verbose=False)
    assert "test/bbox_map_75" in result


def test_defaults_and_hparams_are_primitives():
    task = _task("faster_rcnn")
    assert task.hparams.detector == "faster_rcnn" and task.hparams.norm == "gn"
    assert task.optim_config["optimizer_kwargs"] == {"momentum": 0.9}
    assert task.optim_config["scheduler"] == "multistep"
    # GroupNorm (from scratch) throughout the body, no BatchNorm left
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in task.model.modules())
    assert task.model.roi_heads.box_predictor.cls_score.out_features == Shapes.num_classes + 1
    head_norms = [m for m in _task("retinanet").model.head.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert head_norms and all((m.num_groups, m.num_channels) == (32, 256) for m in head_norms)
    frozen = _task("retinanet", norm="frozen_bn")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.model.modules())
    assert not any(p.requires_grad for n, p in frozen.model.named_parameters() if ".bn" in n)


@pytest.mark.parametrize(
    ("kwargs", "key", "choice"),
    [
        ({"detector": "yolo"}, "model.detector", "mask_rcnn"),
        ({"ca": "cbam_x"}, "model.ca", "mca"),
        ({"backbone": "resnet20"}, "model.backbone", "resnet50"),
        ({"norm": "ln"}, "model.norm", "frozen_bn"),
    ],
)
def test_unknown_names_say_the_key_and_the_choices(kwargs, key, choice):
    with pytest.raises(ConfigError, match=key) as info:
        DetectionTask(**{"num_classes": 2, **TINY, **kwargs})
    assert choice in str(info.value)


@pytest.mark.parametrize(("detector", "levels"), [("faster_rcnn", "P2–P6"), ("retinanet", "P3–P7")])
def test_anchor_sizes_need_one_per_level(detector, levels):
    with pytest.raises(ConfigError, match=rf"model\.anchor_sizes needs 5 sizes \({levels}\), got \[8, 16\]"):
        DetectionTask(**{**TINY, "detector": detector, "num_classes": 2, "anchor_sizes": [8, 16]})


def test_num_classes_must_match_the_data(tmp_path):
    task = _task("faster_rcnn", num_classes=5)
    trainer = L.Trainer(fast_dev_run=True, accelerator="cpu", logger=False, default_root_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"model\.num_classes=2"):
        trainer.fit(task, datamodule=ShapesData())


def test_registry_and_configs_compose():
    assert set(DETECTORS) <= set(DETECTOR.names(aliases=False))
    with initialize_config_dir(str(CONF / "model"), version_base=None):
        for name, backbone in (("faster_rcnn_r50", "resnet50"), ("faster_rcnn_r18", "resnet18")):
            cfg = compose(name)
            assert cfg.backbone == backbone and cfg.detector == "faster_rcnn"
            plain = OmegaConf.to_container(cfg, resolve=False)
            assert plain["num_classes"] == "${zoo.data:num_classes}"
            assert set(plain) == set(inspect.signature(DetectionTask.__init__).parameters) - {"self"}
            DetectionTask(**{**plain, **TINY, "num_classes": 2, "detector_kwargs": FEW})


@pytest.fixture(scope="module")
def generated_overrides(tmp_path_factory) -> list[str]:
    """Overrides that point the copy-paste DataModule at a tiny generated set (6 images of 64 px)."""
    root = tmp_path_factory.mktemp("copy_paste")
    sizes = ["data.train_images_count=4", "data.val_images_count=2", "data.image_size=64", "data.seed=0"]
    loaders = ["data.batch_size=2", "data.eval_batch_size=2", "data.num_workers=0"]
    return [f"data.root={root}", *sizes, *loaders, "model.min_size=64", "model.max_size=64", "logger=csv"]


@pytest.mark.parametrize("detector", DETECTORS)
def test_hydra_fast_dev_run_on_the_generated_set(detector, generated_overrides, tmp_path):
    """``tools/train.py task=detection model.detector=… model.ca=mca trainer.fast_dev_run=true``, composed for real."""
    from tasks.app.runner import train
    from tests.conftest import compose_config

    overrides = ["task=detection", f"model.detector={detector}", "model.ca=mca", "trainer.fast_dev_run=true"]
    metrics = train(compose_config([*overrides, *generated_overrides], tmp_path / "run"))
    assert 0 <= metrics["test/bbox_map_50"] <= 1
    assert ("test/segm_map" in metrics) == (detector == "mask_rcnn")


def test_detection_experiment_scores_the_final_weights(generated_overrides, tmp_path):
    """experiment=detection_ca: fixed steps, no validation, test on the final weights, one data seed, no files."""
    from tasks.app.runner import train
    from tests.conftest import compose_config

    cpu = ["trainer.accelerator=cpu", "trainer.precision=32-true", "trainer.max_steps=2"]
    overrides = ["experiment=detection_ca", "model.detector=mask_rcnn", "model.ca=mca", "seed=3", *cpu]
    cfg = compose_config([*overrides, *generated_overrides], tmp_path / "run")
    assert cfg.task.name == "detection" and cfg.test_ckpt == "last" and cfg.data.seed == 0
    metrics = train(cfg)
    assert metrics["test/ckpt"] == "(final weights)" and "test/segm_map" in metrics
    assert not any(key.startswith("val/") for key in metrics)
    assert not (tmp_path / "run" / "checkpoints").exists()
