"""The worker's Python packages: what is missing or too old, and installing it into Slicer's Python.

Versions are read from the installed distributions' metadata (nothing is imported). torch is
installed through the PyTorch extension's ``PyTorchUtils`` (it picks a CUDA or CPU build); the
others with ``pip`` under a constraints file that pins Slicer's own numpy, vtk and SimpleITK, so
an install can never replace them. No Qt here: progress goes to a callback.
"""

from __future__ import annotations

import importlib.metadata
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

#: Packages that ship with Slicer: never installed or upgraded by this module.
SLICER_OWN_PACKAGES = ("numpy", "vtk", "SimpleITK")


def _requirementClass():
    try:
        from packaging.requirements import Requirement
    except ImportError:  # Slicer's Python always has pip, which vendors packaging
        from pip._vendor.packaging.requirements import Requirement
    return Requirement


def requirementsPath() -> str:
    """``ImageToMesh/requirements.txt`` (installed beside the module's resources)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "requirements.txt")


def readRequirements(path: Optional[str] = None) -> list:
    """The requirement strings of a requirements file (comments and blank lines dropped)."""
    with open(path or requirementsPath(), encoding="utf-8") as handle:
        return [line.split("#", 1)[0].strip() for line in handle if line.split("#", 1)[0].strip()]


@dataclass(frozen=True)
class DependencyStatus:
    """One requirement as found in this Python.

    Attributes:
        requirement: the requirement string (``"scipy>=1.10"``).
        name: the distribution name (``"scipy"``).
        installed: the installed version, or None when it is not installed.
    """

    requirement: str
    name: str
    installed: Optional[str]

    @property
    def satisfied(self) -> bool:
        if self.installed is None:
            return False
        specifier = _requirementClass()(self.requirement).specifier
        return specifier.contains(self.installed, prereleases=True)

    def describe(self) -> str:
        """``"scipy (not installed; needs >=1.10)"`` / ``"torch 1.13.1 (needs >=2.1,<3)"``."""
        specifier = str(_requirementClass()(self.requirement).specifier) or "any version"
        if self.installed is None:
            return f"{self.name} (not installed; needs {specifier})"
        return f"{self.name} {self.installed} (needs {specifier})"


def _installedVersion(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def dependencyStatus(
    requirements: Optional[list] = None, versionOf: Optional[Callable[[str], Optional[str]]] = None
) -> list:
    """:class:`DependencyStatus` of every requirement (default: ``requirements.txt``; versions from the metadata)."""
    Requirement = _requirementClass()
    versionOf = versionOf or _installedVersion
    out = []
    for text in requirements if requirements is not None else readRequirements():
        name = Requirement(text).name
        out.append(DependencyStatus(text, name, versionOf(name)))
    return out


def unsatisfied(
    requirements: Optional[list] = None, versionOf: Optional[Callable[[str], Optional[str]]] = None
) -> list:
    """The :class:`DependencyStatus` entries that are missing or of a version outside their range."""
    return [status for status in dependencyStatus(requirements, versionOf) if not status.satisfied]


def describeUnsatisfied(statuses: list) -> str:
    """One sentence naming what is missing or too old, for the panel."""
    return ", ".join(status.describe() for status in statuses)


def slicerConstraints(versionOf: Optional[Callable[[str], Optional[str]]] = None) -> list:
    """``["numpy==1.26.4", ...]``: Slicer's own packages pinned at their installed versions."""
    versionOf = versionOf or _installedVersion
    return [f"{name}=={versionOf(name)}" for name in SLICER_OWN_PACKAGES if versionOf(name)]


class InstallError(RuntimeError):
    """Installing a dependency failed or was not possible; the message says what to do."""


def installDependencies(
    statuses: list,
    progress: Callable[[int, int, str], None] = lambda done, total, text: None,
    pipInstall: Optional[Callable[[str], None]] = None,
    installTorch: Optional[Callable[[str], object]] = None,
    versionOf: Optional[Callable[[str], Optional[str]]] = None,
    temporaryFolder: Optional[str] = None,
) -> None:
    """Install the packages of ``statuses`` (from :func:`unsatisfied`), torch first.

    Args:
        statuses: what to install.
        progress: ``(done, total, message)`` before each step and once at the end.
        pipInstall: ``slicer.util.pip_install`` (takes one argument string); injected for tests.
        installTorch: ``(versionRequirement) -> torch module or None`` (PyTorchUtils); injected for tests.
        versionOf: installed version of a distribution (default: the metadata; checked again after installing).
        temporaryFolder: where the constraints file is written (Slicer's temporary folder).

    Raises:
        InstallError: a step failed, torch's installer is not available (the PyTorch extension is
            missing), or a package is still missing or out of range afterwards.
    """
    if pipInstall is None:
        import slicer

        pipInstall = slicer.util.pip_install
    steps = [s for s in statuses if s.name == "torch"] + [s for s in statuses if s.name != "torch"]
    total = len(steps)
    for done, status in enumerate(steps):
        progress(done, total, f"Installing {status.requirement} ({done + 1} of {total})...")
        if status.name == "torch":
            if installTorch is None:
                raise InstallError(
                    "torch is installed through the PyTorch extension: install 'PyTorch' from the "
                    "Extensions Manager, restart Slicer and try again"
                )
            specifier = str(_requirementClass()(status.requirement).specifier)
            if installTorch(specifier) is None:
                raise InstallError(
                    f"the PyTorch extension did not install torch {specifier}; see its messages, or install "
                    "torch from the PyTorch Utils module"
                )
            continue
        constraints = tempfile.NamedTemporaryFile(
            "w", suffix="-constraints.txt", dir=temporaryFolder, delete=False, encoding="utf-8"
        )
        try:
            with constraints:
                constraints.write("\n".join(slicerConstraints(versionOf)) + "\n")
            pipInstall(f'"{status.requirement}" --constraint "{constraints.name}"')
        except InstallError:
            raise
        except Exception as err:
            raise InstallError(f"pip could not install {status.requirement}: {err}") from err
        finally:
            os.unlink(constraints.name)
    progress(total, total, "Checking the installed versions...")
    still = unsatisfied([s.requirement for s in statuses], versionOf)
    if still:
        raise InstallError(
            f"still not usable after installing: {describeUnsatisfied(still)}; restart Slicer and try again"
        )


def pyTorchInstaller() -> Optional[Callable[[str], object]]:
    """``PyTorchUtils``' installer as ``(versionRequirement) -> torch or None``, or None without the extension."""
    try:
        import PyTorchUtils
    except ImportError:
        return None

    def install(specifier: str):
        return PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=specifier)

    return install
