"""``imagetomesh models``: the installed models and their cards."""

from __future__ import annotations

import json

#: What a mesh model's validation metrics measure (:func:`~imagetomesh.training.validation.segmentation_metrics`):
#: its voxel head and its mesh are told apart wherever the card is shown.
MESH_MODEL_METRICS = {
    "val_mesh_dice": "mesh",
    "val_dice": "voxel head",
    "val_chamfer_mm": "network's vertices",
}


def _format_metrics(metrics: dict, prefix: str = "") -> str:
    """``{"a": 0.12345, "mesh": {"b": 1}}`` -> ``"a 0.123, mesh.b 1"`` (nested blocks flattened); a mesh
    model's metrics (those with ``val_mesh_dice``) say what they measure (:data:`MESH_MODEL_METRICS`)."""
    labels = MESH_MODEL_METRICS if "val_mesh_dice" in metrics else {}
    parts = []
    for key, value in metrics.items():
        name = f"{prefix}{key}" + (f" ({labels[key]})" if key in labels else "")
        if isinstance(value, dict):
            parts.append(_format_metrics(value, f"{prefix}{key}."))
        elif isinstance(value, float):
            parts.append(f"{name} {value:.3f}")
        else:
            parts.append(f"{name} {value}")
    return ", ".join(parts)


def cmd_models(args) -> int:
    """List every model with its card; a model whose card cannot be read is listed with the reason."""
    from imagetomesh.compatibility import InputSpec
    from imagetomesh.zoo import list_models

    models = list_models()
    if args.kind:
        models = [m for m in models if (m["kind"] == "dals") == (args.kind == "priors")]
    if not models:
        print("no models installed" if not args.kind else f"no {args.kind} installed")
        return 0
    for entry in models:
        name, folder, card = entry["name"], entry["folder"], entry["card"]
        if args.json:
            print(json.dumps({"name": name, "folder": str(folder), **card}))
            continue
        if "error" in card:
            print(f"{name}\n    unusable  {card['error']}\n    folder    {folder}")
            continue
        print(f"{name}")
        print(f"    kind      {card.get('kind')}")
        if "description" in card:
            print(f"    about     {card['description']}")
        spec = InputSpec.from_card(card)
        if spec is not None:
            field = (
                f", fields of view up to {' x '.join(f'{e:g}' for e in spec.max_extent_mm)} mm"
                if spec.max_extent_mm
                else ""
            )
            layout = card["input"].get("organ_layout")
            if layout:
                field += f"; organs found must lie as in its {layout.get('cases', '?')} training scans"
            print(
                f"    input     {spec.modality} {spec.body_region} ({', '.join(spec.organs)}); {spec.intensity}{field}"
            )
        data = card.get("data", {})
        if data:
            print(f"    data      {data.get('name', '')} ({data.get('licence', 'licence unknown')})")
        metrics = card.get("test_metrics") or card.get("validation_metrics") or {}
        if metrics:
            print(f"    metrics   {_format_metrics(metrics)}")
        print(f"    folder    {folder}")
    return 0


def register(sub) -> None:
    """Add ``models`` to the main parser's sub-parsers ``sub``."""
    p = sub.add_parser("models", help="list the installed models and their cards")
    p.add_argument("--json", action="store_true", help="one JSON card per line")
    p.add_argument(
        "--kind",
        choices=("segmenters", "priors"),
        help="only segmentation models (for 'segment') or only DALS shape priors (for 'fit' and 'refine')",
    )
    p.set_defaults(func=cmd_models)
