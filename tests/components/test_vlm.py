"""The MiniMax-VL-01-style vision-language model (``MODEL`` name ``vlm``): tower, projector, image layout, splicing,
packing, gradients, configuration errors, the meta device and the presets."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.conftest import compose_config
from zoo.errors import ConfigError
from zoo.models import HybridLM, check_causal_lm
from zoo.registries import MODEL, PROJECTOR, VISION_TOWER
from zoo.vision_language import TimmViT, VisionLanguageModel, image_token_count

P = 4  # 16-px tiles, patch 8
VIT = {"model_name": "vit_tiny_patch16_224", "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
LM = {"vocab_size": 258, "hidden_size": 32, "num_layers": 2, "attention": "LS", "num_heads": 2, "head_dim": 16,
      "intermediate_size": 32, "num_experts": 4, "top_k": 2, "attention_backend": "torch"}  # fmt: skip
CONFIG = {
    "vision_kwargs": VIT,
    "language_model": {"arch": "hybrid_lm", "config": LM},
    "tiling": {"tile_size": 16, "max_tiles": 6},
}
GRIDS = [(1, 3), (2, 1), (0, 0), (3, 2)]


def tiny_vlm(seed: int = 0, **overrides) -> VisionLanguageModel:
    torch.manual_seed(seed)
    return VisionLanguageModel({**copy.deepcopy(CONFIG), **overrides}).eval()


def tiles_for(grids, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``uint8`` tiles for ``grids`` and the grids as ``int64 [N, 2]``."""
    n = sum(1 + r * c for r, c in grids)
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 16, 16), generator=gen, dtype=torch.uint8), torch.tensor(grids).long()


def prompt(grids, text: int, seed: int) -> torch.Tensor:
    """Text tokens around each image's run of placeholders: ``text`` tokens, an image, ``text`` tokens, …"""
    gen = torch.Generator().manual_seed(seed)
    pieces = [torch.randint(0, 256, (text,), generator=gen)]
    for grid in grids:
        pieces += [torch.full((image_token_count(grid, P),), 257), torch.randint(0, 256, (text,), generator=gen)]
    return torch.cat(pieces)


# ------------------------------------------------------------------------------------------------- tower, projector
def test_the_tower_gives_patch_features_without_prefix_tokens():
    torch.manual_seed(0)
    tower = VISION_TOWER.build("timm_vit", image_size=16, reg_tokens=2, **VIT).eval()
    x = torch.randn(3, 3, 16, 16)
    out = tower(x)
    assert (tower.num_patches, tower.hidden_size, tower.image_size, tower.num_prefix_tokens) == (P, 32, 16, 3)
    assert out.shape == (3, P, 32)
    torch.testing.assert_close(out, tower.model.forward_features(x)[:, 3:])
    assert len(tower.blocks()) == 2


CONVNET = {"model_name": "resnet18", "patch_size": 8, "channels": (16, 32, 64, 128)}


def test_the_convnet_tower_gives_one_feature_per_position_of_its_stage():
    torch.manual_seed(0)
    tower = VISION_TOWER.build("timm_convnet", image_size=16, **CONVNET).eval()
    x = torch.randn(3, 3, 16, 16)
    out = tower(x)
    assert (tower.num_patches, tower.hidden_size, tower.image_size, tower.blocks()) == (P, 32, 16, [])
    assert out.shape == (3, P, 32)
    torch.testing.assert_close(out, tower.model(x)[-1].flatten(2).transpose(1, 2))
    assert not any(name.startswith(("layer3", "layer4")) for name, _ in tower.model.named_children())
    with pytest.raises(ConfigError, match=r"patch_size=6: resnet18's stages have strides 2, 4, 8, 16, 32"):
        VISION_TOWER.build("timm_convnet", image_size=16, **{**CONVNET, "patch_size": 6})
    with pytest.raises(ConfigError, match="image_size=20 is not a multiple of patch_size=8"):
        VISION_TOWER.build("timm_convnet", image_size=20, **CONVNET)


def test_a_convnet_vlm_trains_and_builds_on_the_meta_device():
    from zoo.parallel.init import materialize_

    config = {**copy.deepcopy(CONFIG), "vision_tower": "timm_convnet", "vision_kwargs": dict(CONVNET)}
    torch.manual_seed(0)
    model = VisionLanguageModel(copy.deepcopy(config)).train()
    pixels, grids = tiles_for(GRIDS[:2])
    ids = prompt(GRIDS[:2], 3, seed=0)[None]
    model(ids, pixel_values=pixels, image_grids=grids).float().square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.vision_parameters())
    with torch.device("meta"):
        meta = MODEL.build("vlm", copy.deepcopy(config))
    torch.manual_seed(0)
    materialize_(meta, "cpu")
    eager = VisionLanguageModel(copy.deepcopy(config))
    for (name, a), (_, b) in zip(meta.state_dict().items(), eager.state_dict().items(), strict=True):
        if a.is_floating_point():
            assert a.shape == b.shape and torch.isfinite(a).all(), name
    bn = meta.vision_tower.model.bn1
    assert torch.equal(bn.running_var, torch.ones_like(bn.running_var)) and torch.equal(
        bn.weight, torch.ones_like(bn.weight)
    )


def test_feature_layer_minus_two_is_the_penultimate_blocks_output():
    torch.manual_seed(0)
    full = TimmViT(image_size=16, **{**VIT, "depth": 3}).eval()
    penultimate = TimmViT(image_size=16, feature_layer=-2, **{**VIT, "depth": 3}).eval()
    result = penultimate.load_state_dict(full.state_dict(), strict=False)
    assert not result.missing_keys and len(penultimate.blocks()) == 2  # the last block and the norm are pruned
    seen = {}
    full.model.blocks[-2].register_forward_hook(lambda m, i, o: seen.setdefault("h", o))
    x = torch.randn(2, 3, 16, 16)
    last = full(x)
    torch.testing.assert_close(penultimate(x), seen["h"][:, 1:])
    assert not torch.allclose(penultimate(x), last, atol=1e-3)


def test_projectors_map_the_width():
    x = torch.randn(2, 5, 32)
    assert PROJECTOR.build("mlp2x_gelu", 32, 48)(x).shape == (2, 5, 48)
    assert PROJECTOR.build("linear", 32, 48)(x).shape == (2, 5, 48)
    normed = PROJECTOR.build("mlp2x_gelu_rmsnorm", 32, 48)
    with torch.no_grad():
        normed.linear_2.weight.mul_(100.0)  # whatever scale the MLP drifts to, image tokens enter at unit norm
    torch.testing.assert_close(normed(x).norm(dim=-1), torch.ones(2, 5), rtol=1e-4, atol=1e-4)
    model = tiny_vlm(projector="mlp2x_gelu_rmsnorm")
    model.reset_parameters()  # the model's initialiser keeps the unit gain
    gain = model.multi_modal_projector.norm.weight
    torch.testing.assert_close(gain, torch.full_like(gain, gain.numel() ** -0.5))


# ------------------------------------------------------------------------------------------------- image layout
def test_encode_images_lays_out_thumbnail_rows_and_newlines():
    model = tiny_vlm()
    pixels, grids = tiles_for(GRIDS)
    with torch.no_grad():
        out = model.encode_images(pixels, grids)
        single = [model.multi_modal_projector(model.vision_tower(model._normalise(t[None])))[0] for t in pixels]
    assert out.shape == (sum(image_token_count(g, P) for g in GRIDS), 32)
    offset = tile = 0
    for rows, cols in GRIDS:
        image = out[offset : offset + image_token_count((rows, cols), P)]
        torch.testing.assert_close(image[:P], single[tile], atol=1e-5, rtol=1e-5)  # the thumbnail first
        at = P
        for r in range(rows):
            for c in range(cols):
                torch.testing.assert_close(image[at : at + P], single[tile + 1 + r * cols + c], atol=1e-5, rtol=1e-5)
                at += P
            assert torch.equal(image[at], model.image_newline.detach())
            at += 1
        assert at == image.shape[0]
        offset += image.shape[0]
        tile += 1 + rows * cols
    assert offset == out.shape[0]


def test_uint8_and_unit_float_pixels_agree_and_tile_counts_are_checked():
    model = tiny_vlm()
    pixels, grids = tiles_for([(1, 2)])
    with torch.no_grad():
        torch.testing.assert_close(model.encode_images(pixels, grids), model.encode_images(pixels / 255.0, grids))
    with pytest.raises(ValueError, match=r"the image grids need 3 tiles .* holds 2"):
        model.encode_images(pixels[:2], grids)


# ------------------------------------------------------------------------------------------------- splicing
def test_placeholders_are_replaced_in_order_across_samples():
    model = tiny_vlm()
    pixels, grids = tiles_for(GRIDS[:3])
    first, second = prompt(GRIDS[:2], 3, seed=2), prompt(GRIDS[2:3], 3, seed=3)
    length = max(len(first), len(second))
    ids = torch.zeros(2, length, dtype=torch.long)
    ids[0, : len(first)], ids[1, : len(second)] = first, second
    with torch.no_grad():
        embeds = model.embed(ids, pixels, grids)
        features = model.encode_images(pixels, grids)
        plain = model.language_model.model.embed_tokens(ids)
    mask = ids == 257
    assert embeds.shape == (2, length, 32)
    assert torch.equal(embeds[~mask], plain[~mask])
    assert torch.equal(embeds[mask], features)
    bad = ids.clone()
    bad.view(-1)[int(torch.nonzero(bad.view(-1) == 257)[0])] = 5
    message = rf"the prompts hold {int(mask.sum()) - 1} <image> tokens but the images give {int(mask.sum())}"
    with pytest.raises(ValueError, match=message):
        model.embed(bad, pixels, grids)
    with pytest.raises(ValueError, match=r"the prompts hold \d+ <image> tokens but the images give 0"):
        model(ids)


def test_packed_samples_give_the_logits_of_each_sample_alone():
    model = tiny_vlm()
    pixels, grids = tiles_for(GRIDS[:3])
    a, b = prompt(GRIDS[:2], 4, seed=4), prompt(GRIDS[2:3], 5, seed=5)
    split = (1 + 1 * 3) + (1 + 2 * 1)  # the tiles of the first two images
    cu = torch.tensor([0, len(a), len(a) + len(b)], dtype=torch.int32)
    with torch.no_grad():
        packed = model(torch.cat([a, b])[None], pixel_values=pixels, image_grids=grids, cu_seqlens=cu)
        alone_a = model(a[None], pixel_values=pixels[:split], image_grids=grids[:2])
        alone_b = model(b[None], pixel_values=pixels[split:], image_grids=grids[2:])
    torch.testing.assert_close(packed[0, : len(a)], alone_a[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[0, len(a) :], alone_b[0], atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_part_and_bf16_autocast_runs():
    model = tiny_vlm().train()
    pixels, grids = tiles_for(GRIDS[:2])
    ids = prompt(GRIDS[:2], 3, seed=6)[None]
    logits = model(ids, pixel_values=pixels, image_grids=grids)
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:]) + model.moe_loss()
    loss.backward()
    for name in ("vision_tower.model.patch_embed.proj.weight", "vision_tower.model.blocks.0.attn.qkv.weight",
                 "multi_modal_projector.linear_1.weight", "image_newline", "language_model.model.embed_tokens.weight",
                 "language_model.lm_head.weight"):  # fmt: skip
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        assert torch.isfinite(model(ids, pixel_values=pixels, image_grids=grids).float()).all()


def test_parameter_groups_cover_the_model_once():
    model = tiny_vlm()
    groups = [model.vision_parameters(), model.projector_parameters(), model.language_parameters()]
    ids = [id(p) for group in groups for p in group]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert any(p is model.image_newline for p in model.projector_parameters())
    counts = model.count_params()
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["vision_tower"] + counts["projector"] + counts["language_model"] == counts["total"]
    assert {"active", "embedding", "lm_head"} <= set(counts)


# ------------------------------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"vision_towr": "timm_vit"}, r"unknown model\.config keys \['vision_towr'\]; valid: .*vision_tower"),
        ({"tiling": {"tile_size": 16, "tiles": 4}}, r"model\.config\.tiling keys \['tiles'\]"),
        ({"image_token_id": 258}, r"model\.config\.image_token_id=258"),
        ({"image_std": [0.2, 0.2]}, r"model\.config\.image_std needs 3 values"),
    ],
)
def test_bad_configs_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        VisionLanguageModel({**CONFIG, **overrides}, device="meta")


def test_built_on_meta_it_satisfies_the_protocol_and_materialises_like_an_eager_build():
    from zoo.parallel.init import materialize_

    with torch.device("meta"):
        meta = MODEL.build("vlm", copy.deepcopy(CONFIG))
    assert all(p.is_meta for p in meta.parameters()) and check_causal_lm(meta) is meta
    assert len(meta.blocks()) == 2 + 2 and meta.vocab_size == 258 and meta.hidden_size == 32
    assert (
        meta.supports_static_cache() and meta.moe_layers() and meta.output_layers()[-1] is meta.language_model.lm_head
    )
    torch.manual_seed(0)
    materialize_(meta, "cpu")
    eager = tiny_vlm(seed=0)
    for (name, a), (_, b) in zip(meta.state_dict().items(), eager.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_hybrid_lm_takes_inputs_embeds():
    torch.manual_seed(0)
    model = HybridLM(LM).eval()
    ids = torch.randint(0, 258, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids, inputs_embeds=model.model.embed_tokens(ids)), model(ids))
    with pytest.raises(ValueError, match="inputs_embeds has shape"):
        model(ids, inputs_embeds=torch.zeros(2, 8, 32))


# ------------------------------------------------------------------------------------------------- presets
@pytest.mark.parametrize("preset", ["vlm_tiny", "vlm_tiny_convnet"])
def test_the_tiny_preset_composes_and_runs(tmp_path, preset):
    from omegaconf import OmegaConf

    cfg = compose_config(["task=lm", f"model={preset}"], tmp_path / "run")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    torch.manual_seed(0)
    model = MODEL.build(model_cfg["arch"], model_cfg["config"]).eval()
    assert model.patches_per_tile == 16 and model.tiling.max_tiles == 4
    pixels = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    ids = torch.cat([torch.tensor([1, 2]), torch.full((image_token_count((1, 2), 16),), 257), torch.tensor([3])])
    with torch.no_grad():
        assert model(ids[None], pixel_values=pixels, image_grids=torch.tensor([[1, 2]])).shape == (1, len(ids), 258)


def test_the_small_and_full_presets_count_on_the_meta_device(capsys):
    from tasks.app.entry_points import count_params

    small = count_params(["model=vlm_small", "--json"])
    assert 15e6 < small["vision_tower"] < 30e6 and small["language_model"] > 3e8
    full = count_params(["model=minimax_vl_01"])
    assert 0.29e9 < full["vision_tower"] < 0.32e9 and full["language_model"] == 456_089_655_296
    assert "vision_tower:" in capsys.readouterr().out


def test_dtype_casts_the_parameters_and_keeps_the_rotary_tables_in_fp32():
    model = tiny_vlm()
    cast = VisionLanguageModel(copy.deepcopy(CONFIG), dtype=torch.float64).eval()
    assert {p.dtype for p in cast.parameters()} == {torch.float64}

    def buffer_dtypes(m):  # the lightning mixers' decay rates are fp64 constants (with an fp32 copy) by design
        return {b.dtype for name, b in m.named_buffers() if not name.endswith(".decay")}

    assert buffer_dtypes(cast) == buffer_dtypes(model) == {torch.float32}
    assert {b.dtype for name, b in cast.named_buffers() if name.endswith(".decay")} == {torch.float64}
    pixels, grids = tiles_for(GRIDS[:1])
    ids = prompt(GRIDS[:1], 2, seed=7)[None]
    with torch.no_grad():
        assert cast(ids, pixel_values=pixels, image_grids=grids).dtype == torch.float64
