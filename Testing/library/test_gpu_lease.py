"""tools/gpu_lease.sh slim / back: a device call carries the tracked files, so a lease runs on a branch of what
training reads alone, and the checkout comes back as it was."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "gpu_lease.sh"
ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.org",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.org",
}

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=ENV, check=True, capture_output=True, text=True).stdout


def lease(repo: Path, verb: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "tools/gpu_lease.sh", verb], cwd=repo, env=ENV, capture_output=True, text=True)


@pytest.fixture
def repo(tmp_path):
    """A repository laid out as this one: what training reads, and weights and pictures it does not."""
    root = tmp_path / "repo"
    files = {
        "tools/gpu_lease.sh": SCRIPT.read_text(),
        "tools/train_from_arrays.py": "print('train')\n",
        "ImageToMeshLib/imagetomesh/__init__.py": "",
        "Testing/benchmarks/ct_unet_step.py": "",
        "Resources/Splits/openkbp-ct.json": "{}\n",
        "Resources/Models/unet-headneck-ct/model.safetensors": "weights" * 1000,
        "docs/images/typical.png": "picture",
        "README.md": "readme\n",
        ".gitignore": ".gpu/\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "start")
    (root / ".gpu" / "openkbp-ct").mkdir(parents=True)
    (root / ".gpu" / "openkbp-ct" / "dataset.json").write_text("{}\n")
    return root


def test_slim_checks_out_what_training_reads_alone_and_back_restores_the_checkout(repo):
    head = git(repo, "rev-parse", "HEAD").strip()
    done = lease(repo, "slim")
    assert done.returncode == 0, done.stderr
    assert git(repo, "symbolic-ref", "--short", "HEAD").strip() == "gpu-lease"
    assert sorted(git(repo, "ls-files").split()) == [
        ".gitignore",
        "ImageToMeshLib/imagetomesh/__init__.py",
        "Resources/Splits/openkbp-ct.json",
        "Testing/benchmarks/ct_unet_step.py",
        "tools/gpu_lease.sh",
        "tools/train_from_arrays.py",
    ]
    assert not (repo / "Resources" / "Models").exists() and not (repo / "README.md").exists()
    assert (repo / ".gpu" / "openkbp-ct" / "dataset.json").exists()  # ignored: stays, and is carried
    assert git(repo, "rev-parse", "HEAD~1").strip() == head
    assert git(repo, "status", "--porcelain") == ""  # still ignored: nothing untracked travels beside the branch

    done = lease(repo, "back")
    assert done.returncode == 0, done.stderr
    assert git(repo, "symbolic-ref", "--short", "HEAD").strip() == "main"
    assert git(repo, "rev-parse", "HEAD").strip() == head
    assert (repo / "Resources" / "Models" / "unet-headneck-ct" / "model.safetensors").read_text() == "weights" * 1000
    assert git(repo, "status", "--porcelain") == ""
    assert lease(repo, "back").returncode == 2  # nothing recorded to return to


def test_slim_refuses_uncommitted_changes_a_missing_gpu_folder_and_more_than_a_call_carries(repo):
    (repo / "README.md").write_text("changed\n")
    refused = lease(repo, "slim")
    assert refused.returncode == 2 and "uncommitted changes" in refused.stderr
    git(repo, "checkout", "--", "README.md")

    shutil.move(repo / ".gpu", repo / "gpu-aside")
    refused = lease(repo, "slim")
    assert refused.returncode == 2 and "prepare" in refused.stderr
    shutil.move(repo / "gpu-aside", repo / ".gpu")

    with open(repo / ".gpu" / "init.bin", "wb") as big:  # sparse: 64 MiB long, no disk used
        big.truncate(64 * 1024 * 1024)
    refused = lease(repo, "slim")
    assert refused.returncode == 2 and "over a device call's limit" in refused.stderr
    assert git(repo, "symbolic-ref", "--short", "HEAD").strip() == "main"
    assert "gpu-lease" not in git(repo, "branch")
