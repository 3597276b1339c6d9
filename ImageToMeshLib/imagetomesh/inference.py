"""Image -> mesh with a trained model: preprocessing, batched prediction, mapping back to LPS mm."""
from __future__ import annotations

import warnings

import numpy as np
import torch

from imagetomesh.core.mesh import Mesh
from imagetomesh.core.transforms import GridTransform, index_to_grid_affine
from imagetomesh.core.volume import Volume
from imagetomesh.errors import InputError
from imagetomesh.geometry.isosurface import labelmap_to_mesh
from imagetomesh.geometry.quality import check_mesh, orient_outward, repair_mesh
from imagetomesh.geometry.untangle import untangle
from imagetomesh.preprocessing import GridSpec, prepare_image
from imagetomesh.zoo import LoadedModel, load_model


def grid_volume(array: np.ndarray, transform: GridTransform) -> Volume:
    """A ``(D, H, W)`` array on a model grid as a :class:`Volume` with that grid's LPS geometry."""
    index_to_lps = transform.grid_to_lps @ index_to_grid_affine(np.array(transform.shape[::-1]))
    spacing = np.linalg.norm(index_to_lps[:3, :3], axis=0)
    return Volume(array, spacing, index_to_lps[:3, 3], index_to_lps[:3, :3] / spacing[None, :])


def finish_mesh(mesh: Mesh, untangle_folds: bool = True) -> Mesh:
    """Post-processing of every predicted closed mesh: outward faces; repaired if it is not
    watertight; local folds smoothed away (:func:`~imagetomesh.geometry.untangle.untangle`:
    template-deforming models can push a few vertices through the opposite wall of a thin part)
    unless ``untangle_folds`` is False."""
    mesh = orient_outward(mesh)
    if not check_mesh(mesh, self_intersections=False).watertight:
        mesh = repair_mesh(mesh, remove_self_intersections=False)
    return untangle(mesh) if untangle_folds else mesh


class Segmenter:
    """Loads a model once and turns images into LPS-millimetre meshes.

    ``segment_batch`` stacks images resampled onto the model grid and runs them together.
    Models whose forward pass cannot return a mesh (NUDF) provide
    ``meshes_from_images(images, open_surface) -> [Mesh in grid coordinates]``, used when present.
    ``open_surface`` (only for models with ``supports_open_surface``) returns the surface as the
    model found it, without closing or repairing it; by default meshes are made watertight.
    ``untangle=False`` keeps the folds a network made (to measure the network itself).
    """

    def __init__(self, model: str | LoadedModel, device: str = "auto", open_surface: bool = False,
                 untangle: bool = True) -> None:
        self.model = model if isinstance(model, LoadedModel) else load_model(model, device)
        self.spec = GridSpec.from_dict(self.model.card["grid"])
        if open_surface and not getattr(self.model.module, "supports_open_surface", False):
            raise InputError(f"model {self.model.name} ({self.model.kind}) only makes closed surfaces; "
                             "drop --open or use a model that supports open surfaces (e.g. nudf-hippocampus)")
        self.open_surface = open_surface
        self.untangle = untangle

    @torch.no_grad()
    def segment_batch(self, volumes: list[Volume]) -> list[Mesh]:
        """One mesh per volume, in the order given."""
        prepared = []
        for volume in volumes:
            _check_finite(volume)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                prepared.append(prepare_image(volume, self.spec))
            for w in caught:
                warnings.warn(str(w.message), stacklevel=2)
        images = torch.stack([p[0] for p in prepared])[:, None].to(self.model.device)
        if hasattr(self.model.module, "meshes_from_images"):
            grid_meshes = self.model.module.meshes_from_images(images, open_surface=self.open_surface)
            return [self._finish(m.transformed(t.grid_to_lps)) for m, (_, t) in zip(grid_meshes, prepared)]
        logits, meshes = self.model.module(images)
        out = []
        for b, (_, transform) in enumerate(prepared):
            if meshes is None:
                mask = logits[b].argmax(0).to(torch.uint8).cpu().numpy()
                if not mask.any():
                    raise InputError("the model found no object in the image; check that it shows the organ the model was trained on")
                mesh = labelmap_to_mesh(grid_volume(mask, transform), smoothing=self.model.module.config.smoothing)
            else:
                final = meshes[b][-1]
                mesh = Mesh(final.verts.cpu().numpy(), final.faces.cpu().numpy()).transformed(transform.grid_to_lps)
            out.append(finish_mesh(mesh, self.untangle))
        return out

    def segment(self, volume: Volume) -> Mesh:
        return self.segment_batch([volume])[0]

    def _finish(self, mesh: Mesh) -> Mesh:
        return orient_outward(mesh) if self.open_surface else finish_mesh(mesh, self.untangle)


def _check_finite(volume: Volume) -> None:
    if not np.all(np.isfinite(volume.array)):
        raise InputError("the image contains NaN or Inf voxels; fix or mask them before segmenting")
