"""Would averaging the CT U-Nets over rescaled copies of the scan (scale test-time augmentation) raise Dice?

Usage:
    python Testing/benchmarks/ct_scale_tta.py --scales 1x1x1,1x0.9x0.9,1x1.1x1.1 [headneck_ct_report.py options]

Runs ``headneck_ct_report.py`` (its options after ``--scales``; tune with ``--split val``) with every U-Net of
:meth:`~imagetomesh.inference.Segmenter.scan_probabilities` (the model's and its ensemble's, through
:func:`~imagetomesh.scan.net_probabilities`) run on the prepared
scan resampled (trilinear) by each ``z x y x x`` factor of ``--scales``, its logits resampled back onto the scan's
grid, and the class probabilities averaged over the factors (``1x1x1`` is the scan itself, as ``segment`` runs it).
The resampled scan is padded with air to the U-Net's multiple of 8 and its logits cropped back. A factor below 1
shows the network the organs smaller, as its training's scale augmentation (+-10 %) does. Nothing is written but
the report's own ``--json``.

Session 30 (validation, all 20 whole scans, the bundled ensemble: 0.7586): in-plane 0.9 / 1 / 1.1 0.756, the same
on all three axes 0.756, in-plane 0.85 / 0.93 / 1 / 1.07 / 1.15 0.752; the larynx gains 0.01-0.02 and every
other organ loses (docs/headneck-ct-experiments.md).
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from imagetomesh import scan
from imagetomesh.scan import windowed_logits

REPO = Path(__file__).resolve().parents[2]
#: The U-Nets' input sizes must be multiples of this (three poolings).
SIZE_MULTIPLE = 8


def scale_averaged(scales: list[tuple[float, float, float]]):
    """A replacement for :func:`~imagetomesh.scan.net_probabilities` that averages the class probabilities
    ``(C, D, H, W)`` of the scan ``batch (1, 1, D, H, W)`` resampled by each of ``scales``, each resampled back to
    the scan grid."""
    plain = scan.net_probabilities

    def probabilities(net, batch: torch.Tensor, block, mirror=None) -> torch.Tensor:
        if mirror is not None:
            raise SystemExit("ct_scale_tta.py does not rescale a mirror-averaged model's mirror")
        total = torch.zeros(())
        for factors in scales:
            if factors == (1.0, 1.0, 1.0):
                total = total + plain(net, batch, block)
                continue
            size = [max(SIZE_MULTIPLE, round(n * f)) for n, f in zip(batch.shape[2:], factors)]
            # sizes, not factors, on both ways: the two resamplings then map the same points onto each other
            scaled = F.interpolate(batch, size=size, mode="trilinear", align_corners=False)
            pad = [(-n) % SIZE_MULTIPLE for n in size]
            scaled = F.pad(scaled, (0, pad[2], 0, pad[1], 0, pad[0]), value=float(batch.min()))
            logits = windowed_logits(net, scaled, block)[:, : size[0], : size[1], : size[2]]
            back = F.interpolate(logits[None].float(), size=batch.shape[2:], mode="trilinear", align_corners=False)
            total = total + back[0].softmax(0)
        return total / len(scales)

    return probabilities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", required=True, help="comma-separated z x y x x factors, e.g. 1x1x1,1x0.9x0.9")
    args, report_args = parser.parse_known_args()
    try:
        scales = [tuple(float(v) for v in item.split("x")) for item in args.scales.split(",")]
    except ValueError:
        raise SystemExit(f"--scales takes factors like 1x0.9x0.9, comma-separated, not {args.scales!r}") from None
    if any(len(s) != 3 or min(s) <= 0 for s in scales):
        raise SystemExit(f"--scales takes three positive factors per item (z x y x x), not {args.scales!r}")
    scan.net_probabilities = scale_averaged(scales)
    sys.argv = ["headneck_ct_report.py", *report_args]
    runpy.run_path(str(REPO / "Testing" / "benchmarks" / "headneck_ct_report.py"), run_name="__main__")


if __name__ == "__main__":
    main()
