"""Strategic merge patch as kube-apiserver applies it: merge keys, sets, directives, errors with paths."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpcnet.lab.kubeapi.patch import PatchError, apply_merge_patch, apply_strategic_merge_patch
from vpcnet.lab.kubeapi.patch_keys import MERGED_LISTS, known_kinds, schema_for


def pod(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": spec,
    }


def smp(doc: dict[str, Any], patch: Any, kind: str = "v1/Pod") -> dict[str, Any]:
    return apply_strategic_merge_patch(doc, patch, kind)


def names(items: list[dict[str, Any]], key: str = "name") -> list[Any]:
    return [item[key] for item in items]


# ---------------------------------------------------------------- kinds and the table


def test_every_kind_of_the_brief_is_known() -> None:
    assert set(known_kinds()) == {
        "v1/Pod",
        "v1/Namespace",
        "v1/Node",
        "v1/ServiceAccount",
        "v1/ConfigMap",
        "v1/Event",
        "networking.k8s.io/v1/NetworkPolicy",
        "coordination.k8s.io/v1/Lease",
        "apiextensions.k8s.io/v1/CustomResourceDefinition",
        # stored for deploy/'s objects
        "apps/v1/Deployment",
        "apps/v1/DaemonSet",
        "policy/v1/PodDisruptionBudget",
        "rbac.authorization.k8s.io/v1/ClusterRole",
        "rbac.authorization.k8s.io/v1/ClusterRoleBinding",
        "rbac.authorization.k8s.io/v1/Role",
        "rbac.authorization.k8s.io/v1/RoleBinding",
    }
    # A Deployment's pod template merges containers by name, as a Pod's spec does.
    merged = apply_strategic_merge_patch(
        {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b"}]}}}},
        {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "y"}]}}}},
        "apps/v1/Deployment",
    )
    assert merged["spec"]["template"]["spec"]["containers"] == [{"name": "a", "image": "y"}, {"name": "b"}]
    for kind in known_kinds():
        schema = schema_for(kind)
        assert schema is not None
        meta = schema.field("metadata").schema
        assert meta.field("finalizers").merge is not None and meta.field("finalizers").merge.key is None
        assert (
            meta.field("ownerReferences").merge is not None
            and meta.field("ownerReferences").merge.key == "uid"
        )


def test_table_paths_match_upstream_tags() -> None:
    pod_paths = {path: (rule.key, rule.retain_keys) for path, rule in MERGED_LISTS["v1/Pod"].items()}
    assert pod_paths["spec/containers"] == ("name", False)
    assert pod_paths["spec/initContainers/[]/ports"] == ("containerPort", False)
    assert pod_paths["spec/ephemeralContainers/[]/volumeMounts"] == ("mountPath", False)
    assert pod_paths["spec/volumes"] == ("name", True)
    assert pod_paths["status/conditions"] == ("type", False)
    assert "spec/tolerations" not in pod_paths and "spec/readinessGates" not in pod_paths
    assert MERGED_LISTS["v1/Node"]["status/addresses"].key == "type"
    assert MERGED_LISTS["v1/Node"]["spec/podCIDRs"].key is None
    assert "spec/taints" not in MERGED_LISTS["v1/Node"]
    assert set(MERGED_LISTS["networking.k8s.io/v1/NetworkPolicy"]) == {
        "metadata/finalizers",
        "metadata/ownerReferences",
    }


@pytest.mark.parametrize("kind", ["example.com/v1/Widget", "v1/Secretz", "", "batch/v1/Job"])
def test_unknown_kind_is_refused(kind: str) -> None:
    with pytest.raises(PatchError, match="strategic merge patch is not supported for"):
        apply_strategic_merge_patch({"a": 1}, {"a": 2}, kind)


# ---------------------------------------------------------------- maps and scalars


def test_maps_merge_and_null_deletes() -> None:
    doc = pod(containers=[{"name": "a", "image": "x"}])
    doc["metadata"]["labels"] = {"app": "web", "tier": "front"}
    result = smp(doc, {"metadata": {"labels": {"tier": None, "v": "2"}}, "spec": {"nodeName": "n1"}})
    assert result["metadata"]["labels"] == {"app": "web", "v": "2"}
    assert result["spec"]["nodeName"] == "n1"
    assert result["spec"]["containers"] == [{"name": "a", "image": "x"}]


def test_new_values_lose_their_nulls() -> None:
    result = smp(pod(), {"spec": {"securityContext": {"runAsUser": 1000, "fsGroup": None}}})
    assert result["spec"]["securityContext"] == {"runAsUser": 1000}


def test_type_change_replaces() -> None:
    doc = pod(containers=[{"name": "a"}])
    assert smp(doc, {"spec": {"containers": "x"}})["spec"]["containers"] == "x"
    assert smp(doc, {"spec": "gone"})["spec"] == "gone"


def test_inputs_are_never_changed() -> None:
    doc = pod(containers=[{"name": "a", "image": "x", "env": [{"name": "E", "value": "1"}]}])
    patch = {"spec": {"containers": [{"name": "a", "env": [{"name": "F", "value": "2"}]}, {"name": "b"}]}}
    before = copy.deepcopy((doc, patch))
    result = smp(doc, patch)
    result["spec"]["containers"][0]["env"].append({"name": "Z"})
    result["spec"]["containers"][1]["image"] = "mutated"
    assert (doc, patch) == before


# ---------------------------------------------------------------- lists merged by key


def test_containers_merge_by_name_and_new_ones_go_first_like_upstream() -> None:
    doc = pod(containers=[{"name": "app", "image": "nginx:1.24"}, {"name": "side", "image": "busybox"}])
    result = smp(
        doc,
        {"spec": {"containers": [{"name": "side", "image": "busybox:1.36"}, {"name": "new", "image": "x"}]}},
    )
    assert result["spec"]["containers"] == [
        {"name": "app", "image": "nginx:1.24"},
        {"name": "side", "image": "busybox:1.36"},
        {"name": "new", "image": "x"},
    ]
    only_new = smp(doc, {"spec": {"containers": [{"name": "new", "image": "x"}]}})
    assert names(only_new["spec"]["containers"]) == ["new", "app", "side"]


def test_nested_lists_merge_by_their_own_keys() -> None:
    doc = pod(
        containers=[
            {
                "name": "app",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "volumeMounts": [{"mountPath": "/data", "name": "d"}],
                "args": ["--a", "--b"],
            }
        ]
    )
    patch = {
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}],
                    "env": [{"name": "B", "value": "3"}],
                    "volumeMounts": [{"mountPath": "/data", "readOnly": True}],
                    "args": ["--c"],
                }
            ]
        }
    }
    app = smp(doc, patch)["spec"]["containers"][0]
    assert app["ports"] == [{"containerPort": 80, "protocol": "TCP", "name": "http"}, {"containerPort": 443}]
    assert app["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}]
    assert app["volumeMounts"] == [{"mountPath": "/data", "name": "d", "readOnly": True}]
    assert app["args"] == ["--c"]  # atomic


def test_atomic_lists_are_replaced() -> None:
    doc = pod(tolerations=[{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}])
    result = smp(doc, {"spec": {"tolerations": [{"key": "c", "operator": "Exists", "value": None}]}})
    assert result["spec"]["tolerations"] == [{"key": "c", "operator": "Exists"}]


def test_network_policy_lists_are_atomic() -> None:
    np = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}], "ports": [{"port": 80}]}],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}],
        },
    }
    patch = {"spec": {"ingress": [{"ports": [{"port": 443}]}], "policyTypes": ["Ingress"], "egress": None}}
    spec = smp(np, patch, "networking.k8s.io/v1/NetworkPolicy")["spec"]
    assert spec == {
        "podSelector": {"matchLabels": {"app": "web"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"ports": [{"port": 443}]}],
    }


def test_node_addresses_conditions_and_pod_cidrs() -> None:
    node = {
        "metadata": {"name": "n1"},
        "spec": {"podCIDRs": ["10.1.0.0/24"], "taints": [{"key": "a", "effect": "NoSchedule"}]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": "10.0.0.5"},
                {"type": "Hostname", "address": "n1"},
            ],
            "conditions": [
                {"type": "Ready", "status": "False"},
                {"type": "MemoryPressure", "status": "False"},
            ],
        },
    }
    patch = {
        "spec": {"podCIDRs": ["fd00::/64"], "taints": [{"key": "b", "effect": "NoExecute"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]},
    }
    result = smp(node, patch, "v1/Node")
    assert result["spec"]["podCIDRs"] == ["fd00::/64", "10.1.0.0/24"]
    assert result["spec"]["taints"] == [{"key": "b", "effect": "NoExecute"}]
    assert result["status"]["conditions"] == [
        {"type": "Ready", "status": "True", "reason": "KubeletReady"},
        {"type": "MemoryPressure", "status": "False"},
    ]
    assert result["status"]["addresses"] == node["status"]["addresses"]


def test_owner_references_merge_by_uid_service_account_secrets_by_name() -> None:
    cm = {
        "metadata": {"name": "c", "ownerReferences": [{"uid": "u1", "name": "a", "kind": "Pod"}]},
        "data": {"k": "v"},
    }
    patch = {"metadata": {"ownerReferences": [{"uid": "u1", "controller": True}, {"uid": "u2", "name": "b"}]}}
    refs = smp(cm, patch, "v1/ConfigMap")["metadata"]["ownerReferences"]
    assert sorted(refs, key=lambda r: r["uid"]) == [
        {"uid": "u1", "name": "a", "kind": "Pod", "controller": True},
        {"uid": "u2", "name": "b"},
    ]
    sa = {"metadata": {"name": "s"}, "secrets": [{"name": "t1"}], "imagePullSecrets": [{"name": "r1"}]}
    result = smp(sa, {"secrets": [{"name": "t2"}], "imagePullSecrets": [{"name": "r2"}]}, "v1/ServiceAccount")
    assert names(result["secrets"]) == ["t2", "t1"]
    assert result["imagePullSecrets"] == [{"name": "r2"}]


def test_configmap_data_merges_as_a_map() -> None:
    cm = {"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}}
    assert smp(cm, {"data": {"a": None, "c": "3"}}, "v1/ConfigMap")["data"] == {"b": "2", "c": "3"}


# ---------------------------------------------------------------- primitive lists (sets)


def test_finalizers_merge_as_a_set() -> None:
    doc = pod()
    doc["metadata"]["finalizers"] = ["a", "b"]
    assert smp(doc, {"metadata": {"finalizers": ["b", "c"]}})["metadata"]["finalizers"] == ["a", "b", "c"]
    assert smp(doc, {"metadata": {"finalizers": ["c"]}})["metadata"]["finalizers"] == ["c", "a", "b"]
    assert smp(doc, {"metadata": {"finalizers": None}})["metadata"].get("finalizers") is None


def test_delete_from_primitive_list() -> None:
    doc = pod()
    doc["metadata"]["finalizers"] = ["a", "b", "c"]
    patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "zz"]}}
    assert smp(doc, patch)["metadata"]["finalizers"] == ["a", "c"]
    assert "finalizers" not in smp(pod(), patch)["metadata"]


def test_delete_before_add_when_both_name_an_item() -> None:
    doc = pod()
    doc["metadata"]["finalizers"] = ["a"]
    patch = {"metadata": {"finalizers": ["x"], "$deleteFromPrimitiveList/finalizers": ["x", "a"]}}
    assert smp(doc, patch)["metadata"]["finalizers"] == ["x"]


# ---------------------------------------------------------------- $patch directives


def test_patch_replace_in_a_map() -> None:
    doc = pod(securityContext={"runAsUser": 1, "fsGroup": 2})
    result = smp(doc, {"spec": {"securityContext": {"$patch": "replace", "runAsGroup": 3, "x": None}}})
    assert result["spec"]["securityContext"] == {"runAsGroup": 3}


def test_patch_delete_in_a_map_empties_it() -> None:
    doc = pod(securityContext={"runAsUser": 1})
    assert smp(doc, {"spec": {"securityContext": {"$patch": "delete"}}})["spec"]["securityContext"] == {}


def test_patch_replace_at_the_top() -> None:
    doc = pod(containers=[{"name": "a"}])
    assert smp(doc, {"$patch": "replace", "kind": "Pod", "spec": {"x": 1}}) == {
        "kind": "Pod",
        "spec": {"x": 1},
    }


def test_patch_delete_and_replace_in_lists() -> None:
    doc = pod(containers=[{"name": "a", "image": "x"}, {"name": "b"}, {"name": "c"}])
    deleted = smp(
        doc, {"spec": {"containers": [{"name": "b", "$patch": "delete"}, {"name": "a", "image": "y"}]}}
    )
    assert deleted["spec"]["containers"] == [{"name": "a", "image": "y"}, {"name": "c"}]
    replaced = smp(doc, {"spec": {"containers": [{"name": "z", "env": None}, {"$patch": "replace"}]}})
    assert replaced["spec"]["containers"] == [{"name": "z"}]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"spec": {"securityContext": {"$patch": "merge"}}}, r"at '/spec/securityContext': '\$patch: merge'"),
        ({"spec": {"securityContext": {"$patch": "frob"}}}, r"at '/spec/securityContext': unknown \$patch"),
        ({"spec": {"containers": [{"$patch": "merge"}]}}, r"at '/spec/containers/0': '\$patch: merge'"),
        (
            {"spec": {"containers": [{"name": "a"}, {"$patch": "delete"}]}},
            r"'/spec/containers/1'.*merge key 'name'",
        ),
        (
            {"spec": {"containers": [{"image": "x"}]}},
            r"at '/spec/containers/0': list item has no merge key 'name'",
        ),
        ({"spec": {"containers": ["a"]}}, r"at '/spec/containers': the list mixes item types"),
        ({"metadata": {"finalizers": [{"a": 1}]}}, r"at '/metadata/finalizers'.*mixes"),
        (
            {"spec": {"tolerations": [{"$patch": "delete", "key": "a"}]}},
            r"'/spec/tolerations/0'.*replaced whole",
        ),
        ({"spec": {"$frob": 1}}, r"at '/spec/\$frob': unknown directive '\$frob'"),
        (
            {"metadata": {"$deleteFromPrimitiveList/labels": ["a"]}},
            r"'labels' is not a list with patchStrategy merge",
        ),
        ({"spec": {"$deleteFromPrimitiveList/containers": ["a"]}}, r"list of objects merged by 'name'"),
        ({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}, r"needs a list"),
        (
            {"spec": {"$setElementOrder/tolerations": []}},
            r"'tolerations' is not a list with patchStrategy merge",
        ),
        (
            {"spec": {"$setElementOrder/containers": ["a"]}},
            r"'/spec/\$setElementOrder~1containers/0'.*merge key",
        ),
        ({"spec": {"$setElementOrder/": []}}, r"names no field"),
        ({"spec": {"$retainKeys": "name"}}, r"\$retainKeys must be a list of field names"),
        ({"spec": {"$retainKeys": ["containers"], "nodeName": "n"}}, r"sets 'nodeName'.*\$retainKeys"),
        ([{"op": "add"}], r"must be a JSON object"),
    ],
)
def test_bad_patches_name_the_place_and_change_nothing(patch: Any, message: str) -> None:
    doc = pod(containers=[{"name": "a", "image": "x"}], tolerations=[{"key": "a"}])
    doc["metadata"]["finalizers"] = ["f"]
    before = copy.deepcopy(doc)
    with pytest.raises(PatchError, match=message):
        smp(doc, patch)
    assert doc == before


def test_stored_item_without_merge_key_is_reported() -> None:
    doc = pod(containers=[{"image": "x"}])
    with pytest.raises(PatchError, match=r"at '/spec/containers/0'.*has no merge key 'name'"):
        smp(doc, {"spec": {"containers": [{"name": "a"}]}})


# ---------------------------------------------------------------- $retainKeys and $setElementOrder


def test_retain_keys_switches_a_volume_source() -> None:
    doc = pod(
        volumes=[
            {"name": "data", "emptyDir": {"medium": "Memory"}},
            {"name": "cfg", "configMap": {"name": "c"}},
        ]
    )
    patch = {
        "spec": {
            "$setElementOrder/volumes": [{"name": "data"}, {"name": "cfg"}],
            "volumes": [{"$retainKeys": ["hostPath", "name"], "hostPath": {"path": "/srv"}, "name": "data"}],
        }
    }
    result = smp(doc, patch)
    assert result["spec"]["volumes"] == [
        {"name": "data", "hostPath": {"path": "/srv"}},
        {"name": "cfg", "configMap": {"name": "c"}},
    ]


def test_set_element_order_orders_and_keeps_server_only_items_where_they_were() -> None:
    doc = pod(containers=[{"name": "a"}, {"name": "injected"}, {"name": "b"}])
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "image": "x"}],
        }
    }
    # "injected" stood before "b" in the stored list, so it stays before it (as kubectl patch --local does it)
    assert names(smp(doc, patch)["spec"]["containers"]) == ["injected", "b", "a"]


def test_set_element_order_on_scalars() -> None:
    doc = pod()
    doc["metadata"]["finalizers"] = ["a", "b", "server"]
    patch = {
        "metadata": {
            "$setElementOrder/finalizers": ["c", "b"],
            "finalizers": ["c"],
            "$deleteFromPrimitiveList/finalizers": ["a"],
        }
    }
    assert smp(doc, patch)["metadata"]["finalizers"] == ["c", "b", "server"]


def test_set_element_order_must_agree_with_the_patch_list() -> None:
    doc = pod(containers=[{"name": "a"}, {"name": "b"}])
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "b"}, {"name": "a"}],
        }
    }
    with pytest.raises(PatchError, match=r"at '/spec/containers'.*out of its order"):
        smp(doc, patch)
    missing = {"spec": {"$setElementOrder/containers": [{"name": "a"}], "containers": [{"name": "c"}]}}
    with pytest.raises(PatchError, match=r'item "c" is missing from .*/spec/\$setElementOrder~1containers'):
        smp(doc, missing)


def test_set_element_order_alone_reorders_the_stored_list() -> None:
    doc = pod(containers=[{"name": "a"}, {"name": "b"}])
    patch = {"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}
    assert names(smp(doc, patch)["spec"]["containers"]) == ["b", "a"]
    assert "containers" not in smp(pod(), patch)["spec"]


def test_set_element_order_after_a_deletion_places_server_items_as_upstream() -> None:
    """Upstream reads the stored order after its in-place deletion and append (checked with kubectl patch)."""
    doc = pod(containers=[{"name": "a"}, {"name": "d"}, {"name": "b"}])
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "c"}, {"name": "b"}],
            "containers": [{"name": "c", "image": "x"}, {"name": "a", "$patch": "delete"}],
        }
    }
    assert names(smp(doc, patch)["spec"]["containers"]) == ["d", "c", "b"]


# ---------------------------------------------------------------- properties

SCALARS = st.one_of(st.booleans(), st.integers(), st.text(max_size=4))
KEYS = st.text(alphabet="abcxyz", min_size=1, max_size=3)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=10,
)
PATCH_VALUES = st.recursive(
    st.one_of(SCALARS, st.none()),
    lambda inner: st.lists(VALUES, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=4), st.dictionaries(KEYS, PATCH_VALUES, max_size=4))
def test_without_merged_lists_strategic_equals_merge_patch(
    data: dict[str, Any], patch: dict[str, Any]
) -> None:
    """Outside metadata, a ConfigMap has no merged list: strategic merge is RFC 7386 there."""
    doc = {"data": data}
    before = json.dumps(doc, sort_keys=True)
    expected = apply_merge_patch(doc, {"data": patch})
    assert json.dumps(smp(doc, {"data": patch}, "v1/ConfigMap"), sort_keys=True) == json.dumps(
        expected, sort_keys=True
    )
    assert json.dumps(doc, sort_keys=True) == before


CONTAINER_NAMES = st.sampled_from(["a", "b", "c", "d"])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(CONTAINER_NAMES, unique=True, max_size=4),
    st.lists(
        st.tuples(CONTAINER_NAMES, st.sampled_from(["x", "y", None])), max_size=4, unique_by=lambda t: t[0]
    ),
)
def test_merge_by_key_keeps_every_name_once_with_the_patched_image(
    stored: list[str], changes: list[tuple[str, str | None]]
) -> None:
    doc = pod(containers=[{"name": name, "image": "old"} for name in stored])
    patch = {"spec": {"containers": [{"name": name, "image": image} for name, image in changes]}}
    containers = smp(doc, patch)["spec"]["containers"]
    assert sorted(names(containers)) == sorted(set(stored) | {name for name, _ in changes})
    images = {c["name"]: c.get("image") for c in containers}
    for name, image in changes:
        assert images[name] == image
    for name in set(stored) - {name for name, _ in changes}:
        assert images[name] == "old"
