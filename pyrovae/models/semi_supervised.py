"""M2, the semi-supervised VAE of Kingma, Rezende, Mohamed & Welling (2014): the model
p(y) p(z) p_θ(x|y, z) and the guide q_φ(y|x) q_φ(z|x, y), with y observed when it is known."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.core.labels import with_label
from pyrovae.core.modules import LocalPyroModule
from pyrovae.guides.families import Family


class M2(LocalPyroModule):
    """p(y) p(z) p_θ(x|y, z): y ~ Categorical(1/C, …, 1/C) (site ``"y"``), z ~ ``prior()``
    (site ``"z"``), x ~ ``likelihood(decoder([z, onehot(y)]))`` (site ``"x"``), all in plate
    ``"data"``. ``y`` is observed when given; otherwise the guide supplies it (enumerated by
    ``TraceEnum_ELBO``: y (C, 1), z (C, B, d), the decoder's input (C, B, d + C)).

    ``num_classes`` is C; ``takes_labels`` is False: the ELBO of an image alone is M2's bound on
    log p(x), so evaluation and figures pass no labels unless they choose a class.
    """

    takes_labels = False

    def __init__(
        self,
        prior: nn.Module,
        decoder: nn.Module,
        likelihood: nn.Module,
        num_classes: int,
        image_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        self.prior = prior
        self.decoder = decoder
        self.likelihood = likelihood
        self.num_classes = num_classes
        self.image_shape = None if image_shape is None else tuple(image_shape)
        self.layers = nn.ModuleList()  # one stochastic layer, as figures expect of a VAE

    sites = ("z",)

    def label_prior(self, x: torch.Tensor) -> dist.Categorical:
        """p(y), uniform over the C classes (batch shape (), broadcast by the plate)."""
        return dist.Categorical(logits=x.new_zeros(self.num_classes))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", self.label_prior(x), obs=y)  # (B,), or (C, 1) enumerated
            z = pyro.sample("z", self.prior())  # (B, d), or (C, B, d)
            pyro.sample(
                "x", self.likelihood(self.decoder(with_label(z, y, self.num_classes))), obs=x
            )
        return z

    def mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E_θ[x|z, y] for codes z (…, d) and labels y (…,) (class 0 when None): (…, D)."""
        if y is None:
            y = torch.zeros(z.shape[:-1], dtype=torch.long, device=z.device)
        return self.likelihood(self.decoder(with_label(z, y, self.num_classes))).mean

    @torch.no_grad()
    def generate(self, num: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x|z, y] for z ~ p(z), shape (num, D); y (num,) or None for y ~ p(y)."""
        z = self.prior().sample((num,))  # (num, d)
        if y is None:
            y = torch.randint(self.num_classes, (num,), device=z.device)
        return self.mean(z, y)

    @torch.no_grad()
    def class_grid(self, rows: int) -> torch.Tensor:
        """E[x|z_r, y = c] for ``rows`` styles z_r ~ p(z), one per row, and every class c, one
        per column: (rows · C, D), row-major (image r·C + c has style r and class c)."""
        c = self.num_classes
        z = self.prior().sample((rows,))  # (rows, d)
        z = z.unsqueeze(1).expand(rows, c, z.shape[-1])  # (rows, C, d): a style per row
        y = torch.arange(c, device=z.device).expand(rows, c)  # (rows, C)
        return self.mean(z, y).reshape(rows * c, -1)


class M2Guide(LocalPyroModule):
    """q_φ(y|x) q_φ(z|x, y): q(y|x) = Categorical(softmax(classifier(x))) (site ``"y"``, only
    when y is not observed, marked for parallel enumeration), q(z|x, y) =
    ``family(encoder([x, onehot(y)]))`` (site ``"z"``), in plate ``"data"``.
    """

    def __init__(
        self, classifier: nn.Module, encoder: nn.Module, family: Family, num_classes: int
    ) -> None:
        super().__init__()
        self.classifier = classifier
        self.encoder = encoder
        self.family = family
        self.num_classes = num_classes
        self.layers = nn.ModuleList()

    sites = ("z",)

    @property
    def latent_dims(self) -> tuple[int, ...]:
        return (self.family.latent_dim,)

    def layer_parameters(self) -> dict[str, list[nn.Parameter]]:
        return {"z": list(self.parameters())}

    def classify(self, x: torch.Tensor) -> dist.Categorical:
        """q_φ(y|x), batch shape (B,)."""
        return dist.Categorical(logits=self.classifier(x))

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """q_φ(z|x, y), batch shape (B,) (or y's enumerated (C, B)); with y None, at the most
        probable class under q(y|x)."""
        if y is None:
            y = self.classify(x).probs.argmax(-1)
        return self.family(self.encoder(with_label(x, y, self.num_classes)))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        with pyro.plate("data", x.shape[0]):
            if y is None:  # an observed y is the model's site alone
                y = pyro.sample("y", self.classify(x), infer={"enumerate": "parallel"})
            return pyro.sample("z", self.posterior(x, y))  # (B, d), or (C, B, d)
