"""The ImageToMesh Slicer module's code, one concern per file (the module file only wires it up).

- :mod:`.libraryPath`: makes ``import imagetomesh`` find the library shipped beside the module.
- :mod:`.parameterNode`: the panel's state (Slicer's ``parameterNodeWrapper``).
- :mod:`.sceneAdapters`: MRML nodes <-> the library's types (LPS millimetres), no Qt.
- :mod:`.annotation`: the curves drawn on slice views (creation, planes, projection), no Qt.
- :mod:`.dependencies`: which worker packages are missing or too old, and installing them.
- :mod:`.logic`: :class:`~.logic.ImageToMeshLogic`, everything the module does without the panel.
- :mod:`.widget`: :class:`~.widget.ImageToMeshWidget`, the panel (the only Qt code).
- :mod:`.sampleData`: the bundled sample images in Slicer's Sample Data module.
- :mod:`.selfTest`: :class:`~.selfTest.ImageToMeshTest` for Slicer's own test runner.
"""
