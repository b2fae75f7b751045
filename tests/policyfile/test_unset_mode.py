"""A workload whose mode nobody set is in visibility, and stays unset through a dump (so the token
of its enrolling agent sets it); a written mode, `visibility` included, is kept as written."""

from __future__ import annotations

import pytest

from microseg import policyfile
from microseg.model import workloads
from microseg.policyfile import dumper
from tests.policyfile import texts


def one_workload(spec: str, name: str = "w", labels: str = "{}") -> str:
    return texts.doc("Workload", f"metadata: {{name: {name}, labels: {labels}}}\nspec: {spec}\n")


def test_an_unset_mode_is_visibility_and_not_written_back() -> None:
    est = policyfile.load_text(one_workload("{addresses: [10.77.0.1]}"))
    (w,) = est.workloads
    assert (w.mode, w.mode_set) == (workloads.Mode.VISIBILITY, False)
    (doc,) = dumper.documents(est)
    assert "mode" not in doc["spec"]
    assert policyfile.load_text(policyfile.dump(est)) == est


@pytest.mark.parametrize("mode", ["visibility", "alert", "enforce"])
def test_a_written_mode_is_kept_and_written_back(mode: str) -> None:
    est = policyfile.load_text(one_workload(f"{{addresses: [10.77.0.1], mode: {mode}}}"))
    (w,) = est.workloads
    assert (w.mode.value, w.mode_set) == (mode, True)
    (doc,) = dumper.documents(est)
    assert doc["spec"]["mode"] == mode
    (again,) = policyfile.load_text(policyfile.dump(est)).workloads
    assert again.mode_set


def test_first_start_modes_name_the_managed_workloads_that_block_or_alert() -> None:
    text = "---\n".join(
        [
            one_workload("{addresses: [10.77.0.1], mode: enforce}", "b"),
            one_workload("{addresses: [10.77.0.2], mode: enforce}", "a"),
            one_workload("{addresses: [10.77.0.3], mode: alert}", "c"),
            one_workload("{addresses: [10.77.0.4]}", "d"),
            one_workload("{addresses: [10.77.0.5]}", "q", "{quarantine: 'true'}"),
            one_workload("{kind: unmanaged, addresses: [10.78.0.0/24], mode: enforce}", "u"),
        ]
    )
    found = workloads.first_start_modes(policyfile.load_text(text).workloads)
    assert found == {workloads.Mode.ENFORCE: ["a", "b", "q"], workloads.Mode.ALERT: ["c"]}
