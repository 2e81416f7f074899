"""Custom networking from the datastore: which ENIConfig this node asks for, and what it says, kept current.

The node's labels and annotations name its ENIConfig in the VPC CNI's order (vpcnet.api.eniconfig); the
named ENIConfig's subnet and security groups become the allocator's target for new ENIs (EniTargets). A
node that names an ENIConfig that does not exist (or is invalid) gets no new ENI, and the reason is logged
once per change, shown at /v1/eni-configs and given to a pod that cannot get an address. Relabelling the
node, or editing the ENIConfig, changes where the next ENI goes; attached ENIs stay as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from vpcnet.agent.config import AgentConfig, ConfigError
from vpcnet.agent.node_events import NodeConfigFeed, NodeView
from vpcnet.api import ENIConfig, ValidationError, parse_resource
from vpcnet.api.eniconfig import API_VERSION as ENICONFIG_API_VERSION
from vpcnet.api.eniconfig import DEFAULT_ANNOTATION, DEFAULT_LABEL, EniConfigKeys, node_eniconfig_name
from vpcnet.cloud.node import NodeInfo
from vpcnet.ipam.eni_target import EniTarget, EniTargets

log = logging.getLogger("vpcnet.agent.eniconfig")
EVENT_REASON = "ENIConfigUnavailable"
FIRST_VIEW_WAIT = 15.0  # start-up waits this long for the node's ENIConfig before the pool starts without


class EniConfigChooser:
    """Turns each view of the node and the ENIConfigs into the allocator's target (or its absence)."""

    def __init__(self, targets: EniTargets, node_name: str, keys: EniConfigKeys) -> None:
        self.targets = targets
        self.node_name = node_name
        self.keys = keys
        self.name = ""  # the ENIConfig the node asks for
        self.why = ""  # which label or annotation said so
        self.spec: dict[str, Any] = {}
        self.node_uid = ""
        self.on_problem: Callable[[str], None] | None = None  # told each new problem (the Node's Event)

    def on_view(self, view: NodeView) -> None:
        before = self.targets.describe()
        self.node_uid = str(((view.node or {}).get("metadata") or {}).get("uid", ""))
        if view.node is None:
            self.name, self.why, self.spec = "", "", {}
            self.targets.unavailable(f"Node {self.node_name!r} is not in the datastore (yet)")
        else:
            meta = view.node.get("metadata") or {}
            self.name, self.why = node_eniconfig_name(
                _strings(meta.get("labels")), _strings(meta.get("annotations")), self.keys
            )
            self._choose(view)
        after = self.targets.describe()
        if after != before:
            if after["problem"]:
                log.error("custom networking: %s", after["problem"])
                if self.on_problem is not None and after["problem"] != before["problem"]:
                    self.on_problem(str(after["problem"]))
            else:
                log.info(
                    "custom networking: new ENIs go to %s with %s (%s)",
                    after["subnet"],
                    ", ".join(after["securityGroups"]) or "the primary ENI's security groups",  # type: ignore[arg-type]
                    after["source"],
                )

    def _choose(self, view: NodeView) -> None:
        said = f"ENIConfig {self.name!r} (named by the node's {self.why})"
        stored = view.eniconfigs.get(self.name)
        if stored is None:
            self.spec = {}
            known = ", ".join(sorted(view.eniconfigs)) or "none"
            self.targets.unavailable(f"{said} does not exist (ENIConfigs: {known})")
            return
        try:
            if stored.invalid is not None:
                raise ValueError(stored.invalid)
            config = parse_resource(stored.body, f"ENIConfig {self.name}")
        except (ValidationError, ValueError) as err:
            self.spec = {}
            self.targets.unavailable(f"{said} is not usable: {err}")
            return
        assert isinstance(config, ENIConfig)
        self.spec = {"subnet": config.subnet, "securityGroups": list(config.security_groups)}
        self.targets.use(EniTarget(config.subnet, config.security_groups, said))

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "chosenBy": self.why, **self.spec, "target": self.targets.describe()}


class EniConfigWatch:
    """The feed and the chooser over an opened datastore, as one thing the ipam component starts and stops."""

    def __init__(self, cfg: AgentConfig, targets: EniTargets) -> None:
        self.cfg = cfg
        node = cfg.node_name or socket.gethostname()
        keys = EniConfigKeys(
            annotation=cfg.eni_config_annotation_def or DEFAULT_ANNOTATION,
            label=cfg.eni_config_label_def or DEFAULT_LABEL,
        )
        self.chooser = EniConfigChooser(targets, node, keys)
        self.feed: NodeConfigFeed | None = None
        self._opened: Any = None
        self._task: asyncio.Task[None] | None = None
        self._events: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        from vpcnet.datastore.open import open_store

        self._opened = await open_store(self.cfg.datastore_settings())
        if self._opened.kv is None:  # the Kubernetes API: kubectl describe node shows the problem
            self.chooser.on_problem = self._post_event
        self.feed = NodeConfigFeed(self._opened.store, self.chooser.node_name, self.chooser.on_view)
        self._task = asyncio.create_task(self.feed.run(), name="eniconfig")
        try:
            async with asyncio.timeout(FIRST_VIEW_WAIT):
                await self.feed.synced.wait()
        except TimeoutError:
            log.warning(
                "custom networking: the node's ENIConfig was not read within %.0f s (%s); no ENI is made"
                " until it is",
                FIRST_VIEW_WAIT,
                self.feed.last_error or "no answer",
            )

    def _post_event(self, problem: str) -> None:
        task = asyncio.create_task(self._write_event(problem), name="eniconfig-event")
        self._events.add(task)
        task.add_done_callback(self._events.discard)

    async def _write_event(self, problem: str) -> None:
        event = node_event(self.chooser.node_name, self.chooser.node_uid, problem, time.time())
        try:
            await self._opened.store.create(event)
        except Exception as err:  # the log has said it already; an Event is a courtesy
            log.warning("custom networking: could not write the Node's Event: %s", err)

    async def stop(self) -> None:
        for event in list(self._events):
            event.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        if self._opened is not None:
            with contextlib.suppress(Exception):  # stop() must not raise
                await self._opened.close()
            self._opened = None

    def status(self) -> dict[str, Any]:
        out = self.chooser.status()
        if self.feed is not None:
            out["revision"], out["watchError"] = self.feed.revision, self.feed.last_error
        return out


def node_event(node: str, uid: str, problem: str, now: float) -> dict[str, Any]:
    """A Warning Event on the Node (in "default", where kubelet files node events), as `kubectl describe
    node` lists them."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{node}.{uuid.uuid4().hex[:16]}", "namespace": "default"},
        "involvedObject": {"kind": "Node", "name": node, "uid": uid or node, "apiVersion": "v1"},
        "reason": EVENT_REASON,
        "message": problem,
        "type": "Warning",
        "source": {"component": "vpcnet-agent", "host": node},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "reportingComponent": "vpcnet-agent",
        "reportingInstance": node,
    }


def load_eni_config(cfg: AgentConfig, node: NodeInfo) -> dict[str, Any]:
    """File mode (no datastore): the ENIConfig for this node from VPCNET_ENI_CONFIG_FILE, validated as the
    datastore's are; ENI_CONFIG_NAME, else the availability zone's, else "default"."""
    assert cfg.eni_config_file is not None
    where = f"VPCNET_ENI_CONFIG_FILE={cfg.eni_config_file}"
    try:
        docs = [d for d in yaml.safe_load_all(cfg.eni_config_file.read_text()) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    flat: list[Any] = []
    for d in docs:
        flat.extend(
            d.get("items", []) if isinstance(d, dict) and "items" in d else d if isinstance(d, list) else [d]
        )
    configs: dict[str, ENIConfig] = {}
    for i, d in enumerate(flat):
        if not isinstance(d, dict) or d.get("kind", "ENIConfig") != "ENIConfig":
            raise ConfigError(f"{where}: object {i} is not an ENIConfig")
        try:
            config = parse_resource({"apiVersion": ENICONFIG_API_VERSION, **d}, f"{where}: object {i}")
        except ValidationError as exc:
            raise ConfigError(str(exc)) from exc
        assert isinstance(config, ENIConfig)
        configs[config.name] = config
    candidates = (cfg.eni_config_name,) if cfg.eni_config_name else (node.availability_zone, "default")
    for name in candidates:
        if name and name in configs:
            c = configs[name]
            return {"name": c.name, "subnet": c.subnet, "securityGroups": list(c.security_groups)}
    wanted = cfg.eni_config_name or f"{node.availability_zone} or default"
    raise ConfigError(f"{where}: no ENIConfig named {wanted} (have: {', '.join(sorted(configs)) or 'none'})")


def _strings(value: Any) -> Mapping[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else {}
