"""A Kubernetes API stand-in for the lab, served over its etcd."""
