"""A training step's forward, loss, backward and gradient clipping replayed as CUDA graphs.

Small models train launch-bound: the RL policy's update of :mod:`tasks.rl` issues ~1,400 kernels per optimizer
step and its GPU is busy for a tenth of the step's wall time. :class:`GraphedStep` captures everything up to the
optimizer step — the loss function, its backward and the gradient-norm clip — once per input signature and replays
it, so a step costs one graph launch plus the (eager) optimizer step. The optimizer stays outside the graph: its
state, learning-rate schedule and Lightning's hooks run as they always do.

What a replay needs, and what :class:`GraphedStep` takes care of:

- static inputs: each call's tensors are copied into the buffers the graph reads (one graph per signature:
  the sorted names, shapes and dtypes, the autocast state and the module mode);
- fresh casts: the graph runs under ``torch.autocast(..., cache_enabled=False)``, so every replay casts the
  parameters' current values (an autocast cache would hold the weights of the capture);
- gradients: captured with every ``.grad`` None, so the backward writes them into the graph's memory; after a
  replay each parameter's ``.grad`` is set to its static gradient (overwritten by the next replay: a step
  *sets* the gradients, it does not accumulate);
- outputs: the loss and the metrics are stacked into one vector in the graph and cloned once per replay.

The graphed step equals the eager one up to the kernels' own non-determinism (same kernels, same order). It
falls back to eager, with one warning, where a graph cannot run (the CPU, a loss that synchronises with the
host, a capture error); it also runs eagerly the first time it sees a signature, and captures on the second, so
shapes seen once cost no capture. A failed capture leaves the CUDA generators as they were before it
(:func:`release_generators`): otherwise any later random draw on the device, Inductor's autotuning included, fails.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from zoo.parallel.clip import clip_grad_norm_

__all__ = ["GraphedStep", "LossFn", "release_generators"]

LossFn = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, torch.Tensor]]]
"""``fn(inputs) -> (loss, metrics)``: a scalar loss and named scalar tensors, from a dict of tensors."""


def release_generators() -> None:
    """Take every CUDA device's default generator out of capture mode, its seed and offset kept.

    A capture marks each default generator as capturing at its start and unmarks it at its end, but a capture that
    fails (a host read, an illegal call) raises from ``capture_end`` before the unmarking: from then on every random
    draw on the device outside a capture fails with "Offset increment outside graph capture encountered
    unexpectedly" (Inductor's autotuning draws random inputs, so a later ``torch.compile`` fails too). Swapping in
    a clone of the generator's state, which is not capturing, restores it.
    """
    if not torch.cuda.is_initialized():
        return
    for generator in torch.cuda.default_generators:
        generator.graphsafe_set_state(generator.clone_state())


class _Graph:
    """One captured signature: its static inputs, the graph, the gradients it writes and its output vector."""

    def __init__(self, inputs: dict[str, torch.Tensor]) -> None:
        self.inputs = {name: value.clone() for name, value in inputs.items()}
        self.graph = torch.cuda.CUDAGraph()
        self.grads: list[torch.Tensor | None] = []
        self.out = torch.empty(0)
        self.names: list[str] = []


class GraphedStep:
    """``step(inputs) -> (loss, metrics)``: ``fn``'s loss and metrics, with the gradients of ``params`` set to
    those of the loss and clipped to ``max_norm`` (``metrics["grad_norm"]``, the norm before clipping).

    Args:
        fn: the loss function (:data:`LossFn`); on the graphed path it must not synchronise with the host and must
            return the same metric names for a signature.
        params: the parameters whose gradients the step sets (the optimizer's).
        max_norm: gradient-norm clip (None: no clipping, no ``grad_norm``).
        backward: how the eager path back-propagates (Lightning's ``manual_backward``, for its precision plugins);
            the graphed path calls ``loss.backward()``, so enable graphs only where the two agree (fp32 or bf16,
            one process, no sharding).
        enabled: try CUDA graphs for CUDA inputs (False: always eager).
        max_graphs: graphs kept (least recently used dropped); a signature is captured when seen the second time.
        modules: modules whose ``training`` flag enters the signature, and whose stashed differentiable tensors
            are detached before a capture (:meth:`_release_autograd_graphs`).

    Outputs are new tensors (detached), valid after later calls; the gradients of a graphed call are valid until
    the next call. ``graphed`` counts replays, ``captures`` captures.
    """

    def __init__(
        self,
        fn: LossFn,
        params: Sequence[nn.Parameter],
        *,
        max_norm: float | None = None,
        backward: Callable[[torch.Tensor], None] | None = None,
        enabled: bool = True,
        max_graphs: int = 8,
        modules: Sequence[nn.Module] = (),
    ) -> None:
        self.fn = fn
        self.params = [p for p in params if p.requires_grad]
        self.max_norm = max_norm
        self.backward = backward or torch.Tensor.backward
        self.enabled = enabled
        self.max_graphs = max_graphs
        self.modules = list(modules)
        self.graphs: OrderedDict[tuple, _Graph] = OrderedDict()
        self.seen: set[tuple] = set()
        self.pool: Any = None
        self.stream: Any = None  # the warm-up and capture stream (one for every graph)
        self.pointers: list[int] = []
        self.graphed = 0
        self.captures = 0

    # ------------------------------------------------------------------------------------------------ calls
    def __call__(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not self._can_graph(inputs):
            return self.eager(inputs)
        key = self._signature(inputs)
        entry = self.graphs.get(key)
        if entry is None:
            if key not in self.seen:
                self.seen.add(key)
                return self.eager(inputs)
            entry = self._try_capture(key, inputs)
            if entry is None:
                return self.eager(inputs)
        self.graphs.move_to_end(key)
        for name, value in inputs.items():
            entry.inputs[name].copy_(value)
        entry.graph.replay()
        self.graphed += 1
        return self._outputs(entry)

    def eager(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The step without graphs: the same loss, backward and clip, launched one kernel at a time."""
        for p in self.params:
            p.grad = None
        with self._autocast(next(iter(inputs.values())).device.type):
            loss, metrics = self.fn(inputs)
        self.backward(loss)
        metrics = {name: value.detach() for name, value in metrics.items()}
        if self.max_norm:
            metrics["grad_norm"] = clip_grad_norm_(self.params, self.max_norm)
        return loss.detach(), metrics

    def reset(self) -> None:
        """Drop every graph (e.g. after the parameters were replaced)."""
        self.graphs.clear()
        self.seen.clear()
        self.pool = None

    # ------------------------------------------------------------------------------------------------ graphs
    def _can_graph(self, inputs: dict[str, torch.Tensor]) -> bool:
        if not (self.enabled and inputs and self.params):
            return False
        if any(not t.is_cuda for t in inputs.values()) or any(not p.is_cuda for p in self.params):
            return False
        pointers = [p.data_ptr() for p in self.params]
        if pointers != self.pointers:  # parameters moved or replaced: the graphs read old memory
            self.reset()
            self.pointers = pointers
        return True

    def _signature(self, inputs: dict[str, torch.Tensor]) -> tuple:
        device = next(iter(inputs.values())).device.type
        autocast = (torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        tensors = tuple(sorted((name, tuple(t.shape), t.dtype, t.device) for name, t in inputs.items()))
        return tensors, autocast, tuple(m.training for m in self.modules), torch.is_grad_enabled()

    def _autocast(self, device: str):
        """The caller's autocast, without its weight cache (every forward casts the current weights)."""
        if not torch.is_autocast_enabled(device):
            return nullcontext()
        return torch.autocast(device, dtype=torch.get_autocast_dtype(device), cache_enabled=False)

    def _graphed_body(self, entry: _Graph) -> None:
        """What the graph records: the loss, its backward, the clip, and the outputs stacked in one vector."""
        loss, metrics = self.fn(entry.inputs)
        loss.backward()
        values = {name: value.detach() for name, value in metrics.items()}
        if self.max_norm:
            values["grad_norm"] = clip_grad_norm_(self.params, self.max_norm)
        entry.names = list(values)
        entry.out = torch.stack([loss.detach().float(), *(v.float().reshape(()) for v in values.values())])

    def _try_capture(self, key: tuple, inputs: dict[str, torch.Tensor]) -> _Graph | None:
        device = next(iter(inputs.values())).device
        try:
            entry = _Graph(inputs)
            with self._autocast(device.type):
                torch.clear_autocast_cache()
                if self.stream is None:
                    self.stream = torch.cuda.Stream(device)
                stream = self.stream
                stream.wait_stream(torch.cuda.current_stream(device))
                self._release_autograd_graphs()  # the gradient accumulators are then made on the capture stream
                with torch.cuda.stream(stream):  # warm-up: lazy initialisations off the capture
                    for p in self.params:
                        p.grad = None
                    self._graphed_body(entry)
                torch.cuda.current_stream(device).wait_stream(stream)
                for p in self.params:
                    p.grad = None
                if self.pool is None:
                    self.pool = torch.cuda.graph_pool_handle()
                self._release_autograd_graphs()
                with torch.cuda.graph(entry.graph, pool=self.pool, stream=stream):
                    self._graphed_body(entry)
            entry.grads = [p.grad for p in self.params]
        except Exception as error:
            warnings.warn(
                f"GraphedStep: capturing the step failed ({type(error).__name__}: {error}); running it eagerly",
                RuntimeWarning,
                stacklevel=3,
            )
            release_generators()
            self.enabled = False
            self.reset()
            for p in self.params:
                p.grad = None
            return None
        self.captures += 1
        self.graphs[key] = entry
        while len(self.graphs) > self.max_graphs:
            self.graphs.popitem(last=False)
        return entry

    def _release_autograd_graphs(self) -> None:
        """Detach the differentiable tensors that :attr:`modules` keep as attributes (e.g. an MoE layer's auxiliary
        loss of the last forward). Such a tensor keeps its step's autograd graph alive, and with it each parameter's
        gradient accumulator and the stream it was made on: a backward captured on another stream would then
        synchronise with that stream, which invalidates the capture."""
        for module in self.modules:
            for sub in module.modules():
                for name, value in list(vars(sub).items()):
                    if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                        setattr(sub, name, value.detach())

    def _outputs(self, entry: _Graph) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        for p, grad in zip(self.params, entry.grads, strict=True):
            p.grad = grad
        out = entry.out.clone()
        return out[0], dict(zip(entry.names, out[1:].unbind(), strict=True))
