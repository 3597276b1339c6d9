"""Would averaging the CT U-Nets over a second scan grid, moved by half a voxel, steady their organs under resampling?

Usage:
    python Testing/benchmarks/ct_phase_tta.py [headneck_ct_report.py options]

Runs ``headneck_ct_report.py`` (its options; tune with ``--split val``) with
:meth:`~imagetomesh.inference.Segmenter.scan_probabilities` replaced: the body-cropped scan is read onto its scan
grid (as ``segment`` reads it) and onto the same grid moved by half a voxel along each of its axes (normalised and
antialiased the same way), every U-Net (the model's and its ensemble's) runs on both, and the second grid's class
probabilities, mapped back onto the first by the mean of the 2 x 2 x 2 voxels around each point, are averaged with
the first's. A resampled or reformatted copy of a scan reaches the scan grid at another sub-voxel placement (its body
crop's box falls on its own voxels), so its organs' end slices can fall on the other side of 0.5: averaging two
placements is meant to make the probabilities depend less on it. Costs a second pass of each U-Net. Nothing is written
but the report's own ``--json``.

Session 37 (validation, all 20 whole scans, the bundled ensemble, U-Net + MC): Dice per scan -0.0005 on average;
each (case, organ) change on the 1 mm in-plane copy mean |change| 0.0072 -> 0.0058 but largest 0.036 -> 0.066, on the
oblique reformat 0.0219 -> 0.0180, largest 0.163 -> 0.106; organ means within 0.003 and 0.015 -> 0.010. Not kept:
a fifth less movement per case, for twice the U-Nets' time (docs/headneck-ct-experiments.md).
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from imagetomesh import inference
from imagetomesh.core.transforms import GridTransform
from imagetomesh.nn.precision import bf16_autocast
from imagetomesh.preprocessing import INTENSITY_NORMALISATIONS, antialias_sigmas, prepare_image, resample_to_grid
from imagetomesh.scan import body_crop, mean_probabilities, scan_grid

REPO = Path(__file__).resolve().parents[2]


def moved_by_half_a_voxel(transform: GridTransform) -> GridTransform:
    """``transform``'s grid with its voxel ``(i, j, k)`` where ``transform``'s voxel ``(i, j, k) + 0.5`` is."""
    index_to_lps = transform.index_to_lps.copy()
    index_to_lps[:3, 3] += index_to_lps[:3, :3] @ np.full(3, 0.5)
    return GridTransform(index_to_lps @ np.linalg.inv(transform.index_to_lps) @ transform.grid_to_lps, transform.shape)


@torch.no_grad()
def phase_averaged_scan_probabilities(self, volume, features=None):
    """``Segmenter.scan_probabilities`` averaged over the scan grid and :func:`moved_by_half_a_voxel` of it (no
    decoder features: ``features`` stays empty, and Voxel2Mesh's decoders run their U-Net on each crop)."""
    body = body_crop(volume) if self.spec.intensity == "ct" else volume
    image, transform = prepare_image(body, self.spec, warn=False, transform=scan_grid(body, self.spec))
    moved = moved_by_half_a_voxel(transform)
    normalised = body.with_array(INTENSITY_NORMALISATIONS[self.spec.intensity](body.array))
    fill = float(normalised.array.min())
    moved_image = resample_to_grid(normalised, moved, "bilinear", fill, antialias=antialias_sigmas(body, moved))
    nets = self.scan_unets
    probabilities = []
    for grid_image in (image, moved_image):
        batch = grid_image[None, None].to(self.model.device)
        with bf16_autocast(self.bf16, self.model.device):
            probabilities.append(mean_probabilities(nets, batch, self.spec.shape, self.mirror).float())
    # the moved grid's voxel v - 0.5 .. v + 0.5 around each of the scan grid's voxels: the mean of its voxels v - 1, v
    back = F.avg_pool3d(F.pad(probabilities[1][None], (1, 0, 1, 0, 1, 0), mode="replicate"), 2, stride=1)[0]
    return image, transform, (probabilities[0] + back) / 2


def main() -> None:
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(__doc__)
    inference.Segmenter.scan_probabilities = phase_averaged_scan_probabilities
    sys.argv = ["headneck_ct_report.py", *sys.argv[1:]]
    runpy.run_path(str(REPO / "Testing" / "benchmarks" / "headneck_ct_report.py"), run_name="__main__")


if __name__ == "__main__":
    main()
