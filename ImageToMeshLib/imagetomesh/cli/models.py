"""``imagetomesh models``: the installed models and their cards."""
from __future__ import annotations

import json


def _format_metrics(metrics: dict, prefix: str = "") -> str:
    """``{"a": 0.12345, "mesh": {"b": 1}}`` -> ``"a 0.123, mesh.b 1"`` (nested blocks flattened)."""
    parts = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            parts.append(_format_metrics(value, f"{prefix}{key}."))
        elif isinstance(value, float):
            parts.append(f"{prefix}{key} {value:.3f}")
        else:
            parts.append(f"{prefix}{key} {value}")
    return ", ".join(parts)


def cmd_models(args) -> int:
    from imagetomesh.weights import read_card
    from imagetomesh.zoo import available_models

    models = available_models()
    if not models:
        print("no models installed")
        return 0
    for name, folder in models.items():
        card = read_card(folder)
        if args.json:
            print(json.dumps({"name": name, "folder": str(folder), **card}))
            continue
        print(f"{name}")
        print(f"    kind      {card.get('kind')}")
        if "description" in card:
            print(f"    about     {card['description']}")
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
    p.set_defaults(func=cmd_models)
