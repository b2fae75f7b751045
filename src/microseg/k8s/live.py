"""`--kubeconfig`: a live cluster's Namespaces, Pods and NetworkPolicies -> one `cluster.Cluster`.

    kubeconfig --kubernetes.config--> ApiClient (server URL, credentials, TLS)
               --_list_all----------> raw JSON list items, apiVersion/kind put back on each
               --manifests.from_objects--> Cluster, exactly as the same objects read from files

Fed by `microseg k8s import --kubeconfig` and friends; feeds the same analysis and import as
manifests do. Uses the official `kubernetes` client, an optional extra (`microseg[k8s]`), imported
only when a live cluster is asked for. Responses are read as raw JSON rather than client models:
the v37 models silently drop fields they do not know, and files are read as plain data too, so
both paths see the same objects. Lists are read in pages (`limit`/`continue`), as kubectl does, so
a large cluster never needs one huge response.

Failures a person can fix (no client installed, a broken kubeconfig, 401/403, a server that is not
a Kubernetes API) are UserError; an unreachable or overloaded server is TransientError.

What it deliberately does not do: watch, write, or read controllers (a live cluster has its Pod
objects) and other CNIs' policy kinds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from microseg import errors
from microseg.k8s import cluster, manifests

if TYPE_CHECKING:
    from kubernetes import client as k8s_client

PAGE_SIZE = 500
"""Items per list request (kubectl's default chunk size)."""

REQUEST_TIMEOUT = (10.0, 60.0)
"""Seconds to connect and to read one page: a silent server fails instead of hanging the command."""

INSTALL_HINT = "pip install 'microseg[k8s]'"


@dataclass(frozen=True)
class Resource:
    """One kind read from the cluster: what its items are, and which client call lists them."""

    api_version: str
    kind: str
    api: str
    method: str


RESOURCES = (
    Resource("v1", "Namespace", "CoreV1Api", "list_namespace"),
    Resource("v1", "Pod", "CoreV1Api", "list_pod_for_all_namespaces"),
    Resource(
        "networking.k8s.io/v1", "NetworkPolicy", "NetworkingV1Api", "list_network_policy_for_all_namespaces"
    ),
)


def read_cluster(kubeconfig: str | None = None, context: str | None = None) -> cluster.Cluster:
    """The cluster the kubeconfig (default: $KUBECONFIG or ~/.kube/config) and context point at."""
    _require_client()
    api = _api_client(kubeconfig, context)
    server = str(api.configuration.host)
    with api:
        objects = [obj for resource in RESOURCES for obj in _read(api, server, resource)]
    return manifests.from_objects(objects, source=server)


def _require_client() -> None:
    """Nothing, or a UserError saying how to install the client."""
    try:
        import kubernetes  # noqa: F401
    except ImportError as exc:
        raise errors.UserError(
            "reading a live cluster needs the official Kubernetes client, which is not installed: "
            + INSTALL_HINT
        ) from exc


def _api_client(kubeconfig: str | None, context: str | None) -> k8s_client.ApiClient:
    """An ApiClient for the kubeconfig's context; a kubeconfig that cannot be used is a UserError."""
    import yaml
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config

    where = kubeconfig or k8s_config.KUBE_CONFIG_DEFAULT_LOCATION
    settings = k8s_client.Configuration()
    try:
        # persist_config=False: reading a cluster must never rewrite the user's kubeconfig.
        # The client's config module has no type annotations.
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=settings, persist_config=False
        )
    except (k8s_config.ConfigException, yaml.YAMLError, OSError, ValueError) as exc:
        raise errors.UserError(f"kubeconfig {where}: {_one_line(exc)}") from exc
    return k8s_client.ApiClient(settings)


def _read(api: k8s_client.ApiClient, server: str, resource: Resource) -> list[dict[str, Any]]:
    """Every item of one kind, as plain data with apiVersion and kind (list items lack both)."""
    from kubernetes import client as k8s_client

    call: Callable[..., Any] = getattr(getattr(k8s_client, resource.api)(api), resource.method)
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = _page(call, token, server, resource)
        kind = {"apiVersion": resource.api_version, "kind": resource.kind}
        items.extend({**kind, **item} for item in page["items"])
        token = page["metadata"].get("continue") or None
        if token is None:
            return items


def _page(call: Callable[..., Any], token: str | None, server: str, resource: Resource) -> dict[str, Any]:
    """One page of a list, checked to be a list; every failure becomes one of our errors."""
    import urllib3
    from kubernetes import client as k8s_client

    extra = {"_continue": token} if token else {}
    try:
        response = call(limit=PAGE_SIZE, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **extra)
        body = response.data
    except k8s_client.ApiException as exc:
        raise _refused(exc, server, resource) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise errors.TransientError(
            f"cannot reach the Kubernetes API server at {server}: {_reason(exc)}"
        ) from exc
    return _list_body(body, server, resource)


def _list_body(body: bytes, server: str, resource: Resource) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("items", []), list):
        raise errors.UserError(
            f"{server} did not answer the {resource.kind} list with a Kubernetes list; "
            "is the kubeconfig's server a Kubernetes API server?"
        )
    metadata = data.get("metadata")
    items = [item for item in data.get("items") or [] if isinstance(item, dict)]
    return {"items": items, "metadata": metadata if isinstance(metadata, dict) else {}}


def _refused(exc: k8s_client.ApiException, server: str, resource: Resource) -> errors.MicrosegError:
    """The error for a non-2xx answer (status 0: the client's own TLS failure)."""
    status = int(exc.status or 0)
    said = _status_message(exc.body) or _one_line(exc.reason or "")
    what = f"listing {resource.kind} objects at {server}"
    if status == 0:
        return errors.UserError(f"{what} failed before any answer ({said}); check the kubeconfig's TLS")
    if status == 401:
        return errors.UserError(
            f"{what}: 401 Unauthorized ({said}); the kubeconfig's credentials are refused"
        )
    if status == 403:
        return errors.UserError(
            f"{what}: 403 Forbidden ({said}); the user needs list on namespaces, pods and networkpolicies"
        )
    if status in (408, 410, 429) or status >= 500:
        # 410: a continue token expired mid-list; starting over later gives a consistent list.
        return errors.TransientError(f"{what}: {status} ({said}); try again later")
    return errors.UserError(f"{what}: {status} ({said})")


def _status_message(body: Any) -> str:
    """The `message` of the Status object an API server sends with an error, if there is one."""
    try:
        data = json.loads(body) if body else None
    except (TypeError, ValueError):
        return ""
    return _one_line(data.get("message", "")) if isinstance(data, dict) else ""


def _reason(exc: Exception) -> str:
    """What went wrong under urllib3's retry wrapper (`Connection refused`, a timeout, ...)."""
    inner = getattr(exc, "reason", None)
    return _one_line(inner if inner is not None else exc)


def _one_line(value: object) -> str:
    return " ".join(str(value).split())
