"""``imagetomesh models`` and model cards: one bad card never hides the others; priors are not segmenters."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from imagetomesh.cli import main
from imagetomesh.errors import InputError
from imagetomesh.weights import read_card

REPO = Path(__file__).resolve().parents[2]
IMAGE = REPO / "Resources" / "SampleData" / "hippocampus" / "hippocampus_024.nii.gz"

BAD_CARDS = {
    "not-utf8": (b"\xff\xfe{}", "not UTF-8 text"),
    "a-list": (b"[1, 2]", "is not a model card"),
    "no-config": (json.dumps({"kind": "unet", "grid": {}}).encode(), "lacks 'config'"),
    "not-json": (b"{kind: unet", "not valid JSON"),
    "deep": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    "prior-without-latent": (json.dumps({"kind": "dals", "config": {}, "sha256": "x"}).encode(), "lacks 'mean_latent'"),
}


@pytest.fixture
def bad_models(tmp_path, monkeypatch):
    for name, (data, _) in BAD_CARDS.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "card.json").write_bytes(data)
    monkeypatch.setenv("IMAGETOMESH_MODEL_PATH", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("name", sorted(BAD_CARDS))
def test_read_card_names_what_is_wrong(bad_models, name):
    with pytest.raises(InputError, match=BAD_CARDS[name][1]):
        read_card(bad_models / name)


def test_models_lists_the_good_ones_beside_the_bad_ones(bad_models, capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name, (_, problem) in BAD_CARDS.items():
        assert f"{name}\n    unusable  " in out and problem in out
    assert "unet-hippocampus\n    kind      unet" in out and "dals-kidney" in out


def test_models_can_list_priors_or_segmenters_alone(capsys):
    main(["models", "--kind", "priors"])
    names = [line for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")]
    assert {"dals-hippocampus", "dals-kidney"} <= set(names) and all(n.startswith("dals-") for n in names)
    main(["models", "--kind", "segmenters"])
    names = [line for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")]
    assert "unet-hippocampus" in names and not any(n.startswith("dals") for n in names)


def test_segment_needs_the_cards_grid(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "gridless"
    folder.mkdir()
    (folder / "card.json").write_text(json.dumps({"kind": "unet", "config": {}, "sha256": "0"}))
    code = main(["segment", str(IMAGE), "--model", str(folder), "-o", str(tmp_path / "k.stl")])
    assert code == 2 and "lacks 'grid'" in capsys.readouterr().err


def test_segment_with_a_prior_says_what_to_use_instead(tmp_path, capsys):
    code = main(["segment", str(IMAGE), "--model", "dals-kidney", "-o", str(tmp_path / "k.stl")])
    err = capsys.readouterr().err
    assert code == 2 and "is a DALS shape prior" in err and "imagetomesh refine --prior dals-kidney" in err
    assert list(tmp_path.iterdir()) == []


def test_a_closed_pipe_ends_the_listing_quietly():
    shell = f"{sys.executable} -m imagetomesh.cli models --json | head -c 10"
    run = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert "Traceback" not in run.stderr and "BrokenPipeError" not in run.stderr
