"""The endpoint as a server: EC2's error format on the wire, faults, lab paths, restart, fabric hooks."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from ec2lab import AZ_A, CLIENT_CONFIG, Endpoint, Lab, error_code

from vpcnet.lab.ec2.auth import LAB_CREDENTIALS
from vpcnet.lab.ec2.faults import EC2_LIKE_THROTTLE, Faults, load_faults
from vpcnet.lab.ec2.local import LocalCloud
from vpcnet.lab.ec2.model import Eni, Instance, SecurityGroup
from vpcnet.lab.ec2.server import Ec2Service
from vpcnet.lab.ec2.state import Cloud


def signed(url: str, body: bytes, content_type: str, secret: str | None = None) -> dict[str, str]:
    """Headers of a POST signed (SigV4) as boto3 signs it, with the lab's credentials unless `secret`."""
    creds = Credentials(
        LAB_CREDENTIALS["AWS_ACCESS_KEY_ID"], secret or LAB_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
    )
    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": content_type})
    SigV4Auth(creds, "ec2", "us-west-2").add_auth(request)
    return dict(request.headers.items())


def _post(
    url: str, body: bytes, content_type: str = "application/x-www-form-urlencoded"
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST", headers=signed(url, body, content_type))
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_error_document_on_the_wire(endpoint: Endpoint) -> None:
    status, body = _post(
        endpoint.url + "/", b"Action=DeleteNetworkInterface&Version=2016-11-15&NetworkInterfaceId=eni-0x"
    )
    assert status == 400
    root = ET.fromstring(body)
    assert root.tag == "Response"
    assert root.findtext("Errors/Error/Code") == "InvalidNetworkInterfaceID.NotFound"
    assert "eni-0x" in (root.findtext("Errors/Error/Message") or "")
    assert root.findtext("RequestID")

    def code(form: bytes) -> tuple[int, str | None]:
        s, b = _post(endpoint.url + "/", form)
        return s, ET.fromstring(b).findtext("Errors/Error/Code")

    assert code(b"Version=2016-11-15") == (400, "MissingAction")
    assert code(b"Action=RunInstances&Version=2016-11-15") == (400, "InvalidAction")
    assert code(b"Action=DeleteNetworkInterface&Version=2016-11-15") == (400, "MissingParameter")
    assert code(b"Action=DeleteNetworkInterface&Colour=red") == (400, "UnknownParameter")
    assert code(b"Action=AttachNetworkInterface&DeviceIndex=one&NetworkInterfaceId=e&InstanceId=i") == (
        400,
        "InvalidParameterValue",
    )
    assert code(b"Action=DescribeVpcs&DryRun=true") == (412, "DryRunOperation")


def test_success_document_on_the_wire(endpoint: Endpoint) -> None:
    status, body = _post(endpoint.url + "/", b"Action=DescribeVpcs&Version=2016-11-15")
    assert status == 200
    root = ET.fromstring(body)
    ns = "{http://ec2.amazonaws.com/doc/2016-11-15/}"
    assert root.tag == f"{ns}DescribeVpcsResponse" and root.findtext(f"{ns}requestId")
    assert root.findtext(f"{ns}vpcSet/{ns}item/{ns}vpcId") == endpoint.lab.vpc.id


def test_throttling_reaches_boto3_as_request_limit_exceeded(endpoint: Endpoint) -> None:
    c = endpoint.client
    endpoint.service.faults.update({"throttle": {"mutating": {"capacity": 2, "refill_per_second": 0}}})
    for _ in range(2):
        c.create_network_interface(SubnetId=endpoint.lab.subnet_a.id)
    with pytest.raises(ClientError) as e:
        c.create_network_interface(SubnetId=endpoint.lab.subnet_a.id)
    assert e.value.response["Error"]["Code"] == "RequestLimitExceeded"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert len(endpoint.cloud.enis()) == 2  # the throttled call did nothing
    c.describe_network_interfaces()  # the describe class has its own bucket (none here)


def test_boto3_retries_through_throttling(endpoint: Endpoint, boto_session: boto3.session.Session) -> None:
    """With retries on (as ipamd runs), a briefly empty bucket costs a retry, not an error."""
    ticks = iter(range(1000))  # a clock that moves 0.6 s per request, whatever the wall clock does
    endpoint.service.faults = Faults(
        {"throttle": {"describe": {"capacity": 1, "refill_per_second": 1}}}, clock=lambda: 0.6 * next(ticks)
    )
    retrying = boto_session.client(
        "ec2",
        endpoint_url=endpoint.url,
        config=CLIENT_CONFIG.merge(Config(retries={"total_max_attempts": 10, "mode": "standard"})),
    )
    try:
        retrying.describe_vpcs()
        r = retrying.describe_vpcs()  # the bucket is empty: throttled once, then a token is back
        assert r["ResponseMetadata"]["RetryAttempts"] == 1
    finally:
        retrying.close()


def test_injected_failures_and_latency_over_http(endpoint: Endpoint) -> None:
    c, lab = endpoint.client, endpoint.lab
    faults_url = endpoint.url + "/lab/faults"
    doc = {
        "latency": {"CreateNetworkInterface": 0.2},
        "failures": {"DeleteNetworkInterface": {"code": "InternalError", "count": 2}},
    }
    status, body = _post(faults_url, json.dumps(doc).encode(), "application/json")
    assert status == 200 and json.loads(body)["failures"]["DeleteNetworkInterface"]["count"] == 2
    started = time.monotonic()
    eni = c.create_network_interface(SubnetId=lab.subnet_a.id)["NetworkInterface"]["NetworkInterfaceId"]
    assert time.monotonic() - started >= 0.2  # a lower bound: the injected sleep happened
    for _ in range(2):
        with pytest.raises(ClientError) as e:
            c.delete_network_interface(NetworkInterfaceId=eni)
        assert e.value.response["Error"]["Code"] == "InternalError"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert _get_json(faults_url)["failures"]["DeleteNetworkInterface"]["count"] == 0
    c.delete_network_interface(NetworkInterfaceId=eni)
    assert endpoint.cloud.enis() == []

    status, body = _post(faults_url, b'{"failures": {"Bogus": {"code": "X"}}}', "application/json")
    assert status == 400 and "Bogus" in json.loads(body)["error"]
    status, body = _post(faults_url, b'{"throttle": {"mutating": {"capacity": 0, "refill_per_second": 1}}}')
    assert status == 400 and "throttle.mutating.capacity" in json.loads(body)["error"]
    assert _get_json(faults_url)["latency"] == {
        "CreateNetworkInterface": 0.2
    }  # bad documents changed nothing
    status, _ = _post(faults_url, b'{"reset": true}')
    assert _get_json(faults_url) == {"latency": {}, "throttle": {}, "failures": {}}


def test_lab_state_and_health(endpoint: Endpoint) -> None:
    endpoint.cloud.launch_instance("m5.large", endpoint.lab.subnet_a.id)
    state = _get_json(endpoint.url + "/lab/state")
    assert state == json.loads(json.dumps(endpoint.cloud.snapshot()))
    assert [n["status"] for n in state["network_interfaces"]] == ["in-use"]
    assert {s["id"]: s["available_ip_count"] for s in state["subnets"]}[endpoint.lab.subnet_a.id] == 250
    with urllib.request.urlopen(endpoint.url + "/healthz", timeout=5) as r:
        assert r.read() == b"ok\n"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(endpoint.url + "/lab/nothing", timeout=5)
    assert e.value.code == 404


def test_restart_reloads_state_and_ids_continue(tmp_path: Path, boto_session: boto3.session.Session) -> None:
    state_file = tmp_path / "ec2.json"
    lab = Lab(Cloud(state_file))
    inst = lab.cloud.launch_instance("m5.large", lab.subnet_a.id)
    with Ec2Service(lab.cloud).start_local() as running:
        c = boto_session.client("ec2", endpoint_url=running.url, config=CLIENT_CONFIG)
        eni = c.create_network_interface(SubnetId=lab.subnet_a.id, SecondaryPrivateIpAddressCount=2)
        eni_id = eni["NetworkInterface"]["NetworkInterfaceId"]
        c.attach_network_interface(NetworkInterfaceId=eni_id, InstanceId=inst.id, DeviceIndex=1)
        c.assign_private_ip_addresses(NetworkInterfaceId=eni_id, Ipv4PrefixCount=1)
        before = c.describe_network_interfaces()["NetworkInterfaces"]
        c.close()
    with Ec2Service(Cloud(state_file)).start_local() as running:
        c = boto_session.client("ec2", endpoint_url=running.url, config=CLIENT_CONFIG)
        assert c.describe_network_interfaces()["NetworkInterfaces"] == before
        new = c.create_network_interface(SubnetId=lab.subnet_a.id)["NetworkInterface"]
        assert new["NetworkInterfaceId"] not in {e["NetworkInterfaceId"] for e in before}
        assert new["MacAddress"] not in {e["MacAddress"] for e in before}
        assert new["PrivateIpAddress"] not in {
            a["PrivateIpAddress"] for e in before for a in e["PrivateIpAddresses"]
        }
        # The device index taken before the restart is still taken.
        assert (
            error_code(
                c.attach_network_interface,
                NetworkInterfaceId=new["NetworkInterfaceId"],
                InstanceId=inst.id,
                DeviceIndex=1,
            )
            == "InvalidParameterValue"
        )
        c.close()
    assert json.loads(state_file.read_text())["version"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name != "ec2.json"]  # no temp files left behind


class RecordingHooks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.group_changes: list[list[str]] = []
        self.fail_on: str | None = None

    def _record(self, name: str, eni: Eni) -> None:
        if name == self.fail_on:
            raise OSError(f"fabric broke in {name}")
        self.calls.append((name, eni.id))

    def eni_attached(self, eni: Eni, instance: Instance) -> None:
        assert eni.attachment is not None and eni.attachment.instance_id == instance.id
        self._record("attached", eni)

    def eni_detached(self, eni: Eni, instance_id: str) -> None:
        assert eni.attachment is None
        self._record("detached", eni)

    def eni_changed(self, eni: Eni) -> None:
        self._record("changed", eni)

    def eni_deleted(self, eni: Eni) -> None:
        self._record("deleted", eni)

    def security_groups_changed(self, groups: list[SecurityGroup]) -> None:
        self.group_changes.append(sorted(g.id for g in groups))


def test_hooks_are_called_and_a_failing_hook_rolls_back(endpoint: Endpoint, tmp_path: Path) -> None:
    hooks = RecordingHooks()
    cloud = Cloud(tmp_path / "s.json", hooks=hooks)
    lab = Lab(cloud)
    endpoint.service.cloud = cloud
    endpoint.service.api.cloud = cloud
    c = endpoint.client
    inst = cloud.launch_instance("m5.large", lab.subnet_a.id)
    assert hooks.calls == [("attached", inst.primary_eni_id)]
    eni = c.create_network_interface(SubnetId=lab.subnet_a.id)["NetworkInterface"]["NetworkInterfaceId"]
    att = c.attach_network_interface(NetworkInterfaceId=eni, InstanceId=inst.id, DeviceIndex=1)[
        "AttachmentId"
    ]
    c.assign_private_ip_addresses(NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=1)
    c.modify_network_interface_attribute(NetworkInterfaceId=eni, SourceDestCheck={"Value": False})
    c.detach_network_interface(AttachmentId=att)
    c.delete_network_interface(NetworkInterfaceId=eni)
    assert hooks.calls[1:] == [
        ("attached", eni),
        ("changed", eni),
        ("changed", eni),
        ("detached", eni),
        ("deleted", eni),
    ]

    eni = c.create_network_interface(SubnetId=lab.subnet_a.id)["NetworkInterface"]["NetworkInterfaceId"]
    before_state, before_file = cloud.snapshot(), (tmp_path / "s.json").read_text()
    hooks.fail_on = "attached"
    with pytest.raises(ClientError) as e:
        c.attach_network_interface(NetworkInterfaceId=eni, InstanceId=inst.id, DeviceIndex=1)
    assert e.value.response["Error"]["Code"] == "InternalError"
    assert "fabric broke" in e.value.response["Error"]["Message"]
    assert cloud.snapshot() == before_state and (tmp_path / "s.json").read_text() == before_file
    hooks.fail_on = "changed"
    assert error_code(
        c.assign_private_ip_addresses, NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=2
    ) == ("InternalError")
    assert cloud.eni(eni).secondary_ips == []
    hooks.fail_on = None
    c.attach_network_interface(NetworkInterfaceId=eni, InstanceId=inst.id, DeviceIndex=1)
    assert Cloud(tmp_path / "s.json").snapshot() == cloud.snapshot()


def test_faults_unit_bucket_and_probability() -> None:
    now = [0.0]
    slept: list[float] = []
    faults = Faults(
        {
            "throttle": {"mutating": {"capacity": 2, "refill_per_second": 1}},
            "latency": {"*": 0.5, "AttachNetworkInterface": 2},
            "failures": {"CreateTags": {"code": "Unavailable", "probability": 1.0}},
        },
        clock=lambda: now[0],
        sleep=slept.append,
    )
    faults.before("AttachNetworkInterface")
    faults.before("DescribeVpcs")
    assert slept == [2.0, 0.5]
    faults.before("DeleteTags")
    with pytest.raises(Exception, match="RequestLimitExceeded"):
        faults.before("DeleteTags")
    now[0] += 1.0  # one token back
    faults.before("DeleteTags")
    now[0] += 5.0
    with pytest.raises(Exception, match="Unavailable") as e:
        faults.before("CreateTags")
    assert getattr(e.value, "status", None) == 503
    assert faults.describe()["throttle"]["mutating"]["tokens"] == 1.0  # capped at capacity, one used
    for bad in ({"latency": {"X": 1}}, {"latency": {"*": -1}}, {"throttle": {"slow": None}}, {"nope": 1}):
        with pytest.raises(ValueError):
            faults.update(bad)


def test_unknown_subnet_az_mismatch_is_refused(endpoint: Endpoint) -> None:
    with pytest.raises(Exception, match="not in region"):
        endpoint.cloud.create_subnet(endpoint.lab.vpc.id, "10.0.9.0/24", "eu-west-1a")
    assert endpoint.cloud.create_subnet(endpoint.lab.vpc.id, "10.0.9.0/24", AZ_A).az == AZ_A


def test_concurrent_clients_never_get_the_same_address(
    endpoint: Endpoint, boto_session: boto3.session.Session
) -> None:
    """Many threads creating and growing ENIs at once through HTTP: one lock, no double assignment."""
    cloud, subnet = endpoint.cloud, endpoint.lab.subnet_a.id
    errors: list[BaseException] = []

    def worker() -> None:
        client = boto_session.client("ec2", endpoint_url=endpoint.url, config=CLIENT_CONFIG)
        try:
            for _ in range(3):
                eni = client.create_network_interface(SubnetId=subnet, SecondaryPrivateIpAddressCount=2)
                client.assign_private_ip_addresses(
                    NetworkInterfaceId=eni["NetworkInterface"]["NetworkInterfaceId"],
                    SecondaryPrivateIpAddressCount=3,
                )
        except BaseException as e:
            errors.append(e)
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    addresses = [a for e in cloud.enis() for a in e.private_ips]
    assert len(addresses) == 6 * 3 * 6 and len(set(addresses)) == len(addresses)
    assert cloud.available_ip_count(subnet) == 251 - len(addresses)


def test_local_cloud_serves_ec2_and_imds(boto_session: boto3.session.Session, tmp_path: Path) -> None:
    with LocalCloud(tmp_path / "s.json") as lc:
        inst = lc.launch("t3.medium", az_index=1)
        c = boto_session.client("ec2", endpoint_url=lc.ec2_url, config=CLIENT_CONFIG)
        assert [s["AvailabilityZone"] for s in c.describe_subnets()["Subnets"]] == [
            "us-west-2a",
            "us-west-2b",
        ]
        put = urllib.request.Request(
            lc.imds_url(inst.id) + "/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        )
        token = urllib.request.urlopen(put, timeout=5).read().decode()
        get = urllib.request.Request(
            lc.imds_url(inst.id) + "/latest/meta-data/placement/availability-zone",
            headers={"X-aws-ec2-metadata-token": token},
        )
        assert urllib.request.urlopen(get, timeout=5).read() == b"us-west-2b"
        c.close()
    with LocalCloud(tmp_path / "s.json") as again:  # reloaded, not rebuilt
        assert [i.id for i in again.cloud.instances()] == [inst.id] and len(again.cloud.vpcs()) == 1


def test_an_actions_own_bucket_and_faults_files(tmp_path: Path) -> None:
    now = [0.0]
    faults = Faults(
        {
            "throttle": {
                "mutating": {"capacity": 3, "refill_per_second": 0},
                "AttachNetworkInterface": {"capacity": 1, "refill_per_second": 0},
            }
        },
        clock=lambda: now[0],
    )
    faults.before("AttachNetworkInterface")
    with pytest.raises(Exception, match="RequestLimitExceeded"):
        faults.before("AttachNetworkInterface")  # its own bucket is empty ...
    faults.before("CreateTags")  # ... the class bucket still had two tokens: the refused call took none
    faults.before("CreateTags")
    with pytest.raises(Exception, match="RequestLimitExceeded"):
        faults.before("CreateTags")
    assert Faults({"throttle": EC2_LIKE_THROTTLE}).describe()["throttle"]["describe"]["tokens"] == 100
    good = tmp_path / "faults.json"
    good.write_text('{"latency": {"AttachNetworkInterface": 2}}')
    assert load_faults(good) == {"latency": {"AttachNetworkInterface": 2}}
    bad = tmp_path / "bad.json"
    bad.write_text('{"latency": {"Attach": 2}}')
    with pytest.raises(ValueError, match=r"bad\.json: latency\.Attach"):
        load_faults(bad)


def test_bad_http_is_refused(endpoint: Endpoint) -> None:
    parts = urlsplit(endpoint.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    conn.putrequest("POST", "/")
    conn.putheader("Content-Length", "many")
    conn.endheaders()
    assert conn.getresponse().status == 400
    conn.close()
    req = urllib.request.Request(endpoint.url + "/", method="PUT", data=b"x")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 405


FORM = "application/x-www-form-urlencoded"
DESCRIBE = b"Action=DescribeVpcs&Version=2016-11-15"


def _raw(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_signed_requests_pass(endpoint: Endpoint) -> None:
    assert "Vpcs" in endpoint.client.describe_vpcs()  # boto3 with the lab's credentials
    status, _ = _raw(endpoint.url + "/", DESCRIBE, signed(endpoint.url + "/", DESCRIBE, FORM))
    assert status == 200


def test_unsigned_request_is_refused(endpoint: Endpoint) -> None:
    status, body = _raw(endpoint.url + "/", DESCRIBE, {"Content-Type": FORM})
    assert status == 401
    assert b"<Code>MissingAuthenticationToken</Code>" in body and b"<RequestID>" in body


def test_wrong_secret_is_refused_by_boto3(endpoint: Endpoint) -> None:
    session = boto3.session.Session(
        aws_access_key_id=LAB_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key="not-the-lab-secret",
        region_name="us-west-2",
    )
    client = session.client("ec2", endpoint_url=endpoint.url, config=CLIENT_CONFIG)
    with pytest.raises(ClientError) as info:
        client.describe_vpcs()
    assert info.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    other = boto3.session.Session(
        aws_access_key_id="AKIAOTHERACCOUNT0000", aws_secret_access_key="x", region_name="us-west-2"
    ).client("ec2", endpoint_url=endpoint.url, config=CLIENT_CONFIG)
    with pytest.raises(ClientError) as info:
        other.describe_vpcs()
    assert info.value.response["Error"]["Code"] == "AuthFailure"


def test_a_tampered_request_is_refused(endpoint: Endpoint) -> None:
    headers = signed(endpoint.url + "/", DESCRIBE, FORM)
    status, body = _raw(endpoint.url + "/", b"Action=DescribeSubnets&Version=2016-11-15", headers)
    assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in body
    headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=nonsense"
    status, body = _raw(endpoint.url + "/", DESCRIBE, headers)
    assert status == 400 and b"<Code>IncompleteSignature</Code>" in body
