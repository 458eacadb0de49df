"""The semi-supervised objective J^α of M2 (Kingma et al. 2014) as an estimator with Pyro's ELBO
contract, and the test accuracy of its classifier q_φ(y|x).

Labelled: L(x, y) = −E_{q(z|x,y)}[log p(x|y,z) + log p(y) + log p(z) − log q(z|x,y)].
Unlabelled: U(x) = Σ_y q(y|x) L(x, y) − H(q(y|x)), y summed out exactly by enumeration.
Objective (minimized): J^α = Σ_unlabelled U + Σ_labelled L + α·E_labelled[−log q(y|x)].
"""

from __future__ import annotations

import warnings

import torch
from pyro.infer import ELBO, TraceEnum_ELBO

from pyrovae.core.errors import PyroVAEError

PAPER_ALPHA_FACTOR = 0.1  # Kingma et al. 2014: α = 0.1·N (their code, nips14-ssl, does the same)


def paper_alpha(num_train: int) -> float:
    """α = 0.1·N, N the training images (labelled and unlabelled): the authors' code weights
    the labelled −log q(y|x) by 0.1·N/N_l per image."""
    return PAPER_ALPHA_FACTOR * num_train


class SemiSupervisedELBO(ELBO):
    """J^α with ``TraceEnum_ELBO`` for both L and U (max_plate_nesting 1: y enumerated in dim −2).

    The arguments say which part a call estimates:

    - ``(x,)``: Σ_B U(x) (images without labels);
    - ``(x, y)``: Σ_B [L(x, y) + (α / N_l)(−log q(y|x))] (labelled images);
    - ``(x_u, x_l, y_l)``: one training step, Σ_{B_u} U + w Σ_{B_l} [L + (α / N_l)(−log q(y|x))]
      with w = (N_l / N_u)(b_u / b_l), so that over an epoch (N_u / b_u steps) the step losses sum
      to an unbiased estimate of J^α on the whole training set (N_u unlabelled, N_l labelled).

    ``fit`` divides the epoch's sum by the images it visits (N_u), so its ``train_elbo`` is
    −J^α / N_u: mostly −U per unlabelled image, plus the labelled terms spread over them.
    """

    # TraceEnum_ELBO reads values to select entries (a data-dependent .item()): no recorded
    # graph can hold its step, so the compiled path runs it eagerly, saying so once
    compilable = False

    def __init__(
        self,
        alpha: float,
        num_labelled: int,
        num_unlabelled: int,
        num_particles: int = 1,
        **kwargs,
    ) -> None:
        super().__init__(num_particles=num_particles, max_plate_nesting=1)
        if num_labelled < 1 or num_unlabelled < 1:
            raise PyroVAEError("the semi-supervised objective needs labelled and unlabelled images")
        if not alpha >= 0:
            raise PyroVAEError(f"--alpha must be a number ≥ 0, got {alpha}")
        self.alpha = float(alpha)
        self.num_labelled = num_labelled
        self.num_unlabelled = num_unlabelled
        self.enum = TraceEnum_ELBO(
            num_particles=num_particles,
            vectorize_particles=num_particles > 1,
            max_plate_nesting=1,
        )

    @property
    def alpha_per_label(self) -> float:
        """α / N_l: the weight of one labelled image's −log q(y|x)."""
        return self.alpha / self.num_labelled

    def _bound(self, model, guide, x: torch.Tensor, *y: torch.Tensor) -> torch.Tensor:
        """TraceEnum_ELBO's loss; a plain value under ``torch.no_grad()`` (its differentiable
        loss refuses a value without gradients)."""
        if torch.is_grad_enabled():
            return self.enum.differentiable_loss(model, guide, x, *y)
        return x.new_tensor(self.enum.loss(model, guide, x, *y))

    def unlabelled_loss(self, model, guide, x: torch.Tensor) -> torch.Tensor:
        """Σ_B U(x), y enumerated."""
        return self._bound(model, guide, x)

    def labelled_loss(self, model, guide, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Σ_B [L(x, y) + (α / N_l)(−log q(y|x))]."""
        classification = -guide.classify(x).log_prob(y).sum()
        with warnings.catch_warnings():  # nothing to enumerate when y is observed: expected
            warnings.filterwarnings("ignore", "TraceEnum_ELBO found no sample sites")
            bound = self._bound(model, guide, x, y)
        return bound + (self.alpha_per_label * classification)

    def differentiable_loss(self, model, guide, *args: torch.Tensor) -> torch.Tensor:
        if len(args) == 1:
            return self.unlabelled_loss(model, guide, args[0])
        if len(args) == 2:
            return self.labelled_loss(model, guide, *args)
        x_u, x_l, y_l = args
        weight = (self.num_labelled * x_u.shape[0]) / (self.num_unlabelled * x_l.shape[0])
        return self.unlabelled_loss(model, guide, x_u) + weight * self.labelled_loss(
            model, guide, x_l, y_l
        )

    def _get_trace(self, model, guide, args, kwargs):
        return self.enum._get_trace(model, guide, args, kwargs)

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args).item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args)
        loss.backward()
        return loss.item()


@torch.no_grad()
def classification_accuracy(
    guide, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000
) -> float:
    """The share of images whose most probable class under q_φ(y|x) is their label."""
    was_training = guide.training
    guide.eval()
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        logits = guide.classify(x[start : start + batch_size]).logits
        correct += int((logits.argmax(-1) == y[start : start + batch_size]).sum())
    guide.train(was_training)
    return correct / x.shape[0]
