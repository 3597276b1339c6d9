"""nn/grid.py: the torch twins agree with core/transforms.py; no other module writes the grid formula."""

import io
import re
import tokenize
from pathlib import Path

import numpy as np
import pytest
import torch

import imagetomesh
from imagetomesh.core import transforms as core
from imagetomesh.core.volume import Volume
from imagetomesh.nn import grid

SIZES_IJK = [(48, 56, 40), (40, 56, 48), (5, 2, 9), (7, 7, 7), (1, 4, 9)]


def _points(shape, seed, low=-1.5, high=1.5):
    return np.random.default_rng(seed).uniform(low, high, size=shape)


@pytest.mark.parametrize("size_ijk", SIZES_IJK)
@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-12), (torch.float32, 1e-4)])
def test_index_grid_twins_match_numpy(size_ijk, dtype, atol):
    grid_np = _points((200, 3), 0)
    ijk_np = _points((200, 3), 1) * np.array(size_ijk)
    to_index = grid.grid_to_index(torch.tensor(grid_np, dtype=dtype), size_ijk)
    to_grid = grid.index_to_grid(torch.tensor(ijk_np, dtype=dtype), size_ijk)
    assert to_index.dtype == dtype and to_grid.dtype == dtype
    np.testing.assert_allclose(to_index.double().numpy(), core.grid_to_index(grid_np, size_ijk), atol=atol, rtol=0)
    np.testing.assert_allclose(to_grid.double().numpy(), core.index_to_grid(ijk_np, size_ijk), atol=atol, rtol=0)


@pytest.mark.parametrize("size_ijk", [(48, 56, 40), np.array([6, 5, 4]), torch.tensor([6, 5, 4])])
def test_twins_take_any_leading_shape_and_size_type(size_ijk):
    points = torch.rand(2, 7, 5, 3, dtype=torch.float64) * 2 - 1
    back = grid.index_to_grid(grid.grid_to_index(points, size_ijk), size_ijk)
    assert back.shape == points.shape
    torch.testing.assert_close(back, points, atol=1e-12, rtol=0)
    flat = grid.grid_to_index(points.reshape(-1, 3), size_ijk).numpy()
    np.testing.assert_allclose(
        flat, core.grid_to_index(points.reshape(-1, 3).numpy(), np.asarray(size_ijk)), atol=1e-12
    )


def test_twins_are_differentiable():
    size = (48, 56, 40)
    points = torch.rand(6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: grid.grid_to_index(p, size), (points,))
    assert torch.autograd.gradcheck(lambda p: grid.index_to_grid(p, size), (points,))
    transform = core.GridTransform.of_volume(Volume(np.zeros((40, 56, 48)), (0.7, 1.1, 2.0), (3.0, -2.0, 9.0)))
    assert torch.autograd.gradcheck(lambda p: grid.grid_to_lps(p, transform), (points,))


def test_grid_lps_twins_match_grid_transform():
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))
    volume = Volume(np.zeros((40, 56, 48)), spacing=(0.7, 1.3, 2.5), origin=(-100.0, 35.5, 2.25), direction=q)
    transform = core.GridTransform.of_volume(volume)
    grid_np = _points((100, 3), 4)
    lps_np = transform.to_lps(grid_np)
    np.testing.assert_allclose(grid.grid_to_lps(torch.tensor(grid_np), transform).numpy(), lps_np, atol=1e-9)
    np.testing.assert_allclose(grid.lps_to_grid(torch.tensor(lps_np), transform).numpy(), grid_np, atol=1e-9)
    batched = grid.grid_to_lps(torch.tensor(grid_np, dtype=torch.float32).view(4, 25, 3), transform)
    np.testing.assert_allclose(batched.reshape(-1, 3).numpy(), lps_np, atol=1e-3)


@pytest.mark.parametrize("size_ijk", SIZES_IJK[:4])
def test_voxel_size_is_one_index_step(size_ijk):
    ijk = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    g = grid.index_to_grid(ijk, size_ijk)
    torch.testing.assert_close(g[1] - g[0], grid.grid_voxel_size(size_ijk, torch.float64))


def test_isotropic_frame():
    shape = (40, 56, 48)  # (D, H, W)
    scale = grid.isotropic_scale(shape)
    assert scale.dtype == torch.float32 and scale.max() == 1.0
    voxel_iso = scale.double() * grid.grid_voxel_size(shape[::-1], torch.float64)
    torch.testing.assert_close(voxel_iso, torch.full((3,), grid.isotropic_voxel_size(shape), dtype=torch.float64))
    assert grid.isotropic_voxel_size(shape) == pytest.approx(2 / 55)
    # the grid's corners lie at the half extents in voxels times the voxel size
    np.testing.assert_allclose(scale.numpy(), np.array([47, 55, 39]) / 55, rtol=1e-6)


def test_voxel2mesh_keeps_isotropic_scale_importable():
    from imagetomesh.models.voxel2mesh import isotropic_scale

    assert isotropic_scale is grid.isotropic_scale


# --- nobody else writes the grid formula ----------------------------------------------------
LIBRARY = Path(imagetomesh.__file__).resolve().parent
OWNERS = {LIBRARY / "core" / "transforms.py", LIBRARY / "nn" / "grid.py"}
_ONE = r"1(?:\.0*)?\b"
#: ``(size - 1) / 2``, ``(p + 1) * 0.5``; ``2 / (size - 1)``, ``2 * s / (size - 1)``, ``2.0 / max(s - 1, 1)``;
#: ``[w - 1, h - 1] ... / 2``
FORMULA = re.compile(
    rf"[-+]\s*{_ONE}\s*\)\s*(?:/\s*2(?:\.0*)?\b|\*\s*0?\.5\b)"
    rf"|\b2(?:\.0*)?\s*(?:\*\s*[\w.]+\s*)?/\s*[^/\n]{{0,40}}?-\s*{_ONE}"
    rf"|-\s*{_ONE}\s*[\]),][^\n]*\)\s*/\s*2(?:\.0*)?\b"
)


def _code_lines(path: Path):
    """``(line number, code)`` of ``path`` with comments and string literals (docstrings) removed."""
    lines: dict[int, list[str]] = {}
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
    for tok in tokens:
        if (
            tok.type in (tokenize.COMMENT, tokenize.STRING, tokenize.NL, tokenize.NEWLINE)
            or tok.type >= tokenize.N_TOKENS
        ):
            continue
        lines.setdefault(tok.start[0], []).append(tok.string)
    return [(n, " ".join(parts)) for n, parts in sorted(lines.items())]


def formula_sites(paths) -> list[str]:
    return [
        f"{p.relative_to(LIBRARY)}:{n}: {code}" for p in paths for n, code in _code_lines(p) if FORMULA.search(code)
    ]


def test_the_formula_check_finds_rederivations():
    samples = [
        "index = (points + 1.0) * 0.5 * (size - 1.0)",
        "voxel = 2.0 / (size_ijk.to(torch.float32) - 1.0).clamp(min=1.0)",
        "grid = ijk * 2.0 / (size - 1.0) - 1.0",
        "axes = [torch.arange(s) * 2.0 / max(int(s) - 1, 1) - 1.0 for s in shape]",
        "voxel = 2.0 / (max(label.shape) - 1.0)",
        "voxel = 2.0 * scale / (size - 1.0)",
        "half = torch.tensor([w - 1, h - 1, d - 1], dtype=torch.float32) / 2",
        "centre = (volume.size_ijk - 1) / 2.0",
        "a[:3, :3] = np.diag(2.0 / np.maximum(size_ijk - 1, 1))",
        "half = (size - 1.0).clamp(min=1.0) / 2.0",
    ]
    assert all(FORMULA.search(s) for s in samples), [s for s in samples if not FORMULA.search(s)]
    harmless = [
        "x = (2 * torch.rand(m) - 1) * angle",
        "return (k + 1) * share",
        "n = (len(v) + b - 1) // b",
        "w = 2.0 / (4.0 * math.pi)",
        "dice = (2 * inter + 1) / (a + b + 1)",
        "d = float(2 * (m & r).sum() / (m.sum() + r.sum()).clamp(min=1))",
    ]
    assert not any(FORMULA.search(s) for s in harmless)
    for owner in OWNERS:  # the check recognises the one place that does write it
        assert formula_sites([owner]), owner


def test_no_module_outside_the_helpers_writes_the_grid_formula():
    paths = sorted(p for p in LIBRARY.rglob("*.py") if p not in OWNERS)
    assert len(paths) > 40
    assert formula_sites(paths) == []
