"""A real Ray cluster on one machine: a head node plus a second node that holds the
hardware target, then a search with `ray.address: auto` run against it.

Checks where things ran: accuracy trials on both nodes, latency measurements only
on the node with the target's custom resource. Both nodes are `ray start --block`
processes started here and stopped here, by pid.

    .venv/bin/python bench/ray_cluster.py --config STUDY.yaml

`tests/orchestrator/test_ray_cluster.py` runs it on the tiny space.
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
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nodes(address: str, env: dict[str, str]) -> list[dict]:
    code = (f"import json, ray; ray.init(address={address!r}, logging_level='ERROR'); "
            "print(json.dumps([{'id': n['NodeID'], 'resources': n['Resources']} for n in ray.nodes() if n['Alive']]))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    return json.loads(run.stdout.strip().splitlines()[-1]) if run.returncode == 0 and run.stdout.strip() else []


@contextmanager
def cluster(target_resource: str, cpus_per_node: int = 2):
    """(address, environment, head node id, target node id) of a two-node cluster, stopped on exit.
    Its nodes and clients share a fresh token (Ray authenticates cluster traffic by token)."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_ADDRESS": address}
    common = ["--block", f"--num-cpus={cpus_per_node}", "--disable-usage-stats", "--node-ip-address=127.0.0.1"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True, "env": env}
    processes = [subprocess.Popen([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
                                  **quiet)]
    try:
        deadline = time.monotonic() + 120
        while not _nodes(address, env):
            if time.monotonic() > deadline:
                raise RuntimeError("the head node did not come up")
        processes.append(subprocess.Popen(
            [RAY, "start", f"--address={address}", f"--resources={json.dumps({target_resource: 1})}", *common],
            **quiet))
        while len(nodes := _nodes(address, env)) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the second node did not join")
        target = next(n["id"] for n in nodes if target_resource in n["resources"])
        head = next(n["id"] for n in nodes if n["id"] != target)
        yield address, env, head, target
    finally:
        for process in reversed(processes):  # only what this started, by pid (its whole session)
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def search_on_cluster(config: Path, workers: int = 4) -> dict:
    import optuna

    data = yaml.safe_load(config.read_text())
    target = data["target"]["name"]
    with cluster(f"elastiq_target_{target}") as (_, env, head, target_node):
        command = [sys.executable, "-c", "import sys; from orchestrator.cli import main; sys.exit(main())", "search",
                   "-c", str(config), "--no-progress", "--set", "ray.address=auto", "--set", f"ray.workers={workers}",
                   "--set", "search.executor=ray", "--set", "search.measure_latency=true"]
        run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        if run.returncode != 0:
            raise RuntimeError(f"search failed: {run.stderr[-2000:]}")
    trials = optuna.load_study(study_name=data["study"], storage=data["storage"]).get_trials(deepcopy=False)
    evaluated = Counter(t.user_attrs.get("eval_node") for t in trials if "eval_node" in t.user_attrs)
    measured = Counter(t.user_attrs.get("measure_node") for t in trials if "measure_node" in t.user_attrs)
    role = {head: "head", target_node: "target node"}
    return {"evaluated_on": {role.get(k, k): v for k, v in evaluated.items()},
            "measured_on": {role.get(k, k): v for k, v in measured.items()},
            "complete": sum(t.state.name == "COMPLETE" for t in trials)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    print(json.dumps(search_on_cluster(Path(args.config), args.workers), indent=2))


if __name__ == "__main__":
    main()
