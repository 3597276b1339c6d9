"""Closed curves drawn on slice views for the DALS curve fit: creation, recorded planes, projection.

Each curve belongs to one slice view (Red, Yellow or Green): it is shown only there, and it
records that view's slice plane (``ImageToMesh.SliceToRAS``: the slice-to-RAS matrix, whose
column 2 is the plane normal and column 3 a point on it) when it is created and again when its
first point is placed (the user may have scrolled to another slice meanwhile). A curve whose
points leave that plane (not planar, or drawn after scrolling) is projected onto it before the
fit, with a warning for the panel. No Qt here.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import slicer

from .sceneAdapters import ATTRIBUTE_PREFIX, LPS_TO_RAS, InputError, matrixToNumpy, placeInFolder

#: A point farther than this (mm) from its curve's recorded plane is projected onto it with a warning.
PLANE_TOLERANCE_MM = 0.05

SLICE_NODE_ATTRIBUTE = ATTRIBUTE_PREFIX + "SliceNode"
SLICE_TO_RAS_ATTRIBUTE = ATTRIBUTE_PREFIX + "SliceToRAS"
REFERENCE_ATTRIBUTE = ATTRIBUTE_PREFIX + "Reference"


def recordSlicePlane(curveNode, sliceNode) -> None:
    """Record ``sliceNode``'s current plane on ``curveNode``."""
    sliceToRas = matrixToNumpy(sliceNode.GetSliceToRAS())
    curveNode.SetAttribute(SLICE_NODE_ATTRIBUTE, sliceNode.GetID())
    curveNode.SetAttribute(SLICE_TO_RAS_ATTRIBUTE, " ".join(f"{v:.9g}" for v in sliceToRas.reshape(-1)))


def createAnnotationCurves(referenceNode=None, sliceNames=("Red", "Yellow", "Green")) -> list:
    """Empty closed-curve nodes, one per slice view, each shown only in its own view.

    Each is coloured like its view, records the view's plane and (when given) the reference
    volume, and sits in the reference's subject-hierarchy folder. All or nothing.
    """
    scene = slicer.mrmlScene
    base = referenceNode.GetName() if referenceNode is not None else "ImageToMesh"
    created = []
    try:
        for sliceName in sliceNames:
            sliceNode = scene.GetNodeByID(f"vtkMRMLSliceNode{sliceName}")
            if sliceNode is None:
                continue
            curve = scene.AddNewNodeByClass(
                "vtkMRMLMarkupsClosedCurveNode", scene.GenerateUniqueName(f"{base} {sliceName} curve")
            )
            created.append(curve)
            curve.CreateDefaultDisplayNodes()
            display = curve.GetDisplayNode()
            color = sliceNode.GetLayoutColor()
            display.SetSelectedColor(color)
            display.SetActiveColor(color)
            display.SetViewNodeIDs([sliceNode.GetID()])  # its own slice view only, not 3D
            recordSlicePlane(curve, sliceNode)
            if referenceNode is not None:
                curve.SetAttribute(REFERENCE_ATTRIBUTE, referenceNode.GetID())
            placeInFolder(curve, referenceNode)
    except Exception:
        for node in reversed(created):
            scene.RemoveNode(node)
        raise
    if not created:
        raise InputError("no Red, Yellow or Green slice view found; choose a layout with slice views")
    return created


def sliceNodeOf(curveNode):
    """The slice node a curve was drawn for, or None."""
    sliceId = curveNode.GetAttribute(SLICE_NODE_ATTRIBUTE)
    return slicer.mrmlScene.GetNodeByID(sliceId) if sliceId else None


def recordedPlaneLPS(curveNode) -> Optional[tuple]:
    """``(origin (3,), unit normal (3,))`` in LPS of the curve's recorded slice plane, or None."""
    text = curveNode.GetAttribute(SLICE_TO_RAS_ATTRIBUTE)
    if not text:
        return None
    values = np.array([float(v) for v in text.split()], dtype=np.float64)
    if values.size != 16:
        return None
    sliceToRas = values.reshape(4, 4)
    normal = LPS_TO_RAS[:3, :3] @ sliceToRas[:3, 2]
    length = np.linalg.norm(normal)
    if length == 0:
        return None
    return LPS_TO_RAS[:3, :3] @ sliceToRas[:3, 3], normal / length


def curvePointsLPS(curveNode) -> Optional[np.ndarray]:
    """``(N, 3)`` LPS points along a closed curve, or None when fewer than 3 points are placed."""
    count = curveNode.GetNumberOfDefinedControlPoints()
    if count < 3:
        return None
    points = slicer.util.arrayFromMarkupsCurvePoints(curveNode, world=True)
    if points is None or len(points) < 3:
        return None
    return np.asarray(points, dtype=np.float64) @ LPS_TO_RAS[:3, :3].T


def projectOntoPlane(points: np.ndarray, origin: np.ndarray, normal: np.ndarray) -> tuple:
    """``(projected (N, 3), largest distance)`` of ``points (N, 3)`` on the plane through ``origin`` with unit ``normal``."""
    distances = (points - origin) @ normal
    return points - distances[:, None] * normal[None, :], float(np.abs(distances).max(initial=0.0))


def curveForFit(curveNode) -> tuple:
    """``(points (N, 3) LPS or None, warning or None)``: a curve's points on its recorded slice plane.

    A curve with fewer than three points gives ``(None, None)``; points farther than
    :data:`PLANE_TOLERANCE_MM` from the recorded plane are projected onto it, with a warning.
    A curve without a recorded plane is passed as drawn (the library fits its best plane).
    """
    points = curvePointsLPS(curveNode)
    if points is None:
        return None, None
    plane = recordedPlaneLPS(curveNode)
    if plane is None:
        return points, None
    projected, distance = projectOntoPlane(points, *plane)
    if distance <= PLANE_TOLERANCE_MM:
        return projected, None
    sliceNode = sliceNodeOf(curveNode)
    view = sliceNode.GetName() if sliceNode is not None else "its"
    return projected, (
        f"'{curveNode.GetName()}' was not on the {view} slice plane it was drawn for "
        f"(up to {distance:.2f} mm off); it was projected onto that plane"
    )
