"""Networks shared by encoders and decoders: an MLP and a small conv net for images (C, H, W).

Every network has the constructor ``(in_dim, hidden, out_dim, activation, *, image_shape)`` and
maps (..., in_dim) to (..., out_dim); leading dims (particles, batch) pass through. The MLP reads
flattened images and ignores ``image_shape``; the conv net is built for it. ``NETS`` pairs each
kind's encoder and decoder class.
"""

from torch import nn

from pyrovae.nets.conv import ConvDecoder, ConvEncoder
from pyrovae.nets.dense import ACTIVATIONS, MLP, mlp

NETS: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "mlp": (MLP, MLP),
    "conv": (ConvEncoder, ConvDecoder),
}
"""Network kinds: name ↦ (encoder class, decoder class)."""

__all__ = ["ACTIVATIONS", "NETS", "MLP", "ConvDecoder", "ConvEncoder", "mlp"]
