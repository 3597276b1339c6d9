"""DALS (Deep Active Latent Surfaces; Jensen et al., 2022): a decoder that deforms a template sphere.

The decoder ``D_Theta(z, x)`` is an MLP on the concatenation ``[x, z]`` of a template vertex
``x`` (3D, on the unit sphere) and a latent code ``z`` (``latent_dim``), with hidden layers
``hidden`` (724, 724, 362), a layer norm before every ReLU and **no** output activation: the
predicted offset may point anywhere. The surface is ``y = x + D_Theta(z, x)`` over the template's
vertices, with the template's faces.

Shapes live in a *normalised frame*: each training shape is centred on the centroid of its
surface and scaled by its largest distance from there, so it lies inside the unit sphere
(:class:`ShapeNormalisation` keeps centre and scale to map back to LPS mm). The template can
be any icosphere level (training uses level 3, fitting level 4) because training draws random
template rotations, so the decoder learns a field over the sphere rather than per-vertex values.

This module holds the config, the ``nn.Module`` and the frame maps; nothing about files, CLI or
fitting (see :mod:`imagetomesh.fitting`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

#: Mirror in LPS along the L (x) axis: a right kidney becomes a left one.
MIRROR_L = np.diag([-1.0, 1.0, 1.0])


@dataclass
class DALSConfig:
    """Architecture of :class:`DALSDecoder` and its templates.

    Attributes:
        latent_dim: size ``d`` of a latent code.
        hidden: widths of the hidden layers (each followed by LayerNorm and ReLU).
        train_template_level: icosphere level of the training template (3: 642 vertices).
        fit_template_level: icosphere level used when fitting (4: 2562 vertices).
    """

    latent_dim: int = 128
    hidden: tuple[int, ...] = (724, 724, 362)
    train_template_level: int = 3
    fit_template_level: int = 4

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        if int(self.latent_dim) < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must be a non-empty list of positive widths, got {self.hidden}")
        for name in ("train_template_level", "fit_template_level"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


class DALSDecoder(nn.Module):
    """``y = x + MLP([x, z])``.

    The first layer is one ``Linear(3 + d, hidden[0])`` (its weight's first 3 columns act on
    ``x``, the rest on ``z``); it is evaluated as ``W_x x + W_z z + b`` so that a latent shared
    by many vertices (shape ``(..., 1, d)``) is multiplied once and broadcast.
    """

    def __init__(self, config: DALSConfig | None = None) -> None:
        super().__init__()
        self.config = config or DALSConfig()
        widths = (3 + self.config.latent_dim,) + self.config.hidden
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.norms = nn.ModuleList(nn.LayerNorm(w) for w in self.config.hidden)
        self.out = nn.Linear(self.config.hidden[-1], 3)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def offsets(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Offsets ``D_Theta(z, x)``.

        Args:
            x: ``(..., V, 3)`` template vertices.
            z: ``(..., V, d)`` per-vertex latents or ``(..., 1, d)`` / ``(d,)`` shared ones
                (broadcast against ``x``).

        Returns:
            ``(..., V, 3)`` offsets, no activation.
        """
        if x.shape[-1] != 3:
            raise ValueError(f"template vertices must have shape (..., V, 3), got {tuple(x.shape)}")
        if z.shape[-1] != self.latent_dim:
            raise ValueError(f"latents must have {self.latent_dim} features, got shape {tuple(z.shape)}")
        first = self.linears[0]
        w_x, w_z = first.weight[:, :3], first.weight[:, 3:]
        h = torch.matmul(x, w_x.t()) + (torch.matmul(z, w_z.t()) + first.bias)
        h = torch.relu(self.norms[0](h))
        for linear, norm in zip(self.linears[1:], self.norms[1:]):
            h = torch.relu(norm(linear(h)))
        return self.out(h)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Deformed vertices ``x + D_Theta(z, x)``, shape of ``x`` (see :meth:`offsets`)."""
        return x + self.offsets(x, z)


@dataclass(frozen=True)
class ShapeNormalisation:
    """The similarity map between LPS mm and a shape's normalised frame.

    ``normalised = (lps - centre) / scale`` and ``lps = centre + scale * normalised``.
    """

    centre: np.ndarray
    scale: float

    def __post_init__(self) -> None:
        centre = np.asarray(self.centre, dtype=np.float64).reshape(3)
        scale = float(self.scale)
        if not np.all(np.isfinite(centre)) or not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"normalisation needs a finite centre and a positive scale, got {centre}, {scale}")
        object.__setattr__(self, "centre", centre)
        object.__setattr__(self, "scale", scale)

    @classmethod
    def of_points(cls, points: np.ndarray, radius_percentile: float = 100.0) -> ShapeNormalisation:
        """Centre = mean of ``points`` (surface samples), scale = their largest distance from it
        (or the given percentile of the distances)."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        centre = points.mean(0)
        radius = np.linalg.norm(points - centre, axis=1)
        scale = float(np.percentile(radius, radius_percentile)) if radius_percentile < 100 else float(radius.max())
        return cls(centre, scale)

    def to_normalised(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, dtype=np.float64) - self.centre) / self.scale

    def to_lps(self, points: np.ndarray) -> np.ndarray:
        return self.centre + self.scale * np.asarray(points, dtype=np.float64)

    @property
    def normalised_to_lps(self) -> np.ndarray:
        """``(4, 4)`` affine from the normalised frame to LPS mm."""
        affine = np.eye(4)
        affine[:3, :3] *= self.scale
        affine[:3, 3] = self.centre
        return affine

    def to_dict(self) -> dict:
        return {"centre": self.centre.tolist(), "scale": self.scale}

    @classmethod
    def from_dict(cls, d: dict) -> ShapeNormalisation:
        return cls(np.asarray(d["centre"], dtype=np.float64), float(d["scale"]))


#: What the card's ``normalisation`` entry says about the frame (for people reading it).
NORMALISATION_DOC = {
    "mode": "per-shape",
    "centre": "mean of area-uniform samples of the shape's surface (LPS mm)",
    "scale": "largest distance of those samples from the centre (mm); shapes lie inside the unit sphere",
    "mirror": "right-side shapes of paired organs are mirrored along L (x -> -x) before training",
}
