"""The one place for how results read: markdown tables, protocol order, condition labels.

Cards, the zoo listing, evaluation tables, benchmarks and the app all use these, so a protocol
sits in the same place and a condition has the same name everywhere. Pure Python on purpose:
`import zoo` pulls it in through the model cards.
"""
from __future__ import annotations

from typing import Dict

from .data.protocols import PROTOCOLS


def markdown_table(headers, rows) -> str:
    """The one markdown table writer (cards, benches, zoo listings); ends with a newline."""
    lines = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def protocol_rank(protocol: str) -> int:
    """Where a protocol goes in every listing: LFW View 1, CFP-FF, CFP-FP, LFW View 2, then others."""
    return PROTOCOLS.index(protocol) if protocol in PROTOCOLS else len(PROTOCOLS)


def is_clean(values: Dict) -> bool:
    """A condition (its `degradation` or card entry: kind, amount) that leaves the face as is."""
    return values.get("kind") == "clean" or (values.get("kind") == "blur" and values.get("amount", 0) == 0)


def condition_label(name: str, values: Dict, short: bool = False) -> str:
    """How people read a condition: "clean", "Gaussian blur σ=2 px", "low resolution 28 px"
    (`short`: "clean", "blur σ2", "28 px", for column headers)."""
    kind, amount = values.get("kind"), values.get("amount", 0)
    if is_clean(values):
        return "clean"
    if kind == "blur":
        return f"blur σ{amount:g}" if short else f"Gaussian blur σ={amount:g} px"
    if kind == "lowres":
        return f"{amount:g} px" if short else f"low resolution {amount:g} px"
    return name
