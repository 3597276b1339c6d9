"""The weight format: ``model.safetensors`` plus ``card.json`` (never pickles).

Imports torch only when weights are written or read, so cards can be listed without it.

The card holds the model kind and architecture config, the preprocessing grid, training data
and split, metrics, data licence, and the SHA-256 of the weights file, checked on load.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from imagetomesh.errors import InputError
from imagetomesh.io.atomic import atomic_write

WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "card.json"


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(model, folder: str | Path, card: dict) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/card.json`` (with the weights' checksum).

    ``model`` is a ``torch.nn.Module``.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_write(folder / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp))
    card = dict(card, weights=WEIGHTS_NAME, sha256=sha256_of(folder / WEIGHTS_NAME))
    with atomic_write(folder / CARD_NAME) as tmp:
        Path(tmp).write_text(json.dumps(card, indent=2))
    return folder


#: Fields every model card needs, by kind (``None``: any kind not listed); :func:`read_card` checks them.
CARD_FIELDS = {
    "dals": {"kind": str, "config": dict, "mean_latent": list},
    None: {"kind": str, "config": dict},
}
#: What segmenting with a model needs beyond that (its input grid); :func:`imagetomesh.zoo.load_model` checks it.
SEGMENTER_FIELDS = {"grid": dict}


def check_card_fields(card: dict, path: Path, fields: dict) -> None:
    """InputError naming the first of ``fields`` (``{name: type}``) that ``card`` lacks or holds with another type."""
    for name, kind in fields.items():
        if not isinstance(card.get(name), kind):
            problem = "lacks" if name not in card else f"has a {type(card[name]).__name__} as"
            raise InputError(f"{path} {problem} '{name}' (a {kind.__name__} is needed); restore the model card")


def read_card(folder: str | Path) -> dict:
    """The model card of ``folder``, checked: UTF-8 JSON, an object, the fields its kind needs (:data:`CARD_FIELDS`).

    Raises:
        InputError: naming the card and what is wrong with it.
    """
    path = Path(folder) / CARD_NAME
    if not path.is_file():
        raise InputError(f"{folder} holds no {CARD_NAME}; a model folder needs {WEIGHTS_NAME} and {CARD_NAME}")
    try:
        card = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text; restore the model card") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON ({err.msg}); restore the model card") from None
    except RecursionError:
        raise InputError(f"{path} is nested too deeply to be a model card; restore the model card") from None
    if not isinstance(card, dict):
        raise InputError(f"{path} is not a model card (a JSON object with kind, config, ...); restore the model card")
    check_card_fields(card, path, CARD_FIELDS.get(card.get("kind"), CARD_FIELDS[None]))
    return card


#: Parameter renames from the hand-written graph layers to torch-geometric's (``nn/graph.py``),
#: per model kind: ``(old-name pattern, replacement)``, matched at the end of each key.
_GRAPH_RENAMES = (
    (r"(^|\.)self_weight\.weight$", r"\1lin_root.weight"),
    (r"(^|\.)self_weight\.bias$", r"\1lin_rel.bias"),
    (r"(^|\.)neighbour_weight\.weight$", r"\1lin_rel.weight"),
    (r"(^|\.)weights\.(\d+)\.weight$", r"\1lins.\2.weight"),
    (r"(^|\.)weights\.0\.bias$", r"\1bias"),
)
_RENAMES = {"voxel2mesh": _GRAPH_RENAMES[:3], "pixel2mesh3d": _GRAPH_RENAMES[:3], "implicitmeshnet": _GRAPH_RENAMES[3:]}


def upgrade_state(kind: str | None, state: dict) -> dict:
    """Rename the parameters of weights saved before the graph layers moved to torch-geometric
    (``self_weight``/``neighbour_weight`` of the mean graph convolutions, ``weights.k`` of the
    Chebyshev ones) to the current names, for a model of ``kind``; tensors are unchanged and
    current names pass through, so the bundled files stay as they are (and match their SHA-256)."""
    renames = _RENAMES.get(kind, ())
    out = {}
    for key, value in state.items():
        for pattern, new in renames:
            key, hits = re.subn(pattern, new, key)
            if hits:
                break
        out[key] = value
    return out


def load_state(folder: str | Path, card: dict) -> dict:
    """Read the weights named by ``card`` (``{name: torch.Tensor}``) after checking they are
    safetensors with the card's checksum; older parameter names are upgraded
    (:func:`upgrade_state`) by the card's ``kind``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder) / card.get("weights", WEIGHTS_NAME)
    if path.suffix != ".safetensors":
        raise InputError(f"refusing to load {path.name}: only .safetensors weights are accepted")
    if not path.is_file():
        raise InputError(f"model weights {path} are missing; reinstall the model")
    expected = card.get("sha256")
    if expected is None or sha256_of(path) != expected:
        raise InputError(
            f"model weights {path} fail their checksum; the file is damaged or not the one the card describes"
        )
    try:
        return upgrade_state(card.get("kind"), load_file(str(path)))
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"{path} is not a valid safetensors file ({err})") from None


def average_states(states: list[dict]) -> dict:
    """The element-wise mean of same-architecture ``states`` (``{name: tensor}``, same names and shapes): a
    weight average ("model soup") of models fine-tuned from one another. Floating tensors are averaged in
    float64 and stored in their own dtype; integer ones (batch-norm step counters) are taken from the first."""
    import torch

    first = states[0]
    for other in states[1:]:
        if other.keys() != first.keys() or any(other[k].shape != v.shape for k, v in first.items()):
            raise InputError("models to average must have the same architecture (tensor names and shapes)")
    return {
        name: (torch.stack([s[name].double() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v)
        for name, v in first.items()
    }


def build_from_card(folder: str | Path, card: dict, build, required: tuple[str, ...] = ("config",)):
    """Instantiate a module from its card and load its checked weights.

    ``build(card) -> torch.nn.Module`` makes the architecture; :class:`InputError` names what
    went wrong when the card lacks ``required`` entries, cannot be built, or its weights do
    not fit the architecture.
    """
    folder = Path(folder)
    for entry in required:
        if entry not in card:
            raise InputError(f"card {folder / CARD_NAME} lacks '{entry}'; the model cannot be built")
    try:
        module = build(card)
    except (TypeError, ValueError) as err:
        raise InputError(f"model {folder.name} cannot be built from its card ({err})") from None
    state = load_state(folder, card)
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise InputError(f"weights of {folder.name} do not match its card's architecture: {str(err)[:200]}") from None
    return module
