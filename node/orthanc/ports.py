"""Checks that the ports the node needs are free, and says who holds them if not."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess

from node.errors import OrthancError


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def who_listens_on(port: int) -> str | None:
    """The process listening on a TCP port, as 'name (pid N)', if `ss` can tell."""
    if not shutil.which("ss"):
        return None
    listing = subprocess.run(
        ["ss", "-H", "-ltnp", f"sport = :{port}"], capture_output=True, text=True, check=False
    ).stdout
    found = re.search(r'users:\(\("([^"]+)",pid=(\d+)', listing)
    if found:
        return f"{found.group(1)} (pid {found.group(2)})"
    return None


def packaged_orthanc_service_active() -> bool:
    """Whether Debian's own `orthanc` systemd service is running on this machine."""
    if not shutil.which("systemctl"):
        return False
    state = subprocess.run(["systemctl", "is-active", "orthanc"], capture_output=True, text=True, check=False)
    return state.stdout.strip() == "active"


def require_free_ports(ports: dict[str, int]) -> None:
    """Raise OrthancError naming every busy port, its holder and how to pick others."""
    problems = []
    for setting, port in ports.items():
        if port_is_free(port):
            continue
        holder = who_listens_on(port) or "another process"
        problems.append(f"port {port} ({setting}) is in use by {holder}")
    if not problems:
        return
    hint = (
        "Stop the process that holds it, or choose other ports: "
        "`ai-node run --http-port 8043 --dicom-port 4243`, or set orthanc.http_port / "
        "orthanc.dicom_port in the configuration file."
    )
    if packaged_orthanc_service_active():
        hint = (
            "Debian's own Orthanc service is running: `sudo systemctl disable --now orthanc` "
            "stops it (`make setup` offers to), or " + hint[0].lower() + hint[1:]
        )
    raise OrthancError("; ".join(problems) + ". " + hint)
