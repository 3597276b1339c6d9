"""Threads by kind of work: one decision, overridable by --threads and IMAGETOMESH_THREADS."""

import pytest
import torch

from imagetomesh import threads
from imagetomesh.errors import InputError


def test_small_op_work_uses_one_thread_and_convolutions_the_cores(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    assert threads.threads_for("graph") == 1 and threads.threads_for("fit") == 1
    assert threads.threads_for("conv") == threads.MAX_CONV_THREADS
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    assert threads.threads_for("conv") == 2
    assert threads.work_for_model("voxel2mesh") == "graph" and threads.work_for_model("unet") == "conv"
    assert threads.work_for_model("nudf") == "conv" and threads.work_for_model("implicitmeshnet") == "graph"
    with pytest.raises(ValueError):
        threads.threads_for("gpu")


def test_the_option_beats_the_environment_which_beats_the_default(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.threads_for("graph") == 3 and threads.threads_for("graph", requested=2) == 2
    assert threads.threads_for("conv", requested=64) == 8  # never more than the cores
    for bad in ("zero", "0", "-2"):
        monkeypatch.setenv(threads.ENV, bad)
        with pytest.raises(InputError, match=threads.ENV):
            threads.threads_for("conv")


def test_configure_sets_torch_and_the_runtimes_the_user_did_not_set(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # the user's choice stays
    before = torch.get_num_threads()
    try:
        assert threads.configure("graph") == 1
        assert torch.get_num_threads() == 1
        import os

        assert os.environ["MKL_NUM_THREADS"] == "1" and os.environ["OMP_NUM_THREADS"] == "7"
    finally:
        torch.set_num_threads(before)
