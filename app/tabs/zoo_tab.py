"""The Zoo tab: every model with its architecture, threshold and accuracy per test condition, and its card."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from zoo.peers import Peer
from zoo.tables import condition_label, is_clean, protocol_rank

from ..errors import InputError
from ..models import ZooEntry


def zoo_table(entries: Sequence[ZooEntry]) -> Tuple[List[str], List[List]]:
    """(headers, rows): each model's architecture, threshold and accuracy per test condition."""
    columns = metric_columns([e.config.get("metrics") for e in entries])
    headers = ["model", "method", "backbone", "width", "parameters (M)", "threshold"] + \
              [label for _, _, label in columns] + ["source"]
    rows = []
    for entry in entries:
        arch = entry.config.get("architecture", {})
        model = entry.model
        protocols = (entry.config.get("metrics") or {}).get("protocols", {})
        accuracy = [protocols.get(p, {}).get("conditions", {}).get(c, {}).get("accuracy") for p, c, _ in columns]
        rows.append([entry.name, model.method if model else arch.get("method", "?"), arch.get("backbone", "?"),
                     arch.get("width", "-"),
                     millions(model.parameter_count()) if model else "not loaded",
                     round(entry.threshold, 4) if entry.calibrated else f"{entry.threshold:g} (uncalibrated)"]
                    + ["-" if a is None else round(float(a), 4) for a in accuracy]
                    + [entry.source if entry.error is None else f"{entry.source}: {entry.error}"])
    return headers, rows


def card(entries: Sequence[ZooEntry], name: str) -> str:
    """The model card (README.md) of `name` without its YAML front matter."""
    by_name = {e.name: e for e in entries}
    if name not in by_name:
        raise InputError(f"unknown model {name!r}; the zoo has: {', '.join(by_name) or 'nothing'}")
    entry = by_name[name]
    if isinstance(entry.model, Peer):
        return entry.model.card()
    path = entry.folder / "README.md"
    text = path.read_text() if path.is_file() else f"# {name}\n\nNo model card (README.md) in {entry.folder}."
    if text.startswith("---"):
        text = text.split("---", 2)[2].lstrip()
    if entry.error:
        text = f"**Could not be loaded:** {entry.error}\n\n{text}"
    return text


def metric_columns(all_metrics: Sequence[Optional[Dict]]) -> List[Tuple[str, str, str]]:
    """(protocol, condition, label) of every accuracy any card reports, protocols in the usual order."""
    seen: Dict[Tuple[str, str], Tuple[Tuple, str]] = {}
    for metrics in all_metrics:
        for protocol, entry in ((metrics or {}).get("protocols") or {}).items():
            for condition, values in (entry.get("conditions") or {}).items():
                label = f"{protocol} {condition_label(condition, values, short=True)}"
                kind_rank = 0 if is_clean(values) else 1 if values.get("kind") == "blur" else 2
                order = (protocol_rank(protocol), protocol, kind_rank, values.get("amount", 0))
                seen[(protocol, condition)] = (order, label)
    return [(p, c, label) for (p, c), (_, label) in sorted(seen.items(), key=lambda item: item[1][0])]


def millions(count: Optional[int]) -> object:
    return "n/a (not torch)" if count is None else round(count / 1e6, 3)
