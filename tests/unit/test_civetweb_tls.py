"""The compatibility library Debian 12's civetweb needs for Orthanc's HTTPS (built for real)."""

from __future__ import annotations

import ctypes
import shutil
from pathlib import Path

from node.orthanc import civetweb_tls
from tests.requirements import require_or_skip


def test_the_shims_answer_civetweb_s_lookups_from_the_real_openssl(tmp_path: Path) -> None:
    orthanc = shutil.which("Orthanc")
    require_or_skip(orthanc is not None, "Orthanc is not installed (make setup installs it)")
    assert orthanc is not None
    require_or_skip(civetweb_tls.needs_shim(orthanc), "this Orthanc's civetweb needs no shim")
    require_or_skip(shutil.which("cc") is not None, "no C compiler (make setup installs gcc)")
    folder = civetweb_tls.library_path(tmp_path / "shims", orthanc)
    assert folder is not None
    # as civetweb does: dlopen by the unversioned name, dlsym on that handle
    ssl = ctypes.CDLL(str(folder / "libssl.so"))
    assert all(
        hasattr(ssl, name) for name in ("SSL_get_peer_certificate", "SSL_CTX_new", "TLS_server_method")
    )
    crypto = ctypes.CDLL(str(folder / "libcrypto.so"))
    assert hasattr(crypto, "ERR_get_error")
    stamp = (folder / "stamp").stat().st_mtime_ns
    assert civetweb_tls.library_path(folder, orthanc) == folder  # built once, then reused
    assert (folder / "stamp").stat().st_mtime_ns == stamp
