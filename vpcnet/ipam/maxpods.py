"""The max-pods formula of the EKS AMI calculator (max-pods-calculator.sh)."""

from __future__ import annotations

from vpcnet.ipam.limits import InstanceLimits

PREFIX_SIZE = 16  # a /28 prefix holds 16 addresses and takes one address slot
SMALL_NODE_CAP = 110  # kubelet's default, used below 31 vCPUs
LARGE_NODE_CAP = 250  # the calculator's ceiling from 31 vCPUs up
LARGE_NODE_VCPUS = 31


class MaxPodsError(ValueError):
    pass


def usable_enis(limits: InstanceLimits, *, custom_networking: bool, max_eni: int | None) -> int:
    enis = limits.enis_on_default_card
    if max_eni is not None:
        enis = min(enis, max_eni)
    if custom_networking:
        enis -= 1  # the primary ENI stays on the node's subnet and carries no pods
    return enis


def max_pods(
    limits: InstanceLimits,
    *,
    prefix_delegation: bool = False,
    custom_networking: bool = False,
    max_eni: int | None = None,
    cap: bool = True,
    ipv6: bool = False,
    pod_eni: bool = False,
) -> int:
    """`ipv6`: the VPC CNI's IPv6 mode requires prefix delegation, so the number is the calculator's with
    prefix delegation on (what EKS has IPv6 nodes run), capped as always; the /80 itself never limits.
    `pod_eni`: security groups for pods (ENABLE_POD_ENI): the trunk ENI takes one ENI slot from the address
    pool (as ipamd leaves it one), and each branch ENI the type takes carries one pod."""
    if ipv6:
        if limits.ipv6_per_eni < 1:
            raise MaxPodsError(f"{limits.name} does not support IPv6")
        prefix_delegation = True
    if prefix_delegation and not limits.is_nitro:
        raise MaxPodsError(f"{limits.name} is not a Nitro instance type: prefix delegation is not available")
    enis = usable_enis(limits, custom_networking=custom_networking, max_eni=max_eni)
    branches = 0
    if pod_eni:
        if not limits.trunking or not limits.branch_interfaces:
            raise MaxPodsError(
                f"{limits.name} takes no trunk ENI: security groups for pods are not available"
            )
        enis -= 1
        branches = limits.branch_interfaces
    if enis < 1:
        raise MaxPodsError(
            f"{limits.name}: no ENI is left for pods' addresses (custom networking and a trunk take one each)"
        )
    slots = limits.ipv4_per_eni - 1  # the primary address of each ENI is not for pods
    per_eni = slots * PREFIX_SIZE if prefix_delegation else slots
    # +2 for the host-network pods (aws-node and kube-proxy) that need no VPC address
    n = enis * per_eni + 2 + branches
    if cap:
        n = min(n, SMALL_NODE_CAP if limits.vcpus < LARGE_NODE_VCPUS else LARGE_NODE_CAP)
    return n
