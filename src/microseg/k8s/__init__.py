"""Kubernetes: manifests -> cluster, exact NetworkPolicy reachability, pods as workloads, export.

    manifests (files) --manifests--> Cluster (namespaces, pods, NetworkPolicies)
        Cluster --reachability--> verdicts per pod pair and port, each with its reason
        Cluster --importer------> microseg workloads of kind `pod` (labels, namespace labels)
        Estate + Cluster --export--> NetworkPolicy | Calico | Cilium manifests, or a refusal

Everything here is pure except reading files (`manifests.load`) and the optional API client
(`microseg.k8s.live`). Docs: docs/kubernetes.md.
"""
