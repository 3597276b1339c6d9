"""ImageToMesh: medical images to watertight surface meshes in 3D Slicer.

This file only declares the module and wires up its parts, which live in ``ImageToMeshModule/``
(see its ``__init__``): the Logic, the Widget, the scene adapters and the install logic are small
files there, each testable alone. The module needs 3D Slicer 5.10 or later (Python 3.12; the
imagetomesh library needs Python 3.10+): in an older Slicer it loads, and its panel and help say
so instead of failing with a traceback. Keep this file valid Python 3.9.
"""

import sys

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleWidget

#: The oldest Python the module runs on, and the Slicer release that ships a Python this new.
MINIMUM_PYTHON = (3, 10)
MINIMUM_SLICER = "5.10"
SUPPORTED = sys.version_info[:2] >= MINIMUM_PYTHON

UNSUPPORTED_MESSAGE = (
    "ImageToMesh needs 3D Slicer {slicer} or later (Python {major}.{minor} or newer); this Slicer runs Python {found}. "
    "Install a newer Slicer from download.slicer.org."
).format(slicer=MINIMUM_SLICER, major=MINIMUM_PYTHON[0], minor=MINIMUM_PYTHON[1], found=sys.version.split()[0])


class ImageToMesh(ScriptedLoadableModule):
    """Module description (title, category, help)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Image To Mesh")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["ImageToMesh developers"]
        self.parent.helpText = _(
            "Turns medical images into watertight surface meshes with learned models "
            "(Voxel2Mesh, Pixel2Mesh-3D, ImplicitMeshNet, NUDF, U-Net + marching cubes), fits the DALS learned "
            "shape prior to closed curves drawn on three slices or to an existing labelmap/segmentation, and "
            "exports meshes to STL/OBJ/PLY in LPS or RAS after a watertightness check. "
            "The work runs in a separate worker process; the panel never freezes."
        )
        if not SUPPORTED:
            self.parent.helpText = UNSUPPORTED_MESSAGE + "\n\n" + self.parent.helpText
        self.parent.acknowledgementText = _(
            "Models trained on the Medical Segmentation Decathlon (CC-BY-SA 4.0) and KiTS19 (CC BY-NC-SA 4.0) data; "
            "see each model card for its data and licence."
        )
        if SUPPORTED:
            slicer.app.connect("startupCompleted()", _registerSampleData)


def _registerSampleData():
    from ImageToMeshModule.sampleData import registerSampleData

    registerSampleData()


if SUPPORTED:
    from ImageToMeshModule.logic import ImageToMeshLogic  # noqa: E402,F401
    from ImageToMeshModule.parameterNode import ImageToMeshParameterNode  # noqa: E402,F401
    from ImageToMeshModule.selfTest import ImageToMeshTest  # noqa: E402,F401
    from ImageToMeshModule.widget import ImageToMeshWidget  # noqa: E402,F401
else:

    class ImageToMeshWidget(ScriptedLoadableModuleWidget):
        """In a Slicer too old for the library: a panel that says what to do."""

        def setup(self):
            ScriptedLoadableModuleWidget.setup(self)
            import qt

            label = qt.QLabel(UNSUPPORTED_MESSAGE)
            label.wordWrap = True
            self.layout.addWidget(label)
            self.layout.addStretch(1)
