"""`microseg demo` on a real lab: the story of one estate, told with real traffic, step by step.

    preflight (Linux, root, ip/nsenter/nft, cgroup2) -> lab up (visibility, starter policy, a webhook
    secret) -> story steps 1-7 (`story.Story`), each timed, with checks -> down (unless --keep)
    -> the scorecard

This module wires the run and keeps the score; the steps themselves are in `story`, the map files
in `mapfiles`, and what a person sees is the caller's `Reporter` (the CLI's rich console). A step
that fails is recorded and the story goes on, so one broken step does not hide the others; a
failure to build the lab ends the story. Ctrl-C and errors always take the lab down: only a story
that reached its end with `keep` leaves it running.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from microseg import errors
from microseg.lab import network, options, runner, scorecard, state, story, topology

TOOLS = ("ip", "nsenter", "nft")


@dataclass(frozen=True)
class DemoOptions:
    """How the demo runs."""

    out_dir: Path = Path("demo-output")
    """Where demo-map.html, demo-map.png and demo-map.dot go."""
    keep: bool = False
    """Leave the lab and its console running after the story."""
    lab: options.LabOptions = field(default_factory=options.LabOptions.from_env)
    """Which lab (prefix, state directory, port); mode, policy and hook secret are the demo's."""


def preflight() -> list[str]:
    """Why this machine cannot run the demo's lab (empty when it can)."""
    if platform.system() != "Linux":
        return [f"the lab needs Linux network namespaces (this is {platform.system()})"]
    problems = []
    if os.geteuid() != 0:
        problems.append("the lab needs root (network namespaces, a bridge, cgroups, nftables)")
    problems += [f"{tool} is not installed" for tool in TOOLS if shutil.which(tool) is None]
    if "cgroup2" not in Path("/proc/self/mountinfo").read_text(encoding="utf-8"):
        problems.append("no cgroup2 file system is mounted")
    return problems


def occupied(opts: options.LabOptions) -> list[str]:
    """What of a lab with these names is already there (the demo never takes down a lab it did not
    make, such as one left by `--keep`)."""
    if opts.state_file.exists():
        return [f"a lab is up ({opts.state_file}); `microseg lab down` first"]
    leftovers = [*network.namespaces(opts.names), *network.links(opts.names)]
    return [f"leftovers of a lab: {', '.join(leftovers)}; `microseg lab down` first"] if leftovers else []


def starter_policy() -> tuple[str, ...]:
    """What the lab starts with: the IP lists and the org-wide guard rail (dev never reaches prod),
    no application rules, so the network is flat until the demo learns them."""
    shipped = topology.default_policy_dir()
    return tuple(str(shipped / name) for name in ("iplists.yaml", "security.yaml"))


def lab_options(demo: DemoOptions, secret: str) -> options.LabOptions:
    """The demo's lab: visibility mode, the starter policy, the EDR tool's webhook secret."""
    return dataclasses.replace(
        demo.lab,
        mode="visibility",
        policy=starter_policy(),
        agents=True,
        traffic=True,
        # The EDR releases what it quarantined (step 7), so its scope includes release.
        hook_secrets=(f"{story.HOOK_NAME}:quarantine+release={secret}",),
    )


def run(demo: DemoOptions, reporter: scorecard.Reporter) -> scorecard.Scorecard:
    """Build the lab, tell the story, clean up (unless kept), and return the score."""
    started = time.monotonic()
    if problems := occupied(demo.lab):
        raise errors.UserError("; ".join(problems))
    secret = secrets.token_hex(24)
    opts = lab_options(demo, secret)
    card = scorecard.Scorecard(out_dir=str(demo.out_dir.resolve()))
    finished = False
    try:
        top = topology.load(topology.default_path())
        built: list[state.LabState] = []
        card.steps.append(
            _step(0, "build the lab", lambda log: built.append(_build(log, top, opts)), reporter)
        )
        if built:
            told = story.Story(built[0], top, secret, demo.out_dir)
            try:
                for number, (title, action) in enumerate(told.steps(), start=1):
                    card.steps.append(_step(number, title, action, reporter))
            finally:
                told.close()
            if demo.keep:
                card.kept, card.server, card.token = True, built[0].server, built[0].token
        finished = True
    finally:
        if not (finished and card.kept):
            card.steps.append(_step(len(card.steps), "clean up", lambda log: _clean(log, opts), reporter))
    card.seconds = time.monotonic() - started
    return card


def _step(
    number: int, title: str, action: Callable[[scorecard.StepLog], None], reporter: scorecard.Reporter
) -> scorecard.StepResult:
    """Run one step; its errors become a failed check (Ctrl-C goes on up, to the cleanup)."""
    result = scorecard.StepResult(number, title)
    log = scorecard.StepLog(result, reporter)
    reporter.on_step_started(number, title)
    began = time.monotonic()
    try:
        action(log)
    except (errors.MicrosegError, OSError, ValueError, KeyError) as exc:
        log.check("no error", False, f"{type(exc).__name__}: {exc}")
        log.summary(result.summary or f"stopped: {exc}")
    result.seconds = time.monotonic() - began
    reporter.on_step_done(result)
    return result


def _build(log: scorecard.StepLog, top: topology.Topology, opts: options.LabOptions) -> state.LabState:
    log.progress(f"{len(top.hosts)} hosts in {opts.prefix}-* namespaces, a control plane, an agent each")
    lab = runner.up(top, opts)
    log.check("lab up, every agent in sync", True)
    log.line(
        f"{len(lab.hosts)} hosts on {lab.bridge} (10.77.0.0/16), control plane {lab.server}, "
        f"mode visibility, starter policy: {', '.join(Path(p).name for p in opts.policy)}"
    )
    log.summary(f"{len(lab.hosts)} hosts, {len(lab.hosts)} agents in sync, traffic running")
    return lab


def _clean(log: scorecard.StepLog, opts: options.LabOptions) -> None:
    log.progress("stopping processes, deleting namespaces, links, cgroups and state")
    removed = runner.down(opts)
    left = [*network.namespaces(opts.names), *network.links(opts.names)]
    log.check(f"nothing named {opts.prefix}* is left", not left, ", ".join(left))
    log.summary(
        f"{removed.processes} processes stopped, {len(removed.namespaces)} namespaces and "
        f"{len(removed.links)} links removed"
    )
