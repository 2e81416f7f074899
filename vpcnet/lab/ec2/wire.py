"""The EC2 Query protocol on the wire, driven by botocore's own EC2 service model so that what boto3 sends
parses and what we answer parses in boto3: form parameters (`Filter.1.Value.2=...`) become the nested
request dict boto3 was called with, and answer dicts (boto3's names) become EC2's XML."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from typing import Any
from xml.etree import ElementTree as ET

from botocore.model import OperationModel, ServiceModel, Shape

from vpcnet.lab.ec2.errors import Ec2Error

NAMESPACE = "http://ec2.amazonaws.com/doc/2016-11-15/"
API_VERSION = "2016-11-15"

# Request parameters that are about the transport or the signature, not the action.
_TRANSPORT_PARAMS = {
    "Action",
    "Version",
    "AWSAccessKeyId",
    "Signature",
    "SignatureMethod",
    "SignatureVersion",
}
_TRANSPORT_PREFIXES = ("X-Amz-", "Timestamp", "Expires")


@cache
def service_model() -> ServiceModel:
    import botocore.session  # loaded once: the EC2 model is a few MB

    model: ServiceModel = botocore.session.get_session().get_service_model("ec2")
    return model


def operation(action: str) -> OperationModel:
    return service_model().operation_model(action)


def new_request_id() -> str:
    return str(uuid.uuid4())


# ---------------------------------------------------------------- requests


def _query_name(shape: Shape, member_name: str) -> str:
    """The parameter name boto3 uses for a member (botocore's EC2Serializer naming rule)."""
    if "queryName" in shape.serialization:
        return str(shape.serialization["queryName"])
    if "name" in shape.serialization:
        name = str(shape.serialization["name"])
        return name[0].upper() + name[1:]
    return member_name


def parse_params(form: Mapping[str, str], input_shape: Shape | None) -> dict[str, Any]:
    """Form parameters -> the nested request (boto3's member names and Python types)."""
    tree: dict[str, Any] = {}
    for key, value in form.items():
        if key in _TRANSPORT_PARAMS or key.startswith(_TRANSPORT_PREFIXES):
            continue
        node = tree
        parts = key.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            existing = node.get(part)
            if last:
                if existing is not None:
                    raise Ec2Error("InvalidParameter", f"The parameter {key} is given in conflicting forms")
                node[part] = value
            else:
                if existing is None:
                    existing = node[part] = {}
                if not isinstance(existing, dict):
                    raise Ec2Error("InvalidParameter", f"The parameter {key} is given in conflicting forms")
                node = existing
    if input_shape is None:
        if tree:
            raise Ec2Error("UnknownParameter", f"The parameter {sorted(tree)[0]} is not recognized")
        return {}
    result = _convert(tree, input_shape, "")
    assert isinstance(result, dict)
    return result


def _convert(node: Any, shape: Shape, path: str) -> Any:
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(node, dict):
            raise Ec2Error("InvalidParameterValue", f"The parameter {path} needs sub-parameters")
        out: dict[str, Any] = {}
        known: set[str] = set()
        for member_name, member in shape.members.items():
            qname = _query_name(member, member_name)
            known.add(qname)
            if qname in node:
                out[member_name] = _convert(node[qname], member, f"{path}{qname}")
        for key in node:
            if key not in known:
                raise Ec2Error("UnknownParameter", f"The parameter {path}{key} is not recognized")
        return out
    if kind == "list":
        if not isinstance(node, dict):
            raise Ec2Error(
                "InvalidParameterValue", f"The parameter {path} must be a list ({path}.1, {path}.2, ...)"
            )
        for k in node:
            if not (k.isdigit() and int(k) >= 1):
                raise Ec2Error(
                    "InvalidParameterValue",
                    f"The parameter {path}.{k} is not a list item ({path}.1, {path}.2, ...)",
                )
        return [_convert(node[k], shape.member, f"{path}.{k}.") for k in sorted(node, key=int)]
    if isinstance(node, dict):
        raise Ec2Error("InvalidParameterValue", f"The parameter {path.rstrip('.')} takes a single value")
    name = path.rstrip(".")
    if kind in ("integer", "long"):
        try:
            return int(node)
        except ValueError:
            raise Ec2Error(
                "InvalidParameterValue",
                f"Value ({node}) for parameter {name} is invalid. Expected an integer.",
            ) from None
    if kind == "boolean":
        if node.lower() not in ("true", "false"):
            raise Ec2Error(
                "InvalidParameterValue",
                f"Value ({node}) for parameter {name} is invalid. Expected true or false.",
            )
        return node.lower() == "true"
    return node


# ---------------------------------------------------------------- answers


def render_response(action: str, data: Mapping[str, Any], request_id: str) -> bytes:
    """An action's answer as EC2 XML: <ActionResponse xmlns=...><requestId/>...members...</ActionResponse>."""
    root = ET.Element(f"{action}Response", {"xmlns": NAMESPACE})
    ET.SubElement(root, "requestId").text = request_id
    shape = operation(action).output_shape
    if shape is not None:
        _render_members(root, data, shape, action)
    elif data:
        raise ValueError(f"{action} has no output members, got {sorted(data)}")
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body


def _render_members(parent: ET.Element, data: Mapping[str, Any], shape: Shape, where: str) -> None:
    members = shape.members
    for key, value in data.items():
        if value is None:
            continue
        member = members.get(key)
        if member is None:
            raise ValueError(f"{where}: {shape.name} has no member {key!r}")
        name = str(member.serialization.get("name", key))
        if member.type_name == "list" and member.serialization.get("flattened"):
            for item in value:
                _render_value(ET.SubElement(parent, name), item, member.member, f"{where}.{key}")
        else:
            _render_value(ET.SubElement(parent, name), value, member, f"{where}.{key}")


def _render_value(elem: ET.Element, value: Any, shape: Shape, where: str) -> None:
    kind = shape.type_name
    if kind == "structure":
        _render_members(elem, value, shape, where)
    elif kind == "list":
        item_name = str(shape.member.serialization.get("name", "member"))
        for item in value:
            _render_value(ET.SubElement(elem, item_name), item, shape.member, where)
    elif kind == "boolean":
        elem.text = "true" if value else "false"
    elif kind == "timestamp":
        elem.text = value.strftime("%Y-%m-%dT%H:%M:%S.000Z") if isinstance(value, datetime) else str(value)
    else:
        elem.text = str(value)


def render_error(code: str, message: str, request_id: str) -> bytes:
    """EC2's error document: Response/Errors/Error/{Code,Message} and Response/RequestID."""
    root = ET.Element("Response")
    error = ET.SubElement(ET.SubElement(root, "Errors"), "Error")
    ET.SubElement(error, "Code").text = code
    ET.SubElement(error, "Message").text = message
    ET.SubElement(root, "RequestID").text = request_id
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body
