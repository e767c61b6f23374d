"""Channel attention: the contract for every registered name, parity with timm, and MCA's formulas."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from timm.layers import EcaModule, SEModule

from zoo.backbones.common import channel_attention_layer
from zoo.channel_attention import EfficientChannelAttention, MomentChannelAttention, SqueezeExcite, channel_moments
from zoo.channel_attention.eca import eca_kernel_size
from zoo.registries import CHANNEL_ATTENTION

NAMES = CHANNEL_ATTENTION.names()


@pytest.mark.parametrize("name", NAMES)
def test_contract_shape_dtype_backward(name):
    torch.manual_seed(0)
    module = CHANNEL_ATTENTION.build(name, 24, device="cpu", dtype=torch.float32)
    x = torch.randn(3, 24, 5, 7, requires_grad=True)
    y = module(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for param in module.parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_contract_meta_device_and_timm_attn_layer(name):
    meta = CHANNEL_ATTENTION.build(name, 64, device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())
    # timm passes device= and dtype= to attn_layer (timm >= 1.0.21): every name must plug in
    net = timm.create_model("resnet18", num_classes=3, block_args=dict(attn_layer=CHANNEL_ATTENTION.partial(name)))
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, 3)


@pytest.mark.parametrize("channels", [16, 64, 128, 256, 2048])
def test_se_equals_timm_semodule(channels):
    ours, theirs = SqueezeExcite(channels), SEModule(channels)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    missing, unexpected = theirs.load_state_dict(ours.state_dict(), strict=True)  # same names and shapes
    assert not missing and not unexpected
    x = torch.randn(2, channels, 6, 5)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


def test_se_hidden_width_rounding_matches_timm():
    widths = {c: SqueezeExcite(c).fc1.out_channels for c in (16, 32, 64, 128, 256, 512, 1024, 2048)}
    assert widths == {16: 8, 32: 8, 64: 8, 128: 8, 256: 16, 512: 32, 1024: 64, 2048: 128}
    assert SqueezeExcite(64, rd_divisor=1).fc1.out_channels == 4  # the paper's plain C/16


@pytest.mark.parametrize("channels", [16, 64, 127, 128, 512, 2047, 2048])
def test_eca_equals_timm_ecamodule(channels):
    ours, theirs = EfficientChannelAttention(channels), EcaModule(channels)
    assert ours.conv.kernel_size == theirs.conv.kernel_size
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, channels, 4, 3)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


def test_eca_kernel_rule():
    assert [eca_kernel_size(c) for c in (16, 127, 128, 2047, 2048, 8191)] == [3, 3, 5, 5, 7, 7]


def official_moments(x: torch.Tensor, strong: bool) -> torch.Tensor:
    """CSDLLab/MCA moment.py, written out independently: [mean; std] or [mean; skew], [B, 2, C]."""
    b, c = x.shape[:2]
    mean = x.mean((2, 3), keepdim=True)
    std = x.std((2, 3), unbiased=False, keepdim=True)
    if strong:
        skew = ((x - mean) ** 3).mean((2, 3), keepdim=True) / (std**3 + 1e-5)
        return torch.cat([mean.view(b, 1, c), skew.view(b, 1, c)], 1)
    return torch.cat([mean.view(b, 1, c), std.view(b, 1, c)], 1)


@pytest.mark.parametrize(("name", "strong", "k"), [("mca_e", False, 11), ("mca_s", True, 3), ("mca", True, 3)])
def test_mca_presets_match_the_official_formula(name, strong, k):
    torch.manual_seed(1)
    module = CHANNEL_ATTENTION.build(name, 32)
    assert module.conv.kernel_size == (k,) and module.conv.in_channels == 2 and module.conv.bias is not None
    assert sum(p.numel() for p in module.parameters()) == 2 * k + 1
    x = torch.randn(4, 32, 7, 7) * 3 + 1
    gate = torch.sigmoid(
        torch.nn.functional.conv1d(
            official_moments(x.double(), strong),
            module.conv.weight.double(),
            module.conv.bias.double(),
            padding=(k - 1) // 2,
        )
    )
    expected = x.double() * gate.view(4, 32, 1, 1)
    torch.testing.assert_close(module(x).double(), expected, rtol=1e-5, atol=1e-5)


def test_moments_on_known_data():
    torch.manual_seed(0)
    samples = torch.distributions.Exponential(1.0).sample((2, 3, 400, 400))  # skewness 2, std 1, mean 1
    stats = channel_moments(samples, ("mean", "std", "var", "skew", "m3"))
    assert stats.shape == (2, 5, 3) and stats.dtype == torch.float32
    mean, std, var, skew, m3 = stats.unbind(1)
    torch.testing.assert_close(mean, torch.ones_like(mean), atol=0.02, rtol=0)
    torch.testing.assert_close(std, torch.ones_like(std), atol=0.03, rtol=0)
    torch.testing.assert_close(var, std.square())
    torch.testing.assert_close(skew, torch.full_like(skew, 2.0), atol=0.15, rtol=0)
    torch.testing.assert_close(m3 / (std**3 + 1e-5), skew)
    # population (not unbiased) statistics: a 2x2 map [0, 0, 0, 4] has mean 1, std sqrt(3), m3 = 6
    tiny = torch.tensor([0.0, 0.0, 0.0, 4.0]).view(1, 1, 2, 2)
    mean, std, m3 = channel_moments(tiny, ("mean", "std", "m3"))[0, :, 0]
    assert (mean.item(), m3.item()) == (1.0, 6.0) and math.isclose(std.item(), math.sqrt(3), rel_tol=1e-6)


@pytest.mark.parametrize("name", ["mca_e", "mca_s", "mca_t"])
def test_mca_constant_map_gives_zero_spread_and_finite_gradients(name):
    module = CHANNEL_ATTENTION.build(name, 8)
    exact = torch.full((2, 8, 3, 3), 0.75)  # the mean is exact in fp32, so every deviation is exactly 0
    stats = channel_moments(exact, module.moments)
    assert torch.equal(stats[:, 1:], torch.zeros_like(stats[:, 1:]))
    x = torch.full((2, 8, 3, 3), 0.7, requires_grad=True)  # the fp32 mean is off by one ulp
    assert channel_moments(x, module.moments)[:, 1:].abs().max() < 1e-6
    module(x).sum().backward()
    assert torch.isfinite(x.grad).all() and all(torch.isfinite(p.grad).all() for p in module.parameters())


def test_mca_with_only_the_mean_and_no_bias_is_eca():
    """The paper: ECA is the special case M = M1 of MCA."""
    eca = EfficientChannelAttention(64)
    mca = MomentChannelAttention(64, moments=("mean",), kernel_size=eca.conv.kernel_size[0], bias=False)
    mca.conv.weight.data.copy_(eca.conv.weight.data)
    x = torch.randn(3, 64, 5, 5)
    torch.testing.assert_close(mca(x), eca(x))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mca_moments_in_fp32_under_autocast(dtype):
    torch.manual_seed(0)
    module = CHANNEL_ATTENTION.build("mca_s", 16)
    x = torch.randn(2, 16, 8, 8) * 60  # (x - mean)^3 ~ 2e5 overflows fp16's 65504
    expected = module(x.to(dtype).float())
    with torch.autocast("cpu", dtype=dtype):
        y = module(x.to(dtype))
    assert y.dtype == dtype and torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), expected, rtol=2e-2, atol=2e-2 * float(x.abs().max()))


def test_mca_eca_kernel_option_and_bad_options():
    assert MomentChannelAttention(2048, kernel_size="eca").conv.kernel_size == (7,)
    with pytest.raises(ValueError, match="odd"):
        MomentChannelAttention(64, kernel_size=4)
    with pytest.raises(ValueError, match="unknown MCA moments"):
        MomentChannelAttention(64, moments=("mean", "kurtosis"))


def test_kwargs_override_presets():
    assert CHANNEL_ATTENTION.build("mca_e", 64, kernel_size=5).conv.kernel_size == (5,)
    assert channel_attention_layer("none") is None
    with pytest.raises(ValueError, match="takes no options"):
        channel_attention_layer("none", {"kernel_size": 3})


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_moment_gradients_equal_autograd_of_the_formula(channels_last):
    torch.manual_seed(3)
    x = torch.randn(3, 5, 4, 6, dtype=torch.float64) * 2 + 0.5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weights = torch.randn(3, 5, 5, dtype=torch.float64)
    fused = x.clone().requires_grad_()
    (channel_moments(fused.float(), ("mean", "std", "var", "skew", "m3")).double() * weights).sum().backward()

    plain = x.clone().requires_grad_()
    mean = plain.mean((2, 3))
    std = plain.std((2, 3), unbiased=False)
    m3 = ((plain - mean[..., None, None]) ** 3).mean((2, 3))
    stats = torch.stack([mean, std, std**2, m3 / (std**3 + 1e-5), m3], 1)
    (stats * weights).sum().backward()
    torch.testing.assert_close(fused.grad, plain.grad, rtol=1e-4, atol=1e-4)


def test_fused_moments_pass_gradcheck():
    from zoo.channel_attention.mca import _CentralMoments

    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _CentralMoments.apply(t, True), (x,))
    assert torch.autograd.gradcheck(lambda t: _CentralMoments.apply(t, False)[:2], (x,))


# --------------------------------------------------------------------------- timm's model checks, every attention
def timm_resnet(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet18", block_args=dict(attn_layer=CHANNEL_ATTENTION.partial(name)), **kwargs)


def fx_model(model: torch.nn.Module) -> torch.nn.Module:
    """What timm's ``test_model_forward_fx`` builds: a feature extractor returning the graph's last node, traced
    with timm's leaf modules and autowrapped functions."""
    from timm.models._features_fx import create_feature_extractor, get_graph_node_names

    _, eval_nodes = get_graph_node_names(model)
    return create_feature_extractor(model, return_nodes=[eval_nodes[-1]])


SCRIPTING = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")  # timm still tests it


@SCRIPTING
@pytest.mark.parametrize("name", NAMES)
def test_timm_model_scripts_with_every_channel_attention(name):
    model = timm_resnet(name).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = model(x)
        got = torch.jit.script(model)(x)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_timm_fx_feature_extraction_with_every_channel_attention(name):
    model = timm_resnet(name)
    x = torch.randn(2, 3, 64, 64)
    fx = fx_model(model.eval())
    with torch.no_grad():
        got = next(iter(fx(x).values()))
        assert torch.allclose(got, model(x), rtol=1e-5, atol=1e-5)
    fx.train()  # timm's test_model_backward_fx: gradients flow through the traced graph
    next(iter(fx(x).values())).mean().backward()
    grads = [p.grad for p in fx.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("feature_cls", [None, "fx"])
@pytest.mark.parametrize("name", NAMES)
def test_timm_features_only_with_every_channel_attention(name, feature_cls):
    kwargs = {"features_only": True, "out_indices": (1, 2, 3, 4)}
    if feature_cls:
        kwargs["feature_cls"] = feature_cls
    model = timm_resnet(name, **kwargs).eval()
    with torch.no_grad():
        features = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in features] == model.feature_info.channels() == [64, 128, 256, 512]
    assert [f.shape[-1] for f in features] == [64 // r for r in model.feature_info.reduction()]


@SCRIPTING
@pytest.mark.parametrize("name", ["mca_e", "mca_s", "mca_t"])
def test_mca_scripted_path_equals_the_fused_one_with_gradients(name):
    """TorchScript's plain-op moments against the fused Function: values and input gradients, a constant
    channel included (σ = 0: zero gradient through σ, as in the fused backward)."""
    torch.manual_seed(0)
    module = CHANNEL_ATTENTION.build(name, 12)
    scripted = torch.jit.script(module)
    x = torch.randn(3, 12, 5, 7) * 2 + 1
    x[0, 4] = 0.5  # exactly constant: its mean is exact, so σ = 0 exactly
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_fused, out_script = module(a), scripted(b)
    assert torch.allclose(out_script, out_fused, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(out_fused)
    out_fused.backward(g)
    out_script.backward(g)
    assert torch.isfinite(b.grad).all()
    assert torch.allclose(b.grad, a.grad, rtol=1e-4, atol=1e-5)
