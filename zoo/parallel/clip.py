"""Gradient-norm clipping over parameters sharded on several device meshes (FSDP's data-parallel mesh and the
expert-parallel ``(efsdp, ep)`` mesh): ``torch.nn.utils.clip_grad_norm_`` refuses to stack norms of ``DTensor`` s
on different meshes."""

from __future__ import annotations

from collections.abc import Iterable

import torch


@torch.no_grad()
def clip_grad_norm_(parameters: Iterable[torch.Tensor], max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
    """Scale the gradients of ``parameters`` in place so that their global ``norm_type``-norm is at most
    ``max_norm``, and return that norm (before clipping), like ``torch.nn.utils.clip_grad_norm_``.

    The norm is computed per mesh (each ``DTensor`` group's partial norm reduced over its mesh with
    ``full_tensor()``, plain tensors as they are), then combined: ``‖g‖_p = (Σ_mesh ‖g_mesh‖_p^p)^{1/p}``, or the
    maximum for ``p = ∞``. A collective: every rank must call it with the same parameters. Without any ``DTensor``
    it is ``torch.nn.utils.clip_grad_norm_`` itself."""
    params = [p for p in parameters if p.grad is not None]
    groups: dict[object, list[torch.Tensor]] = {}
    for p in params:
        groups.setdefault(getattr(p.grad, "device_mesh", None), []).append(p)
    if list(groups) == [None]:
        return torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
    norms = []
    for mesh, group in groups.items():
        norm = torch.nn.utils.get_total_norm([p.grad for p in group], norm_type)
        norms.append(norm.full_tensor() if mesh is not None else norm)
    if not norms:
        return torch.zeros(())
    total = torch.nn.utils.get_total_norm(norms, norm_type)
    for group in groups.values():  # one mesh at a time: the foreach kernels take one mesh
        torch.nn.utils.clip_grads_with_norm_(group, max_norm, total)
    return total
