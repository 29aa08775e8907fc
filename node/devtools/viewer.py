"""`python -m node.devtools.viewer` (`make viewer`): the OHIF viewer on the node's own studies.

OHIF is a static web application; the npm package ``@ohif/app`` ships it prebuilt in ``dist/``.
This module fetches that package once with ``npm pack`` (cached under ``.cache/ohif``) and serves
it from a small threaded HTTP server together with a reverse proxy, so that the browser sees
one origin::

    /dicom-web/...   streamed to and from the node's Orthanc (DICOMweb plugin), unchanged
    /app-config.js   OHIF's configuration, written here: one DICOMweb data source on /dicom-web
    /<file>          a file of OHIF's dist/
    /viewer?...      any other path without a file extension: dist/index.html (OHIF's routes)

The proxy is Werkzeug's ``ProxyMiddleware``: it passes the method, the query, the body and
every end-to-end header (``Accept`` with its multipart ``type=``/``transfer-syntax=``
parameters, the multipart ``Content-Type`` of the answer) through unchanged, drops only the
hop-by-hop ones, and streams the answer in chunks. The ``Host`` header is passed as the
browser sent it, so the BulkDataURIs that Orthanc writes into DICOMweb metadata point at this
server and not at Orthanc's own port, which the browser may not reach (cross-origin).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import ssl
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import requests
from werkzeug.middleware.http_proxy import ProxyMiddleware
from werkzeug.middleware.shared_data import SharedDataMiddleware
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from node.config import load_settings
from node.credentials import basic_authorization, viewer_auth
from node.devtools.npm import npm_pack
from node.errors import ConfigurationError, NodeError

#: The OHIF release the node is tested with (docs/viewer.md says what was checked).
OHIF_PACKAGE = "@ohif/app"
OHIF_VERSION = "3.13.2"
#: Where ``npm pack`` output and the unpacked dist/ are kept (.cache is ignored by git).
DEFAULT_CACHE = Path(".cache") / "ohif"
DEFAULT_PORT = 3000
#: Seconds the proxy waits on Orthanc's socket; a study's metadata can take a while.
PROXY_TIMEOUT_S = 120
#: Name of the data source in the generated app-config.js (it appears in OHIF's URLs).
DATA_SOURCE_NAME = "dicomweb"

_DIST_PREFIX = PurePosixPath("package/dist")

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Fetching OHIF
# --------------------------------------------------------------------------------------------


def ensure_ohif(cache_dir: Path = DEFAULT_CACHE, *, timeout_s: float = 600.0) -> Path:
    """Return the unpacked ``dist/`` of ``@ohif/app@OHIF_VERSION``, fetching it first if needed.

    ``npm pack`` writes the package's tarball into ``cache_dir``; its ``package/dist/`` is
    unpacked into a temporary sibling folder and renamed into place, so an interrupted run
    never leaves a half-unpacked viewer that a later run would trust.
    """
    target = cache_dir / f"app-{OHIF_VERSION}"
    dist = target / "dist"
    if (dist / "index.html").is_file():
        return dist
    cache_dir.mkdir(parents=True, exist_ok=True)
    tarball = _npm_pack(cache_dir, timeout_s=timeout_s)
    building = Path(tempfile.mkdtemp(prefix=f".app-{OHIF_VERSION}.building.", dir=cache_dir))
    try:
        _unpack_dist(tarball, building / "dist")
        if (dist / "index.html").is_file():  # another process finished the same work meanwhile
            return dist
        shutil.rmtree(target, ignore_errors=True)
        building.chmod(0o755)
        building.rename(target)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return dist


def _npm_pack(cache_dir: Path, *, timeout_s: float) -> Path:
    spec = f"{OHIF_PACKAGE}@{OHIF_VERSION}"
    tarball = cache_dir / f"ohif-app-{OHIF_VERSION}.tgz"
    if tarball.is_file():
        return tarball
    with tempfile.TemporaryDirectory(prefix=".npm-pack.", dir=cache_dir) as scratch:
        packed = npm_pack(
            spec, Path(scratch), timeout_s=timeout_s, needed_for=f"The viewer (to fetch {spec})"
        )
        packed.replace(tarball)
    return tarball


def _unpack_dist(tarball: Path, out_dir: Path) -> None:
    """Extract the regular files under ``package/dist/`` of ``tarball`` into ``out_dir``."""
    count = 0
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive.getmembers():
            name = PurePosixPath(member.name)
            if not member.isfile() or _DIST_PREFIX not in name.parents:
                continue
            relative = name.relative_to(_DIST_PREFIX)
            if ".." in relative.parts:  # a crafted name must not escape out_dir
                raise ConfigurationError(f"{tarball.name} holds a file outside its folder: {member.name!r}")
            destination = out_dir.joinpath(*relative.parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            stream = archive.extractfile(member)
            if stream is None:
                continue
            with stream, open(destination, "wb") as file:
                shutil.copyfileobj(stream, file)
            count += 1
    if not (out_dir / "index.html").is_file():
        raise ConfigurationError(f"{tarball.name} has no {_DIST_PREFIX}/index.html ({count} files in dist)")


# --------------------------------------------------------------------------------------------
# OHIF's configuration
# --------------------------------------------------------------------------------------------


def app_config() -> dict[str, Any]:
    """OHIF's ``window.config`` for the node, less the DICOMweb roots (set from the page's origin).

    Keys checked against OHIF 3.13.2's own ``app-config.js`` and sources (docs/viewer.md).
    """
    return {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "showStudyList": True,
        "maxNumberOfWebWorkers": 3,
        # Same origin for everything: no cross-origin warning to show.
        "showWarningMessageForCrossOrigin": False,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "showErrorDetails": "always",
        # The research-use banner at the bottom of the viewer: the node's documentation says
        # what the results are; the banner would hide the lowest part of the images.
        "investigationalUseDialog": {"option": "never"},
        # A SEG opens (is "hydrated" onto its source series) when its thumbnail is opened,
        # without asking first: looking at the AI results is why this viewer is started.
        "disableConfirmationPrompts": True,
        # No first-run guided tour over the viewer.
        "customizationService": [{"ohif.tours": {"$set": []}}],
        "defaultDataSourceName": DATA_SOURCE_NAME,
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": DATA_SOURCE_NAME,
                "configuration": {
                    "friendlyName": "Orthanc AI node",
                    "name": "orthanc",
                    # The three roots are set from window.location by app_config_js().
                    "qidoSupportsIncludeField": False,
                    "imageRendering": "wadors",
                    "thumbnailRendering": "wadors",
                    "enableStudyLazyLoad": True,
                    "supportsFuzzyMatching": False,
                    "supportsWildcard": True,
                    "staticWado": False,
                    "singlepart": "bulkdata,video",
                    "bulkDataURI": {"enabled": True},
                    "omitQuotationForMultipartRequest": True,
                    "dicomUploadEnabled": False,
                },
            }
        ],
    }


def app_config_js() -> str:
    """``app-config.js``: :func:`app_config`, with same-origin ``/dicom-web`` roots."""
    return (
        "/* Written by node/devtools/viewer.py: OHIF on the Orthanc AI node, DICOMweb proxied on this "
        "origin. */\n"
        f"window.config = {json.dumps(app_config(), indent=2)};\n"
        "(function (root) {\n"
        "  for (const source of window.config.dataSources) {\n"
        "    Object.assign(source.configuration, { qidoRoot: root, wadoRoot: root, wadoUriRoot: root });\n"
        "  }\n"
        "})(window.location.origin + '/dicom-web');\n"
    )


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class ViewerApp:
    """WSGI application: OHIF's files, its configuration, and /dicom-web/ proxied to Orthanc.

    ``auth`` is sent with every proxied request: the node's read-only ``ai-node-viewer`` user,
    so the viewer page reads studies and, whoever opens it, changes nothing."""

    def __init__(
        self,
        dist: Path,
        orthanc_url: str,
        *,
        auth: tuple[str, str] | None = None,
        trust: str | bool = True,
    ) -> None:
        """``trust``: for an https ``orthanc_url``, the certificates to verify the node's
        against (its own self-signed one), or True for the system's CAs."""
        if not (dist / "index.html").is_file():
            raise ConfigurationError(f"{dist} is not an OHIF dist folder: it has no index.html")
        self.dist = dist
        self.orthanc_url = orthanc_url.rstrip("/")
        self._config = app_config_js().encode()
        static = SharedDataMiddleware(self._spa_fallback, {"/": str(dist)})
        self._auth = auth is not None
        proxied: dict[str, Any] = {"target": self.orthanc_url, "host": None}
        if self.orthanc_url.startswith("https:"):
            proxied["ssl_context"] = ssl.create_default_context(
                cafile=trust if isinstance(trust, str) else None
            )
        if auth is not None:
            proxied["headers"] = {"Authorization": basic_authorization(auth)}
        self._files_and_proxy = ProxyMiddleware(static, {"/dicom-web/": proxied}, timeout=PROXY_TIMEOUT_S)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/app-config.js":
            response = Response(self._config, content_type="text/javascript; charset=utf-8")
            response.headers["Cache-Control"] = "no-cache"
            return response(environ, start_response)
        if self._auth:
            # The proxy adds the node's header; a browser's own would reach Orthanc as a second one.
            environ.pop("HTTP_AUTHORIZATION", None)
        return self._files_and_proxy(environ, start_response)

    def _spa_fallback(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """index.html for OHIF's client-side routes; 404 for a missing file."""
        request = Request(environ)
        if "." in PurePosixPath(request.path).name or request.method not in ("GET", "HEAD"):
            response = Response(f"{request.path} not found\n", status=404, content_type="text/plain")
        else:
            response = Response((self.dist / "index.html").read_bytes(), content_type="text/html")
            response.headers["Cache-Control"] = "no-cache"
        return response(environ, start_response)


def make_viewer_server(
    dist: Path,
    orthanc_url: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    auth: tuple[str, str] | None = None,
    trust: str | bool = True,
) -> BaseWSGIServer:
    """A threaded server for :class:`ViewerApp` (``port=0``: a free one, see ``server.port``)."""
    return make_server(host, port, ViewerApp(dist, orthanc_url, auth=auth, trust=trust), threaded=True)


def study_url(viewer_url: str, study_instance_uid: str) -> str:
    """The OHIF address that opens one study in the basic viewer."""
    return f"{viewer_url.rstrip('/')}/viewer?StudyInstanceUIDs={quote(study_instance_uid)}"


def latest_processed_study(
    orthanc_url: str, auth: tuple[str, str] | None = None, trust: str | bool = True
) -> str | None:
    """Study Instance UID of the node's most recent finished job, or None if there is none."""
    answer = requests.get(
        f"{orthanc_url}/ai/jobs",
        params={"status": "done", "limit": "1"},
        auth=auth,
        timeout=10,
        verify=trust,
    )
    answer.raise_for_status()
    jobs = answer.json()
    return str(jobs[0]["study_instance_uid"]) if jobs else None


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m node.devtools.viewer",
        description="Serve the OHIF viewer on the node's studies (DICOMweb proxied to its Orthanc).",
    )
    parser.add_argument("--config", help="the node's YAML settings (default: $AI_NODE_CONFIG or defaults)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"default {DEFAULT_CACHE}")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("werkzeug").setLevel(logging.INFO if arguments.verbose else logging.WARNING)
    try:
        settings = load_settings(arguments.config)
        print(f"Preparing OHIF {OHIF_VERSION} (fetched once with npm into {arguments.cache_dir}) ...")
        auth = viewer_auth(settings)
        dist = ensure_ohif(arguments.cache_dir)
        server = make_viewer_server(
            dist,
            settings.orthanc_url,
            host=arguments.host,
            port=arguments.port,
            auth=auth,
            trust=settings.orthanc_trust,
        )
    except NodeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # the port is taken, most often
        print(f"error: cannot listen on {arguments.host}:{arguments.port}: {error}", file=sys.stderr)
        return 1
    if auth is not None and arguments.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: the viewer listens on {arguments.host} and reads studies as the node's "
            "read-only user: whoever reaches this port can see them (but change nothing).",
            file=sys.stderr,
        )
    shown_host = "localhost" if arguments.host in ("127.0.0.1", "0.0.0.0") else arguments.host
    viewer_url = f"http://{shown_host}:{server.port}"
    print(f"OHIF {OHIF_VERSION} at {viewer_url}/ (DICOMweb: {settings.orthanc_url}/dicom-web/)")
    try:
        study = latest_processed_study(settings.orthanc_url, auth, settings.orthanc_trust)
    except requests.RequestException as error:
        print(
            f"warning: the node at {settings.orthanc_url} does not answer ({type(error).__name__}); "
            "start it with `make start` (or `make demo`), then reload the page.",
            file=sys.stderr,
        )
    else:
        if study is None:
            print("No study has AI results yet: `make demo` sends one.")
        else:
            print(f"Latest study with AI results: {study_url(viewer_url, study)}")
    print("Ctrl-C stops the viewer.")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
