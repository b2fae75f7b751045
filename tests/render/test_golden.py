"""Golden files: the rendered text of every scenario, byte for byte, and proof that it loads.

`pytest tests/render --update-golden` rewrites them (review the diff: it is the change in what
hosts will run). The load checks read the files on disk, so what is committed is what is proven:
`nft -c` (a kernel dry run, nothing changes) for nftables, and a real `ipset restore` plus
`iptables-restore --noflush` inside a lab namespace for the fallback.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from microseg.render import iptables, nftables, nftverify
from tests.render import documents, netns

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
SUFFIXES = (".nft", ".ipset", ".iptables-v4", ".iptables-v6", ".warnings")


def rendered(name: str) -> dict[str, str]:
    """Every golden text of one scenario, by file suffix."""
    sc = documents.SCENARIOS[name]
    nft = nftables.render(sc.doc, sc.settings, sc.cgroups, uids=sc.uids)
    ipt = iptables.render(sc.doc, sc.settings, sc.cgroups, uids=sc.uids)
    warnings = ["# nftables", *nft.warnings, "# iptables", *ipt.warnings]
    return {
        ".nft": nft.text,
        ".ipset": ipt.ipset,
        ".iptables-v4": ipt.v4,
        ".iptables-v6": ipt.v6,
        ".warnings": "\n".join(warnings) + "\n",
    }


@pytest.mark.parametrize("name", documents.SCENARIOS)
def test_rendering_matches_golden(name: str, update_golden: bool) -> None:
    for suffix, text in rendered(name).items():
        path = GOLDEN / f"{name}{suffix}"
        if update_golden:
            path.write_text(text)
            continue
        assert path.exists(), f"{path} is missing; run: pytest tests/render --update-golden"
        assert path.read_text() == text, (
            f"{path.name} differs; review, then: pytest tests/render --update-golden"
        )


def test_no_stale_golden_files() -> None:
    ours = {f"{name}{suffix}" for name in documents.SCENARIOS for suffix in SUFFIXES}
    on_disk = {p.name for p in GOLDEN.iterdir() if p.name.endswith(SUFFIXES)}
    assert on_disk <= ours, f"golden files without a scenario: {sorted(on_disk - ours)}"


@pytest.mark.parametrize("name", documents.SCENARIOS)
def test_golden_nft_parses_for_verification(name: str) -> None:
    program = nftverify.parse((GOLDEN / f"{name}.nft").read_text())
    assert program.replaces and program.defined


@pytest.mark.netns
@pytest.mark.parametrize("name", documents.SCENARIOS)
def test_golden_nft_passes_kernel_dry_run(name: str, nft_check: None) -> None:
    netns.nft_dry_run((GOLDEN / f"{name}.nft").read_text())


@pytest.mark.netns
def test_golden_iptables_loads_in_a_namespace(lab: netns.Lab) -> None:
    first = documents.SCENARIOS["enforce"]
    install = iptables.render(first.doc, first.settings)
    lab.run(lab.a, "ipset", "restore", text_in=install.ipset)
    lab.run(lab.a, "iptables-restore", "--noflush", text_in=install.v4_install)
    lab.run(lab.a, "ip6tables-restore", "--noflush", text_in=install.v6_install)
    for name in documents.SCENARIOS:
        texts = {suffix: (GOLDEN / f"{name}{suffix}").read_text() for suffix in SUFFIXES}
        lab.run(lab.a, "ipset", "restore", text_in=texts[".ipset"])
        for tool, suffix in (("iptables-restore", ".iptables-v4"), ("ip6tables-restore", ".iptables-v6")):
            # xt_cgroup resolves --path in the host's cgroup tree; the golden's path is an example.
            text = re.sub(r'--path "[^"]*"', '--path "/"', texts[suffix])
            lab.run(lab.a, tool, "--noflush", text_in=text)
    for tool in ("iptables", "ip6tables"):
        jumps = [line for line in lab.run(lab.a, tool, "-S").stdout.splitlines() if "-j MS-INPUT" in line]
        assert jumps == ["-A INPUT -m comment --comment microseg -j MS-INPUT"], tool
