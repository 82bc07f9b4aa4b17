"""Atomic file writes: a failed or interrupted write leaves no partial file.

Every file the library writes goes through a temporary file in the target's
folder, renamed into place with `os.replace` once complete (a rename within a
file system is atomic on POSIX and Windows). An existing file is replaced only
with `overwrite=True`: unlike `keras.Model.save`, whose `overwrite` defaults to
`True`, our writers default to `False`, so a second export never silently
replaces the first.
"""

import contextlib
import os
import stat
import tempfile


def check_path(path, argument="path"):
    """Returns `path` as a str; raises TypeError unless it is a non-empty path."""
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"`{argument}` must be a path (str or os.PathLike). "
            f"Received: {argument}={path!r} (of type {type(path).__name__})"
        )
    path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise TypeError(
            f"`{argument}` must be a non-empty str path. Received: {argument}={path!r}"
        )
    return path


def check_overwrite(paths, overwrite):
    """Raises FileExistsError if one of `paths` exists and `overwrite` is False.

    Writers call this before their (possibly long) work, so a refused write
    costs nothing.
    """
    if not isinstance(overwrite, bool):
        raise TypeError(
            f"`overwrite` must be True or False. Received: overwrite={overwrite!r}"
        )
    if overwrite:
        return
    existing = [os.fspath(p) for p in paths if os.path.lexists(p)]
    if existing:
        raise FileExistsError(
            f"{', '.join(existing)} already exists: pass `overwrite=True` to "
            "replace it (or --force on the command line). "
            f"Received: overwrite={overwrite!r}"
        )


def _mode_for(path):
    """The permissions `path` gets: those of the file it replaces, else those
    of a new file (`0o666` less the umask), not `mkstemp`'s private `0o600`."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(os.stat(path).st_mode)
    return 0o666 & ~_umask()


def _umask():
    """The process umask: read from /proc on Linux; elsewhere set and
    restored (a moment in which another thread's new file would get 0)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_path(path, *, overwrite=False):
    """Yields a temporary path beside `path` (same suffix) to write to; on
    success it is renamed to `path`, on failure removed.

    For writers that need a file name, such as `keras.Model.save`.
    """
    path = check_path(path)
    check_overwrite([path], overwrite)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path)
    )
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        check_overwrite([path], overwrite)
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(path, data, *, overwrite=False):
    """Writes `data` (bytes or str) to `path` atomically.

    The data goes to a temporary file in the same folder, which is flushed to
    disk and renamed to `path`; if anything fails, the temporary file is
    removed and an existing file at `path` is untouched. Missing folders are
    created.

    Args:
        path: the file to write (str or os.PathLike).
        data: `bytes` (written in binary) or `str` (written as UTF-8 text).
        overwrite: replace an existing file. Defaults to `False`.

    Returns:
        The path, as a str.

    Raises:
        FileExistsError: if `path` exists and `overwrite` is False.
        TypeError: for a bad `path`, `data` or `overwrite`.

    Examples:
        >>> write_atomic("out/model.tflite", data, overwrite=True)
        'out/model.tflite'
    """
    path = check_path(path)
    if not isinstance(data, (bytes, bytearray, memoryview, str)):
        raise TypeError(
            f"`data` must be bytes or str. Received: data of type {type(data).__name__}"
        )
    if isinstance(data, str):
        mode, encoding = "w", "utf-8"
    else:
        mode, encoding = "wb", None
    with (
        atomic_path(path, overwrite=overwrite) as tmp,
        open(tmp, mode, encoding=encoding) as handle,
    ):
        handle.write(data)
    return path


def save_model(model, path, *, overwrite=False):
    """Saves a Keras model as a `.keras` file, atomically.

    `keras.Model.save` writes the zip archive in place, so an interrupted save
    leaves a truncated file; this saves to a temporary `.keras` file in the
    same folder and renames it. Pruned models save with their wrappers, and
    load with `keras.models.load_model` after `import keras_pruning`.

    Args:
        model: a `keras.Model` (pruned, stripped or plain).
        path: the file, ending in `.keras`.
        overwrite: replace an existing file. Defaults to `False` (Keras's
            `model.save` defaults to `True`).

    Returns:
        The path, as a str.

    Raises:
        FileExistsError: if `path` exists and `overwrite` is False.
        TypeError, ValueError: for a bad `model` or `path`, naming it.

    Examples:
        >>> save_model(keras_pruning.strip_pruning(pruned), "pruned.keras")
        'pruned.keras'
    """
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a keras.Model. "
            f"Received: model={model!r} (of type {type(model).__name__})"
        )
    path = check_path(path)
    if not path.endswith(".keras"):
        raise ValueError(
            f"`path` must end in `.keras`, the Keras 3 format. Received: path={path!r}"
        )
    with atomic_path(path, overwrite=overwrite) as tmp:
        model.save(tmp, overwrite=True)
    return path
