"""Your own data: image folders, array files, a torchvision-layout CIFAR-10, conversions,
held-out test splits, where data is looked for, content hashes, download timeouts, and a
one-line error naming the file for every kind of bad data. Only data the tests write."""

from __future__ import annotations

import hashlib
import pickle
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_images, write_pngs
from PIL import Image
from torchvision import datasets

from pyrovae.core.errors import PyroVAEError
from pyrovae.data import DATASETS, load_data, open_dataset, read_dataset
from pyrovae.data.inputs import content_hash, input_kind
from pyrovae.data.sources import ImageOptions, convert_channels, resize_crop

# ---------------------------------------------------------------- image folders


def _class_folder(root: Path, shape, per_class=(5, 4, 3), seed=0) -> np.ndarray:
    """Class subfolders b_cls, a_cls, c_cls (written out of order) of PNGs; returns the images
    in the order pyrovae reads them (classes sorted by name, files sorted)."""
    images = []
    for k, (name, n) in enumerate(zip(("b_cls", "a_cls", "c_cls"), per_class, strict=True)):
        batch = random_images(n, shape, seed + k)
        write_pngs(root / name, batch)
        images.append((name, batch))
    return np.concatenate([b for _, b in sorted(images, key=lambda t: t[0])])


@pytest.mark.parametrize("shape", [(1, 12, 10), (3, 9, 14)], ids=["grey-12x10", "rgb-9x14"])
def test_folder_with_class_subfolders(tmp_path, shape):
    expected = _class_folder(tmp_path / "data", shape)
    data = load_data(str(tmp_path / "data"), "grey", test_fraction=0.25)
    assert data.shape == shape and data.labelled
    every = torch.cat([data.train_x, data.test_x])
    labels = torch.cat([data.train_y, data.test_y])
    # classes in sorted order: a_cls (4 images) ↦ 0, b_cls (5) ↦ 1, c_cls (3) ↦ 2
    assert sorted(labels.tolist()) == [0] * 4 + [1] * 5 + [2] * 3
    flat = torch.from_numpy(expected).reshape(12, -1).float() / 255
    # every image is there exactly once, with its pixels (channel-major) and its class
    rows = {tuple(r.tolist()): k for r, k in zip(flat, [0] * 4 + [1] * 5 + [2] * 3, strict=True)}
    assert {tuple(r.tolist()): int(k) for r, k in zip(every, labels, strict=True)} == rows


def test_folder_of_loose_images_is_unlabelled(tmp_path):
    images = random_images(6, (3, 8, 8), 1)
    write_pngs(tmp_path / "flat", images)
    data = load_data(str(tmp_path / "flat"), "8bit", test_fraction=0.5)
    assert not data.labelled and data.num_classes == 1
    assert data.train_x.shape == (3, 192) and data.test_x.shape == (3, 192)
    # 8-bit pixels are the stored levels k/255 exactly
    got = torch.cat([data.train_x, data.test_x]).sort(0).values
    want = (torch.from_numpy(images).reshape(6, -1).float() / 255).sort(0).values
    assert torch.equal(got, want)


def test_folder_with_train_and_test_subfolders(tmp_path):
    for split, n in (("train", 5), ("test", 2)):
        write_pngs(tmp_path / "d" / split / "cat", random_images(n, (1, 6, 6), n))
        write_pngs(tmp_path / "d" / split / "dog", random_images(n, (1, 6, 6), n + 10))
    data = load_data(str(tmp_path / "d"), "grey")  # the folder's own test split
    assert (data.num_train, data.test_x.shape[0]) == (10, 4)
    assert data.train_y.tolist() == [0] * 5 + [1] * 5 and data.test_y.tolist() == [0, 0, 1, 1]


def test_image_size_resizes_and_centre_crops(tmp_path):
    """Two sizes in one folder: refused without --image-size, resized to one with it; a square
    target of a 12×20 image scales its short side to 6 (→ 6×10) and keeps the middle 6 columns."""
    write_pngs(tmp_path / "d" / "a", random_images(2, (3, 12, 20), 0))
    write_pngs(tmp_path / "d" / "b", random_images(2, (3, 6, 10), 1))
    with pytest.raises(PyroVAEError, match=r"is 6×10 but the first image is 12×20; pass --image"):
        load_data(str(tmp_path / "d"), "grey", test_fraction=0.5)
    data = load_data(str(tmp_path / "d"), "grey", test_fraction=0.5, image_size=[6])
    assert data.shape == (3, 6, 6)
    image = torch.from_numpy(random_images(2, (3, 6, 10), 1)[:1])  # already 6 high: crop only
    assert torch.equal(resize_crop(image, (6, 6)), image[..., 2:8])
    every = torch.cat([data.train_x, data.test_x])
    assert (every == image[0, :, :, 2:8].flatten().float() / 255).all(1).sum() == 1


@pytest.mark.parametrize("shape,size", [((3, 12, 20), (7, 11)), ((1, 30, 30), (13, 13))])
def test_resizing_agrees_with_pil_bilinear(shape, size):
    """Scale to cover (H, W), then centre-crop: within one level of PIL's antialiased bilinear
    resize of the same image, cropped the same way."""
    image = random_images(1, shape, 0)
    got = resize_crop(torch.from_numpy(image), size)[0].numpy().astype(int)
    (h, w), (H, W) = shape[1:], size
    scale = max(H / h, W / w)
    nh, nw = round(h * scale), round(w * scale)
    hwc = image[0].transpose(1, 2, 0)
    pil = Image.fromarray(hwc[..., 0] if shape[0] == 1 else hwc).resize((nw, nh), Image.BILINEAR)
    want = np.asarray(pil).reshape(nh, nw, -1).transpose(2, 0, 1)
    top, left = (nh - H) // 2, (nw - W) // 2
    want = want[:, top : top + H, left : left + W].astype(int)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1


def test_channels_convert_like_pil(tmp_path):
    """--channels 1 on RGB PNGs (PIL's conversion) equals it on the same images as an array
    (pyrovae's), L = (19595 R + 38470 G + 7471 B + 2¹⁵) >> 16; grey to RGB repeats."""
    images = random_images(4, (3, 7, 5), 3)
    write_pngs(tmp_path / "png", images)
    np.save(tmp_path / "x.npy", images)
    a = load_data(str(tmp_path / "png"), "grey", test_fraction=0.5, channels=1)
    b = load_data(str(tmp_path / "x.npy"), "grey", test_fraction=0.5, channels=1)
    assert a.shape == b.shape == (1, 7, 5)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_x, b.test_x)
    r, g, bl = (int(v) for v in images[0, :, 0, 0])
    luma = (19595 * r + 38470 * g + 7471 * bl + 32768) >> 16
    assert convert_channels(torch.from_numpy(images[:1]), 1, "x")[0, 0, 0, 0] == luma
    grey = torch.from_numpy(random_images(1, (1, 2, 2), 0))
    assert torch.equal(convert_channels(grey, 3, "x"), grey.expand(1, 3, 2, 2))


# ---------------------------------------------------------------- array files


def test_npy_of_every_layout(tmp_path):
    u8 = random_images(10, (3, 4, 6), 0)
    cases = {
        "nhw.npy": (u8[:, 0], (1, 4, 6)),
        "nchw.npy": (u8, (3, 4, 6)),
        "nd.npy": (u8[:, 0, :4, :4].reshape(10, 16), (1, 4, 4)),  # D = 16 = 4²
        "float.npy": (u8.astype(np.float32) / 255, (3, 4, 6)),
    }
    for name, (array, shape) in cases.items():
        np.save(tmp_path / name, array)
        data = load_data(str(tmp_path / name), "grey", test_fraction=0.3)
        assert data.shape == shape, name
        every = torch.cat([data.train_x, data.test_x])
        expected = torch.from_numpy(array.reshape(10, -1).astype(np.float32))
        expected = expected / 255 if array.dtype == np.uint8 else expected
        torch.testing.assert_close(every.sort(0).values, expected.sort(0).values, rtol=0, atol=0)


def test_npz_and_pt_with_labels_and_splits(tmp_path):
    train, test = random_images(8, (1, 5, 5), 0), random_images(3, (1, 5, 5), 1)
    ytr, yte = np.arange(8) % 3, np.array([2, 0, 1])
    np.savez(
        tmp_path / "d.npz", train_images=train, train_labels=ytr, test_images=test, test_labels=yte
    )
    torch.save(
        {"images": torch.from_numpy(train), "labels": torch.from_numpy(ytr)}, tmp_path / "d.pt"
    )
    torch.save(torch.from_numpy(train), tmp_path / "t.pt")
    a = load_data(str(tmp_path / "d.npz"), "grey")
    assert a.train_y.tolist() == ytr.tolist() and a.test_y.tolist() == yte.tolist()
    torch.testing.assert_close(a.test_x, torch.from_numpy(test).reshape(3, -1).float() / 255)
    b = load_data(str(tmp_path / "d.pt"), "grey", test_fraction=0.25)
    assert b.labelled and b.num_train == 6 and b.test_x.shape[0] == 2
    # the held-out rows are a seeded choice, the same in every load, labels kept with images
    again = load_data(str(tmp_path / "d.pt"), "grey", test_fraction=0.25)
    assert torch.equal(b.test_x, again.test_x) and torch.equal(b.test_y, again.test_y)
    for x, y in ((b.train_x, b.train_y), (b.test_x, b.test_y)):
        for row, label in zip(x, y, strict=True):
            index = next(
                i
                for i in range(8)
                if torch.equal(torch.from_numpy(train[i]).flatten().float() / 255, row)
            )
            assert ytr[index] == label
    c = load_data(str(tmp_path / "t.pt"), "grey", test_fraction=0.5)
    assert not c.labelled and c.shape == (1, 5, 5)


def test_a_path_needs_a_test_split_or_a_fraction(tmp_path):
    np.save(tmp_path / "x.npy", random_images(4, (1, 4, 4), 0))
    with pytest.raises(PyroVAEError, match="no test split of its own; pass --test-fraction"):
        load_data(str(tmp_path / "x.npy"), "grey")
    with pytest.raises(PyroVAEError, match="--test-fraction must leave at least one image"):
        load_data(str(tmp_path / "x.npy"), "grey", test_fraction=0.01)


# ---------------------------------------------------------------- torchvision-layout CIFAR-10


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar10(root: Path, monkeypatch, n_per_batch: int = 4) -> tuple[np.ndarray, list]:
    """A CIFAR-10 folder in torchvision's layout (pickled batches of rows 3·32·32, CHW) with
    torchvision's checksums swapped for those of the files written here."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images, labels, train_list = [], [], []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batch = random_images(n_per_batch, (3, 32, 32), i)
        ys = [(i + j) % 10 for j in range(n_per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": batch.reshape(n_per_batch, -1), "labels": ys}, f)
        images.append(batch)
        labels.append(ys)
        train_list.append([name, _md5(folder / name)])
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{k}" for k in range(10)]}, f)
    monkeypatch.setattr(datasets.CIFAR10, "train_list", train_list[:5])
    monkeypatch.setattr(datasets.CIFAR10, "test_list", train_list[5:])
    meta = {**datasets.CIFAR10.meta, "md5": _md5(folder / "batches.meta")}
    monkeypatch.setattr(datasets.CIFAR10, "meta", meta)
    return np.concatenate(images), sum(labels, [])


def test_cifar10_in_torchvisions_layout(tmp_path, monkeypatch):
    images, labels = write_cifar10(tmp_path / "root", monkeypatch)
    data = load_data("cifar10", "8bit", data_dir=str(tmp_path / "root"), download=False)
    assert data.shape == (3, 32, 32) and data.num_train == 20 and data.test_x.shape[0] == 4
    flat = torch.from_numpy(images).reshape(24, -1).float() / 255  # torchvision's HWC undone
    assert torch.equal(data.train_x, flat[:20]) and torch.equal(data.test_x, flat[20:])
    assert data.train_y.tolist() == labels[:20]
    assert data.origin.kind == "registered" and data.origin.path == str(tmp_path / "root")
    # a changed byte is caught by torchvision's checksum: corrupt, with the folder named
    batch = tmp_path / "root" / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:-1] + b"\0")
    with pytest.raises(PyroVAEError, match=f"corrupt or unreadable files in {tmp_path / 'root'}"):
        load_data("cifar10", "8bit", data_dir=str(tmp_path / "root"), download=False)


# ---------------------------------------------------------------- where data is looked for


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_registered_dataset_not_found_is_one_line(tmp_path, name):
    with pytest.raises(PyroVAEError) as e:
        read_dataset(name, str(tmp_path), download=False)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{name} not found (looked in {tmp_path})")


def test_data_dir_is_for_registered_names_only(tmp_path):
    np.save(tmp_path / "x.npy", random_images(4, (1, 4, 4), 0))
    with pytest.raises(PyroVAEError, match="--data-dir is for registered datasets"):
        open_dataset(str(tmp_path / "x.npy"), data_dir=str(tmp_path))


def test_input_kinds_by_name_folder_and_suffix(tmp_path):
    (tmp_path / "imgs").mkdir()
    assert input_kind("mnist") == "registered"
    assert input_kind(str(tmp_path / "imgs")) == "folder"
    assert [input_kind(f"a{s}") for s in (".npy", ".NPZ", ".pt")] == ["npy", "npz", "pt"]
    with pytest.raises(PyroVAEError, match="unknown dataset 'cifar': neither a registered"):
        input_kind("cifar")
    with pytest.raises(PyroVAEError, match="not found"):
        load_data(str(tmp_path / "missing.npy"), "grey")


def test_content_hash_is_the_files_not_their_place(tmp_path):
    images = random_images(4, (1, 4, 4), 0)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        np.save(tmp_path / folder / "x.npy", images)
    a, b = (open_dataset(str(tmp_path / f / "x.npy")) for f in ("a", "b"))
    assert content_hash(a.files) == content_hash(b.files)
    images[0, 0, 0, 0] ^= 1
    np.save(tmp_path / "b" / "x.npy", images)
    assert content_hash(open_dataset(str(tmp_path / "b" / "x.npy")).files) != content_hash(a.files)


def test_a_stalled_download_times_out_in_seconds(tmp_path, monkeypatch):
    """A local server that accepts connections and never answers: the download fails with one
    line after the timeout instead of waiting for the network."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(10)
    held: list[socket.socket] = []

    def accept() -> None:
        try:
            while True:
                held.append(server.accept()[0])
        except OSError:
            pass  # the server was closed, or no one called for 10 s

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    monkeypatch.setattr(datasets.MNIST, "mirrors", [f"http://127.0.0.1:{server.getsockname()[1]}/"])
    start = time.monotonic()
    try:
        with pytest.raises(PyroVAEError) as e:
            read_dataset("mnist", str(tmp_path / "dl"), download=True, timeout=0.5)
    finally:
        server.close()
        for conn in held:
            conn.close()
    assert time.monotonic() - start < 5
    msg = str(e.value)
    assert "\n" not in msg and f"download into {tmp_path / 'dl'} failed: timed out" in msg
    assert held  # it did reach the server
    assert socket.getdefaulttimeout() is None  # the process-wide setting is restored
    assert not (tmp_path / "dl").exists()  # what the failed download made is gone


# ---------------------------------------------------------------- bad data: one line, the file


def _npy(tmp_path: Path, array: np.ndarray) -> str:
    np.save(tmp_path / "bad.npy", array)
    return str(tmp_path / "bad.npy")


def _truncated_png(tmp_path: Path) -> str:
    write_pngs(tmp_path / "d", random_images(3, (1, 16, 16), 0))
    path = tmp_path / "d" / "001.png"
    path.write_bytes(path.read_bytes()[:60])
    return str(tmp_path / "d")


def _not_an_image(tmp_path: Path) -> str:
    write_pngs(tmp_path / "d", random_images(3, (1, 16, 16), 0))
    (tmp_path / "d" / "002.png").write_bytes(b"not a png at all")
    return str(tmp_path / "d")


def _bad_labels(tmp_path: Path) -> str:
    np.savez(tmp_path / "bad.npz", images=random_images(5, (1, 4, 4), 0), labels=np.arange(4))
    return str(tmp_path / "bad.npz")


def _empty_class(tmp_path: Path) -> str:
    write_pngs(tmp_path / "d" / "a", random_images(2, (1, 4, 4), 0))
    (tmp_path / "d" / "b").mkdir()
    return str(tmp_path / "d")


def _mixed(tmp_path: Path) -> str:
    write_pngs(tmp_path / "d" / "a", random_images(2, (1, 4, 4), 0))
    write_pngs(tmp_path / "d", random_images(1, (1, 4, 4), 1))
    return str(tmp_path / "d")


def _nan(tmp_path: Path) -> str:
    x = np.full((4, 3, 3), 0.5, np.float32)
    x[2, 1, 1] = np.nan
    return _npy(tmp_path, x)


def _inf(tmp_path: Path) -> str:
    x = np.full((4, 3, 3), 0.5, np.float32)
    x[0, 0, 0] = np.inf
    return _npy(tmp_path, x)


def _empty_folder(tmp_path: Path) -> str:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("no images here")
    return str(tmp_path / "d")


BAD = {
    "nan": (_nan, re.escape("bad.npy: 1 values are not finite (e.g. nan)")),
    "inf": (_inf, re.escape("bad.npy: 1 values are not finite (e.g. inf)")),
    "above 1": (
        lambda p: _npy(p, np.full((4, 3, 3), 1.5, np.float32)),
        re.escape("bad.npy: values span [1.5, 1.5]"),
    ),
    "negative": (lambda p: _npy(p, -np.ones((4, 3, 3), np.int16)), "bad.npy: integer images"),
    "label count": (_bad_labels, re.escape("bad.npz [images]: 5 images but 4 labels")),
    "empty folder": (_empty_folder, "holds no images"),
    "empty class": (_empty_class, "d/b holds no images"),
    "images beside classes": (_mixed, "holds both images and subfolders"),
    "truncated image": (_truncated_png, "cannot read image .*001.png"),
    "not an image": (_not_an_image, "cannot read image .*002.png: cannot identify"),
    "channels last": (
        lambda p: _npy(p, random_images(4, (3, 5, 5), 0).transpose(0, 2, 3, 1)),
        r"bad.npy: images have 5 channels; .*transpose\(0, 3, 1, 2\)",
    ),
    "no images": (lambda p: _npy(p, np.zeros((0, 4, 4), np.uint8)), "bad.npy holds no images"),
    "off the 8-bit grid": (
        lambda p: _npy(p, np.full((4, 3, 3), 0.3, np.float32)),
        "not on the 8-bit grid k/255",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_is_one_line_naming_the_file(tmp_path, case):
    make, pattern = BAD[case]
    dataset = make(tmp_path)
    with pytest.raises(PyroVAEError, match=pattern) as e:
        load_data(dataset, "8bit", test_fraction=0.5)
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)


def test_bad_data_is_refused_by_the_cli_with_exit_2(tmp_path, capsys):
    from pyrovae.cli import main

    code = main(
        [
            "train",
            "--dataset",
            _nan(tmp_path),
            "--pixels",
            "grey",
            "--likelihood",
            "gaussian",
            "--test-fraction",
            "0.5",
            "--run-dir",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "bad.npy: 1 values are not finite" in err
    assert not (tmp_path / "run").exists()


def test_image_options_are_checked():
    assert ImageOptions.of(None, [8]).size == (8, 8)
    assert ImageOptions.of(3, [8, 6]) == ImageOptions(3, (8, 6))
    with pytest.raises(PyroVAEError, match="--channels must be 1 or 3"):
        ImageOptions.of(2, None)
    with pytest.raises(PyroVAEError, match="--image-size takes H or H W"):
        ImageOptions.of(None, [1, 2, 3])
