"""The lab for real: `microseg lab up --no-agents` makes namespaces, a server, services and traffic that
keep running after the command returns; `status` tells what is there; `down` leaves nothing, also after
`up` was killed half way, after the state file was lost, and when it runs twice.

Needs root. Each lab has its own prefix (see tests/lab/labs.py), and every test takes its lab down in
`finally`, whatever happened.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from microseg import errors
from microseg.agent import netns
from microseg.lab import options, runner, state, topology
from tests.lab import labs

pytestmark = pytest.mark.lab

TOP = topology.load(topology.default_path())


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[state.LabState]:
    """The default lab, made through the CLI, without agents (enforcement is the agent tests' job)."""
    labs.require_lab()
    opts = labs.new_options(tmp_path_factory.mktemp("lab"))
    try:
        done = labs.cli(
            "up", "--no-agents", "--port", str(opts.port), "--traffic-lifetime", "120", *labs.where(opts)
        )
        assert done.returncode == 0, done.stderr
        made = state.LabState.load(opts)
        assert made is not None
        yield made
    finally:
        runner.down(opts)


def opts_of(lab: state.LabState) -> options.LabOptions:
    return options.LabOptions(state_dir=lab.state_dir, prefix=lab.prefix)


def session_of(pid: int) -> tuple[int, int]:
    """(parent pid, session id) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[1]), int(fields[3])


def test_up_returns_with_what_it_made_recorded(lab: state.LabState) -> None:
    assert lab.complete
    assert lab.namespaces == [f"{lab.prefix}-{h.name}" for h in TOP.hosts]
    assert lab.links == [f"{lab.prefix}0", *(f"{lab.prefix}-h{i}" for i in range(1, len(TOP.hosts) + 1))]
    assert lab.bridge == f"{lab.prefix}0" and Path(lab.cgroup, "db-1", "mysqld").is_dir()
    assert (
        oct(Path(lab.state_dir, "state.json").stat().st_mode & 0o777) == "0o600"
    )  # it holds the admin token


def test_up_returns_with_every_process_running_detached(lab: state.LabState) -> None:
    assert set(lab.pids) >= {"server", "traffic", "db-1/mysqld/tcp/3306"}
    for key, pid in lab.pids.items():
        parent, session = session_of(pid)
        assert parent != os.getpid(), key
        assert session == pid, key  # a session of its own: nothing hangs on our terminal


def test_status_json_is_exactly_the_contract(lab: state.LabState) -> None:
    done = labs.cli("status", "-o", "json", *labs.where(opts_of(lab)))
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert set(shown) == {"server", "hosts"}
    assert shown["server"] == lab.server and shown["server"].startswith("http://10.77.0.1:")
    expected = [
        {"name": h.name, "netns": f"{lab.prefix}-{h.name}", "ip": h.address, "labels": dict(h.labels),
         "services": [{"port": s.port, "protocol": s.protocol, "process": s.process} for s in h.services]}
        for h in TOP.hosts
    ]  # fmt: skip
    assert shown["hosts"] == expected


def test_status_table_shows_the_server_and_every_host(lab: state.LabState) -> None:
    done = labs.cli("status", *labs.where(opts_of(lab)))
    assert done.returncode == 0, done.stderr
    assert lab.server in done.stdout
    for host in TOP.hosts:
        assert host.name in done.stdout


def test_the_server_holds_the_inventory_a_version_and_an_enrollment_token_per_host(
    lab: state.LabState,
) -> None:
    with httpx.Client(
        base_url=lab.server, headers={"Authorization": f"Bearer {lab.token}"}, timeout=10
    ) as http:
        workloads = http.get("/api/v1/workloads").json()["items"]
        versions = http.get("/api/v1/versions").json()["items"]
        enrollment = http.get("/api/v1/enrollment-tokens").json()["items"]
    assert {w["metadata"]["name"]: w["spec"]["addresses"] for w in workloads} == {
        h.name: [h.address] for h in TOP.hosts
    }
    assert [v["number"] for v in versions] == [1]
    assert {t["name"]: (t["labels"], t["mode"], t["workloads"]) for t in enrollment} == {
        f"lab-{h.name}": (dict(h.labels), "visibility", [h.name]) for h in TOP.hosts
    }  # each token is bound to its host's declared workload, which its agent adopts
    assert all(h.enroll_token.startswith("mse_") for h in lab.hosts)


def test_every_flow_of_the_topology_connects(lab: state.LabState) -> None:
    flows = TOP.flows()
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda f: lab.reach(f.source, f.target, f.port), flows))
    assert dict(zip(flows, outcomes, strict=True)) == dict.fromkeys(flows, "open")
    assert lab.reach("attacker", "db-1", 3306) == "open"  # nothing enforces yet: the agents do that
    assert lab.reach("web-1", "db-1", 3307) == "refused"


def test_hosts_have_their_address_loopback_and_no_ipv6(lab: state.LabState) -> None:
    for host in lab.hosts:
        shown = json.loads(
            subprocess.run(
                ["ip", "-n", host.netns, "-j", "addr", "show"], capture_output=True, text=True, check=True
            ).stdout
        )
        addresses = {
            (link["ifname"], a["family"], a["local"]) for link in shown for a in link.get("addr_info", [])
        }
        assert addresses == {("lo", "inet", "127.0.0.1"), ("ms-eth0", "inet", host.ip)}
        assert {link["ifname"]: link["operstate"] != "DOWN" for link in shown} == {
            "lo": True,
            "ms-eth0": True,
        }
        ipv6 = subprocess.run(
            ["nsenter", f"--net=/run/netns/{host.netns}", "sysctl", "-n", "net.ipv6.conf.all.disable_ipv6"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert ipv6.stdout.strip() == "1"
    bridge = json.loads(
        subprocess.run(
            ["ip", "-j", "addr", "show", "dev", lab.bridge], capture_output=True, text=True, check=True
        ).stdout
    )
    assert [(a["family"], a["local"], a["prefixlen"]) for a in bridge[0]["addr_info"]] == [
        ("inet", "10.77.0.1", 16)
    ]


def test_exec_and_connect_act_inside_the_hosts(lab: state.LabState) -> None:
    inside = lab.exec("db-1", netns.current_thread_inode)
    assert inside == os.stat(f"/run/netns/{lab.prefix}-db-1").st_ino != netns.current_thread_inode()
    with lab.connect("web-1", "app-1", 8080) as sock:
        assert sock.getsockname()[0] == lab.host("web-1").ip
        sock.sendall(b"hello")
        assert sock.recv(16) == b"hello"
    with pytest.raises(ConnectionRefusedError):
        lab.connect("web-1", "app-1", 8081)


def test_a_second_lab_is_refused_while_one_holds_the_lab_network(lab: state.LabState, tmp_path: Path) -> None:
    other = labs.new_options(tmp_path, agents=False)
    with pytest.raises(errors.UserError, match=r"10\.77\.0\.1/16 on .* overlaps the lab network"):
        runner.up(topology.load_text(labs.TINY, "tiny.yaml"), other)
    assert labs.leftovers(other) == []


def test_services_have_their_names_cgroups_and_namespaces(lab: state.LabState) -> None:
    mount = labs._cgroup2_mount()
    for host in TOP.hosts:
        netns = os.stat(f"/run/netns/{lab.prefix}-{host.name}").st_ino
        for svc in host.services:
            pid = lab.host(host.name).pids[f"{svc.process}/{svc.protocol}/{svc.port}"]
            assert Path(f"/proc/{pid}/comm").read_text().strip() == svc.process
            cgroup = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
            assert f"0::/{lab.prefix}/{host.name}/{svc.process}" in cgroup
            assert Path(mount, lab.prefix, host.name, svc.process).is_dir()
            assert os.stat(f"/proc/{pid}/ns/net").st_ino == netns


def test_traffic_makes_the_normal_connections_at_a_bounded_rate(lab: state.LabState) -> None:
    targets = {(f.target, f.port) for f in TOP.flows()}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not all(lab.accepted(h, p) for h, p in targets):
        time.sleep(0.2)
    assert {t: lab.accepted(*t) > 0 for t in targets} == dict.fromkeys(targets, True)
    before, start = lab.accepted("db-1", 3306), time.monotonic()
    time.sleep(2)
    made = lab.accepted("db-1", 3306) - before
    assert made <= 2 * (time.monotonic() - start + 1) + 2  # two app servers at 1/s each, plus flush slack
    stats = {(s["host"], s["client"]): s["targets"] for s in lab.traffic_stats()}
    assert stats[("app-1", "java")]["db-1 tcp/3306"]["failed"] == 0
    assert stats[("app-1", "java")]["db-1 tcp/3306"]["ok"] > 0


def test_traffic_clients_run_under_their_names_in_the_source_hosts(lab: state.LabState) -> None:
    opts = opts_of(lab)
    pids = labs.cgroup_pids(opts, "monitoring", "prometheus")
    assert [Path(f"/proc/{p}/comm").read_text().strip() for p in pids] == ["prometheus"]
    assert os.stat(f"/proc/{pids[0]}/ns/net").st_ino == os.stat(f"/run/netns/{lab.prefix}-monitoring").st_ino
    assert Path(f"/proc/{lab.pids['traffic']}/comm").read_text().strip() == "lab-traffic"
    java = {Path(f"/proc/{p}/comm").read_text().strip() for p in labs.cgroup_pids(opts, "app-1", "java")}
    assert java == {"java"}  # the app's service and its client share the program's cgroup


def test_up_again_is_refused_and_changes_nothing(lab: state.LabState) -> None:
    opts = opts_of(lab)
    before = opts.state_file.read_bytes()
    done = labs.cli("up", "--no-agents", *labs.where(opts))
    assert done.returncode == 2
    assert "already up" in done.stderr and "--replace" in done.stderr
    assert opts.state_file.read_bytes() == before
    assert all(Path(f"/proc/{pid}").exists() for pid in lab.pids.values())


def test_zz_down_leaves_nothing_and_a_second_down_finds_nothing(lab: state.LabState) -> None:
    opts = opts_of(lab)
    done = labs.cli("down", *labs.where(opts))
    assert done.returncode == 0, done.stderr
    assert "lab down: removed" in done.stdout and "10 namespaces" in done.stdout
    assert labs.leftovers(opts) == []
    assert not [key for key, pid in lab.pids.items() if labs._running(str(pid))]
    again = labs.cli("down", *labs.where(opts))
    assert again.returncode == 0 and "no lab was up" in again.stdout
    status = labs.cli("status", *labs.where(opts))
    assert status.returncode == 1 and "no lab is up" in status.stderr


# --- labs of their own ---------------------------------------------------------------------------


def test_status_without_a_lab_says_so_and_fails(tmp_path: Path) -> None:
    opts = labs.new_options(tmp_path)
    done = labs.cli("status", "-o", "json", *labs.where(opts))
    assert done.returncode == 1 and done.stdout == ""
    assert f"no lab is up (no state file at {opts.state_file})" in done.stderr


def test_a_lab_from_python_is_replaced_serves_udp_and_down_survives_a_lost_state_file(tmp_path: Path) -> None:
    labs.require_lab()
    opts = labs.new_options(tmp_path, agents=False)
    top = topology.load_text(labs.TINY, "tiny.yaml")
    try:
        first = runner.up(top, opts)
        lab = runner.up(top, opts, replace=True)
        assert not [pid for pid in first.pids.values() if labs._running(str(pid))]
        assert lab.pids["server"] != first.pids["server"]
        assert lab.reach("app", "db", 53, protocol="udp") == "echo"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and lab.accepted("db", 53, "udp") < 2:
            time.sleep(0.1)
        assert lab.accepted("db", 53, "udp") >= 2  # the probe and the generator's datagrams
        opts.state_file.unlink()
        removed = runner.down(opts)
        assert removed.processes >= 4 and len(removed.namespaces) == 2
        assert labs.leftovers(opts) == []
    finally:
        runner.down(opts)


def test_down_cleans_up_after_up_was_killed_half_way(tmp_path: Path) -> None:
    labs.require_lab()
    opts = labs.new_options(tmp_path)
    (tmp_path / "tiny.yaml").write_text(labs.TINY)
    command = labs.command(
        "up",
        "--no-agents",
        "--topology",
        str(tmp_path / "tiny.yaml"),
        "--port",
        str(opts.port),
        *labs.where(opts),
    )
    try:
        with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as up:
            deadline = time.monotonic() + 30
            recorded = None
            while time.monotonic() < deadline:
                recorded = state.LabState.load(opts)
                if recorded is not None and "server" in recorded.pids:
                    break
                time.sleep(0.01)
            up.send_signal(signal.SIGKILL)
            up.wait(10)
        assert recorded is not None and not recorded.complete
        assert labs.leftovers(opts)  # something was made before the kill
        done = labs.cli("down", *labs.where(opts))
        assert done.returncode == 0, done.stderr
        assert labs.leftovers(opts) == []
    finally:
        runner.down(opts)


def test_up_that_fails_half_way_leaves_nothing(tmp_path: Path) -> None:
    labs.require_lab()
    opts = labs.new_options(tmp_path, agents=False, python="/bin/false")  # `token create` fails
    with pytest.raises(errors.PermanentError, match="microseg token create failed"):
        runner.up(topology.load_text(labs.TINY, "tiny.yaml"), opts)
    assert labs.leftovers(opts) == []


def test_a_wrong_policy_stops_up_before_anything_is_made(tmp_path: Path) -> None:
    labs.require_lab()
    bad = tmp_path / "policy.yaml"
    bad.write_text("apiVersion: microseg.io/v1\nkind: Servce\nmetadata: {name: x}\n")
    opts = labs.new_options(tmp_path, agents=False, policy=(str(bad),))
    with pytest.raises(errors.PolicyFileError, match=r"policy.yaml:2: kind: unknown kind 'Servce'"):
        runner.up(topology.load_text(labs.TINY, "tiny.yaml"), opts)
    assert labs.leftovers(opts) == []


def test_leftovers_without_a_state_file_block_up_until_down_removes_them(tmp_path: Path) -> None:
    labs.require_lab()
    opts = labs.new_options(tmp_path, agents=False)
    stray = f"{opts.prefix}-stray"
    subprocess.run(["ip", "netns", "add", stray], check=True)
    try:
        with pytest.raises(errors.UserError, match=f"leftovers of an earlier lab.*{stray}"):
            runner.up(topology.load_text(labs.TINY, "tiny.yaml"), opts)
        assert runner.down(opts).namespaces == [stray]
        assert labs.leftovers(opts) == []
    finally:
        subprocess.run(["ip", "netns", "del", stray], check=False, capture_output=True)


def test_with_agents_up_returns_once_the_policy_is_in_force(tmp_path: Path) -> None:
    labs.require_lab()
    opts = labs.new_options(tmp_path, mode="enforce", traffic=False)
    try:
        lab = runner.up(topology.load_text(labs.TINY, "tiny.yaml"), opts)
        with httpx.Client(base_url=lab.server, headers={"Authorization": f"Bearer {lab.token}"}) as http:
            agents = {a["workload"]: a["state"] for a in http.get("/api/v1/agents").json()["items"]}
        assert agents == {"app": "in sync", "db": "in sync"}  # enrolled under the hosts' names
        assert lab.reach("app", "db", 3306) == "open"  # app-to-db, served by mysqld
        assert lab.reach("db", "app", 22, timeout=0.5) in ("eperm", "timeout")  # no rule: default deny
        assert lab.reach("app", "db", 53, protocol="udp", timeout=0.5) in ("eperm", "timeout")
    finally:
        runner.down(opts)
    assert labs.leftovers(opts) == []
