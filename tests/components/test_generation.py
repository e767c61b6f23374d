"""zoo.generation: the decode engine against the uncached full forward (ragged batches, both attention types, MoE
and dense, prompts across the kernel's block), the engine against the dynamic path, sampling, and the GPU engine."""

from __future__ import annotations

import pytest
import torch

from kernels.lightning_attention.reference import BLOCK
from zoo.ffn.moe import MoE
from zoo.generation import GenerationOutput, engine_for, generate, generate_dynamic, sample_logits, uses_engine
from zoo.generation.engine import DecodeEngine, span_for
from zoo.generation.sampling import uniform_noise
from zoo.models import HybridLM

SMALL = {
    "vocab_size": 61, "hidden_size": 32, "num_layers": 4, "num_heads": 2, "num_kv_heads": 1, "head_dim": 16,
    "intermediate_size": 48, "num_experts": 4, "top_k": 2, "attention": "LLLS",
}  # fmt: skip
RAGGED = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11], [7, 3] * ((BLOCK + 40) // 2)]  # the last crosses a kernel block


def model_of(**overrides) -> HybridLM:
    torch.manual_seed(0)
    return HybridLM({**SMALL, **overrides}).eval()


def greedy_by_full_forward(model, prompt: list[int], steps: int) -> tuple[list[int], list[float]]:
    """Greedy continuation and log-probs recomputed from scratch (no cache) at every step."""
    ids, tokens, logprobs = list(prompt), [], []
    for _ in range(steps):
        with torch.no_grad():
            logits = model(torch.tensor([ids]))[0, -1].float()
        token = int(logits.argmax())
        tokens.append(token)
        logprobs.append(float(torch.log_softmax(logits, -1)[token]))
        ids.append(token)
    return tokens, logprobs


@pytest.mark.parametrize(
    "overrides",
    [{}, {"attention": "S"}, {"attention": "L"}, {"ffn": "dense"}, {"top_k": 1}],
    ids=["hybrid-moe", "softmax", "lightning", "dense", "top1"],
)
def test_engine_greedy_equals_the_uncached_forward_on_ragged_prompts(overrides):
    model = model_of(**overrides)
    assert uses_engine(model)
    out = generate(model, RAGGED, 6)
    assert isinstance(out, GenerationOutput) and len(out.tokens) == len(RAGGED)
    for prompt, tokens, logprobs in zip(RAGGED, out.tokens, out.logprobs, strict=True):
        expected_tokens, expected_logprobs = greedy_by_full_forward(model, prompt, 6)
        assert tokens == expected_tokens
        torch.testing.assert_close(torch.tensor(logprobs), torch.tensor(expected_logprobs), rtol=0, atol=2e-5)


@pytest.mark.parametrize("engine", [True, False], ids=["engine", "dynamic"])
def test_inputs_embeds_replace_the_prompt_embeddings(engine):
    """``inputs_embeds`` (a VLM's image features in place of placeholders) feed the prefill: the tokens' own
    embeddings give the plain generation; changed embeddings in one prompt change that prompt's continuation only;
    a wrong shape is refused."""
    model = model_of()
    embed = model.model.embed_tokens
    with torch.no_grad():
        own = [embed(torch.tensor(p)) for p in RAGGED]
    plain = generate(model, RAGGED, 5, engine=engine)
    same = generate(model, RAGGED, 5, engine=engine, inputs_embeds=own)
    assert same.tokens == plain.tokens
    torch.testing.assert_close(torch.tensor(same.logprobs[1]), torch.tensor(plain.logprobs[1]), rtol=0, atol=1e-5)
    changed = [e.clone() for e in own]
    changed[1] = changed[1] + 3.0 * torch.randn(changed[1].shape, generator=torch.Generator().manual_seed(0))
    other = generate(model, RAGGED, 5, engine=engine, inputs_embeds=changed)
    assert other.logprobs[1] != plain.logprobs[1]
    assert [other.tokens[i] for i in (0, 2, 3)] == [plain.tokens[i] for i in (0, 2, 3)]
    with pytest.raises(ValueError, match="one \\[len\\(prompt\\), hidden\\] tensor per prompt"):
        generate(model, RAGGED, 5, engine=engine, inputs_embeds=own[:2])


def test_engine_runs_under_bf16_autocast():
    """Under autocast (``trainer.precision=bf16-mixed`` rollouts) the softmax layers' packed prefill writes bf16
    attention outputs into the fp32 buffer of its input: cast, not refused; the tokens are those of a bf16 full
    forward's greedy choice for the first step."""
    model = model_of()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = generate(model, RAGGED, 3, engine=True)
        with torch.no_grad():
            first = [int(model(torch.tensor([p]))[0, -1].argmax()) for p in RAGGED]
    assert [t[0] for t in out.tokens] == first


def test_engine_and_dynamic_path_sample_the_same_tokens():
    """The same per-sequence seeds give the same draws on both paths (temperature, top-k and top-p together)."""
    model = model_of()
    settings = {"temperature": 1.3, "top_p": 0.9, "top_k": 20}
    out = generate(model, RAGGED, 8, **settings, seed=5)
    seeds = torch.arange(len(RAGGED)) + 5 * 1_000_003
    tokens, logprobs = generate_dynamic(model, RAGGED, 8, **settings, eos=None, seeds=seeds, device=torch.device("cpu"))
    assert out.tokens == tokens
    torch.testing.assert_close(torch.tensor(out.logprobs), torch.tensor(logprobs), rtol=0, atol=2e-5)


def test_a_sequence_draws_the_same_tokens_whatever_else_is_in_the_batch():
    model = model_of()
    both = generate(model, RAGGED[:2], 8, temperature=1.0, seed=1)
    alone = generate(model, RAGGED[:1], 8, temperature=1.0, seed=1)
    with_more = generate(model, RAGGED, 8, temperature=1.0, seed=1)
    assert alone.tokens[0] == both.tokens[0] == with_more.tokens[0]
    assert both.tokens[1] == with_more.tokens[1]
    assert generate(model, RAGGED[:1], 8, temperature=1.0, seed=2).tokens != alone.tokens


def test_eos_ends_a_sequence_and_the_engine_is_reused_without_stale_state():
    model = model_of()
    first = generate(model, RAGGED, 12)
    eos = first.tokens[1][2]  # the third token of prompt 1: it stops there, the others run on or stop on their own
    stopped = generate(model, RAGGED, 12, eos=eos)
    for full, cut in zip(first.tokens, stopped.tokens, strict=True):
        expected = full[: full.index(eos) + 1] if eos in full else full
        assert cut == expected
    engine = model.__dict__["_zoo_decode_engine"]
    again = generate(model, [RAGGED[2], RAGGED[0]], 12)  # other contents in the same slots
    assert model.__dict__["_zoo_decode_engine"] is engine
    assert again.tokens == [first.tokens[2], first.tokens[0]]
    assert engine_for(model, 600, 40).max_batch >= 600  # outgrown: a larger engine replaces it
    assert generate(model, RAGGED, 0).tokens == [[], [], [], []]


def test_generation_puts_the_model_back_in_training_mode():
    model = model_of().train()
    generate(model, RAGGED[:1], 2)
    assert model.training


def test_bad_sampling_settings_are_refused():
    model = model_of()
    for bad in ({"temperature": -1.0}, {"top_p": 0.0}, {"top_k": -1}):
        with pytest.raises(ValueError, match="temperature"):
            generate(model, RAGGED[:1], 2, **bad)
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[1], []], 2)


def test_sampling_follows_the_distribution_and_its_restrictions():
    """4000 sequences of one draw each (seeds 0..3999): frequencies within 0.03 of softmax(z / T); top-k and
    top-p never draw outside their set; the log-prob is the temperature-1 distribution's."""
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().expand(4000, 4).contiguous()
    seeds, counters = torch.arange(4000), torch.zeros(4000, dtype=torch.int64)
    tokens, logprobs = sample_logits(logits, temperature=1.0, top_p=1.0, top_k=0, seeds=seeds, counters=counters)
    frequencies = torch.bincount(tokens, minlength=4).float() / 4000
    assert (frequencies - probs).abs().max() < 0.03
    torch.testing.assert_close(logprobs, probs.log()[tokens])
    hot, _ = sample_logits(logits, temperature=2.0, top_p=1.0, top_k=0, seeds=seeds, counters=counters)
    flat = probs.sqrt() / probs.sqrt().sum()  # softmax(log p / 2)
    assert (torch.bincount(hot, minlength=4).float() / 4000 - flat).abs().max() < 0.03
    top2, _ = sample_logits(logits, temperature=1.0, top_p=1.0, top_k=2, seeds=seeds, counters=counters)
    assert set(top2.tolist()) == {0, 1}
    nucleus, _ = sample_logits(logits, temperature=1.0, top_p=0.7, top_k=0, seeds=seeds, counters=counters)
    assert set(nucleus.tolist()) == {0, 1}  # 0.5 + 0.3 reaches 0.7
    greedy, _ = sample_logits(logits, temperature=0.0, top_p=1.0, top_k=0, seeds=seeds, counters=counters)
    assert greedy.eq(0).all()


def test_noise_is_uniform_and_depends_on_seed_and_counter_only():
    u = uniform_noise(torch.tensor([3, 3, 4]), torch.tensor([0, 1, 0]), 50_000)
    assert u.min() > 0 and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.01
    assert not torch.equal(u[0], u[1]) and not torch.equal(u[0], u[2])
    torch.testing.assert_close(uniform_noise(torch.tensor([3]), torch.tensor([1]), 50_000)[0], u[1], rtol=0, atol=0)


@pytest.mark.parametrize("n", [1, 3, 8])  # n·k below E (weights gathered) and above it (every expert, masked)
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "traced"])
def test_moe_decode_path_equals_the_loop(n, compiled):
    """Eager, and as torch.compile traces it (the gather path becomes reductions over the weights)."""
    torch.manual_seed(0)
    moe = MoE(16, 24, num_experts=4, top_k=2, impl="loop").eval()
    x = torch.randn(n, 16)
    inference = torch.compile(moe.inference, backend="aot_eager", fullgraph=True) if compiled else moe.inference
    with torch.no_grad():
        torch.testing.assert_close(inference(x), moe(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("prompts", [RAGGED, RAGGED[2:3]], ids=["bucket4", "bucket1"])
def test_compiled_decode_step_gives_the_eager_engines_tokens(prompts):
    """The decode step traced whole by torch.compile (fullgraph: no graph break; aot_eager: the in-place cache
    and buffer writes functionalised) draws the eager step's tokens, greedy and sampled with EOS, on reuse too."""
    model = model_of()
    compiled = DecodeEngine(model, 4, 512, compile=True, compile_backend="aot_eager")
    eager = DecodeEngine(model, 4, 512)
    for settings in ({"temperature": 0.0, "top_p": 1.0, "top_k": 0, "eos": None},
                     {"temperature": 1.3, "top_p": 0.9, "top_k": 20, "eos": 3}):  # fmt: skip
        seeds = torch.arange(len(prompts))
        for _ in range(2):
            tokens, logprobs = compiled.run(prompts, 8, **settings, seeds=seeds)
            expected_tokens, expected_logprobs = eager.run(prompts, 8, **settings, seeds=seeds)
            assert tokens == expected_tokens
            for row, expected_row in zip(logprobs, expected_logprobs, strict=True):
                torch.testing.assert_close(torch.tensor(row), torch.tensor(expected_row), rtol=0, atol=1e-5)
    assert compiled.compile and len(compiled.steps) == 2  # compiled, once per sampling setting


def test_a_long_engine_attends_over_a_short_span_with_the_same_tokens():
    """Short prompts in an engine of 4,096 positions decode over a 256-position span of the softmax caches."""
    model = model_of()
    engine = DecodeEngine(model, 4, 4096)
    prompts = RAGGED[:3]
    tokens, _ = engine.run(prompts, 6, temperature=0.0, top_p=1.0, top_k=0, eos=None, seeds=torch.zeros(3))
    assert {key[1] for key in engine.steps} == {256}  # the step's key: (rows, span, eos, sampling)
    assert tokens == generate(model, prompts, 6).tokens
    assert span_for(10, 4096) == 256 and span_for(300, 4096) == 512 and span_for(3000, 2048) == 2048


def test_engine_switch_chooses_the_path():
    """engine=False takes the dynamic path (the same tokens); engine=True on a model without a static cache is
    refused with the reason."""
    model = model_of()
    settings = {"temperature": 1.0, "eos": 3, "seed": 2}
    dynamic, engine = generate(model, RAGGED, 6, **settings, engine=False), generate(model, RAGGED, 6, **settings)
    assert dynamic.tokens == engine.tokens
    for row, engine_row in zip(dynamic.logprobs, engine.logprobs, strict=True):
        torch.testing.assert_close(torch.tensor(row), torch.tensor(engine_row), rtol=0, atol=1e-5)
    generate(model, RAGGED, 2, compile=False)  # an engine built to another compile setting is replaced
    assert model.__dict__["_zoo_decode_engine"].compile_requested is False
    model.supports_static_cache = lambda: False
    with pytest.raises(ValueError, match="engine=True needs a model with a static cache"):
        generate(model, RAGGED, 2, engine=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda_graph_engine_matches_the_eager_cached_path(dtype):
    """On the GPU: the compiled, graph-replayed engine's first-step log-probs match the dynamic cached path's
    (within bf16 tolerance in bf16); in fp32 its greedy tokens equal the eager engine's over 16 steps (in bf16
    Inductor's fused kernels round differently, which can flip a near-tied greedy choice of a random model); a
    replay after new batch contents gives each sequence its own tokens (no stale state)."""
    torch.manual_seed(0)
    model = HybridLM({**SMALL, "hidden_size": 64, "vocab_size": 257}).cuda().to(dtype).eval()
    prompts = [[5, 6, 7] * 40, [9] * 3, [1, 2] * 300]
    graphed = generate(model, prompts, 16)
    assert model.__dict__["_zoo_decode_engine"].compile  # the step compiled (no fallback to eager)
    if dtype == torch.float32:
        eager_engine = DecodeEngine(model, 4, 1024, cuda_graphs=False)
        eager, _ = eager_engine.run(prompts, 16, temperature=0.0, top_p=1.0, top_k=0, eos=None,
                                    seeds=torch.zeros(3, dtype=torch.int64))  # fmt: skip
        assert graphed.tokens == eager
    seeds = torch.arange(3, device="cuda")
    dynamic, logprobs = generate_dynamic(model, prompts, 1, temperature=0.0, top_p=1.0, top_k=0, eos=None,
                                         seeds=seeds, device=torch.device("cuda"))  # fmt: skip
    assert [t[:1] for t in graphed.tokens] == dynamic
    tolerance = 0.05 if dtype == torch.bfloat16 else 1e-4
    torch.testing.assert_close(torch.tensor([lp[0] for lp in graphed.logprobs]), torch.tensor(logprobs)[:, 0],
                               rtol=0, atol=tolerance)  # fmt: skip
    swapped = generate(model, prompts[::-1], 16)
    assert swapped.tokens == graphed.tokens[::-1]
