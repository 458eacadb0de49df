"""Networks shared by encoders and decoders: an MLP and a small conv net for images (C, H, W).

Every network has the constructor ``(in_dim, hidden, out_dim, activation, *, image_shape)`` and
maps (..., in_dim) to (..., out_dim); leading dims (particles, batch) pass through. The MLP reads
flattened images and ignores ``image_shape``; the conv net is built for it. ``NETS`` pairs each
kind's encoder and decoder class.
"""

from typing import NamedTuple

from torch import nn

from pyrovae.nets.conv import ConvDecoder, ConvEncoder
from pyrovae.nets.dense import ACTIVATIONS, MLP, mlp


class NetKind(NamedTuple):
    """An encoder class and the decoder class that mirrors it (a pair: ``enc, dec = kind``)."""

    encoder: type[nn.Module]
    decoder: type[nn.Module]

    @property
    def description(self) -> str:
        """The encoder's one-line ``description``: the decoder mirrors it."""
        return self.encoder.description


NETS: dict[str, NetKind] = {
    "mlp": NetKind(MLP, MLP),
    "conv": NetKind(ConvEncoder, ConvDecoder),
}
"""Network kinds: name ↦ (encoder class, decoder class)."""

__all__ = ["ACTIVATIONS", "NETS", "NetKind", "MLP", "ConvDecoder", "ConvEncoder", "mlp"]
