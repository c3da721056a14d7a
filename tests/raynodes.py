"""A real multi-node Ray cluster on this machine, one `ray start --block` process per node.

Each node runs in its own process session, so it can be stopped alone (SIGTERM makes
`ray start --block` stop its node's processes, as `ray stop` does on a machine of its own)
and everything is cleaned up even when a test fails.  Used by tests/test_jobs.py and
bench/cluster_submit.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Node:
    name: str
    args: list[str]
    process: subprocess.Popen | None = None
    node_id: str | None = None


@dataclass
class LocalRayCluster:
    """``head`` holds no CPU (like KubeRay's head with num-cpus "0"); workers as given."""

    workers: dict[str, dict[str, float]]          # name -> {"cpus": n, "gpus": n}
    temp_dir: str
    gcs_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    nodes: dict[str, Node] = field(default_factory=dict)
    log_dir: str = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, timeout_s: float = 120) -> "LocalRayCluster":
        self.log_dir = self.log_dir or os.path.join(self.temp_dir, "node-logs")
        os.makedirs(self.log_dir, exist_ok=True)
        common = ["--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
        head = Node("head", ["--head", f"--port={self.gcs_port}", "--num-cpus=0", "--num-gpus=0",
                             "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                             f"--dashboard-port={self.dashboard_port}",
                             f"--temp-dir={self.temp_dir}",
                             "--object-store-memory=100000000", *common])
        self.nodes["head"] = head
        self._launch(head)
        self._wait_nodes(1, timeout_s)
        for name, res in self.workers.items():
            node = Node(name, [f"--address={self.address}", f"--num-cpus={res.get('cpus', 1):g}",
                               f"--num-gpus={res.get('gpus', 0):g}",
                               "--object-store-memory=80000000", *common])
            self.nodes[name] = node
            self._launch(node)
            self._wait_nodes(len(self.nodes), timeout_s)
        self._learn_node_ids()
        return self

    def _launch(self, node: Node) -> None:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        # As on a real node, the environment's python is the one on PATH (a job's `python`).
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        log = open(os.path.join(self.log_dir, f"{node.name}.log"), "ab")  # noqa: SIM115
        node.process = subprocess.Popen([RAY, "start", *node.args], stdout=log, stderr=log,
                                        env=env, start_new_session=True)
        log.close()

    def alive_nodes(self) -> list[dict]:
        from ray.util.state import list_nodes
        try:
            return [n for n in list_nodes(address=self.dashboard, raise_on_missing_output=False,
                                          detail=True)
                    if n.state == "ALIVE"]
        except Exception:           # noqa: BLE001 - the dashboard is still coming up
            return []

    def _wait_nodes(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.alive_nodes()) < count:
            for node in self.nodes.values():
                if node.process and node.process.poll() is not None:
                    raise RuntimeError(f"ray node {node.name} exited: see {self.log_dir}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} Ray nodes not alive after {timeout_s}s")
            time.sleep(1)

    def _learn_node_ids(self) -> None:
        for n in self.alive_nodes():
            res = n.resources_total or {}
            if n.is_head_node:
                self.nodes["head"].node_id = n.node_id
                continue
            for node in self.nodes.values():
                if node.name == "head" or node.node_id:
                    continue
                want = self.workers[node.name]
                if res.get("GPU", 0) == want.get("gpus", 0) and \
                        res.get("CPU", 0) == want.get("cpus", 1) and \
                        n.node_id not in {x.node_id for x in self.nodes.values()}:
                    node.node_id = n.node_id
                    break

    def stop_node(self, name: str, timeout_s: float = 16) -> None:
        """`ray stop` for one node: SIGTERM to every process of the node at once (the raylet
        included, which unregisters the node), then SIGKILL for what is left after `ray
        stop`'s own grace period (16 s)."""
        node = self.nodes[name]
        if node.process is None or node.process.poll() is not None:
            return
        sid = node.process.pid
        _signal_session(sid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _session_pids(sid) and time.monotonic() < deadline:
            time.sleep(0.2)
        _signal_session(sid, signal.SIGKILL)
        node.process.wait(timeout=10)

    def shutdown(self) -> None:
        for name in reversed(list(self.nodes)):
            self.stop_node(name)


def _session_pids(sid: int) -> list[int]:
    pids = []
    for pid_dir in Path("/proc").iterdir():
        if pid_dir.name.isdigit():
            try:
                if os.getsid(int(pid_dir.name)) == sid:
                    pids.append(int(pid_dir.name))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


def _signal_session(sid: int, sig: int) -> None:
    for pid in _session_pids(sid):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue
