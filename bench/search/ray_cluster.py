"""A real Ray cluster on one machine: a head node plus a second node, then searches run
against it with `ray.address: auto`; and the same with the second node stopped midway.

- `search_on_cluster`: the second node holds the hardware target. Checks where things
  ran: accuracy trials on both nodes, latency measurements only on the target's node.
- `search_losing_a_node`: the second node, a plain worker node, is stopped (its whole
  `ray start` process group, as `ray stop` on it would) while its workers hold jobs. The
  search must complete on the head with nothing lost and no arch evaluated twice.
- `search_losing_the_target`: the node that holds the target is stopped in the middle of
  a latency measurement. The search must stop with one line (exit 1), and, once a node
  holding the target is back, `elastiq resume` must complete the study.

The moments come from progress (files the workers and the measurement write, see
`tests/orchestrator/faults.py:digits_meeting`), not from the clock. Every node is a
`ray start --block` process started here and stopped here, by pid.

    .venv/bin/python bench/search/ray_cluster.py --config STUDY.yaml [--scenario placement|lose-node|lose-target]

`tests/orchestrator/test_ray_cluster.py` runs them on the tiny space.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
MEETING_TASK = "tests.orchestrator.faults:digits_meeting"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Nodes of a local Ray cluster sharing a fresh token (Ray authenticates cluster traffic by token)."""

    def __init__(self, cpus_per_node: int = 2):
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    "RAY_ADDRESS": self.address, "RAY_worker_niceness": "0"}  # as the README's recipe says
        self._common = ["--block", f"--num-cpus={cpus_per_node}", "--disable-usage-stats",
                        "--node-ip-address=127.0.0.1"]
        self._processes: list[subprocess.Popen] = []
        self.head = self._start(["--head", f"--port={port}", "--include-dashboard=false"], expected=1)

    def _start(self, args: list[str], expected: int) -> str:
        before = {n["id"] for n in self.nodes()} if self._processes else set()
        self._processes.append(subprocess.Popen(
            [RAY, "start", *args, *self._common], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, env=self.env))
        while len(nodes := self.nodes()) < expected:  # no deadline: a node comes up or the test times out
            if self._processes[-1].poll() is not None:
                raise RuntimeError(f"ray start {' '.join(args)} exited with {self._processes[-1].returncode}")
            time.sleep(0.5)
        return next(n["id"] for n in nodes if n["id"] not in before)

    def add_node(self, resources: dict[str, float] | None = None) -> str:
        """A second node (holding `resources`); its node id."""
        extra = [f"--resources={json.dumps(resources)}"] if resources else []
        return self._start([f"--address={self.address}", *extra], expected=len(self.nodes()) + 1)

    def stop_last_node(self) -> None:
        """Stop the node added last: its whole process group, raylet and workers with it."""
        process = self._processes.pop()
        _stop(process)
        while len(self.nodes()) > len(self._processes):  # until the head knows it is gone
            time.sleep(0.5)

    def nodes(self) -> list[dict]:
        code = (f"import json, ray; ray.init(address={self.address!r}, logging_level='ERROR'); "
                "print(json.dumps([{'id': n['NodeID'], 'resources': n['Resources']} "
                "for n in ray.nodes() if n['Alive']]))")
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=self.env)
        return json.loads(run.stdout.strip().splitlines()[-1]) if run.returncode == 0 and run.stdout.strip() else []

    def close(self) -> None:
        """The end of the cluster: every node's process group killed outright (a graceful stop of the
        head takes half a minute, and nothing of it is kept)."""
        for process in reversed(self._processes):
            _stop(process, signal.SIGKILL)
        self._processes.clear()


def _stop(process: subprocess.Popen, how: signal.Signals = signal.SIGTERM) -> None:
    try:
        os.killpg(process.pid, how)
        process.wait(timeout=60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass


@contextmanager
def cluster(cpus_per_node: int = 2):
    running = Cluster(cpus_per_node)
    try:
        yield running
    finally:
        running.close()


def _elastiq(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from orchestrator.cli import main; sys.exit(main())", *args]


def _search_command(config: Path, workers: int, measure: bool, *extra: str) -> list[str]:
    return _elastiq("search", "-c", str(config), "--no-progress", "--set", "ray.address=auto", "--set",
                    f"ray.workers={workers}", "--set", "search.executor=ray", "--set",
                    f"search.measure_latency={str(measure).lower()}", *extra)


def _meeting(rendezvous: Path, workers: int, stall: bool = False) -> str:
    options = {"rendezvous": str(rendezvous), "workers": workers, "stall_measurement": stall}
    return "task=" + json.dumps({"name": MEETING_TASK, "options": options})  # JSON is YAML


def _trials(data: dict) -> list:
    import optuna

    return optuna.load_study(study_name=data["study"], storage=data["storage"]).get_trials(deepcopy=False)


def _summary(data: dict, roles: dict[str, str]) -> dict:
    trials = _trials(data)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    keys = [t.user_attrs["arch_key"] for t in complete]
    return {"complete": len(complete), "budget": data["search"]["evaluations"],
            "archs_evaluated_twice": len(keys) - len(set(keys)),
            "failed": sum(t.state.name == "FAIL" for t in trials),
            "running_left": sum(t.state.name == "RUNNING" for t in trials),
            "evaluated_on": dict(Counter(roles.get(t.user_attrs["eval_node"], "other")
                                         for t in trials if "eval_node" in t.user_attrs)),
            "measured_on": dict(Counter(roles.get(t.user_attrs["measure_node"], "other")
                                        for t in trials if "measure_node" in t.user_attrs)),
            "results": sorted((t.user_attrs["arch_key"], tuple(t.values)) for t in complete)}


def search_on_cluster(config: Path, workers: int = 4) -> dict:
    """Accuracy trials on both nodes, latency measured only on the one holding the target."""
    data = yaml.safe_load(config.read_text())
    with tempfile.TemporaryDirectory() as rendezvous, cluster() as nodes:
        target = nodes.add_node({f"elastiq_target_{data['target']['name']}": 1})
        run = subprocess.run(_search_command(config, workers, True, "--set", _meeting(Path(rendezvous), workers)),
                             cwd=ROOT, env=nodes.env, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"search failed: {run.stderr[-2000:]}")
    return _summary(data, {nodes.head: "head", target: "target node"})


def search_losing_a_node(config: Path, workers: int = 4) -> dict:
    """The worker node stopped while its workers hold jobs; the search must complete on the head."""
    data = yaml.safe_load(config.read_text())
    with tempfile.TemporaryDirectory() as rendezvous, cluster() as nodes:
        second = nodes.add_node()
        search = subprocess.Popen(_search_command(config, workers, False, "--set", _meeting(Path(rendezvous), workers)),
                                  cwd=ROOT, env=nodes.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while len(list(Path(rendezvous).glob("worker-*"))) < workers:  # every worker holds a job
            if search.poll() is not None:
                raise RuntimeError(f"search ended before the node was stopped: {search.stderr.read()[-2000:]}")
            time.sleep(0.2)
        nodes.stop_last_node()
        out, err = search.communicate()
        summary = _summary(data, {nodes.head: "head", second: "stopped node"})
    return {**summary, "exit": search.returncode, "stderr": err[-2000:], "stdout": out[-500:]}


def search_losing_the_target(config: Path, workers: int = 4) -> dict:
    """The target's node stopped in the middle of a measurement: one line, exit 1; a node holding the
    target comes back and `elastiq resume` completes the study."""
    data = yaml.safe_load(config.read_text())
    resource = f"elastiq_target_{data['target']['name']}"
    with tempfile.TemporaryDirectory() as rendezvous, cluster() as nodes:
        first_target = nodes.add_node({resource: 1})
        search = subprocess.Popen(
            _search_command(config, workers, True, "--set", _meeting(Path(rendezvous), workers, stall=True)),
            cwd=ROOT, env=nodes.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while not list(Path(rendezvous).glob("measuring-*")):  # a measurement is under way on the target
            if search.poll() is not None:
                raise RuntimeError(f"search ended before its first measurement: {search.stderr.read()[-2000:]}")
            time.sleep(0.2)
        nodes.stop_last_node()
        _, err = search.communicate()
        stopped = {"exit": search.returncode, "error_lines": [line for line in err.splitlines() if "error:" in line],
                   "stderr": err[-3000:],
                   "complete": sum(t.state.name == "COMPLETE" for t in _trials(data)),
                   "running": sum(t.state.name == "RUNNING" for t in _trials(data))}
        second_target = nodes.add_node({resource: 1})
        resume = subprocess.run(_elastiq("resume", "--storage", data["storage"], "--study", data["study"],
                                         "--no-progress"), cwd=ROOT, env=nodes.env, capture_output=True, text=True)
        summary = _summary(data, {nodes.head: "head", first_target: "stopped target node",
                                  second_target: "new target node"})
    return {**summary, "stopped": stopped, "resume_exit": resume.returncode, "resume_stderr": resume.stderr[-2000:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--scenario", choices=["placement", "lose-node", "lose-target"], default="placement")
    args = parser.parse_args()
    run = {"placement": search_on_cluster, "lose-node": search_losing_a_node,
           "lose-target": search_losing_the_target}[args.scenario]
    print(json.dumps(run(Path(args.config), args.workers), indent=2))


if __name__ == "__main__":
    main()
