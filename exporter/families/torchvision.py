"""torchvision family: every builder of ``torchvision.models``, random weights.

Input sizes come from the weights metadata torchvision ships with the code
(``crop_size``, ``min_temporal_size``), which needs no download.  Builders pass
``weights=None`` *and* ``weights_backbone=None``: segmentation and detection
builders otherwise fetch ImageNet backbone weights, which fails offline.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Mapping

from exporter.families import FamilyError, FamilyModel, import_library

SOURCE = "torchvision"
ENTRYPOINT = "exporter.families.torchvision:build"
EXTRA_KEYS: frozenset[str] = frozenset({"tasks"})

#: Task name -> submodule of torchvision.models whose builders belong to it.
TASKS: dict[str, str] = {
    "classification": "",
    "segmentation": "segmentation",
    "detection": "detection",
    "video": "video",
    "optical_flow": "optical_flow",
    # Eager-mode quantized models build and run offline, but torch.export cannot
    # trace their packed-params script objects; opt-in so default sweeps stay green.
    "quantization": "quantization",
}
DEFAULT_TASKS: tuple[str, ...] = (
    "classification", "segmentation", "detection", "video", "optical_flow")

DETECTION_SIZE = 320       # min_size = max_size: small images keep detection cheap
SEGMENTATION_SIZE = 224
FLOW_SIZE = 128            # RAFT's documented minimum
VIDEO_FRAMES = 8           # enough for the 3D CNNs' temporal strides; cheap on CPU


def _models() -> Any:
    return import_library(SOURCE, "torchvision.models")


@functools.lru_cache(maxsize=1)
def registry() -> dict[str, str]:
    """Model name -> task, over all tasks (names are unique across torchvision)."""
    models = _models()
    found: dict[str, str] = {}
    for task, sub in TASKS.items():
        module = getattr(models, sub) if sub else models
        for name in models.list_models(module=module):
            found.setdefault(name, task)
    return found


def _tasks(extra: Mapping[str, Any]) -> tuple[str, ...]:
    tasks = extra.get("tasks", DEFAULT_TASKS)
    if isinstance(tasks, str):
        tasks = [tasks]
    if not isinstance(tasks, (list, tuple)) or not tasks:
        raise FamilyError(f"family 'torchvision': tasks must be a non-empty list, got {tasks!r}")
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise FamilyError(f"family 'torchvision': unknown task(s) {', '.join(map(str, bad))}; "
                          f"known: {', '.join(TASKS)}")
    return tuple(tasks)


def catalog(extra: Mapping[str, Any]) -> dict[str, FamilyModel]:
    """Models of the selected tasks, keyed by bare name (no model is constructed)."""
    tasks = set(_tasks(extra))
    return {
        name: FamilyModel(name=f"{SOURCE}/{name}", entrypoint=ENTRYPOINT,
                          kwargs={"model": name, "task": task}, tags=(SOURCE, task))
        for name, task in registry().items() if task in tasks
    }


def explain_missing(name: str, extra: Mapping[str, Any]) -> str | None:
    task = registry().get(name)
    if task is not None:
        return f"it is a {task!r} model; add {task!r} to tasks"
    return None


# --------------------------------------------------------------------------- builders

def _weights_meta(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(meta, transform keywords) of the model's default weights, or empty dicts."""
    models = _models()
    try:
        enum = models.get_model_weights(name)
    except (ValueError, KeyError):
        return {}, {}
    weights = getattr(enum, "DEFAULT", None) or next(iter(enum))
    transforms = weights.transforms
    return dict(weights.meta), dict(getattr(transforms, "keywords", None) or {})


def _construct(name: str, **kwargs: Any) -> Any:
    models = _models()
    builder = models.get_model_builder(name)
    params = inspect.signature(builder).parameters
    # Passing weights_backbone=None where accepted stops the backbone download.
    if "weights_backbone" in params:
        kwargs["weights_backbone"] = None
    if name.endswith(("googlenet", "inception_v3")):
        kwargs["init_weights"] = True   # the default (None) only adds a FutureWarning
    return builder(weights=None, **kwargs)


def _side(size: Any, default: int) -> int:
    if isinstance(size, (tuple, list)):
        return int(size[0])
    return int(size) if size else default


def _batch_dim() -> Any:
    import torch
    return torch.export.Dim("batch", min=1, max=64)


def build(model: str, task: str = "classification", batch_size: int = 2) -> dict[str, Any]:
    """Build ``model`` with random weights and inputs that suit its ``task``."""
    import torch

    if task not in TASKS:
        raise ValueError(f"unknown torchvision task {task!r}")
    meta, keywords = _weights_meta(model)

    if task in ("classification", "quantization"):
        extra = {"quantize": True} if task == "quantization" else {}
        net = _construct(model, **extra)
        # ViTs built without weights are fixed to their own image_size (224),
        # whatever the default weights were fine-tuned at (vit_h_14: 518).
        side = int(getattr(net, "image_size", 0) or _side(keywords.get("crop_size"), 224))
        x = torch.randn(batch_size, 3, side, side)
        return {"model": net, "args": (x,), "kwargs": {},
                "dynamic_shapes": ({0: _batch_dim()},)}

    if task == "segmentation":
        net = _construct(model)
        x = torch.randn(batch_size, 3, SEGMENTATION_SIZE, SEGMENTATION_SIZE)
        return {"model": net, "args": (x,), "kwargs": {},
                "dynamic_shapes": ({0: _batch_dim()},)}

    if task == "detection":
        # SSD models have a fixed input size of their own and reject min/max_size.
        sized = {} if model.startswith("ssd") else {
            "min_size": DETECTION_SIZE, "max_size": DETECTION_SIZE}
        net = _construct(model, **sized)
        images = [torch.rand(3, DETECTION_SIZE, DETECTION_SIZE)]
        # A list of images has no batch dimension to make dynamic.
        return {"model": net, "args": (images,), "kwargs": {}, "dynamic_shapes": None}

    if task == "video":
        net = _construct(model)
        side = _side(keywords.get("crop_size"), 112)
        # MViT and S3D need >= 16 / 14 frames; the 3D CNNs are fine with fewer.
        frames = max(VIDEO_FRAMES, int(meta.get("min_temporal_size", 1)))
        if frames > VIDEO_FRAMES:
            frames = 16
        clip = torch.randn(1, 3, frames, side, side)
        # Batch 1 keeps 3D models affordable on CPU; size-1 dims cannot be dynamic.
        return {"model": net, "args": (clip,), "kwargs": {}, "dynamic_shapes": None}

    # optical_flow (RAFT): two frames in, a list of flow refinements out.
    net = _construct(model)
    first = torch.rand(1, 3, FLOW_SIZE, FLOW_SIZE)
    second = torch.rand(1, 3, FLOW_SIZE, FLOW_SIZE)
    return {"model": net, "args": (first, second), "kwargs": {}, "dynamic_shapes": None}
