"""Datasets for the examples, found offline first.

`fashion_mnist()` looks, in order, in an explicit path, in Debian's
`dataset-fashion-mnist` package, in the Keras cache, and only then downloads
with `keras.datasets`; when all fail, the error says what to install.
"""

import gzip
import os

import numpy as np

__all__ = ("DEBIAN_FASHION_MNIST", "fashion_mnist")

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
"""Where Debian's `dataset-fashion-mnist` package puts the four IDX files."""

_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049
_INSTALL_HINT = (
    "Install it with `apt-get install -y dataset-fashion-mnist` (Debian or "
    f"Ubuntu, as root; it fills {DEBIAN_FASHION_MNIST}), or pass `path=` to a "
    "folder holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz, or run once with "
    "internet access so that `keras.datasets.fashion_mnist` can download it."
)


def _keras_cache_dirs():
    """Where `keras.datasets.fashion_mnist` keeps its download."""
    homes = []
    if os.environ.get("KERAS_HOME"):
        homes.append(os.environ["KERAS_HOME"])
    homes += [os.path.join(os.path.expanduser("~"), ".keras"), "/tmp/.keras"]
    return [os.path.join(home, "datasets", "fashion-mnist") for home in homes]


def _find(folder, stem):
    """The path of `stem` or `stem.gz` in `folder`, or None."""
    for name in (stem + ".gz", stem):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def _missing(folder):
    """The IDX files that `folder` lacks (all of them if it is no folder)."""
    return [stem for stem in _FILES if not _find(folder, stem)]


def _read_idx(path, magic):
    """Reads one IDX file (gzipped or not): a big-endian header, then uint8 data."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as file:
            data = file.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"Cannot read IDX file {path!r}: {error}") from None
    ndim = 3 if magic == _IMAGES_MAGIC else 1
    header = 4 * (1 + ndim)
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        raise ValueError(
            f"{path!r} is not an IDX file with magic number {magic}: it is "
            "corrupt or not Fashion-MNIST. " + _INSTALL_HINT
        )
    shape = tuple(
        int.from_bytes(data[4 * i : 4 * i + 4], "big") for i in range(1, ndim + 1)
    )
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(
            f"{path!r} holds {len(data)} bytes where its header {shape} asks for "
            f"{expected}: the file is truncated or corrupt. " + _INSTALL_HINT
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _load_folder(folder):
    train_x, train_y, test_x, test_y = (
        _read_idx(
            _find(folder, stem), _IMAGES_MAGIC if "images" in stem else _LABELS_MAGIC
        )
        for stem in _FILES
    )
    for x, y, split in ((train_x, train_y, "train"), (test_x, test_y, "t10k")):
        if len(x) != len(y):
            raise ValueError(
                f"In {folder!r}, {split} has {len(x)} images but {len(y)} labels."
            )
    return (train_x, train_y), (test_x, test_y)


def _download():
    import keras

    return keras.datasets.fashion_mnist.load_data()


def fashion_mnist(path=None, *, download=True):
    """Loads Fashion-MNIST as `((x_train, y_train), (x_test, y_test))`.

    Images are `uint8` arrays of shape `(n, 28, 28)` and labels `uint8` arrays
    of shape `(n,)`, as `keras.datasets.fashion_mnist.load_data()` returns them
    (60,000 training and 10,000 test examples).

    Looks, in order, in:

    1. `path`, when given (and nowhere else);
    2. `/usr/share/datasets/fashion-mnist` (Debian's `dataset-fashion-mnist`);
    3. the Keras cache (`$KERAS_HOME`, `~/.keras` or `/tmp/.keras`,
       under `datasets/fashion-mnist`);
    4. a download by `keras.datasets.fashion_mnist`, when `download` is true.

    Args:
        path: a folder holding the four IDX files, gzipped or not. Defaults to
            `None` (search the places above).
        download: whether to try `keras.datasets` when no local copy is found.
            Defaults to `True`.

    Returns:
        `((x_train, y_train), (x_test, y_test))`.

    Raises:
        ValueError: if `path` is not a folder with the four files, or a file
            is corrupt.
        FileNotFoundError: if no copy is found and the download fails or is
            off; the message says what to install.

    Examples:
        >>> (x_train, y_train), (x_test, y_test) = fashion_mnist()
        >>> x_train.shape, y_test.shape
        ((60000, 28, 28), (10000,))
    """
    if not isinstance(download, bool):
        raise TypeError(
            f"`download` must be True or False. Received: download={download!r}"
        )
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(
                "`path` must be a folder path (str or os.PathLike) or None. "
                f"Received: path={path!r} (of type {type(path).__name__})"
            )
        folder = os.fspath(path)
        missing = _missing(folder)
        if missing:
            raise ValueError(
                "`path` must be a folder holding the Fashion-MNIST IDX files "
                f"(gzipped or not); missing: {', '.join(missing)}. Received: "
                f"path={folder!r}"
            )
        return _load_folder(folder)
    searched = [DEBIAN_FASHION_MNIST, *_keras_cache_dirs()]
    for folder in searched:
        if not _missing(folder):
            return _load_folder(folder)
    reason = "downloading is off (download=False)"
    if download:
        try:
            return _download()
        except Exception as error:  # no network, a proxy, a partial file...
            reason = (
                f"the keras.datasets download failed ({type(error).__name__}: {error})"
            )
    raise FileNotFoundError(
        f"Fashion-MNIST was not found in {', '.join(searched)}, and {reason}. "
        + _INSTALL_HINT
    )
