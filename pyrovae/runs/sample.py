"""``sample`` a run: images from its prior, as a PNG grid."""

from __future__ import annotations

from pathlib import Path

import torch

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.files import check_writable
from pyrovae.core.memory import available_bytes, format_bytes
from pyrovae.core.ranges import SEED, SIZE
from pyrovae.core.runtime import resolve_device, seeded
from pyrovae.plots.common import save_figure
from pyrovae.plots.grids import as_images, image_grid
from pyrovae.runs.checkpoint import load_checkpoint
from pyrovae.runs.folder import read_config, read_run_meta
from pyrovae.runs.load import restore, writing_into

# Bytes per drawn image besides its pixels: the montage tile and the PNG's RGBA raster (a 40 px
# tile at the grid's 80 dpi), with matplotlib's working copies.
BYTES_PER_TILE = 3 * 4 * 40 * 40


def _check_memory(num: int, num_pixels: int, config, device) -> None:
    per_image = 4 * (2 * num_pixels + sum(config.hidden) + config.latent_dim) + BYTES_PER_TILE
    need, free = num * per_image, available_bytes(device)
    if free is not None and need > free:
        raise PyroVAEError(
            f"--num {num} images need about {format_bytes(need)} to draw, more than the "
            f"{format_bytes(free)} free; ask for fewer"
        )


def sample_run(
    run_dir: str | Path,
    num: int = 64,
    label: int | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    device: str | None = None,
    force: bool = False,
) -> Path:
    """Draw ``num`` images E[x|z], z ~ p(z) (for ``label`` with a conditional VAE) and save them
    as a PNG grid (default: ``samples.png`` or ``samples-label-<y>.png`` in the run folder).
    An M2 run (``--semi-supervised``) without ``label`` draws ``num`` rows, one style z ~ p(z)
    each, and one column per class y: E[x|z, y].
    An existing file is replaced only with ``force``."""
    path = Path(run_dir)
    config = read_config(path)
    SIZE.check("--num", num)
    SEED.check("--seed", seed)
    meta = read_run_meta(path)
    num_classes = int(meta.get("num_classes", 0))
    if config.condition_on is not None:
        raise PyroVAEError(
            f"{path} completes images from their observed pixels (--condition-on); it does not "
            "generate whole ones: see figures/completions.png (pyrovae plot RUN redraws it)"
        )
    if label is not None and not (config.conditional or config.semi_supervised):
        raise PyroVAEError(f"{path} is not a conditional VAE; drop --label or train --conditional")
    if label is not None and not 0 <= label < num_classes:
        raise PyroVAEError(f"--label must be between 0 and {num_classes - 1}, got {label}")
    if label is None and config.conditional:
        raise PyroVAEError("a conditional VAE generates a chosen class: pass --label Y")
    name = "samples.png" if label is None else f"samples-label-{label}.png"
    target = Path(out) if out is not None else path / name
    if target.is_dir():
        raise PyroVAEError(f"--out {target} is a folder; give the PNG file's name")
    if target.exists() and not force:
        raise PyroVAEError(f"{target} exists; pass --force to replace it, or another --out")
    check_writable(target.parent)
    dev = resolve_device(device or config.device)
    _check_memory(num, int(meta["num_pixels"]), config, dev)
    shape = meta.get("data", {}).get("shape")  # runs from before shapes were recorded: square
    with writing_into(path, target):
        state = load_checkpoint(path, dev)
        model, _ = restore(config, state, int(meta["num_pixels"]), num_classes, dev, shape)
        y = None if label is None else torch.full((num,), label, dtype=torch.long, device=dev)
        if config.semi_supervised and label is None:  # M2: a column per class, a style per row
            with seeded(seed):
                images = model.class_grid(num)  # (num · C, D)
            columns = [str(c) for c in range(num_classes)]
            grid = image_grid(
                as_images(images, model.image_shape).cpu(), num_classes, col_labels=columns
            )
        else:
            with seeded(seed):
                images = model.generate(num, y)  # (num, D)
            grid = image_grid(as_images(images, model.image_shape).cpu())
        save_figure(grid, target)
    return target
