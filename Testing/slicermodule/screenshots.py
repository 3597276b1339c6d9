"""Offscreen screenshots of an ImageToMesh result, rendered by Slicer's own displayable managers.

Builds the app-like scene of the tests (slicer-core, no Slicer application), loads the bundled
hippocampus sample, makes a model with ``ImageToMeshLogic`` and renders

- ``slicer-3d.png``: the model in a 3D view (``vtkMRMLModelDisplayableManager``);
- ``slicer-slice.png``: the Red (axial) slice through the model with the image, the reference
  label as an overlay and the model's slice intersection (``vtkMRMLModelSliceDisplayableManager``);
- ``slicer-slice-coronal.png``: the same on the Green (coronal) slice.

Usage (from the repository root)::

    .venv/bin/python Testing/slicermodule/screenshots.py [--method NAME] [--out docs/images]

``--method`` is a bundled segmentation model (default: the first installed hippocampus model).
With ``--label-surface``, or without any installed model, the marching-cubes surface of the
sample's label is shown instead, and the script says so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PREFERRED = ("unet-hippocampus", "voxel2mesh-hippocampus", "pixel2mesh3d-hippocampus")


def _environment():
    """The test harness's scene builder and module loader (Testing/slicermodule/harness), plus SAMPLES."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    from harness import application

    application.install()
    application.SAMPLES = REPO / "Resources" / "SampleData"
    return application


def _window(width: int, height: int):
    import vtk

    renderer = vtk.vtkRenderer()
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.AddRenderer(renderer)
    window.SetSize(width, height)
    interactor = vtk.vtkRenderWindowInteractor()  # the displayable managers need one
    interactor.SetRenderWindow(window)
    return renderer, window, interactor


def _save(window, path: Path) -> Path:
    import vtk

    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.ReadFrontBufferOff()
    grab.Update()
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputConnection(grab.GetOutputPort())
    writer.Write()
    return path


def _managers(factory, app_logic, renderer, classes, view_node):
    factory.SetMRMLApplicationLogic(app_logic)
    for name in classes:
        if not factory.IsDisplayableManagerRegistered(name):
            factory.RegisterDisplayableManager(name)
    group = factory.InstantiateDisplayableManagers(renderer)
    group.SetMRMLDisplayableNode(view_node)
    return group


def render_3d(scene, app_logic, model, path: Path, size=(640, 640)) -> Path:
    import slicer

    renderer, window, interactor = _window(*size)
    renderer.GradientBackgroundOn()
    renderer.SetBackground(0.46, 0.46, 0.62)  # Slicer's default 3D background (bottom, top)
    renderer.SetBackground2(0.76, 0.76, 0.87)
    view = scene.GetFirstNodeByClass("vtkMRMLViewNode")
    group = _managers(
        slicer.vtkMRMLThreeDViewDisplayableManagerFactory.GetInstance(),
        app_logic,
        renderer,
        ("vtkMRMLCameraDisplayableManager", "vtkMRMLModelDisplayableManager"),
        view,
    )
    bounds = [0.0] * 6
    model.GetRASBounds(bounds)
    centre = [(bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2]
    camera = renderer.GetActiveCamera()
    camera.SetFocalPoint(*centre)
    camera.SetPosition(centre[0] - 120.0, centre[1] + 90.0, centre[2] + 70.0)  # from left, anterior, superior
    camera.SetViewUp(0.0, 0.0, 1.0)
    renderer.ResetCamera()
    camera.Dolly(1.05)
    renderer.ResetCameraClippingRange()
    out = _save(window, path)
    del group, interactor
    return out


def render_slice(scene, app_logic, slice_logic, volume, label, model, path: Path, size=(640, 640)) -> Path:
    import slicer
    import vtk

    slice_node = slice_logic.GetSliceNode()
    slice_node.SetDimensions(size[0], size[1], 1)
    composite = slice_logic.GetSliceCompositeNode()
    composite.SetBackgroundVolumeID(volume.GetID())
    if label is not None:
        composite.SetLabelVolumeID(label.GetID())
        composite.SetLabelOpacity(0.35)
    slice_logic.FitSliceToAll()
    bounds = [0.0] * 6
    model.GetRASBounds(bounds)
    slice_node.JumpSliceByOffsetting(
        (bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2
    )
    renderer, window, interactor = _window(*size)
    image = vtk.vtkImageMapper()
    image.SetInputConnection(slice_logic.GetImageDataConnection())  # the slice as Slicer reslices it (RGBA)
    image.SetColorWindow(255.0)
    image.SetColorLevel(127.5)
    actor = vtk.vtkActor2D()
    actor.SetMapper(image)
    renderer.AddViewProp(actor)
    group = _managers(
        slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance(),
        app_logic,
        renderer,
        ("vtkMRMLModelSliceDisplayableManager",),
        slice_node,
    )
    out = _save(window, path)
    del group, interactor
    return out


def make_result(env, itm, scene, volume_node, method: str | None, label_surface: bool = False):
    """``(model node, description)``: segment with a bundled model, or the label's surface without one."""
    from imagetomesh.backend import InProcessBackend

    if method is None and not label_surface:
        from imagetomesh.zoo import available_models

        installed = available_models()
        method = next((name for name in PREFERRED if name in installed), None)
    if method is not None and not label_surface:
        logic = itm.ImageToMeshLogic(backend=InProcessBackend())
        try:
            return logic.segment(volume_node, method, device="CPU"), f"segmented with {method}"
        finally:
            logic.close()
    from imagetomesh.geometry.isosurface import labelmap_to_mesh
    from imagetomesh.io.images import read_labelmap

    label = read_labelmap(env.SAMPLES / "hippocampus" / "hippocampus_024_label.nii.gz")
    from ImageToMeshModule import sceneAdapters

    target = sceneAdapters.ResultTarget("segment", f"{volume_node.GetName()} label surface", volume_node)
    model = itm.ImageToMeshLogic(backend=None).applyResult(labelmap_to_mesh(label), target)
    why = "as asked" if label_surface else "no segmentation model installed"
    return model, f"{why}: showing the label's marching-cubes surface"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", help="bundled segmentation model (default: first installed hippocampus model)")
    parser.add_argument(
        "--label-surface",
        action="store_true",
        help="show the sample label's marching-cubes surface instead of running a model (fast)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images", help="output folder")
    args = parser.parse_args(argv)

    env = _environment()
    itm = env.load_module()
    scene = env.make_scene()
    app_logic, _, slice_logics = scene._keep
    from imagetomesh.io.images import read_image

    image = read_image(env.SAMPLES / "hippocampus" / "hippocampus_024.nii.gz")
    label_volume = read_image(env.SAMPLES / "hippocampus" / "hippocampus_024_label.nii.gz")
    volume_node = env.volume_to_node(image, "hippocampus_024")
    label_node = env.volume_to_node(
        label_volume.with_array(label_volume.array.astype("uint8")),
        "hippocampus_024 label",
        "vtkMRMLLabelMapVolumeNode",
    )
    model, description = make_result(env, itm, scene, volume_node, args.method, args.label_surface)
    print(f"{model.GetName()}: {description}")

    args.out.mkdir(parents=True, exist_ok=True)
    red, _, green = slice_logics
    written = [
        render_3d(scene, app_logic, model, args.out / "slicer-3d.png"),
        render_slice(scene, app_logic, red, volume_node, label_node, model, args.out / "slicer-slice.png"),
        render_slice(scene, app_logic, green, volume_node, label_node, model, args.out / "slicer-slice-coronal.png"),
    ]
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
