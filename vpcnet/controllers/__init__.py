"""Controllers over the Kubernetes API: kube-controllers (the Kubernetes and Calico kinds mirrored into the
etcd datastore, as Calico's etcd install does), its leader election, and the small API client they share."""
