"""Load a saved program in a fresh process and compare what it computes.

Registrations (custom ops, pytree nodes) are per process, so a program that
loads in the process that exported it can still fail anywhere else.  Each
check runs in a new child forked from a *pristine* zygote process that has
imported torch and nothing of the models: as fresh as a new interpreter, without
paying ``import torch`` per artifact.  Only plain data crosses the process boundary:
tensors go through a weights-only ``torch.save`` file, failures come back
already classified.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class LoadRequest:
    kind: str            # "export" (torch.export.load) or "aoti" (aoti_load_package)
    artifact: str        # path of the .pt2 file
    data: str            # torch.save'd {"inputs": leaves, "expected": leaves[, "reference64"]}
    atol: float
    rtol: float
    device: str = "cpu"
    imports: tuple[str, ...] = ()   # libraries owning the program's pytree types
    seed: int = 0                   # the seed the eager reference ran under (random ops)


@dataclass
class LoadResult:
    ok: bool
    failure: dict[str, Any] | None = None     # taxonomy.Failure as a dict
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    load_s: float = 0.0
    run_s: float = 0.0
    float64: str = ""     # the float64 reference overturned a float32 failure (numerics)


class FreshLoader:
    """A pristine zygote: a fresh interpreter that imports torch once and forks one child
    per check.  The zygote never imports model code, so each child is as fresh as a new
    process while costing a fork instead of ``import torch``.  Not thread-safe: one per worker.

    A check on another device than the CPU runs in a new interpreter started by the zygote
    instead: the zygote's warm-up asks torch whether CUDA is available (fake tensors do),
    after which CUDA cannot be initialised in a forked child ("Cannot re-initialize CUDA
    in forked subprocess").
    """

    def __init__(self, log_path: str | None = None) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = log_path      # where the zygote's and children's stderr goes

    def check(self, request: LoadRequest, timeout_s: float, result_path: str) -> LoadResult:
        proc = self._ensure_started()
        assert proc.stdin is not None and proc.stdout is not None
        message = {"request": asdict(request), "result": result_path}
        proc.stdin.write((json.dumps(message) + "\n").encode())
        proc.stdin.flush()
        started = self._read(proc, 60.0)
        if started is None:
            self.close()
            return _died(request, "the fresh loader did not start a child")
        done = self._read(proc, timeout_s)
        if done is None:
            os.kill(started["pid"], signal.SIGKILL)
            self._read(proc, 30.0)
            return _died(request, f"the fresh loader ran past {timeout_s:.0f} s")
        if os.path.exists(result_path):
            with open(result_path, encoding="utf-8") as f:
                return LoadResult(**json.load(f))
        return _died(request, f"the fresh loader process died ({_describe_status(done['status'])})")

    def start(self) -> None:
        """Start the zygote now, so its warm-up overlaps with building the first model."""
        self._ensure_started()

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def __enter__(self) -> "FreshLoader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure_started(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
            stderr = None
            if self._log_path:
                os.makedirs(os.path.dirname(self._log_path), exist_ok=True)
                stderr = open(self._log_path, "ab")  # noqa: SIM115 - handed to the child
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "exporter.freshload"], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=stderr, env=env, start_new_session=True)
            finally:
                if stderr is not None:
                    stderr.close()
        return self._proc

    def _read(self, proc: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any] | None:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        if not ready:
            return None
        line = proc.stdout.readline()
        return json.loads(line) if line else None


def check_in_process(request: LoadRequest) -> LoadResult:
    """The same check in this process (``repro`` uses it to show full tracebacks)."""
    return _check(request)


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"killed by signal {signal.Signals(sig).name}"
    return f"exit code {os.WEXITSTATUS(status)}"


def _died(request: LoadRequest, message: str) -> LoadResult:
    from exporter.taxonomy import Failure
    category = "DESERIALIZE_ERROR" if request.kind == "export" else "AOTI_COMPILE_ERROR"
    return LoadResult(False, asdict(Failure.make(category, _stage(request), message,
                                                 exception_type="WorkerCrash")))


def serve() -> None:
    """The zygote's loop: one JSON request per line in, two JSON lines per request out."""
    threads = _warm_up()
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)         # torch may print: keep stdout for the protocol only
    _serve(sys.stdin, protocol, threads, imported=None)


def _serve(requests: Any, protocol: Any, threads: int, imported: tuple[str, ...] | None) -> None:
    """Answer requests: fork a child per check.  The clean zygote (``imported`` None) hands a
    check that needs libraries imported (the pytree owners of its program) to a sub-zygote
    forked for exactly that set of libraries, which imports them once and forks the checks'
    children itself: every check sees exactly its own libraries, never those an earlier check
    imported (a library's import can register custom operators a program needs, which would
    make the verdict depend on the order of the sweep)."""
    subs: dict[tuple[str, ...], _SubZygote] = {}
    for line in requests:
        message = json.loads(line)
        request = message["request"]
        imports = tuple(sorted(set(request.get("imports", ()))))
        if imported is None and imports and _forkable(request):
            sub = subs.get(imports)
            if sub is None or not sub.alive():
                sub = subs[imports] = _SubZygote.start(imports, threads, list(subs.values()))
            if not sub.relay(line, protocol):
                del subs[imports]
            continue
        if _forkable(request):
            pid = os.fork()
            if pid == 0:
                _child(LoadRequest(**request), message["result"], threads)
        else:
            pid = _spawn(message, threads)
        protocol.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        protocol.write(json.dumps({"pid": pid, "status": status}) + "\n")


@dataclass
class _SubZygote:
    """A fork of the clean zygote that imported one set of libraries (see :func:`_serve`)."""

    pid: int
    requests: Any          # the pipe we write requests to
    answers: Any           # the pipe it answers on

    @classmethod
    def start(cls, imports: tuple[str, ...], threads: int,
              others: list["_SubZygote"]) -> "_SubZygote":
        requests_r, requests_w = os.pipe()     # zygote -> sub-zygote
        answers_r, answers_w = os.pipe()       # sub-zygote -> zygote
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(requests_w)
                os.close(answers_r)
                for other in others:           # their pipes are not ours to hold open
                    other.requests.close()
                    other.answers.close()
                sys.stdin.close()
                _import_libraries(imports)
                _serve(os.fdopen(requests_r), os.fdopen(answers_w, "w", buffering=1), threads,
                       imported=imports)
            except BaseException:  # noqa: BLE001 - the zygote reports a dead sub-zygote
                code = 1
            finally:
                os._exit(code)
        os.close(requests_r)
        os.close(answers_w)
        return cls(pid, os.fdopen(requests_w, "w", buffering=1), os.fdopen(answers_r))

    def alive(self) -> bool:
        try:
            return os.waitpid(self.pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:
            return False

    def relay(self, line: str, protocol: Any) -> bool:
        """Pass one request on and its two answers back; False when the sub-zygote is gone
        (then answered as a child that died, and the next request starts a new one)."""
        try:
            self.requests.write(line)
            self.requests.flush()
            for _ in range(2):
                answer = self.answers.readline()
                if not answer:
                    raise BrokenPipeError("sub-zygote closed its pipe")
                protocol.write(answer)
            return True
        except OSError:
            protocol.write(json.dumps({"pid": 0}) + "\n")
            protocol.write(json.dumps({"pid": 0, "status": 1 << 8}) + "\n")
            return False


def _forkable(request: dict[str, Any]) -> bool:
    """Whether a fork of the zygote can run this check.  Asking torch whether CUDA is
    available (the warm-up's fake tensors do) poisons fork for CUDA, so a check that runs
    on CUDA needs a new interpreter."""
    return request.get("device", "cpu") == "cpu"


def _spawn(message: dict[str, Any], threads: int) -> int:
    """Start a new interpreter for one check (``--child``); returns its pid for waitpid."""
    argv = [sys.executable, "-m", "exporter.freshload", "--child", json.dumps(message),
            str(threads)]
    # stdin is the request pipe: not the child's (stdout already goes to stderr, and the
    # protocol's descriptor is not inherited).
    return os.posix_spawn(sys.executable, argv, os.environ, file_actions=[
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)])


def _spawned_child(message: dict[str, Any], threads: int) -> None:
    _import_libraries(message["request"].get("imports", ()))
    _child(LoadRequest(**message["request"]), message["result"], threads)


# A pytree type in a program's signature, as torch writes it into models/*.json (the spec
# is a JSON string inside JSON, hence the optional escaped quotes).
_TYPE_NAME = re.compile(r'type\\?"\s*:\s*\\?"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)')
_NOT_OWNERS = ("builtins.", "collections.", "torch.", "typing.")


def pytree_owner_modules(path: str, exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Importable library modules that define the pytree types of a saved program's inputs
    and outputs (e.g. ``transformers.modeling_outputs``).

    Any consumer of the program must import those to load it, so the reload process may
    too; the model's own module (``exclude``) is never imported, which keeps registrations
    made by model code (custom ops) out of the reload process.
    """
    names: set[str] = set()
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if "/models/" in member and member.endswith(".json"):
                    names.update(_TYPE_NAME.findall(archive.read(member).decode("utf-8", "replace")))
    except (OSError, zipfile.BadZipFile):
        return ()
    modules = sorted({n.rsplit(".", 1)[0] for n in names if not n.startswith(_NOT_OWNERS)})
    return tuple(m for m in modules
                 if not any(m == x or m.startswith(x + ".") for x in exclude) and _findable(m))


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False


def _import_libraries(modules: Any) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the load itself will report what is missing
            pass


def _warm_up() -> int:
    """Pay torch's import and the lazy imports of save/load once, before any fork.

    The warm-up runs single-threaded so that no OpenMP pool exists when we fork; each
    child gets the configured thread count back.
    """
    import torch

    for module in ("exporter.numerics", "exporter.taxonomy"):  # what every child imports
        importlib.import_module(module)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="exportsweep-warmup-") as tmp:
        path = os.path.join(tmp, "warmup.pt2")
        ep = torch.export.export(torch.nn.Linear(2, 2), (torch.ones(1, 2),))
        torch.export.save(ep, path)
        with torch.no_grad():
            torch.export.load(path).module()(torch.ones(1, 2))
        # A program with a buffer, a dynamic dim and a dict output: its load pays the lazy
        # parts of deserialising symbolic shapes and pytree specs once, here.
        path = os.path.join(tmp, "warmup-dynamic.pt2")
        batch = torch.export.Dim("batch", min=1, max=64)
        example = (torch.ones(3, 4), torch.zeros(3, 4, dtype=torch.bool))
        ep = torch.export.export(_warm_up_module(), example,
                                 dynamic_shapes=({0: batch}, {0: batch}))
        torch.export.save(ep, path)
        with torch.no_grad():
            torch.export.load(path).module()(torch.ones(5, 4), torch.zeros(5, 4, dtype=torch.bool))
    return threads


def _warm_up_module() -> Any:
    import torch

    class WarmUp(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)
            self.register_buffer("offset", torch.zeros(4))

        def forward(self, x: Any, mask: Any) -> Any:
            y = torch.nn.functional.gelu(self.lin(x)).softmax(-1) + self.offset
            return {"y": y.masked_fill(mask, 0.0), "rows": x.shape[0] * 2}

    return WarmUp()


def _child(request: LoadRequest, result_path: str, threads: int) -> None:
    code = 0
    try:
        import torch
        torch.set_num_threads(threads)
        try:
            result = _check(request)
        except BaseException as exc:   # noqa: BLE001 - nothing may escape unclassified
            from exporter.taxonomy import classify_exception
            result = LoadResult(False, asdict(classify_exception(exc, f"{_stage(request)}.load")))
        with open(result_path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(asdict(result), f)
        os.replace(result_path + ".tmp", result_path)
    except BaseException:  # noqa: BLE001
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# -- in the child ------------------------------------------------------------------------------

def _stage(request: LoadRequest) -> str:
    return "serialize" if request.kind == "export" else "aoti"


def _check(request: LoadRequest) -> LoadResult:
    import torch

    from exporter import numerics
    from exporter.taxonomy import Failure, classify_exception

    stage = _stage(request)
    data = torch.load(request.data, weights_only=True)
    t0 = time.perf_counter()
    try:
        # Inputs first: that also initialises the device in this new process before the
        # load.  AOTInductor's CUDA runner does not, and crashes (SIGSEGV) when it is the
        # first to touch CUDA (seen on torch 2.11).
        inputs = inputs_on(data["inputs"], request.device)
        run, in_spec = (_load_export(request.artifact) if request.kind == "export"
                        else _load_aoti(request.artifact, request.device))
        args, kwargs = numerics.pytree.tree_unflatten(inputs, in_spec)
    except Exception as exc:  # noqa: BLE001
        return LoadResult(False, asdict(classify_exception(exc, f"{stage}.load")),
                          load_s=time.perf_counter() - t0)
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    try:
        # The same seed as the eager reference: a model that draws random numbers in its
        # forward (noise, masking, train-mode dropout) must draw the same ones here.
        torch.manual_seed(request.seed)
        with torch.no_grad():
            out = run(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        return LoadResult(False, asdict(classify_exception(exc, f"{stage}.run")), load_s=load_s,
                          run_s=time.perf_counter() - t1)
    run_s = time.perf_counter() - t1
    leaves, _ = numerics.flatten(out)
    cmp = numerics.compare_leaves(data["expected"], leaves, request.atol, request.rtol,
                                  (lambda: data["reference64"]) if "reference64" in data else None)
    failure = None
    if not cmp.ok:
        category = "ROUNDTRIP_MISMATCH" if request.kind == "export" else "AOTI_MISMATCH"
        failure = asdict(Failure.make(category, stage, cmp.detail))
    return LoadResult(cmp.ok, failure, cmp.max_abs_err, cmp.max_rel_err, load_s, run_s,
                      cmp.float64)


def inputs_on(leaves: list[Any], device: str) -> list[Any]:
    """The saved input leaves (always written from the CPU) on the program's device."""
    import torch
    if device == "cpu":
        return leaves
    return [x.to(device) if isinstance(x, torch.Tensor) else x for x in leaves]


def _load_export(path: str) -> tuple[Any, Any]:
    import torch
    try:
        ep = torch.export.load(path)
    except Exception as generic:
        real = _real_load_error(path)
        if real is not None:
            raise real from generic
        raise
    return ep.module(), ep.call_spec.in_spec


def _real_load_error(path: str) -> BaseException | None:
    """torch.export.load hides the real SerializeError behind a generic RuntimeError and a
    logged warning; the lower-level loader (private, feature-detected) raises it directly."""
    try:
        from torch.export.pt2_archive._package import load_pt2
    except ImportError:
        return None
    records: list[logging.LogRecord] = []
    handler = _ListHandler(records)
    logging.getLogger("torch").addHandler(handler)
    try:
        load_pt2(path)
    except Exception as exc:  # noqa: BLE001
        return exc
    finally:
        logging.getLogger("torch").removeHandler(handler)
    for record in records:
        if record.exc_info and record.exc_info[1] is not None:
            return record.exc_info[1]
    return None


class _ListHandler(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.WARNING)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _load_aoti(path: str, device: str) -> tuple[Any, Any]:
    import torch
    from exporter import numerics

    compiled = torch._inductor.aoti_load_package(path)
    in_spec_text = compiled.loader.get_call_spec()[0]
    return compiled, numerics.pytree.treespec_loads(in_spec_text)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _spawned_child(json.loads(sys.argv[2]), int(sys.argv[3]))
    else:
        serve()
