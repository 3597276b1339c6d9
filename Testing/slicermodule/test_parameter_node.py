"""The parameter node through Slicer's own ``parameterNodeWrapper`` (every Slicer >= 5.6 runs this code)."""

import typing
from pathlib import Path

import pytest
import slicer

from harness import application


def test_the_wrapper_is_slicers_own_code():
    import slicer.parameterNodeWrapper as wrapper

    assert Path(wrapper.__file__).resolve().is_relative_to(application.SLICER_PYTHON.resolve())


def test_the_logic_creates_the_node_and_every_parameter_reads_back_its_default(itm, scene):
    parameters = itm.ImageToMeshLogic(backend=None).getParameterNode()
    node = parameters.parameterNode
    assert node.GetScene() is scene and node.GetSingletonTag() == "ImageToMesh"
    assert node.GetAttribute("ModuleName") == "ImageToMesh"
    expected = {name: info.default.value for name, info in type(parameters).allParameters.items()}
    assert expected["refineInput"] is None and expected["device"] == "auto" and expected["exportFormat"] == "STL"
    for name, value in expected.items():
        assert getattr(parameters, name) == value, name
    again = itm.ImageToMeshLogic(backend=None).getParameterNode()
    assert again.parameterNode is node  # one singleton per scene


def test_node_parameters_accept_their_types_and_refuse_others(itm, scene, h):
    import numpy as np

    parameters = itm.ImageToMeshLogic(backend=None).getParameterNode()
    labelmap = slicer.util.addVolumeFromArray(np.zeros((4, 4, 4), np.uint8), nodeClassName="vtkMRMLLabelMapVolumeNode")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    model = scene.AddNewNodeByClass("vtkMRMLModelNode")
    parameters.refineInput = labelmap
    assert parameters.refineInput is labelmap
    parameters.refineInput = segmentation
    assert parameters.refineInput is segmentation
    with pytest.raises(TypeError):
        parameters.refineInput = model
    assert parameters.refineInput is segmentation
    parameters.refineInput = None
    with pytest.raises(TypeError):
        parameters.inputVolume = model
    with pytest.raises(ValueError):
        parameters.device = "TPU"  # not a Choice
    with pytest.raises(ValueError):
        parameters.logLambdaDir = 9.0  # outside WithinRange


def test_the_declaration_the_real_wrapper_refuses_is_caught_here(scene):
    """The bug this suite once missed: a node Union without None fails when the node is created."""
    from slicer.parameterNodeWrapper import parameterNodeWrapper

    @parameterNodeWrapper
    class Broken:
        refineInput: typing.Union[slicer.vtkMRMLLabelMapVolumeNode, slicer.vtkMRMLSegmentationNode]

    node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
    with pytest.raises(Exception, match="None"):
        Broken(node)
