"""`microseg lab up | down | status`: the network-namespace lab from the command line.

A thin layer over `microseg.lab.runner`: options become `LabOptions`, results become a table or
`-o json`. `status -o json` prints exactly `{"server", "hosts": [{"name", "netns", "ip", "labels",
"services": [{"port", "protocol", "process"}]}]}`; the admin token stays in the state file. When
no lab is up, `status` says so on stderr and exits with 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from microseg.cli import output
from microseg.lab import options, runner, state, topology

StateDir = Annotated[
    str | None, typer.Option("--state-dir", help="the lab's state directory (or MICROSEG_LAB_STATE_DIR)")
]
Prefix = Annotated[
    str | None, typer.Option("--prefix", help="name prefix of the lab (or MICROSEG_LAB_PREFIX)")
]


_reported = output.reporting


lab_app = typer.Typer(
    name="lab",
    help="The network-namespace lab: hosts, services, a control plane, agents and traffic on this machine.",
    no_args_is_help=True,
    add_completion=False,
)


@lab_app.command("up")
@_reported
def lab_up(
    *,
    topology_file: Annotated[
        Path | None,
        typer.Option("--topology", help="topology file (default: the CRM lab shipped with microseg)"),
    ] = None,
    policy: Annotated[
        list[Path] | None, typer.Option("--policy", help="policy file or directory to apply (repeatable)")
    ] = None,
    agents: Annotated[bool, typer.Option("--agents/--no-agents", help="start one agent per host")] = True,
    traffic: Annotated[
        bool, typer.Option("--traffic/--no-traffic", help="start the traffic generator")
    ] = True,
    mode: Annotated[str, typer.Option(help="workloads' mode: visibility, alert or enforce")] = "visibility",
    port: Annotated[int | None, typer.Option(help="control-plane port on 10.77.0.1 (default 8440)")] = None,
    traffic_lifetime: Annotated[float, typer.Option(help="seconds the traffic generator runs")] = 3600.0,
    replace: Annotated[bool, typer.Option("--replace", help="take down a lab that is up first")] = False,
    state_dir: StateDir = None,
    prefix: Prefix = None,
    fmt: output.Output = output.Format.TABLE,
) -> None:
    """Make the lab: namespaces on a bridge, the control plane, services, agents, traffic."""
    top = topology.load(topology_file or topology.default_path())
    opts = options.LabOptions.from_env(
        state_dir=state_dir,
        prefix=prefix,
        port=port,
        mode=mode,
        agents=agents,
        traffic=traffic,
        traffic_lifetime=traffic_lifetime,
        policy=tuple(str(p) for p in policy or ()),
    )
    lab = runner.up(top, opts, replace=replace)
    if fmt is output.Format.JSON:
        output.emit_json(lab.status())
        return
    _print_lab(lab)
    output.console.print(f"admin token: in {opts.state_file}; stop everything with `microseg lab down`")


@lab_app.command("down")
@_reported
def lab_down(state_dir: StateDir = None, prefix: Prefix = None) -> None:
    """Stop every lab process and delete its namespaces, links, cgroups and state (safe to repeat)."""
    opts = options.LabOptions.from_env(state_dir=state_dir, prefix=prefix)
    removed = runner.down(opts)
    if not removed:
        output.console.print(f"no lab was up (nothing named {opts.prefix}*, no state in {opts.state_dir})")
        return
    parts = [
        output.plural(removed.processes, "process", "processes"),
        output.plural(len(removed.namespaces), "namespace"),
        output.plural(len(removed.links), "link"),
        *(["cgroup " + removed.cgroup] if removed.cgroup else []),
        *(["state " + removed.state_dir] if removed.state_dir else []),
    ]
    output.console.print("lab down: removed " + ", ".join(parts))


@lab_app.command("status")
@_reported
def lab_status(
    state_dir: StateDir = None, prefix: Prefix = None, fmt: output.Output = output.Format.TABLE
) -> None:
    """Show the lab that is up: server, hosts, addresses, labels, services."""
    opts = options.LabOptions.from_env(state_dir=state_dir, prefix=prefix)
    lab = state.LabState.load(opts)
    if lab is None:
        output.err_console.print(
            f"no lab is up (no state file at {opts.state_file}); start one: microseg lab up"
        )
        raise typer.Exit(1)
    if not lab.complete:
        output.err_console.print(
            f"the lab in {opts.state_dir} is not up: `up` did not finish; clean up with `microseg lab down`"
        )
        raise typer.Exit(1)
    if fmt is output.Format.JSON:
        output.emit_json(lab.status())
        return
    _print_lab(lab)


def _print_lab(lab: state.LabState) -> None:
    alive = runner.running(lab.pids)
    con = output.console
    con.print(
        f"server {lab.server}, mode {lab.mode}, {sum(alive.values())}/{len(alive)} lab processes running"
    )
    table = Table("host", "netns", "ip", "labels", "services")
    for host in lab.hosts:
        labels = ",".join(f"{k}={v}" for k, v in sorted(host.labels.items()))
        services = ", ".join(f"{s['protocol']}/{s['port']} {s['process']}" for s in host.services)
        table.add_row(host.name, host.netns, host.ip, labels, services)
    con.print(table)


if __name__ == "__main__":
    lab_app()
