"""``imagetomesh demo``: the main job on the bundled sample data.

Writes into one folder: classic marching-cubes meshes of the sample labelmaps, meshes from
every installed learned model on the held-out hippocampus case (with their scores against
its label), and preview PNGs of each result over its image.
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
    from imagetomesh.io.images import read_image, read_labelmap
    from imagetomesh.io.meshes import write_mesh
    from imagetomesh.metrics import evaluate_mesh
    from imagetomesh.preview import render_preview

    out = Path(out)
    if not out.parent.is_dir():
        raise InputError(f"output folder {out.parent} does not exist; create it first")
    out.mkdir(exist_ok=True)
    written: list[Path] = []

    log("1. Abdominal CT: liver and kidney masks -> watertight meshes (marching cubes + smoothing)")
    ct = read_image(_sample("ct-example", "example_ct.nii.gz"))
    organ_meshes = []
    for organ in ("liver", "kidney_left", "kidney_right"):
        mesh = labelmap_to_mesh(read_labelmap(_sample("ct-example", f"{organ}.nii.gz")))
        written.append(write_mesh(mesh, out / f"ct_{organ}.stl"))
        organ_meshes.append(mesh)
        log(f"   {written[-1]}  {mesh.num_vertices} vertices, volume {mesh.signed_volume() / 1000:.1f} ml")
    written.append(render_preview(ct, organ_meshes, out / "ct_organs.png", centre_lps=organ_meshes[1].centroid(),
                                  labels=["liver", "kidney_left", "kidney_right"], title="example CT: organ meshes"))
    log(f"   {written[-1]}")

    log("2. Hippocampus MRI (held-out case 024): learned models against marching cubes of the label")
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
        log(f"   {name:<28} Dice {s['dice']:.3f}  IoU {s['iou']:.3f}  Chamfer {s['chamfer_mm']:.2f} mm  "
            f"HD95 {s['hd95_mm']:.2f} mm  watertight {s['watertight']}")
    written.append(render_preview(image, meshes, out / "hippocampus.png", labels=names,
                                  title="hippocampus_024 (not used in training)"))
    log(f"   {written[-1]}")
    log(f"done: {len(written)} files in {out}")
    return written
