"""``imagetomesh segment``: image(s) -> mesh(es) with a trained model."""

from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path

from imagetomesh.cli.options import DEVICES, add_output, add_space, add_threads, path_arg, positive_int
from imagetomesh.cli.reporting import PROG, progress_bar
from imagetomesh.errors import InputError


def _targets(images: list[Path], output: Path) -> list[Path]:
    """One output path per image, every one checked before any work starts."""
    from imagetomesh.io.atomic import check_output_path, format_suffix
    from imagetomesh.io.images import image_stem
    from imagetomesh.io.meshes import MESH_SUFFIXES

    if len(images) == 1 and not output.is_dir():
        if format_suffix(output) not in MESH_SUFFIXES:
            raise InputError(
                f"output {output} needs a mesh extension ({', '.join(MESH_SUFFIXES)}) or must be an existing folder"
            )
        return [check_output_path(output)]
    if not output.is_dir():
        raise InputError(f"with several images, -o must be an existing folder; {output} is not (create it first)")
    return _checked_distinct([output / f"{image_stem(p)}.stl" for p in images])


def _checked_distinct(targets: list[Path]) -> list[Path]:
    """``targets``, each checked as an output path, refused when two are the same (two images of one name)."""
    from imagetomesh.io.atomic import check_output_path

    if len(set(targets)) != len(targets):
        raise InputError("two input images have the same name, so their meshes would overwrite each other; rename one")
    return [check_output_path(t) for t in targets]


@contextlib.contextmanager
def _warnings_named(name: str):
    """Warnings raised in the block are re-issued prefixed with ``name`` (the image they concern);
    the block may ``clear()`` the yielded list to drop them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
    for w in caught:
        warnings.warn(f"{name}: {w.message}", w.category, stacklevel=3)


def _prepared(segmenter, path: Path, roi):
    """Image ``path`` read, cropped to ``roi`` and put on the model's grid (:meth:`Segmenter.prepare`): the
    image itself is dropped on return, so only its grid-sized tensor stays in memory."""
    from imagetomesh.core.cropping import crop_volume
    from imagetomesh.io.images import read_image

    volume = read_image(path)
    return segmenter.prepare(crop_volume(volume, roi) if roi is not None else volume)


def _predict_batch(segmenter, batch: list) -> list:
    """``[(path, mesh or InputError)]`` for ``batch`` ``[(path, prepared image)]``: predicted together, or
    one by one when that fails (to find the image the model fails on, and keep the others)."""
    if len(batch) > 1:
        with _warnings_named(", ".join(p.name for p, _ in batch)) as caught:
            try:
                return list(zip([p for p, _ in batch], segmenter.predict([x for _, x in batch])))
            except InputError:
                caught.clear()  # one of them is bad: find which (its warnings come again), keep the others
    out = []
    for path, prepared in batch:
        with _warnings_named(path.name):
            try:
                out.append((path, segmenter.predict([prepared])[0]))
            except InputError as err:
                out.append((path, err))
    return out


def _organ_targets(images: list[Path], output: Path, organs, model: str) -> dict[Path, dict[str, Path]]:
    """``{image: {organ name: output path}}`` (``<image name>_<organ>.stl`` in the folder ``output``; for one
    image and one organ, ``output`` itself where it is a mesh file's name), every one checked before any work
    starts."""
    from imagetomesh.io.atomic import check_output_path, format_suffix
    from imagetomesh.io.images import image_stem
    from imagetomesh.io.meshes import MESH_SUFFIXES

    if len(images) == 1 and len(organs) == 1 and not output.is_dir() and format_suffix(output) in MESH_SUFFIXES:
        return {images[0]: {organs[0].name: check_output_path(output)}}
    if not output.is_dir():
        raise InputError(
            f"model {model} writes one mesh per organ, so -o must be an existing folder; {output} is not "
            "(create it first; for one image and one organ chosen with --organs, -o may name the mesh file)"
        )
    targets = {p: {o.name: output / f"{image_stem(p)}_{o.name}.stl" for o in organs} for p in images}
    _checked_distinct([t for per_image in targets.values() for t in per_image.values()])
    return targets


def _segment_organs(args, segmenter, images: list[Path], roi) -> int:
    """``segment`` with a several-organ model: each whole image in turn, one mesh per chosen organ.
    An organ the model does not find is reported (nothing is written for it); the exit code is 2 when
    an image failed, or when an organ named in ``--organs`` was not found."""
    from imagetomesh.core.cropping import crop_volume
    from imagetomesh.io.images import read_image
    from imagetomesh.io.meshes import write_mesh
    from imagetomesh.organs import choose_organs

    organs = choose_organs(segmenter.organs, args.organs, args.model)
    targets = _organ_targets(images, args.output, organs, args.model)
    failed, missing = [], []
    for path in progress_bar(images, "segmenting", total=len(images)):
        with _warnings_named(path.name):
            try:
                volume = read_image(path)
                meshes = segmenter.segment_organs(crop_volume(volume, roi) if roi is not None else volume, organs)
            except InputError as err:
                failed.append((path, err))
                continue
        for organ in organs:
            mesh = meshes[organ.name]
            if mesh is None:
                missing.append(f"{path.name}: {organ.name}")
                print(
                    f"{PROG}: warning: {path.name}: no {organ.title.lower()} found; nothing written for it",
                    file=sys.stderr,
                )
                continue
            target = targets[path][organ.name]
            write_mesh(mesh, target, args.coordinate_system)
            print(f"wrote {target} ({organ.title}, {mesh.num_vertices} vertices, {mesh.num_faces} triangles)")
    for path, err in failed:
        print(f"{PROG}: error: {path}: {err}", file=sys.stderr)
    if len(failed) and len(images) > 1:
        print(f"{PROG}: {len(failed)} of {len(images)} images failed", file=sys.stderr)
    if args.organs is not None and missing:
        print(f"{PROG}: error: organs asked for with --organs were not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    return 2 if failed else 0


def cmd_segment(args) -> int:
    """Segment each image into its own mesh. Images are streamed: each is read when its batch needs it and
    only its grid-sized tensor is kept until the batch is predicted; a batch holds at most ``--batch-size``
    images and at most :attr:`~imagetomesh.inference.Segmenter.max_batch` (memory does not grow with the
    number of images, nor past that cap with ``--batch-size``). An image that fails is named and skipped;
    the others are written, and the exit code is 2 when any failed."""
    from imagetomesh.inference import Segmenter
    from imagetomesh.io.markups import read_roi
    from imagetomesh.io.meshes import write_mesh
    from imagetomesh.threads import configure as configure_threads
    from imagetomesh.threads import work_for_model

    images = [Path(p) for p in args.images]
    segmenter = Segmenter(
        args.model,
        args.device,
        open_surface=args.open,
        check_input=not args.allow_mismatch,
        precision="fp32" if args.fp32 else "auto",
        snap=args.snap,
    )
    configure_threads(work_for_model(segmenter.model.kind), args.threads)
    roi = read_roi(args.roi) if args.roi else None
    if segmenter.organs is not None:
        return _segment_organs(args, segmenter, images, roi)
    if args.organs is not None:
        raise InputError(f"--organs is for models of several organs; {args.model} meshes one structure")
    targets = dict(zip(images, _targets(images, args.output)))
    batch_size = min(args.batch_size, segmenter.max_batch)
    failed, batch = [], []

    def write(results) -> None:
        for path, mesh in results:
            if isinstance(mesh, InputError):
                failed.append((path, mesh))
                continue
            write_mesh(mesh, targets[path], args.coordinate_system)
            print(f"wrote {targets[path]} ({mesh.num_vertices} vertices, {mesh.num_faces} triangles)")

    for path in progress_bar(images, "segmenting", total=len(images)):
        with _warnings_named(path.name):
            try:  # read when its batch needs it; only the grid-sized result is kept
                batch.append((path, _prepared(segmenter, path, roi)))
            except InputError as err:
                failed.append((path, err))
        if len(batch) == batch_size:
            write(_predict_batch(segmenter, batch))
            batch = []
    if batch:
        write(_predict_batch(segmenter, batch))
    for path, err in failed:
        print(f"{PROG}: error: {path}: {err}", file=sys.stderr)
    if failed:
        if len(images) > 1:  # one image: its error line says it all
            written = len(images) - len(failed)
            print(f"{PROG}: {len(failed)} of {len(images)} images failed; {written} mesh(es) written", file=sys.stderr)
        return 2
    return 0


def register(sub) -> None:
    """Add ``segment`` to the main parser's sub-parsers ``sub``."""
    p = sub.add_parser(
        "segment",
        help="image(s) -> mesh(es) with a trained model",
        description="Segment each IMAGE into a watertight surface mesh (LPS mm) with a bundled or "
        "trained model. With several images, -o is a folder and each mesh is named after "
        "its image; an image that fails is reported by name and the others are still written. "
        "A model of several organs (e.g. a head-and-neck CT model) takes whole scans and writes "
        "IMAGE_ORGAN.stl per organ into the folder -o.",
    )
    p.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        type=path_arg,
        help="NIfTI, NRRD or MHA/MHD file, folder of a DICOM series (or of an export holding one), or a zip archive of it",
    )
    p.add_argument("--model", required=True, help="bundled model name (see 'imagetomesh models') or model folder")
    add_output(
        p,
        "mesh file (one image; with a several-organ model, one organ chosen with --organs) or existing folder "
        "(several images, or several organs: <image>_<organ>.stl each)",
    )
    p.add_argument("--device", default="auto", choices=DEVICES)
    add_threads(p, "the cores idle at the start, at most 2 for the mesh-decoder models and 4 for U-Net and NUDF")
    p.add_argument(
        "--batch-size",
        type=positive_int("--batch-size"),
        default=8,
        help="images predicted together (default 8; at most what the model's grid allows at once, "
        "e.g. 9 hippocampus patches: memory stays bounded)",
    )
    p.add_argument(
        "--open",
        action="store_true",
        help="keep the surface open where the model found no surface (NUDF models only; default: watertight)",
    )
    p.add_argument(
        "--snap",
        action="store_true",
        help="optional refinement for Voxel2Mesh, Pixel2Mesh-3D and ImplicitMeshNet models: move each vertex "
        "of the network's mesh along its normal (at most 2 voxels) onto its own voxel head's surface, "
        "averaged over flips of the image (8 passes of the U-Net; docs/hippocampus-results.md has its row)",
    )
    p.add_argument(
        "--roi",
        metavar="BOX",
        help="segment only inside this box: x0,y0,z0,x1,y1,z1 in LPS mm, or a Slicer ROI .mrk.json "
        "(lets a patch model such as the hippocampus ones run on a whole-head image; write --roi=-10,... "
        "when the first number is negative)",
    )
    p.add_argument(
        "--organs",
        metavar="NAMES",
        help="models of several organs: mesh only these, comma-separated (e.g. mandible,brainstem; "
        "'imagetomesh models' lists each model's organs); default: all",
    )
    p.add_argument(
        "--fp32",
        action="store_true",
        help="compute in float32 (default: whole-scan CT models use bf16 where the CPU computes it natively)",
    )
    p.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="segment images the model's card says it was not made for (another modality, a far larger field of "
        "view, organs found where the training scans never had them)",
    )
    add_space(p)
    p.set_defaults(func=cmd_segment)
