"""Faults in the data a run reads: images whose PIL mode PIL's own conversion gets wrong (16-bit
grey clipped to white, colour palettes turned grey), a dangling link among the images, a damaged
or truncated unpacked cache, big-endian ``.npy`` files, sparse tensors, files that only bear a
format's name, and images too large to decode. Each is read exactly, rebuilt, or refused in one
line naming the file, never trained on silently.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_images, write_dataset, write_pngs
from PIL import Image
from test_faults import _args

import pyrovae.core.files
import pyrovae.data.image_files
from pyrovae.cli import main
from pyrovae.core.errors import PyroVAEError
from pyrovae.data import load_data
from pyrovae.data.image_files import MAX_PIXELS, MODES, exact_pixels
from pyrovae.data.staged import STAMP_SUFFIX

PIL_LIMIT = Image.MAX_IMAGE_PIXELS


def _one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI; it must fail with exit status 2 and one line on stderr, which is returned."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("pyrovae: error: "), err
    return err


def _train_argv(dataset: Path | str, run: Path, *extra: str) -> list[str]:
    """A tiny grey-pixel run on ``dataset`` (its own test split), one epoch."""
    return [
        "train",
        *["--dataset", str(dataset), "--pixels", "grey", "--likelihood", "gaussian"],
        *["--hidden", "8", "--latent-dim", "2", "--batch-size", "2", "--epochs", "1"],
        *["--device", "cpu", "--run-dir", str(run), "--no-progress", "--no-figures", *extra],
    ]


# ---------------------------------------------------------------- every PIL mode, exactly


def _split_folder(root: Path, image: Image.Image, name: str = "x.png") -> Path:
    """``image`` saved as the one training and the one test image of ``root``."""
    for split in ("train", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
        image.save(root / split / name)
    return root


def _intensities(values: np.ndarray, white: int) -> torch.Tensor:
    """Expected intensities (C, H, W) of stored values with ``white`` the largest."""
    return torch.from_numpy(values.astype(np.float32)) / white


def test_a_16_bit_png_is_scaled_by_its_bit_depth_not_clipped_to_white(tmp_path):
    """The issue's case: random 16-bit grey (mean ≈ 0.5) came back with a mean of 0.9988 and
    99.8 % of its pixels at 1.0; each value v must be v / 65535."""
    values = np.random.default_rng(0).integers(0, 2**16, size=(16, 16), dtype=np.uint16)
    root = _split_folder(tmp_path / "d", Image.fromarray(values))
    assert Image.open(root / "train" / "x.png").mode == "I;16"
    data = load_data(str(root), "grey")
    expected = _intensities(values, 2**16 - 1).flatten()
    assert torch.equal(data.train_x[0], expected) and torch.equal(data.test_x[0], expected)
    assert (data.train_x == 1).float().mean() == float((values == 2**16 - 1).mean())


def _palette_image(indices: np.ndarray, palette: np.ndarray) -> Image.Image:
    image = Image.fromarray(indices.astype(np.uint8), "P")
    image.putpalette(palette.astype(np.uint8).flatten().tolist())
    return image


RNG = np.random.default_rng(1)
GREY = RNG.integers(0, 256, size=(6, 5), dtype=np.uint8)
RGB = RNG.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
ALPHA = RNG.integers(0, 256, size=(6, 5), dtype=np.uint8)
INDICES = RNG.integers(0, 4, size=(6, 5))
COLOURS = np.array([[0, 0, 0], [255, 0, 0], [9, 200, 30], [40, 40, 40]])
GREYS = np.array([[0, 0, 0], [90, 90, 90], [170, 170, 170], [255, 255, 255]])


def _transparent(image: Image.Image) -> Image.Image:
    image.info["transparency"] = 1
    return image


# case: (the image as saved in a PNG, the mode PIL opens it in, its exact values (C, H, W)
# as intensities)
MODE_CASES = {
    "1": (Image.fromarray(GREY > 127), "1", _intensities((GREY > 127)[None] * 255, 255)),
    "L": (Image.fromarray(GREY), "L", _intensities(GREY[None], 255)),
    "LA (alpha dropped)": (
        Image.fromarray(np.dstack([GREY, ALPHA]), "LA"),
        "LA",
        _intensities(GREY[None], 255),
    ),
    "P of greys": (
        _palette_image(INDICES, GREYS),
        "P",
        _intensities(GREYS[INDICES][..., 0][None], 255),
    ),
    "P in colour": (
        _palette_image(INDICES, COLOURS),
        "P",
        _intensities(COLOURS[INDICES].transpose(2, 0, 1), 255),
    ),
    "P in colour with a transparent entry": (
        _transparent(_palette_image(INDICES, COLOURS)),
        "P",
        _intensities(COLOURS[INDICES].transpose(2, 0, 1), 255),
    ),
    "RGB": (Image.fromarray(RGB), "RGB", _intensities(RGB.transpose(2, 0, 1), 255)),
    "RGBA (alpha dropped)": (
        Image.fromarray(np.dstack([RGB, ALPHA])),
        "RGBA",
        _intensities(RGB.transpose(2, 0, 1), 255),
    ),
    "I;16": (
        Image.fromarray(GREY.astype(np.uint16) * 257 + 3),
        "I;16",
        _intensities((GREY.astype(np.uint16) * 257 + 3)[None], 2**16 - 1),
    ),
}


@pytest.mark.parametrize("case", list(MODE_CASES))
def test_each_pil_mode_in_a_png_is_read_as_its_exact_values(tmp_path, case):
    """Grey stays one channel and colour three (a palette by the colours it uses), at the
    image's own bit depth: PIL's conversion turned colour palettes grey and clipped 16 bits."""
    image, mode, expected = MODE_CASES[case]
    root = _split_folder(tmp_path / "d", image)
    assert Image.open(root / "test" / "x.png").mode == mode
    data = load_data(str(root), "grey")
    assert data.shape == tuple(expected.shape)
    assert torch.equal(data.test_x[0].reshape(expected.shape), expected)


@pytest.mark.parametrize("mode", [m for m in Image.MODES if m not in MODES])
def test_every_other_pil_mode_is_refused_naming_the_image(mode):
    """CMYK, LAB, HSV, YCbCr, 32-bit integers and floats, premultiplied alpha: no exact grey or
    RGB values, so no conversion is guessed (PIL would convert each)."""
    with pytest.raises(PyroVAEError, match=f"cannot read image here.png: PIL mode {mode} has no"):
        exact_pixels(Image.new(mode, (2, 2)), "here.png")


def test_a_cmyk_jpeg_is_refused_by_the_cli_in_one_line(tmp_path, capsys):
    root = _split_folder(tmp_path / "d", Image.new("CMYK", (8, 8), (10, 20, 30, 40)), "c.jpg")
    err = _one_line_error(capsys, _train_argv(root, tmp_path / "run"))
    assert f"cannot read image {root / 'train' / 'c.jpg'}: PIL mode CMYK" in err
    assert not (tmp_path / "run").exists()


def test_a_colour_image_among_grey_ones_is_refused_not_turned_grey(tmp_path):
    """The first image decides grey or colour; a later colour image would lose its colour, so
    it is named (--channels says what to do); a grey one among colour ones is repeated."""
    write_pngs(tmp_path / "d", random_images(2, (1, 5, 5), 0))
    Image.fromarray(RGB[:5, :5]).save(tmp_path / "d" / "002.png")
    with pytest.raises(PyroVAEError, match=r"002.png is in colour but the first image, .*000.png"):
        load_data(str(tmp_path / "d"), "grey", test_fraction=0.5)
    data = load_data(str(tmp_path / "d"), "grey", test_fraction=0.5, channels=3)
    assert data.shape == (3, 5, 5)


def test_a_16_bit_image_among_8_bit_ones_is_refused(tmp_path):
    write_pngs(tmp_path / "d", random_images(2, (1, 5, 5), 0))
    Image.fromarray(np.full((5, 5), 40000, np.uint16)).save(tmp_path / "d" / "002.png")
    with pytest.raises(PyroVAEError, match=r"002.png is a 16-bit image but the first image"):
        load_data(str(tmp_path / "d"), "grey", test_fraction=0.5)


def test_16_bit_images_in_8bit_pixel_mode_are_named_off_the_grid(tmp_path):
    Image.fromarray(np.full((4, 4), 1000, np.uint16)).save(tmp_path / "x.png")
    root = _split_folder(tmp_path / "d", Image.open(tmp_path / "x.png"))
    with pytest.raises(PyroVAEError, match=r"x.png: 16 values are not on the 8-bit grid k/255"):
        load_data(str(root), "8bit")


# ---------------------------------------------------------------- a dangling link


@pytest.mark.parametrize("layout", ["loose images", "a class folder"])
def test_a_dangling_symlink_among_the_images_is_one_line_naming_it(tmp_path, capsys, layout):
    folder = tmp_path / "d" / ("cats" if layout == "a class folder" else "")
    write_pngs(folder, random_images(3, (1, 4, 4), 0))
    (folder / "003.png").symlink_to(tmp_path / "gone.png")
    err = _one_line_error(
        capsys, _train_argv(tmp_path / "d", tmp_path / "run", "--test-fraction", "0.5")
    )
    assert f"{folder / '003.png'} is a link to {tmp_path / 'gone.png'}, which does not" in err


# ---------------------------------------------------------------- the unpacked cache


def _staged(name: str = "train-images-idx3-ubyte") -> Path:
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "pyrovae" / "staged"
    (path,) = cache.rglob(name)
    return path


def _flip_4_kb(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[1024 : 1024 + 4096] = bytes(b ^ 0xFF for b in data[1024 : 1024 + 4096])
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {"4 KB flipped": _flip_4_kb, "truncated": _truncate}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_unpacked_cache_is_rebuilt_from_its_source(idx_dir, damage):
    """The copy is checked against the stamp written when it was unpacked (the source's size
    and mtime, the copy's SHA-256): a new run reads the source's data and records its hash."""
    first = load_data("mnist", "grey", data_dir=str(idx_dir), download=False)
    staged = _staged()
    stamp = json.loads(staged.with_name(staged.name + STAMP_SUFFIX).read_text())
    source = idx_dir / "train-images-idx3-ubyte.gz"
    assert stamp["size"] == source.stat().st_size
    DAMAGE[damage](staged)
    again = load_data("mnist", "grey", data_dir=str(idx_dir), download=False)
    assert again.origin.sha256 == first.origin.sha256
    assert torch.equal(again.train_x, first.train_x)
    assert staged.read_bytes() == gzip.decompress(source.read_bytes())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch run on gzipped IDX files (staged into a cache of its own)."""
    root = tmp_path_factory.mktemp("trained")
    write_dataset(root / "idx")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
        assert main(_args(root / "idx", root / "run", "--epochs", "1")) == 0
    return root / "run", root / "idx"


def _evaluate(run: Path, idx: Path) -> list[str]:
    flags = ["--data-dir", str(idx), "--no-download", "--no-progress", "--num-samples", "0"]
    return ["evaluate", str(run), *flags]


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_evaluate_after_the_cache_was_damaged_reads_the_rebuilt_copy(trained, capsys, damage):
    """evaluate blamed the source folder ("not the data this run was trained on", "corrupt or
    unreadable files in <the source>") for the cache's damage; now the copy is rebuilt."""
    run, idx = trained
    assert main(_evaluate(run, idx)) == 0
    DAMAGE[damage](_staged())
    capsys.readouterr()
    assert main(_evaluate(run, idx)) == 0, capsys.readouterr().err


def test_a_damaged_cache_that_cannot_be_rebuilt_is_named_not_the_source(
    trained, capsys, monkeypatch
):
    """The copy is damaged and the cache's disk is full: the one line names the copy and the
    cache to delete, and says nothing against the source folder or the run's data."""
    run, idx = trained
    assert main(_evaluate(run, idx)) == 0
    staged = _staged()
    _flip_4_kb(staged)
    mkstemp = pyrovae.core.files.tempfile.mkstemp

    def cache_disk_full(*args, dir, **kwargs):
        if Path(dir).is_relative_to(staged.parents[3]):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(pyrovae.core.files.tempfile, "mkstemp", cache_disk_full)
    capsys.readouterr()
    err = _one_line_error(capsys, _evaluate(run, idx))
    source = idx / "train-images-idx3-ubyte.gz"
    assert f"{staged}, pyrovae's unpacked copy of {source}, is damaged" in err
    assert "the disk is full" in err and f"delete {staged.parents[2]}" in err
    assert "not the data this run" not in err and "corrupt or unreadable" not in err


# ---------------------------------------------------------------- array files


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">u2", ">i4"])
def test_a_big_endian_npy_is_read_in_native_byte_order(tmp_path, dtype):
    """The same values as the native file gives (integers in 0…255, floats in [0, 1])."""
    u8 = random_images(6, (1, 4, 5), 0)
    values = u8 / 255 if dtype.startswith(">f") else u8
    np.save(tmp_path / "big.npy", values.astype(dtype))
    np.save(tmp_path / "native.npy", values.astype(dtype.replace(">", "<")))
    big = load_data(str(tmp_path / "big.npy"), "grey", test_fraction=0.5)
    native = load_data(str(tmp_path / "native.npy"), "grey", test_fraction=0.5)
    assert torch.equal(big.train_x, native.train_x) and torch.equal(big.test_x, native.test_x)


def test_big_endian_labels_in_an_npz_are_read(tmp_path):
    labels = np.array([3, 0, 2, 1, 2, 0], dtype=">i8")
    np.savez(tmp_path / "big.npz", images=random_images(6, (1, 4, 4), 0), labels=labels)
    data = load_data(str(tmp_path / "big.npz"), "grey", test_fraction=0.5)
    assert sorted(data.train_y.tolist() + data.test_y.tolist()) == sorted(labels.tolist())


@pytest.mark.parametrize("what", ["images", "labels"])
def test_a_sparse_tensor_in_a_pt_file_is_one_line(tmp_path, capsys, recwarn, what):
    images, labels = torch.rand(6, 4, 4), torch.arange(6) % 2
    content = {"images": images, "labels": labels}
    content[what] = content[what].to_sparse()
    torch.save(content, tmp_path / "sparse.pt")
    err = _one_line_error(
        capsys, _train_argv(tmp_path / "sparse.pt", tmp_path / "run", "--test-fraction", "0.5")
    )
    assert f"{tmp_path / 'sparse.pt'} [{what}] is a sparse tensor (torch.sparse_coo)" in err
    assert not [w for w in recwarn if "sparse" in str(w.message)]  # no warning besides it


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_a_file_named_npy_that_is_not_one_is_named_without_numpys_pickle_hint(
    tmp_path, capsys, suffix
):
    path = tmp_path / f"images{suffix}"
    path.write_text("a CSV export, say: 0,0,1\n")
    err = _one_line_error(capsys, _train_argv(path, tmp_path / "run", "--test-fraction", "0.5"))
    assert f"{path} is not a {suffix} file: it does not start with b" in err
    assert "pickle" not in err


# ---------------------------------------------------------------- images too large


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` × ``height`` 8-bit grey pixels and holds almost none:
    its size is read from the header; decoding it would allocate width·height bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1))  # the first row only
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def test_an_image_beyond_the_pixel_limit_is_refused_before_decoding(tmp_path, capsys, recwarn):
    """The issue's 12 000 × 12 000 image (1.58 GB decoded, with only PIL's warning): one line
    naming it and the flag, and no PIL warning besides."""
    path = _png_header_only(tmp_path / "d" / "000.png", 12000, 12000)
    err = _one_line_error(
        capsys, _train_argv(tmp_path / "d", tmp_path / "run", "--test-fraction", "0.5")
    )
    assert f"{path} is 12000×12000 = 144000000 pixels, more than the limit of {MAX_PIXELS}" in err
    assert "--allow-large-images" in err
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    assert Image.MAX_IMAGE_PIXELS == PIL_LIMIT  # PIL's own check, lifted while we read, is back


def test_allow_large_images_decodes_them_and_the_run_records_it(tmp_path, capsys, monkeypatch):
    """With the limit lowered to 15 × 15 = 225 pixels, 16 × 16 images are beyond it (a real
    large image would take the test gigabytes): refused, then read with the flag, which the run
    records so that evaluate reads them too."""
    monkeypatch.setattr(pyrovae.data.image_files, "MAX_PIXELS", 15 * 15)
    write_pngs(tmp_path / "d", random_images(4, (1, 16, 16), 0))
    argv = _train_argv(tmp_path / "d", tmp_path / "run", "--test-fraction", "0.5")
    assert "000.png is 16×16 = 256 pixels, more than the limit of 225" in _one_line_error(
        capsys, argv
    )
    assert main([*argv, "--allow-large-images"]) == 0
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert recorded["allow_large_images"] is True
    assert main(["evaluate", str(tmp_path / "run"), "--no-progress", "--num-samples", "0"]) == 0
