"""Backbones: the BACKBONE contract, where the channel attention sits, and parity with timm."""

from __future__ import annotations

import pytest
import timm
import torch

from zoo.backbones import CifarResNet
from zoo.channel_attention import MomentChannelAttention, SqueezeExcite
from zoo.registries import BACKBONE

CIFAR = ["resnet20", "resnet32"]
TIMM = ["resnet18", "resnet50"]


@pytest.mark.parametrize("name", CIFAR + TIMM)
@pytest.mark.parametrize("ca", ["none", "se", "mca"])
def test_contract_logits_and_features(name, ca):
    net = BACKBONE.build(name, num_classes=7, in_chans=1, ca=ca).eval()
    size = 28 if name in CIFAR else 64
    x = torch.randn(2, 1, size, size)
    logits = net(x)
    assert logits.shape == (2, 7)
    torch.testing.assert_close(net.forward_head(net.forward_features(x)), logits)


def attention_inputs_equal_last_bn_outputs(net, block_type, last_bn: str) -> int:
    """Hook every block: the attention's input must be the last BN's output; returns the number of blocks checked."""
    seen: dict[int, dict[str, torch.Tensor]] = {}
    hooks = []
    blocks = [m for m in net.modules() if isinstance(m, block_type)]
    for i, block in enumerate(blocks):
        hooks.append(
            getattr(block, last_bn).register_forward_hook(
                lambda m, a, out, i=i: seen.setdefault(i, {}).update(bn=out.detach().clone())
            )
        )
        hooks.append(
            block.se.register_forward_hook(
                lambda m, a, out, i=i: seen.setdefault(i, {}).update(attn_in=a[0].detach().clone())
            )
        )
    net.eval()(torch.randn(2, net.conv1.in_channels, 32, 32))
    for hook in hooks:
        hook.remove()
    for record in seen.values():
        torch.testing.assert_close(record["attn_in"], record["bn"], rtol=0, atol=0)
    return len(seen)


def test_cifar_resnet_places_attention_after_bn2_before_the_addition():
    from zoo.backbones.cifar_resnet import BasicBlock

    net = BACKBONE.build("resnet20", num_classes=10, in_chans=3, ca="mca")
    assert all(isinstance(b.se, MomentChannelAttention) for b in net.modules() if isinstance(b, BasicBlock))
    assert attention_inputs_equal_last_bn_outputs(net, BasicBlock, "bn2") == 9


def test_timm_resnet_places_attention_after_bn3():
    from timm.models.resnet import Bottleneck

    net = BACKBONE.build("resnet50", num_classes=10, in_chans=3, ca="se")
    assert all(isinstance(b.se, SqueezeExcite) for b in net.modules() if isinstance(b, Bottleneck))
    assert attention_inputs_equal_last_bn_outputs(net, Bottleneck, "bn3") == 16


def test_parameter_counts():
    counts = {
        ca: sum(p.numel() for p in BACKBONE.build("resnet20", num_classes=10, in_chans=3, ca=ca).parameters())
        for ca in ("none", "eca", "mca_e", "mca_s")
    }
    assert counts["none"] == 269_722  # He et al.: ResNet-20 has 0.27 M parameters
    assert counts["eca"] - counts["none"] == 9 * 3  # 9 blocks, k = 3, no bias
    assert counts["mca_e"] - counts["none"] == 9 * (2 * 11 + 1)
    assert counts["mca_s"] - counts["none"] == 9 * (2 * 3 + 1)
    r50 = {
        ca: sum(p.numel() for p in BACKBONE.build("resnet50", num_classes=1000, ca=ca).parameters())
        for ca in ("none", "se", "eca", "mca_s")
    }
    assert r50["se"] - r50["none"] == 2_530_992  # the MCA paper's +2.53 M for SE-R50
    assert r50["eca"] - r50["none"] == 86  # and +0.09 K for ECA-R50
    assert r50["mca_s"] - r50["none"] == 16 * 7


def test_timm_backbone_with_none_is_exactly_timm():
    ours = BACKBONE.build("resnet50", num_classes=10, ca="none")
    theirs = timm.create_model("resnet50", num_classes=10)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(ours.eval()(x), theirs.eval()(x))


def test_timm_se_model_loads_timm_seresnet_weights():
    """Our SE matches timm's parameter names, so a timm seresnet50 state dict loads into ours unchanged."""
    theirs = timm.create_model("seresnet50", num_classes=10)
    ours = BACKBONE.build("resnet50", num_classes=10, ca="se")
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(ours.eval()(x), theirs.eval()(x))


def test_generic_timm_entry_and_options():
    net = BACKBONE.build("timm", model_name="resnet26", num_classes=4, ca="eca", drop_rate=0.1)
    assert net.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 4)


def test_cifar_resnet_options_and_errors():
    b = CifarResNet(20, shortcut="B", zero_init_last=True)
    assert b.layer2[0].downsample is not None
    assert all(float(blk.bn2.weight.abs().sum()) == 0 for stage in (b.layer1, b.layer2, b.layer3) for blk in stage)
    assert CifarResNet(56).layer3.__len__() == 9
    with pytest.raises(ValueError, match="6n \\+ 2"):
        CifarResNet(21)
    with pytest.raises(ValueError, match="shortcut"):
        CifarResNet(20, shortcut="C")


def test_pretrained_weights_load_non_strictly_only_with_an_attention(monkeypatch):
    """The attention's parameters are not in timm's published weights: with ``pretrained`` they keep their init."""
    seen = []
    monkeypatch.setattr(timm, "create_model", lambda name, **kwargs: seen.append(kwargs))
    from zoo.backbones.timm_models import create_timm_backbone

    create_timm_backbone("resnet18", ca="mca", pretrained=True)
    create_timm_backbone("resnet18", ca="none", pretrained=True)
    create_timm_backbone("resnet18", ca="mca", pretrained=False)
    create_timm_backbone("resnet18", ca="se", pretrained=True, pretrained_strict=True)
    assert [k.get("pretrained_strict") for k in seen] == [False, None, None, True]
    assert seen[0]["block_args"]["attn_layer"].func is MomentChannelAttention and seen[1]["block_args"] is None
