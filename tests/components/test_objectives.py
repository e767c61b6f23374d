"""RL objectives, loss aggregation and advantage estimators against hand-computed cases (rl.md §1-4)."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from zoo.objectives import (
    AGGREGATIONS,
    CISPO,
    DAPO,
    GAE,
    GRPO,
    PPO,
    GroupNorm,
    Reinforce,
    aggregate,
    kl_penalty,
    masked_mean,
    outcome_to_token_rewards,
    surrogate,
)
from zoo.registries import ADVANTAGE, OBJECTIVE

F64 = torch.float64

# A tiny ragged batch: response 0 has 3 tokens, response 1 has 2 (its third position is padding).
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
LOGP = torch.tensor([[-1.0, -0.5, -2.0], [-0.3, -1.2, -0.7]], dtype=F64)
RATIO = torch.tensor([[1.0, 1.25, 1.5], [0.5, 1.1, 7.0]], dtype=F64)  # 7.0 sits on the padding
ADV = torch.tensor([1.0, -2.0], dtype=F64)  # one per sequence


def run(objective, ratio=RATIO, adv=ADV, mask=MASK, logp=LOGP, **extra):
    """``objective`` on ``logp`` with ``old_logp = logp − log(ratio)``; returns (loss, metrics, ∂loss/∂logp)."""
    lp = logp.clone().requires_grad_(True)
    old = logp - ratio.log()
    loss, metrics = objective(lp, old, adv, mask, **extra)
    (grad,) = torch.autograd.grad(loss, lp)
    return loss.detach(), metrics, grad


def normaliser_weights(mask: torch.Tensor, mode: str) -> torch.Tensor:
    """∂aggregate/∂L_it written out per mode (the weight each token gets)."""
    m = mask.to(F64)
    n_i = m.sum(1, keepdim=True)
    n_seq = (n_i > 0).sum()
    if mode == "token_mean":
        return m / m.sum()
    if mode == "seq_mean_token_mean":
        return torch.where(n_i > 0, m / (n_seq * n_i.clamp(min=1)), 0.0)
    if mode == "seq_mean_token_sum":
        return m / n_seq
    return m / m.numel()


def random_batch(seed: int, b: int = 4, t: int = 6, spread: float = 0.6):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(b, t, generator=g, dtype=F64) * 3
    old = logp + spread * torch.randn(b, t, generator=g, dtype=F64)
    adv = torch.randn(b, t, generator=g, dtype=F64)
    lengths = torch.tensor([t, t - 2, 1, t - 3])[:b]
    mask = torch.arange(t)[None] < lengths[:, None]
    return logp, old, adv, mask


# ---------------------------------------------------------------------------------------------------- aggregation
LOSS = torch.tensor([[1.0, 2.0, 3.0, 99.0], [4.0, 5.0, math.nan, math.inf], [1.0, 1.0, 1.0, 1.0]], dtype=F64)
LOSS_MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("token_mean", 19 / 9),  # (6 + 9 + 4) / 9 tokens
        ("seq_mean_token_mean", (6 / 3 + 9 / 2 + 4 / 4) / 3),
        ("seq_mean_token_sum", (6 + 9 + 4) / 3),
        ("seq_mean_token_sum_norm", 19 / (3 * 4)),
    ],
)
def test_aggregate_formulas_on_a_ragged_batch(mode, expected):
    loss = LOSS.clone().requires_grad_(True)
    out = aggregate(loss, LOSS_MASK, mode)  # NaN and inf on masked positions are selected out
    assert out.item() == pytest.approx(expected)
    (grad,) = torch.autograd.grad(out, loss)
    torch.testing.assert_close(grad, normaliser_weights(LOSS_MASK, mode))
    # float masks give the same; a fully masked sequence changes no mode but the constant of Dr. GRPO
    assert aggregate(LOSS, LOSS_MASK.to(F64), mode).item() == pytest.approx(expected)
    padded = torch.cat([LOSS, torch.full((1, 4), 7.0, dtype=F64)])
    padded_mask = torch.cat([LOSS_MASK, torch.zeros(1, 4, dtype=torch.bool)])
    scale = 3 / 4 if mode == "seq_mean_token_sum_norm" else 1.0
    assert aggregate(padded, padded_mask, mode).item() == pytest.approx(expected * scale)


def test_token_mean_and_seq_mean_weigh_tokens_differently():
    """token_mean weighs every token 1/9; seq_mean_token_mean weighs a token of a 2-token answer 1/6, of a 4-token
    answer 1/12 (the length bias that Dr. GRPO and DAPO remove)."""
    w_tok = normaliser_weights(LOSS_MASK, "token_mean")
    w_seq = normaliser_weights(LOSS_MASK, "seq_mean_token_mean")
    assert torch.allclose(w_tok[LOSS_MASK], torch.full((9,), 1 / 9, dtype=F64))
    assert w_seq[1, 0].item() == pytest.approx(1 / 6) and w_seq[2, 0].item() == pytest.approx(1 / 12)
    # the same per-token losses, two different answers
    loss = torch.where(LOSS_MASK, LOSS, 0.0)
    assert aggregate(loss, LOSS_MASK, "token_mean") != aggregate(loss, LOSS_MASK, "seq_mean_token_mean")
    # with equal lengths they coincide
    full = torch.ones(3, 4, dtype=torch.bool)
    assert aggregate(loss, full, "token_mean").item() == pytest.approx(aggregate(loss, full, "seq_mean_token_mean"))


def test_aggregate_max_length_and_all_zero_mask():
    assert aggregate(LOSS, LOSS_MASK, "seq_mean_token_sum_norm", max_length=10).item() == pytest.approx(19 / 30)
    for mode in AGGREGATIONS:
        loss = LOSS.clone().requires_grad_(True)
        out = aggregate(loss, torch.zeros_like(LOSS_MASK), mode)
        assert out.item() == 0.0 and out.requires_grad
        (grad,) = torch.autograd.grad(out, loss)
        assert torch.equal(grad, torch.zeros_like(grad))
    x = torch.tensor([[1.0, 2.0], [3.0, math.nan]])
    assert masked_mean(x, torch.tensor([[1, 1], [1, 0]])).item() == pytest.approx(2.0)
    assert torch.equal(masked_mean(x, x.new_zeros(2, 2), dim=1), torch.zeros(2))


def test_aggregate_unknown_mode():
    with pytest.raises(ValueError, match=r"aggregation 'token_sum'.*token_mean, seq_mean_token_mean"):
        aggregate(LOSS, LOSS_MASK, "token_sum")
    with pytest.raises(ValueError, match="aggregation 'mean'"):
        GRPO(aggregation="mean")


# ---------------------------------------------------------------------------------------------------- objectives
def test_ppo_hand_computed():
    """eps = 0.2, A = (1, −2): r = 1.25 and 1.5 with A > 0 are clipped, r = 0.5 with A < 0 is clipped."""
    loss, metrics, grad = run(PPO())
    # per-token losses: −1, −1.2, −1.2 | 1.6, 2.2 ; token_mean over 5 tokens
    assert loss.item() == pytest.approx((-1 - 1.2 - 1.2 + 1.6 + 2.2) / 5)
    torch.testing.assert_close(grad, torch.tensor([[-1.0, 0, 0], [0, 2.2, 0]], dtype=F64) / 5)
    assert metrics["clip_frac"].item() == pytest.approx(3 / 5)
    assert metrics["clip_frac_lower"].item() == 0
    assert metrics["ratio_mean"].item() == pytest.approx((1 + 1.25 + 1.5 + 0.5 + 1.1) / 5)
    assert metrics["ratio_max"].item() == pytest.approx(1.5)  # 7.0 is on the padding
    assert metrics["approx_kl"].item() == pytest.approx(-sum(math.log(r) for r in (1, 1.25, 1.5, 0.5, 1.1)) / 5)
    assert metrics["adv_mean"].item() == pytest.approx((3 * 1 - 2 * 2) / 5)
    assert "value_loss" not in metrics


def test_dapo_hand_computed():
    """Clip-higher [0.8, 1.28]: r = 1.25 is no longer clipped, r = 1.5 is."""
    loss, metrics, grad = run(DAPO())
    assert loss.item() == pytest.approx((-1 - 1.25 - 1.28 + 1.6 + 2.2) / 5)
    torch.testing.assert_close(grad, torch.tensor([[-1.0, -1.25, 0], [0, 2.2, 0]], dtype=F64) / 5)
    assert metrics["clip_frac"].item() == pytest.approx(2 / 5)


def test_grpo_hand_computed_with_kl():
    d = torch.tensor([[0.0, 0.1, -0.2], [0.3, 0.0, 0.5]], dtype=F64)  # ref_logp − logp
    loss, metrics, grad = run(GRPO(), ref_logprobs=LOGP + d)
    k3 = d.exp() - d - 1
    pg = [[-1, -1.2, -1.2], [1.6, 2.2]]
    kl = [k3[0].tolist(), k3[1, :2].tolist()]
    expected = sum(sum(p) / len(p) for p in pg) / 2 + 0.04 * sum(sum(k) / len(k) for k in kl) / 2
    assert loss.item() == pytest.approx(expected)
    # ∂k3/∂logp = 1 − exp(ref − logp); weights 1/(2·3) and 1/(2·2)
    pg_grad = torch.tensor([[-1.0, 0, 0], [0, 2.2, 0]], dtype=F64)
    expected_grad = (pg_grad + 0.04 * (1 - d.exp())) * torch.tensor([[1 / 6], [1 / 4]], dtype=F64) * MASK
    torch.testing.assert_close(grad, expected_grad)
    assert metrics["kl_ref"].item() == pytest.approx(sum(sum(k) for k in kl) / 5)
    assert metrics["policy_loss"].item() == pytest.approx(sum(sum(p) / len(p) for p in pg) / 2)


def test_cispo_hand_computed():
    """Weight capped at 1 + 0.28; every token keeps a gradient −w·A, including the clipped ones."""
    loss, metrics, grad = run(CISPO(eps_high=0.28))
    w = torch.tensor([[1.0, 1.25, 1.28], [0.5, 1.1, 0.0]], dtype=F64)
    a = torch.tensor([[1.0], [-2.0]], dtype=F64)
    assert loss.item() == pytest.approx((-(w * a * LOGP) * MASK).sum().item() / 5)
    torch.testing.assert_close(grad, -w * a * MASK / 5)
    assert metrics["cap_frac"].item() == pytest.approx(1 / 5)
    assert metrics["clip_frac"].item() == pytest.approx(1 / 5)
    assert "mask_frac" not in metrics
    # a floor, as in verl's two-sided form: r = 0.5 < 1 − 0.3 gets weight 0.7
    _, metrics, grad = run(CISPO(eps_high=0.28, eps_low=0.3))
    assert grad[1, 0].item() == pytest.approx(-0.7 * -2 / 5)
    assert metrics["clip_frac"].item() == pytest.approx(2 / 5) and metrics["cap_frac"].item() == pytest.approx(1 / 5)


def test_reinforce_hand_computed():
    loss, metrics, grad = run(Reinforce())
    a = torch.tensor([[1.0], [-2.0]], dtype=F64)
    assert loss.item() == pytest.approx((-(a * LOGP) * MASK).sum().item() / 5)
    torch.testing.assert_close(grad, -a * MASK.to(F64) / 5)  # no ratio, whatever old_logprobs holds
    assert metrics["clip_frac"].item() == 0


ON_POLICY = [
    ("reinforce", {}),
    ("ppo", {}),
    ("ppo", {"dual_clip": 3.0, "eps_high": 0.3}),
    ("grpo", {"kl_coef": 0.0}),
    ("dr_grpo", {}),
    ("dapo", {}),
    ("cispo", {}),
    ("cispo", {"eps_high": 0.0, "eps_low": 0.0, "unified_mask": True}),
]


@pytest.mark.parametrize("mode", AGGREGATIONS)
@pytest.mark.parametrize(("name", "kwargs"), ON_POLICY)
def test_on_policy_gradient_is_reinforce(name, kwargs, mode):
    """At r == 1 every objective (but GRPO with its KL) has the gradient −A·∇logp / (its normaliser)."""
    logp, _, adv, mask = random_batch(0)
    objective = OBJECTIVE.build(name, aggregation=mode, **kwargs)
    assert objective.aggregation == mode
    for a in (adv, adv[:, 0]):  # per token and per sequence
        _, metrics, grad = run(objective, ratio=torch.ones_like(logp), adv=a, mask=mask, logp=logp)
        a_bt = a if a.dim() == 2 else a[:, None].expand_as(logp)
        torch.testing.assert_close(grad, -a_bt * normaliser_weights(mask, mode))
        assert metrics["clip_frac"].item() == 0 and metrics["approx_kl"].item() == 0
        assert metrics["ratio_mean"].item() == pytest.approx(1) and metrics["ratio_max"].item() == pytest.approx(1)


def test_default_aggregations():
    assert {n: OBJECTIVE.build(n).aggregation for n in OBJECTIVE.names()} == {
        "reinforce": "token_mean",
        "ppo": "token_mean",
        "grpo": "seq_mean_token_mean",
        "dr_grpo": "seq_mean_token_sum_norm",
        "dapo": "token_mean",
        "cispo": "token_mean",
    }


def test_clipped_token_gets_zero_gradient_except_under_cispo():
    """A > 0, r = 2 > 1 + eps: PPO, GRPO and DAPO drop the token, CISPO keeps −cap·A."""
    logp = torch.tensor([[-1.0, -2.0]], dtype=F64)
    ratio = torch.tensor([[2.0, 1.0]], dtype=F64)
    adv = torch.tensor([3.0], dtype=F64)
    mask = torch.ones(1, 2, dtype=torch.bool)
    for objective in (PPO(), GRPO(kl_coef=0.0), DAPO()):
        _, metrics, grad = run(objective, ratio=ratio, adv=adv, mask=mask, logp=logp)
        assert grad[0, 0].item() == 0 and grad[0, 1].item() != 0
        assert metrics["clip_frac"].item() == pytest.approx(0.5)
    _, metrics, grad = run(CISPO(eps_high=0.28), ratio=ratio, adv=adv, mask=mask, logp=logp)
    assert grad[0, 0].item() == pytest.approx(-1.28 * 3 / 2)
    assert metrics["cap_frac"].item() == pytest.approx(0.5)


@pytest.mark.parametrize(
    "kwargs",
    [{"clip_eps": 0.2}, {"eps_low": 0.2, "eps_high": 0.28}, {"clip_eps": 0.1, "dual_clip": 1.5}, {"dual_clip": 3.0}],
)
def test_ppo_literal_and_mask_forms_have_identical_gradients(kwargs):
    logp, old, adv, mask = random_batch(1, b=4, t=64, spread=0.8)
    ppo = PPO(**kwargs)
    lp = logp.clone().requires_grad_(True)
    loss, metrics = ppo(lp, old, adv, mask)
    (g_literal,) = torch.autograd.grad(loss, lp)
    lp = logp.clone().requires_grad_(True)
    out = surrogate(lp, old, adv, tr_low=ppo.eps_low, tr_high=ppo.eps_high, dual_c=ppo.dual_clip)
    (g_mask,) = torch.autograd.grad(aggregate(out.loss, mask, "token_mean"), lp)
    torch.testing.assert_close(g_literal, g_mask, rtol=1e-12, atol=1e-15)
    dropped = 1 - masked_mean(out.keep.to(F64), mask)
    assert 0 < dropped < 1
    assert (metrics["clip_frac"] + metrics["clip_frac_lower"]).item() == pytest.approx(dropped.item())
    assert (metrics["clip_frac_lower"] > 0) == ("dual_clip" in kwargs)


def test_dual_clip_zeroes_gradient_for_negative_advantage_and_large_ratio():
    logp = torch.tensor([[-1.0, -1.0, -1.0]], dtype=F64)
    ratio = torch.tensor([[4.0, 2.0, 4.0]], dtype=F64)
    adv = torch.tensor([[-1.0, -1.0, 1.0]], dtype=F64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    loss, metrics, grad = run(PPO(dual_clip=3.0), ratio=ratio, adv=adv, mask=mask, logp=logp)
    # A<0, r=4>c: loss capped at −A·c = 3, no gradient; A<0, r=2<c: loss 2, gradient −A·r = 2; A>0, r=4: clipped
    assert loss.item() == pytest.approx((3 + 2 - 1.2) / 3)
    torch.testing.assert_close(grad, torch.tensor([[0.0, 2.0, 0.0]], dtype=F64) / 3)
    assert metrics["clip_frac_lower"].item() == pytest.approx(1 / 3)
    assert metrics["clip_frac"].item() == pytest.approx(1 / 3)
    _, _, grad = run(PPO(), ratio=ratio, adv=adv, mask=mask, logp=logp)
    assert grad[0, 0].item() == pytest.approx(4 / 3)  # without the dual clip the token pushes with weight r


@pytest.mark.parametrize(("eps_low", "eps_high", "cap"), [(0.2, 0.28, None), (0.2, 0.2, 1e6)])
def test_cispo_unified_mask_recovers_the_ppo_gradient(eps_low, eps_high, cap):
    logp, old, adv, mask = random_batch(2, b=4, t=64, spread=0.8)
    cispo = CISPO(eps_high=cap, unified_mask=True, mask_eps_low=eps_low, mask_eps_high=eps_high)
    ppo = PPO(eps_low=eps_low, eps_high=eps_high)
    grads, metrics = [], []
    for objective in (cispo, ppo):
        lp = logp.clone().requires_grad_(True)
        loss, m = objective(lp, old, adv, mask)
        grads.append(torch.autograd.grad(loss, lp)[0])
        metrics.append(m)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-15)
    assert metrics[0]["mask_frac"].item() == pytest.approx(metrics[1]["clip_frac"].item())
    assert metrics[0]["mask_frac"] > 0 and metrics[0]["cap_frac"] == 0
    # without the mask CISPO moves the tokens PPO drops
    lp = logp.clone().requires_grad_(True)
    (g_plain,) = torch.autograd.grad(CISPO(eps_high=cap)(lp, old, adv, mask)[0], lp)
    assert not torch.allclose(g_plain, grads[1])


def test_ppo_value_loss_clipping():
    """V = (0.5, 1.0), V_old = (0, 1.5), R = (1, 2), c_v = 0.2: token 0's clipped term wins (0.64 > 0.25, no
    gradient), token 1's unclipped one (1.0 > 0.49, gradient V − R = −1)."""
    logp = torch.zeros(1, 2, dtype=F64)
    mask = torch.ones(1, 2, dtype=torch.bool)
    values = torch.tensor([[0.5, 1.0]], dtype=F64, requires_grad=True)
    old_values = torch.tensor([[0.0, 1.5]], dtype=F64)
    returns = torch.tensor([[1.0, 2.0]], dtype=F64)
    ppo = PPO(vf_coef=0.1, value_clip=0.2)
    lp = logp.clone().requires_grad_(True)
    adv = torch.tensor([1.0], dtype=F64)
    loss, metrics = ppo(lp, logp, adv, mask, values=values, old_values=old_values, returns=returns)
    assert metrics["value_loss"].item() == pytest.approx(0.5 * (0.64 + 1.0) / 2)
    assert metrics["value_clip_frac"].item() == pytest.approx(0.5)
    assert loss.item() == pytest.approx(-1.0 + 0.1 * 0.41)
    (g_values,) = torch.autograd.grad(loss, values)
    torch.testing.assert_close(g_values, torch.tensor([[0.0, -1.0]], dtype=F64) * 0.1 / 2)
    # no clipping: plain 0.5·(V − R)², old_values not needed
    loss, metrics = PPO(value_clip=None)(lp, logp, adv, mask, values=values, returns=returns)
    assert metrics["value_loss"].item() == pytest.approx(0.5 * (0.25 + 1.0) / 2)
    assert metrics["value_clip_frac"].item() == 0
    with pytest.raises(ValueError, match="returns"):
        ppo(lp, logp, adv, mask, values=values, old_values=old_values)
    with pytest.raises(ValueError, match="old_values"):
        ppo(lp, logp, adv, mask, values=values, returns=returns)
    with pytest.raises(ValueError, match="no values"):
        ppo(lp, logp, adv, mask, returns=returns)


def test_needs_ref_and_missing_extras():
    logp, old, adv, mask = random_batch(3)
    assert GRPO().needs_ref and not GRPO(kl_coef=0).needs_ref and not CISPO().needs_ref
    assert CISPO(kl_coef=0.001).needs_ref
    assert PPO.needs_values and not GRPO.needs_values and GAE.needs_values and not GroupNorm.needs_values
    with pytest.raises(ValueError, match=r"grpo with kl_coef=0.04 needs ref_logprobs"):
        GRPO()(logp, old, adv, mask)
    GRPO(kl_coef=0)(logp, old, adv, mask, ref_logprobs=None)  # None is "not given"
    _, metrics = GRPO(kl_coef=0)(logp, old, adv, mask, ref_logprobs=logp - 0.1)
    assert metrics["kl_ref"] > 0  # logged even when it is not in the loss
    with pytest.raises(TypeError, match=r"unexpected extra argument\(s\) 'ref_logprob'.*ref_logprobs"):
        GRPO()(logp, old, adv, mask, ref_logprob=logp)
    with pytest.raises(TypeError, match="'values'"):
        DAPO()(logp, old, adv, mask, values=logp)
    with pytest.raises(ValueError, match=r"advantages must be \[B\]"):
        PPO()(logp, old, adv[:, :2], mask)
    with pytest.raises(ValueError, match="mask must have the shape"):
        PPO()(logp, old, adv, mask[:, :2])


def test_metrics_entropy_all_zero_mask_and_low_precision():
    logp, old, adv, mask = random_batch(4)
    entropy = torch.rand_like(logp)
    for name in OBJECTIVE.names():
        objective = OBJECTIVE.build(name, kl_coef=0.0)
        loss, metrics = objective(logp.clone().requires_grad_(True), old, adv, mask, entropy=entropy)
        assert loss.dim() == 0 and loss.requires_grad
        assert metrics["entropy"].item() == pytest.approx(masked_mean(entropy, mask).item())
        for key in ("clip_frac", "approx_kl", "ratio_mean", "ratio_max", "adv_mean", "policy_loss"):
            assert metrics[key].dim() == 0 and not metrics[key].requires_grad, (name, key)
        lp = logp.clone().requires_grad_(True)
        loss, metrics = objective(lp, old, adv, torch.zeros_like(mask), entropy=entropy)
        (grad,) = torch.autograd.grad(loss, lp)
        assert loss.item() == 0 and torch.equal(grad, torch.zeros_like(grad))
        assert all(torch.isfinite(v) and v.item() == 0 for v in metrics.values()), name
    lp = logp.to(torch.bfloat16).requires_grad_(True)
    loss, _ = CISPO()(lp, old.to(torch.bfloat16), adv, mask)
    assert loss.dtype == torch.float32
    loss.backward()
    assert lp.grad.dtype == torch.bfloat16


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="dual_clip must be a number > 1"):
        PPO(dual_clip=0.9)
    with pytest.raises(ValueError, match="ppo clip_eps must be a number >= 0"):
        PPO(clip_eps=-0.1)
    with pytest.raises(ValueError, match="cispo eps_high"):
        CISPO(eps_high=-1.0)
    with pytest.raises(ValueError, match="kl_coef"):
        GRPO(kl_coef=-0.04)
    with pytest.raises(ValueError, match="max_length must be a positive int"):
        DAPO(max_length=0)
    with pytest.raises(TypeError):
        PPO(0.2)  # keyword-only
    with pytest.raises(KeyError, match=r"Unknown objective 'cispx'.*Valid choices: cispo, dapo.*Did you mean 'cispo'"):
        OBJECTIVE.build("cispx")
    with pytest.raises(ValueError, match=r"group_norm scale 'std'. Valid choices: group, batch, none"):
        GroupNorm(scale="std")
    with pytest.raises(ValueError, match=r"gae lam must be in \[0, 1\]"):
        GAE(lam=1.5)
    with pytest.raises(ValueError, match=r"KL estimator kind 'k4'. Valid choices: k1, k2, k3"):
        kl_penalty(LOGP, LOGP, "k4")


def test_registries_list_the_names():
    assert OBJECTIVE.names() == ["cispo", "dapo", "dr_grpo", "grpo", "ppo", "reinforce"]
    assert ADVANTAGE.names() == ["gae", "group_norm"]
    dr = OBJECTIVE.build("dr_grpo", max_length=8)
    assert isinstance(dr, GRPO) and dr.kl_coef == 0 and dr.max_length == 8
    assert "CISPO(eps_high=1.0, eps_low=None, unified_mask=False" in repr(OBJECTIVE.build("cispo"))


# ---------------------------------------------------------------------------------------------------- advantages
REWARDS = torch.tensor([1.0, 0.1, 0.0, 3.0, 0.1, 2.0, 0.0, 0.1, 1.0, 4.0], dtype=F64)
GROUPS = torch.tensor([7, 2, 7, 5, 2, 9, 7, 2, 7, 9])  # interleaved, not contiguous; group 5 has one member


def test_group_norm_hand_computed():
    s7, s9 = math.sqrt(1 / 3), math.sqrt(2)  # unbiased stds of (1, 0, 0, 1) and (2, 4)
    a7 = 0.5 / (s7 + 1e-6)
    a9 = 1 / (s9 + 1e-6)
    expected = [a7, 0, -a7, 0, 0, -a9, -a7, 0, a7, a9]
    adv = GroupNorm()(REWARDS, GROUPS)
    torch.testing.assert_close(adv, torch.tensor(expected, dtype=F64))
    assert (adv[[1, 4, 7, 3]] == 0).all()  # all-equal group (0.1 ≠ mean(0.1, 0.1, 0.1) in floats) and a single one
    centered = [0.5, 0, -0.5, 0, 0, -1, -0.5, 0, 0.5, 1]
    torch.testing.assert_close(GroupNorm(scale="none")(REWARDS, GROUPS), torch.tensor(centered, dtype=F64))
    batch_std = statistics.stdev(REWARDS.tolist())
    torch.testing.assert_close(
        ADVANTAGE.build("group_norm", scale="batch", eps=0.0)(REWARDS, GROUPS),
        torch.tensor(centered, dtype=F64) / batch_std,
    )
    assert GroupNorm().zero_std_fraction(REWARDS, GROUPS) == pytest.approx(2 / 4)


def test_group_norm_degenerate_batches():
    same = torch.full((6,), 0.3)
    for scale in ("group", "batch", "none"):
        adv = GroupNorm(scale=scale)(same, torch.tensor([0, 0, 0, 1, 1, 1]))
        assert torch.equal(adv, torch.zeros(6)), scale
        assert torch.equal(GroupNorm(scale=scale)(torch.tensor([2.0]), torch.tensor([0])), torch.zeros(1))
        assert torch.equal(GroupNorm(scale=scale, eps=0.0)(same, torch.tensor([0, 0, 0, 1, 1, 2])), torch.zeros(6))
    adv = GroupNorm()(torch.tensor([1, 0, 1, 1]), torch.tensor([3, 3, 4, 4]))  # integer rewards
    assert adv.dtype == torch.get_default_dtype() and adv[2:].eq(0).all() and adv[0] > 0
    with pytest.raises(ValueError, match="group_ids must have the shape"):
        GroupNorm()(same, torch.tensor([0, 1]))


def test_gae_hand_computed():
    """γ = 0.9, λ = 0.8 (γλ = 0.72), three tokens.

    Row 0, mask (1, 0, 1) — an observation token in the middle is skipped:
        t=2: δ = 1 + 0.9·0 − 0.4 = 0.6                          A = 0.6                   R = 0.6 + 0.4 = 1.0
        t=1: masked: carries V_next = 0.4 and A_next = 0.6
        t=0: δ = 0 + 0.9·0.4 − 0.5 = −0.14                      A = −0.14 + 0.72·0.6 = 0.292  R = 0.792
    Row 1, mask (1, 1, 0) — padding at the end (its value 9.9 and reward 5 are ignored):
        t=1: δ = 1 + 0.9·0 − 0.6 = 0.4                          A = 0.4                   R = 1.0
        t=0: δ = 0 + 0.9·0.6 − 0.3 = 0.24                       A = 0.24 + 0.72·0.4 = 0.528  R = 0.828
    """
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 5.0]], dtype=F64)
    values = torch.tensor([[0.5, 0.2, 0.4], [0.3, 0.6, 9.9]], dtype=F64, requires_grad=True)
    mask = torch.tensor([[1, 0, 1], [1, 1, 0]])
    adv, ret = GAE(gamma=0.9, lam=0.8, whiten=False)(rewards, values, mask)
    torch.testing.assert_close(adv, torch.tensor([[0.292, 0.0, 0.6], [0.528, 0.4, 0.0]], dtype=F64))
    torch.testing.assert_close(ret, torch.tensor([[0.792, 0.0, 1.0], [0.828, 1.0, 0.0]], dtype=F64))
    assert not adv.requires_grad and not ret.requires_grad
    torch.testing.assert_close(ret, (adv + values.detach()) * mask)  # returns = A + V
    # whitening: the same returns, advantages standardised over the 4 unmasked tokens (unbiased variance)
    white, ret_w = ADVANTAGE.build("gae", gamma=0.9, lam=0.8)(rewards, values, mask)
    raw = [0.292, 0.6, 0.528, 0.4]
    mu, sd = statistics.mean(raw), statistics.stdev(raw)
    expected = [[(0.292 - mu) / sd, 0, (0.6 - mu) / sd], [(0.528 - mu) / sd, (0.4 - mu) / sd, 0]]
    torch.testing.assert_close(white, torch.tensor(expected, dtype=F64), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ret_w, ret)


def test_gae_lambda_one_gamma_one_is_return_minus_value():
    """γ = λ = 1: A_t = Σ_{s≥t} r_s − V_t (Monte Carlo), with the outcome reward on the last token."""
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    rewards = outcome_to_token_rewards(torch.tensor([2.0, -1.0]), mask)
    values = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]])
    adv, ret = GAE(gamma=1.0, lam=1.0, whiten=False)(rewards, values, mask)
    torch.testing.assert_close(ret, torch.tensor([[2.0, 2.0, 2.0, 0.0], [-1.0, -1.0, 0.0, 0.0]]))
    torch.testing.assert_close(adv, (ret - values) * mask)


def test_outcome_to_token_rewards_and_kl_penalty():
    mask = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 1]], dtype=torch.bool)
    out = outcome_to_token_rewards(torch.tensor([1.0, 2.0, 3.0]), mask)
    torch.testing.assert_close(out, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 3.0]]))
    logp = torch.tensor([-1.0, -2.0, -0.5], dtype=F64)
    ref = torch.tensor([-1.5, -1.0, -0.5], dtype=F64)
    d = logp - ref
    torch.testing.assert_close(kl_penalty(logp, ref, "k1"), d)
    torch.testing.assert_close(kl_penalty(logp, ref, "k2"), 0.5 * d**2)
    k3 = kl_penalty(logp, ref, "k3")
    torch.testing.assert_close(k3, torch.tensor([math.exp(-0.5) + 0.5 - 1, math.exp(1) - 1 - 1, 0.0], dtype=F64))
    assert (k3 >= 0).all()
