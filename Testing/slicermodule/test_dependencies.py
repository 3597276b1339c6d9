"""The worker's packages: version checks, what is installed how, and Slicer's own packages left alone."""

import re

import pytest
import tomllib

from harness import application


@pytest.fixture(scope="module")
def deps(itm):
    from ImageToMeshModule import dependencies

    return dependencies


def test_the_module_requires_what_the_library_requires(deps):
    """``ImageToMesh/requirements.txt`` names the library's own ranges (pyproject) for the worker's packages."""
    project = tomllib.loads((application.REPO / "ImageToMeshLib" / "pyproject.toml").read_text(encoding="utf-8"))
    library = {
        re.split(r"[<>=!~ ]", r, maxsplit=1)[0].lower(): r.replace(" ", "") for r in project["project"]["dependencies"]
    }
    for requirement in deps.readRequirements():
        name = re.split(r"[<>=!~ ]", requirement, maxsplit=1)[0].lower()
        assert library[name] == requirement.replace(" ", ""), name
    assert {re.split(r"[<>=!~ ]", r, maxsplit=1)[0] for r in deps.readRequirements()} == {
        "torch",
        "scipy",
        "pymeshlab",
        "safetensors",
        "torch-geometric",
    }


@pytest.mark.parametrize(
    "installed, satisfied", [(None, False), ("1.13.1", False), ("2.1.0", True), ("2.13.0+cpu", True), ("3.0.0", False)]
)
def test_versions_are_checked_against_the_range(deps, installed, satisfied):
    (status,) = deps.dependencyStatus(["torch>=2.1,<3"], versionOf=lambda name: installed)
    assert status.satisfied is satisfied
    assert deps.unsatisfied(["torch>=2.1,<3"], versionOf=lambda name: installed) == ([] if satisfied else [status])


def test_descriptions_name_the_package_the_version_and_the_range(deps):
    statuses = deps.dependencyStatus(["torch>=2.1,<3", "scipy>=1.10"], versionOf={"torch": "1.13.1"}.get)
    assert deps.describeUnsatisfied(statuses) == "torch 1.13.1 (needs <3,>=2.1), scipy (not installed; needs >=1.10)"


def test_the_installed_versions_of_this_python_are_read_from_metadata(deps):
    import importlib.metadata

    (status,) = deps.dependencyStatus(["numpy>=1"])
    assert status.installed == importlib.metadata.version("numpy") and status.satisfied


def test_torch_goes_through_pytorch_utils_the_rest_through_pip_with_slicers_packages_pinned(deps, tmp_path):
    versions = {"torch": None, "scipy": "1.5", "numpy": "1.26.4", "vtk": "9.4.2", "SimpleITK": "2.4.0"}
    steps, pip_calls, constraints = [], [], []

    def pip_install(arguments):
        pip_calls.append(arguments)
        constraints.append(open(re.search(r'--constraint "([^"]+)"', arguments).group(1)).read().split())
        versions["scipy"] = "1.14.1"

    def install_torch(specifier):
        versions["torch"] = "2.13.0"
        return object()

    statuses = deps.unsatisfied(["scipy>=1.10", "torch>=2.1,<3"], versionOf=versions.get)
    deps.installDependencies(
        statuses,
        lambda done, total, text: steps.append((done, total, text)),
        pipInstall=pip_install,
        installTorch=install_torch,
        versionOf=versions.get,
        temporaryFolder=str(tmp_path),
    )
    assert [text for _, _, text in steps] == [
        "Installing torch>=2.1,<3 (1 of 2)...",
        "Installing scipy>=1.10 (2 of 2)...",
        "Checking the installed versions...",
    ]
    assert pip_calls[0].startswith('"scipy>=1.10" --constraint "')
    assert constraints == [["numpy==1.26.4", "vtk==9.4.2", "SimpleITK==2.4.0"]]
    assert list(tmp_path.iterdir()) == []  # the constraints file is removed


def test_without_the_pytorch_extension_the_user_is_told_what_to_install(deps):
    statuses = deps.unsatisfied(["torch>=2.1,<3"], versionOf=lambda name: None)
    with pytest.raises(deps.InstallError, match="install 'PyTorch' from the Extensions Manager"):
        deps.installDependencies(statuses, pipInstall=lambda a: None, installTorch=None, versionOf=lambda name: None)


def test_a_package_still_unusable_after_installing_is_an_error(deps):
    statuses = deps.unsatisfied(["scipy>=1.10"], versionOf=lambda name: "1.5")
    with pytest.raises(deps.InstallError, match=r"still not usable after installing: scipy 1\.5"):
        deps.installDependencies(statuses, pipInstall=lambda a: None, versionOf=lambda name: "1.5")


def test_a_pip_failure_is_an_install_error(deps):
    def fail(arguments):
        raise RuntimeError("No matching distribution found for pymeshlab>=2022.2")

    statuses = deps.unsatisfied(["pymeshlab>=2022.2"], versionOf=lambda name: None)
    with pytest.raises(deps.InstallError, match="pip could not install pymeshlab"):
        deps.installDependencies(statuses, pipInstall=fail, versionOf=lambda name: None)
