"""The EC2 API model boto3 loads, cut to the actions vpcnet calls.

botocore's EC2 model has ~830 operations; building a client from it costs the agent ~25 MB resident, one
from the actions below (and the shapes they reach) ~9 MB. The cut model ships in ec2_model_data/ (written by
`python -m vpcnet.cloud.ec2_model`, checked against the installed botocore by a unit test) and is put first
on the client's loader path; an action missing from it still works (Boto3Ec2 falls back to a full client).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# Every EC2 action vpcnet sends (Ec2QueryClient's `_call`s; a unit test keeps the two in step).
ACTIONS = frozenset(
    {
        "AssignPrivateIpAddresses",
        "AssociateTrunkInterface",
        "AttachNetworkInterface",
        "CreateTags",
        "CreateNetworkInterface",
        "DeleteNetworkInterface",
        "DescribeInstanceTypes",
        "DescribeNetworkInterfaces",
        "DescribeSubnets",
        "DescribeTrunkInterfaceAssociations",
        "DetachNetworkInterface",
        "DisassociateTrunkInterface",
        "ModifyNetworkInterfaceAttribute",
        "UnassignPrivateIpAddresses",
    }
)
# A botocore data path: ec2/<api version>/service-2.json.
DATA_DIR = Path(__file__).with_name("ec2_model_data")


def trim(model: dict[str, Any], actions: frozenset[str] = ACTIONS) -> dict[str, Any]:
    """model with only the operations in actions and the shapes they reach."""
    operations = {name: op for name, op in model["operations"].items() if name in actions}
    shapes = model["shapes"]
    todo: list[str] = []
    for op in operations.values():
        todo += [op[k]["shape"] for k in ("input", "output") if k in op]
        todo += [err["shape"] for err in op.get("errors", [])]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        shape = shapes[name]
        todo += [shape[k]["shape"] for k in ("member", "key", "value") if k in shape]
        todo += [member["shape"] for member in shape.get("members", {}).values()]
    return {**model, "operations": operations, "shapes": {name: shapes[name] for name in sorted(seen)}}


def model_path(api_version: str) -> Path:
    return DATA_DIR / "ec2" / api_version / "service-2.json"


def current_trimmed() -> tuple[str, dict[str, Any]]:
    """The installed botocore's latest EC2 model, trimmed, and its API version."""
    import botocore.loaders

    loader = botocore.loaders.Loader()
    version = loader.determine_latest_version("ec2", "service-2")
    return version, trim(loader.load_service_model("ec2", "service-2", version))


def write() -> Path:
    version, model = current_trimmed()
    path = model_path(version)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(model, sort_keys=True, separators=(",", ":")) + "\n")
    return path


if __name__ == "__main__":
    print(f"wrote {write()}", file=sys.stderr)
