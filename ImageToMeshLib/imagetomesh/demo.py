"""``imagetomesh demo``: the main job on the bundled sample data.

Writes into one folder: organ meshes found in a whole held-out head-and-neck CT by the CT
model (with a print-ready mandible STL and the organs' scores against the case's contours),
classic marching-cubes meshes of the sample labelmaps, meshes from a DALS shape prior fitted to
three closed curves on a CT kidney, meshes from every installed learned model on the held-out
hippocampus case (with their scores against its label), and preview PNGs of each result over
its image.
"""

from __future__ import annotations

from pathlib import Path

from imagetomesh.errors import InputError
from imagetomesh.zoo import RESOURCES, available_models

SAMPLES = RESOURCES / "SampleData"


def _sample(*parts: str) -> Path:
    path = SAMPLES.joinpath(*parts)
    if not path.is_file():
        raise InputError(f"sample file {path} is missing; the demo needs the repository's Resources/SampleData")
    return path


def run_demo(out: str | Path, log=print) -> list[Path]:
    """Run the demo into folder ``out`` (created if its parent exists); returns the files written."""
    from imagetomesh.geometry.isosurface import labelmap_to_mesh
    from imagetomesh.inference import Segmenter
    from imagetomesh.io.atomic import check_output_folder
    from imagetomesh.io.images import read_image, read_labelmap
    from imagetomesh.io.meshes import write_mesh
    from imagetomesh.metrics import evaluate_mesh
    from imagetomesh.preview import render_preview

    out = check_output_folder(out)
    out.mkdir(exist_ok=True)
    written: list[Path] = []
    written += _headneck_ct(out, log)

    log("2. Abdominal CT: liver and kidney masks -> watertight meshes (marching cubes + smoothing)")
    ct = read_image(_sample("ct-example", "example_ct.nii.gz"))
    organ_meshes = []
    for organ in ("liver", "kidney_left", "kidney_right"):
        mesh = labelmap_to_mesh(read_labelmap(_sample("ct-example", f"{organ}.nii.gz")))
        written.append(write_mesh(mesh, out / f"ct_{organ}.stl"))
        organ_meshes.append(mesh)
        log(f"   {written[-1]}  {mesh.num_vertices} vertices, volume {mesh.signed_volume() / 1000:.1f} ml")
    written.append(
        render_preview(
            ct,
            organ_meshes,
            out / "ct_organs.png",
            centre_lps=organ_meshes[1].centroid(),
            labels=["liver", "kidney_left", "kidney_right"],
            title="example CT: organ meshes",
        )
    )
    log(f"   {written[-1]}")

    log("3. Annotate and fit: three orthogonal closed curves on the left kidney -> DALS kidney prior -> surface")
    if "dals-kidney" in available_models():
        from imagetomesh.fitting import fit_curves
        from imagetomesh.fitting.curves import mask_outline
        from imagetomesh.io.markups import Markup, write_markups
        from imagetomesh.metrics import mesh_dice_iou

        kidney = read_labelmap(_sample("ct-example", "kidney_left.nii.gz"))
        centre = organ_meshes[1].centroid()
        # the planes a user would draw on: the image's axial, coronal and sagittal slices through the centre
        curves = [mask_outline(kidney, centre, kidney.direction[:, axis]) for axis in (2, 1, 0)]
        written.append(
            write_markups(
                [Markup("ClosedCurve", f"curve {n}", c, True) for n, c in zip("ACS", curves)],
                out / "kidney_left_curves.mrk.json",
            )
        )
        fitted = fit_curves(curves, "dals-kidney")
        written.append(write_mesh(fitted, out / "kidney_left_dals_fit.stl"))
        dice_fit, _ = mesh_dice_iou(fitted, kidney)
        log(f"   {written[-2]}  (the three annotated curves)")
        log(f"   {written[-1]}  {fitted.num_vertices} vertices, Dice {dice_fit:.3f} against the full mask")
        written.append(
            render_preview(
                ct,
                [organ_meshes[1], fitted],
                out / "kidney_left_dals_fit.png",
                centre_lps=centre,
                labels=["mask (marching cubes)", "DALS fit from 3 curves"],
                title="left kidney: DALS prior fitted to three orthogonal curves",
            )
        )
        log(f"   {written[-1]}")
    else:
        log("   the dals-kidney prior is not installed; skipping")

    log("4. Hippocampus MRI (held-out case 024): learned models against marching cubes of the label")
    image = read_image(_sample("hippocampus", "hippocampus_024.nii.gz"))
    label = read_labelmap(_sample("hippocampus", "hippocampus_024_label.nii.gz"))
    meshes, names = [labelmap_to_mesh(label)], ["label (marching cubes)"]
    written.append(write_mesh(meshes[0], out / "hippocampus_label_mc.stl"))
    models = [name for name in available_models() if name.endswith("-hippocampus") and not name.startswith("dals")]
    if not models:
        log("   no learned hippocampus models are installed; showing the label's mesh only")
    rows = []
    for name in models:
        mesh = Segmenter(name, "cpu").segment(image)
        written.append(write_mesh(mesh, out / f"hippocampus_{name}.stl"))
        scores = evaluate_mesh(mesh, label)
        rows.append((name, scores))
        meshes.append(mesh)
        names.append(name)
    for name, s in rows:
        log(
            f"   {name:<28} Dice {s['dice']:.3f}  IoU {s['iou']:.3f}  Chamfer {s['chamfer_mm']:.2f} mm  "
            f"HD95 {s['hd95_mm']:.2f} mm  watertight {s['watertight']}"
        )
    written.append(
        render_preview(
            image, meshes, out / "hippocampus.png", labels=names, title="hippocampus_024 (not used in training)"
        )
    )
    log(f"   {written[-1]}")
    log(f"done: {len(written)} files in {out}")
    return written


#: The CT model of the demo's first step, and its held-out sample case.
HEADNECK_MODEL = "unet-headneck-ct"
HEADNECK_CASE = "openkbp_082"


def _headneck_ct(out: Path, log) -> list[Path]:
    """Step 1: a whole head-and-neck CT -> one mesh per organ (and a print-ready mandible)."""
    import numpy as np

    from imagetomesh.geometry.quality import check_mesh
    from imagetomesh.inference import Segmenter
    from imagetomesh.io.images import read_image
    from imagetomesh.io.meshes import write_mesh
    from imagetomesh.metrics import mesh_dice_iou
    from imagetomesh.preview import render_preview

    log(f"1. Head-and-neck CT (held-out case {HEADNECK_CASE}, the whole scan): {HEADNECK_MODEL} -> one mesh per organ")
    if HEADNECK_MODEL not in available_models():
        log(f"   the {HEADNECK_MODEL} model is not installed; skipping")
        return []
    image = read_image(_sample("headneck-ct", f"{HEADNECK_CASE}.nii.gz"))
    label = read_image(_sample("headneck-ct", f"{HEADNECK_CASE}_label.nii.gz"))
    segmenter = Segmenter(HEADNECK_MODEL, "cpu")
    meshes = segmenter.segment_organs(image)
    written, shown = [], {}
    for organ in segmenter.organs:
        mesh = meshes[organ.name]
        if mesh is None:
            log(f"   {organ.title}: not found")
            continue
        path = write_mesh(mesh, out / f"{HEADNECK_CASE}_{organ.name}.stl")
        written.append(path)
        shown[organ.title] = mesh
        mask = label.with_array((np.asarray(label.array) == organ.label).astype(np.uint8))
        dice = mesh_dice_iou(mesh, mask)[0] if mask.array.any() else float("nan")
        log(f"   {path}  {mesh.num_vertices} vertices, Dice {dice:.3f} against the clinical contour")
    mandible = meshes.get("mandible")
    if mandible is not None:
        report = check_mesh(mandible)
        log(
            f"   print-ready mandible: {out / f'{HEADNECK_CASE}_mandible.stl'} in millimetres, watertight "
            f"{report.watertight}, outward normals {mandible.signed_volume() > 0}, "
            f"{report.self_intersecting_faces} self-intersecting faces, volume {mandible.signed_volume() / 1000:.1f} ml"
        )
    written.append(
        render_preview(
            image,
            list(shown.values()),
            out / f"{HEADNECK_CASE}_organs.png",
            centre_lps=shown["Mandible"].centroid() if "Mandible" in shown else None,
            labels=list(shown),
            title=f"{HEADNECK_CASE} (not used in training): {HEADNECK_MODEL}",
        )
    )
    log(f"   {written[-1]}")
    return written
