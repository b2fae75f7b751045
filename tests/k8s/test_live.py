"""Reading a live cluster with `--kubeconfig`: the official client against a real HTTP server gives
the same cluster as the same objects in a file; every failure is one of our errors, never a traceback."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from microseg import errors
from microseg.k8s import live, manifests
from tests.k8s import fakeapi

KINDS = {
    "/api/v1/namespaces": ("v1", "Namespace"),
    "/api/v1/pods": ("v1", "Pod"),
    "/apis/networking.k8s.io/v1/networkpolicies": ("networking.k8s.io/v1", "NetworkPolicy"),
}


@pytest.fixture
def api() -> Iterator[fakeapi.FakeApi]:
    with fakeapi.serving(fakeapi.FakeApi()) as running:
        yield running


def write_kubeconfig(tmp_path: Path, server: str, token: str = fakeapi.TOKEN) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(fakeapi.kubeconfig(server, token))
    return str(path)


def as_yaml(objects: dict[str, list[dict[str, Any]]]) -> str:
    """The served objects as a `kubectl get -o yaml` user would save them: with apiVersion and kind."""
    docs = [{"apiVersion": KINDS[path][0], "kind": KINDS[path][1], **item}
            for path, items in objects.items() for item in items]  # fmt: skip
    return yaml.safe_dump_all(docs, sort_keys=False)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_live_cluster_reads_like_the_same_objects_in_a_file(api: fakeapi.FakeApi, tmp_path: Path) -> None:
    found = live.read_cluster(write_kubeconfig(tmp_path, api.url))
    assert found == manifests.load_text(as_yaml(fakeapi.RECORDED))
    assert [p.ref for p in found.pods] == [
        "kube-system/coredns-668d6bf9bc-7xk2p", "shop/db-0", "shop/report-5f6d7c-abcde", "shop/web-7d4b9c8f5d-x2x9q",
    ]  # fmt: skip
    assert [str(ip) for ip in found.pods[3].ips] == ["10.244.1.5", "fd00:10:244:1::5"]
    assert [p.ref for p in found.policies] == ["shop/default-deny", "shop/web-to-db", "shop/dns"]
    assert dict(found.namespace_labels("shop"))["env"] == "prod"


def test_each_kind_is_listed_across_all_namespaces(api: fakeapi.FakeApi, tmp_path: Path) -> None:
    live.read_cluster(write_kubeconfig(tmp_path, api.url))
    assert [r.split("?")[0] for r in api.requests] == list(fakeapi.LISTS)


def test_lists_are_read_page_by_page(
    api: fakeapi.FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "PAGE_SIZE", 2)
    found = live.read_cluster(write_kubeconfig(tmp_path, api.url))
    assert found == manifests.load_text(as_yaml(fakeapi.RECORDED))
    pods = [r for r in api.requests if r.startswith("/api/v1/pods")]
    assert len(pods) == 3 and "continue=2" in pods[1] and "continue=4" in pods[2]


def test_the_context_chooses_the_cluster(api: fakeapi.FakeApi, tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(fakeapi.kubeconfig(api.url, context="lab"))
    assert live.read_cluster(str(path), context="lab").pods
    with pytest.raises(errors.UserError, match=r"kubeconfig .*kubeconfig: .*prod"):
        live.read_cluster(str(path), context="prod")


def test_a_wrong_token_is_a_user_error_naming_401(api: fakeapi.FakeApi, tmp_path: Path) -> None:
    with pytest.raises(errors.UserError, match=r"401 Unauthorized") as caught:
        live.read_cluster(write_kubeconfig(tmp_path, api.url, token="stolen"))
    assert api.url in str(caught.value) and "credentials" in str(caught.value)


def test_a_forbidden_list_is_a_user_error_naming_403_and_what_the_server_said(tmp_path: Path) -> None:
    forbidding = fakeapi.FakeApi(refuse={"/api/v1/pods": 403})
    with fakeapi.serving(forbidding) as running, pytest.raises(errors.UserError) as caught:
        live.read_cluster(write_kubeconfig(tmp_path, running.url))
    message = str(caught.value)
    assert "403 Forbidden" in message and 'cannot list resource "pods"' in message and "Pod" in message


def test_an_unreachable_server_is_transient(tmp_path: Path) -> None:
    server = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(
        errors.TransientError, match=r"cannot reach the Kubernetes API server at http://127\.0\.0\.1:\d+"
    ):
        live.read_cluster(write_kubeconfig(tmp_path, server))


@pytest.mark.parametrize("code", [429, 503])
def test_an_overloaded_server_is_transient(tmp_path: Path, code: int) -> None:
    busy = fakeapi.FakeApi(refuse={"/apis/networking.k8s.io/v1/networkpolicies": code})
    with fakeapi.serving(busy) as running, pytest.raises(errors.TransientError) as caught:
        live.read_cluster(write_kubeconfig(tmp_path, running.url))
    assert f"listing NetworkPolicy objects at {running.url}: {code}" in str(caught.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(None, "No configuration found", id="missing-file"),
        pytest.param("", "is empty", id="empty-file"),
        pytest.param("clusters: [\n", "expected", id="not-yaml"),
        pytest.param("apiVersion: v1\nkind: Config\nclusters: []\n", "current-context", id="no-context"),
    ],
)
def test_a_kubeconfig_that_cannot_be_used_is_a_user_error_naming_it(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    path = tmp_path / "kubeconfig"
    if content is not None:
        path.write_text(content)
    with pytest.raises(errors.UserError, match=expected) as caught:
        live.read_cluster(str(path))
    assert str(caught.value).startswith(f"kubeconfig {path}:")


def test_a_server_that_is_not_an_api_server_is_a_user_error(api: fakeapi.FakeApi, tmp_path: Path) -> None:
    with pytest.raises(errors.UserError, match=r"listing Namespace objects .*: 404"):
        live.read_cluster(write_kubeconfig(tmp_path, api.url + "/not-kubernetes"))


def test_invalid_objects_are_reported_against_the_server(tmp_path: Path) -> None:
    pod = {"metadata": {"name": "web", "namespace": "shop"}, "status": {"podIP": "10.244.1.300"}}
    broken = {**fakeapi.RECORDED, "/api/v1/pods": [pod]}
    with (
        fakeapi.serving(fakeapi.FakeApi(objects=broken)) as running,
        pytest.raises(errors.ManifestError) as caught,
    ):
        live.read_cluster(write_kubeconfig(tmp_path, running.url))
    assert [str(p) for p in caught.value.problems] == [
        f"{running.url}: document 4 (Pod shop/web) status.podIP: '10.244.1.300' is not an IP address"
    ]


def test_without_the_client_the_error_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes", None)
    with pytest.raises(errors.UserError, match=r"pip install 'microseg\[k8s\]'"):
        live.read_cluster(str(tmp_path / "kubeconfig"))
