"""Reading model files safely: only regular files, size-capped, never blocking, and (for paths a
caller names) only inside the model directory.

A path from a ReloadModel call is untrusted: it could name a FIFO (an ``open`` that blocks until a
writer appears), ``/dev/zero`` (a read that never ends), a secret elsewhere on the server, or a file
that is simply too large. ``read_capped`` opens without blocking and without following a final
symlink, checks the open file (not the name) and reads at most ``max_bytes``; ``resolve_inside``
confines a caller's path to the model directory after resolving every symlink and ``..``.
Refusals raise ``UnsafeModelFile`` (an OSError) with the detailed reason, meant for the server's
log and audit trail, never for the caller.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

#: Largest model file a server reads (the shipped TE head is ~0.6 MB).
DEFAULT_MAX_MODEL_BYTES = 256 * 1024 * 1024
#: Largest model card (the JSON beside the model).
MAX_CARD_BYTES = 1024 * 1024


class UnsafeModelFile(OSError):
    """A model path refused before anything was loaded (the message says why, for the operator)."""


def resolve_inside(directory: Path, path: str | os.PathLike) -> Path:
    """``path`` (relative paths are taken inside ``directory``) resolved, or UnsafeModelFile when it
    ends up outside ``directory``."""
    base = Path(directory).expanduser().resolve()
    target = Path(path).expanduser()
    resolved = (target if target.is_absolute() else base / target).resolve()
    if not resolved.is_relative_to(base):
        raise UnsafeModelFile(errno.EACCES, f"{resolved} is outside the model directory {base}")
    return resolved


def read_capped(path: Path, max_bytes: int) -> tuple[bytes, tuple[int, int, int]]:
    """The bytes of the regular file ``path`` and its (mtime_ns, size, inode); at most ``max_bytes``.

    Raises FileNotFoundError/PermissionError as ``open`` does, UnsafeModelFile for anything that is
    not a regular file (FIFO, device, directory, final symlink) or is larger than ``max_bytes``.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeModelFile(errno.ELOOP, f"{path} is a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeModelFile(errno.EINVAL, f"{path} is not a regular file")
        if st.st_size > max_bytes:
            raise UnsafeModelFile(errno.EFBIG, f"{path} has {st.st_size} bytes, more than the {max_bytes} allowed")
        chunks, total = [], 0
        while total <= max_bytes:  # the file may grow while it is read: stop one byte past the cap
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            raise UnsafeModelFile(errno.EFBIG, f"{path} grew past the {max_bytes} bytes allowed while being read")
        return b"".join(chunks), (st.st_mtime_ns, st.st_size, st.st_ino)
    finally:
        os.close(fd)
