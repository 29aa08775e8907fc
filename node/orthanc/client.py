"""A small client for the parts of Orthanc's REST API the node uses.

Plain requests rather than a wrapper library: the node needs six calls, and it must control
the Accept-Encoding header (Orthanc gzips each instance otherwise, which made fetching a
300-slice CT 25 times slower, ../shared/PERFORMANCE.md).
"""

from __future__ import annotations

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
        base_url: str,
        *,
        auth: tuple[str, str] | None = None,
        timeout: float = 60,
        verify: str | bool = True,
    ) -> None:
        """``verify``: requests' certificate check of an https URL: True (the system's CAs) or
        the file of certificates to trust (the node's own, self-signed); never off."""
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # given with every request: requests lets $REQUESTS_CA_BUNDLE override a session's own
        # ``verify`` (psf/requests#3829), which would refuse the node's self-signed certificate
        self.verify = verify
        self.session = requests.Session()
        self.session.headers["Accept-Encoding"] = "identity"
        # Reads are safe to retry, and worth it: Orthanc closes idle keep-alive connections
        # after KeepAliveTimeout (a request racing that close gets "connection aborted"), and
        # a crashed Orthanc is back within seconds (node.cli.supervisor), so a worker's fetch
        # waits for it (0.5 s, 1 s, 2 s ... up to about 40 s) rather than failing its job.
        # Stores are not retried here (the delivery's own backoff owns that decision).
        retry = Retry(
            total=8,
            connect=8,
            read=2,
            status=3,
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
        """A client of this node's Orthanc, authenticated as the node's service user."""
        return cls(
            settings.orthanc_url, auth=service_auth(settings), timeout=timeout, verify=settings.orthanc_trust
        )

    def _url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def get_json(self, path: str) -> Any:
        response = self._request("GET", path)
        return response.json()

    def get_bytes(self, path: str) -> bytes:
        return self._request("GET", path).content

    def post_json(self, path: str, payload: Any) -> Any:
        response = self._request("POST", path, json=payload)
        return response.json() if response.content else None

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(
                method, self._url(path), timeout=self.timeout, verify=self.verify, **kwargs
            )
        except requests.RequestException as error:
            raise OrthancError(
                f"Orthanc at {self.base_url} did not answer {method} {path}: {error}"
            ) from error
        if response.status_code >= 400:
            raise OrthancError(
                f"Orthanc answered {method} {path} with HTTP {response.status_code}: "
                f"{_orthanc_message(response)}",
                not_found=response.status_code == 404,
            )
        return response

    def instance_file(self, instance_id: str) -> bytes:
        return self.get_bytes(f"/instances/{instance_id}/file")

    def store_instance(self, part10: bytes) -> dict[str, Any]:
        """POST a DICOM Part 10 file; returns Orthanc's answer (ID, ParentStudy, Status)."""
        try:
            response = self.session.post(
                self._url("/instances"),
                data=part10,
                headers={"Content-Type": "application/dicom"},
                timeout=self.timeout,
                verify=self.verify,
            )
        except requests.RequestException as error:
            raise DeliveryError(f"could not store a result in Orthanc at {self.base_url}: {error}") from error
        if response.status_code >= 400:
            raise DeliveryError(
                f"Orthanc refused a result with HTTP {response.status_code}: {_orthanc_message(response)}"
            )
        answer: dict[str, Any] = response.json()
        return answer


def _orthanc_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        return str(body.get("Details") or body.get("Message") or body)
    return str(body)[:300]
