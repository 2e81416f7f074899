"""Fault: a manifest fuzz campaign against `vpcnet apply` and against the lab's Kubernetes API itself.

The cases come from the loader fuzz's generators (tests/unit/api/test_manifest_fuzz.py: random bytes, YAML-ish
fragments, resource-shaped documents, valid manifests with values replaced), plus a valid namespace and policy
around them so that a refused file would have had something to write. Each case:
  apply  `vpcnet apply -f` in-process against the lab; a refused file (exit != 0) must change nothing
  api    the same documents as JSON (or the raw bytes) POSTed, PUT and PATCHed to the API's paths; an answer
         >= 400 must change nothing, and no answer may be a 5xx
Figures: tracebacks (an exception out of the CLI, a traceback in its output or in the lab daemon's log, a 5xx
from the API) and partial_writes (the API's objects differ after a refused request): both must be 0.
Run as root: `python faults/manifest_fuzz.py [--quick] [--cases N]`.
"""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from common import ROOT, LabHandle, Scenario, log
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(ROOT / "tests" / "unit" / "api"))
from test_manifest_fuzz import FRAGMENTS, mutated_manifest, resource_like
from typer.testing import CliRunner

from vpcnet.cli.main import app
from vpcnet.lab import labctl
from vpcnet.lab.kubeapi.kubeconfig import server_url

# Written beside each fuzzed file (before or after it): a refused file would have had these to write. No
# Pod: the lab here runs no node agents, so the kubelet step of `apply` could not start one.
VALID = (
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: fz%(n)d}\n---\n"
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np%(n)d, namespace: fz%(n)d}\n"
    "spec: {podSelector: {}, policyTypes: [Ingress]}\n"
)
VOLATILE = ("resourceVersion", "managedFields", "generation", "creationTimestamp", "uid")


def documents() -> st.SearchStrategy[bytes]:
    """One file's bytes: junk, YAML-ish text, or YAML documents (resource-shaped or mutated valid ones)."""
    docs = st.lists(resource_like() | mutated_manifest(), min_size=1, max_size=3).map(
        lambda d: yaml.safe_dump_all(d, allow_unicode=True).encode()
    )
    text = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=8), max_size=30).map(
        lambda parts: "".join(parts).encode("utf-8", "surrogatepass")
    )
    return st.one_of(docs, docs, text, st.binary(max_size=300))


class Api:
    def __init__(self, lab: LabHandle) -> None:
        self.base = server_url(lab.layout.kubeconfig).rstrip("/")
        self.lists = self._discover()

    def call(
        self, method: str, path: str, body: bytes | None = None, ctype: str = "application/json"
    ) -> tuple[int, bytes]:
        req = urllib.request.Request(
            self.base + path, data=body, method=method, headers={"Content-Type": ctype}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def _json(self, path: str) -> Any:
        status, body = self.call("GET", path)
        return json.loads(body) if status == 200 else {}

    def _discover(self) -> list[str]:
        """The collection paths the API serves (cluster-wide lists of every kind)."""
        paths = [
            f"/api/v1/{r['name']}" for r in self._json("/api/v1").get("resources", []) if "/" not in r["name"]
        ]
        for group in self._json("/apis").get("groups", []):
            gv = group["preferredVersion"]["groupVersion"]
            for r in self._json(f"/apis/{gv}").get("resources", []):
                if "/" not in r["name"] and "list" in r.get("verbs", []):
                    paths.append(f"/apis/{gv}/{r['name']}")
        return paths

    def snapshot(self) -> dict[tuple[str, str, str], str]:
        """Every object's identity and content (not its bookkeeping, status, or what the kubelet adds)."""
        out: dict[tuple[str, str, str], str] = {}
        for path in self.lists:
            if path.endswith(("/events", "/leases")):
                continue
            for item in self._json(path).get("items", []):
                meta = item.get("metadata", {})
                kept = {k: v for k, v in meta.items() if k not in VOLATILE and k != "annotations"}
                body = {k: v for k, v in item.items() if k not in ("metadata", "status")}
                out[(path, meta.get("namespace", ""), meta.get("name", ""))] = json.dumps(
                    [kept, body], sort_keys=True
                )
        return out

    def collection_for(self, doc: Any) -> str | None:
        if (
            not isinstance(doc, dict)
            or not isinstance(doc.get("apiVersion"), str)
            or not isinstance(doc.get("kind"), str)
        ):
            return None
        version, kind = doc["apiVersion"], doc["kind"].lower()
        for path in self.lists:
            plural = path.rsplit("/", 1)[1]
            if (
                path.startswith(f"/api/{version}/") or path.startswith(f"/apis/{version}/")
            ) and plural.startswith(kind):
                return path
        return None


def segment(value: str) -> str:
    """value as one percent-encoded path segment (UTF-8; a lone surrogate YAML let through kept as its
    bytes): a fuzzed name is the API's to refuse, and must neither break the request line nor pick another
    path."""
    return urllib.parse.quote(value.encode("utf-8", "surrogatepass"), safe="")


def object_targets(coll: str, doc: dict[str, Any], body: bytes) -> list[tuple[str, str, bytes, str]]:
    """The requests one resource-shaped document makes: POST to its collection (in its namespace, for a
    namespaced kind), PUT and PATCH to its name."""
    meta = doc.get("metadata")
    ns, name = (meta.get("namespace"), meta.get("name")) if isinstance(meta, dict) else (None, None)
    if isinstance(ns, str) and ns and "/api/v1/namespaces" not in coll:
        head, _, plural = coll.rpartition("/")
        coll = f"{head}/namespaces/{segment(ns)}/{plural}"
    targets = [("POST", coll, body, "application/json")]
    if isinstance(name, str) and name and "/" not in name:
        one = f"{coll}/{segment(name)}"
        targets.append(("PUT", one, body, "application/json"))
        targets.append(("PATCH", one, body, "application/merge-patch+json"))
    return targets


def diff(before: dict[Any, str], after: dict[Any, str]) -> list[str]:
    keys = set(before) | set(after)
    return sorted(f"{k}" for k in keys if before.get(k) != after.get(k))


def main() -> int:
    sc = Scenario("manifest_fuzz", __doc__ or "", iterations=(1, 1), cases=(800, 120))
    found = {"tracebacks": 0, "partial_writes": 0, "apply_refused": 0, "apply_accepted": 0, "api_refused": 0}
    runner = CliRunner()
    with sc.lab(nodes=1, instance_type="t3.medium") as lab, tempfile.TemporaryDirectory() as tmp:
        api = Api(lab)
        log(f"the API serves {len(api.lists)} collections")
        serial = [0]

        def bad(kind: str, detail: str) -> None:
            found[kind] += 1
            if found[kind] <= 10:
                log(f"{kind.upper()}: {detail}")

        def apply_case(data: bytes) -> None:
            serial[0] += 1
            path = Path(tmp) / f"c{serial[0]}.yaml"
            valid = (VALID % {"n": serial[0]}).encode()
            path.write_bytes(valid + b"---\n" + data if serial[0] % 2 else data + b"\n---\n" + valid)
            before = api.snapshot()
            result = runner.invoke(app, ["apply", "-f", str(path), "--prefix", lab.prefix])
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                bad("tracebacks", f"apply raised {result.exception!r} on {data[:200]!r}")
            elif "Traceback" in result.output:
                bad("tracebacks", f"apply printed a traceback on {data[:200]!r}")
            if result.exit_code != 0:
                found["apply_refused"] += 1
                changed = diff(before, api.snapshot())
                if changed:
                    bad(
                        "partial_writes",
                        f"refused apply (exit {result.exit_code}) changed {changed[:5]}: {data[:200]!r}",
                    )
            else:
                found["apply_accepted"] += 1

        def api_case(data: bytes) -> None:
            try:
                docs = [d for d in yaml.safe_load_all(data) if d is not None]
            except Exception:
                docs = []
            targets: list[tuple[str, str, bytes, str]] = []
            for doc in docs[:2]:
                coll = api.collection_for(doc)
                if coll is None:
                    continue
                try:
                    body = json.dumps(doc).encode()
                except (TypeError, ValueError):
                    continue
                targets += object_targets(coll, doc, body)
            if not targets:  # raw bytes at a real collection
                targets.append(("POST", "/api/v1/namespaces/default/pods", data, "application/yaml"))
                targets.append(("POST", "/api/v1/namespaces", data, "application/json"))
            for method, where, body, ctype in targets:
                before = api.snapshot()
                status, answer = api.call(method, where, body, ctype)
                if status >= 500:
                    bad(
                        "tracebacks",
                        f"{method} {where} answered {status}: {answer[:200]!r} for {body[:200]!r}",
                    )
                if status >= 400:
                    found["api_refused"] += 1
                    changed = diff(before, api.snapshot())
                    if changed:
                        bad(
                            "partial_writes", f"{method} {where} refused ({status}) but changed {changed[:5]}"
                        )

        common = {
            "deadline": None,
            "database": None,
            "phases": [Phase.generate],
            "suppress_health_check": list(HealthCheck),
        }

        @settings(max_examples=sc.cases // 2, **common)  # type: ignore[arg-type]
        @given(documents())
        def apply_campaign(data: bytes) -> None:
            apply_case(data)

        @settings(max_examples=sc.cases - sc.cases // 2, **common)  # type: ignore[arg-type]
        @given(documents())
        def api_campaign(data: bytes) -> None:
            api_case(data)

        log(f"apply: {sc.cases // 2} cases")
        apply_campaign()
        log(f"the Kubernetes API: {sc.cases - sc.cases // 2} cases")
        api_campaign()
        found["tracebacks"] += labctl.daemon_log(lab.layout).read_text(errors="replace").count("Traceback")
        log(f"counts: {found}")
    sc.add("cases", sc.cases)
    for k, v in found.items():
        sc.add(k, v)
    return sc.finish()


if __name__ == "__main__":
    sys.exit(main())
