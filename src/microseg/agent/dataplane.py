"""The data planes the reconciler drives: nftables (our one table) and iptables + ipset (fallback).

Fed by the reconciler with a ruleset document (or None before anything was provisioned) and what
the host knows about processes (cgroups, uids); feeds the kernel. Each data plane can apply a
document atomically, tell whether what is in the kernel is still what it applied (`check`), put it
back (`restore`), remove everything it owns (`remove`) and nothing else, and say how many packets
and bytes each rule decided (`counters`).

Counters are per-rule totals for the data plane's lifetime (its `epoch`), monotonic: replacing the
table starts the kernel's counters at zero, so what the old table counted is carried over first
(`CounterTotals`). Counts between the last reading and a replacement by someone else (a flushed
ruleset) are lost; nothing is ever counted twice. The tamper check never sees counter values
(stateless listing / `iptables-save` without `-c`), so traffic is not drift.

A new document that only moves address-set members (same header, entries and set names, no set
family becoming empty or non-empty) is applied to nftables as `delete element` / `add element`
commands in one transaction (`nftables.render_member_update`), not as a whole new table: at 5,000
members that is the difference between rewriting every element and touching one. The table must
still hold exactly what was loaded (else the whole table is loaded, which repairs it), and the
tamper check then expects what the kernel lists after the update. Anything else, and every restore,
loads the whole table; the iptables fallback always reloads whole.

Before any document arrives the agent still installs a table: conntrack only tracks connections in
a namespace once some rule there uses it, and without tracking there is nothing to observe.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from microseg import errors
from microseg import settings as config
from microseg.agent import netns
from microseg.agent import nft as nftlib
from microseg.model import ruleset
from microseg.render import iptables as ipt_render
from microseg.render import nftables as nft_render

log = logging.getLogger("microseg.agent")


@dataclass(frozen=True)
class Drift:
    """What changed in the kernel behind our back."""

    summary: str
    changes: tuple[str, ...]
    """A short unified diff, expected (-) against found (+)."""


@dataclass(frozen=True)
class RuleCount:
    """Packets and bytes one rule decided (only new connections reach the rules, so packets are
    connection attempts)."""

    packets: int = 0
    bytes: int = 0

    def __add__(self, other: RuleCount) -> RuleCount:
        return RuleCount(self.packets + other.packets, self.bytes + other.bytes)


@dataclass(frozen=True)
class Counters:
    """Per-rule totals since `epoch` began: they only grow while the epoch stays the same."""

    epoch: str
    rules: Mapping[str, RuleCount]


class CounterTotals:
    """Monotonic per-rule totals over kernel counters that restart at zero whenever the rules are
    replaced: what earlier tables counted (carried) plus the latest reading of the live one.

    A reading lower than the one before (or a rule gone from it) means the kernel started again
    behind our back: the earlier reading is carried, so a reset never lowers a total."""

    def __init__(self) -> None:
        self.epoch = secrets.token_hex(8)
        self._carried: dict[str, RuleCount] = {}
        self._live: dict[str, RuleCount] = {}

    def on_read(self, live: Mapping[str, RuleCount]) -> None:
        """The counters the kernel holds now."""
        for ref, before in self._live.items():
            now = live.get(ref)
            if now is None or now.packets < before.packets or now.bytes < before.bytes:
                self._carried[ref] = self._carried.get(ref, RuleCount()) + before
        self._live = dict(live)

    def on_replaced(self) -> None:
        """The rules were just replaced: the kernel's counters start at zero."""
        self.on_read({})

    def totals(self) -> Counters:
        rules = dict(self._carried)
        for ref, count in self._live.items():
            rules[ref] = rules.get(ref, RuleCount()) + count
        return Counters(self.epoch, rules)


def _summed(pairs: Iterable[tuple[str, RuleCount]]) -> dict[str, RuleCount]:
    out: dict[str, RuleCount] = {}
    for ref, count in pairs:
        out[ref] = out.get(ref, RuleCount()) + count
    return out


class Dataplane(Protocol):
    """What the reconciler needs of a data plane."""

    name: str

    def apply(
        self, doc: ruleset.RulesetDocument | None, cgroups: Mapping[str, str], uids: Mapping[str, int]
    ) -> tuple[str, ...]:
        """Replace what we own with `doc`'s rules in one step; the warnings (what is enforced
        less exactly than written). On error nothing changed."""
        ...

    def check(self) -> Drift | None:
        """None when the kernel still holds what was last applied."""
        ...

    def restore(self) -> None:
        """Apply the last applied rules again."""
        ...

    def remove(self) -> None:
        """Delete everything this data plane owns (and only that)."""
        ...

    def counters(self) -> Counters:
        """Per-rule totals since this data plane started (see `CounterTotals`)."""
        ...


def _diff(expected: str, found: str | None) -> Drift:
    if found is None:
        return Drift("the table was deleted", ("- the whole table",))
    lines = list(
        difflib.unified_diff(expected.splitlines(), found.splitlines(), "applied", "found", n=0, lineterm="")
    )
    body = tuple(line for line in lines[2:] if not line.startswith("@@"))
    removed = sum(1 for line in body if line.startswith("-"))
    added = len(body) - removed
    return Drift(f"{removed} line(s) removed, {added} added", body[:40])


@dataclass(frozen=True)
class _Loaded:
    """What our nftables table was made from: a document (None: the observing table) and the host
    knowledge it was rendered with."""

    doc: ruleset.RulesetDocument | None
    cgroups: Mapping[str, str]
    uids: Mapping[str, int]
    warnings: tuple[str, ...]


class NftDataplane:
    """Our table `inet <table>`, replaced as a whole in one transaction, or its set elements
    changed in one transaction when nothing else changed."""

    name = "nftables"

    def __init__(self, settings: config.RenderSettings, nft: nftlib.Nft | None = None) -> None:
        self.settings = settings
        self.nft = nft or nftlib.Nft()
        self._script: str | None = None
        self._expected: str | None = None
        self._generation: int | None = None
        self._refs: dict[str, str] = {}
        """Rule comment -> ref of the table in the kernel (`nftables.counter_refs`)."""
        self._totals = CounterTotals()
        self._loaded: _Loaded | None = None
        self.member_updates = 0
        """Applies done as set-element changes (the rest loaded the whole table)."""

    def apply(
        self, doc: ruleset.RulesetDocument | None, cgroups: Mapping[str, str], uids: Mapping[str, int]
    ) -> tuple[str, ...]:
        if doc is not None and self._update_members(doc, cgroups, uids):
            assert self._loaded is not None
            return self._loaded.warnings
        warnings: tuple[str, ...] = ()
        if doc is None:
            script = self._bootstrap()
        else:
            rendered = nft_render.render(doc, self.settings, cgroups, uids=uids)
            script, warnings = rendered.text, rendered.warnings
        self._replace(script)
        self._loaded = _Loaded(doc, dict(cgroups), dict(uids), warnings)
        self._refs = nft_render.counter_refs(doc) if doc is not None else {}
        return warnings

    def _update_members(
        self, doc: ruleset.RulesetDocument, cgroups: Mapping[str, str], uids: Mapping[str, int]
    ) -> bool:
        """Apply `doc` as set-element changes to the loaded table when that is all that changed;
        False when the whole table must be loaded (nothing was changed then)."""
        loaded = self._loaded
        if loaded is None or loaded.doc is None or loaded.cgroups != cgroups or loaded.uids != uids:
            return False
        script = nft_render.render_member_update(loaded.doc, doc, self.settings)
        if script is None:
            return False
        if self.check() is not None:
            return False  # changed behind our back: a whole load repairs it (as for any other apply)
        if script:
            try:
                self.nft.run(script)
            except nftlib.NftError as exc:  # nothing was committed: the whole table still can be
                log.warning("changing set elements failed, loading the whole table: %s", exc)
                return False
            self._remember()
        self._loaded = replace(loaded, doc=doc)
        self._script = None  # rendered when a restore needs it
        self.member_updates += 1
        return True

    def _replace(self, script: str) -> None:
        """Load `script`; what the old table counted is kept first (a refused script changes
        nothing, counters included)."""
        self._read_counters()
        self.nft.run(script)
        self._totals.on_replaced()
        self._script = script
        self._remember()

    def _bootstrap(self) -> str:
        table = self.settings.table
        chain = "type filter hook input priority 0; policy accept;"
        return (
            f"table inet {table}\ndelete table inet {table}\n"
            f'table inet {table} {{\n\tcomment "microseg: nothing provisioned yet; observing only"\n'
            f"\tchain input {{\n\t\t{chain}\n\t\tct state established,related accept\n\t}}\n"
            f"\tchain output {{\n\t\t{chain.replace('input', 'output')}\n"
            "\t\tct state established,related accept\n\t}\n}\n"
        )

    def _remember(self) -> None:
        self._generation = nftlib.generation()
        self._expected = self.nft.list_table("inet", self.settings.table)

    def check(self) -> Drift | None:
        if self._expected is None:
            return None
        generation = nftlib.generation()
        if generation == self._generation:
            return None
        found = self.nft.list_table("inet", self.settings.table)
        if found == self._expected:
            self._generation = generation  # something else in the namespace changed, not ours
            return None
        return _diff(self._expected, found)

    def restore(self) -> None:
        script = self._full_script()
        if script is not None:
            self._replace(script)

    def _full_script(self) -> str | None:
        """The script loading the whole table we hold (rendered again after a member update)."""
        if self._script is None and self._loaded is not None:
            doc, cgroups, uids = self._loaded.doc, self._loaded.cgroups, self._loaded.uids
            self._script = (
                self._bootstrap()
                if doc is None
                else nft_render.render(doc, self.settings, cgroups, uids=uids).text
            )
        return self._script

    def remove(self) -> None:
        table = self.settings.table
        self.nft.run(f"table inet {table}\ndelete table inet {table}\n")
        self._script = self._expected = None
        self._loaded = None

    def counters(self) -> Counters:
        self._read_counters()
        return self._totals.totals()

    def _read_counters(self) -> None:
        """Fold the live table's counters in; a table that is gone (tampered) reads as nothing new."""
        if self._expected is None or not self._refs:
            return
        try:
            found = nftlib.rule_counters("inet", self.settings.table)
        except nftlib.NftError:
            return  # the last reading stands; the next one may work
        if not found:
            return  # deleted behind our back (our table always counts): the restore follows
        self._totals.on_read(_summed(_nft_counts(found, self._refs)))


def _nft_counts(
    found: Iterable[tuple[str, int, int]], refs: Mapping[str, str]
) -> Iterable[tuple[str, RuleCount]]:
    """(ref, count) of every counter whose rule's comment is one of `refs`."""
    for comment, packets, nbytes in found:
        ref = refs.get(comment)
        if ref is not None:
            yield ref, RuleCount(packets, nbytes)


_SAVED_RULE = re.compile(r'^\[(\d+):(\d+)\] -A (\S+) .*?--comment (?:"([^"]*)"|(\S+)).* -j (\S+)')


def _ipt_counts(saved: str, chain_prefix: str, refs: Mapping[str, str]) -> Iterable[tuple[str, RuleCount]]:
    """(ref, count) per rule of our chains in `iptables-save -c` output; NFLOG rules are left
    out (the verdict rule after one counts the same packets)."""
    for line in saved.splitlines():
        m = _SAVED_RULE.match(line)
        if m is None or not m[3].startswith(chain_prefix) or m[6] == "NFLOG":
            continue
        ref = refs.get(m[4] if m[4] is not None else m[5])
        if ref is not None:
            yield ref, RuleCount(int(m[1]), int(m[2]))


def _run(argv: list[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60, check=False)
    if check and done.returncode != 0:
        raise errors.MicrosegError(f"{argv[0]} failed: {done.stderr.strip() or done.returncode}")
    return done


class IptablesDataplane:
    """`MS-*` chains with jumps from INPUT/OUTPUT, and `ms*` ipsets; for hosts without nftables."""

    name = "iptables"

    def __init__(self, settings: config.RenderSettings) -> None:
        for tool in ("iptables-restore", "ip6tables-restore", "ipset", "iptables-save"):
            if shutil.which(tool) is None:
                raise errors.MicrosegError(f"the iptables fallback needs {tool}, which is not installed")
        self.settings = settings
        self.chain_prefix = settings.ipset_prefix.upper() + "-"
        self._rendered: ipt_render.IptablesRender | None = None
        self._expected: str | None = None
        self._refs: dict[str, str] = {}
        self._totals = CounterTotals()

    def apply(
        self, doc: ruleset.RulesetDocument | None, cgroups: Mapping[str, str], uids: Mapping[str, int]
    ) -> tuple[str, ...]:
        if doc is None:
            return ()  # iptables tracks connections as soon as the conntrack module is in use anyway
        rendered = ipt_render.render(doc, self.settings, cgroups, uids=uids)
        self._load(rendered)
        self._rendered = rendered
        self._refs = ipt_render.counter_refs(doc)
        self._expected = self._snapshot()
        return rendered.warnings

    def counters(self) -> Counters:
        self._read_counters()
        return self._totals.totals()

    def _read_counters(self) -> None:
        if not self._refs:
            return
        saved = [_run([tool, "-c", "-t", "filter"]).stdout for tool in ("iptables-save", "ip6tables-save")]
        self._totals.on_read(_summed(_ipt_counts("\n".join(saved), self.chain_prefix, self._refs)))

    def _load(self, rendered: ipt_render.IptablesRender) -> None:
        """Declaring our chains flushes them, which zeroes their counters: read them first."""
        self._read_counters()
        _run(["ipset", "restore"], rendered.ipset)
        for tool, families in (
            ("iptables", (rendered.v4, rendered.v4_install)),
            ("ip6tables", (rendered.v6, rendered.v6_install)),
        ):
            jump = [
                tool,
                "-C",
                "INPUT",
                "-m",
                "comment",
                "--comment",
                "microseg",
                "-j",
                f"{self.chain_prefix}INPUT",
            ]
            installed = _run(jump, check=False).returncode == 0
            _run([f"{tool}-restore", "--noflush"], families[0] if installed else families[1])
        self._totals.on_replaced()

    def _snapshot(self) -> str:
        lines = []
        for tool in ("iptables-save", "ip6tables-save"):
            out = _run([tool, "-t", "filter"]).stdout
            lines += [line for line in out.splitlines() if self.chain_prefix in line or "microseg" in line]
        sets = _run(["ipset", "list", "-name"]).stdout.split()
        prefix = self.settings.ipset_prefix
        lines += [f"set {name}" for name in sorted(sets) if name.startswith((f"{prefix}4-", f"{prefix}6-"))]
        return "\n".join(lines)

    def installed(self) -> bool:
        """Whether any of our chains or sets exist."""
        return bool(self._snapshot())

    def check(self) -> Drift | None:
        if self._expected is None:
            return None
        found = self._snapshot()
        return None if found == self._expected else _diff(self._expected, found)

    def restore(self) -> None:
        if self._rendered is not None:
            self._load(self._rendered)
            self._expected = self._snapshot()

    def remove(self) -> None:
        for tool in ("iptables", "ip6tables"):
            for builtin in ("INPUT", "OUTPUT"):
                jump = ["-m", "comment", "--comment", "microseg", "-j", f"{self.chain_prefix}{builtin}"]
                while _run([tool, "-D", builtin, *jump], check=False).returncode == 0:
                    pass
            chains = [
                line[1:].split()[0]
                for line in _run([f"{tool}-save", "-t", "filter"]).stdout.splitlines()
                if line.startswith(f":{self.chain_prefix}")
            ]
            for chain in chains:
                _run([tool, "-F", chain], check=False)
            for chain in chains:
                _run([tool, "-X", chain], check=False)
        prefix = self.settings.ipset_prefix
        for name in _run(["ipset", "list", "-name"]).stdout.split():
            if name.startswith((f"{prefix}4-", f"{prefix}6-")):
                _run(["ipset", "destroy", name], check=False)
        self._rendered = self._expected = None


def choose(kind: str, settings: config.RenderSettings) -> Dataplane:
    """`nftables`, `iptables`, or `auto` (nftables when it can be used, else the fallback)."""
    if kind in ("nftables", "nft"):
        return NftDataplane(settings)
    if kind == "iptables":
        return IptablesDataplane(settings)
    if kind != "auto":
        raise errors.UserError(f"unknown data plane {kind!r}: use auto, nftables or iptables")
    try:
        plane = NftDataplane(settings)
        nftlib.generation()
        return plane
    except errors.MicrosegError:
        return IptablesDataplane(settings)


def uninstall(netns_name: str | None, settings: config.RenderSettings | None = None) -> list[str]:
    """Remove our table (and the iptables fallback's chains and sets, when present); what was removed."""
    render = settings or config.RenderSettings()

    def remove() -> list[str]:
        removed = []
        with contextlib.suppress(errors.MicrosegError):
            plane = NftDataplane(render)
            if plane.nft.list_table("inet", render.table) is not None:
                plane.remove()
                removed.append(f"nftables table inet {render.table}")
        with contextlib.suppress(errors.MicrosegError):
            ipt = IptablesDataplane(render)
            if ipt.installed():
                ipt.remove()
                removed.append("iptables chains and ipsets")
        return removed

    return netns.run_in(netns_name, remove)
