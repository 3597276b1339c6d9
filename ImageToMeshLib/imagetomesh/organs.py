"""The organs of a several-organ model, as its card lists them, and choosing some of them.

A card's ``organs`` list (written by training, see
:data:`~imagetomesh.training.configs.HEADNECK_CT_ORGANS`) names each organ, its class index in
the model's output (its position + 1), the label value it had in the training labels, a display
colour and a Slicer-style terminology entry. numpy-free: the Slicer module reads it too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from imagetomesh.errors import InputError


@dataclass(frozen=True)
class Organ:
    """One organ of a model: ``name`` (file-name safe, e.g. ``"left_parotid"``), ``index`` (its class in
    the model's output, 1-based), ``label`` (value in the training labels), ``colour`` (r, g, b) 0-255 and
    ``terminology`` (``{"scheme", "code", "meaning", "modifier"?}``)."""

    name: str
    index: int
    label: int
    colour: tuple[int, int, int] = (230, 220, 70)
    terminology: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def title(self) -> str:
        """``"Left parotid"``: the name for people (model node names, messages)."""
        return self.name.replace("_", " ").capitalize()


@dataclass
class OrganMesh:
    """One organ's result of a several-organ segmentation: its :class:`Organ` and its LPS
    :class:`~imagetomesh.core.mesh.Mesh`, or None where the model did not find it."""

    organ: Organ
    mesh: Any = None

    def organ_dict(self) -> dict:
        return asdict(self.organ)

    @classmethod
    def from_dict(cls, organ: dict, mesh=None) -> OrganMesh:
        return cls(Organ(**{**organ, "colour": tuple(organ["colour"])}), mesh)


def organs_of(card: dict) -> list[Organ] | None:
    """The organs a model's ``card`` lists (class ``k`` = ``organs[k - 1]``), or None for a one-object model."""
    entries = card.get("organs")
    if not entries:
        return None
    return [
        Organ(
            str(e["name"]),
            k,
            int(e.get("label", k)),
            tuple(int(c) for c in e.get("colour", (230, 220, 70))),
            dict(e.get("terminology", {})),
        )
        for k, e in enumerate(entries, start=1)
    ]


#: Name prefixes of an organ's left and right instances (``left_parotid`` / ``right_parotid``).
SIDES = ("left_", "right_")


def mirrored_classes(names: list[str]) -> list[int]:
    """The class each class becomes when the body is mirrored left to right, for a model whose organ
    classes ``k = 1..N`` are ``names[k - 1]``: ``[0, ...]`` (background stays), ``left_X`` and ``right_X``
    trade classes, every other organ keeps its own (a permutation that is its own inverse)."""
    index = {name: k for k, name in enumerate(names, start=1)}
    classes = [0]
    for name in names:
        side = next((s for s in SIDES if name.startswith(s)), None)
        partner = None if side is None else SIDES[1 - SIDES.index(side)] + name[len(side) :]
        classes.append(index.get(partner, index[name]))
    return classes


def choose_organs(organs: list[Organ], names: str | None, model: str) -> list[Organ]:
    """The organs named in ``names`` (comma-separated, any case, ``-`` or ``_`` or a space between words),
    in the model's order; all of them when ``names`` is None. An unknown name is an :class:`InputError`
    listing the model's organs."""
    if names is None:
        return list(organs)
    by_name = {o.name: o for o in organs}
    wanted = [n.strip().lower().replace("-", "_").replace(" ", "_") for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in by_name]
    if unknown or not wanted:
        raise InputError(
            f"model {model} has no organ {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(by_name)} (e.g. --organs {organs[-1].name},{organs[0].name})"
        )
    return [o for o in organs if o.name in wanted]
