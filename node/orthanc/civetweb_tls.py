"""A compatibility library without which Debian 12's Orthanc crashes on every HTTPS request.

Orthanc 1.10.1 on Debian 12 serves HTTP with the system's civetweb (libcivetweb1 1.15+dfsg-4),
which loads OpenSSL at run time by name (``dlopen("libssl.so")``) and looks its functions up
with ``dlsym``. It was built for the OpenSSL 1.1 API and asks for
``SSL_get_peer_certificate``, which OpenSSL 3 (Debian 12's) no longer exports (it became a macro
for ``SSL_get1_peer_certificate``): the lookup yields NULL, and civetweb calls it after every
TLS handshake. Orthanc dies with SIGSEGV at the first HTTPS request (seen in gdb: a call to
address 0 from a civetweb worker thread).

The fix here: a folder with a ``libssl.so`` that depends on the real ``libssl.so.3`` and adds
the one missing function, as OpenSSL 3 itself defines it, and a ``libcrypto.so`` that depends on
the real ``libcrypto.so.3`` (civetweb opens that by its unversioned name too, which only
Debian's -dev package would provide). Orthanc starts with that folder first on
``LD_LIBRARY_PATH``; civetweb's ``dlsym`` finds every other function in the real libraries,
which the shims depend on. Nothing is built where Orthanc does not use a shared libcivetweb that
asks for the function, or where the system's libssl still exports it (OpenSSL 1.1).

There is no library or package that provides this; building it needs a C compiler once (the
folder is reused while the source is unchanged).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import shutil
import subprocess
from pathlib import Path

from node.errors import ConfigurationError

_SSL_SHIM = """\
/* See node/orthanc/civetweb_tls.py: OpenSSL 3 defines SSL_get_peer_certificate as this macro. */
typedef struct ssl_st SSL;
typedef struct x509_st X509;
X509 *SSL_get1_peer_certificate(const SSL *ssl);
X509 *SSL_get_peer_certificate(const SSL *ssl) { return SSL_get1_peer_certificate(ssl); }
"""
_CRYPTO_SHIM = "/* See node/orthanc/civetweb_tls.py: only its dependency on libcrypto matters. */\n"


def system_library(name: str) -> str | None:
    """The soname the dynamic loader finds for ``lib<name>``, e.g. ``libssl.so.3``."""
    return ctypes.util.find_library(name)


_OLD_NAME = "SSL_get_peer_certificate"


def needs_shim(orthanc: str) -> bool:
    """Whether the shared civetweb that the ``orthanc`` executable loads asks for the function
    and the system's libssl lacks it (OpenSSL 3)."""
    civetweb = _shared_civetweb(orthanc)
    if civetweb is None or _OLD_NAME.encode() + b"\0" not in civetweb.read_bytes():
        return False  # a static build (Orthanc's own packages) or a civetweb that knows OpenSSL 3
    soname = system_library("ssl")
    if soname is None:
        return False  # no OpenSSL at all: civetweb reports that itself
    return not hasattr(ctypes.CDLL(soname), _OLD_NAME)


def _shared_civetweb(orthanc: str) -> Path | None:
    listed = subprocess.run(["ldd", orthanc], capture_output=True, text=True, check=False).stdout
    for line in listed.splitlines():
        # "libcivetweb.so.1 => /lib/x86_64-linux-gnu/libcivetweb.so.1 (0x...)"
        name, _, rest = line.strip().partition(" => ")
        if name.startswith("libcivetweb") and rest.startswith("/"):
            return Path(rest.split(" (")[0])
    return None


def library_path(folder: Path, orthanc: str) -> Path | None:
    """The folder to put first on Orthanc's ``LD_LIBRARY_PATH`` for HTTPS, built if need be;
    None when this system needs no shim. ``orthanc``: the executable's path."""
    if not needs_shim(orthanc):
        return None
    ssl, crypto = system_library("ssl"), system_library("crypto")
    if ssl is None or crypto is None:
        return None
    stamp = hashlib.sha256(f"{_SSL_SHIM}{_CRYPTO_SHIM}{ssl}{crypto}".encode()).hexdigest()
    if (folder / "stamp").is_file() and (folder / "stamp").read_text() == stamp:
        return folder
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise ConfigurationError(
            "HTTPS with Debian 12's Orthanc needs a small compatibility library, built once with "
            "a C compiler, and there is none: install one (`apt-get install gcc`, or `make setup`)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    _build(compiler, folder, "libssl.so", _SSL_SHIM, ssl)
    _build(compiler, folder, "libcrypto.so", _CRYPTO_SHIM, crypto)
    (folder / "stamp").write_text(stamp)
    return folder


def _build(compiler: str, folder: Path, name: str, source: str, depends_on: str) -> None:
    source_file = folder / f"{name}.c"
    source_file.write_text(source)
    # --no-as-needed: the crypto shim calls nothing, and its dependency is the point of it
    command = [compiler, "-shared", "-fPIC", "-o", str(folder / name), str(source_file)]
    command += ["-Wl,--no-as-needed", f"-l:{depends_on}"]
    built = subprocess.run(command, capture_output=True, text=True, check=False)
    if built.returncode != 0:
        raise ConfigurationError(
            f"building the HTTPS compatibility library {folder / name} failed: {built.stderr.strip()[-500:]}"
        )
