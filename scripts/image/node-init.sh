#!/bin/sh
# vpcnet-node-init: the vpcnet-node DaemonSet's init container (what aws-node's aws-vpc-cni-init does for the
# plugin files). Copies the CNI plugins this image carries in /opt/cni/bin -- vpcnet-cni (the native client),
# vpcnet-shim/ (its Python fallback, run by the node's /usr/bin/python3) and portmap/loopback -- into the
# node's CNI bin dir, each atomically (a copy beside it, then a rename), so a runtime never executes half a
# file. The network config is written later, by `vpcnet install-cni --conf-only` once the agent is ready.
# The node's sysctls are set by the agent itself at start (vpcnet/dataplane/hostnet.py), their one home.
set -eu
src=/opt/cni/bin
dst=${1:-/host/opt/cni/bin}

put() {
    cp -L "$1" "$2.vpcnet-new"
    chmod "$3" "$2.vpcnet-new"
    mv -f "$2.vpcnet-new" "$2"
}

mkdir -p "$dst/vpcnet-shim/__pycache__"
for f in "$src"/vpcnet-shim/__pycache__/*.pyc; do
    put "$f" "$dst/vpcnet-shim/__pycache__/${f##*/}" 0644
done
put "$src/vpcnet-shim/shim.py" "$dst/vpcnet-shim/shim.py" 0644
# the client last: once it is in place, its fallback is too
for plugin in portmap loopback vpcnet-cni; do
    put "$src/$plugin" "$dst/$plugin" 0755
done
echo "vpcnet-node-init: installed vpcnet-cni, vpcnet-shim, portmap and loopback into $dst"
