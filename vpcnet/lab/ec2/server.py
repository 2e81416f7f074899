"""The EC2 endpoint over HTTP: the EC2 Query API at POST / (what boto3 sends), plus lab-only paths:

    GET  /lab/state    the whole emulated state (Cloud.snapshot()) as JSON
    GET  /lab/faults   the fault configuration and live bucket levels (see faults.py for the format)
    POST /lab/faults   apply a faults document (JSON body); answers the new configuration
    GET  /healthz      "ok" once the server answers

EC2 requests must be signed (SigV4) with the lab's credentials (auth.py), as EC2 requires; the lab-only
paths need no signature.
"""

from __future__ import annotations

import json
import logging
import socket
from typing import Any
from urllib.parse import parse_qsl

from vpcnet.lab.ec2.api import ACTIONS, Ec2Api
from vpcnet.lab.ec2.auth import LabCredentials, check_signature
from vpcnet.lab.ec2.errors import Ec2Error
from vpcnet.lab.ec2.faults import Faults, FaultsError
from vpcnet.lab.ec2.httpserve import LabHTTPServer, Request, Response, RunningServer, bind_local, make_server
from vpcnet.lab.ec2.state import Cloud
from vpcnet.lab.ec2.wire import (
    new_request_id,
    operation,
    parse_params,
    render_error,
    render_response,
    service_model,
)

log = logging.getLogger(__name__)


def _json(status: int, doc: Any) -> Response:
    return Response(status, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode(), "application/json")


class Ec2Service:
    """The HTTP app of the EC2 endpoint for one `Cloud`."""

    def __init__(
        self, cloud: Cloud, faults: Faults | None = None, credentials: LabCredentials | None = None
    ) -> None:
        self.cloud = cloud
        self.credentials = credentials or LabCredentials.from_env()
        self.faults = faults if faults is not None else Faults()
        self.api = Ec2Api(cloud)
        service_model()  # load botocore's EC2 model now, not on the first request

    def __call__(self, request: Request) -> Response:
        if request.path.startswith("/lab/") or request.path == "/healthz":
            return self._lab(request)
        if request.method not in ("POST", "GET"):
            return Response(405, b"EC2 takes POST (or GET) requests\n")
        try:
            check_signature(request, self.credentials)
        except Ec2Error as e:
            log.info("EC2 request refused: %s: %s", e.code, e.message)
            xml = render_error(e.code, e.message, new_request_id())
            return Response(e.status, xml, "text/xml;charset=UTF-8")
        body = request.body.decode("utf-8", "replace") if request.method == "POST" else request.query
        return self.ec2(body)

    def ec2(self, form_text: str) -> Response:
        """One EC2 Query API request (the form-encoded body) -> its XML answer."""
        request_id = new_request_id()
        action = "?"
        try:
            form: dict[str, str] = {}
            for key, value in parse_qsl(form_text, keep_blank_values=True):
                if key in form:
                    raise Ec2Error("InvalidParameter", f"The parameter {key} is given more than once")
                form[key] = value
            action = form.get("Action", "")
            if not action:
                raise Ec2Error("MissingAction", "The request must contain the parameter Action")
            if action not in ACTIONS:
                raise Ec2Error(
                    "InvalidAction", f"The action {action} is not valid for this web service (lab)."
                )
            self.faults.before(action)
            params = parse_params(form, operation(action).input_shape)
            answer = self.api.call(action, params)
            return Response(200, render_response(action, answer, request_id), "text/xml;charset=UTF-8")
        except Ec2Error as e:
            log.info("EC2 %s -> %s: %s", action, e.code, e.message)
            return Response(e.status, render_error(e.code, e.message, request_id), "text/xml;charset=UTF-8")
        except Exception as e:
            log.exception("EC2 %s failed", action)
            body = render_error("InternalError", f"lab endpoint error: {type(e).__name__}: {e}", request_id)
            return Response(500, body, "text/xml;charset=UTF-8")

    def _lab(self, request: Request) -> Response:
        if request.path == "/healthz":
            return Response(200, b"ok\n")
        if request.path == "/lab/state" and request.method == "GET":
            return _json(200, self.cloud.snapshot())
        if request.path == "/lab/faults":
            if request.method == "GET":
                return _json(200, self.faults.describe())
            if request.method == "POST":
                try:
                    doc = json.loads(request.body or b"{}")
                    self.faults.update(doc)
                except (ValueError, FaultsError) as e:
                    return _json(400, {"error": str(e)})
                return _json(200, self.faults.describe())
        return _json(404, {"error": f"no lab path {request.method} {request.path}"})

    def make_server(self, sock: socket.socket) -> LabHTTPServer:
        """A server on a socket the caller bound (e.g. inside the VPC namespace); not yet serving."""
        return make_server(self, sock)

    def serve_socket(self, sock: socket.socket) -> None:
        """Serve on `sock` until the server is shut down (blocks)."""
        self.make_server(sock).serve_forever()

    def start_local(self, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
        """Serve on host:port (port 0: any) in a background thread; `.url` is the endpoint URL."""
        return RunningServer(self.make_server(bind_local(host, port)))
