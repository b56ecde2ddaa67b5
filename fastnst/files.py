"""Writing files whole or not at all, and hashing them.

`atomic_path(dst)` yields a temporary path in the destination's folder; when the block ends
without an error the file gets the usual permissions and is renamed over `dst` (a rename within
one file system is atomic), otherwise it is removed. Readers never see half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from fastnst.errors import UserError


def file_mode() -> int:
    """The mode a new file gets from the umask (mkstemp's temporary files are 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(dst: str | Path):
    """A temporary path beside `dst`, renamed over it when the block ends without an error and removed
    otherwise. A file system's refusal (read-only, full disk, a file in the way) is one UserError
    naming `dst`."""
    dst = Path(dst)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{dst.stem}.", suffix=dst.suffix or ".tmp", dir=dst.parent)
    except OSError as e:
        raise UserError(f"{dst}: cannot write here ({e.strerror or e})") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, dst)
    except OSError as e:
        raise UserError(f"{dst}: could not write ({e.strerror or e})") from None
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(dst: str | Path) -> None:
    """Fail now, with one line, if `dst` (a file, or a folder when it ends in /) cannot be written:
    before any time is spent on what would go there. Creates nothing: the test file goes into the
    deepest folder on the way that exists."""
    dst = Path(dst)
    folder = dst if str(dst).endswith("/") or dst.is_dir() else dst.parent
    folder = folder.absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"{dst}: cannot write here ({folder} is a file)")
    try:
        fd, name = tempfile.mkstemp(prefix=".fastnst-check.", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise UserError(f"{dst}: cannot write here ({e.strerror or e})") from None


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
