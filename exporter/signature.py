"""Turn a raw torch error into stable, comparable text: bounded messages, signatures, user frames.

The same root cause in two models must produce the same signature, so the
parts of a message that vary per model (numbers, shapes, sympy symbols such as
``u0`` / ``s77``, addresses, paths, Dynamo's "from user code" trailer) are
normalized away before hashing, and the draft_export advice torch appends to
export errors is dropped.
"""

from __future__ import annotations

import hashlib
import functools
import linecache
import os
import re
import sys
import sysconfig
import traceback
from types import TracebackType
from typing import Iterable

MAX_MESSAGE_CHARS = 2000
SIGNATURE_LINES = 3

# torch.export appends this advice to many errors (torch/export/__init__.py); it says
# nothing about the cause and would make every signature depend on torch's wording.
_DRAFT_ADVICE = re.compile(
    r"\s*The error above occurred when calling torch\.export\.export\..*", re.S)
# Opens the line a numeric failure's message gets about its float64 judgement (exporter.numerics):
# figures, not the cause.
FLOAT64_TRAILER = "Against eager in float64:"
# Everything after these markers is a per-model stack, generic help text or figures.
_TRAILERS = (
    "from user code:", "Set TORCHDYNAMO_VERBOSE", "Set TORCH_LOGS", "For more information",
    "The following call raised this error", "Traceback (most recent call last)",
    "For C++ stack trace", "Developer debug context", "For more details about this graph break",
    FLOAT64_TRAILER,
)
_ADDR = re.compile(r"0x[0-9a-fA-F]+")
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\w.\-~]*/)+[\w.\-]+")
_SYMBOL = re.compile(r"\b(u|s|zuf|zf|q|c|ps|uf)\d+\b")
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w])")
_SPACE = re.compile(r"\s+")


def strip_advice(message: str) -> str:
    return _DRAFT_ADVICE.sub("", message).strip()


def bounded_message(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    message = strip_advice(message)
    return message if len(message) <= limit else message[: limit - 1] + "…"


def message_head(message: str, lines: int = SIGNATURE_LINES) -> str:
    """The first few meaningful lines of a message, before any per-model trailer."""
    message = strip_advice(message)
    cut = len(message)
    for marker in _TRAILERS:
        at = message.find(marker)
        if 0 <= at < cut:
            cut = at
    kept = [ln.strip() for ln in message[:cut].splitlines() if ln.strip()]
    return "\n".join(kept[:lines])


def normalize(text: str) -> str:
    text = _ADDR.sub("0xADDR", text)
    text = _PATH.sub("PATH", text)
    text = _SYMBOL.sub(lambda m: m.group(1) + "N", text)
    text = _NUMBER.sub("N", text)
    return _SPACE.sub(" ", text).strip()


def signature(category: str, cause: str) -> str:
    """A 12-hex-digit hash identifying a root cause across models and export modes.

    ``cause`` is the mode-independent evidence the taxonomy found (a guard expression, an
    operator, Dynamo's gb_type and explanation, the innermost exception's type and the head
    of its text), normalized."""
    parts = (category, normalize(cause))
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]


# -- user frames -----------------------------------------------------------------------------

_STDLIB = os.path.realpath(sysconfig.get_paths()["stdlib"]) + os.sep

def _library_roots() -> tuple[str, ...]:
    """Paths whose frames are never 'the model's': stdlib, torch itself, exportsweep.

    A package contributes its folder, a single-file module (``typing_extensions.py``) only
    its file: its folder is site-packages, where the zoo's model libraries live too
    (transformers, timm, torchvision), and their frames are the models' own source."""
    roots = {_STDLIB}
    for name in ("torch", "exporter", "orchestrator", "_pytest", "pluggy", "sympy", "ray",
                 "typing_extensions", "functorch"):
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None) if module is not None else None
        if not path:
            continue
        if os.path.basename(path) == "__init__.py":
            roots.add(os.path.realpath(os.path.dirname(path)) + os.sep)
        else:
            roots.add(os.path.realpath(path))
    return tuple(sorted(roots))


_INSTALLED = (os.sep + "site-packages" + os.sep, os.sep + "dist-packages" + os.sep)


@functools.lru_cache(maxsize=4096)
def _real(filename: str) -> str:
    """os.path.realpath, remembered: stacks repeat the same few hundred files, and the
    shape log asks for a model frame at every guard torch adds."""
    return os.path.realpath(filename)


def _is_model_frame(filename: str, roots: tuple[str, ...]) -> bool:
    if filename.startswith("<"):
        return False
    real = _real(filename)
    for root in roots:
        # A system Python keeps site-packages inside its stdlib folder: an installed model
        # library is not the standard library.
        if real.startswith(root) and not (root == _STDLIB and any(m in real for m in _INSTALLED)):
            return False
    return True


def display_path(filename: str) -> str:
    """A short path: relative to cwd when inside it, from the package dir for site-packages."""
    real = os.path.realpath(filename)
    for marker in ("site-packages" + os.sep, "dist-packages" + os.sep):
        at = real.rfind(marker)
        if at >= 0:
            return real[at + len(marker):]
    cwd = os.getcwd() + os.sep
    return real[len(cwd):] if real.startswith(cwd) else real


def _tb_frames(tb: TracebackType | None) -> list[tuple[str, int]]:
    return [(fs.filename, fs.lineno or 0) for fs in traceback.extract_tb(tb)] if tb else []


def _below_library(frames: list[tuple[str, int]], roots: tuple[str, ...]) -> list[tuple[str, int]]:
    """The frames from the first library frame on: the ones before it are the caller's
    (whoever called torch.export), not code that ran because of the export."""
    for i, (filename, _) in enumerate(frames):
        if not _is_model_frame(filename, roots) and not filename.startswith("<"):
            return frames[i:]
    return []


def model_frame(frames: list[tuple[str, int]]) -> str | None:
    """file:line of the deepest model-code frame of a stack (outermost first) that ran
    because of torch (below its first library frame), with the line's code."""
    roots = _library_roots()
    for filename, lineno in reversed(_below_library(frames, roots)):
        if _is_model_frame(filename, roots):
            code = linecache.getline(filename, lineno).strip()
            return f"{display_path(filename)}:{lineno}" + (f": {code}" if code else "")
    return None


def user_frame(chain: Iterable[BaseException]) -> str | None:
    """file:line of the innermost model-code frame that led to the error, when torch shows one.

    Model code that really ran shows in a traceback: all of it in non-strict export (the
    model's Python runs), and in strict mode the parts torch calls for real (a custom
    operator's fake kernel, a pytree flatten function).  The deepest such frame wins, so
    both modes name the same line.  Otherwise Dynamo's traced user stack (``real_stack``)
    names the line strict mode stopped at.
    """
    roots = _library_roots()
    chain = list(chain)
    candidates: list[tuple[str, int]] = []
    for exc in chain:
        frames = _below_library(_tb_frames(exc.__traceback__), roots)
        if any(_is_model_frame(f, roots) for f, _ in frames):
            candidates = frames      # the deepest cause whose stack reaches the model
    if not candidates:
        for exc in chain:
            try:
                real_stack = getattr(exc, "real_stack", None)
            except Exception:  # noqa: BLE001 - exotic exceptions with broken attributes
                real_stack = None
            if real_stack:
                candidates = [(fs.filename, fs.lineno or 0) for fs in real_stack]
                break
    for filename, lineno in reversed(candidates):
        if _is_model_frame(filename, roots):
            return f"{display_path(filename)}:{lineno}"
    return None


def definition_frame(obj: object) -> str | None:
    """file:line where ``obj``'s class defines ``forward``, when that is model code.

    The model line of last resort: torch rejects some programs (unflattenable outputs,
    inputs that do not match the spec) before or after running any model line."""
    forward = getattr(type(obj), "forward", None)
    code = getattr(forward, "__code__", None)
    if code is None or not _is_model_frame(code.co_filename, _library_roots()):
        return None
    return f"{display_path(code.co_filename)}:{code.co_firstlineno}"
