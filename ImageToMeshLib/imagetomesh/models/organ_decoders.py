"""What every model with one decoder (or decoder output) per organ checks: its crops, the organ asked for, and its
``surface_offsets`` (which one-object mesh models take too).

Such a model (Voxel2Mesh with ``organ_templates``, NUDF with ``unet``) meshes organ ``k`` (class ``k`` of
its U-Net, ``1..K``) in a crop ``organ_crops[k - 1]`` ``(d, h, w)`` of the model's grid around it.
"""

from __future__ import annotations

import math

import torch


def check_organ_crops(crops, organs: int, multiple: int, poolings: str) -> None:
    """``ValueError`` unless ``crops`` gives one ``(d, h, w)`` crop per organ (``organs`` of them), each size a
    positive multiple of ``multiple`` (what ``poolings`` names divides it)."""
    if len(crops) != organs or any(len(c) != 3 or min(c) < multiple or any(n % multiple for n in c) for c in crops):
        raise ValueError(
            f"organ_crops must give one (d, h, w) crop per organ class of the U-Net ({organs}), each size a "
            f"multiple of {multiple} ({poolings}), got {crops}"
        )


def checked_surface_offsets(offsets, decoders: int) -> list[float] | None:
    """A mesh model config's ``surface_offsets`` as floats (None stays None): one finite offset per organ decoder or
    output, ``decoders`` of them (1 for a one-object model), in grid voxels along the mesh's outward normals, applied
    at inference (Voxel2Mesh, Pixel2Mesh-3D and ImplicitMeshNet: :meth:`~imagetomesh.models.mesh_state.DecoderMesh.grown`;
    NUDF: :func:`~imagetomesh.models.nudf.moved_along_normals`); ``ValueError`` otherwise."""
    if offsets is None:
        return None
    values = [float(o) for o in offsets]
    if len(values) != decoders or not all(math.isfinite(v) for v in values):
        raise ValueError(
            f"surface_offsets must be {decoders} finite number(s) of grid voxels (one per organ, or one for a "
            f"one-object model), got {offsets}"
        )
    return values


def context_shape(crop, margin: int) -> tuple[int, int, int]:
    """The ``(d, h, w)`` input of an organ decoder whose U-Net reads ``margin`` voxels of image around its
    ``crop`` on every side."""
    return tuple(int(n) + 2 * margin for n in crop)


def centre_crop(tensor: torch.Tensor, margin: int) -> torch.Tensor:
    """``tensor (..., d, h, w)`` without ``margin`` voxels on each side of its last three axes."""
    if margin == 0:
        return tensor
    return tensor[..., margin:-margin, margin:-margin, margin:-margin]


def organ_index(organ: int | None, organs: int, model: str) -> int | None:
    """``organ - 1`` (the index of organ ``organ``'s decoder), or None for a one-object model (``organs`` 0)
    asked for no organ; ``ValueError`` when a several-organ ``model`` is not told which organ, or for an
    organ outside ``1..organs``."""
    if organ is None:
        if organs:
            raise ValueError(f"this {model} meshes {organs} organs, one decoder each: say which organ (1-{organs})")
        return None
    if not 1 <= organ <= organs:
        raise ValueError(f"organ must be between 1 and {organs} (the organs of this {model}), got {organ}")
    return organ - 1
