"""`microseg template list | show | apply` through Typer, on a root app built here (main.py wires
the same sub-app): tables and JSON, the policy file on stdout or in --out, exit 2 on bad input."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import typer
import yaml
from typer.testing import CliRunner

from microseg import policyfile
from microseg.cli import template
from microseg.templates import catalog

EXAMPLES = Path(str(resources.files("microseg") / "examples" / "estate"))
runner = CliRunner()
app = typer.Typer()


@app.callback()
def root() -> None:
    """A stand-in for `microseg`."""


app.add_typer(template.template_app)


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["template", *args])
    return result.exit_code, result.output


def test_list_shows_every_template_with_its_band() -> None:
    code, out = cli("list")
    assert code == 0, out
    for name in catalog.names():
        assert name in out
    code, out = cli("list", "-o", "json")
    found = {t["name"]: t for t in json.loads(out)}
    assert found["risky-ports"]["bands"] == [{"tier": "security", "first": 2000, "last": 2999}]


def test_show_lists_parameters_with_defaults_and_the_rules_it_makes() -> None:
    code, out = cli("show", "three-tier")
    assert code == 0, out
    assert "db_port" in out and "3306" in out and "required (e.g. crm)" in out
    assert "application/three-tier-crm-prod-app-to-db" in out and "3306/tcp" in out
    code, out = cli("show", "three-tier", "--set", "app=hr", "--set", "db_port=5432")
    assert "application/three-tier-hr-prod-app-to-db" in out and "5432/tcp" in out
    code, out = cli("show", "env-separation")
    assert "invariant env-separation-dev-never-reaches-prod" in out


def test_show_json_has_parameters_and_example_documents() -> None:
    code, out = cli("show", "api-gateway", "-o", "json")
    assert code == 0, out
    data = json.loads(out)
    params = {p["name"]: p for p in data["parameters"]}
    assert params["services"]["required"] and params["service_port"]["default"] == "8080"
    assert {d["kind"] for d in data["example"]["documents"]} == {"Service", "Policy"}


def test_apply_prints_a_policy_file_that_loads_with_the_estate(tmp_path: Path) -> None:
    code, out = cli("apply", "three-tier", "--set", "app=crm", "--set", "env=prod", "--set", "db_port=5432")
    assert code == 0, out
    assert out.startswith(
        "# Made by `microseg template apply three-tier --set app=crm --set env=prod --set db_port=5432`"
    )
    (tmp_path / "t.yaml").write_text(out, encoding="utf-8")
    est = policyfile.load([EXAMPLES, tmp_path / "t.yaml"])
    assert "application/three-tier-crm-prod-app-to-db" in {r.ref for r in est.rules}


def test_apply_json_and_out_file(tmp_path: Path) -> None:
    code, out = cli("apply", "risky-ports", "--set", "env=prod", "-o", "json")
    assert code == 0, out
    docs = json.loads(out)
    assert [d["kind"] for d in docs] == ["Service", "Service", "Service", "Policy"]
    target = tmp_path / "policies" / "risky.yaml"
    code, out = cli("apply", "risky-ports", "--set", "env=prod", "--out", str(target))
    assert code == 0 and f"wrote {target} (4 documents)" in out.replace("\n", "")
    written = list(yaml.safe_load_all(target.read_text(encoding="utf-8")))
    assert written == docs
    assert policyfile.load([target]).rules


def test_bad_input_exits_2_with_a_message_naming_the_parameter() -> None:
    code, out = cli("apply", "three-tier", "--set", "app=crm", "--set", "env=prod", "--set", "db=1")
    assert code == 2 and "unknown parameter 'db'" in out and "known parameters: app, env" in out
    code, out = cli("apply", "three-tier", "--set", "app=crm")
    assert code == 2 and "missing required parameter 'env'" in out
    code, out = cli("apply", "three-tier", "--set", "app")
    assert code == 2 and "expected key=value" in out
    code, out = cli("apply", "three-tier", "--set", "app=a", "--set", "app=b")
    assert code == 2 and "given twice" in out
    code, out = cli("show", "three-teir")
    assert code == 2 and "did you mean 'three-tier'" in out
    code, out = cli("apply", "env-separation", "--set", "prod_env=dev")
    assert code == 2 and "must differ" in out
