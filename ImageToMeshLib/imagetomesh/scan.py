"""Whole-scan inference for several-organ models: any field of view at the model's spacing, in
bounded memory, and one mask (then one mesh) per organ.

A several-organ model (a card with ``organs``) is fully convolutional: its card's grid gives the
spacing, orientation and intensity window it was trained at and, as ``shape``, the largest block it
is run on at once. A CT is first cropped to the body (:func:`body_crop`); :func:`scan_grid` lays
the model's spacing over the whole image (however large, any direction matrix) on a lattice fixed in patient
space; :func:`windowed_logits` runs the network over it in overlapping windows of at most as many voxels as
the card's shape (:func:`window_plan`), so memory is bounded by the block, not the scan; an ensemble's later U-Nets
read only the box around the organs its first finds (:func:`mean_probabilities`); :func:`organ_masks` turns the
class probabilities into one mask per organ, and :func:`organ_mask_volume` resamples an organ's
probability around it at a finer spacing so its surface is not the scan grid's staircase.
A model with one mesh decoder per organ meshes each organ in a crop of the scan grid centred on its
mask (:func:`box_centre`, :func:`crop_padded`, :func:`crop_to_scan_grid`); training draws the same
crops around the labelled organ.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from imagetomesh.core.cropping import crop_to_box, window_slices
from imagetomesh.core.transforms import GridTransform, grid_to_index, grid_volume, index_to_grid
from imagetomesh.core.volume import Volume
from imagetomesh.organs import Organ
from imagetomesh.preprocessing import CT_WINDOW_HU, GridSpec

#: Scan grids start on a multiple of this many grid steps from LPS (0, 0, 0) and their sizes are multiples of it
#: (the U-Net's 3 poolings).
GRID_MULTIPLE = 8
#: Overlap of neighbouring windows in :func:`windowed_logits`, as a fraction of a window.
WINDOW_OVERLAP = 0.25
#: The smallest window :func:`window_plan` cuts, as a fraction of the block along each axis. Context is not lost
#: there: the head-and-neck U-Nets trained on 48 x 80 x 80 crops, and run in windows of that crop they scored 0.758
#: against one pass's 0.759 (docs/headneck-ct-experiments.md, session 33).
WINDOW_MIN_FRACTION = 0.5
#: Connected pieces of an organ's mask smaller than this fraction of its largest piece are dropped.
MIN_PIECE_FRACTION = 0.1
#: Voxels of context (each way, along each grid axis) around the organs that an ensemble's first U-Net finds, where
#: :func:`mean_probabilities` runs the others (64 mm in-plane and 40 mm along the body on the head-and-neck grid).
ORGAN_BOX_MARGIN = 16


#: Voxels above this (Hounsfield units) are the body (or the table) in a CT; air is about -1000.
BODY_HU = -500.0
#: Margin kept around the body, mm.
BODY_MARGIN_MM = 16.0


def body_crop(volume: Volume) -> Volume:
    """A CT cropped to the box around the body (voxels above :data:`BODY_HU`), grown by :data:`BODY_MARGIN_MM`
    on every side (in whole voxels of each axis: about as many millimetres whatever the image's spacing), with air
    (the CT window's lowest value) where that leaves the image: the air around the patient costs time and holds no
    organ, and the same body gives the same crop whatever the field of view (a body cut by the scan's edge as
    well: the scan's end gets the air margin that a wider scan's has). The whole volume when nothing is above."""
    box = _box_above(np.asarray(volume.array), BODY_HU)
    if box is None:
        return volume
    margins = np.ceil(BODY_MARGIN_MM / np.asarray(volume.spacing, dtype=np.float64)[::-1]).astype(int)  # (k, j, i)
    box = tuple(slice(s.start - int(m), s.stop + int(m)) for s, m in zip(box, margins))
    dtype = volume.array.dtype
    air = CT_WINDOW_HU[0]
    if dtype.kind in "iu" and np.iinfo(dtype).min > air:  # an unsigned array cannot hold HU air: its lowest value
        air = float(np.min(volume.array))
    return crop_to_box(volume, box, fill=air)


def _box_above(array: np.ndarray, threshold: float, chunk_voxels: int = 1 << 24):
    """Tight ``(k, j, i)`` slices around the voxels of ``array`` above ``threshold``, None when there are none;
    compared a slab of about ``chunk_voxels`` at a time (no whole-image mask)."""
    step = max(1, chunk_voxels // max(1, int(np.prod(array.shape[1:]))))
    k_hit, projection = [], np.zeros(array.shape[1:], dtype=bool)
    for start in range(0, array.shape[0], step):
        above = array[start : start + step] > threshold
        k_hit += (start + np.flatnonzero(above.any(axis=(1, 2)))).tolist()
        projection |= above.any(axis=0)
    if not k_hit:
        return None
    j, i = np.flatnonzero(projection.any(axis=1)), np.flatnonzero(projection.any(axis=0))
    return slice(k_hit[0], k_hit[-1] + 1), slice(int(j[0]), int(j[-1]) + 1), slice(int(i[0]), int(i[-1]) + 1)


def scan_grid(volume: Volume, spec: GridSpec, multiple: int = GRID_MULTIPLE) -> GridTransform:
    """The whole-scan grid over ``volume``: ``spec``'s spacing and orientation, its voxel centres on a lattice fixed
    in patient space, ``A n`` for integer ``n (3,)`` (``A`` the grid's axes times its spacing: one point every grid
    step from LPS (0, 0, 0)), from the last ``n`` that is a multiple of ``multiple`` below ``volume``'s extent to
    the first above it along each grid axis (so sizes are multiples of ``multiple``, the U-Net's 3 poolings).

    The grid thus depends on where the body is, not on how its image samples it: a scan, a copy resampled to 1 mm,
    a wider field of view and the same voxels stored in another axis order are read at the same points in patient
    space, with the same pooling cells. A grid centred on each image fell on each at its own sub-voxel placement,
    and the U-Net's organ ends moved with it (docs/headneck-ct-experiments.md, session 38)."""
    direction = spec.direction_matrix(volume)
    axes = direction * np.asarray(spec.spacing, dtype=np.float64)[None, :]  # columns: LPS step of one grid step
    ends = [(-0.5, n - 0.5) for n in volume.size_ijk]  # the image's extent: its voxels' outer faces
    corners = np.array([[i, j, k, 1.0] for i in ends[0] for j in ends[1] for k in ends[2]]) @ volume.index_to_lps.T
    steps = np.linalg.solve(axes, corners[:, :3].T).T  # (8, 3) the corners in grid steps from LPS (0, 0, 0)
    first = np.floor(steps.min(0) / multiple) * multiple
    size_ijk = np.maximum(np.ceil((steps.max(0) - first) / multiple), 1) * multiple
    return GridTransform.of_lattice(axes, axes @ first, size_ijk)


def axis_windows(size: int, window: int, overlap: float, multiple: int) -> tuple[int, ...] | None:
    """The starts of the fewest windows of ``window`` voxels that cover ``size`` along one axis: spread evenly on
    multiples of ``multiple`` (the scan grid's pooling cells stay whole), the last ending at ``size``, neighbours
    sharing at least ``overlap`` of a window; None where aligned starts cannot give that overlap."""
    if window >= size:
        return (0,)
    step = window - int(np.ceil(overlap * window))  # the largest gap between neighbouring starts
    for count in range(2, size // max(step, 1) + 3):
        starts = [int(round((size - window) * j / (count - 1) / multiple)) * multiple for j in range(count - 1)]
        starts.append(size - window)
        if all(b - a <= step for a, b in zip(starts, starts[1:])):
            return tuple(starts)
    return None


def window_plan(
    shape: tuple[int, int, int], block: tuple[int, int, int], overlap: float = WINDOW_OVERLAP
) -> tuple[tuple[int, int, int], list[tuple[int, ...]]]:
    """How :func:`windowed_logits` tiles an image of ``shape`` ``(D, H, W)``: ``(window shape, starts per axis)``.

    Each window holds at most as many voxels as ``block`` (the memory bound; one window when the image does) and is
    at least :data:`WINDOW_MIN_FRACTION` of the block along each axis (its context); its sizes and starts (but
    the last) are multiples of :data:`GRID_MULTIPLE`, or of the block's largest common divisor below it. Of such
    tilings (:func:`axis_windows`) the plan keeps whole slices where it can (it cuts only the first axis, the body
    axis of a CT grid), then computes the fewest voxels, then uses the fewest windows (where none fits the bound,
    as with a block of a few pooling cells, the cheapest). Windows that cut the slices cost Dice: the 20 validation
    scans, each cut into two windows along one axis, scored 0.758 cut along the body axis, 0.754 left from right
    and 0.743 front from back (U-Net + MC; one pass 0.759): an organ that spans the cut, or whose neighbours lie
    across it, is seen in part. The widest scan grid of the head-and-neck data, 152 x 104 x 176 (the shoulders),
    thus runs in 2 windows of 88 x 104 x 176 (3.2 M voxels computed), where windows of the block's size along each
    axis that exceeds it computed 2 of 152 x 104 x 128 (4.0 M) and cut left from right; a taller scan of 200 x 112
    x 176 runs in 2 windows (4.7 M), not 4 (9.0 M)."""
    limit = int(np.prod(block))
    multiple = int(np.gcd.reduce([GRID_MULTIPLE, *block]))  # a block's sizes pass the network's poolings
    axes = []
    for n, b in zip(shape, block):
        least = min(n, -(-int(np.ceil(WINDOW_MIN_FRACTION * b)) // multiple) * multiple)
        options = {(w, axis_windows(n, w, overlap, multiple)) for w in [*range(least, n, multiple), n]}
        axes.append([(w, starts) for w, starts in options if starts is not None])
    best = None
    for tiling in itertools.product(*axes):
        window = tuple(w for w, _ in tiling)
        count = int(np.prod([len(starts) for _, starts in tiling]))
        cut_in_plane = sum(len(starts) > 1 for _, starts in tiling[1:])
        cost = (int(np.prod(window)) > limit, cut_in_plane, count * int(np.prod(window)), count)
        if best is None or cost < best[0]:
            best = (cost, window, [starts for _, starts in tiling])
    return best[1], best[2]


@torch.no_grad()
def windowed_logits(
    net,
    image: torch.Tensor,
    block: tuple[int, int, int],
    overlap: float = WINDOW_OVERLAP,
    features: list | None = None,
) -> torch.Tensor:
    """``net``'s logits ``(C, D, H, W)`` over ``image (1, 1, D, H, W)``, computed in windows of at most as many
    voxels as ``block`` ``(d, h, w)`` (:func:`window_plan`) that overlap by ``overlap`` and are averaged where they
    do (one pass when the image has no more voxels than a block). ``net(x) -> (logits (1, C, ...), ...)``.

    ``features``: a list that receives the decoder's feature maps over the whole image (``net``'s second output,
    its levels ``(1, C_l, ...)`` coarsest first, as a U-Net's), coarsest first, each
    float32 ``(C_l, D / f, H / f, W / f)`` (``f`` the level's pooling factor), averaged where windows overlap as the
    logits are; left empty where the windows do not start on the coarsest level's cells."""
    shape = tuple(image.shape[2:])
    sizes, starts = window_plan(shape, block, overlap)
    if sizes == shape:
        out = net(image)
        if features is not None:
            features.extend(level[0].float() for level in out[1])
        return out[0][0].float()
    total = count = levels = None
    for corner in itertools.product(*starts):
        window = tuple(slice(a, a + n) for a, n in zip(corner, sizes))
        out = net(image[(slice(None), slice(None), *window)])
        logits = out[0][0].float()
        if total is None:
            total = torch.zeros((logits.shape[0], *shape), dtype=torch.float32, device=logits.device)
            count = torch.zeros(shape, dtype=torch.float32, device=logits.device)
            decoder = out[1] if features is not None else []
            factors = [sizes[0] // level.shape[2] for level in decoder]
            if decoder and all(a % max(factors) == 0 for a in itertools.chain(*starts)):
                levels = [  # channels innermost, as the fast U-Net's own levels are
                    torch.zeros((*(n // f for n in shape), level.shape[1]), device=level.device).permute(3, 0, 1, 2)
                    for level, f in zip(decoder, factors)
                ]
        total[(slice(None), *window)] += logits
        count[window] += 1
        if levels is not None:
            for level, part, f in zip(levels, out[1], factors):
                cells = tuple(slice(a // f, (a + n) // f) for a, n in zip(corner, sizes))
                level[(slice(None), *cells)] += part[0].float()
    if levels is not None:  # windows on whole cells: every voxel of a cell counts the cell's windows
        features.extend(level / count[::f, ::f, ::f] for level, f in zip(levels, factors))
    return total / count


@torch.no_grad()
def net_probabilities(
    net,
    image: torch.Tensor,
    block: tuple[int, int, int],
    mirror: tuple[int, list[int]] | None = None,
    features: list | None = None,
) -> torch.Tensor:
    """``net``'s class probabilities ``(C, D, H, W)`` over ``image (1, 1, D, H, W)``: the softmax of its
    :func:`windowed_logits` in blocks of at most ``block``. With ``mirror`` ``(array axis, class order)``, the mean
    of the image's and its mirror's, mirrored back with the classes put in ``class order`` (left and right organs
    traded: :func:`~imagetomesh.organs.mirrored_classes`). ``features``: see :func:`windowed_logits` (the image's
    own, not the mirror's: left empty with ``mirror``)."""
    probabilities = windowed_logits(net, image, block, features=None if mirror else features).softmax(0)
    if mirror is not None:
        axis, classes = mirror
        mirrored = windowed_logits(net, image.flip(axis + 2), block).softmax(0)
        probabilities = (probabilities + mirrored.flip(axis + 1)[classes]) / 2
    return probabilities


@torch.no_grad()
def mean_probabilities(
    nets: list,
    image: torch.Tensor,
    block: tuple[int, int, int],
    mirror: tuple[int, list[int]] | None = None,
    box_margin: int | None = ORGAN_BOX_MARGIN,
    features: list | None = None,
) -> torch.Tensor:
    """The mean of the networks' :func:`net_probabilities` ``(C, D, H, W)`` over ``image (1, 1, D, H, W)``: how
    ``segment`` averages an ensemble's U-Nets, and what the trainings that read its probabilities average.

    With ``box_margin`` (voxels; None: every network over the whole image) the first network finds the organs and
    the others read only :func:`organ_box` of its probabilities: inside the box the mean is all the networks',
    outside it the first's alone (it found no organ there); where the first finds no organ at all, every network
    reads the whole image. The head-and-neck box holds 40-60 % of a scan grid (the table, the shoulders and the air
    around the neck left out), so the wide U-Net of the bundled ensemble runs in about half its time (it trained on
    crops of 64 x 96 x 96 voxels, not on whole scans; validation Dice of all three CT methods within 0.0003 of
    every network over the whole scan: docs/headneck-ct-experiments.md, session 51).

    ``features``: a list that receives the first network's decoder features over the whole image
    (:func:`net_probabilities`)."""
    first = net_probabilities(nets[0], image, block, mirror, features)
    if len(nets) == 1:
        return first
    box = None if box_margin is None else organ_box(first, box_margin)
    if box is None:  # the whole image
        box = (slice(None),) * 3
    inside = (slice(None), *box)
    crop = image[(slice(None), slice(None), *box)]
    mean = first.clone()
    mean[inside] = (first[inside] + sum(net_probabilities(net, crop, block, mirror) for net in nets[1:])) / len(nets)
    return mean


def organ_box(probabilities: torch.Tensor, margin: int, multiple: int = GRID_MULTIPLE) -> tuple[slice, ...] | None:
    """The ``(D, H, W)`` slices of the box around every organ's voxels in class ``probabilities (C, D, H, W)``
    (class 0 the background; each class's voxels as :func:`class_mask` keeps them), grown by ``margin`` voxels
    along each axis, its faces on multiples of ``multiple`` (the scan grid's pooling cells stay whole) and clipped
    to the grid; None where no organ has a voxel."""
    winner = most_probable_class(probabilities)
    organs = [mask for c in range(1, probabilities.shape[0]) if (mask := class_mask(winner, c)) is not None]
    if not organs:
        return None
    nonzero = np.nonzero(np.any(organs, axis=0))
    shape = winner.shape
    lo = [max(int(a.min()) - margin, 0) // multiple * multiple for a in nonzero]
    hi = [min(-(-(int(a.max()) + 1 + margin) // multiple) * multiple, n) for a, n in zip(nonzero, shape)]
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def most_probable_class(probabilities: torch.Tensor) -> np.ndarray:
    """``(D, H, W)`` int64: the index of the most probable class at each voxel of ``probabilities (C, D, H, W)`` (the
    first where several tie), as ``argmax(0)`` gives it. ``max(0)``'s indices: on a CPU 4-7x faster than
    ``argmax(0)``, which took 0.3 s for one head-and-neck scan grid of 8 classes (two threads)."""
    return probabilities.max(0).indices.cpu().numpy()


def organ_masks(probabilities: torch.Tensor, organs: list[Organ]) -> dict[str, np.ndarray | None]:
    """``{organ name: (D, H, W) bool mask or None when the organ was not found}`` from class
    ``probabilities (C, D, H, W)``: the voxels whose most probable class is the organ's, without pieces
    smaller than :data:`MIN_PIECE_FRACTION` of its largest (stray islands elsewhere in the scan)."""
    winner = most_probable_class(probabilities)
    return {organ.name: class_mask(winner, organ.index) for organ in organs}


def class_mask(winner: np.ndarray, index: int) -> np.ndarray | None:
    """The ``(D, H, W)`` bool mask of class ``index`` in the most probable classes ``winner (D, H, W)``, without
    pieces smaller than :data:`MIN_PIECE_FRACTION` of its largest; None where the class has no voxel."""
    pieces, count = ndimage.label(winner == index)
    if count == 0:
        return None
    sizes = np.bincount(pieces.ravel())[1:]
    keep = np.flatnonzero(sizes >= MIN_PIECE_FRACTION * sizes.max()) + 1
    return np.isin(pieces, keep)


def organ_mask_volume(
    probability: torch.Tensor,
    mask: np.ndarray,
    transform: GridTransform,
    upsample: int = 2,
    margin: int = 2,
    level: float = 0.5,
) -> Volume:
    """An organ's mask around it at ``upsample`` times the scan grid's resolution, as an LPS :class:`Volume`.

    ``probability (D, H, W)`` is the organ's class probability on the scan grid whose geometry is
    ``transform``; ``mask (D, H, W)`` its voxels (:func:`organ_masks`). The box around ``mask`` (plus
    ``margin`` voxels) is resampled trilinearly ``upsample`` times finer and kept where the probability
    is at least ``level`` and within one scan voxel of ``mask`` (the mask's pieces only, not a neighbour's).
    At 0.5 and 2x the head-and-neck U-Net's validation meshes score as well as at any level from 0.35 to 0.6 with
    2x or 3x (``Testing/benchmarks/headneck_ct_meshing_sweep.py``; docs/headneck-ct-experiments.md)."""
    nonzero = np.nonzero(mask)
    lo = [max(int(a.min()) - margin, 0) for a in nonzero]
    hi = [min(int(a.max()) + margin + 1, n) for a, n in zip(nonzero, mask.shape)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    crop = probability[box].float()[None, None]
    size = [(b - a - 1) * upsample + 1 for a, b in zip(lo, hi)]
    fine = F.interpolate(crop, size=size, mode="trilinear", align_corners=True)[0, 0].cpu().numpy()
    near = ndimage.binary_dilation(mask[box], iterations=1).astype(np.float32)
    near_fine = F.interpolate(torch.from_numpy(near)[None, None], size=size, mode="nearest")[0, 0].numpy() > 0.5
    volume = grid_volume(np.zeros(mask.shape, np.uint8), transform)
    index_to_lps = volume.index_to_lps
    origin = index_to_lps[:3, :3] @ np.array(lo[::-1], dtype=np.float64) + index_to_lps[:3, 3]
    return Volume(
        ((fine >= level) & near_fine).astype(np.uint8), np.asarray(volume.spacing) / upsample, origin, volume.direction
    )


def box_centre(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    """The centre ``(k, j, i)`` (voxel index, may be half-integer) of the box around the voxels of a
    non-empty ``(D, H, W)`` mask."""
    nonzero = np.nonzero(np.asarray(mask))
    if len(nonzero[0]) == 0:
        raise ValueError("box_centre of an empty mask")
    return np.array([(int(a.min()) + int(a.max())) / 2.0 for a in nonzero])


def crop_start(centre: np.ndarray, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The first voxel ``(k, j, i)`` of the crop of ``shape`` ``(d, h, w)`` centred on ``centre`` ``(k, j, i)``
    (to the nearest voxel; it may lie outside the array: :func:`crop_padded` pads)."""
    middle = grid_to_index(np.zeros((1, 3)), tuple(shape)[::-1])[0][::-1]  # the crop's centre voxel (k, j, i)
    return tuple(int(np.floor(c - m + 0.5)) for c, m in zip(centre, middle))


def densest_crop_start(mask: np.ndarray, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The first voxel ``(k, j, i)`` of the crop of ``shape`` ``(d, h, w)`` that holds the most voxels of the
    non-empty ``(D, H, W)`` ``mask``; of several such crops, the one nearest the crop centred on the mask's box
    (:func:`crop_start` of :func:`box_centre`), which it is whenever the mask fits in the crop. A localiser's
    organ found in scattered pieces (a validation scan's oesophagus: four pieces over 106 slices) then gets the crop
    around most of it, not one centred between the pieces that may hold none of them."""
    mask = np.asarray(mask, dtype=bool)
    centred = np.array(crop_start(box_centre(mask), shape))
    nonzero = np.nonzero(mask)
    lo = np.array([int(a.min()) for a in nonzero])
    hi = np.array([int(a.max()) + 1 for a in nonzero])
    size = np.asarray(shape)
    if np.all(lo >= centred) and np.all(hi <= centred + size):  # the centred crop holds every voxel: no count needed
        return tuple(int(v) for v in centred)
    # counts of every crop overlapping the mask's box, its start from lo - size + 1 to hi - 1: box sums of an
    # integral image of the box padded by the crop on every side
    box = np.pad(mask[tuple(slice(a, b) for a, b in zip(lo, hi))], [(int(n) - 1, int(n) - 1) for n in size])
    integral = np.pad(box.astype(np.int64).cumsum(0).cumsum(1).cumsum(2), [(1, 0)] * 3)
    d, h, w = (int(n) for n in size)
    counts = (
        integral[d:, h:, w:]
        - integral[:-d, h:, w:]
        - integral[d:, :-h, w:]
        - integral[d:, h:, :-w]
        + integral[:-d, :-h, w:]
        + integral[:-d, h:, :-w]
        + integral[d:, :-h, :-w]
        - integral[:-d, :-h, :-w]
    )
    starts = np.argwhere(counts == counts.max()) + lo - size + 1
    return tuple(int(v) for v in starts[np.argmin(np.abs(starts - centred).sum(1))])


def crop_padded(
    array: torch.Tensor, start: tuple[int, int, int], shape: tuple[int, int, int], fill: float
) -> torch.Tensor:
    """The ``shape`` window of ``array (..., D, H, W)`` from ``start`` ``(k, j, i)``, ``fill`` where it lies outside
    (leading dimensions, such as classes, are kept whole)."""
    out = torch.full((*array.shape[:-3], *shape), fill, dtype=array.dtype, device=array.device)
    overlap = window_slices(start, shape, array.shape[-3:])
    if overlap is not None:
        out[(..., *overlap[1])] = array[(..., *overlap[0])]
    return out


def crop_to_scan_grid(
    points: np.ndarray, start: tuple[int, int, int], crop_shape: tuple[int, int, int], scan_shape: tuple[int, int, int]
) -> np.ndarray:
    """``(N, 3)`` grid coordinates (x, y, z) of the crop of ``crop_shape`` ``(d, h, w)`` starting at voxel
    ``start`` ``(k, j, i)`` of the scan grid of ``scan_shape`` -> ``(N, 3)`` grid coordinates of the scan grid."""
    index = grid_to_index(np.asarray(points, dtype=np.float64), tuple(crop_shape)[::-1]) + np.asarray(start[::-1])
    return index_to_grid(index, tuple(scan_shape)[::-1])


def within_slices(points: np.ndarray, mask: np.ndarray, margin: float) -> np.ndarray:
    """``points (N, 3)``, grid coordinates (x, y, z) of the scan grid of the non-empty ``mask (D, H, W)``, with each
    point that lies more than ``margin`` slices beyond the first or the last slice holding the mask's voxels (along
    the slice axis, z: a scan grid's body axis) moved along that axis onto that plane; the rest unchanged."""
    size = tuple(mask.shape)[::-1]
    slices = np.flatnonzero(np.asarray(mask).any((1, 2)))
    index = grid_to_index(np.asarray(points, dtype=np.float64), size)
    low, high = slices[0] - margin, slices[-1] + margin
    beyond = (index[:, 2] < low) | (index[:, 2] > high)
    out = np.array(points, copy=True)
    if beyond.any():
        index[:, 2] = np.clip(index[:, 2], low, high)
        out[beyond, 2] = index_to_grid(index[beyond], size)[:, 2]  # each axis maps on its own: x and y untouched
    return out
