"""The lab IMDS: IMDSv2 tokens, caller identified by source address, answers read live from the EC2 state."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from vpcnet.lab.ec2.httpserve import Request, Response
from vpcnet.lab.ec2.state import Cloud
from vpcnet.lab.imds import ImdsApp, ImdsService


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cloud(tmp_path: Path) -> Cloud:
    cloud = Cloud(tmp_path / "state.json")
    vpc = cloud.create_vpc("10.0.0.0/16")
    cloud.create_subnet(vpc.id, "10.0.0.0/24", "us-west-2a")
    cloud.create_subnet(vpc.id, "10.0.1.0/24", "us-west-2b")
    return cloud


def _subnet(cloud: Cloud, az: str) -> str:
    return next(s.id for s in cloud.subnets() if s.az == az)


def _req(method: str, path: str, source: str, headers: dict[str, str] | None = None) -> Request:
    return Request(method, path, "", {k.lower(): v for k, v in (headers or {}).items()}, b"", source)


def _token(app: ImdsApp, source: str, ttl: str = "60") -> str:
    r = app(_req("PUT", "/latest/api/token", source, {"X-aws-ec2-metadata-token-ttl-seconds": ttl}))
    assert r.status == 200, r.body
    return r.body.decode()


def _get(app: ImdsApp, path: str, source: str, token: str) -> Response:
    return app(_req("GET", "/latest/meta-data/" + path, source, {"X-aws-ec2-metadata-token": token}))


def test_metadata_of_the_caller_follows_the_state(cloud: Cloud) -> None:
    app = ImdsApp(cloud)
    inst = cloud.launch_instance("m5.large", _subnet(cloud, "us-west-2a"))
    other = cloud.launch_instance("t3.medium", _subnet(cloud, "us-west-2b"))
    primary = cloud.eni(inst.primary_eni_id)
    src = primary.primary_ip
    tok = _token(app, src)

    def get(path: str) -> str:
        r = _get(app, path, src, tok)
        assert r.status == 200, (path, r.status)
        return r.body.decode()

    assert get("instance-id") == inst.id
    assert get("instance-type") == "m5.large"
    assert get("placement/availability-zone") == "us-west-2a"
    assert get("placement/region") == "us-west-2"
    assert get("mac") == primary.mac
    assert get("local-ipv4") == src
    assert get("network/interfaces/macs/") == f"{primary.mac}/"

    # An ENI attached with addresses and a prefix appears at once, with all its keys.
    eni = cloud.create_network_interface(_subnet(cloud, "us-west-2a"), secondary_count=2)
    cloud.attach_network_interface(eni.id, inst.id, 1)
    cloud.assign_private_ip_addresses(eni.id, prefix_count=1)
    eni = cloud.eni(eni.id)
    assert get("network/interfaces/macs").split("\n") == [f"{primary.mac}/", f"{eni.mac}/"]
    base = f"network/interfaces/macs/{eni.mac}/"
    assert get(base + "device-number") == "1"
    assert get(base + "network-card") == "0"
    assert get(base + "network-card-index") == "0"
    assert get(base + "interface-id") == eni.id
    assert get(base + "local-ipv4s").split("\n") == eni.private_ips
    assert get(base + "ipv4-prefix") == eni.prefixes[0]
    assert get(base + "subnet-id") == eni.subnet_id
    assert get(base + "subnet-ipv4-cidr-block") == "10.0.0.0/24"
    assert get(base + "vpc-ipv4-cidr-blocks") == "10.0.0.0/16"
    assert get(base + "vpc-id") == eni.vpc_id
    assert get(base + "security-group-ids") == "\n".join(eni.security_group_ids)
    assert "ipv4-prefix" in get(base).split("\n")

    # No prefix: the key is absent (404), as IMDS does; unknown paths are 404s.
    assert _get(app, f"network/interfaces/macs/{primary.mac}/ipv4-prefix", src, tok).status == 404
    assert "ipv4-prefix" not in get(f"network/interfaces/macs/{primary.mac}/").split("\n")
    assert _get(app, "nope", src, tok).status == 404
    assert _get(app, "instance-id/deeper", src, tok).status == 404

    # Unassigning is seen at once too; a detached ENI disappears.
    cloud.unassign_private_ip_addresses(eni.id, addresses=[eni.secondary_ips[0]])
    assert get(base + "local-ipv4s").split("\n") == cloud.eni(eni.id).private_ips
    cloud.detach_network_interface(cloud.eni(eni.id).attachment.id)  # type: ignore[union-attr]
    assert get("network/interfaces/macs/") == f"{primary.mac}/"

    # The other instance sees itself, and cannot use this instance's token.
    src2 = cloud.eni(other.primary_eni_id).primary_ip
    assert _get(app, "instance-id", src2, tok).status == 401
    assert _get(app, "instance-id", src2, _token(app, src2)).body.decode() == other.id


@pytest.fixture
def app_and_source(cloud: Cloud) -> tuple[ImdsApp, str, Clock]:
    clock = Clock()
    app = ImdsApp(cloud, clock=clock)
    inst = cloud.launch_instance("t3.medium", _subnet(cloud, "us-west-2a"))
    return app, cloud.eni(inst.primary_eni_id).primary_ip, clock


def test_gets_need_a_valid_unexpired_token(app_and_source: tuple[ImdsApp, str, Clock]) -> None:
    app, src, clock = app_and_source
    assert app(_req("GET", "/latest/meta-data/instance-id", src)).status == 401
    assert _get(app, "instance-id", src, "made-up").status == 401
    tok = _token(app, src, "10")
    assert _get(app, "instance-id", src, tok).status == 200
    clock.now += 11
    assert _get(app, "instance-id", src, tok).status == 401


@pytest.mark.parametrize("ttl", ["", "0", "21601", "abc", "-5"])
def test_token_ttl_is_checked(app_and_source: tuple[ImdsApp, str, Clock], ttl: str) -> None:
    app, src, _ = app_and_source
    headers = {"X-aws-ec2-metadata-token-ttl-seconds": ttl} if ttl else {}
    assert app(_req("PUT", "/latest/api/token", src, headers)).status == 400


def test_token_refused_when_forwarded_or_not_an_instance(app_and_source: tuple[ImdsApp, str, Clock]) -> None:
    app, src, _ = app_and_source
    h = {"X-aws-ec2-metadata-token-ttl-seconds": "60"}
    assert app(_req("PUT", "/latest/api/token", src, {**h, "X-Forwarded-For": "1.2.3.4"})).status == 403
    assert app(_req("PUT", "/latest/api/token", "10.0.0.200", h)).status == 403
    assert app(_req("GET", "/latest/api/token", src, h)).status == 405


def test_identity_document(app_and_source: tuple[ImdsApp, str, Clock], cloud: Cloud) -> None:
    app, src, _ = app_and_source
    tok = _token(app, src)
    r = app(_req("GET", "/latest/dynamic/instance-identity/document", src, {"X-aws-ec2-metadata-token": tok}))
    doc = json.loads(r.body)
    assert doc["privateIp"] == src and doc["region"] == "us-west-2" and doc["instanceType"] == "t3.medium"


def test_served_over_http_with_a_source_override(cloud: Cloud) -> None:
    inst = cloud.launch_instance("t3.medium", _subnet(cloud, "us-west-2b"))
    node_ip = cloud.eni(inst.primary_eni_id).primary_ip
    with ImdsService(cloud, resolve_source=lambda _peer: node_ip).start_local() as running:
        put = urllib.request.Request(
            running.url + "/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "30"},
        )
        token = urllib.request.urlopen(put, timeout=5).read().decode()
        get = urllib.request.Request(
            running.url + "/latest/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": token}
        )
        assert urllib.request.urlopen(get, timeout=5).read().decode() == inst.id
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(running.url + "/latest/meta-data/instance-id", timeout=5)
        assert e.value.code == 401


@pytest.mark.parametrize("hop_limit", [1, 2])
def test_token_answers_carry_the_hop_limit_as_ttl(cloud: Cloud, hop_limit: int) -> None:
    inst = cloud.launch_instance("t3.medium", _subnet(cloud, "us-west-2b"))
    node_ip = cloud.eni(inst.primary_eni_id).primary_ip
    app = ImdsApp(cloud, resolve_source=lambda _peer: node_ip, hop_limit=hop_limit)
    token = app(
        Request("PUT", "/latest/api/token", "", {"x-aws-ec2-metadata-token-ttl-seconds": "30"}, b"", "x")
    )
    assert token.status == 200 and token.ip_ttl == hop_limit
    headers = {"x-aws-ec2-metadata-token": token.body.decode()}
    get = app(Request("GET", "/latest/meta-data/instance-id", "", headers, b"", "x"))
    assert get.body == inst.id.encode() and get.ip_ttl is None  # metadata answers: the default TTL


def test_a_ttl_answer_ends_its_connection_and_others_keep_it() -> None:
    """The TTL is never set back on a socket that answered with one (a retransmission would carry the
    default: tests/root/lab/test_imds_hop_limit_wire.py), so that connection closes after the answer."""
    import http.client

    from vpcnet.lab.ec2.httpserve import RunningServer, bind_local, make_server

    def app(request: Request) -> Response:
        return Response(200, b"t", ip_ttl=1 if request.method == "PUT" else None)

    running = RunningServer(make_server(app, bind_local()))
    try:
        host, port = running.server.server_address[:2]
        conn = http.client.HTTPConnection(str(host), int(port), timeout=10)
        conn.request("GET", "/x")
        first = conn.getresponse()
        assert first.read() == b"t" and first.getheader("Connection") != "close"
        conn.request("PUT", "/latest/api/token")  # the same connection: it was kept alive
        token = conn.getresponse()
        assert token.read() == b"t" and token.getheader("Connection") == "close" and token.will_close
        conn.close()
    finally:
        running.close()


def test_hop_limit_is_checked(cloud: Cloud) -> None:
    with pytest.raises(ValueError, match="hop limit must be 1-64"):
        ImdsApp(cloud, hop_limit=0)
