"""The decode engine: a preallocated cache, ragged prompts prefilled packed, and a fixed-shape decode step replayed
from a CUDA graph per batch-size bucket.

For a model with the static-cache methods (``new_static_cache``, ``prefill``, ``decode``;
:class:`~zoo.models.HybridLM`)::

    prefill   the N prompts packed into one stream (cu_seqlens): prompt n's lightning states and softmax keys and
              values land in slot n; no padding token enters any state; the first new token is sampled from the
              logits after each prompt's last token
    decode    step(tokens [Bb], positions [Bb], span) → logits → sample → EOS mask → the token written to column t of
              the output buffer; Bb = the smallest bucket ≥ N (1, 2, 4, …), rows N..Bb−1 idle. On CUDA the step,
              sampling included, is compiled by ``torch.compile`` (Inductor fuses the norms, activations, the
              lightning state update, the MoE's few-token experts and the sampling into few kernels) and captured
              as one CUDA graph per (bucket, span, sampling settings), on first use (gpt-fast's and SGLang's
              design); the softmax layers attend over ``span`` cached positions, a power-of-two bucket of the
              batch's longest prompt + budget (:func:`span_for`), not the engine's whole length.
    stop      EOS is a device mask; the host reads whether every sequence has finished every ``check_every`` steps

Nothing in the decode step synchronises with the host: the caches are written in place at each row's position,
the MoE computes its few tokens with fixed shapes (:meth:`zoo.ffn.moe.MoEExperts.decode`) and sampling draws its
noise from a hash of (seed, step) (:mod:`zoo.generation.sampling`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from zoo.generation.sampling import cut_at_eos, mask_finished, sample_logits

#: Batch sizes a decode graph is captured for (a batch runs in the smallest bucket that holds it).
BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


#: The shortest span of cached positions a softmax layer's decode step attends over (spans double from it).
MIN_SPAN = 256


def span_for(length: int, max_len: int) -> int:
    """The positions a decode step of sequences of up to ``length`` tokens attends over: the smallest of
    ``MIN_SPAN · 2^j`` that holds ``length``, capped at the engine's ``max_len``. Short sequences in a long engine
    (a reused one, or RL's validation after long rollouts) read no more of the softmax caches than they need."""
    span = MIN_SPAN
    while span < length:
        span *= 2
    return min(span, max_len)


def _allow_recompiles(steps: int) -> None:
    """Let dynamo keep one compiled step per engine key: every key's step shares one code object, whose compiled
    versions dynamo caps (8 by default) before it silently runs the rest eager."""
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), 8 * steps))


def bucket_for(n: int, max_batch: int) -> int:
    """The smallest bucket of :data:`BUCKETS` (capped at ``max_batch``) that holds ``n`` rows."""
    for size in BUCKETS:
        if size >= n:
            return min(size, max_batch)
    return max_batch


class DecodeEngine:
    """Generation for one model at fixed capacity: ``max_batch`` sequences of up to ``max_len`` positions.

    Args:
        model: a causal LM with ``new_static_cache(batch_size, max_len)``, ``prefill(ids, cu_seqlens, cache,
            slots)`` and ``decode(tokens, positions, cache)``.
        max_batch: slots (rounded up to a bucket).
        max_len: positions per slot (prompt + new tokens).
        cuda_graphs: replay the decode step from CUDA graphs (default: on CUDA devices).
        compile: compile the decode step with ``torch.compile`` (``fullgraph``, static shapes) before its capture
            (default: with CUDA graphs). A model that does not compile is run eager, with a warning.
        compile_backend: the ``torch.compile`` backend (``inductor``; ``aot_eager`` checks the trace cheaply).
        check_every: decode steps between the host's checks for "every sequence has finished".
    """

    def __init__(
        self,
        model: Any,
        max_batch: int,
        max_len: int,
        *,
        cuda_graphs: bool | None = None,
        compile: bool | None = None,
        compile_backend: str = "inductor",
        check_every: int = 16,
    ) -> None:
        weight = next(model.parameters())
        self.model = model
        self.device, self.dtype = weight.device, weight.dtype
        self.max_batch = bucket_for(max_batch, BUCKETS[-1]) if max_batch <= BUCKETS[-1] else max_batch
        self.max_len = max_len
        self.cuda_graphs = self.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        self.compile_requested = compile
        self.compile = self.cuda_graphs if compile is None else compile
        self.compile_backend = compile_backend
        self.check_every = check_every
        self.cache = model.new_static_cache(self.max_batch, max_len, device=self.device, dtype=self.dtype)

        def buffer(dtype: torch.dtype, *shape: int) -> torch.Tensor:
            return torch.zeros(shape or (self.max_batch,), dtype=dtype, device=self.device)

        self.tokens = buffer(torch.int64)  # the token each slot feeds to the next step
        self.positions = buffer(torch.int64)  # tokens each slot holds (where the next one is written)
        self.seeds = buffer(torch.int64)
        self.counters = buffer(torch.int64)  # new tokens sampled so far (the noise's counter)
        self.finished = buffer(torch.bool)
        self.step = buffer(torch.int64, 1)  # the output column of the next step
        self.out_tokens = buffer(torch.int64, self.max_batch, max_len)
        self.out_logprobs = buffer(torch.float32, self.max_batch, max_len)
        self.graphs: dict[tuple, torch.cuda.CUDAGraph] = {}
        self.steps: dict[tuple, Callable[[], None]] = {}  # the (compiled) step of each key
        self.pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None

    def fits(self, n: int, max_len: int) -> bool:
        return n <= self.max_batch and max_len <= self.max_len

    # ------------------------------------------------------------------------------------------------ the step
    def _decode_step(self, rows: int, span: int, sampling: dict[str, Any], eos: int | None) -> None:
        """One token for the first ``rows`` slots, every result written into the engine's buffers; the softmax
        layers attend over the first ``span`` cached positions."""
        logits = self.model.decode(self.tokens[:rows], self.positions[:rows], self.cache, span=span)
        token, logp = sample_logits(
            logits, **sampling, seeds=self.seeds[:rows], counters=self.counters[:rows]
        )  # fmt: skip
        self._record(rows, token, logp, eos)
        self.positions[:rows] += 1

    def _record(self, rows: int, token: torch.Tensor, logp: torch.Tensor, eos: int | None) -> None:
        """Mask finished rows to EOS (log-prob 0), mark new finishers, write column ``step`` of the outputs and
        advance the counters."""
        token, logp = mask_finished(token, logp, self.finished[:rows], eos)
        self.out_tokens[:rows].index_copy_(1, self.step, token[:, None])
        self.out_logprobs[:rows].index_copy_(1, self.step, logp[:, None].float())
        self.tokens[:rows].copy_(token)
        self.counters[:rows] += 1
        self.step += 1

    @staticmethod
    def _key(rows: int, span: int, sampling: dict[str, Any], eos: int | None) -> tuple:
        """What a compiled step and its graph are specialised to."""
        return (rows, span, eos, *sorted(sampling.items()))

    def _step(self, rows: int, span: int, sampling: dict[str, Any], eos: int | None) -> Callable[[], None]:
        """The decode step of one key, compiled on first use when :attr:`compile` is set (after one eager step, so
        that the model's lazy buffers exist before tracing); a model that cannot be compiled falls back to eager
        with a warning."""
        key = self._key(rows, span, sampling, eos)
        step = self.steps.get(key)
        if step is not None:
            return step

        def eager() -> None:
            self._decode_step(rows, span, sampling, eos)

        step = eager
        if self.compile:
            eager()
            _allow_recompiles(len(self.steps) + 1)
            # coordinate-descent tuning of Inductor's kernels (gpt-fast's setting): the step's reductions are
            # latency-bound matrix-vector products whose default tiling leaves bandwidth unused
            options = {"coordinate_descent_tuning": True} if self.compile_backend == "inductor" else None
            compiled = torch.compile(eager, backend=self.compile_backend, fullgraph=True, dynamic=False,
                                     options=options)  # fmt: skip
            try:
                compiled()
                step = compiled
            except Exception as error:
                warnings.warn(f"the decode step did not compile, so it runs eager: {type(error).__name__}: "
                              f"{str(error)[:500]}", stacklevel=3)  # fmt: skip
                self.compile = False
        self.steps[key] = step
        return step

    def _runner(self, rows: int, span: int, sampling: dict[str, Any], eos: int | None) -> Callable[[], None]:
        """The decode step for ``rows`` slots: eager or compiled, or the replay of its CUDA graph (captured on
        first use)."""
        if not self.cuda_graphs:
            return self._step(rows, span, sampling, eos)
        key = self._key(rows, span, sampling, eos)
        graph = self.graphs.get(key)
        if graph is None:
            graph = self._capture(rows, span, sampling, eos)
            self.graphs[key] = graph
        return graph.replay

    def _capture(self, rows: int, span: int, sampling: dict[str, Any], eos: int | None) -> torch.cuda.CUDAGraph:
        """Warm the step up on a side stream (compiled, kernels autotuned, lazy buffers made), then capture it.
        The warm-up steps write into the buffers and caches; :meth:`run` resets what it uses afterwards."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            step = self._step(rows, span, sampling, eos)
            for _ in range(2):
                self.step.zero_()
                step()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        self.step.zero_()
        with torch.cuda.graph(graph, pool=self.pool):
            step()
        return graph

    # ------------------------------------------------------------------------------------------------ a run
    @torch.no_grad()
    def run(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        *,
        temperature: float,
        top_p: float,
        top_k: int,
        eos: int | None,
        seeds: torch.Tensor,
        inputs_embeds: Sequence[torch.Tensor] | None = None,
    ) -> tuple[list[list[int]], list[list[float]]]:
        """New tokens (ending at ``eos`` if produced) and their log-probabilities for each prompt; with
        ``inputs_embeds`` (one ``[len(prompt), d]`` per prompt) the prefill reads those instead of the prompts'
        token embeddings."""
        n = len(prompts)
        lengths = [len(p) for p in prompts]
        if not self.fits(n, max(lengths) + max_new_tokens):
            raise ValueError(f"{n} prompts of up to {max(lengths)} + {max_new_tokens} tokens exceed the engine's "
                             f"{self.max_batch} × {self.max_len}")  # fmt: skip
        if max_new_tokens == 0:
            return [[] for _ in prompts], [[] for _ in prompts]
        rows = bucket_for(n, self.max_batch)
        sampling = {"temperature": float(temperature), "top_p": float(top_p), "top_k": int(top_k)}
        span = span_for(max(lengths) + max_new_tokens, self.max_len)
        step = self._runner(rows, span, sampling, eos)  # captured before the state it would disturb is set
        self.step.zero_()
        self.finished.fill_(True)  # idle rows count as finished
        self.finished[:n] = False
        self.positions.zero_()
        self.counters.zero_()
        self.seeds[:n] = seeds.to(self.device)
        # prefill: the prompts packed, each into its slot; the first new token from each one's last logits
        ids = torch.tensor([t for p in prompts for t in p], device=self.device)
        offsets = torch.tensor([0, *lengths], device=self.device).cumsum(0).to(torch.int32)
        slots = torch.arange(n, device=self.device)
        if inputs_embeds is None:
            logits = self.model.prefill(ids, offsets, self.cache, slots)
        else:
            embeds = torch.cat(list(inputs_embeds)).to(self.device, self.dtype)
            logits = self.model.prefill(ids, offsets, self.cache, slots, inputs_embeds=embeds)
        token, logp = sample_logits(logits, **sampling, seeds=self.seeds[:n], counters=self.counters[:n])
        self._record(n, token, logp, eos)
        self.positions[:n] = torch.tensor(lengths, device=self.device)
        done = 1
        while done < max_new_tokens:
            step()
            done += 1
            if eos is not None and done % self.check_every == 0 and bool(self.finished[:n].all()):
                break
        new = self.out_tokens[:n, :done].tolist()
        logprobs = self.out_logprobs[:n, :done].tolist()
        cut = [cut_at_eos(row, row_logprobs, eos) for row, row_logprobs in zip(new, logprobs)]
        return [tokens for tokens, _ in cut], [lps for _, lps in cut]
