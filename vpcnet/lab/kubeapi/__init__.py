"""The lab's Kubernetes API: a stand-in for kube-apiserver over the lab's etcd.

No kube-apiserver can be installed on the lab's machines, so the lab serves the part of the API that the
agents, the lab kubelet, kubectl and the official Python client use, stored the way the real server stores
it: objects under `/registry/...`, resourceVersion = the etcd revision, watches from a revision with 410
Expired after a compaction. What it does not serve it answers with a `Status` (404, 405, 415), never with a
wrong answer.

Modules: errors (Status objects), resources (the served kinds, CRDs), selectors, admission (defaulting and
validation), schema (CRD openAPIV3Schema checks), storage (objects in etcd), watch (event streams),
discovery, handlers (the REST verbs), httpd (asyncio HTTP/1.1), server (serve + CLI), kubeconfig.
"""
