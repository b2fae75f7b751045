"""`up`, `down` and `status` of the network-namespace lab: the one place that wires the lab together.

    up:  refuse if a lab (or its leftovers) is there; check inventory + policy (file:line errors)
         -> state dir + marker ------------------------------------ state.json saved after each step
         -> admin token (`microseg token create`, in the background while the network is made)
         -> cgroup <cgroup2>/<prefix> -> bridge <prefix>0 10.77.0.1/16 -> per host: netns + veth
         -> `microseg server --host 10.77.0.1` (detached) -> services (real processes per host)
         -> /healthz -> POST /apply (inventory + policy) -> POST /versions -> enrollment tokens
         -> agents (one per host, optional; until all are in sync) -> traffic generator -> complete
    down: stop every lab process (marker env, lab namespaces, lab cgroup; SIGTERM then SIGKILL and
          cgroup.kill) -> delete namespaces, links, bridge -> cgroup dirs -> state dir

A failure anywhere in `up` runs `down` before the error goes on, and `down` needs nothing but the
prefix and the state directory, so it also cleans up after an `up` that was killed half way or a
state file that was lost. It is idempotent: a second `down` finds nothing and says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from microseg import errors
from microseg.lab import (
    cgroups,
    control,
    identity,
    inventory,
    network,
    options,
    processes,
    service,
    state,
    topology,
)
from microseg.lab import traffic as traffic_gen

STATE_MARKER = ".microseg-lab"
"""A file in the state directory saying a lab made it: `down` deletes only such directories."""


@dataclass
class Removed:
    """What `down` found and removed."""

    processes: int = 0
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    cgroup: str = ""
    state_dir: str = ""

    def __bool__(self) -> bool:
        return bool(self.processes or self.namespaces or self.links or self.cgroup or self.state_dir)


# --- up ---------------------------------------------------------------------------------------------


def up(
    top: topology.Topology | None = None, opts: options.LabOptions | None = None, *, replace: bool = False
) -> state.LabState:
    """Make the lab of `top` (default: the shipped CRM lab) with `opts` (default: from the environment);
    its state once everything runs. On any failure nothing is left."""
    top = top or topology.load(topology.default_path())
    opts = opts or options.LabOptions.from_env()
    _require_root()
    if replace:
        down(opts)
    _refuse_if_present(opts)
    policy = [Path(p) for p in opts.policy] or [topology.default_policy_dir()]
    documents = inventory.documents(top, opts.mode, policy)  # a wrong policy stops us before anything exists
    lab = state.new(top, opts, time.time())
    _make_state_dir(opts)
    inventory.write(top, opts.mode, Path(opts.state_dir, "inventory.yaml"))
    lab.save()
    try:
        _build(lab, top, opts, documents)
    except BaseException:
        with contextlib.suppress(Exception):  # the original error matters more than a cleanup one
            down(opts)
        raise
    return lab


def _build(
    lab: state.LabState, top: topology.Topology, opts: options.LabOptions, documents: list[dict[str, Any]]
) -> None:
    names = opts.names
    tree = cgroups.CgroupTree.find(names.prefix)
    with _TokenJob(opts) as token_job:
        lab.cgroup = str(tree.path())
        tree.make()
        lab.save()
        _make_network(lab, top, names)
        lab.token = token_job.result()
    _start_server(lab, opts, tree)
    _start_services(lab, top, opts, tree)
    plane = control.ControlPlane(lab.server, lab.token)
    try:
        plane.wait_ready(
            lambda: processes.alive(lab.pids["server"]), opts.startup_timeout, _log(opts, "server")
        )
        _provision(lab, top, opts, plane, documents)
        if opts.agents:
            _start_agents(lab, opts, tree)
            _wait_in_sync(lab, opts, plane)
    finally:
        plane.close()
    if opts.traffic and top.flows():
        _start_traffic(lab, top, opts, tree)
    lab.complete = True
    lab.save()


def _require_root() -> None:
    if os.geteuid() != 0:
        raise errors.UserError("the lab needs root (it makes network namespaces, a bridge and cgroups)")


def _refuse_if_present(opts: options.LabOptions) -> None:
    names = opts.names
    if opts.state_file.exists():
        raise errors.UserError(
            f"a lab is already up (state file {opts.state_file}); run `microseg lab down` first, "
            "or `microseg lab up --replace`"
        )
    leftovers = [*network.namespaces(names), *network.links(names)]
    tree = cgroups.CgroupTree.find(names.prefix)
    if tree.exists():
        leftovers.append(str(tree.path()))
    if leftovers:
        raise errors.UserError(
            f"leftovers of an earlier lab are still there ({', '.join(leftovers)}); run `microseg lab down`"
        )
    network.check_free(names)
    directory = Path(opts.state_dir)
    if directory.exists() and any(directory.iterdir()) and not (directory / STATE_MARKER).exists():
        raise errors.UserError(
            f"{directory} exists and was not made by a lab; choose another state directory"
        )


def _make_state_dir(opts: options.LabOptions) -> None:
    directory = Path(opts.state_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    (directory / STATE_MARKER).write_text(f"{opts.prefix}\n")
    for sub in ("logs", "server", "services", "traffic", "agents"):
        (directory / sub).mkdir(mode=0o700, exist_ok=True)


def _env(opts: options.LabOptions, host: str | None = None) -> dict[str, str]:
    """The environment of every lab process: the caller's plus the lab marker (and the host)."""
    env = {**os.environ, options.MARKER: opts.prefix}
    if host is not None:
        env[options.HOST_VARIABLE] = host
    return env


def _log(opts: options.LabOptions, name: str) -> str:
    return str(Path(opts.state_dir, "logs", f"{name}.log"))


class _TokenJob:
    """`microseg token create --role admin` running while the network is being made."""

    def __init__(self, opts: options.LabOptions) -> None:
        command = [
            opts.python,
            "-m",
            "microseg",
            "token",
            "create",
            "--role",
            "admin",
            "--name",
            "lab-admin",
            "--data-dir",
            str(Path(opts.state_dir, "server")),
            "--init",
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(opts)
        )

    def result(self) -> str:
        """The token it printed."""
        out, err = self.process.communicate(timeout=60)
        if self.process.returncode != 0 or not out.strip():
            raise errors.PermanentError(f"microseg token create failed: {err.strip()[-2000:]}")
        return out.strip().splitlines()[-1]

    def __enter__(self) -> _TokenJob:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()


def _make_network(lab: state.LabState, top: topology.Topology, names: options.LabNames) -> None:
    lab.bridge = names.bridge
    lab.links.append(names.bridge)
    lab.save()
    network.create_bridge(names)
    for index, (host, recorded) in enumerate(zip(top.hosts, lab.hosts, strict=True), start=1):
        recorded.veth = names.veth(index)
        lab.namespaces.append(recorded.netns)
        lab.links.append(recorded.veth)
        lab.save()
        network.create_namespace(recorded.netns)
        network.attach(recorded.netns, recorded.veth, host.address, names.bridge)


def _start_server(lab: state.LabState, opts: options.LabOptions, tree: cgroups.CgroupTree) -> None:
    address = str(topology.GATEWAY)
    command = [
        opts.python,
        "-m",
        "microseg",
        "server",
        "--host",
        address,
        "--port",
        str(opts.port),
        "--data-dir",
        str(Path(opts.state_dir, "server")),
        "--log-level",
        "warning",
    ]
    env = _env(opts)
    if opts.hook_secrets:
        env["MICROSEG_HOOK_SECRETS"] = ",".join(opts.hook_secrets)
    pid = processes.spawn(command, env=env, log=Path(_log(opts, "server")), cgroup_procs=tree.make("server"))
    lab.pids["server"] = pid
    lab.server = f"http://{address}:{opts.port}"
    lab.save()


def _start_services(
    lab: state.LabState, top: topology.Topology, opts: options.LabOptions, tree: cgroups.CgroupTree
) -> None:
    """Every host's services, through one launcher that returns once all of them listen."""
    specs = []
    for host, recorded in zip(top.hosts, lab.hosts, strict=True):
        Path(opts.state_dir, "services", host.name).mkdir(mode=0o700, exist_ok=True)
        for svc in host.services:
            key = f"{host.name}/{svc.process}/{svc.protocol}/{svc.port}"
            place = _place(recorded.netns, tree, host.name, svc.process)
            counter = str(lab.counter_file(host.name, svc.port, svc.protocol))
            specs.append(service.ServiceProcess(key, place, svc.port, svc.protocol, counter))
    spec_file = Path(opts.state_dir, "services.json")
    spec = {
        "services": [s.to_dict() for s in specs],
        "log": _log(opts, "services"),
        "timeout": opts.startup_timeout,
    }
    spec_file.write_text(json.dumps(spec))
    done = subprocess.run(
        [opts.python, "-m", "microseg.lab.service", str(spec_file)],
        capture_output=True,
        text=True,
        env=_env(opts),
        timeout=opts.startup_timeout + 30,
        check=False,
    )
    if done.returncode != 0:
        raise errors.PermanentError(f"the lab's services did not start: {done.stderr.strip()[-2000:]}")
    for key, pid in json.loads(done.stdout).items():
        host, _, rest = key.partition("/")
        lab.host(host).pids[rest] = pid
        lab.pids[key] = pid
    lab.save()


def _place(netns: str, tree: cgroups.CgroupTree, host: str, process: str) -> identity.Place:
    return identity.Place(netns, str(tree.make(host, process)), process)


def _provision(
    lab: state.LabState,
    top: topology.Topology,
    opts: options.LabOptions,
    plane: control.ControlPlane,
    documents: list[dict[str, Any]],
) -> None:
    """The inventory and policy, one provisioned version, one enrollment token per host."""
    plane.apply(documents)
    plane.provision(f"microseg lab up: {top.file}")
    for host in lab.hosts:
        host.enroll_token = plane.enrollment_token(f"lab-{host.name}", host.labels, opts.mode, host.name)
    lab.save()


def _start_agents(lab: state.LabState, opts: options.LabOptions, tree: cgroups.CgroupTree) -> None:
    for host in lab.hosts:
        agent_dir = Path(opts.state_dir, "agents", host.name)
        agent_dir.mkdir(mode=0o700, exist_ok=True)
        command = [
            opts.python,
            "-m",
            "microseg",
            "agent",
            "--server",
            lab.server,
            "--enroll-token",
            host.enroll_token,
            "--netns",
            host.netns,
            "--state-dir",
            str(agent_dir),
            "--hostname",
            host.name,
        ]
        log = Path(_log(opts, f"agent-{host.name}"))
        pid = processes.spawn(
            command, env=_env(opts, host.name), log=log, cgroup_procs=tree.make(host.name, "microseg-agent")
        )
        host.pids["agent"] = pid
        lab.pids[f"{host.name}/agent"] = pid
        lab.save()


def _wait_in_sync(lab: state.LabState, opts: options.LabOptions, plane: control.ControlPlane) -> None:
    """Until every host's agent has applied the provisioned ruleset, so that `up` returns a lab whose
    policy is in force (in the lab's mode); an agent that exits or never gets there is an error."""
    deadline = time.monotonic() + opts.startup_timeout
    while True:
        states = plane.agent_states()
        if all(states.get(host.name) == "in sync" for host in lab.hosts):
            return
        for host in lab.hosts:
            if not processes.alive(host.pids["agent"]):
                tail = Path(_log(opts, f"agent-{host.name}")).read_text(errors="replace")[-2000:]
                raise errors.PermanentError(f"the agent of {host.name} exited:\n{tail}")
        if time.monotonic() > deadline:
            waiting = ", ".join(f"{h.name}: {states.get(h.name, 'not enrolled')}" for h in lab.hosts)
            raise errors.TransientError(f"agents not in sync after {opts.startup_timeout:g} s ({waiting})")
        time.sleep(0.2)


def _start_traffic(
    lab: state.LabState, top: topology.Topology, opts: options.LabOptions, tree: cgroups.CgroupTree
) -> None:
    by_client: dict[tuple[str, str], list[traffic_gen.Target]] = {}
    for flow in top.flows():
        target = traffic_gen.Target(flow.target, flow.address, flow.port, flow.protocol, flow.rate)
        by_client.setdefault((flow.source, flow.client), []).append(target)
    clients = [
        traffic_gen.Client(
            source,
            _place(lab.host(source).netns, tree, source, client),
            str(Path(opts.state_dir, "traffic", f"{source}-{client}.json")),
            tuple(targets),
        )
        for (source, client), targets in by_client.items()
    ]
    spec_file = Path(opts.state_dir, "traffic.json")
    spec_file.write_text(
        json.dumps({"lifetime": opts.traffic_lifetime, "clients": [c.to_dict() for c in clients]})
    )
    command = [opts.python, "-m", "microseg.lab.traffic", str(spec_file)]
    pid = processes.spawn(
        command, env=_env(opts), log=Path(_log(opts, "traffic")), cgroup_procs=tree.make("traffic")
    )
    lab.pids["traffic"] = pid
    lab.save()


# --- down and status ------------------------------------------------------------------------------


def down(opts: options.LabOptions | None = None) -> Removed:
    """Remove everything of the lab named by `opts` (prefix, state directory; default: from the
    environment); what was there. Every step runs even when an earlier one failed; the failures are
    raised together at the end."""
    opts = opts or options.LabOptions.from_env()
    _require_root()
    recorded = state.LabState.load(opts)
    names = options.LabNames(recorded.prefix) if recorded else opts.names
    removed = Removed()
    tree = cgroups.CgroupTree.find(names.prefix)
    netns_names = sorted({*network.namespaces(names), *(recorded.namespaces if recorded else [])})
    removed.namespaces = [n for n in netns_names if (network.NETNS_DIR / n).exists()]
    removed.links = network.links(names)
    removed.cgroup = str(tree.path()) if tree.exists() else ""
    failures: list[str] = []

    def step(action: Callable[[], object]) -> None:
        try:
            action()
        except errors.MicrosegError as exc:
            failures.append(str(exc))

    step(lambda: setattr(removed, "processes", _stop_all(names, tree, netns_names)))
    step(lambda: network.remove(names, netns_names))
    step(lambda: tree.remove() if tree.exists() else None)
    step(lambda: setattr(removed, "state_dir", _remove_state_dir(opts)))
    if failures:
        raise errors.TransientError("lab down did not finish: " + "; ".join(failures))
    return removed


def _stop_all(names: options.LabNames, tree: cgroups.CgroupTree, netns_names: list[str]) -> int:
    """Stop the lab's processes; a few rounds, since a dying generator may still have been forking."""
    inodes = network.netns_inodes(netns_names)
    stopped: set[int] = set()
    for _ in range(3):
        found = processes.lab_processes(
            options.MARKER, names.prefix, inodes, also=tree.pids() if tree.exists() else ()
        )
        if not found:
            break
        survivors = processes.stop(found, grace=2.0)
        tree.kill()
        if survivors:
            survivors = processes.stop(survivors, grace=0.5)
        if survivors:
            raise errors.TransientError(f"lab processes survived SIGKILL: {sorted(survivors)}")
        stopped |= found
    return len(stopped)


def _remove_state_dir(opts: options.LabOptions) -> str:
    directory = Path(opts.state_dir)
    if not directory.is_dir():
        return ""
    if not (directory / STATE_MARKER).exists() and not (directory / "state.json").exists():
        return ""  # not a lab's directory: never delete what we did not make
    shutil.rmtree(directory)
    return str(directory)


def kill_server(opts: options.LabOptions | None = None) -> None:
    """SIGKILL the lab's control plane (agents keep enforcing: what the tests and the demo show)."""
    opts = opts or options.LabOptions.from_env()
    lab = _loaded(opts)
    pid = lab.pids.get("server")
    if pid and processes.alive(pid):
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while processes.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def restart_server(opts: options.LabOptions | None = None) -> state.LabState:
    """Start the lab's control plane again on its database (after `kill_server` or a crash)."""
    opts = opts or options.LabOptions.from_env()
    lab = _loaded(opts)
    if processes.alive(lab.pids.get("server", 0)):
        return lab
    _start_server(lab, opts, cgroups.CgroupTree.find(opts.names.prefix))
    plane = control.ControlPlane(lab.server, lab.token)
    try:
        plane.wait_ready(
            lambda: processes.alive(lab.pids["server"]), opts.startup_timeout, _log(opts, "server")
        )
    finally:
        plane.close()
    return lab


def _loaded(opts: options.LabOptions) -> state.LabState:
    lab = status(opts)
    if lab is None:
        raise errors.UserError("no lab is up (microseg lab up)")
    return lab


def status(opts: options.LabOptions | None = None) -> state.LabState | None:
    """The lab that is up (completely), or None."""
    lab = state.LabState.load(opts or options.LabOptions.from_env())
    return lab if lab is not None and lab.complete else None


def running(pids: Mapping[str, int]) -> dict[str, bool]:
    """Which of the recorded processes still run."""
    return {key: processes.alive(pid) for key, pid in pids.items()}
