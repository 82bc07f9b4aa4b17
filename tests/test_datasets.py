"""keras_pruning.datasets.fashion_mnist: search order, IDX parsing, clear errors."""

import gzip
import os

import numpy as np
import pytest
from conftest import write_fashion_mnist, write_idx

from keras_pruning import datasets
from keras_pruning.datasets import fashion_mnist


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No Debian folder, an empty Keras home, and a download that must not run."""
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", str(tmp_path / "debian"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert not os.path.exists("/tmp/.keras/datasets/fashion-mnist")

    def no_download():
        raise AssertionError("the download must not run in this test")

    monkeypatch.setattr(datasets, "_download", no_download)
    return tmp_path


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_loads_an_explicit_folder(tmp_path, suffix):
    arrays = write_fashion_mnist(tmp_path, n_train=12, n_test=5, suffix=suffix)
    (x_train, y_train), (x_test, y_test) = fashion_mnist(tmp_path)
    assert x_train.shape == (12, 28, 28) and x_train.dtype == np.uint8
    assert y_test.shape == (5,) and y_test.dtype == np.uint8
    np.testing.assert_array_equal(x_train, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(x_test, arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])


def test_debian_folder_comes_before_the_keras_cache(isolated):
    debian = write_fashion_mnist(isolated / "debian", n_train=3, seed=1)
    write_fashion_mnist(
        isolated / "keras_home" / "datasets" / "fashion-mnist", n_train=4
    )
    (x_train, _), _ = fashion_mnist()
    np.testing.assert_array_equal(x_train, debian["train-images-idx3-ubyte"])


@pytest.mark.parametrize("home", ["keras_home", "home/.keras"])
def test_keras_cache_is_used_without_the_debian_folder(isolated, home):
    cached = write_fashion_mnist(
        isolated / home / "datasets" / "fashion-mnist", n_train=4
    )
    (x_train, _), _ = fashion_mnist()
    np.testing.assert_array_equal(x_train, cached["train-images-idx3-ubyte"])


def test_downloads_last(isolated, monkeypatch):
    expected = ((np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.uint8)),) * 2
    monkeypatch.setattr(datasets, "_download", lambda: expected)
    assert fashion_mnist() is expected


def test_failed_download_says_what_to_install(isolated, monkeypatch):
    def offline():
        raise OSError("no network")

    monkeypatch.setattr(datasets, "_download", offline)
    with pytest.raises(
        FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"
    ) as error:
        fashion_mnist()
    assert "no network" in str(error.value)
    assert str(isolated / "debian") in str(error.value)


def test_download_false_never_downloads(isolated):
    with pytest.raises(FileNotFoundError, match="download=False"):
        fashion_mnist(download=False)


def test_explicit_path_is_not_searched_past(isolated):
    write_fashion_mnist(isolated / "debian")
    write_fashion_mnist(isolated / "partial")
    os.remove(isolated / "partial" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(
        ValueError, match=r"missing: t10k-labels-idx1-ubyte\. Received: path="
    ):
        fashion_mnist(isolated / "partial")


def test_path_of_wrong_type_is_a_type_error():
    with pytest.raises(
        TypeError, match="`path` must be a folder path.*Received: path=3"
    ):
        fashion_mnist(3)


def test_corrupt_and_truncated_files_are_value_errors(tmp_path):
    write_fashion_mnist(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_idx(labels, np.zeros((2, 28, 28), np.uint8))  # images where labels go
    with pytest.raises(ValueError, match="magic number 2049"):
        fashion_mnist(tmp_path)
    write_fashion_mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    data = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(data[:-10]))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        fashion_mnist(tmp_path)


def test_mismatched_images_and_labels_are_a_value_error(tmp_path):
    write_fashion_mnist(tmp_path, n_train=6)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="6 images but 5 labels"):
        fashion_mnist(tmp_path)


def test_real_fashion_mnist_from_debian():
    if not os.path.isdir(datasets.DEBIAN_FASHION_MNIST):
        pytest.skip(
            "apt-get install -y dataset-fashion-mnist (make test does, as root)"
        )
    (x_train, y_train), (x_test, y_test) = fashion_mnist()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    # Fashion-MNIST is balanced: 6,000 and 1,000 images per class.
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
    assert x_train.max() == 255 and x_train.min() == 0
