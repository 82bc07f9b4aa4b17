"""Atomic file writes: a failed or interrupted write leaves no partial file."""

import contextlib
import os
import tempfile


def write_atomic(path, data):
    """Writes `data` (bytes or str) to `path` through a temporary file in the
    same directory, then renames it into place. Returns the path as a str."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    mode = "wb" if isinstance(data, (bytes, bytearray, memoryview)) else "w"
    fd, tmp = tempfile.mkstemp(
        dir=directory, prefix=".tmp-", suffix=os.path.basename(path)
    )
    try:
        with os.fdopen(fd, mode) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
