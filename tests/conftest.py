"""Shared fixtures: the repository's paths, a manifest writer and one reload zygote per session."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Callable, Iterator

import pytest

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = REPO / "manifests"
TEST_MODELS = Path(__file__).resolve().parent / "models"

# Keep HF libraries from trying the network: nothing may be downloaded here.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def write_manifest(tmp_path: Path) -> Callable[..., Path]:
    """Write YAML text (dedented) next to a copy-free link to tests/models; return its path."""
    models = tmp_path / "models"
    if not models.exists():
        models.symlink_to(TEST_MODELS, target_is_directory=True)

    def write(text: str, name: str = "manifest.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path
    return write


@pytest.fixture(scope="session")
def fresh_loader() -> Iterator[object]:
    from exporter.freshload import FreshLoader
    with FreshLoader() as loader:
        loader.start()
        yield loader
