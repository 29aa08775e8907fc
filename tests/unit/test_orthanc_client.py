"""The Orthanc client asks the Orthancs of a cluster in turn: the one that answers is kept."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from node.errors import DeliveryError, OrthancError
from node.orthanc.client import OrthancClient
from tests.integration.node_fixture import free_port


class _Orthanc(BaseHTTPRequestHandler):
    """Answers /system and stores whatever is POSTed to /instances, as an Orthanc would."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._answer({"Name": self.server.server_address[1]})  # type: ignore[index]

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers["Content-Length"])
        self._answer({"ID": "x", "Status": "Success", "Size": len(self.rfile.read(length))})

    def _answer(self, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def orthanc() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Orthanc)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_read_goes_to_the_next_orthanc_when_one_does_not_answer(orthanc: str) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    client = OrthancClient([down, orthanc])
    assert client.get_json("/system")["Name"] == int(orthanc.rsplit(":", 1)[1])
    assert client.base_url == orthanc  # and is asked first from now on


def test_a_store_goes_to_the_next_orthanc_when_one_refuses_the_connection(orthanc: str) -> None:
    client = OrthancClient([f"http://127.0.0.1:{free_port()}", orthanc])
    assert client.store_instance(b"DICM" * 10)["Size"] == 40


def test_when_no_orthanc_answers_the_error_names_them_all() -> None:
    urls = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    client = OrthancClient(urls)
    client_rounds = pytest.MonkeyPatch.context()
    with client_rounds as patch:
        patch.setattr("node.orthanc.client._FAILOVER_ROUNDS", 1)
        with pytest.raises(
            OrthancError, match=rf"^no Orthanc of {urls[0]}, {urls[1]} did not answer GET /system"
        ):
            client.get_json("/system")
    with pytest.raises(DeliveryError, match="could not store a result in Orthanc at"):
        client.store_instance(b"x")
