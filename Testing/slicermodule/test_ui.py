"""Smoke test of Resources/UI/ImageToMesh.ui with PySide6 (offscreen): structure, not behaviour.

Every widget the Widget code reaches through ``self.ui.<name>`` exists, parameter-node bindings
(``SlicerParameterName``) name real parameters with widgets their GUI connectors accept, and
every MRML widget receives the scene.
"""

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UI_FILE = REPO / "ImageToMesh" / "Resources" / "UI" / "ImageToMesh.ui"
WIDGET_FILE = REPO / "ImageToMesh" / "ImageToMeshModule" / "widget.py"
ICON = REPO / "ImageToMesh" / "Resources" / "Icons" / "ImageToMesh.png"

#: Parameters kept in sync by the Widget's code rather than a GUI connector (their choices are
#: only known at run time).
MANUAL_PARAMETERS = {"method", "prior", "refinePrior", "refineSegmentId"}


def _xml_widgets():
    root = ET.parse(UI_FILE).getroot()
    widgets = {}
    for widget in root.iter("widget"):
        name = widget.get("name")
        properties = {}
        for prop in widget.findall("property"):
            value = prop[0]
            if value.tag == "stringlist":
                properties[prop.get("name")] = [s.text for s in value]
            else:
                properties[prop.get("name")] = value.text
        widgets[name] = (widget.get("class"), properties)
    return root, widgets


def test_widgets_used_by_the_code_exist_in_the_ui_file():
    _, widgets = _xml_widgets()
    used = set(re.findall(r"self\.ui\.([A-Za-z_][A-Za-z0-9_]*)", WIDGET_FILE.read_text(encoding="utf-8")))
    assert used, "the Widget should reach its widgets through self.ui"
    missing = sorted(used - set(widgets))
    assert not missing, f"widgets used in widget.py but absent from the .ui: {missing}"


def test_parameter_bindings_match_the_parameter_node(itm):
    _, widgets = _xml_widgets()
    bound = {
        props["SlicerParameterName"]: (name, cls, props)
        for name, (cls, props) in widgets.items()
        if "SlicerParameterName" in props
    }
    parameters = itm.ImageToMeshParameterNode.allParameters
    unknown = sorted(set(bound) - set(parameters))
    assert not unknown, f"SlicerParameterName values that are not parameters: {unknown}"
    unbound = sorted(set(parameters) - set(bound) - MANUAL_PARAMETERS)
    assert not unbound, f"parameters without a widget: {unbound}"
    # whether each widget can represent its parameter is checked by Slicer's own wrapper when the
    # panel opens (test_widget.py): connectGui raises for a widget type it has no connector for


def test_mrml_widgets_receive_the_scene():
    root, widgets = _xml_widgets()
    mrml = {name for name, (cls, _) in widgets.items() if cls.startswith("qMRML") and cls != "qMRMLWidget"}
    connected = {
        c.findtext("receiver")
        for c in root.iter("connection")
        if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    assert mrml and mrml <= connected, f"not given the scene: {sorted(mrml - connected)}"


def test_ui_loads_with_qt_offscreen():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    QtWidgets = pytest.importorskip("PySide6.QtWidgets")
    QtCore = pytest.importorskip("PySide6.QtCore")
    QtUiTools = pytest.importorskip("PySide6.QtUiTools")
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    loader = QtUiTools.QUiLoader()
    ui_file = QtCore.QFile(str(UI_FILE))
    assert ui_file.open(QtCore.QIODevice.ReadOnly)
    try:
        widget = loader.load(ui_file)
    finally:
        ui_file.close()
    assert widget is not None, loader.errorString()
    _, widgets = _xml_widgets()
    used = set(re.findall(r"self\.ui\.([A-Za-z_][A-Za-z0-9_]*)", WIDGET_FILE.read_text(encoding="utf-8")))
    for name in used:
        assert widget.findChild(QtCore.QObject, name) is not None, f"{name} missing after loading the .ui"
    for name, (_, props) in widgets.items():
        if "SlicerParameterName" in props:
            child = widget.findChild(QtCore.QObject, name)
            assert child.property("SlicerParameterName") == props["SlicerParameterName"]
    assert widget.findChild(QtWidgets.QPushButton, "applyButton").text() == "Apply"
    widget.deleteLater()
    app.processEvents()


def test_icon_is_a_128_pixel_png():
    data = ICON.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (128, 128)
