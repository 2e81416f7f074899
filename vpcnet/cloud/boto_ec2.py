"""The EC2 client on boto3: the same code on AWS and in the lab (only the endpoint URL differs).

boto3 is synchronous; each call runs in a worker thread so the agent's loop keeps serving. botocore's
own retries are off: retries, backoff and the rate limit are ours (vpcnet.cloud.throttle), so that
they are measured and tested.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

import boto3
import botocore.exceptions
import botocore.session
from botocore.config import Config

from vpcnet.cloud import ec2_model
from vpcnet.cloud.ec2 import Ec2Error
from vpcnet.cloud.ec2_query import Ec2QueryClient
from vpcnet.cloud.throttle import Backoff, CallObserver, TokenBucket, call_with_retries

log = logging.getLogger(__name__)


class Boto3Ec2(Ec2QueryClient):
    def __init__(
        self,
        region: str,
        *,
        endpoint_url: str | None = None,
        rate_limit: float = 10.0,
        backoff: Backoff | None = None,
        observer: CallObserver | None = None,
        timeout: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        session = _session(region, trimmed=True)
        if session.get_credentials() is None:  # EC2 (and the lab's endpoint) refuse unsigned requests
            raise Ec2Error(
                "credentials",
                "MissingAuthenticationToken",
                "no AWS credentials found (environment, shared files or instance role) to sign EC2 requests",
            )
        config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=timeout,
            read_timeout=timeout,
            max_pool_connections=16,
        )
        self._client: Any = session.client("ec2", endpoint_url=endpoint_url, config=config)

        # For an action the cut model lacks (see ec2_model): a client on botocore's whole model, made once.
        def full_client() -> Any:
            return _session(region, trimmed=False).client("ec2", endpoint_url=endpoint_url, config=config)

        self._full_client = full_client
        self._bucket = TokenBucket(rate_limit, max(1.0, 2 * rate_limit))
        self._backoff = backoff or Backoff()
        self._observer = observer
        self._rng = rng or random.Random()

    async def _call(self, api: str, **params: Any) -> dict[str, Any]:
        method: Callable[..., dict[str, Any]] | None = getattr(self._client, _snake(api), None)
        if method is None:
            log.warning("EC2 action %s is not in vpcnet.cloud.ec2_model.ACTIONS; using the full model", api)
            self._client = self._full_client()
            method = getattr(self._client, _snake(api))

        async def attempt() -> dict[str, Any]:
            try:
                return await asyncio.to_thread(method, **params)
            except botocore.exceptions.ClientError as exc:
                err = exc.response.get("Error", {})
                status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400))
                raise Ec2Error(
                    api, str(err.get("Code", "Unknown")), str(err.get("Message", "")), status
                ) from exc
            except (
                botocore.exceptions.EndpointConnectionError,
                botocore.exceptions.ConnectionClosedError,
                botocore.exceptions.ReadTimeoutError,
                botocore.exceptions.ConnectTimeoutError,
            ) as exc:
                raise Ec2Error(api, "ConnectionError", str(exc), 599) from exc

        return await call_with_retries(
            api, attempt, bucket=self._bucket, backoff=self._backoff, observer=self._observer, rng=self._rng
        )


def _snake(api: str) -> str:
    out = []
    for i, ch in enumerate(api):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _session(region: str, *, trimmed: bool) -> boto3.session.Session:
    """A boto3 session; trimmed: its loader finds vpcnet's cut EC2 model before botocore's own."""
    core = botocore.session.get_session()
    if trimmed and ec2_model.DATA_DIR.is_dir():
        core.get_component("data_loader").search_paths.insert(0, str(ec2_model.DATA_DIR))
    return boto3.session.Session(region_name=region, botocore_session=core)
