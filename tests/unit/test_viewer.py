"""node.devtools.viewer: OHIF's files, its configuration and the DICOMweb proxy, without a browser.

The proxy is exercised against a small DICOMweb stand-in on loopback that answers what Orthanc
would (a multipart/related answer, in chunks) and echoes what it was sent.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from werkzeug.test import Client

from node.devtools.viewer import OHIF_VERSION, ViewerApp, app_config_js, ensure_ohif, study_url
from node.errors import ConfigurationError
from tests.requirements import require_or_skip

BOUNDARY = "ai-node-test-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
#: Port 9 (discard) on loopback: nothing listens there.
NO_ORTHANC = "http://127.0.0.1:9"
ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


class _FakeDicomWeb(BaseHTTPRequestHandler):
    """Answers every GET with a chunked multipart body and a JSON echo of the request in it."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        echo = json.dumps({"path": self.path, "headers": dict(self.headers.items())}).encode()
        self.send_response(200)
        self.send_header("Content-Type", MULTIPART)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in (f"--{BOUNDARY}\r\nContent-Type: application/json\r\n\r\n".encode(), echo, b"\r\n"):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass


@pytest.fixture
def dicomweb() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeDicomWeb)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    folder = tmp_path / "dist"
    folder.mkdir()
    (folder / "index.html").write_text("<html>OHIF</html>")
    (folder / "app.bundle.js").write_text("console.log('ohif')")
    (folder / "app-config.js").write_text("window.config = {};  // OHIF's own, replaced by the node's")
    return folder


def _client(dist: Path, orthanc_url: str) -> Client:
    return Client(ViewerApp(dist, orthanc_url))


def _echo(body: bytes) -> dict:
    part = body.split(f"--{BOUNDARY}\r\n".encode(), 1)[1].split(b"\r\n\r\n", 1)[1]
    return json.loads(part.rsplit(b"\r\n", 1)[0])


def test_dicomweb_request_reaches_orthanc_with_its_path_query_and_accept_header(dist, dicomweb) -> None:
    response = _client(dist, dicomweb).get(
        "/dicom-web/studies/1.2.3/series/4.5/instances/6.7/frames/1?accept=x", headers={"Accept": ACCEPT}
    )
    echo = _echo(response.get_data())
    assert echo["path"] == "/dicom-web/studies/1.2.3/series/4.5/instances/6.7/frames/1?accept=x"
    assert echo["headers"]["Accept"] == ACCEPT


def test_dicomweb_answer_keeps_its_multipart_content_type_and_body(dist, dicomweb) -> None:
    response = _client(dist, dicomweb).get("/dicom-web/studies", headers={"Accept": ACCEPT})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == MULTIPART
    body = response.get_data()
    assert body.startswith(f"--{BOUNDARY}\r\nContent-Type: application/json\r\n\r\n".encode())


def test_dicomweb_request_carries_the_viewers_host_so_bulk_data_urls_point_at_the_viewer(
    dist, dicomweb
) -> None:
    response = _client(dist, dicomweb).get("/dicom-web/studies", base_url="http://viewer.example:3000")
    assert _echo(response.get_data())["headers"]["Host"] == "viewer.example:3000"


def test_unreachable_orthanc_gives_bad_gateway(dist) -> None:
    assert _client(dist, NO_ORTHANC).get("/dicom-web/studies").status_code == 502


def test_ohif_routes_are_answered_with_index_html(dist) -> None:
    client = _client(dist, NO_ORTHANC)
    for route in ("/", "/viewer?StudyInstanceUIDs=1.2.3", "/viewer/dicomweb", "/segmentation"):
        response = client.get(route)
        assert response.status_code == 200, route
        assert response.get_data(as_text=True) == "<html>OHIF</html>", route


def test_missing_file_is_not_answered_with_index_html(dist) -> None:
    assert _client(dist, NO_ORTHANC).get("/no-such-bundle.js").status_code == 404


def test_files_of_the_dist_are_served(dist) -> None:
    response = _client(dist, NO_ORTHANC).get("/app.bundle.js")
    assert response.get_data(as_text=True) == "console.log('ohif')"
    assert response.mimetype == "text/javascript"


def test_app_config_is_the_nodes_not_the_one_in_dist(dist) -> None:
    response = _client(dist, NO_ORTHANC).get("/app-config.js")
    assert response.get_data(as_text=True) == app_config_js()


def test_a_folder_without_index_html_is_refused(tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="has no index.html"):
        ViewerApp(tmp_path, "http://127.0.0.1:8042")


def _evaluate_app_config(origin: str) -> dict:
    """window.config as a browser at ``origin`` gets it, evaluated by Node.js."""
    node = shutil.which("node") or shutil.which("nodejs")
    require_or_skip(node is not None, "Node.js is not installed (the Debian package npm brings it)")
    script = (
        f"const window = {{location: {{origin: {json.dumps(origin)}}}}};\n"
        f"{app_config_js()}\nprocess.stdout.write(JSON.stringify(window.config));"
    )
    done = subprocess.run([str(node), "-e", script], capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout))


def test_app_config_points_every_dicomweb_root_at_the_pages_own_origin() -> None:
    config = _evaluate_app_config("http://localhost:3000")
    (source,) = config["dataSources"]
    assert config["defaultDataSourceName"] == source["sourceName"]
    roots = {key: source["configuration"][key] for key in ("qidoRoot", "wadoRoot", "wadoUriRoot")}
    assert roots == dict.fromkeys(roots, "http://localhost:3000/dicom-web")


def test_app_config_turns_off_the_tour_and_the_investigational_use_banner() -> None:
    config = _evaluate_app_config("http://localhost:3000")
    assert config["investigationalUseDialog"] == {"option": "never"}
    assert {"ohif.tours": {"$set": []}} in config["customizationService"]


def test_study_url_opens_the_basic_viewer_on_the_study() -> None:
    assert (
        study_url("http://localhost:3000/", "1.2.3") == "http://localhost:3000/viewer?StudyInstanceUIDs=1.2.3"
    )


def _package(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_ensure_ohif_unpacks_only_dist_from_the_cached_package(tmp_path) -> None:
    (tmp_path / f"ohif-app-{OHIF_VERSION}.tgz").write_bytes(
        _package(
            {
                "package/package.json": b"{}",
                "package/dist/index.html": b"<html/>",
                "package/dist/assets/logo.svg": b"<svg/>",
            }
        )
    )
    dist = ensure_ohif(tmp_path)
    assert sorted(str(p.relative_to(dist)) for p in dist.rglob("*") if p.is_file()) == [
        "assets/logo.svg",
        "index.html",
    ]
    assert ensure_ohif(tmp_path) == dist  # the second call finds it unpacked


def test_ensure_ohif_refuses_a_package_member_outside_dist(tmp_path) -> None:
    (tmp_path / f"ohif-app-{OHIF_VERSION}.tgz").write_bytes(
        _package({"package/dist/index.html": b"<html/>", "package/dist/../../../escape.js": b"x"})
    )
    with pytest.raises(ConfigurationError, match="outside its folder"):
        ensure_ohif(tmp_path)
    assert not (tmp_path.parent / "escape.js").exists()


def test_dicomweb_request_reaches_orthanc_as_the_node_s_read_only_user_not_the_browser_s(
    dist, dicomweb
) -> None:
    client = Client(ViewerApp(dist, dicomweb, auth=("ai-node-viewer", "secret")))
    response = client.get("/dicom-web/studies", headers={"Authorization": "Basic YnJvd3Nlcjpwdw=="})
    expected = "Basic " + base64.b64encode(b"ai-node-viewer:secret").decode()
    assert _echo(response.get_data())["headers"]["Authorization"] == expected
