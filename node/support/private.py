"""Files only the node's own OS account may read: the data folder and everything with a secret.

The data folder holds patient images, passwords (``credentials.json``, Orthanc's rendered
configuration, perhaps a PostgreSQL password in ``node.yaml``), the key that decrypts the
destinations' secrets and the TLS private keys. Two layers keep them private:

- every ``ai-node`` process sets the umask to 077 (:func:`use_private_umask`), so whatever it or
  its children (Orthanc, the workers) create is 600/700: Orthanc's storage, logs, results;
- files that hold a secret are written 600 from their first byte (:func:`write_private`) and
  folders and files left by an older node are narrowed when the node starts
  (:func:`make_private_dir`, :func:`restrict`), so no umask is relied on for them.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_UMASK = 0o077
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def use_private_umask() -> None:
    """Files and folders this process (and the processes it starts) creates are its own."""
    os.umask(PRIVATE_UMASK)


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) if missing; the folder itself ends up mode 700."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    # mkdir's mode passes through the umask, and an existing folder keeps its old mode
    os.chmod(path, PRIVATE_DIR)


def restrict(path: Path) -> None:
    """Narrow an existing file to mode 600 (a file written by an older node); no file: nothing."""
    try:
        os.chmod(path, PRIVATE_FILE)
    except FileNotFoundError:
        pass


def write_private(path: Path, data: str | bytes) -> None:
    """Replace ``path`` atomically with ``data``, mode 600 from the first byte: a reader sees
    the old file or the whole new one, and never a moment of a world-readable copy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    try:
        os.fchmod(descriptor, PRIVATE_FILE)  # O_CREAT's mode is filtered by the umask
        with os.fdopen(descriptor, "wb") as file:
            file.write(data.encode() if isinstance(data, str) else data)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)


def create_private(path: Path, data: bytes) -> bool:
    """Create ``path`` with ``data``, mode 600, only if it does not exist; True if this call
    created it. Concurrent callers (the plugin and the workers starting together) agree on
    one file: the loser finds the winner's, complete (it is linked in whole)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.new")
    write_private(partial, data)
    try:
        os.link(partial, path)
    except FileExistsError:
        return False
    finally:
        partial.unlink(missing_ok=True)
    return True
