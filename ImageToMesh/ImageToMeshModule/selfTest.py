"""``ImageToMeshTest``: the module's test in Slicer's own test runner (the pytest suites cover far more).

It runs in Slicer's process, so it never imports torch or pymeshlab there: the mesh is made by
the worker process, and the test skips itself, with a message, when the worker's Python
packages or the sample image are not installed.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from .logic import ImageToMeshLogic
from .sampleData import sampleDataFolder
from .sceneAdapters import meshFromModelNode


class ImageToMeshTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ParameterNodeDefaults()
        self.setUp()
        self.test_SegmentAndExport()

    def test_ParameterNodeDefaults(self):
        """The parameter node is created by Slicer's parameterNodeWrapper and reads back its defaults."""
        logic = ImageToMeshLogic()
        parameters = logic.getParameterNode()
        self.assertIsNone(parameters.refineInput)
        self.assertEqual(parameters.exportFormat, "STL")
        self.assertEqual(parameters.device, "auto")

    def test_SegmentAndExport(self):
        logic = ImageToMeshLogic()
        try:
            missing = logic.unsatisfiedDependencies()
            if missing:
                self.delayDisplay("The worker's Python packages are not installed; segmentation test skipped")
                return
            methods = logic.segmentationMethods()
            image = os.path.join(sampleDataFolder(), "hippocampus", "hippocampus_024.nii.gz")
            if not methods or not os.path.isfile(image):
                self.delayDisplay("No bundled model or sample image; segmentation test skipped")
                return
            method = "unet-hippocampus" if "unet-hippocampus" in methods else methods[0]
            self.delayDisplay(f"Segmenting the sample with {method} in the worker")
            volumeNode = slicer.util.loadVolume(image)
            model = logic.segment(volumeNode, method)
            self.assertGreater(model.GetPolyData().GetNumberOfPoints(), 100)
            with tempfile.TemporaryDirectory() as folder:
                for space in ("LPS", "RAS"):
                    report = logic.exportModel(model, os.path.join(folder, f"result-{space}.stl"), space)
                    self.assertTrue(report["watertight"])
                    back = slicer.util.loadModel(report["path"])
                    self.assertLess(
                        np.abs(meshFromModelNode(back).vertices - meshFromModelNode(model).vertices).max(), 1e-3
                    )
        finally:
            logic.close()
        self.delayDisplay("Segmentation test passed")
