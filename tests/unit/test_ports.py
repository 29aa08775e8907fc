"""A busy port stops the node with a message naming the holder and the way out."""

from __future__ import annotations

import os
import socket

import pytest

from node.errors import OrthancError
from node.orthanc.ports import port_is_free, require_free_ports


def test_free_port_passes() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert port_is_free(port)
    require_free_ports({"orthanc.http_port": port})


def test_busy_port_names_the_setting_the_holder_and_other_ports() -> None:
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(OrthancError) as raised:
            require_free_ports({"orthanc.dicom_port": port})
    message = str(raised.value)
    assert f"port {port} (orthanc.dicom_port) is in use by" in message
    assert f"pid {os.getpid()}" in message  # `ss` found this test process
    assert "--dicom-port" in message
