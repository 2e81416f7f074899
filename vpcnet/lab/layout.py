"""Names and paths every lab object uses. All of them carry the lab's prefix, so that `lab down` and the
tests can remove exactly what the lab made, by name, and nothing else."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PREFIX = "vpcl"
# The lab's own settings (the lab tool's and the CLI's, never the agent's): which lab, and where it lives.
PREFIX_ENV = "VPCNET_LAB"
RUN_ROOT = Path(os.environ.get("VPCNET_RUN_ROOT", "/run/vpcnet"))
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{1,7}$")

# Addresses inside the VPC that the lab's control plane answers on (in the VPC namespace).
IMDS_ADDRESS = "169.254.169.254"
EC2_ENDPOINT_ADDRESS = "10.0.255.254"  # the VPC interface endpoint for EC2 (last host of the default VPC)
ETCD_ENDPOINT_ADDRESS = "10.0.255.253"  # the datastore, as nodes reach it
KUBEAPI_ADDRESS = "10.0.255.252"  # the lab's Kubernetes API, as nodes reach it (plain HTTP)
KUBEAPI_PORT = 6443
INTERNET_CIDR = "198.51.100.0/24"  # TEST-NET-2 stands for the internet, behind the VPC router


def check_prefix(prefix: str) -> str:
    if not _PREFIX_RE.match(prefix):
        raise ValueError(
            f"lab prefix {prefix!r} must be 2-8 lowercase letters or digits, starting with a letter"
        )
    return prefix


def layout_for(prefix: str | None = None) -> LabLayout:
    """The lab named by `prefix`, else by VPCNET_LAB, else the default; ValueError for a bad name."""
    return LabLayout(check_prefix(prefix or os.environ.get(PREFIX_ENV) or DEFAULT_PREFIX))


@dataclass(frozen=True)
class LabLayout:
    prefix: str = DEFAULT_PREFIX

    @property
    def run_dir(self) -> Path:
        return RUN_ROOT / self.prefix

    @property
    def state_file(self) -> Path:
        """The lab's description: nodes, instance ids, endpoint URLs (written by `lab up`)."""
        return self.run_dir / "lab.json"

    @property
    def ec2_state_file(self) -> Path:
        return self.run_dir / "ec2-state.json"

    @property
    def vpc_netns(self) -> str:
        return f"{self.prefix}-vpc"

    @property
    def internet_netns(self) -> str:
        return f"{self.prefix}-inet"

    def node_netns(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    def pod_netns(self, namespace: str, pod: str) -> str:
        return f"{self.prefix}-pod-{namespace}-{pod}"

    @property
    def kubeconfig(self) -> Path:
        """kubectl's kubeconfig for the lab: the API on the host loopback (written by `lab up`)."""
        return self.run_dir / "kubeconfig"

    @property
    def node_kubeconfig(self) -> Path:
        """The kubeconfig of what runs on the nodes: the API at its VPC address."""
        return self.run_dir / "kubeconfig-node"

    def node_dir(self, node: str) -> Path:
        return self.run_dir / "nodes" / node

    def agent_socket(self, node: str) -> Path:
        return self.node_dir(node) / "agent.sock"

    def agent_log(self, node: str) -> Path:
        return self.node_dir(node) / "agent.log"

    def cni_bin_dir(self, node: str) -> Path:
        return self.node_dir(node) / "cni" / "bin"

    def cni_conf_dir(self, node: str) -> Path:
        return self.node_dir(node) / "cni" / "net.d"

    def checkpoint_file(self, node: str) -> Path:
        return self.node_dir(node) / "ipam-checkpoint.json"

    def owns_netns(self, name: str) -> bool:
        return name.startswith(f"{self.prefix}-")
