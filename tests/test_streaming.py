"""Streamed training data (a DataLoader over a memory map or image files) against the
device-resident path: the same batches in every pixel mode, the same trained weights, chosen
when the data does not fit, and one-line errors from worker processes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_images, write_pngs

from pyrovae import TrainConfig, build_model_and_guide, fit, set_seed
from pyrovae.core.errors import PyroVAEError
from pyrovae.data import ImageData, StreamedImageData, load_data
from pyrovae.data import images as images_module

PIXELS = ["grey", "8bit", "static", "dynamic"]


@pytest.fixture
def npy(tmp_path) -> str:
    """37 images (1, 5, 6) in a .npy file, class labels via a .npz twin."""
    path = tmp_path / "x.npz"
    np.savez(path, images=random_images(37, (1, 5, 6), 0), labels=np.arange(37) % 4)
    return str(path)


def _both(dataset: str, pixels: str, workers: int = 0, **kwargs):
    resident = load_data(dataset, pixels, test_fraction=0.2, stream=False, **kwargs)
    streamed = load_data(dataset, pixels, test_fraction=0.2, stream=True, workers=workers, **kwargs)
    assert isinstance(resident, ImageData) and isinstance(streamed, StreamedImageData)
    return resident, streamed


def _batches(data, epoch: int, labels: bool) -> list:
    return list(data.train_batches(seed=3, epoch=epoch, batch_size=8, labels=labels))


@pytest.mark.parametrize("pixels", PIXELS)
def test_streamed_batches_equal_resident_batches(npy, pixels):
    resident, streamed = _both(npy, pixels)
    assert torch.equal(resident.test_x, streamed.test_x)
    assert torch.equal(resident.test_y, streamed.test_y)
    assert streamed.num_train == resident.num_train == 30
    for epoch in (1, 2):
        for labels in (False, True):
            a, b = _batches(resident, epoch, labels), _batches(streamed, epoch, labels)
            assert len(a) == len(b) == 4  # 8 + 8 + 8 + 6
            for x, y in zip(a, b, strict=True):
                for u, v in zip(x if labels else [x], y if labels else [y], strict=True):
                    assert torch.equal(u, v)
    first, second = _batches(streamed, 1, False), _batches(streamed, 2, False)
    assert not torch.equal(first[0], second[0])  # a new shuffle (and binarization) per epoch
    assert torch.equal(resident.train_head(5, seed=3), streamed.train_head(5, seed=3))


def test_streaming_image_files_with_worker_processes(tmp_path):
    """Two DataLoader workers reading PNGs give the resident path's batches."""
    write_pngs(tmp_path / "d" / "a", random_images(9, (3, 6, 4), 1))
    write_pngs(tmp_path / "d" / "b", random_images(8, (3, 6, 4), 2))
    resident, streamed = _both(str(tmp_path / "d"), "dynamic", workers=2)
    for x, y in zip(_batches(resident, 1, True), _batches(streamed, 1, True), strict=True):
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])


def test_streamed_training_gives_the_same_weights(npy):
    """Two epochs of fit from the same initialization: equal metrics and equal parameters."""
    config = TrainConfig(hidden=(16,), latent_dim=3, pixels="dynamic", conditional=True)
    results = []
    for data in _both(npy, "dynamic"):
        set_seed(0)
        model, guide = build_model_and_guide(config, data.num_pixels, data.num_classes, data.shape)
        history = fit(model, guide, data, "elbo", epochs=2, batch_size=8, seed=0, progress=False)
        results.append((history, {**model.state_dict(), **guide.state_dict()}))
    (h1, w1), (h2, w2) = results
    for r1, r2 in zip(h1, h2, strict=True):
        assert {k: v for k, v in r1.items() if k != "seconds"} == {
            k: v for k, v in r2.items() if k != "seconds"
        }
    assert w1.keys() == w2.keys()
    for name in w1:
        assert torch.equal(w1[name], w2[name]), name


def test_streaming_is_chosen_when_the_data_would_not_fit(npy, monkeypatch):
    monkeypatch.setattr(images_module, "free_memory", lambda device: 1000)  # bytes; 4440 needed
    assert isinstance(load_data(npy, "grey", test_fraction=0.2), StreamedImageData)
    monkeypatch.setattr(images_module, "free_memory", lambda device: 10**9)
    assert isinstance(load_data(npy, "grey", test_fraction=0.2), ImageData)
    monkeypatch.setattr(images_module, "free_memory", lambda device: None)  # unknown: resident
    assert isinstance(load_data(npy, "grey", test_fraction=0.2), ImageData)


def test_a_bad_image_met_while_streaming_is_one_line(tmp_path):
    """The image is decoded in a worker process mid-epoch; the error comes back as one line
    naming the file, not as a worker's traceback."""
    write_pngs(tmp_path / "d" / "train" / "a", random_images(6, (1, 8, 8), 0))
    write_pngs(tmp_path / "d" / "test" / "a", random_images(2, (1, 8, 8), 1))
    bad = tmp_path / "d" / "train" / "a" / "004.png"
    bad.write_bytes(bad.read_bytes()[:50])
    data = load_data(str(tmp_path / "d"), "grey", stream=True, workers=2)
    with pytest.raises(PyroVAEError) as e:
        list(data.train_batches(seed=0, epoch=1, batch_size=4))
    assert "\n" not in str(e.value) and str(e.value).startswith(f"cannot read image {bad}")
