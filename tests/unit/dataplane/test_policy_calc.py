"""The calculation: local endpoints, the ordered policies per endpoint, selector members, incrementally."""

from __future__ import annotations

from typing import Any

from vpcnet.api.core import Namespace, Pod
from vpcnet.api.loader import load_documents
from vpcnet.dataplane import names
from vpcnet.dataplane.names import host_veth_name
from vpcnet.dataplane.policy_calc import PolicyCalculator
from vpcnet.policy.compile import compile_policy


def pod(name: str, ip: str | None, node: str = "n1", ns: str = "default", **labels: str) -> Pod:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "image": "x", "ports": [{"name": "http", "containerPort": 8080}]}],
        },
        "status": {"podIP": ip, "podIPs": [{"ip": ip}]} if ip else {},
    }
    (resource,) = load_documents_from(doc)
    assert isinstance(resource, Pod)
    return resource


def load_documents_from(doc: dict[str, Any]) -> list[Any]:
    import yaml

    return load_documents(yaml.safe_dump(doc))


def k8s_policy(name: str, ns: str, selector: dict[str, str], ingress_from: dict[str, str], port: Any) -> Any:
    doc = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": ingress_from}}], "ports": [{"port": port}]}
            ],
        },
    }
    (resource,) = load_documents_from(doc)
    return compile_policy(resource)


def namespace(name: str, **labels: str) -> Namespace:
    (resource,) = load_documents_from(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    )
    assert isinstance(resource, Namespace)
    return resource


def test_local_endpoints_get_veths_named_like_the_cni() -> None:
    calc = PolicyCalculator("n1", ["eni"])
    calc.upsert_pod(pod("a", "10.0.0.1"))
    calc.upsert_pod(pod("b", "10.0.0.2", node="n2"))
    calc.upsert_pod(pod("c", None))
    state = calc.desired()
    assert list(state.endpoints) == [host_veth_name("eni", "default", "a")]
    assert host_veth_name("eni", "namespace", "podname") == "eni82111e10a96"  # Calico's own test vector
    endpoint = state.endpoints[host_veth_name("eni", "default", "a")]
    assert endpoint.addresses == ("10.0.0.1/32",) and endpoint.ingress == () and endpoint.egress == ()


def test_policy_selects_local_endpoint_and_sets_track_cluster_members_incrementally() -> None:
    calc = PolicyCalculator("n1", ["eni"])
    calc.upsert_namespace(namespace("default"))
    calc.upsert_pod(pod("web", "10.0.0.1", app="web"))
    calc.upsert_pod(pod("client", "10.0.1.1", node="n2", role="client"))
    calc.upsert_policy(k8s_policy("allow", "default", {"app": "web"}, {"role": "client"}, 80))
    state = calc.desired()
    web = state.endpoints[host_veth_name("eni", "default", "web")]
    assert [t.policy_ids for t in web.ingress] == [("knp/default/allow",)]
    assert web.egress == ()
    (chain,) = state.policies.values()
    (rule,) = chain.rules
    (set_name,) = rule.src_sets
    assert set_name.startswith(names.IPSET_PREFIX + "s-")
    assert state.ipsets[set_name].members == frozenset({"10.0.1.1/32"})
    # A label change elsewhere in the cluster: only that set changes; everything else is the same object.
    calc.upsert_pod(pod("other", "10.0.2.2", node="n3", role="client"))
    after = calc.desired()
    assert after.ipsets[set_name].members == frozenset({"10.0.1.1/32", "10.0.2.2/32"})
    assert after.endpoints[web.iface] is web
    assert after.policies[("knp/default/allow", "ingress")] is chain
    calc.upsert_pod(pod("other", "10.0.2.2", node="n3", role="nobody"))
    assert calc.desired().ipsets[set_name].members == frozenset({"10.0.1.1/32"})
    calc.delete_pod("default/client")
    assert calc.desired().ipsets[set_name].members == frozenset()


def test_policy_not_selecting_local_pods_is_not_rendered_and_deleting_deactivates() -> None:
    calc = PolicyCalculator("n1", ["eni"])
    calc.upsert_pod(pod("web", "10.0.0.1", app="web"))
    calc.upsert_policy(k8s_policy("elsewhere", "default", {"app": "db"}, {"role": "x"}, 5432))
    assert calc.desired().policies == {} and calc.desired().ipsets == {}
    calc.upsert_policy(k8s_policy("here", "default", {"app": "web"}, {"role": "x"}, 80))
    assert set(calc.desired().policies) == {("knp/default/here", "ingress")}
    calc.delete_policy("knp/default/here")
    state = calc.desired()
    assert state.policies == {} and state.ipsets == {}
    assert state.endpoints[host_veth_name("eni", "default", "web")].ingress == ()


def test_named_port_becomes_ip_port_set() -> None:
    calc = PolicyCalculator("n1", ["eni"])
    calc.upsert_pod(pod("web", "10.0.0.1", app="web"))
    calc.upsert_policy(k8s_policy("named", "default", {"app": "web"}, {"role": "client"}, "http"))
    (chain,) = calc.desired().policies.values()
    (rule,) = chain.rules
    (named,) = rule.dst_ports.named_sets
    assert calc.desired().ipsets[named].kind == "hash:ip,port"
    assert calc.desired().ipsets[named].members == frozenset({"10.0.0.1,tcp:8080"})


def test_namespace_label_change_moves_pods_between_sets() -> None:
    calc = PolicyCalculator("n1", ["eni"])
    calc.upsert_namespace(namespace("default"))
    calc.upsert_namespace(namespace("other", team="a"))
    calc.upsert_pod(pod("web", "10.0.0.1", app="web"))
    calc.upsert_pod(pod("peer", "10.0.5.5", node="n2", ns="other"))
    doc = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "from-team-b", "namespace": "default"},
        "spec": {
            "podSelector": {},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}],
        },
    }
    (resource,) = load_documents_from(doc)
    calc.upsert_policy(compile_policy(resource))
    (chain,) = calc.desired().policies.values()
    (set_name,) = chain.rules[0].src_sets
    assert calc.desired().ipsets[set_name].members == frozenset()
    calc.upsert_namespace(namespace("other", team="b"))
    assert calc.desired().ipsets[set_name].members == frozenset({"10.0.5.5/32"})
