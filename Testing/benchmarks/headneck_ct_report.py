"""Regenerate docs/headneck-ct-results.md: organ meshes from whole head-and-neck CTs (OpenKBP), per organ and method.

Usage:
    python Testing/benchmarks/headneck_ct_report.py [--data ../shared/data/openkbp-ct] [--split val|test|train]
        [--models unet-headneck-ct ...] [--cases N] [--invariance 8] [--changes in-plane,noisy,...]
        [--out docs/headneck-ct-results.md]

For every case of the split of each model's card (``training.split`` of a run, or a bundled card's
``data.split_file``), ``segment`` runs on the
whole scan as a user would give it (:meth:`~imagetomesh.inference.Segmenter.segment_organs`). Each
organ is scored only in the cases where it was contoured (``labels_present``), against that organ's
voxels: Dice of the mesh rasterised on the label grid, HD95 and Chamfer (mm, both ways, against the
label's unsmoothed marching-cubes surface), watertight %, self-intersecting faces %, and "found" %
(an organ the model did not find scores Dice 0 and no distance). Wall seconds per case for the
whole scan, all organs (model loaded, ``--threads`` torch threads).

``--invariance K`` also segments the first K cases again after (a) resampling to 1 mm in-plane,
(b) the same with white noise of a 1 mm reconstruction (:data:`NOISE_HU`; not a target of issue 16,
a check that the model is not thrown by native-resolution noise), (c) a 5 mm thick-slice reconstruction
(:func:`thick_slices`; not a target either: common in clinics, and half the slices the models were trained on),
(d) storing the voxels with another direction matrix (axes permuted and flipped), (e) resampling onto an oblique
grid (:func:`obliqued`: 15 degrees about the body axis, 10 about the left-right axis) and (f) padding with a wider
field of view (air), and reports
the per-organ Dice change against the original scan (``--changes`` picks some of them: :data:`CHANGES`).
Tune on ``--split val``; run ``--split test`` once, at the end, for the page; ``--split train`` shows how well a
model fits its own training scans (against validation: how much it overfits).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from imagetomesh.core.transforms import GridTransform
from imagetomesh.core.volume import Volume
from imagetomesh.inference import Segmenter
from imagetomesh.io.images import read_image
from imagetomesh.metrics import evaluate_mesh
from imagetomesh.preprocessing import resample_to_grid, resample_volume
from imagetomesh.training.msd import read_msd
from imagetomesh.zoo import load_model

REPO = Path(__file__).resolve().parents[2]
ROW_NAMES = {"unet": "U-Net + MC", "voxel2mesh": "Voxel2Mesh", "nudf": "NUDF"}


def scored_organs(case, organs):
    """The model's organs that were contoured in ``case`` (``labels_present``; all when not stated)."""
    present = set(case.labels_present) if case.labels_present is not None else None
    return [o for o in organs if present is None or o.label in present]


def model_split(card: dict) -> dict[str, list[str]]:
    """The ``{"train"|"val"|"test": case ids}`` split of a model: its run's (``training.split``) or, for a bundled
    card, its ``data.split_file``."""
    split = card.get("training", {}).get("split")
    if split is None:
        split = json.loads((REPO / card["data"]["split_file"]).read_text(encoding="utf-8"))
    return split


def evaluate_case(segmenter: Segmenter, image: Volume, label: Volume, organs) -> tuple[dict, float, dict]:
    """``({organ name: metrics}, wall seconds, meshes)`` of one whole scan."""
    start = time.perf_counter()
    meshes = segmenter.segment_organs(image)
    seconds = time.perf_counter() - start
    scores = {}
    for organ in organs:
        mask = label.with_array((label.array == organ.label).astype(np.uint8))
        if not mask.array.any():
            continue
        mesh = meshes.get(organ.name)
        if mesh is None:
            scores[organ.name] = {"dice": 0.0, "found": False}
            continue
        metrics = evaluate_mesh(mesh, mask, n_points=10000)
        scores[organ.name] = {
            "dice": metrics["dice"],
            "hd95_mm": metrics["hd95_mm"],
            "chamfer_mm": metrics["chamfer_mm"],
            "watertight": bool(metrics["watertight"]),
            "self_intersection_pct": metrics["self_intersection_pct"],
            "found": True,
        }
    return scores, seconds, meshes


def resampled_in_plane(image: Volume, spacing_mm: float = 1.0) -> Volume:
    """``image`` resampled (trilinear) to ``spacing_mm`` along its first two index axes, same extent."""
    spacing = np.array([spacing_mm, spacing_mm, image.spacing[2]])
    size = np.maximum(np.round(image.size_ijk * image.spacing / spacing).astype(int), 1)
    return resample_volume(image, spacing, size, fill=-1000.0)


#: white noise (HU) added to the 1 mm copy in :func:`noisy_in_plane`: the residual noise of the OpenKBP scans
#: is about 10 HU at their ~3.9 mm in-plane spacing, ~40 HU for 1 mm voxels with the same dose
NOISE_HU = 40.0


def noisy_in_plane(image: Volume, spacing_mm: float = 1.0, noise_hu: float = NOISE_HU, seed: int = 0) -> Volume:
    """:func:`resampled_in_plane` plus seeded white noise of ``noise_hu``: a stand-in for a scan reconstructed at
    ``spacing_mm``, whose voxels are noisier than the training grid's (the resampled copy alone is smooth)."""
    fine = resampled_in_plane(image, spacing_mm)
    noise = np.random.default_rng(seed).normal(0.0, noise_hu, fine.array.shape).astype(np.float32)
    return fine.with_array(fine.array.astype(np.float32) + noise)


def thick_slices(image: Volume, factor: int = 2) -> Volume:
    """``image`` as a thick-slice reconstruction: each run of ``factor`` slices (the last index axis) averaged into one
    slice ``factor`` times as thick, centred where they were (5 mm slices from the dataset's 2.5 mm: a common clinical
    reconstruction; a slice left over at the end is dropped)."""
    n = image.array.shape[0] // factor
    array = image.array[: n * factor].astype(np.float32).reshape(n, factor, *image.array.shape[1:]).mean(axis=1)
    spacing = np.asarray(image.spacing, dtype=np.float64) * np.array([1.0, 1.0, factor])
    centre = image.index_to_lps[:3, :3] @ np.array([0.0, 0.0, (factor - 1) / 2]) + image.origin
    return Volume(array, spacing, centre, image.direction)


def reoriented(image: Volume) -> Volume:
    """The same voxels stored with another direction matrix: axes x <-> y swapped, z flipped."""
    array = np.ascontiguousarray(np.flip(np.swapaxes(image.array, 1, 2), axis=0))
    d = image.direction
    direction = np.stack([d[:, 1], d[:, 0], -d[:, 2]], axis=1)
    last_z = image.index_to_lps[:3, :3] @ np.array([0.0, 0.0, image.size_ijk[2] - 1]) + image.origin
    spacing = np.array([image.spacing[1], image.spacing[0], image.spacing[2]])
    return Volume(array, spacing, last_z, direction)


def obliqued(image: Volume, about_s_deg: float = 15.0, about_l_deg: float = 10.0) -> Volume:
    """The same scan resampled (trilinear) onto a grid turned ``about_s_deg`` about the body axis and ``about_l_deg``
    about the left-right axis, at its own spacing and holding all of it (air where the turned grid leaves it): an
    oblique reformat, whose direction matrix is not the image's axes in another order, and whose voxels are
    interpolated once more than the scan's."""
    a, b = np.radians([about_s_deg, about_l_deg])
    turn_s = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    turn_l = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(b), -np.sin(b)], [0.0, np.sin(b), np.cos(b)]])
    direction = turn_s @ turn_l @ image.direction
    spacing = np.asarray(image.spacing, dtype=np.float64)
    ends = [(-0.5, n - 0.5) for n in image.size_ijk]
    corners = np.array([[i, j, k, 1.0] for i in ends[0] for j in ends[1] for k in ends[2]]) @ image.index_to_lps.T
    along = corners[:, :3] @ direction  # the corners' coordinates along the turned axes
    size = np.ceil((along.max(0) - along.min(0)) / spacing).astype(int)
    turned = Volume(np.empty(size[::-1], np.float32), spacing, direction @ (along.min(0) + spacing / 2), direction)
    return turned.with_array(resample_to_grid(image, GridTransform.of_volume(turned), fill=-1000.0).numpy())


def padded(image: Volume, pad=((10, 30), (20, 0), (40, 12)), air: float = -1000.0) -> Volume:
    """``image`` with ``pad`` voxels ``((before, after) per index axis x, y, z)`` of air added: a wider field of view."""
    (x0, x1), (y0, y1), (z0, z1) = pad
    array = np.pad(image.array, ((z0, z1), (y0, y1), (x0, x1)), constant_values=air)
    origin = image.index_to_lps[:3, :3] @ np.array([-x0, -y0, -z0], dtype=float) + image.origin
    return Volume(array, image.spacing, origin, image.direction)


#: The invariance changes of the report: ``{key: (row label, change)}``.
CHANGES = {
    "in-plane": ("resampled to 1 mm in-plane", resampled_in_plane),
    "noisy": (f"1 mm in-plane with {NOISE_HU:.0f} HU noise", noisy_in_plane),
    "thick": ("5 mm slices (pairs of slices averaged)", thick_slices),
    "reoriented": ("another direction matrix", reoriented),
    "oblique": ("oblique: turned 15 and 10 degrees", obliqued),
    "padded": ("wider field of view (padded)", padded),
}


def summary_rows(per_case: list[dict], organs) -> list[dict]:
    rows = []
    for organ in organs:
        scores = [c[organ.name] for c in per_case if organ.name in c]
        if not scores:
            continue
        found = [s for s in scores if s["found"]]
        rows.append(
            {
                "organ": organ.title,
                "cases": len(scores),
                "dice": float(np.mean([s["dice"] for s in scores])),
                "dice_sd": float(np.std([s["dice"] for s in scores])),
                "hd95_mm": float(np.median([s["hd95_mm"] for s in found])) if found else float("nan"),
                "chamfer_mm": float(np.mean([s["chamfer_mm"] for s in found])) if found else float("nan"),
                "watertight_pct": 100.0 * float(np.mean([s["watertight"] for s in found])) if found else 0.0,
                "self_int_pct": float(np.mean([s["self_intersection_pct"] for s in found])) if found else 0.0,
                "found_pct": 100.0 * len(found) / len(scores),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "openkbp-ct"))
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    parser.add_argument(
        "--models", nargs="+", default=["unet-headneck-ct", "voxel2mesh-headneck-ct", "nudf-headneck-ct"]
    )
    parser.add_argument("--cases", type=int, default=0, help="only the first N cases of the split (0: all)")
    parser.add_argument("--invariance", type=int, default=8, help="cases to change (0: none)")
    parser.add_argument(
        "--changes",
        default=",".join(CHANGES),
        help=f"comma-separated invariance changes to run (default: all of {', '.join(CHANGES)})",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="markdown page to write (default: print only)")
    parser.add_argument(
        "--json", default=None, help="also write the per-case numbers here (and each change's per-case Dice changes)"
    )
    args = parser.parse_args()
    unknown = sorted(set(args.changes.split(",")) - set(CHANGES))
    if unknown:
        parser.error(f"unknown --changes {', '.join(unknown)} (known: {', '.join(CHANGES)})")
    torch.set_num_threads(args.threads)

    msd = read_msd(args.data)
    lines, raw = [], {}
    preview = None
    for name in args.models:
        model = load_model(name, "cpu")
        segmenter = Segmenter(model)
        organs = segmenter.organs
        ids = model_split(model.card)[args.split]
        if args.cases:
            ids = ids[: args.cases]
        per_case, seconds = [], []
        for case_id in ids:
            case = msd[case_id]
            image, label = read_image(case.image), read_image(case.label)
            scores, wall, meshes = evaluate_case(segmenter, image, label, scored_organs(case, organs))
            per_case.append(scores)
            seconds.append(wall)
            mean = np.mean([s["dice"] for s in scores.values()]) if scores else float("nan")
            print(f"{name} {case_id}: mean Dice {mean:.3f}, {wall:.1f} s", flush=True)
            if preview is None or abs(mean - 0.8) < abs(preview[0] - 0.8):
                preview = (mean, case_id, image, meshes)
        rows = summary_rows(per_case, organs)
        raw[name] = {"cases": ids, "per_case": per_case, "seconds": seconds}
        kind = model.card["kind"]
        lines.append(f"### {ROW_NAMES.get(kind, kind)} (`{name}`), {args.split} split, {len(ids)} cases\n")
        lines.append(
            "| organ | cases | Dice | HD95 (mm, median) | Chamfer (mm) | watertight % | self-int. % | found % |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for r in rows:
            lines.append(
                f"| {r['organ']} | {r['cases']} | {r['dice']:.3f} ± {r['dice_sd']:.3f} | {r['hd95_mm']:.1f} | "
                f"{r['chamfer_mm']:.2f} | {r['watertight_pct']:.0f} | {r['self_int_pct']:.2f} | {r['found_pct']:.0f} |"
            )
        organ_mean = float(np.mean([r["dice"] for r in rows]))
        lines.append(
            f"\nMean Dice over the {len(rows)} organs (each scored where contoured): **{organ_mean:.3f}**. "
            f"Wall time per whole scan, all organs: median {np.median(seconds):.1f} s, max {np.max(seconds):.1f} s "
            f"({args.threads} CPU thread{'s' if args.threads != 1 else ''}, model loaded).\n"
        )
        if args.invariance:
            lines.append(
                "Invariance (per-organ Dice of the changed scan minus the original's, mean over the first "
                f"{min(args.invariance, len(ids))} cases):\n"
            )
            lines.append("| change | " + " | ".join(o.title for o in organs) + " | max abs |")
            lines.append("|---|" + "---|" * (len(organs) + 1))
            for key in args.changes.split(","):
                label_text, change = CHANGES[key]
                by_case = {}
                for n, case_id in enumerate(ids[: args.invariance]):
                    case = msd[case_id]
                    image, label = read_image(case.image), read_image(case.label)
                    changed, _, _ = evaluate_case(segmenter, change(image), label, scored_organs(case, organs))
                    by_case[case_id] = {o: s["dice"] - per_case[n][o]["dice"] for o, s in changed.items()}
                raw[name].setdefault("invariance", {})[label_text] = by_case
                deltas = [[d[o.name] for d in by_case.values() if o.name in d] for o in organs]
                means = [float(np.mean(v)) if v else float("nan") for v in deltas]
                lines.append(
                    f"| {label_text} | "
                    + " | ".join(f"{m:+.3f}" for m in means)
                    + f" | {np.nanmax(np.abs(means)):.3f} |"
                )
                print(label_text, [round(m, 3) for m in means], flush=True)
            lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))
    if args.out:
        from imagetomesh.preview import render_preview

        image_path = Path(args.out).parent / "images" / "headneck-ct-preview.png"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        _, case_id, image, meshes = preview
        found = {k: m for k, m in meshes.items() if m is not None}
        render_preview(
            image, list(found.values()), image_path, labels=list(found), title=f"{case_id} ({args.models[0]})"
        )
        header = (
            Path(args.out).read_text(encoding="utf-8").split("<!-- results -->")[0] if Path(args.out).is_file() else ""
        )
        Path(args.out).write_text(
            header + "<!-- results -->\n\n" + text + f"\n\n![{case_id}](images/headneck-ct-preview.png)\n",
            encoding="utf-8",
        )


if __name__ == "__main__":
    main()
