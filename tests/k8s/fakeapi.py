"""A stand-in Kubernetes API server for `microseg.k8s.live`: real HTTP on 127.0.0.1, list endpoints only.

No API server can run on this machine, so `FakeApi` serves, from a background thread, what the
official client asks for when it lists Namespaces, Pods and NetworkPolicies: `GET
/api/v1/namespaces`, `/api/v1/pods` and `/apis/networking.k8s.io/v1/networkpolicies`, with `limit`
and `continue` honoured as an API server honours them. Answers have the shape a real server gives
(kind/apiVersion on the list, none on the items; uid, resourceVersion, creationTimestamp,
managedFields; status.podIP/podIPs; defaults filled in); errors are `Status` objects. Every request
must carry the kubeconfig's bearer token (401 otherwise); paths in `refuse` answer with their
status (403 Forbidden, 503 ServiceUnavailable, ...) instead.

`RECORDED` holds the objects served by default, written in that recorded shape.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "microseg-test-token"

LISTS = {
    "/api/v1/namespaces": ("v1", "NamespaceList"),
    "/api/v1/pods": ("v1", "PodList"),
    "/apis/networking.k8s.io/v1/networkpolicies": ("networking.k8s.io/v1", "NetworkPolicyList"),
}
"""Path -> (apiVersion, kind) of the list the path answers with."""


def _meta(name: str, uid: int, namespace: str | None = None, **more: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta.update(
        uid=f"6f1c{uid:04d}-8a3e-4c1b-9d2e-0242ac11{uid:04d}",
        resourceVersion=str(1000 + uid),
        creationTimestamp="2025-03-04T09:12:41Z",
        **more,
    )
    meta["managedFields"] = [
        {"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "v1",
         "time": "2025-03-04T09:12:41Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}},
    ]  # fmt: skip
    return meta


def _namespace(name: str, uid: int, labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "metadata": _meta(name, uid, labels={"kubernetes.io/metadata.name": name, **labels}),
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def _pod(namespace: str, name: str, uid: int, labels: Mapping[str, str], ips: list[str],
         ports: list[dict[str, Any]], phase: str = "Running") -> dict[str, Any]:  # fmt: skip
    status: dict[str, Any] = {"phase": phase, "hostIP": "192.168.49.2", "hostIPs": [{"ip": "192.168.49.2"}],
                              "startTime": "2025-03-04T09:12:43Z", "qosClass": "BestEffort",
                              "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": None,
                                              "lastTransitionTime": "2025-03-04T09:12:50Z"}]}  # fmt: skip
    if ips:
        status.update(podIP=ips[0], podIPs=[{"ip": ip} for ip in ips])
    return {
        "metadata": _meta(
            name, uid, namespace, labels=dict(labels), generateName=name.rsplit("-", 1)[0] + "-"
        ),
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": f"registry.example/{name.split('-', maxsplit=1)[0]}:1.0",
                    "ports": ports,
                    "resources": {},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent",
                }
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "nodeName": "node-1",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": status,
    }


def _policy(namespace: str, name: str, uid: int, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": _meta(name, uid, namespace, generation=1), "spec": spec}


RECORDED: dict[str, list[dict[str, Any]]] = {
    "/api/v1/namespaces": [
        _namespace("default", 1, {}),
        _namespace("kube-system", 2, {}),
        _namespace("shop", 3, {"env": "prod", "team": "checkout"}),
    ],
    "/api/v1/pods": [
        _pod(
            "kube-system",
            "coredns-668d6bf9bc-7xk2p",
            10,
            {"k8s-app": "kube-dns", "pod-template-hash": "668d6bf9bc"},
            ["10.244.0.2"],
            [
                {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
            ],
        ),
        _pod(
            "shop",
            "web-7d4b9c8f5d-x2x9q",
            11,
            {"app": "web", "pod-template-hash": "7d4b9c8f5d"},
            ["10.244.1.5", "fd00:10:244:1::5"],
            [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        ),
        _pod(
            "shop",
            "db-0",
            12,
            {"app": "db", "statefulset.kubernetes.io/pod-name": "db-0"},
            ["10.244.2.7"],
            [{"name": "pg", "containerPort": 5432, "protocol": "TCP"}],
        ),
        _pod("shop", "migrate-8kq2n", 13, {"job-name": "migrate"}, [], [], phase="Succeeded"),
        _pod("shop", "report-5f6d7c-abcde", 14, {"app": "report"}, [], [], phase="Pending"),
    ],
    "/apis/networking.k8s.io/v1/networkpolicies": [
        _policy("shop", "default-deny", 20, {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        _policy(
            "shop",
            "web-to-db",
            21,
            {
                "podSelector": {"matchLabels": {"app": "db"}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                        "ports": [{"protocol": "TCP", "port": "pg"}],
                    }
                ],
            },
        ),
        _policy(
            "shop",
            "dns",
            22,
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                                },
                                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                            }
                        ],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                    },
                    {
                        "to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16"]}}],
                        "ports": [{"protocol": "TCP", "port": 8000, "endPort": 8100}],
                    },
                ],
            },
        ),
    ],
}


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    """The `Status` object an API server answers an error with."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}  # fmt: skip


def refusal(code: int, resource: str) -> dict[str, Any]:
    """The Status a real API server sends for `code` when listing `resource`."""
    if code == 403:
        return status(403, "Forbidden", f'{resource} is forbidden: User "system:serviceaccount:ci:reader" '
                      f'cannot list resource "{resource}" in API group "" at the cluster scope')  # fmt: skip
    if code == 429:
        return status(
            429,
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        )
    return status(code, "ServiceUnavailable", "the server is currently unable to handle the request")


@dataclass
class FakeApi:
    """What the server serves and what it saw; `url` is set while it runs."""

    objects: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: RECORDED)
    token: str = TOKEN
    refuse: Mapping[str, int] = field(default_factory=dict)
    """Path -> the error status it answers with."""
    requests: list[str] = field(default_factory=list)
    """Path and query of every request, in order."""
    url: str = ""

    def answer(self, path: str, query: Mapping[str, list[str]], authorization: str | None) -> tuple[int, Any]:
        """(HTTP status, JSON body) for one GET."""
        if authorization != f"Bearer {self.token}":
            return 401, status(401, "Unauthorized", "Unauthorized")
        if path in self.refuse:
            return self.refuse[path], refusal(self.refuse[path], path.rsplit("/", 1)[-1])
        if path not in LISTS:
            return 404, status(404, "NotFound", "the server could not find the requested resource")
        return 200, self._page(path, query)

    def _page(self, path: str, query: Mapping[str, list[str]]) -> dict[str, Any]:
        items = self.objects.get(path, [])
        start = int(query.get("continue", ["0"])[0])
        limit = int(query.get("limit", [str(len(items) or 1)])[0])
        page = items[start : start + limit]
        api_version, kind = LISTS[path]
        meta: dict[str, Any] = {"resourceVersion": "4242"}
        if start + limit < len(items):
            # Real servers send an opaque token; an offset keeps the fake simple.
            meta["continue"] = str(start + limit)
            meta["remainingItemCount"] = len(items) - start - limit
        return {"kind": kind, "apiVersion": api_version, "metadata": meta, "items": page}


def _handler(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            api.requests.append(self.path)
            code, body = api.answer(parts.path, parse_qs(parts.query), self.headers.get("Authorization"))
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: pytest would show every request on stderr."""

    return Handler


@contextmanager
def serving(api: FakeApi) -> Iterator[FakeApi]:
    """Serve `api` on a free port of 127.0.0.1 until the block ends, whatever happens in it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    # A short poll interval: shutdown() waits for the next poll, and every test stops a server.
    thread = threading.Thread(
        target=server.serve_forever, args=(0.01,), name="fake-kube-apiserver", daemon=True
    )
    thread.start()
    try:
        api.url = f"http://127.0.0.1:{server.server_port}"
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def kubeconfig(server: str, token: str = TOKEN, context: str = "test") -> str:
    """A kubeconfig document for `server` with a bearer token."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "reader", "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": "fake", "user": "reader"}}],
    }, indent=2)  # fmt: skip
