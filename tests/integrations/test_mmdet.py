"""mmdet bridge: ``ZooResNet`` in mmdet configs (Faster R-CNN, Mask R-CNN) on the CPU; skipped without mmdet/mmcv."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from zoo.errors import RegistryError


def _mmdet_missing() -> str | None:
    """Why the mmdet stack cannot run here, or None."""
    try:
        import mmcv._ext  # noqa: F401
        import mmdet  # noqa: F401
        import mmengine  # noqa: F401
    except ImportError as exc:
        return (
            f"the mmdet stack is not installed ({exc}): pip install -e '.[mmdet]' and full mmcv 2.1.0, "
            "../shared/wheels/mmcv-2.1.0-cp311-cp311-linux_x86_64.whl (see README)"
        )
    return None


MMDET_MISSING = _mmdet_missing()
pytestmark = [pytest.mark.mmdet, pytest.mark.skipif(MMDET_MISSING is not None, reason=str(MMDET_MISSING))]

if MMDET_MISSING is None:
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.structures import InstanceData

SIZE = 128
NUM_CLASSES = 3

# mmdet 3.3's configs/_base_/models/faster-rcnn_r50_fpn.py with the backbone swapped and 3 classes.
FASTER_RCNN = dict(
    custom_imports=dict(imports=["zoo.integrations.mmdet"], allow_failed_imports=False),
    model=dict(
        type="FasterRCNN",
        data_preprocessor=dict(
            type="DetDataPreprocessor",
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            pad_size_divisor=32,
        ),
        backbone=dict(type="ZooResNet", depth=50, ca="mca", frozen_stages=1, zero_init_residual=False),
        neck=dict(type="FPN", in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5),
        rpn_head=dict(
            type="RPNHead",
            in_channels=256,
            feat_channels=256,
            anchor_generator=dict(
                type="AnchorGenerator", scales=[8], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64]
            ),
            bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0, 1.0, 1.0, 1.0]),
            loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
            loss_bbox=dict(type="L1Loss", loss_weight=1.0),
        ),
        roi_head=dict(
            type="StandardRoIHead",
            bbox_roi_extractor=dict(
                type="SingleRoIExtractor",
                roi_layer=dict(type="RoIAlign", output_size=7, sampling_ratio=0),
                out_channels=256,
                featmap_strides=[4, 8, 16, 32],
            ),
            bbox_head=dict(
                type="Shared2FCBBoxHead",
                in_channels=256,
                fc_out_channels=1024,
                roi_feat_size=7,
                num_classes=NUM_CLASSES,
                bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2]),
                reg_class_agnostic=False,
                loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
                loss_bbox=dict(type="L1Loss", loss_weight=1.0),
            ),
        ),
        train_cfg=dict(
            rpn=dict(
                assigner=dict(
                    type="MaxIoUAssigner",
                    pos_iou_thr=0.7,
                    neg_iou_thr=0.3,
                    min_pos_iou=0.3,
                    match_low_quality=True,
                    ignore_iof_thr=-1,
                ),
                sampler=dict(type="RandomSampler", num=256, pos_fraction=0.5, neg_pos_ub=-1, add_gt_as_proposals=False),
                allowed_border=-1,
                pos_weight=-1,
                debug=False,
            ),
            rpn_proposal=dict(nms_pre=2000, max_per_img=1000, nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0),
            rcnn=dict(
                assigner=dict(
                    type="MaxIoUAssigner",
                    pos_iou_thr=0.5,
                    neg_iou_thr=0.5,
                    min_pos_iou=0.5,
                    match_low_quality=False,
                    ignore_iof_thr=-1,
                ),
                sampler=dict(type="RandomSampler", num=512, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True),
                pos_weight=-1,
                debug=False,
            ),
        ),
        test_cfg=dict(
            rpn=dict(nms_pre=1000, max_per_img=1000, nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0),
            rcnn=dict(score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100),
        ),
    ),
)


def mask_rcnn_config() -> dict:
    """mmdet 3.3's mask-rcnn_r50_fpn: Faster R-CNN + an FCN mask head on 14×14 RoIAlign features."""
    cfg = copy.deepcopy(FASTER_RCNN)
    model = cfg["model"]
    model["type"] = "MaskRCNN"
    model["data_preprocessor"]["pad_mask"] = True
    model["roi_head"]["mask_roi_extractor"] = dict(
        type="SingleRoIExtractor",
        roi_layer=dict(type="RoIAlign", output_size=14, sampling_ratio=0),
        out_channels=256,
        featmap_strides=[4, 8, 16, 32],
    )
    model["roi_head"]["mask_head"] = dict(
        type="FCNMaskHead",
        num_convs=4,
        in_channels=256,
        conv_out_channels=256,
        num_classes=NUM_CLASSES,
        loss_mask=dict(type="CrossEntropyLoss", use_mask=True, loss_weight=1.0),
    )
    model["train_cfg"]["rcnn"]["mask_size"] = 28
    model["test_cfg"]["rcnn"]["mask_thr_binary"] = 0.5
    return cfg


def build(cfg_dict: dict, tmp_path: Path, **backbone: object) -> torch.nn.Module:
    """An mmdet detector from a config file as mmdet's tools build it (``Config.fromfile`` runs ``custom_imports``)."""
    from mmdet.registry import MODELS

    register_all_modules()
    cfg_dict = copy.deepcopy(cfg_dict)
    cfg_dict["model"]["backbone"].update(backbone)
    path = tmp_path / "detector.py"
    Config(cfg_dict).dump(path)
    cfg = Config.fromfile(path)  # imports zoo.integrations.mmdet, registering ZooResNet in MODELS
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def batch(*, masks: bool = False) -> dict:
    """Two 128×128 uint8 images with two GT boxes each, as mmdet's ``PackDetInputs`` would hand them over."""
    from mmdet.structures.mask import BitmapMasks

    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for boxes, labels in (
        ([[10, 12, 60, 70], [70, 40, 120, 110]], [0, 2]),
        ([[30, 30, 90, 100], [5, 80, 50, 125]], [1, 1]),
    ):
        inputs.append(torch.randint(0, 256, (3, SIZE, SIZE), generator=g, dtype=torch.uint8))
        sample = DetDataSample(metainfo=dict(img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE), scale_factor=(1.0, 1.0)))
        gt = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32), labels=torch.tensor(labels))
        if masks:
            m = torch.zeros(len(boxes), SIZE, SIZE, dtype=torch.uint8)
            for i, (x1, y1, x2, y2) in enumerate(boxes):
                m[i, y1:y2, x1:x2] = 1
            gt.masks = BitmapMasks(m.numpy(), SIZE, SIZE)
        sample.gt_instances = gt
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def test_faster_rcnn_zoo_resnet50_mca_loss_backward_predict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build(FASTER_RCNN, tmp_path)
    assert type(model.backbone).__name__ == "ZooResNet"
    assert type(model.backbone.layer1[0].se).__name__ == "MomentChannelAttention"
    model.train()
    data = model.data_preprocessor(batch(), training=True)
    losses = model(**data, mode="loss")
    assert {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox"} <= set(losses)
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(v) for k, v in losses.items() if "loss" in k)
    assert torch.isfinite(total)
    total.backward()
    # The MCA's Conv1d gets a gradient (zero_init_residual=False: with zero-initialised last norms, the attention's
    # input is 0 at initialisation and so are its gradients).
    conv = model.backbone.layer4[-1].se.conv
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert model.backbone.layer1[0].conv1.weight.grad is None  # frozen_stages=1

    model.eval()
    with torch.no_grad():
        results = model.test_step(batch())
    assert len(results) == 2
    for r in results:
        pred = r.pred_instances
        assert pred.bboxes.shape[-1] == 4 and len(pred.bboxes) == len(pred.scores) == len(pred.labels) <= 100


def test_mask_rcnn_zoo_resnet50_eca_loss(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build(mask_rcnn_config(), tmp_path, ca="eca")
    assert type(model.backbone.layer1[0].se).__name__ == "EfficientChannelAttention"
    model.train()
    data = model.data_preprocessor(batch(masks=True), training=True)
    losses = model(**data, mode="loss")
    assert "loss_mask" in losses
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(v) for k, v in losses.items() if "loss" in k)
    assert torch.isfinite(total)
    total.backward()


@pytest.mark.parametrize(("depth", "channels"), [(18, (64, 128, 256, 512)), (50, (256, 512, 1024, 2048))])
def test_zoo_resnet_shapes_match_mmdet_resnet(depth: int, channels: tuple[int, ...]) -> None:
    from mmdet.models.backbones import ResNet

    from zoo.integrations.mmdet import ZooResNet

    register_all_modules()
    x = torch.randn(2, 3, 64, 96)
    ours = ZooResNet(depth=depth, ca="mca").eval()
    ref = ResNet(depth=depth)
    ref.eval()  # mmdet's ResNet.train() returns None
    with torch.no_grad():
        got, want = ours(x), ref(x)
    assert ours.out_channels == channels
    assert [tuple(t.shape) for t in got] == [tuple(t.shape) for t in want]
    assert [t.shape[1] for t in got] == list(channels)
    # Same parameter names as mmdet's ResNet apart from the attention's (torchvision checkpoints load as is).
    assert {k for k in ours.state_dict() if ".se." not in k} == set(ref.state_dict())

    part = ZooResNet(depth=depth, out_indices=(1, 3))
    assert [tuple(t.shape) for t in part(x)] == [(2, channels[1], 8, 12), (2, channels[3], 2, 3)]


def test_zoo_resnet_norm_eval_frozen_stages_and_gn() -> None:
    from zoo.integrations.mmdet import ZooResNet

    m = ZooResNet(depth=18, frozen_stages=2).train()
    assert not m.bn1.training and not m.layer3[0].bn1.training  # norm_eval=True
    assert not any(p.requires_grad for p in m.layer2.parameters())
    assert all(p.requires_grad for p in m.layer3.parameters())
    gn = ZooResNet(depth=18, norm_cfg=dict(type="GN", num_groups=32, requires_grad=True), norm_eval=False).train()
    assert isinstance(gn.layer1[0].bn1, torch.nn.GroupNorm) and gn.layer1[0].bn1.training


def test_unknown_channel_attention_names_valid_choices() -> None:
    from mmdet.registry import MODELS

    import zoo.integrations.mmdet  # noqa: F401

    with pytest.raises(RegistryError, match=r"bogus.*Valid choices: .*mca"):
        MODELS.build(dict(type="ZooResNet", depth=50, ca="bogus"))
    with pytest.raises(ValueError, match="depth"):
        MODELS.build(dict(type="ZooResNet", depth=42))
