"""The panel's state, saved with the scene, declared for Slicer's ``parameterNodeWrapper``."""

import pathlib
from typing import Annotated, Optional, Union

from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLMarkupsROINode,
    vtkMRMLModelNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

#: The DALS paper's weights for fitting planar curves, ``(lambda_dir, lambda_reg)``: where the
#: fit sliders start (the library's ``imagetomesh.fitting.TASK_DEFAULTS["curves"]``; a test keeps
#: them equal). Refining a labelmap defaults to one shared latent (lambda_dir = inf) and no
#: regulariser, which a log slider cannot show: a check box selects those defaults instead.
PAPER_CURVE_LAMBDAS = (100.0, 1e-2)

#: Ranges of the log10(lambda) sliders.
LOG_LAMBDA_DIR_RANGE = (-2.0, 5.0)
LOG_LAMBDA_REG_RANGE = (-5.0, 1.0)

#: Device choices shown in the panel -> the library's device names.
DEVICES = {"auto": "auto", "CPU": "cpu", "GPU": "cuda"}


@parameterNodeWrapper
class ImageToMeshParameterNode:
    """The panel's state.

    Node parameters are ``Optional``: Slicer's wrapper writes every parameter's default when it
    creates the node, and a node-typed parameter starts empty (None), which it only accepts
    where the declaration allows None. Method and prior names are plain strings (their combo
    boxes are filled at run time from the bundled models, so the Widget keeps them in sync);
    log10 of the DALS weights drive the sliders.
    """

    # Segment
    inputVolume: Optional[vtkMRMLScalarVolumeNode]
    roi: Optional[vtkMRMLMarkupsROINode]
    method: str = ""
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    outputModel: Optional[vtkMRMLModelNode]
    allowMismatch: bool = False  # list and run models not made for the volume (the CLI's --allow-mismatch)
    # Annotate and fit (sliders start at the paper's weights for curves)
    prior: str = ""
    logLambdaDir: Annotated[float, WithinRange(*LOG_LAMBDA_DIR_RANGE)] = 2.0
    logLambdaReg: Annotated[float, WithinRange(*LOG_LAMBDA_REG_RANGE)] = -2.0
    fitOutputModel: Optional[vtkMRMLModelNode]
    # Refine
    refineInput: Optional[Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]]
    refineSegmentId: str = ""
    refinePrior: str = ""
    refineUseDefaultLambdas: bool = True  # one shared latent, no regulariser (the paper's labelmap task)
    refineLogLambdaDir: Annotated[float, WithinRange(*LOG_LAMBDA_DIR_RANGE)] = 2.0
    refineLogLambdaReg: Annotated[float, WithinRange(*LOG_LAMBDA_REG_RANGE)] = -3.0
    refineOutputModel: Optional[vtkMRMLModelNode]
    # Export
    exportFormat: Annotated[str, Choice(["STL", "OBJ", "PLY"])] = "STL"
    exportCoordinateSystem: Annotated[str, Choice(["LPS", "RAS"])] = "LPS"
    exportDirectory: pathlib.Path = pathlib.Path.home()
