"""`vpcnet apply`, `vpcnet get`, `vpcnet delete`: conveniences over the lab's Kubernetes API (what kubectl
drives too; the API is the one source of truth for these kinds), run by the lab kubelet.

`apply` validates every document first with vpcnet.api (nothing is written if one is bad: the API has no
multi-object transaction, so the checks come first), writes them (Calico's projectcalico.org/v3 kinds as
their crd.projectcalico.org/v1 CRDs, as calicoctl does in Kubernetes-datastore mode), then runs a pass of
the lab kubelet so that it can say which pods started; `delete` removes objects (a Namespace with
everything in it) and lets the kubelet stop the pods (CNI DEL).

`with_store` opens the etcd datastore (VPCNET_DATASTORE_ENDPOINTS, else the running lab's etcd) for what
lives only there: the agents' IPAM objects, and the revisions `lab wait` compares.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

import typer

from vpcnet.cli.groups import Groups

T = TypeVar("T")
PREFIX_HELP = "the lab's name prefix (env VPCNET_LAB, default vpcl)"

# Short names, as kubectl knows them; the Kubernetes NetworkPolicy wins the plain name, as in kubectl.
_SHORT_NAMES = {
    "po": "pod",
    "ns": "namespace",
    "netpol": "networkpolicy.networking.k8s.io",
    "networkpolicy": "networkpolicy.networking.k8s.io",
    "networkpolicies": "networkpolicy.networking.k8s.io",
    "gnp": "globalnetworkpolicy.projectcalico.org",
    "cnp": "networkpolicy.projectcalico.org",
    "caliconetworkpolicy": "networkpolicy.projectcalico.org",
    "caliconetworkpolicies": "networkpolicy.projectcalico.org",
}


class CliError(Exception):
    """Printed as `error: ...` with exit status `code`."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def lab_layout(prefix: str | None) -> Any:
    from vpcnet.lab.layout import layout_for

    try:
        return layout_for(prefix)
    except ValueError as exc:
        raise CliError(f"--prefix: {exc}") from exc


def datastore_settings(layout: Any) -> Any:
    """The datastore the environment names (the CLI's own setting, read with the agent's rule in
    vpcnet.datastore.settings), else the running lab's etcd, else the local default."""
    from vpcnet.datastore.settings import (
        DEFAULT_ENDPOINT,
        DatastoreSettingsError,
        endpoints_variable,
        read_datastore_settings,
    )
    from vpcnet.lab.labetcd import client_tls_env

    lab_tls: dict[str, str] = {}
    try:
        state = json.loads(layout.state_file.read_text())
        lab_endpoints = [str(state["endpoints"]["etcd_host"])]
        lab_tls = client_tls_env(layout)  # the lab's client certificate, when its etcd asks for one
    except (OSError, ValueError, KeyError, TypeError):
        lab_endpoints = [DEFAULT_ENDPOINT]
    try:  # etcd whatever VPCNET_DATASTORE_TYPE says: what is read here lives only there
        env = {**os.environ, "VPCNET_DATASTORE_TYPE": "etcd"}
        if endpoints_variable(os.environ) is None:  # the lab's etcd: its certificate too, unless one is set
            env = {**lab_tls, **env}
        return read_datastore_settings(env, default_endpoints=lab_endpoints)
    except DatastoreSettingsError as exc:  # a typo in the setting is the user's to fix, not a traceback
        raise CliError(str(exc)) from exc


def with_store(layout: Any, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Run fn(ResourceStore) on a fresh event loop with the datastore open."""
    import asyncio

    from vpcnet.datastore.open import open_datastore
    from vpcnet.datastore.resources import ResourceStore
    from vpcnet.datastore.types import DatastoreError

    async def go() -> T:
        datastore = await open_datastore(datastore_settings(layout))
        try:
            return await fn(ResourceStore(datastore))
        finally:
            await datastore.close()

    try:
        return asyncio.run(go())
    except DatastoreError as exc:
        raise CliError(f"datastore: {exc}", 1) from exc


def with_api(layout: Any, fn: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    """Run fn(KubeResourceStore) against the lab's Kubernetes API (its kubeconfig)."""
    import asyncio

    from vpcnet.datastore.open import open_kube_store
    from vpcnet.datastore.resources import ResourceError
    from vpcnet.datastore.types import DatastoreError

    if not layout.kubeconfig.exists():
        raise CliError(f"lab {layout.prefix} is not up (no {layout.kubeconfig}; `vpcnet lab up`)", 1)

    async def go() -> T:
        store = await open_kube_store(layout.kubeconfig, sync_timeout=30)
        try:
            return await fn(store)
        finally:
            await store.close()

    try:
        return asyncio.run(go())
    except ResourceError as exc:
        raise CliError(str(exc)) from exc
    except DatastoreError as exc:
        raise CliError(f"Kubernetes API: {exc}", 1) from exc


def kind_paths() -> dict[str, str]:
    """Every name a kind is known by (kind, plural, short name, kind.group) -> its datastore kind path."""
    from vpcnet.api import known_kinds
    from vpcnet.datastore.resources import kind_path

    names: dict[str, str] = {}
    for api_version, kind in known_kinds():
        path = kind_path(api_version, kind)
        lower = kind.lower()
        plural = lower[:-1] + "ies" if lower.endswith("y") else lower + ("es" if lower.endswith("s") else "s")
        group = path.partition(".")[2]
        names[path] = path
        if group:
            names[f"{plural}.{group}"] = path
        names.setdefault(kind.lower(), path)
        names.setdefault(plural, path)
    names.update(_SHORT_NAMES)
    return names


def resolve_kind(name: str) -> str:
    names = kind_paths()
    path = names.get(name.lower())
    if path is None:
        known = ", ".join(sorted({n for n in names if "." not in n}))
        raise CliError(f"unknown resource type {name!r}; known: {known}")
    return path


def kind_is_namespaced(path: str) -> bool:
    from vpcnet.api import known_kinds
    from vpcnet.api.base import kind_class
    from vpcnet.datastore.resources import kind_path

    for api_version, kind in known_kinds():
        if kind_path(api_version, kind) == path:
            cls = kind_class(api_version, kind)
            return bool(cls and cls.NAMESPACED)
    return True


def resource_ref(resource: Any) -> Any:
    from vpcnet.datastore.resources import ResourceRef, kind_path

    return ResourceRef(
        kind_path(resource.API_VERSION, resource.KIND), resource.metadata.namespace, resource.name
    )


def load_resources(files: Sequence[str]) -> list[Any]:
    from vpcnet.api import ValidationError, load_documents, load_files

    try:
        if list(files) == ["-"]:
            return load_documents(sys.stdin.buffer.read(), "<stdin>")
        return load_files(files)
    except ValidationError as exc:
        raise CliError(str(exc)) from exc


def merge_pod(new: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, Any]:
    """A Pod document as apply stores it: what the kubelet wrote (uid, nodeName, status, its annotations)
    survives a re-apply. Pods are immutable apart from labels and annotations, as in Kubernetes."""
    from vpcnet.lab.kubelet import KUBELET_ANNOTATIONS

    if stored is None:
        return new
    out: dict[str, Any] = json.loads(json.dumps(new))
    old_spec, new_spec = stored.get("spec", {}), out.setdefault("spec", {})
    from vpcnet.datastore.kube import contains

    # The API fills in defaults (imagePullPolicy, terminationMessagePath...): the same containers as the
    # file's, plus defaults, are unchanged.
    if not contains(old_spec.get("containers"), new_spec.get("containers")):
        raise ValueError(
            "spec.containers: a pod's containers cannot change; delete the pod and apply it again"
        )
    node = old_spec.get("nodeName")
    if node and new_spec.get("nodeName", node) != node:
        raise ValueError(f"spec.nodeName: the pod runs on {node}; delete it to move it")
    if node:
        new_spec["nodeName"] = node
    meta, old_meta = out.setdefault("metadata", {}), stored.get("metadata", {})
    if "uid" in old_meta:
        meta["uid"] = old_meta["uid"]
    old_annotations = old_meta.get("annotations", {})
    kept = {k: v for k, v in old_annotations.items() if k in KUBELET_ANNOTATIONS}
    if kept:
        meta.setdefault("annotations", {}).update(kept)
    if "status" in stored:
        out["status"] = stored["status"]
    return out


DEFAULT_NAMESPACE = "default"


async def _ippool_faults(store: Any, resources: Sequence[Any]) -> list[str]:
    """IPPools checked against the stored ones (cidr and blockSize fixed, no overlaps)."""
    from vpcnet.api.errors import ValidationError
    from vpcnet.api.ippool import IPPool, pool_update_faults
    from vpcnet.api.loader import parse_resource
    from vpcnet.datastore.resources import kind_path

    applied = [r for r in resources if isinstance(r, IPPool)]
    if not applied:
        return []
    stored: list[IPPool] = []
    for item in (await store.list(kind_path(IPPool.API_VERSION, IPPool.KIND)))[0]:
        body = dict(item.body)
        body["metadata"] = {k: v for k, v in body.get("metadata", {}).items() if k != "resourceVersion"}
        try:
            pool = parse_resource(body, str(item.ref))
        except ValidationError:
            continue  # a stored pool that no longer validates is ignored, as the IPAM does
        if isinstance(pool, IPPool):
            stored.append(pool)
    return pool_update_faults(applied, stored)


async def apply_resources(store: Any, resources: Sequence[Any], node_names: Sequence[str]) -> Any:
    """Check what validation of one document cannot (namespaces exist, nodes exist, pods unchanged), then
    store everything in one transaction. Raises CliError naming the document and field (nothing stored)."""
    from vpcnet.api import Namespace, Pod
    from vpcnet.api.loader import parse_resource

    docs: list[dict[str, Any]] = []
    faults: list[str] = []
    new_namespaces = {r.name for r in resources if isinstance(r, Namespace)}
    known_namespaces: set[str] | None = None
    for resource in resources:
        ref = resource_ref(resource)
        doc = resource.to_dict()
        where = f"{resource.KIND} {resource.metadata.namespace + '/' if resource.metadata.namespace else ''}"
        where += resource.name
        namespace = resource.metadata.namespace
        if namespace is not None and namespace not in new_namespaces:
            if known_namespaces is None:
                listed, _ = await store.list("namespace")
                known_namespaces = {item.ref.name for item in listed}
            if namespace == DEFAULT_NAMESPACE and namespace not in known_namespaces:
                # Kubernetes always has "default" (manifests rarely name it): made on first use, in the
                # same transaction, with the labels Kubernetes gives it.
                new_namespaces.add(namespace)
                implicit = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
                docs.insert(0, parse_resource(implicit, "the default namespace").to_dict())
            elif namespace not in known_namespaces:
                faults.append(
                    f"{where}: metadata.namespace: namespace {namespace!r} does not exist (apply it first)"
                )
        if isinstance(resource, Pod):
            if resource.host_network:
                faults.append(f"{where}: spec.hostNetwork: the lab kubelet runs only pod-network pods")
            if node_names and resource.node_name is not None and resource.node_name not in node_names:
                faults.append(
                    f"{where}: spec.nodeName: {resource.node_name!r} is not a lab node "
                    f"({', '.join(node_names)})"
                )
            stored = await store.get(ref)
            try:
                doc = merge_pod(doc, stored.body if stored else None)
            except ValueError as exc:
                faults.append(f"{where}: {exc}")
        docs.append(doc)
    faults += await _ippool_faults(store, resources)
    if faults:
        raise CliError(
            "\n".join(faults) if len(faults) == 1 else f"{len(faults)} problems:\n  " + "\n  ".join(faults)
        )
    try:
        return await store.apply(docs)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


async def run_kubelet(
    layout: Any, store: Any, created: Sequence[Any] = (), deleted: Sequence[Any] = ()
) -> Any:
    """A pass of the lab kubelet (None when no lab is up), its report completed with what the lab's
    kubelet daemon did meanwhile to the pods just created (started, or failed) or deleted (stopped)."""
    from vpcnet.lab.kubelet import Kubelet, PodRuntime, lab_nodes
    from vpcnet.lab.podsource import ApiPods

    nodes = lab_nodes(layout)
    if not nodes:
        return None
    report = await Kubelet(layout, ApiPods(store), nodes).sync()
    pods = {
        item["metadata"]["namespace"] + "/" + item["metadata"]["name"]: item
        for item in await ApiPods(store).list()
    }
    for ref in created:
        if ref.kind != "pod":
            continue
        key = f"{ref.namespace}/{ref.name}"
        status = pods.get(key, {}).get("status", {})
        if status.get("phase") == "Running" and key not in report.started:
            report.started.append(key)
        elif status.get("message") and key not in report.failed:
            report.failed[key] = str(status["message"])
    running = {r.ref for r in PodRuntime(layout).records([n.name for n in nodes])}
    for ref in deleted:
        key = f"{ref.namespace}/{ref.name}"
        if ref.kind == "pod" and key not in running and key not in report.stopped:
            report.stopped.append(key)
    report.started.sort()
    return report


def report_sync(report: Any) -> int:
    for ref in report.started:
        typer.echo(f"pod/{ref} started")
    for ref in report.stopped:
        typer.echo(f"pod/{ref} stopped")
    for ref, message in sorted(report.failed.items()):
        typer.echo(f"error: pod/{ref}: {message}", err=True)
    return 0 if report.ok else 1


def _short(kind_path: str) -> str:
    return kind_path.split(".", 1)[0] if kind_path in ("pod", "namespace") else kind_path


def fail(exc: CliError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(exc.code)


def register(app: typer.Typer, groups: Groups) -> None:
    @app.command("apply")
    def apply_command(
        files: list[str] = typer.Option(..., "--filename", "-f", help="YAML file(s) to apply; - for stdin"),  # noqa: B008
        prefix: str | None = typer.Option(None, "--prefix", help=PREFIX_HELP),
    ) -> None:
        """Validate and store resources (all or nothing); the lab kubelet starts the pods."""
        from vpcnet.lab.kubelet import lab_nodes

        try:
            layout = lab_layout(prefix)
            resources = load_resources(files)
            node_names = [n.name for n in lab_nodes(layout)]

            async def go(store: Any) -> tuple[Any, Any]:
                result = await apply_resources(store, resources, node_names)
                return result, await run_kubelet(layout, store, created=result.created)

            result, report = with_api(layout, go)
        except CliError as exc:
            raise fail(exc) from exc
        for verb, refs in (("created", result.created), ("configured", result.configured)):
            for ref in refs:
                typer.echo(
                    f"{_short(ref.kind)}/{ref.namespace + '/' if ref.namespace else ''}{ref.name} {verb}"
                )
        for ref in result.unchanged:
            typer.echo(
                f"{_short(ref.kind)}/{ref.namespace + '/' if ref.namespace else ''}{ref.name} unchanged"
            )
        if report is not None and report_sync(report):
            raise typer.Exit(1)

    @app.command("get")
    def get_command(
        kind: str = typer.Argument(..., help="pods, namespaces, networkpolicies, globalnetworkpolicies, ..."),
        name: str | None = typer.Argument(None, help="one object's name (NS/NAME also works)"),
        namespace: str | None = typer.Option(None, "--namespace", "-n", help="only this namespace"),
        all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A", help="every namespace"),
        output: str = typer.Option("table", "--output", "-o", help="table, wide, yaml or json"),
        prefix: str | None = typer.Option(None, "--prefix", help=PREFIX_HELP),
    ) -> None:
        """List stored resources (with -o wide, pods show node, IP and ENI)."""
        from vpcnet.datastore.resources import ResourceRef

        try:
            if output not in ("table", "wide", "yaml", "json"):
                raise CliError(f"--output {output!r}: expected table, wide, yaml or json")
            path = resolve_kind(kind)
            namespaced = kind_is_namespaced(path)
            layout = lab_layout(prefix)
            if name is not None and "/" in name and namespaced:
                namespace, name = name.split("/", 1)
            ns = None if all_namespaces or not namespaced else (namespace or "default")

            async def go(store: Any) -> list[Any]:
                if name is not None:
                    item = await store.get(ResourceRef(path, ns, name))
                    if item is None:
                        where = f" in namespace {ns}" if ns else ""
                        raise CliError(f"{path} {name!r} not found{where}", 1)
                    return [item]
                items, _ = await store.list(path, ns)
                return list(items)

            items = with_api(layout, go)
        except CliError as exc:
            raise fail(exc) from exc
        bodies = [shown_body(item) for item in items]
        if output == "json":
            typer.echo(json.dumps(bodies[0] if name else {"kind": "List", "items": bodies}, indent=2))
        elif output == "yaml":
            import yaml

            typer.echo(yaml.safe_dump_all(bodies, sort_keys=False).rstrip())
        else:
            print_table(path, bodies, wide=output == "wide", show_namespace=namespaced and ns is None)

    @app.command("delete")
    def delete_command(
        args: list[str] | None = typer.Argument(None, help="KIND NAME..., or pod NS/NAME"),  # noqa: B008
        files: list[str] = typer.Option([], "--filename", "-f", help="delete what these files describe"),  # noqa: B008
        namespace: str | None = typer.Option(None, "--namespace", "-n", help="namespace of NAME"),
        prefix: str | None = typer.Option(None, "--prefix", help=PREFIX_HELP),
    ) -> None:
        """Delete resources (a Namespace takes everything in it along); the kubelet stops deleted pods."""
        from vpcnet.datastore.resources import ResourceRef

        try:
            layout = lab_layout(prefix)
            refs: list[Any] = []
            if files:
                if args:
                    raise CliError("give either -f FILE or KIND NAME, not both")
                refs = [resource_ref(r) for r in load_resources(files)]
            else:
                if not args or len(args) < 2:
                    raise CliError("usage: vpcnet delete KIND NAME... | vpcnet delete pod NS/NAME | -f FILE")
                path = resolve_kind(args[0])
                namespaced = kind_is_namespaced(path)
                for raw in args[1:]:
                    ns, _, obj = raw.rpartition("/") if "/" in raw else (namespace or "default", "", raw)
                    refs.append(ResourceRef(path, ns if namespaced else None, obj))

            async def go(store: Any) -> tuple[list[Any], Any]:
                gone_namespaces = {r.name for r in refs if r.kind == "namespace"}
                pods_going: list[Any] = []
                if gone_namespaces:  # the API takes a namespace's objects along; their pods are stopped
                    listed, _ = await store.list("pod")
                    pods_going = [i.ref for i in listed if i.ref.namespace in gone_namespaces]
                deleted = await store.delete(list(refs))
                gone = pods_going + [r for r in deleted if r.kind == "pod"]
                return deleted, await run_kubelet(layout, store, deleted=gone)

            deleted, report = with_api(layout, go)
        except CliError as exc:
            raise fail(exc) from exc
        deleted_set = set(deleted)
        for ref in deleted:
            typer.echo(f"{_short(ref.kind)}/{ref.namespace + '/' if ref.namespace else ''}{ref.name} deleted")
        missing = [r for r in refs if r not in deleted_set]
        for ref in missing:
            typer.echo(
                f"{_short(ref.kind)}/{ref.namespace + '/' if ref.namespace else ''}{ref.name} not found"
            )
        failed = report is not None and report_sync(report)
        if failed or (missing and not files):
            raise typer.Exit(1)


def shown_body(item: Any) -> dict[str, Any]:
    """What `get` shows of a stored resource: its body, with "invalid": why when it does not decode or
    no longer validates (written around `apply`); the agents skip such a resource (a policy fails closed)."""
    from vpcnet.api.loader import parse_resource

    why = item.invalid
    if why is None:
        try:
            parse_resource(item.body, str(item.ref))
        except Exception as exc:  # any fault of the stored document is what we show, not a traceback
            why = str(exc)
    return dict(item.body) if why is None else {**item.body, "invalid": why}


def print_table(path: str, bodies: Sequence[dict[str, Any]], *, wide: bool, show_namespace: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from vpcnet.lab.kubelet import ANNOTATION_ENI, ANNOTATION_INTERFACE

    table = Table(box=None, pad_edge=False, header_style="bold")
    columns = (["NAMESPACE"] if show_namespace else []) + ["NAME"]
    if path == "pod":
        columns += ["STATUS", "IP", "NODE"] + (["ENI", "INTERFACE"] if wide else [])
    elif path == "namespace":
        columns += ["LABELS"] if wide else []
    invalid = any("invalid" in body for body in bodies)
    columns += ["INVALID"] if invalid else []
    for column in columns:
        table.add_column(column)
    for body in bodies:
        meta = body.get("metadata", {})
        row = ([meta.get("namespace", "")] if show_namespace else []) + [meta.get("name", "")]
        if path == "pod":
            status, annotations = body.get("status", {}), meta.get("annotations", {})
            row += [
                status.get("phase", "Pending"),
                status.get("podIP", "<none>"),
                body.get("spec", {}).get("nodeName", "<none>"),
            ]
            if wide:
                row += [
                    annotations.get(ANNOTATION_ENI, "<none>"),
                    annotations.get(ANNOTATION_INTERFACE, "<none>"),
                ]
        elif path == "namespace" and wide:
            row.append(",".join(f"{k}={v}" for k, v in sorted(meta.get("labels", {}).items())))
        if invalid:
            row.append(str(body.get("invalid", ""))[:200])
        table.add_row(*row)
    if not bodies:
        typer.echo("No resources found.", err=True)
        return
    Console(width=200, soft_wrap=True).print(table)
