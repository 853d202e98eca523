"""The text ``sightsound describe`` prints for a network: submodules with parameter counts, stage shapes."""

from __future__ import annotations

from torch import nn


def summary(title: str, model: nn.Module, stages: dict, kinds: bool = False) -> str:
    """``title``, each top-level submodule of ``model`` with its parameters (and class, with ``kinds``),
    the total, and the shape of every tensor in ``stages`` (a batch-1 forward)."""
    width = max([12, *(len(n) + 1 for n, _ in model.named_children()), *(len(n) + 1 for n in stages)])
    lines = [title, "submodules (parameters):"]
    for name, module in model.named_children():
        kind = f"{type(module).__name__:<16}" if kinds else ""
        lines.append(f"  {name:<{width}}{kind}{sum(p.numel() for p in module.parameters()):>12,}")
    total = sum(p.numel() for p in model.parameters())
    lines.append(f"  {'total':<{width + (16 if kinds else 0)}}{total:>12,}")
    lines.append("stage outputs (batch 1):")
    for name, tensor in stages.items():
        lines.append(f"  {name:<{width}}{list(tensor.shape)}")
    return "\n".join(lines)
