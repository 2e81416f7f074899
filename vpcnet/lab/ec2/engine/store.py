"""Persistence and transactions of the engine: one re-entrant lock, the versioned JSON state file (written
atomically after every change, reloaded on start), all-or-nothing mutations and the fabric hooks.

A mutation snapshots the tables; on any error (bad input, a broken rule, a failing hook or a failing write)
the tables are put back as they were and nothing is written. Hooks run inside the mutation, so a fabric that
fails rolls the change back (InternalError)."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vpcnet.lab.ec2.engine.tables import Tables
from vpcnet.lab.ec2.errors import Ec2Error, internal_error
from vpcnet.lab.ec2.hooks import FabricHooks, NullHooks
from vpcnet.lab.ec2.jsonfile import write_json_atomic
from vpcnet.lab.ec2.model import Instance, Subnet, Vpc, eni_from_dict, group_from_dict, to_dict

STATE_VERSION = 1


def dump(tables: Tables) -> dict[str, Any]:
    """The tables as the state document (JSON-able)."""
    return {
        "version": STATE_VERSION,
        "region": tables.region,
        "account": tables.account,
        "seq": tables.seq,
        "vpcs": [to_dict(v) for v in tables.vpcs.values()],
        "subnets": [to_dict(s) for s in tables.subnets.values()],
        "security_groups": [to_dict(g) for g in tables.groups.values()],
        "instances": [to_dict(i) for i in tables.instances.values()],
        "network_interfaces": [to_dict(e) for e in tables.enis.values()],
    }


def load(tables: Tables, raw: Mapping[str, Any], where: object) -> None:
    """Replace the tables' contents with a state document; `where` names its source in errors."""
    if raw.get("version") != STATE_VERSION:
        raise ValueError(f"{where}: state version {raw.get('version')!r}, expected {STATE_VERSION}")
    tables.region = str(raw["region"])
    tables.account = str(raw["account"])
    tables.seq = int(raw["seq"])
    tables.vpcs = {v["id"]: Vpc(**v) for v in raw["vpcs"]}
    tables.subnets = {s["id"]: Subnet(**s) for s in raw["subnets"]}
    tables.groups = {g["id"]: group_from_dict(g) for g in raw["security_groups"]}
    tables.instances = {i["id"]: Instance(**i) for i in raw["instances"]}
    tables.enis = {e["id"]: eni_from_dict(e) for e in raw["network_interfaces"]}


class Store:
    """The tables with their lock, their file and the fabric hooks."""

    def __init__(self, tables: Tables, state_file: Path | None, hooks: FabricHooks | None) -> None:
        self.tables = tables
        self.lock = threading.RLock()
        self._hooks: FabricHooks = hooks if hooks is not None else NullHooks()
        self._file = state_file
        if self._file is not None and self._file.exists():
            try:
                load(self.tables, json.loads(self._file.read_text()), self._file)
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{self._file}: not a usable EC2 lab state ({type(e).__name__}: {e})") from e

    @property
    def hooks(self) -> FabricHooks:
        return self._hooks

    @hooks.setter
    def hooks(self, hooks: FabricHooks) -> None:
        with self.lock:
            self._hooks = hooks

    def _persist(self) -> None:
        if self._file is not None:
            write_json_atomic(self._file, dump(self.tables))

    @contextmanager
    def mutation(self) -> Iterator[None]:
        """All or nothing: on any error the state is put back as it was (and not written)."""
        with self.lock:
            saved = dump(self.tables)
            try:
                yield
                self._persist()
            except Ec2Error:
                load(self.tables, saved, self._file or "the state")
                raise
            except Exception as e:
                load(self.tables, saved, self._file or "the state")
                raise internal_error(f"the lab failed to apply the change: {e}") from e

    def hook(self, name: str, *args: Any) -> None:
        """Tell the fabric (with copies of the objects); a failure becomes EC2's InternalError."""
        copies = [copy.deepcopy(a) for a in args]
        try:
            getattr(self._hooks, name)(*copies)
        except Exception as e:
            raise internal_error(f"the lab fabric failed ({name}): {type(e).__name__}: {e}") from e
