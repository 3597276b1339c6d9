"""Print the time of ``sample_features`` on one image at the mesh decoders' sizes, as PyTorch's ``grid_sample``
against the voxels' feature rows summed (``nn.feature_sampling._gathered``, what it runs on a CPU where the features
need no gradient), forward and forward + gradient with respect to the points (NUDF's projection onto its surface).

Usage: python Testing/benchmarks/feature_sampling.py [--threads 2] [--repeats 5]

Sizes: Voxel2Mesh's head-and-neck mandible decoder (64 channels at 14 x 10 x 12, 27 samples around each of 8,252
vertices; the features a crop of a larger map, as the decoders read them) and its finest level (16 channels at
56 x 40 x 48); NUDF's query of 8,192 points at 7 offsets (64 channels at 26 x 14 x 14). Random features and points;
the largest difference between the two ways is printed too.
"""

from __future__ import annotations

import argparse
import time

import torch

import imagetomesh.nn.feature_sampling as sampling

CASES = {
    "Voxel2Mesh mandible, coarse level": ((1, 64, 14, 10, 12), 27 * 8252, False),
    "Voxel2Mesh mandible, finest level": ((1, 16, 56, 40, 48), 27 * 8252, False),
    "NUDF query, forward + gradient": ((1, 64, 26, 14, 14), 7 * 8192, True),
}


def run(features: torch.Tensor, points: torch.Tensor, gradient: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    if not gradient:
        with torch.no_grad():
            return sampling.sample_features(features, points), None
    points = points.clone().requires_grad_(True)
    out = sampling.sample_features(features, points)
    (grad,) = torch.autograd.grad(out.sum(), points)
    return out.detach(), grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    gathers = sampling._gathers
    print(f"{args.threads} threads, best of {args.repeats}, interleaved")
    print(f"{'case':<38}{'grid_sample s':>14}{'rows s':>8}{'max diff':>10}")
    for label, (shape, n, gradient) in CASES.items():
        d, h, w = shape[2:]
        features = torch.randn(*shape[:2], d + 2, h + 2, w + 2, generator=generator)[..., 1:-1, 1:-1, 1:-1]
        points = torch.rand(1, n, 3, generator=generator) * 2 - 1
        best = {"grid_sample": float("inf"), "rows": float("inf")}
        results = {}
        try:
            for _ in range(args.repeats):
                for way in best:
                    sampling._gathers = gathers if way == "rows" else (lambda *_: False)
                    start = time.perf_counter()
                    results[way] = run(features, points, gradient)
                    best[way] = min(best[way], time.perf_counter() - start)
        finally:
            sampling._gathers = gathers
        diff = max((a - b).abs().max().item() for a, b in zip(results["grid_sample"], results["rows"]) if a is not None)
        print(f"{label:<38}{best['grid_sample']:>14.3f}{best['rows']:>8.3f}{diff:>10.1e}")


if __name__ == "__main__":
    main()
