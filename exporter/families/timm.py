"""timm family: every architecture ``timm.list_models()`` knows, random weights.

Input size is the model's own ``pretrained_cfg['input_size']``: many timm
models (ViTs, MaxViT, Swin...) only accept the resolution they were defined for.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

from exporter.families import FamilyModel, import_library

SOURCE = "timm"
ENTRYPOINT = "exporter.families.timm:build"
EXTRA_KEYS: frozenset[str] = frozenset()


def _timm() -> Any:
    return import_library(SOURCE, "timm")


@functools.lru_cache(maxsize=1)
def registry() -> tuple[str, ...]:
    """Architecture names (no pretrained tags: the weights are random anyway)."""
    return tuple(sorted(_timm().list_models()))


def catalog(extra: Mapping[str, Any]) -> dict[str, FamilyModel]:
    """All timm architectures, keyed by bare name (no model is constructed)."""
    return {
        name: FamilyModel(name=f"{SOURCE}/{name}", entrypoint=ENTRYPOINT,
                          kwargs={"model": name}, tags=(SOURCE, "classification"))
        for name in registry()
    }


def explain_missing(name: str, extra: Mapping[str, Any]) -> str | None:
    if "." in name:
        return "pretrained tags (after '.') are not part of the name: weights are random"
    return None


def input_size(model: Any) -> tuple[int, int, int]:
    """(C, H, W) the model was configured for; 224x224 RGB when timm does not say."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = cfg.get("input_size") or (3, 224, 224)
    return (int(size[0]), int(size[1]), int(size[2]))


def build(model: str, batch_size: int = 2) -> dict[str, Any]:
    """Build ``model`` with random weights and a batch at its configured input size."""
    import torch

    net = _timm().create_model(model, pretrained=False)
    x = torch.randn(batch_size, *input_size(net))
    return {"model": net, "args": (x,), "kwargs": {},
            "dynamic_shapes": ({0: torch.export.Dim("batch", min=1, max=64)},)}
