"""What training prints after an epoch, each figure under the name of what it is: the IWAE
objectives train the bound L_K, not the ELBO; with β = 0 (the autoencoder) training fits the
reconstruction term alone, and a point-mass guide's "ELBO" bounds nothing."""

from __future__ import annotations

from typing import Any

from pyro.infer import ELBO

from pyrovae.inference.evaluate import predicted_pixels


def bound_name(estimator: ELBO) -> str:
    """``bound L_K`` for the importance-weighted estimators (class attribute
    ``importance_weighted``; K their particles), an estimator's own ``objective`` where it
    trains another one (a relaxed code's), else ``ELBO``."""
    if getattr(estimator, "importance_weighted", False):
        return f"bound L_{estimator.num_particles}"
    return getattr(estimator, "objective", "ELBO")


def reconstruction_only(beta: float, kl_warmup: int = 0) -> bool:
    """Whether training fits E_q log p(x|z) alone (β = 0 throughout, as ``--autoencoder``)."""
    return beta == 0 and kl_warmup == 0


def train_name(estimator: ELBO, beta: float, kl_warmup: int = 0) -> str:
    """The name of ``train_elbo``: the estimator's bound, ``β-…`` when β weights its KL."""
    if reconstruction_only(beta, kl_warmup):
        return "recon"
    name = bound_name(estimator)
    return name if beta == 1 and kl_warmup == 0 else f"β-weighted {name}"


def test_figure(beta: float, kl_warmup: int = 0) -> tuple[str, str]:
    """(name, metrics key) of the test figure worth printing: the reconstruction term when
    training fits only that, else the ELBO."""
    if reconstruction_only(beta, kl_warmup):
        return "recon", "test_recon"
    return "ELBO", "test_elbo"


def bits_dims(model, data) -> int | None:
    """D of the test ELBO in bits per dimension, where the field reports that unit: images of
    many levels (8-bit pixels, whose discretized likelihood is a probability), D the values the
    likelihood covers (:func:`~pyrovae.inference.evaluate.predicted_pixels`, as ``evaluate``);
    None for binary pixels (nats, by convention) and grey levels (a density: no code length)."""
    return predicted_pixels(model, data.num_pixels) if data.mode.levels is not None else None


def test_bits(record: dict[str, Any], key: str) -> float | None:
    """The test figure ``key`` in bits per dimension: the record's ``test_elbo_bpd`` (8-bit
    data) when ``key`` is the test ELBO, else None."""
    return record.get("test_elbo_bpd") if key == "test_elbo" else None


def epoch_line(
    record: dict[str, Any], epochs: int, estimator: ELBO, beta: float, kl_warmup: int = 0
) -> str:
    """e.g. ``epoch 3/10: train bound L_5 -236.49, test ELBO -238.86 nats (3.8 s)``, with
    ``, 4.1234 bits/dim`` after ``nats`` for 8-bit data."""
    name, key = test_figure(beta, kl_warmup)
    bits = test_bits(record, key)
    accuracy = record.get("test_accuracy")  # a model with a classifier q(y|x): M2
    shown = "" if bits is None else f", {bits:.4f} bits/dim"
    shown += "" if accuracy is None else f", test accuracy {100 * accuracy:.2f}%"
    return (
        f"epoch {record['epoch']}/{epochs}: train {train_name(estimator, beta, kl_warmup)} "
        f"{record['train_elbo']:.2f}, test {name} {record[key]:.2f} nats{shown} "
        f"({record['seconds']:.1f} s)"
    )


def bar_text(objective: str, total: float, seen: int) -> str:
    """The bar's figure after a step: the epoch's running mean −total/seen per datapoint, from
    the losses the steps already returned as floats (drawing it costs no device sync)."""
    return f"{objective} {-total / seen:.2f}"
