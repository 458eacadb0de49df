"""``--tensorboard``: a run's per-epoch figures as TensorBoard events in ``RUN_DIR/tensorboard/``.

Scalars (step = epoch): every number of the epoch's ``metrics.jsonl`` record, under the tags of
:data:`TAGS`; images: reconstructions of the first test images and decoded prior samples, drawn
under a fixed seed (the same z every epoch, and training's random stream untouched). The events
are a view: ``metrics.jsonl`` stays the record of a run.

Each epoch is written and flushed to disk before its checkpoint, in the training thread
(:class:`~pyrovae.runs.events.EventFile`): a full disk stops the run with one line naming the
event file, which keeps its whole epochs (a file with none is removed). A resumed run opens its
file with ``purge_step`` = the checkpoint's epoch + 1, so TensorBoard drops whatever a killed
process wrote after its last checkpoint and shows the resumed epochs in their place.

Only one process writes: :func:`is_main_process` (rank 0 under ``torch.distributed``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pyrovae import plots
from pyrovae.core.errors import PyroVAEError
from pyrovae.core.labels import labels_for
from pyrovae.core.runtime import seeded
from pyrovae.data.images import ImageData
from pyrovae.plots.common import decode, evaluating
from pyrovae.plots.grids import as_square, tile_images
from pyrovae.runs.config import TrainConfig
from pyrovae.runs.events import EventFile
from pyrovae.runs.figures import FIGURE_SEED

TENSORBOARD = "tensorboard"  # the events' folder in a run folder
TAGS = {  # metrics.jsonl key ↦ TensorBoard tag; other numbers go under "metrics/<key>"
    "train_elbo": "bound/train",
    "test_elbo": "bound/test_elbo",
    "test_recon": "test/recon",
    "test_kl": "test/kl",
    "beta": "schedule/beta",
    "lr": "schedule/lr",
    "seconds": "time/seconds_per_epoch",
}
IMAGES = 8  # test images reconstructed, and prior samples per row (two rows)


def is_main_process() -> bool:
    """False in a ``torch.distributed`` process of rank ≠ 0: one process logs for all."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def require_tensorboard() -> None:
    """A one-line error, before anything is written, when TensorBoard is not installed."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        raise PyroVAEError(
            "--tensorboard needs the tensorboard package: pip install 'pyrovae[tensorboard]'"
        ) from None


class TensorBoardLog:
    """The events of one run, from ``start_epoch`` on (see the module's doc)."""

    def __init__(
        self,
        path: Path,
        config: TrainConfig,
        model,
        guide,
        data: ImageData,
        start_epoch: int,
    ) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import summary

        self.summary = summary
        self.model, self.guide = model, guide
        n = min(IMAGES, data.test_x.shape[0])
        self.x = data.test_x[:n]
        self.y = labels_for(model, data.test_y[:n])
        self.events = EventFile(path / TENSORBOARD, purge_step=start_epoch + 1)
        if start_epoch == 0:
            text = json.dumps(config.to_dict(), indent=2)
            self.events.add(summary.text("config", f"```\n{text}\n```"), 0)

    def record(self, record: dict[str, Any]) -> None:
        """The scalars of one epoch's metrics record and its image grids, flushed."""
        epoch, summary = record["epoch"], self.summary
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.events.add(summary.scalar(TAGS.get(key, f"metrics/{key}"), value), epoch)
        for tag, images in self._images().items():
            self.events.add(summary.image(tag, images, dataformats="HW"), epoch)
        self.events.flush()

    def _images(self) -> dict[str, torch.Tensor]:
        """(H, W) montages in [0, 1]: originals above reconstructions, and 2 rows of samples;
        for structured output prediction, the inputs' completions above the truth."""
        model, num = self.model, 2 * IMAGES
        if getattr(getattr(model, "condition", None), "predicted", None) is not None:
            with seeded(FIGURE_SEED), evaluating(model):
                completed = model.complete(self.x, 1)[0]  # (n, D)
            pairs = torch.cat([as_square(completed), as_square(self.x)])
            montage = tile_images(pairs, self.x.shape[0])
            return {"images/completions": montage.float().clamp(0, 1).cpu()}
        y = None
        if model.num_classes:
            y = torch.arange(num, device=self.x.device) % model.num_classes
        with seeded(FIGURE_SEED):
            codes = plots.latent_codes(self.guide, self.x, self.y)  # (n, d)
            recon = decode(model, codes, self.y)  # (n, D)
            with evaluating(model):
                samples = model.generate(num, y)  # (num, D)
        pairs = torch.cat([as_square(self.x), as_square(recon)])  # (2n, s, s)
        grids = {
            "images/reconstructions": tile_images(pairs, self.x.shape[0]),
            "images/prior_samples": tile_images(as_square(samples), IMAGES),
        }
        # a Gaussian's mean may leave [0, 1]; TensorBoard shows floats in [0, 1]
        return {tag: g.float().clamp(0, 1).cpu() for tag, g in grids.items()}

    def close(self) -> None:
        self.events.close()


def open_log(
    path: Path, config: TrainConfig, model, guide, data: ImageData, start_epoch: int
) -> TensorBoardLog | None:
    """A :class:`TensorBoardLog` in the main process, None in the others."""
    if not is_main_process():
        return None
    return TensorBoardLog(path, config, model, guide, data, start_epoch)
