"""Starting and stopping the node's own Orthanc process.

The runtime configuration is rendered into the data folder from ``orthanc/orthanc.json`` and
the node's settings; Orthanc is started with only that file, so Debian's /etc/orthanc is
never read or changed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sysconfig
import time
from pathlib import Path
from typing import Any

import requests

from node.config import Settings, dump_settings
from node.credentials import (
    Credentials,
    credentials_path,
    ensure_credentials,
    read_password_file,
    service_auth,
)
from node.errors import ConfigurationError, OrthancError
from node.orthanc import civetweb_tls
from node.orthanc.ports import require_free_ports
from node.orthanc.tls import check_pair, write_orthanc_pem
from node.support.private import make_private_dir, restrict, write_private

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = PROJECT_ROOT / "orthanc" / "orthanc.json"
PLUGIN_SCRIPT = PROJECT_ROOT / "plugins" / "ai_node_plugin.py"
PLUGINS = ("libOrthancPython.so", "libOrthancDicomWeb.so")


def runtime_paths(settings: Settings) -> dict[str, Path]:
    data = settings.resolved_data_dir
    return {
        "data": data,
        "orthanc_config": data / "orthanc" / "orthanc.json",
        "node_config": data / "node.yaml",
        "credentials": credentials_path(settings),
        "https_pem": data / "orthanc" / "https.pem",
        "storage": data / "orthanc" / "storage",
        "index": data / "orthanc" / "index",
        "logs": data / "logs",
    }


def render_orthanc_config(settings: Settings, credentials: Credentials) -> dict[str, Any]:
    """Orthanc's configuration: the template plus what the node's settings decide."""
    config: dict[str, Any] = json.loads(TEMPLATE.read_text())
    paths = runtime_paths(settings)
    plugin_folder = settings.orthanc.plugin_folder
    missing = [name for name in PLUGINS if not (plugin_folder / name).is_file()]
    if missing:
        raise OrthancError(
            f"Orthanc plugin(s) {', '.join(missing)} not found in {plugin_folder}: install the "
            "Debian packages orthanc-python and orthanc-dicomweb (`make setup` does)"
        )
    config.update(
        {
            "DicomAet": settings.orthanc.aet,
            "HttpPort": settings.orthanc.http_port,
            "DicomPort": settings.orthanc.dicom_port,
            "StableAge": max(1, round(settings.orthanc.stable_age.total_seconds())),
            "RemoteAccessAllowed": settings.orthanc.http_remote_access,
            "AuthenticationEnabled": settings.orthanc.authentication,
            "RegisteredUsers": credentials.registered_users() if settings.orthanc.authentication else {},
            "StorageDirectory": str(paths["storage"]),
            "IndexDirectory": str(paths["index"]),
            # Orthanc's own cap recycles: it deletes the oldest patients to make room. Never:
            # the plugin refuses new instances at orthanc.max_storage_size instead.
            "MaximumStorageSize": 0,
            "Plugins": [str(plugin_folder / name) for name in PLUGINS],
            "PythonScript": str(PLUGIN_SCRIPT),
            # Read by the plugin script: where the node's settings and packages are.
            "AINode": {
                "ConfigFile": str(paths["node_config"]),
                "ProjectRoot": str(PROJECT_ROOT),
                "SitePackages": sysconfig.get_paths()["purelib"],
            },
        }
    )
    config.update(_https(settings, paths["https_pem"]))
    # DICOMweb's Ssl: the scheme of the URLs its answers carry (WADO-RS links in QIDO results)
    config["DicomWeb"]["Ssl"] = settings.orthanc.https is not None
    config.update(_dicom_tls(settings))
    config.update(_allowed_callers(settings))
    config.update(_shared_index(settings))
    return config


#: Debian's orthanc-postgresql: the index, and the DICOM files, in PostgreSQL
POSTGRESQL_PLUGINS = ("libOrthancPostgreSQLIndex.so", "libOrthancPostgreSQLStorage.so")


def _shared_index(settings: Settings) -> dict[str, Any]:
    """The PostgreSQL index (and storage) several Orthancs of a cluster share: ``Lock`` off, so
    that more than one Orthanc may open it (Orthanc 1.9.2+ with the 4.x plug-in)."""
    index = settings.cluster.orthanc_index
    if index is None:
        return {}
    folder = settings.orthanc.plugin_folder
    wanted = POSTGRESQL_PLUGINS if index.storage else POSTGRESQL_PLUGINS[:1]
    missing = [name for name in wanted if not (folder / name).is_file()]
    if missing:
        raise OrthancError(
            f"Orthanc plugin(s) {', '.join(missing)} not found in {folder}: install the Debian "
            "package orthanc-postgresql (`make setup` does)"
        )
    plugins = [str(folder / name) for name in PLUGINS + wanted]
    return {
        "Plugins": plugins,
        "PostgreSQL": {
            "EnableIndex": True,
            "EnableStorage": index.storage,
            "Host": index.host,
            "Port": index.port,
            "Database": index.database,
            "Username": index.user,
            "Password": "" if index.password_file is None else read_password_file(index.password_file),
            "Lock": False,
            "IndexConnectionsCount": 2,
            "MaximumConnectionRetries": 10,
            "ConnectionRetryInterval": 2,
        },
    }


def _https(settings: Settings, pem: Path) -> dict[str, Any]:
    https = settings.orthanc.https
    if https is None:
        return {"SslEnabled": False}
    return {"SslEnabled": True, "SslCertificate": str(pem)}


def _dicom_tls(settings: Settings) -> dict[str, Any]:
    tls = settings.orthanc.dicom_tls
    if tls is None:
        return {"DicomTlsEnabled": False}
    check_pair(tls.certificate, tls.private_key, setting="orthanc.dicom_tls")
    if not tls.trusted_certificates.is_file():
        raise ConfigurationError(
            f"orthanc.dicom_tls.trusted_certificates: {tls.trusted_certificates} is not a file "
            "(the PEM certificates of the modalities allowed to connect)"
        )
    return {
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(tls.certificate.resolve()),
        "DicomTlsPrivateKey": str(tls.private_key.resolve()),
        "DicomTlsTrustedCertificates": str(tls.trusted_certificates.resolve()),
        "DicomTlsRemoteCertificateRequired": tls.remote_certificate_required,
    }


#: the port Orthanc records for an allowed caller: Orthanc's modality entries need one, and the
#: node never connects back to a caller (C-MOVE is not offered), so it is the DICOM default
CALLER_PORT = 104


def _allowed_callers(settings: Settings) -> dict[str, Any]:
    """Orthanc's own allow-list: with ``DicomAlwaysAllowStore`` off, only the AE titles of
    ``DicomModalities`` may C-STORE, and with ``DicomCheckModalityHost`` only from their host."""
    callers = settings.orthanc.allowed_callers
    if callers is None:
        return {"DicomAlwaysAllowStore": True, "DicomModalities": {}, "DicomCheckModalityHost": False}
    modalities = {
        f"caller-{index}": {
            "AET": caller.ae_title,
            "Host": caller.host or "0.0.0.0",  # unused: hosts are checked for all or none
            "Port": CALLER_PORT,
            "AllowEcho": True,
            "AllowStore": True,
            "AllowFind": False,
            "AllowMove": False,
            "AllowGet": False,
            "AllowStorageCommitment": False,
        }
        for index, caller in enumerate(callers, 1)
    }
    return {
        "DicomAlwaysAllowStore": False,
        "DicomModalities": modalities,
        "DicomCheckModalityHost": bool(callers) and all(caller.host for caller in callers),
    }


def write_node_config(settings: Settings) -> Path:
    """The node's resolved settings in the data folder, which the workers are started with;
    readable by the node's account only (it may hold a PostgreSQL password)."""
    paths = runtime_paths(settings)
    make_private_dir(paths["data"])
    paths["logs"].mkdir(parents=True, exist_ok=True)
    resolved = settings.model_copy(update={"data_dir": paths["data"]})
    write_private(paths["node_config"], dump_settings(resolved))
    return paths["node_config"]


def write_runtime_files(settings: Settings) -> dict[str, Path]:
    """Write Orthanc's configuration and the node's resolved settings into the data folder,
    all readable by the node's account only (see :mod:`node.support.private`)."""
    paths = runtime_paths(settings)
    write_node_config(settings)
    for key in ("storage", "index"):
        paths[key].mkdir(parents=True, exist_ok=True)
    restrict(paths["credentials"])
    https = settings.orthanc.https
    if https is not None:
        write_orthanc_pem(https.certificate, https.private_key, paths["https_pem"])
    credentials, admin = ensure_credentials(paths["credentials"])
    if admin is not None:
        # `ai-node run`/`start` create the file first and print the password; reaching this
        # means the node was started some other way, so say where the password is.
        log.warning("created the node's users; the admin password is in %s", paths["credentials"])
    # Orthanc's configuration holds the users' passwords
    write_private(paths["orthanc_config"], json.dumps(render_orthanc_config(settings, credentials), indent=2))
    return paths


class OrthancProcess:
    """One Orthanc, started with the node's runtime configuration."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.paths = runtime_paths(settings)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        executable = shutil.which(self.settings.orthanc.executable)
        if executable is None:
            raise OrthancError(
                f"Orthanc executable {self.settings.orthanc.executable!r} not found: install the "
                "Debian package orthanc (`make setup` does)"
            )
        require_free_ports(
            {
                "orthanc.http_port": self.settings.orthanc.http_port,
                "orthanc.dicom_port": self.settings.orthanc.dicom_port,
            }
        )
        paths = write_runtime_files(self.settings)
        env = dict(os.environ)
        # DCMTK reads TCP_NODELAY; without it every C-STORE waits on Nagle's algorithm (~90 ms).
        env["TCP_NODELAY"] = "1"
        # The plugin's embedded interpreter must not pick up a virtualenv's PYTHONHOME.
        env.pop("PYTHONHOME", None)
        if self.settings.orthanc.https is not None:
            shims = civetweb_tls.library_path(paths["data"] / "orthanc" / "civetweb-tls", executable)
            if shims is not None:
                env["LD_LIBRARY_PATH"] = ":".join(filter(None, [str(shims), env.get("LD_LIBRARY_PATH")]))
        log_file = open(paths["logs"] / "orthanc.log", "ab")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            [executable, str(paths["orthanc_config"])],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=paths["data"],
            start_new_session=True,
        )
        log_file.close()
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.settings.orthanc.start_timeout.total_seconds()
        url = f"{self.settings.orthanc_url}/ai/health"
        auth = service_auth(self.settings)
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise OrthancError(
                    f"Orthanc exited with status {self.process.returncode} during start-up; "
                    f"see {self.paths['logs'] / 'orthanc.log'}"
                )
            try:
                # 503 is the plugin answering that the node is unhealthy (routing behind, say):
                # Orthanc is up, which is what this waits for
                answer = requests.get(url, auth=auth, timeout=2, verify=self.settings.orthanc_trust)
                if answer.status_code in (200, 503):
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        self.stop()
        raise OrthancError(
            f"Orthanc did not answer {url} within "
            f"{self.settings.orthanc.start_timeout.total_seconds():.0f} s; "
            f"see {self.paths['logs'] / 'orthanc.log'}"
        )

    def poll(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("Orthanc did not stop within %.0f s; killing it", timeout)
            self.process.kill()
            self.process.wait()
