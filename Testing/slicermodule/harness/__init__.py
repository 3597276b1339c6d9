"""A 3D Slicer-like environment for the ImageToMesh module without the Slicer application.

Real code wherever it exists outside the application: slicer-core's MRML scene, nodes, module
logics and ``slicer.util``; Slicer's own ``parameterNodeWrapper`` from ``../shared/slicer-python``;
Qt through PySide6 (offscreen) dressed as PythonQt (:mod:`.pythonqt`). Small fakes stand in for
what only the application has: the qMRML/qSlicer/ctk widgets (:mod:`.widgets`), ``slicer.app``,
``slicer.modules`` and ``slicer.ScriptedLoadableModule`` (:mod:`.application`).
"""
