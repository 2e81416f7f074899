"""AWS Signature Version 4 on the lab's EC2 endpoint, checked as EC2 checks it.

Every EC2 Query request must be signed with the lab's credentials (`LAB_CREDENTIALS`, what the agents, the
CLI and the tests sign with). The signature is recomputed with botocore's own signer from the request as
received — the headers the client says it signed, the query, the body — and compared in constant time.
Failures answer with EC2's codes: MissingAuthenticationToken (no signature), IncompleteSignature (a
malformed Authorization header), AuthFailure (an access key the lab does not know), SignatureDoesNotMatch.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from vpcnet.lab.ec2.errors import Ec2Error
from vpcnet.lab.ec2.httpserve import Request
from vpcnet.lab.ec2.identity import LAB_CREDENTIALS as LAB_CREDENTIALS  # its home

_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*SignedHeaders=(?P<headers>[^,\s]+),"
    r"\s*Signature=(?P<signature>[0-9a-f]{64})$"
)


@dataclass(frozen=True)
class LabCredentials:
    access_key: str
    secret_key: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] = LAB_CREDENTIALS) -> LabCredentials:
        return cls(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])


def check_signature(request: Request, credentials: LabCredentials) -> None:
    """Raise Ec2Error unless `request` carries a valid SigV4 signature made with `credentials`."""
    header = request.headers.get("authorization")
    if header is None:
        if "X-Amz-Signature=" in request.query:
            raise Ec2Error("AuthFailure", "Presigned requests are not supported by the lab endpoint.", 401)
        raise Ec2Error("MissingAuthenticationToken", "Request is missing Authentication Token", 401)
    match = _AUTHORIZATION.match(header.strip())
    scope = match.group("credential").split("/") if match else []
    if match is None or len(scope) != 5 or scope[4] != "aws4_request":
        raise Ec2Error(
            "IncompleteSignature",
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
            "(AWS4-HMAC-SHA256 with a Credential scope KEY/DATE/REGION/SERVICE/aws4_request).",
        )
    access_key, date, region, service, _ = scope
    if access_key != credentials.access_key:
        raise Ec2Error("AuthFailure", "AWS was not able to validate the provided access credentials", 401)
    timestamp = request.headers.get("x-amz-date", "")
    if not timestamp.startswith(date) or len(timestamp) != 16:
        raise Ec2Error("IncompleteSignature", "X-Amz-Date must be given and match the credential scope date.")
    signed = match.group("headers").split(";")
    missing = [h for h in signed if h not in request.headers]
    if "host" not in signed or missing:
        raise Ec2Error(
            "IncompleteSignature", f"Signed headers missing from the request: {missing or ['host']}"
        )
    url = f"http://{request.headers['host']}{request.path}" + (f"?{request.query}" if request.query else "")
    aws_request = AWSRequest(
        method=request.method, url=url, data=request.body, headers={h: request.headers[h] for h in signed}
    )
    aws_request.context["timestamp"] = timestamp
    signer = SigV4Auth(Credentials(credentials.access_key, credentials.secret_key), service, region)
    canonical = signer.canonical_request(aws_request)
    expected = signer.signature(signer.string_to_sign(aws_request, canonical), aws_request)
    if not hmac.compare_digest(expected, match.group("signature")):
        raise Ec2Error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.",
            403,
        )
