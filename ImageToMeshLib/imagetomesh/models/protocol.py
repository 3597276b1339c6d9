"""How a segmenting model's prediction becomes a mesh: the one interface inference uses.

Every model kind that segments images (:mod:`imagetomesh.models.registry`) is a
:class:`SegmentationModel`: besides its ``forward`` (whose shape each kind chooses and its
trainer relies on) it implements :meth:`~SegmentationModel.predict_meshes`, which returns one
:class:`~imagetomesh.core.mesh.Mesh` per image in model grid coordinates (x, y, z) in [-1, 1].
:class:`imagetomesh.inference.Segmenter` calls nothing else. DALS is a shape prior fitted to
observations, not a segmenter, and is not one.

- :class:`DeformedTemplateModel`: ``forward(images)`` -> ``(logits, meshes[b][stage])`` of
  :class:`~imagetomesh.models.mesh_state.DecoderMesh`; the prediction is the last stage's mesh
  (Voxel2Mesh, Pixel2Mesh-3D, ImplicitMeshNet).
- The U-Net baseline meshes its voxel segmentation (marching cubes,
  :func:`~imagetomesh.geometry.isosurface.labelmap_to_mesh`).
- NUDF meshes its unsigned distance field, and is the one kind that can also return the open
  surface as it found it (``supports_open_surface``) and that seeks an organ's surface only near
  the localiser's voxels of it (``meshes_near_mask``).
- A several-organ model may read the localiser's class probabilities over each organ's crop
  (``reads_localiser_probabilities``): NUDF with ``localiser_input``, a surface-start Voxel2Mesh.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar

import torch

from imagetomesh.core.mesh import Mesh

#: ``field(metadata=INFERENCE_ONLY)`` marks a model config field that training never reads (a setting made in the card
#: after training and chosen on validation, such as ``surface_offsets``): configs that differ only there describe the
#: same weights (:func:`weights_config`).
INFERENCE_ONLY = {"inference_only": True}


def weights_config(config):
    """The model config dataclass ``config`` with its :data:`INFERENCE_ONLY` fields at their defaults: what its
    weights' shapes and meaning depend on (two models with equal ones can be averaged, whatever their calibration)."""
    resets = {f.name: f.default for f in dataclasses.fields(config) if f.metadata.get("inference_only")}
    return dataclasses.replace(config, **resets) if resets else config


class SegmentationModel(abc.ABC):
    """A model that turns images into surface meshes (mixed into an ``nn.Module``).

    Attributes:
        supports_open_surface: whether ``predict_meshes(..., open_surface=True)`` is allowed.
        meshes_near_mask: whether ``predict_meshes`` takes ``near`` ``(B, D, H, W)`` bool, the voxels
            (the localiser's, of the organ) near which each image's surface is sought.
        reads_localiser_probabilities: whether ``predict_meshes`` takes ``probabilities`` ``(B, K + 1, D, H, W)``,
            the localiser's class probabilities over each crop (``segment``: the whole-scan U-Net's, cropped).
    """

    supports_open_surface: ClassVar[bool] = False
    meshes_near_mask: ClassVar[bool] = False

    @property
    def reads_localiser_probabilities(self) -> bool:
        return False

    @abc.abstractmethod
    def predict_meshes(self, images: torch.Tensor, open_surface: bool = False) -> list[Mesh]:
        """One mesh per image, in model grid coordinates.

        Args:
            images: ``(B, C, D, H, W)`` images on the model grid (preprocessed), on the model's device.
            open_surface: return the surface as the model found it, without closing it (only when
                :attr:`supports_open_surface`); otherwise each mesh is meant to be closed (the caller
                still repairs, orients and untangles it).
        Returns:
            ``B`` :class:`~imagetomesh.core.mesh.Mesh` es, vertices ``(N_b, 3)`` grid (x, y, z), faces ``(F_b, 3)``.
        Raises:
            InputError: when an image holds no object the model can mesh.
            ValueError: ``open_surface`` for a model that does not support it.
        """

    def _check_open_surface(self, open_surface: bool) -> None:
        if open_surface and not self.supports_open_surface:
            raise ValueError(f"{type(self).__name__} only makes closed surfaces")


class DeformedTemplateModel(SegmentationModel):
    """A template-deforming mesh decoder: ``forward(images (B, C, D, H, W))`` -> ``(logits, meshes)``
    with ``meshes[b]`` the list of per-stage :class:`~imagetomesh.models.mesh_state.DecoderMesh`;
    the prediction is each image's last-stage mesh."""

    def predict_meshes(self, images: torch.Tensor, open_surface: bool = False, organ: int | None = None) -> list[Mesh]:
        """As :meth:`SegmentationModel.predict_meshes`; ``organ`` ``k`` runs organ ``k``'s decoder of a
        model with one per organ (Voxel2Mesh with ``organ_templates``)."""
        self._check_open_surface(open_surface)
        _, meshes = self(images) if organ is None else self(images, organ=organ)
        return last_stage_meshes(meshes)


def last_stage_meshes(meshes) -> list[Mesh]:
    """Each image's prediction from a :class:`DeformedTemplateModel`'s ``forward`` output ``meshes`` (per image,
    the per-stage :class:`~imagetomesh.models.mesh_state.DecoderMesh`): its last stage, as a :class:`Mesh`."""
    return [Mesh(stages[-1].verts.detach().cpu().numpy(), stages[-1].faces.cpu().numpy()) for stages in meshes]
