"""The input layer (one check before any read) and the output layer's refusal to replace an input."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from imagetomesh.core.mesh import Mesh
from imagetomesh.core.volume import Volume
from imagetomesh.errors import InputError
from imagetomesh.io.atomic import atomic_write
from imagetomesh.io.images import read_image, write_image
from imagetomesh.io.inputs import check_input_path, forget_inputs
from imagetomesh.io.markups import read_points
from imagetomesh.io.meshes import read_mesh, write_mesh

TETRA = Mesh(
    np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], np.float32),
    np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]),
)


@pytest.fixture(autouse=True)
def fresh_registry():
    forget_inputs()
    yield
    forget_inputs()


@pytest.mark.parametrize("reader", [read_image, read_points, read_mesh])
def test_a_pipe_is_refused_at_once_instead_of_read_forever(tmp_path, reader):
    fifo = tmp_path / "points.csv"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(InputError, match="not a regular file"):
        reader(fifo if reader is not read_mesh else fifo.rename(tmp_path / "m.stl"))
    assert time.monotonic() - start < 5


def test_a_device_is_refused():
    with pytest.raises(InputError, match="not a regular file"):
        read_points("/dev/zero")


def test_a_file_name_that_is_not_utf8_is_refused_before_simpleitk_sees_it(tmp_path):
    name = os.fsdecode(bytes(tmp_path) + b"/label-\xff.nii.gz")
    Path(name).write_bytes(b"not read")
    with pytest.raises(InputError, match="not valid UTF-8"):
        read_image(name)


def test_missing_and_folder_inputs(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        check_input_path(tmp_path / "nope.csv", "points file")
    with pytest.raises(InputError, match="is a folder"):
        check_input_path(tmp_path, "points file")
    assert check_input_path(tmp_path, "image", folder_ok=True) == tmp_path


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_file_says_permission_denied(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("1,2,3\n")
    path.chmod(0)
    with pytest.raises(InputError, match="permission denied"):
        read_points(path)


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link", "relative path"])
def test_no_output_replaces_an_input(tmp_path, how, monkeypatch):
    source = write_mesh(TETRA, tmp_path / "m.stl")
    before = source.read_bytes()
    read_mesh(source)
    target = {
        "same path": source,
        "symlink": tmp_path / "link.stl",
        "hard link": tmp_path / "hard.stl",
        "relative path": Path("m.stl"),
    }[how]
    if how == "symlink":
        target.symlink_to(source)
    elif how == "hard link":
        os.link(source, target)
    elif how == "relative path":
        monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="is an input of this command"):
        write_mesh(TETRA.transformed(np.diag([2.0, 2, 2, 1])), target)
    assert source.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_deleted_input_does_not_block_a_new_file_that_reuses_its_inode(tmp_path):
    first = write_mesh(TETRA, tmp_path / "a.stl")
    read_mesh(first)
    first.unlink()
    for n in range(20):  # the file system may hand the inode number to one of these
        write_mesh(TETRA, tmp_path / f"new{n}.stl")


def test_an_output_name_too_long_for_the_temporary_file_is_a_clear_error(tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    with pytest.raises(InputError, match="too long"):
        write_mesh(TETRA, tmp_path / ("m" * (limit - 4) + ".stl"))
    assert list(tmp_path.iterdir()) == []


SIGTERM_DURING_WRITE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from imagetomesh.io.atomic import atomic_write
    with atomic_write(Path(sys.argv[1])) as tmp:
        tmp.write_bytes(b"partial" * 1000)
        print("writing", flush=True)
        time.sleep(30)
""")


def test_sigterm_while_writing_leaves_no_partial_file(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_DURING_WRITE, str(tmp_path / "out.stl")], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "writing"
    assert len(list(tmp_path.iterdir())) == 1  # the hidden temporary file
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


def test_partial_files_are_hidden_from_globs(tmp_path):
    with atomic_write(tmp_path / "mesh.stl") as tmp:
        assert tmp.name.startswith(".") and not list(tmp_path.glob("[!.]*.stl"))
        tmp.write_bytes(b"x")
    assert [p.name for p in tmp_path.glob("*.stl")] == ["mesh.stl"]


def test_image_round_trip_is_not_an_input_conflict(tmp_path):
    """Writing a file first and reading it afterwards is fine; only the reverse is refused."""
    path = write_image(Volume(np.ones((3, 3, 3), np.uint8)), tmp_path / "a.nii.gz")
    read_image(path)
    write_image(Volume(np.ones((3, 3, 3), np.uint8)), tmp_path / "b.nii.gz")
