"""``qt`` as 3D Slicer's PythonQt shows it, built on PySide6.

PythonQt differs from PySide6 in ways the module's code relies on, so a test that used plain
PySide6 would pass code that fails in Slicer (or the reverse). This module gives:

- Qt properties as attributes: ``label.text`` reads the property (a ``str``, not a method) and
  ``button.enabled = False`` writes it; ``widget.name`` is the object name.
- String-signature connections: ``widget.connect("clicked(bool)", slot)``; the signature must
  name a signal the object really has, with the same argument types (a misspelt signal, or
  ``valueChanged(int)`` on a ``valueChanged(double)`` signal, raises).
- ``qt.<Class>`` for every PySide6 widget class, as a subclass carrying the two behaviours
  above, and ``qt.QUiLoader`` that builds those classes (and the registered stand-ins for
  Slicer's own widgets) from a ``.ui`` file, including the file's ``<connections>``.
"""

from __future__ import annotations

import re
import sys
import types
import xml.etree.ElementTree as ET

from PySide6 import QtCore, QtGui, QtWidgets
from PySide6.QtUiTools import QUiLoader as _PySideUiLoader

#: C++ argument types of Slicer-style signatures -> what a Python-declared signal shows.
_PYTHON_SIGNAL_TYPES = {"vtkMRMLNode*": "PyObject", "vtkMRMLScene*": "PyObject", "vtkObject*": "PyObject"}


def _normalise(signature: str) -> str:
    name, _, args = signature.partition("(")
    args = args.rstrip(")")
    parts = [a.strip().replace("const ", "").replace("&", "").strip() for a in args.split(",") if a.strip()]
    return f"{name.strip()}({','.join(parts)})"


def _signal_signatures(obj) -> dict:
    """``{name: [normalised signature, ...]}`` of the signals of ``obj``'s meta-object."""
    meta = QtCore.QObject.metaObject(obj)
    found: dict = {}
    for index in range(meta.methodCount()):
        method = meta.method(index)
        if method.methodType() == QtCore.QMetaMethod.MethodType.Signal:
            signature = bytes(method.methodSignature()).decode()
            found.setdefault(signature.split("(")[0], []).append(_normalise(signature))
    return found


class PythonQtObject:
    """Mixin giving a PySide6 ``QObject`` subclass PythonQt's attribute and connection behaviour."""

    def __getattribute__(self, name):
        if name in ("connect", "disconnect"):  # PySide's own lookup would return QObject.connect
            return object.__getattribute__(self, name)
        if name and name[0] != "_":
            meta = QtCore.QObject.metaObject(self)
            index = meta.indexOfProperty(name)
            if index >= 0 and sys._getframe(1).f_code not in _PROPERTY_ACCESSORS:
                # (called from one of the two accessors itself, it is PySide looking up the C++
                # getter by name from inside QObject.property/setProperty: give it the method)
                return QtCore.QObject.property(self, name)
            if name == "name":
                return QtCore.QObject.objectName(self)
        return super().__getattribute__(name)

    def __setattr__(self, name, value):
        if name and name[0] != "_":
            meta = QtCore.QObject.metaObject(self)
            index = meta.indexOfProperty(name)
            if index >= 0:
                if isinstance(value, tuple):  # PythonQt converts any sequence to a QList / QStringList
                    value = list(value)
                if not QtCore.QObject.setProperty(self, name, value):
                    raise TypeError(f"{type(self).__name__}.{name}: cannot set the Qt property to {value!r}")
                return
        super().__setattr__(name, value)

    def connect(self, signature, slot):
        """PythonQt's ``obj.connect("signal(args)", slot)``: checked against the object's real signals."""
        wanted = _normalise(signature)
        name = wanted.split("(")[0]
        signatures = _signal_signatures(self).get(name)
        if not signatures:
            raise AttributeError(f"{type(self).__name__} has no signal '{name}' (connect('{signature}'))")
        python_style = re.sub(
            r"[A-Za-z_][A-Za-z0-9_]*\*", lambda m: _PYTHON_SIGNAL_TYPES.get(m.group(0), m.group(0)), wanted
        )
        if wanted not in signatures and python_style not in signatures:
            raise TypeError(f"{type(self).__name__}.{name} has the signatures {signatures}, not '{signature}'")
        signal = getattr(self, name)
        if len(signatures) > 1:
            args = wanted[len(name) + 1 : -1]
            try:
                signal = signal[args] if args else signal[()]
            except (KeyError, TypeError):
                pass
        signal.connect(slot)
        return True

    def disconnect(self, signature, slot=None):
        name = _normalise(signature).split("(")[0]
        signal = getattr(self, name)
        return signal.disconnect(slot) if slot is not None else signal.disconnect()


_PROPERTY_ACCESSORS = (PythonQtObject.__getattribute__.__code__, PythonQtObject.__setattr__.__code__)

_CLASS_CACHE: dict = {}


def wrap_class(base: type) -> type:
    """The PythonQt-style subclass of a PySide6 ``QObject`` class (one per base class)."""
    if base not in _CLASS_CACHE:
        _CLASS_CACHE[base] = type(base.__name__, (PythonQtObject, base), {"__module__": "qt"})
    return _CLASS_CACHE[base]


#: Stand-ins for Slicer's own widget classes by name (filled by :mod:`.widgets`).
CUSTOM_WIDGETS: dict = {}


class QUiLoader(_PySideUiLoader):
    """Loads a ``.ui`` file into PythonQt-style widgets, then wires its ``<connections>``.

    A ``.ui`` connection whose signal or slot does not exist raises ``RuntimeError`` (Slicer
    only warns, and the widget silently never gets, say, its scene).
    """

    def createWidget(self, className, parent=None, name=""):
        if className in CUSTOM_WIDGETS:
            widget = CUSTOM_WIDGETS[className](parent)
        else:
            base = getattr(QtWidgets, className, None)
            if base is None:
                raise RuntimeError(
                    f"the .ui uses widget class '{className}', which has no stand-in in the test harness"
                )
            widget = wrap_class(base)(parent)
        widget.setObjectName(name)
        return widget

    def load(self, device, parent=None):
        path = QtCore.QFile.fileName(device) if isinstance(device, QtCore.QFile) else str(device)
        with open(path, "rb") as handle:  # Qt's loader would try the connections by C++ signature
            text = re.sub(rb"<connections>.*</connections>", b"", handle.read(), flags=re.S)
        buffer = QtCore.QBuffer()
        buffer.setData(QtCore.QByteArray(text))
        buffer.open(QtCore.QIODevice.OpenModeFlag.ReadOnly)
        widget = super().load(buffer, parent) if parent is not None else super().load(buffer)
        if widget is None:
            raise RuntimeError(f"{path}: {self.errorString()}")
        _wire_connections(widget, path)
        return widget


def _wire_connections(root, path: str) -> None:
    tree = ET.parse(path).getroot()
    for connection in tree.iter("connection"):
        sender_name, receiver_name = connection.findtext("sender"), connection.findtext("receiver")
        signal, slot = connection.findtext("signal"), connection.findtext("slot")
        name = QtCore.QObject.objectName(root)
        sender = root if name == sender_name else QtCore.QObject.findChild(root, QtCore.QObject, sender_name)
        receiver = root if name == receiver_name else QtCore.QObject.findChild(root, QtCore.QObject, receiver_name)
        if sender is None or receiver is None:
            raise RuntimeError(f"{path}: connection between missing widgets {sender_name} -> {receiver_name}")
        slot_name = slot.split("(")[0]
        if not callable(getattr(receiver, slot_name, None)):
            raise RuntimeError(f"{path}: {receiver_name} ({type(receiver).__name__}) has no slot {slot}")
        sender.connect(signal, getattr(receiver, slot_name))


def make_qt_module() -> types.ModuleType:
    """The ``qt`` module: PySide6's classes, QObject classes in their PythonQt-style form."""
    module = types.ModuleType("qt")
    module.__doc__ = __doc__
    for source in (QtCore, QtGui, QtWidgets):
        for name in dir(source):
            if not name.startswith("Q") and name != "Qt":
                continue
            value = getattr(source, name)
            if isinstance(value, type) and issubclass(value, QtCore.QObject) and name not in ("QObject",):
                value = wrap_class(value)
            setattr(module, name, value)
    module.QObject = wrap_class(QtCore.QObject)
    module.QUiLoader = QUiLoader
    module.Signal, module.Property = QtCore.Signal, QtCore.Property
    return module


def install() -> types.ModuleType:
    """Register the ``qt`` module (and a QApplication, offscreen) once per process."""
    if "qt" not in sys.modules or not hasattr(sys.modules["qt"], "QUiLoader"):
        sys.modules["qt"] = make_qt_module()
    if QtWidgets.QApplication.instance() is None:
        QtWidgets.QApplication([])
    return sys.modules["qt"]
