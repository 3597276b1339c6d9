"""Would running the CT U-Nets in windows of their training crop, Gaussian-weighted, raise Dice?

Usage:
    python Testing/benchmarks/ct_patch_windows.py --patch 48x80x80 [--step 0.5] [--sigma 0.125]
        [headneck_ct_report.py options]

``segment`` runs a CT U-Net over the whole scan grid in one pass (or in blocks of the card's grid shape that
overlap by a quarter and are averaged evenly). Networks trained on crops are often run instead in windows of
the crop they were trained on, overlapping by half and averaged with Gaussian weights (spread ``--sigma`` of the
window per axis), so that each voxel is decided where its window put it near the centre, with the context it had
in training. This runs ``headneck_ct_report.py`` (its options after ours; tune with ``--split val``) with every
U-Net of :meth:`~imagetomesh.inference.Segmenter.scan_probabilities` run that way. Nothing is written but the
report's own ``--json``.

Session 33 (validation, all 20 whole scans, the bundled ensemble: 0.759): windows of 48 x 80 x 80 (the CPU U-Net's
crops) 0.758, of 64 x 96 x 96 (the wide U-Net's) 0.758; every organ within 0.002 (docs/headneck-ct-experiments.md).
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

import torch

from imagetomesh import inference
from imagetomesh.scan import _starts

REPO = Path(__file__).resolve().parents[2]


def gaussian_weights(shape: tuple[int, int, int], sigma: float) -> torch.Tensor:
    """``shape`` weights, 1 at the centre, falling as a Gaussian of spread ``sigma`` times the size per axis
    (at least 1e-3, so a scan's corner covered by one window's edge still gets its logits)."""
    axes = [torch.exp(-0.5 * ((torch.arange(n) - (n - 1) / 2) / (sigma * n)) ** 2) for n in shape]
    weights = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return (weights / weights.max()).clamp_min(1e-3)


def patch_windowed(patch: tuple[int, int, int], step: float, sigma: float):
    """A replacement for :func:`~imagetomesh.scan.windowed_logits` (same arguments, the block ignored): the
    logits ``(C, D, H, W)`` of ``image (1, 1, D, H, W)`` from windows of ``patch`` (each no larger than the image)
    starting every ``step`` of a window, averaged with :func:`gaussian_weights`."""

    @torch.no_grad()
    def windowed(net, image: torch.Tensor, block, overlap=None) -> torch.Tensor:
        shape = image.shape[2:]
        sizes = [min(n, p) for n, p in zip(shape, patch)]
        weights = gaussian_weights(tuple(sizes), sigma).to(image.device)
        total = count = None
        for z in _starts(shape[0], sizes[0], 1.0 - step):
            for y in _starts(shape[1], sizes[1], 1.0 - step):
                for x in _starts(shape[2], sizes[2], 1.0 - step):
                    window = (slice(z, z + sizes[0]), slice(y, y + sizes[1]), slice(x, x + sizes[2]))
                    logits = net(image[(slice(None), slice(None), *window)])[0][0].float()
                    if total is None:
                        total = torch.zeros((logits.shape[0], *shape), device=logits.device)
                        count = torch.zeros(shape, device=logits.device)
                    total[(slice(None), *window)] += logits * weights
                    count[window] += weights
        return total / count

    return windowed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patch", required=True, help="window size z x y x x in grid voxels, e.g. 48x80x80")
    parser.add_argument("--step", type=float, default=0.5, help="windows start every this fraction of a window")
    parser.add_argument("--sigma", type=float, default=0.125, help="Gaussian spread, fraction of the window")
    args, report_args = parser.parse_known_args()
    patch = tuple(int(v) for v in args.patch.split("x"))
    inference.windowed_logits = patch_windowed(patch, args.step, args.sigma)
    sys.argv = ["headneck_ct_report.py", *report_args]
    runpy.run_path(str(REPO / "Testing" / "benchmarks" / "headneck_ct_report.py"), run_name="__main__")


if __name__ == "__main__":
    main()
