"""Global magnitude masks over a student's conv and linear weights, held by
``torch.nn.utils.prune`` while it trains and made permanent (plain zeros) before export.

Prunable: the ``weight`` of every ``nn.Conv1d/2d/3d`` and ``nn.Linear`` (the head included).
Biases and normalisation parameters are never pruned: they are few, and pruning a norm's scale
removes a whole channel, which is structured pruning, not this.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

__all__ = [
    "Masks",
    "SparsityCount",
    "apply_masks",
    "count_sparsity",
    "dense_masks",
    "effective_state",
    "global_magnitude_masks",
    "make_permanent",
    "masks_at_sparsity",
    "prunable_modules",
]

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
Masks = dict[str, torch.Tensor]  # module name -> bool mask shaped like its weight


def prunable_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Modules whose ``weight`` is pruned, by qualified name, in model order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}


def _weight(module: nn.Module) -> torch.Tensor:
    """The weight the forward pass uses (``weight_orig * weight_mask`` while a mask is held)."""
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    return weight.detach()


def dense_masks(model: nn.Module) -> Masks:
    """All-true masks: nothing pruned."""
    return {
        name: torch.ones_like(_weight(m), dtype=torch.bool)
        for name, m in prunable_modules(model).items()
    }


def global_magnitude_masks(
    model: nn.Module, masks: Mapping[str, torch.Tensor], rate: float
) -> Masks:
    """New masks that prune ``rate`` of the weights ``masks`` still keeps: those of smallest
    absolute value in the current (effective) weights, compared across all prunable modules
    at once. Pruned weights stay pruned; exactly ``round(rate * kept)`` more are removed."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate must be in [0, 1), got {rate}")
    scores = _scores(model, masks)
    pruned_before = int((scores < 0).sum())
    return _masks_pruning(
        model, scores, pruned_before + round(rate * (scores.numel() - pruned_before))
    )


def masks_at_sparsity(
    model: nn.Module, masks: Mapping[str, torch.Tensor], sparsity: float
) -> Masks:
    """New masks that prune ``ceil(sparsity * weights)`` of all prunable weights: those ``masks``
    already prune, then the smallest survivors by magnitude across all modules at once (as
    :func:`global_magnitude_masks`). A sparsity below what ``masks`` already prune keeps them."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    scores = _scores(model, masks)
    target = math.ceil(sparsity * scores.numel() - 1e-9)
    return _masks_pruning(model, scores, max(target, int((scores < 0).sum())))


def _scores(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Every prunable weight's magnitude, flattened in model order; -1 where already pruned."""
    modules = prunable_modules(model)
    if set(modules) != set(masks):
        raise ValueError("masks do not name the model's prunable modules")
    scores = []
    for name, module in modules.items():
        keep = masks[name].to(torch.bool)
        magnitude = _weight(module).abs().float().flatten()
        scores.append(torch.where(keep.flatten(), magnitude, torch.full_like(magnitude, -1.0)))
    return torch.cat(scores)


def _masks_pruning(model: nn.Module, flat: torch.Tensor, count: int) -> Masks:
    """Masks that prune the ``count`` lowest-scored weights (the already pruned score -1)."""
    modules = prunable_modules(model)
    new_flat = torch.ones_like(flat, dtype=torch.bool)
    if count:
        smallest = torch.topk(flat, count, largest=False).indices
        new_flat[smallest] = False
    out: Masks = {}
    start = 0
    for name, module in modules.items():
        size = _weight(module).numel()
        out[name] = new_flat[start : start + size].view_as(_weight(module))
        start += size
    return out


def make_permanent(model: nn.Module) -> None:
    """Drop the pruning re-parametrisation: each ``weight`` becomes a plain parameter holding
    the masked values (zeros where pruned). A no-op for modules without a mask."""
    for module in prunable_modules(model).values():
        if prune.is_pruned(module) and hasattr(module, "weight_mask"):
            prune.remove(module, "weight")


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Hold ``masks`` on the model: the forward pass uses ``weight_orig * weight_mask``, so
    pruned weights are zero in every forward and get zero gradient while it trains."""
    make_permanent(model)
    for name, module in prunable_modules(model).items():
        weight = _weight(module)
        mask = masks[name].to(device=weight.device, dtype=weight.dtype)
        prune.custom_from_mask(module, "weight", mask)


def effective_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the state dict with plain keys: ``X.weight`` holds the masked weight where a
    mask is held (instead of ``X.weight_orig`` and ``X.weight_mask``)."""
    raw = model.state_dict()
    state = {}
    for key, value in raw.items():
        if key.endswith(".weight_mask"):
            continue
        if key.endswith(".weight_orig"):
            key = key.removesuffix("_orig")
            value = value * raw[key + "_mask"]
        state[key] = value.detach().clone()
    return state


@dataclass(frozen=True)
class SparsityCount:
    prunable: int  # conv/linear weights
    prunable_zero: int
    parameters: int  # every parameter (biases and norms included)
    parameters_zero: int

    @property
    def sparsity(self) -> float:
        """Zero fraction of the prunable weights."""
        return self.prunable_zero / max(1, self.prunable)

    @property
    def overall(self) -> float:
        """Zero fraction of all parameters."""
        return self.parameters_zero / max(1, self.parameters)


def count_sparsity(model: nn.Module) -> SparsityCount:
    """Zero weights as the forward pass sees them (masked or permanent)."""
    prunable = prunable_zero = 0
    for module in prunable_modules(model).values():
        weight = _weight(module)
        prunable += weight.numel()
        prunable_zero += int((weight == 0).sum())
    state = effective_state(model)
    names = {name for name, _ in model.named_parameters()}
    names = {n.removesuffix("_orig") for n in names}
    total = sum(state[n].numel() for n in names)
    zero = sum(int((state[n] == 0).sum()) for n in names)
    return SparsityCount(prunable, prunable_zero, total, zero)
