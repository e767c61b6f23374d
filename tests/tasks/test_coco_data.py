"""COCO DataModules and the copy-paste generator: determinism, mask/box consistency, batches, flips, mAP = 1."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tasks.data.coco import COCODataModule, COCODetection, CopyPasteCOCODataModule, hflip
from tasks.data.copy_paste import CATEGORIES, generate, mask_bbox, rle_decode, rle_encode
from zoo.errors import ConfigError, DatasetNotFoundError
from zoo.registries import DATA


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("copy_paste")
    generate(out, train=8, val=4, size=128, seed=0)
    return out


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools vs numpy 2
def test_rle_round_trip():
    rng = np.random.default_rng(0)
    for mask in (rng.random((7, 5)) < 0.5, np.ones((3, 4), bool), np.zeros((3, 4), bool)):
        rle = rle_encode(mask)
        assert sum(rle["counts"]) == mask.size
        np.testing.assert_array_equal(rle_decode(rle), mask)
    pytest.importorskip("pycocotools")
    from pycocotools import mask as coco_mask

    mask = rng.random((9, 6)) < 0.5
    compressed = coco_mask.frPyObjects(rle_encode(mask), 9, 6)
    np.testing.assert_array_equal(coco_mask.decode(compressed).astype(bool), mask)
    compressed["counts"] = compressed["counts"].decode()
    np.testing.assert_array_equal(rle_decode(compressed), mask)  # compressed strings decode without pycocotools


def test_generator_is_deterministic_by_seed(dataset, tmp_path):
    generate(tmp_path / "same", train=8, val=4, size=128, seed=0)
    generate(tmp_path / "other", train=8, val=4, size=128, seed=1)
    for split in ("train", "val"):
        ref = (dataset / "annotations" / f"instances_{split}.json").read_bytes()
        assert (tmp_path / "same" / "annotations" / f"instances_{split}.json").read_bytes() == ref
        assert (tmp_path / "other" / "annotations" / f"instances_{split}.json").read_bytes() != ref
    assert (tmp_path / "same" / "train" / "000003.jpg").read_bytes() == (dataset / "train" / "000003.jpg").read_bytes()


def test_annotations_masks_match_boxes_and_categories_are_named(dataset):
    coco = json.loads((dataset / "annotations" / "instances_train.json").read_text())
    assert [c["name"] for c in coco["categories"]][:2] == ["T-shirt/top", "Trouser"]
    assert len(coco["categories"]) == len(CATEGORIES) == 16 and all(c["name"] for c in coco["categories"])
    assert len(coco["images"]) == 8 and coco["annotations"]
    for ann in coco["annotations"]:
        mask = rle_decode(ann["segmentation"])
        assert mask.shape == (128, 128)
        assert ann["bbox"] == mask_bbox(mask) and ann["area"] == int(mask.sum()) > 0 and ann["iscrowd"] == 0
    per_image = np.bincount([a["image_id"] for a in coco["annotations"]], minlength=9)[1:]
    assert per_image.max() <= 6


def test_loader_batches(dataset):
    dm = DATA.build("coco", root=str(dataset), batch_size=3, num_classes=16)
    dm.setup("fit")
    assert dm.num_classes == 16 and dm.classes[0] == "T-shirt/top" and dm.label_to_category_id[1] == 1
    images, targets = next(iter(dm.train_dataloader()))
    assert len(images) == len(targets) == 3
    for image, target in zip(images, targets):
        assert image.dtype == torch.float32 and image.shape == (3, 128, 128) and 0 <= image.min() <= image.max() <= 1
        n = len(target["labels"])
        assert target["boxes"].shape == (n, 4) and target["boxes"].dtype == torch.float32
        assert target["labels"].dtype == torch.int64 and ((target["labels"] >= 1) & (target["labels"] <= 16)).all()
        assert target["masks"].shape == (n, 128, 128) and target["masks"].dtype == torch.uint8
        assert isinstance(target["image_id"], int)
        assert (target["boxes"][:, 2:] > target["boxes"][:, :2]).all()
    moved = dm.transfer_batch_to_device((images, targets), torch.device("cpu"), 0)
    assert moved[1][0]["boxes"].shape == targets[0]["boxes"].shape
    val_images, val_targets = next(iter(dm.test_dataloader()))
    assert len(val_images) == 3 and "masks" in val_targets[0]  # eval_batch_size defaults to batch_size


def _tight_xyxy(mask: torch.Tensor) -> list[float]:
    rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def test_flip_moves_boxes_with_masks(dataset):
    ds = COCODetection(dataset / "annotations" / "instances_train.json", dataset / "train")
    image, target = ds[0]
    flipped_image, flipped = ds[(0, True)]
    torch.testing.assert_close(flipped_image, image.flip(-1))
    assert torch.equal(flipped["masks"], target["masks"].flip(-1))
    for box, mask in zip(flipped["boxes"], flipped["masks"]):
        assert box.tolist() == _tight_xyxy(mask)  # boxes stay the tight boxes of the masks
    twice = hflip(*hflip(image, target))[1]
    assert torch.equal(twice["boxes"], target["boxes"])


def test_bad_arguments_name_the_key(dataset, tmp_path):
    with pytest.raises(ConfigError, match=r"data\.batch_size"):
        COCODataModule(root=str(dataset), batch_size=0)
    with pytest.raises(ConfigError, match=r"data\.num_classes=3"):
        COCODataModule(root=str(dataset), num_classes=3).setup("fit")
    with pytest.raises(DatasetNotFoundError, match=r"data\.val_ann"):
        COCODataModule(root=str(tmp_path)).setup("fit")
    with pytest.raises(ConfigError, match=r"data\.root"):
        COCODataModule().setup("fit")
    with pytest.raises(ConfigError, match=r"data\.train_images_count"):
        CopyPasteCOCODataModule(root=str(tmp_path), train_images_count=0)
    with pytest.raises(ConfigError, match=r"data\.image_size"):
        CopyPasteCOCODataModule(root=str(tmp_path), image_size=8)


def test_copy_paste_datamodule_generates_on_prepare(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path))
    dm = CopyPasteCOCODataModule(train_images_count=4, val_images_count=2, image_size=64, batch_size=2)
    assert str(tmp_path / "copy_paste_coco") in dm.root
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set) == 4 and len(dm.val_set) == 2 and dm.num_classes == 16
    images, _ = next(iter(dm.train_dataloader()))
    assert images[0].shape == (3, 64, 64)


def test_ground_truth_as_predictions_gives_map_one(dataset):
    pytest.importorskip("pycocotools")
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(iou_type=("bbox", "segm"))
    ds = COCODetection(dataset / "annotations" / "instances_val.json", dataset / "val")
    for i in range(len(ds)):
        _, target = ds[i]
        pred = {
            "boxes": target["boxes"], "labels": target["labels"], "masks": target["masks"].bool(),
            "scores": torch.ones(len(target["labels"])),
        }  # fmt: skip
        metric.update([pred], [{k: (v.bool() if k == "masks" else v) for k, v in target.items() if k != "image_id"}])
    result = metric.compute()
    assert result["bbox_map"].item() == pytest.approx(1.0)
    assert result["segm_map"].item() == pytest.approx(1.0)
