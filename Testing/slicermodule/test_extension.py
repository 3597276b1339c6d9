"""The extension as the Extensions Index and a Slicer build see it: metadata, installed files, sample data."""

import re

from harness import application

REPO = application.REPO


def _cmake_value(text: str, name: str) -> str:
    match = re.search(rf'set\({name} "([^"]*)"\)', text)
    assert match, f"{name} is not set"
    return match.group(1)


def test_the_description_is_one_or_two_plain_sentences_without_a_semicolon():
    description = _cmake_value((REPO / "CMakeLists.txt").read_text(encoding="utf-8"), "EXTENSION_DESCRIPTION")
    assert ";" not in description  # CMake would split it into a list and the .s4ext would be cut
    sentences = [s for s in re.split(r"(?<=\.)\s+", description.strip()) if s]
    assert 1 <= len(sentences) <= 2 and len(description) < 400
    assert not re.search(r"[<>*`_\[\]]", description)


def test_the_icon_and_screenshots_come_from_the_homepage_and_exist_in_the_tree():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    homepage = _cmake_value(text, "EXTENSION_HOMEPAGE")
    for name in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        for url in _cmake_value(text, name).split():
            assert url.startswith("${EXTENSION_HOMEPAGE}/raw/main/"), url
            assert (REPO / url.split("/raw/main/", 1)[1]).is_file(), url
    assert homepage.startswith("https://")


def test_a_licence_file_at_the_root():
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0" in text


def test_every_module_file_is_installed():
    listed = set(
        re.findall(r"\$\{MODULE_NAME\}(\S*\.py)", (REPO / "ImageToMesh" / "CMakeLists.txt").read_text(encoding="utf-8"))
    )
    present = {
        "/".join(p.relative_to(REPO / "ImageToMesh").parts)[len("ImageToMesh") :]
        for p in (REPO / "ImageToMesh").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert listed == present


def test_sample_data_is_registered_with_slicers_sample_data_module(itm, scene, monkeypatch):
    import sys
    import types

    registered = []
    fake = types.ModuleType("SampleData")
    fake.SampleDataLogic = types.SimpleNamespace(
        registerCustomSampleDataSource=lambda **kwargs: registered.append(kwargs)
    )
    monkeypatch.setitem(sys.modules, "SampleData", fake)
    import slicer

    slicer.app.connections.clear()
    itm.ImageToMesh(types.SimpleNamespace())  # Slicer constructs the module at startup...
    slicer.app.emit("startupCompleted()")  # ...and registers the samples once it has started
    names = [entry["sampleName"] for entry in registered]
    assert names == ["ImageToMeshHippocampus", "ImageToMeshHeadNeckCT", "ImageToMeshAbdomenCT"]
    for entry in registered:
        assert entry["category"] == "ImageToMesh"
        assert len(entry["uris"]) == len(entry["fileNames"]) == len(entry["nodeNames"]) == len(entry["checksums"])
        for uri, checksum in zip(entry["uris"], entry["checksums"]):
            assert uri.startswith("file://") and checksum.startswith("SHA256:")
    assert registered[0]["loadFileType"] == ["VolumeFile", "SegmentationFile"]
