"""The IDX path, the search order, the pixel modes and the index-slicing loader."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_dataset, write_idx

from pyrovae.core.errors import PyroVAEError
from pyrovae.data import load_data, make_image_data, read_idx_dataset, shuffled_batches
from pyrovae.data.batches import epoch_generator
from pyrovae.data.images import epoch_seed


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "plain"])
def test_reads_flat_idx_files(tmp_path, compress):
    arrays = write_dataset(tmp_path / "d", 50, 20, compress)
    raw = read_idx_dataset("mnist", str(tmp_path / "d"), download=False)
    assert raw["train_images"].shape == (50, 28, 28)
    assert raw["test_images"].shape == (20, 28, 28)
    np.testing.assert_array_equal(raw["train_images"].numpy(), arrays["train"][0])
    np.testing.assert_array_equal(raw["test_labels"].numpy(), arrays["t10k"][1])


def test_reads_torchvision_layout(tmp_path):
    arrays = write_dataset(tmp_path / "root" / "FashionMNIST" / "raw", 30, 10, compress=False)
    raw = read_idx_dataset("fashion-mnist", str(tmp_path / "root"), download=False)
    np.testing.assert_array_equal(raw["train_labels"].numpy(), arrays["train"][1])


def test_search_order_data_dir_then_env(tmp_path, monkeypatch):
    write_dataset(tmp_path / "flag", 40, 10)
    write_dataset(tmp_path / "env", 60, 10)
    monkeypatch.setenv("PYROVAE_DATA", str(tmp_path / "env"))
    assert len(read_idx_dataset("mnist", str(tmp_path / "flag"), False)["train_images"]) == 40
    assert len(read_idx_dataset("mnist", None, False)["train_images"]) == 60


def test_an_explicit_data_dir_is_the_only_place_looked_in(tmp_path, monkeypatch):
    """A --data-dir without the files is an error naming it, even with the data elsewhere."""
    write_dataset(tmp_path / "env", 60, 10)
    monkeypatch.setenv("PYROVAE_DATA", str(tmp_path / "env"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PyroVAEError) as e:
        read_idx_dataset("mnist", str(empty), False)
    msg = str(e.value)
    assert f"looked in {empty})" in msg and str(tmp_path / "env") not in msg and "\n" not in msg


def test_missing_data_is_one_clear_line(tmp_path):
    with pytest.raises(PyroVAEError) as e:
        read_idx_dataset("mnist", str(tmp_path), download=False)
    msg = str(e.value)
    assert "\n" not in msg and "--data-dir" in msg and str(tmp_path) in msg


def test_fashion_mnist_hint_names_debian_package(tmp_path, monkeypatch):
    from pyrovae.data import files

    spec = dataclasses.replace(files.DATASETS["fashion-mnist"], system_dirs=())
    monkeypatch.setitem(files.DATASETS, "fashion-mnist", spec)
    with pytest.raises(PyroVAEError, match="dataset-fashion-mnist"):
        read_idx_dataset("fashion-mnist", None, download=False)


def test_corrupt_file_is_a_clear_error(tmp_path):
    write_dataset(tmp_path, 20, 10, compress=False)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(PyroVAEError, match="corrupt"):
        read_idx_dataset("mnist", str(tmp_path), download=False)


def test_wrong_image_size_is_refused(tmp_path):
    write_dataset(tmp_path, 20, 10, compress=False)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((20, 14, 14), np.uint8))
    with pytest.raises(PyroVAEError):
        read_idx_dataset("mnist", str(tmp_path), download=False)


def test_unknown_dataset():
    with pytest.raises(PyroVAEError, match="unknown dataset 'cifar'"):
        read_idx_dataset("cifar", None, False)


def _raw(n=400, seed=3):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 28, 28, generator=g) * 255).round().to(torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    return {
        "train_images": images,
        "train_labels": labels,
        "test_images": images[:100],
        "test_labels": labels[:100],
    }


def test_grey_pixels_are_intensities():
    raw = _raw()
    data = make_image_data(raw, "grey")
    torch.testing.assert_close(data.train_x, raw["train_images"].flatten(1).float() / 255)
    assert torch.equal(data.train_epoch(0, 1), data.train_epoch(0, 2))


def test_static_binarization_is_fixed():
    raw = _raw()
    a, b = make_image_data(raw, "static"), make_image_data(raw, "static")
    assert set(a.train_x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_x, b.test_x)
    assert torch.equal(a.train_epoch(0, 1), a.train_epoch(0, 2))


def test_dynamic_binarization_resamples_each_epoch():
    raw = _raw()
    data = make_image_data(raw, "dynamic")
    p = raw["train_images"].flatten(1).double() / 255
    e1, e2 = data.train_epoch(0, 1), data.train_epoch(0, 2)
    assert set(e1.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(e1, e2)
    assert torch.equal(e1, data.train_epoch(0, 1))  # reproducible per (seed, epoch)
    # E[x] = p: the mean over all N·D pixels is within 5 standard errors of mean(p)
    se = (p * (1 - p)).sum().sqrt() / p.numel()
    assert abs(e1.double().mean() - p.mean()) < 5 * se
    # the test set is binarized once, with a fixed seed: the same in every load
    assert torch.equal(data.test_x, make_image_data(raw, "dynamic").test_x)
    assert set(data.test_x.unique().tolist()) == {0.0, 1.0}


def test_unknown_pixel_mode():
    with pytest.raises(PyroVAEError, match="pixel mode"):
        load_data("mnist", "colour")


def test_train_subset(idx_dir):
    data = load_data("mnist", "grey", data_dir=str(idx_dir), train_subset=7, download=False)
    assert data.train_x.shape == (7, 784) and data.test_x.shape == (100, 784)
    with pytest.raises(PyroVAEError, match="train-subset"):
        load_data("mnist", "grey", data_dir=str(idx_dir), train_subset=10**6, download=False)


@pytest.mark.parametrize("n,batch", [(100, 10), (103, 10), (5, 8)])
def test_loader_visits_every_example_once(n, batch):
    x = torch.arange(n, dtype=torch.float32)[:, None]
    seen = torch.cat(list(shuffled_batches(x, batch, epoch_generator(x.device, 1))))
    assert torch.equal(seen.squeeze(1).sort().values, x.squeeze(1))
    sizes = [len(b) for b in shuffled_batches(x, batch, epoch_generator(x.device, 1))]
    assert sizes == [batch] * (n // batch) + ([n % batch] if n % batch else [])


def test_loader_shuffles_differently_per_epoch():
    x = torch.arange(1000, dtype=torch.float32)[:, None]
    first = [
        next(iter(shuffled_batches(x, 1000, epoch_generator(x.device, epoch_seed(0, e)))))
        for e in (1, 2)
    ]
    assert not torch.equal(first[0], first[1])
    assert not torch.equal(first[0], x)


DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(
    not (DEBIAN / "train-images-idx3-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_debian_fashion_mnist():
    raw = read_idx_dataset("fashion-mnist", None, download=False)  # the system folder
    assert raw["train_images"].shape == (60000, 28, 28)
    assert raw["test_images"].shape == (10000, 28, 28)
    assert torch.equal(raw["test_labels"].bincount(), torch.full((10,), 1000))


def test_download_goes_to_the_users_folder_or_the_cache(tmp_path, monkeypatch):
    """Offline: the torchvision download is tried in --data-dir, else $PYROVAE_DATA, else the
    cache (never a system folder), and its failure becomes the one-line 'not found' error."""
    from pyrovae.data import files

    roots = []

    def offline(root, train, download):
        roots.append(root)
        raise RuntimeError("Name or service not known")

    spec = dataclasses.replace(
        files.DATASETS["mnist"], make=offline, system_dirs=(str(tmp_path / "system"),)
    )
    monkeypatch.setitem(files.DATASETS, "mnist", spec)
    for data_dir, env in ((tmp_path / "flag", None), (None, tmp_path / "env"), (None, None)):
        if env is not None:
            monkeypatch.setenv("PYROVAE_DATA", str(env))
        with pytest.raises(PyroVAEError, match="download into .* failed: Name or service"):
            read_idx_dataset("mnist", str(data_dir) if data_dir else None, download=True)
        monkeypatch.delenv("PYROVAE_DATA", raising=False)
    assert roots == [str(tmp_path / "flag"), str(tmp_path / "env"), str(files.cache_dir() / "data")]


def test_image_data_and_make_image_data_validate_their_tensors():
    """API users get the file readers' checks: one line naming the tensor."""
    from pyrovae.data import ImageData, validate_images

    raw = _raw(20)
    x = raw["train_images"].flatten(1).float() / 255
    y = raw["train_labels"]
    bad = x.clone()
    bad[3, 7] = float("nan")
    cases = [
        (lambda: ImageData(x, y, bad, y, "grey"), "test_x: 1 values are not finite"),
        (lambda: ImageData(x * 2, y, x, y, "grey"), r"train_x: values span \[0, 2\]"),
        (lambda: ImageData(x, y[:19], x, y, "grey"), "train_y: 20 images but 19 labels"),
        (lambda: ImageData(x, y, x, y, "static"), r"train_x: \d+ values are not 0 or 1"),
        (lambda: ImageData(x, y, x, y.float(), "grey"), "test_y: labels must be integers"),
        (lambda: ImageData(x, y, x[:, :700], y, "grey"), r"test_x must be flattened images"),
        (lambda: make_image_data({**raw, "test_images": bad}, "grey"), "test_images: 1 values"),
    ]
    for build, pattern in cases:
        with pytest.raises(PyroVAEError, match=pattern) as e:
            build()
        assert "\n" not in str(e.value)
    data = ImageData(x, y, x, y, "8bit")  # k/255 intensities are on the 8-bit grid
    assert data.shape == (1, 28, 28) and data.num_pixels == 784
    validate_images(torch.tensor([0.0, 1.0]), "ok", levels=1)
    with pytest.raises(PyroVAEError, match="^bits: "):
        validate_images(torch.tensor([0.0, 0.5]), "bits", levels=1)


def test_processes_staging_the_same_gz_files_at_once_all_read_them(tmp_path):
    """Gzipped files are unpacked into a shared cache; runs started together (one per row of
    a benchmark, say) must not trip over each other's half-written copies."""
    import threading

    arrays = write_dataset(tmp_path / "d", 3000, 500)
    barrier, results, errors = threading.Barrier(6), [], []

    def read() -> None:
        barrier.wait()
        try:
            results.append(read_idx_dataset("mnist", str(tmp_path / "d"), download=False))
        except Exception as e:  # noqa: BLE001 - the test reports every failure
            errors.append(repr(e))

    threads = [threading.Thread(target=read) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for raw in results:
        np.testing.assert_array_equal(raw["train_images"].numpy(), arrays["train"][0])
    staged = [p.name for p in (Path(os.environ["XDG_CACHE_HOME"]) / "pyrovae").rglob("*")]
    assert not [name for name in staged if name.endswith(".tmp")]


def test_a_truncated_gz_file_is_one_line_naming_it(tmp_path):
    write_dataset(tmp_path / "d", 50, 20)
    path = tmp_path / "d" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(PyroVAEError, match=r"cannot read .*train-images-idx3-ubyte.gz") as e:
        read_idx_dataset("mnist", str(tmp_path / "d"), download=False)
    assert "\n" not in str(e.value)
