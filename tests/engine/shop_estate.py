"""A small shop estate with one of each mistake the linter finds (shared by the engine, CLI and
server tests of `microseg lint`). Each rule's comment says what the linter must say about it."""

from __future__ import annotations

SHOP = """\
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: shop-web-1, labels: {env: prod, app: shop, role: web}}
spec: {kind: vm, addresses: [10.20.1.11], mode: enforce}
---
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: shop-web-2, labels: {env: prod, app: shop, role: web}}
spec: {kind: vm, addresses: [10.20.1.12], mode: enforce}
---
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: shop-db-1, labels: {env: prod, app: shop, role: db}}
spec: {kind: vm, addresses: [10.20.1.31], mode: enforce}
---
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: shop-cache-1, labels: {env: prod, app: shop, role: cache}}
spec: {kind: vm, addresses: [10.20.1.41], mode: enforce}
---
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: dev-web-1, labels: {env: dev, app: shop, role: web}}
spec: {kind: vm, addresses: [10.20.2.11], mode: enforce}
---
apiVersion: microseg.io/v1
kind: IPList
metadata: {name: partners}
spec: {cidrs: [198.51.100.0/24]}
---
apiVersion: microseg.io/v1
kind: IPList
metadata: {name: old-partners}
spec: {cidrs: [192.0.2.0/24]}
---
apiVersion: microseg.io/v1
kind: Service
metadata: {name: https}
spec: {ports: [{port: 443}]}
---
apiVersion: microseg.io/v1
kind: Service
metadata: {name: mysql}
spec: {ports: [{port: 3306}]}
---
apiVersion: microseg.io/v1
kind: Service
metadata: {name: redis}
spec: {ports: [{port: 6379}]}
---
apiVersion: microseg.io/v1
kind: Service
metadata: {name: legacy-ftp}
spec: {ports: [{port: 21}]}
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: guard-rails}
spec:
  tier: security
  rules:
    - name: dev-never-prod
      priority: 100
      action: deny
      from: [{selector: "env=dev"}]
      to: [{selector: "env=prod"}]
      services: any
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: shop}
spec:
  tier: application
  rules:
    - name: internet-to-web          # fine: only the web servers carry it
      priority: 10
      action: allow
      from: [{cidr: 0.0.0.0/0, except: [10.0.0.0/8]}]
      to: [{selector: "role=web"}]
      services: [https]
    - name: web-to-db                # fine
      priority: 20
      action: allow
      from: [{selector: "role=web"}]
      to: [{selector: "role=db"}]
      services: [mysql]
    - name: web-to-db-again          # redundant: web-to-db already allows it
      priority: 30
      action: allow
      from: [{selector: "env=prod,role=web"}]
      to: [{selector: "role=db"}]
      services: [mysql]
    - name: web-to-cache             # selector matches nothing: did you mean role=cache?
      priority: 40
      action: allow
      from: [{selector: "role=web"}]
      to: [{selector: "rol=cache"}]
      services: [redis]
    - name: prd-to-db                # selector matches nothing: did you mean env=prod?
      priority: 50
      action: allow
      from: [{selector: "env=prd,role=web"}]
      to: [{selector: "role=db"}]
      services: [mysql]
    - name: dev-web-to-db            # allows nothing: the security deny covers it
      priority: 60
      action: allow
      from: [{selector: "env=dev"}]
      to: [{selector: "role=db"}]
      services: [mysql]
    - name: web-no-ssh-db            # fine: the first to decide ssh
      priority: 70
      action: deny
      from: [{selector: "role=web"}]
      to: [{selector: "role=db"}]
      services: [{port: 22}]
    - name: web-to-db-admin          # shadowed: web-to-db allows 3306, web-no-ssh-db denies 22
      priority: 80
      action: allow
      from: [{selector: "env=prod,role=web"}]
      to: [{selector: "role=db"}]
      services: [{port: 22}, {port: 3306}]
    - name: ping-everything          # any-to-any
      priority: 90
      action: allow
      from: [any]
      to: [any]
      services: [{protocol: icmp}]
    - name: partners-to-outside      # enforced nowhere: no managed workload on either side
      priority: 100
      action: allow
      from: [{ipList: partners}]
      to: [{cidr: 203.0.113.0/24}]
      services: [https]
    - name: db-to-db                 # never matches: one db, and it always reaches itself
      priority: 110
      action: allow
      from: [{selector: "role=db"}]
      to: [{selector: "role=db"}]
      services: [mysql]
"""

EXPECTED = {
    ("selector-matches-nothing", "application/web-to-cache"),
    ("selector-matches-nothing", "application/prd-to-db"),
    ("redundant", "application/web-to-db-again"),
    ("allow-under-deny", "application/dev-web-to-db"),
    ("shadowed", "application/web-to-db-admin"),
    ("any-to-any", "application/ping-everything"),
    ("enforced-nowhere", "application/partners-to-outside"),
    ("never-matches", "application/db-to-db"),
    ("unused-ip-list", "old-partners"),
    ("unused-service", "legacy-ftp"),
}
"""(kind, object name) of every finding the shop estate must give, and no other."""
