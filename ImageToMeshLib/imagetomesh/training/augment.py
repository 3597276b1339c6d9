"""Augmentation on the model grid: flips, small rotations and scalings, blur, intensity changes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from imagetomesh.nn.grid import isotropic_scale


@dataclass
class AugmentConfig:
    """Probabilities and ranges; angles in degrees, scale as a relative change."""

    flip: float = 0.5
    rotate_deg: float = 10.0
    scale: float = 0.1
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    noise: float = 0.05
    shift: float = 0.0  # translation, grid units (1 = half the grid extent) per axis
    #: several organs on a grid with a fixed direction: probability of mirroring a crop across the body's
    #: left-right axis, its left and right organs trading classes
    #: (:func:`~imagetomesh.training.data.mirrored_crop`); ``flip`` mirrors an axis and keeps the classes
    mirror: float = 0.0
    #: probability of blurring the image by a Gaussian whose standard deviation along each grid axis is drawn
    #: from ``[0, blur_sigma]`` grid voxels: the spread a scan finer or smoother than the grid brings (a 1 mm CT
    #: interpolated from a 3.9 mm one, read by the 4 mm grid: about 0.4 voxel in-plane)
    blur: float = 0.0
    blur_sigma: float = 0.75


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    cx, cy, cz = torch.cos(angles)
    sx, sy, sz = torch.sin(angles)
    rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def transformed(
    volume: torch.Tensor, linear: torch.Tensor, shift: torch.Tensor, mode: str, fill: float = 0.0
) -> torch.Tensor:
    """``volume (D, H, W)`` float resampled so that its output at grid point ``g`` shows it at ``linear @ g + shift``
    (grid coordinates; :func:`augment`'s transform), ``mode`` ``"bilinear"`` or ``"nearest"``, ``fill`` outside."""
    return sampled(volume, sampling_grid(linear, shift, volume.shape, volume.dtype), mode, fill)


def sampling_grid(linear: torch.Tensor, shift: torch.Tensor, shape, dtype=torch.float32) -> torch.Tensor:
    """The ``(1, D, H, W, 3)`` grid of :func:`transformed` for volumes of ``shape (D, H, W)``, for several of them."""
    theta = torch.cat([linear, shift[:, None]], dim=1)[None].to(dtype)
    return F.affine_grid(theta, [1, 1, *shape], align_corners=True)


def sampled(volume: torch.Tensor, grid: torch.Tensor, mode: str, fill: float = 0.0) -> torch.Tensor:
    """``volume (D, H, W)`` float read at a :func:`sampling_grid`, ``fill`` outside it."""
    return F.grid_sample((volume - fill)[None, None], grid.to(volume.dtype), mode=mode, align_corners=True)[0, 0] + fill


def blurred_image(image: torch.Tensor, sigmas) -> torch.Tensor:
    """``image (D, H, W)`` smoothed by a Gaussian of standard deviations ``sigmas`` (3 grid voxels; 0: none along
    that axis), edges extended (as :func:`~imagetomesh.preprocessing.resample_to_grid`'s antialiasing)."""
    array = ndimage.gaussian_filter(image.detach().cpu().numpy().astype(np.float32), sigmas, mode="nearest")
    return torch.as_tensor(array, dtype=image.dtype, device=image.device)


def augment(
    image: torch.Tensor,
    label: torch.Tensor,
    config: AugmentConfig,
    generator: torch.Generator,
    return_transform: bool = False,
):
    """Augment one case: ``image`` float ``(D, H, W)``, ``label`` uint8 ``(D, H, W)`` (binary or class
    indices) -> same shapes.

    The spatial transform acts in an isotropic frame (millimetres on an isotropic grid) so
    rotations do not shear; labels are resampled by nearest neighbour. Then (``blur``) the image is
    smoothed, its intensities scaled and shifted and noise added. With ``return_transform``
    also returns ``(linear (3, 3), shift (3,))``: the output at grid point ``g`` shows the input at
    ``linear @ g + shift`` (so an input point ``p`` moves to ``linear^-1 (p - shift)``).
    """

    def uniform(lo, hi, n=1):
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    iso = torch.diag(isotropic_scale(image.shape))
    angles = uniform(-1, 1, 3) * math.radians(config.rotate_deg)
    scale = 1.0 + uniform(-config.scale, config.scale)
    flips = torch.where(torch.rand(3, generator=generator) < config.flip, -1.0, 1.0)
    linear = torch.linalg.inv(iso) @ (_rotation(angles) / scale) @ torch.diag(flips) @ iso
    shift = uniform(-config.shift, config.shift, 3) if config.shift > 0 else torch.zeros(3)
    grid = sampling_grid(linear, shift, image.shape, image.dtype)  # once for the image and its label
    img = sampled(image, grid, "bilinear", float(image.min()))
    lab = sampled(label.float(), grid, "nearest")
    if config.blur > 0:  # drawn only when asked for: the other configs' random streams stay as they were
        blur = torch.rand(1, generator=generator) < config.blur
        sigmas = uniform(0, config.blur_sigma, 3)  # drawn either way: a case's later draws do not depend on it
        if blur:
            img = blurred_image(img, sigmas.tolist())
    img = img * (1 + uniform(-config.intensity_scale, config.intensity_scale)) + uniform(
        -config.intensity_shift, config.intensity_shift
    )
    img = img + config.noise * torch.randn(img.shape, generator=generator)
    lab = lab.round().to(torch.uint8)  # nearest sampling keeps each voxel's class (0/1 or an organ's index)
    if return_transform:
        return img, lab, linear, shift
    return img, lab
