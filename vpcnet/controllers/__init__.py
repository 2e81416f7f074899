"""Controllers over the Kubernetes API: kube-controllers (the Kubernetes and Calico kinds mirrored into the
etcd datastore, as Calico's etcd install does) and its leader election. They reach the API through the
datastore's Kubernetes store (vpcnet/datastore/kube.py)."""
