"""A small client for the parts of Orthanc's REST API the node uses.

Plain requests rather than a wrapper library: the node needs six calls, and it must control
the Accept-Encoding header (Orthanc gzips each instance otherwise, which made fetching a
300-slice CT 25 times slower, ../shared/PERFORMANCE.md).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from node.config import Settings
from node.credentials import service_auth
from node.errors import DeliveryError, OrthancError


class OrthancClient:
    def __init__(
        self,
        base_url: str | Sequence[str],
        *,
        auth: tuple[str, str] | None = None,
        timeout: float = 60,
        verify: str | bool = True,
    ) -> None:
        """``base_url``: one Orthanc, or several that serve one archive (a cluster, docs/scaling.md),
        tried in turn when one does not answer. ``verify``: requests' certificate check of an
        https URL: True (the system's CAs) or the file of certificates to trust (the node's own,
        self-signed); never off."""
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("an Orthanc client needs at least one URL")
        self.base_urls = [url.rstrip("/") for url in urls]
        #: the Orthanc that answered last, asked first
        self.base_url = self.base_urls[0]
        self.timeout = timeout
        # given with every request: requests lets $REQUESTS_CA_BUNDLE override a session's own
        # ``verify`` (psf/requests#3829), which would refuse the node's self-signed certificate
        self.verify = verify
        self.session = requests.Session()
        self.session.headers["Accept-Encoding"] = "identity"
        # Reads are safe to retry, and worth it: Orthanc closes idle keep-alive connections
        # after KeepAliveTimeout (a request racing that close gets "connection aborted"), and
        # a crashed Orthanc is back within seconds (node.cli.supervisor), so a worker's fetch
        # waits for it (0.5 s, 1 s, 2 s ... up to about 40 s) rather than failing its job. With
        # several Orthancs, each is given one quick retry and the next one is asked instead:
        # another Orthanc of the cluster answers at once. Stores are not retried on one Orthanc
        # (the delivery's own backoff owns that), but go to the next when one refuses the
        # connection (nothing was sent; storing an instance twice keeps one copy anyway).
        single = len(self.base_urls) == 1
        retry = Retry(
            total=8 if single else 1,
            connect=8 if single else 1,
            read=2,
            status=3 if single else 0,
            status_forcelist={502, 503, 504},
            allowed_methods={"GET"},
            backoff_factor=0.5,
            backoff_max=8,
            raise_on_status=False,
        )
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))
        if auth:
            self.session.auth = auth

    @classmethod
    def for_node(cls, settings: Settings, *, timeout: float = 60) -> OrthancClient:
        """A client of this node's Orthanc (or, on a worker host, the cluster's), authenticated
        as the node's service user (or the worker host's own user)."""
        return cls(
            settings.orthanc_urls, auth=service_auth(settings), timeout=timeout, verify=settings.orthanc_trust
        )

    def get_json(self, path: str) -> Any:
        response = self._request("GET", path)
        return response.json()

    def get_bytes(self, path: str) -> bytes:
        return self._request("GET", path).content

    def post_json(self, path: str, payload: Any) -> Any:
        response = self._request("POST", path, json=payload)
        return response.json() if response.content else None

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """The answer of the first Orthanc that answers, the last one that answered first;
        raises the last connection error when none does."""
        rounds = 1 if len(self.base_urls) == 1 or method != "GET" else _FAILOVER_ROUNDS
        error: requests.RequestException | None = None
        for attempt in range(rounds):
            if attempt:
                time.sleep(min(8.0, 0.5 * 2**attempt))
            for url in sorted(self.base_urls, key=lambda candidate: candidate != self.base_url):
                try:
                    response = self.session.request(
                        method,
                        f"{url}/{path.lstrip('/')}",
                        timeout=self.timeout,
                        verify=self.verify,
                        **kwargs,
                    )
                except requests.ConnectionError as refused:  # this one does not answer: the next
                    error = refused
                    continue
                self.base_url = url
                return response
        assert error is not None
        raise error

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            response = self._send(method, path, **kwargs)
        except requests.RequestException as error:
            raise OrthancError(f"{self._who()} did not answer {method} {path}: {error}") from error
        if response.status_code >= 400:
            raise OrthancError(
                f"Orthanc answered {method} {path} with HTTP {response.status_code}: "
                f"{_orthanc_message(response)}",
                not_found=response.status_code == 404,
            )
        return response

    def _who(self) -> str:
        return (
            f"Orthanc at {self.base_url}"
            if len(self.base_urls) == 1
            else f"no Orthanc of {', '.join(self.base_urls)}"
        )

    def instance_file(self, instance_id: str) -> bytes:
        return self.get_bytes(f"/instances/{instance_id}/file")

    def store_instance(self, part10: bytes) -> dict[str, Any]:
        """POST a DICOM Part 10 file; returns Orthanc's answer (ID, ParentStudy, Status)."""
        try:
            response = self._send(
                "POST", "/instances", data=part10, headers={"Content-Type": "application/dicom"}
            )
        except requests.RequestException as error:
            where = self.base_url if len(self.base_urls) == 1 else ", ".join(self.base_urls)
            raise DeliveryError(f"could not store a result in Orthanc at {where}: {error}") from error
        if response.status_code >= 400:
            raise DeliveryError(
                f"Orthanc refused a result with HTTP {response.status_code}: {_orthanc_message(response)}"
            )
        answer: dict[str, Any] = response.json()
        return answer


#: rounds over every Orthanc of a cluster before a read gives up (with a growing pause between
#: rounds: 1 s, 2 s, 4 s, 8 s ... about 40 s in all, as long as one Orthanc's own retries)
_FAILOVER_ROUNDS = 7


def _orthanc_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        return str(body.get("Details") or body.get("Message") or body)
    return str(body)[:300]
