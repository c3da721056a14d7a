"""Shared fixtures: the repository's paths, a manifest writer and one reload zygote per session."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import textwrap
from pathlib import Path
from typing import Callable, Iterator

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = REPO / "manifests"
TEST_MODELS = Path(__file__).resolve().parent / "models"

# Property tests: the default run is reproducible (a fixed seed, examples kept in
# .hypothesis/, which CI starts empty); `make test-props` runs the long profile (many more
# examples, a fresh seed each time, failures printed with a blob to replay them).
settings.register_profile("default", derandomize=True, print_blob=True)
settings.register_profile("long", max_examples=2000, derandomize=False, print_blob=True,
                          deadline=None)
PROFILE = os.environ.get("EXPORTSWEEP_HYPOTHESIS", "default")
settings.load_profile(PROFILE)


def examples(n: int) -> int:
    """A property test's example count: ``n`` by default, 20 times more in the long profile."""
    return n * (20 if PROFILE == "long" else 1)

# Keep HF libraries from trying the network: nothing may be downloaded here.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Family catalogs are cached on disk between commands (exporter.families.cache): the suite and
# every exportsweep it starts share one cache of their own, never the user's.
_CACHE = tempfile.mkdtemp(prefix="exportsweep-test-cache-")
os.environ["EXPORTSWEEP_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, True)


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


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3-compatible server (moto's standalone server) on loopback, for the session.

    Yields its endpoint; the AWS_* variables that pyarrow and boto3 read point at it, for
    this process and the exportsweep processes the tests start.
    """
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H",
                               "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
           "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto_server did not start")
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server: str, request) -> str:
    """A fresh, empty bucket; returns its name."""
    import boto3
    name = "t-" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40]
    boto3.client("s3").create_bucket(Bucket=name)
    return name
