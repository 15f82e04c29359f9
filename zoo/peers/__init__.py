"""Pretrained peers: face recognisers from outside FaceScope, usable wherever a model is.

A peer takes what every zoo model takes (aligned 112x112 crops as (N,3,112,112) floats in
[-1, 1]) and gives L2-normalised embeddings, so evaluation, the app's verification and blur
lab, and the embedding analyses treat it like a checkpoint. It is addressed as `peer:NAME`
(`zoo.load("peer:sface")`, `python -m zoo.evaluate --model peer:dlib`, the app's model list).
It runs outside torch (dlib, onnxruntime), so it has no gradients and no maps of its own.

A peer is one file with one `@PEERS.register(key)` class. Its measured evaluation
(`python -m zoo.evaluate --model peer:KEY --out zoo/peers/results/KEY.json`) is committed in
`results/`; the verdict threshold and the accuracy columns the app shows come from there,
exactly as a checkpoint's come from its config.json.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import nn

from ..backbones import INPUT_SIZE as SIZE, from_input, to_input
from ..registry import Registry
from ..tables import condition_label, markdown_table, protocol_rank

PREFIX = "peer:"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
EMBEDDING_DIM = 128

PEERS: Registry = Registry("peer")


@dataclass(frozen=True)
class PeerConfig:
    """The part of a zoo model's config a peer has: what embedding-only code reads."""

    name: str
    backbone: str
    method: str = "peer"
    embedding_dim: int = EMBEDDING_DIM

    def to_dict(self) -> Dict:
        return asdict(self)


class Peer(nn.Module, ABC):
    """Base of every peer: the zoo's `embed` contract, a card and a config like a checkpoint's.

    Subclasses set `key`, `description`, `trained_on` (what the network saw: a peer is never a
    FaceScope-small model), `licence`, `short` (a table label) and implement `_embed(crops)`
    on (N,112,112,3) uint8 RGB crops. An nn.Module without torch parameters, so `.eval()`,
    `.to()` and the evaluation code's bookkeeping work unchanged.
    """

    key = ""
    method = "peer"
    description = ""
    trained_on = ""
    licence = ""
    short = ""
    thread_safe = True  # whether several threads may embed at once (the occlusion lab's batches)

    @property
    def name(self) -> str:
        return PREFIX + self.key

    @property
    def config(self) -> PeerConfig:
        return PeerConfig(self.name, self.description)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)

    def preprocess(self, crops) -> torch.Tensor:
        """The zoo's input convention: a peer takes what every zoo model takes, and undoes it."""
        return to_input(crops)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        check_faces(self.name, images)
        if len(images) == 0:
            return torch.zeros(0, EMBEDDING_DIM)
        embeddings = torch.as_tensor(np.asarray(self._embed(from_input(images)), dtype=np.float32))
        return nn.functional.normalize(embeddings, dim=1)

    @abstractmethod
    def _embed(self, crops: np.ndarray) -> np.ndarray:
        """(N,112,112,3) uint8 RGB crops -> (N,D) raw embeddings (normalised by `embed`)."""

    def parameter_count(self) -> Optional[int]:
        """None: the network lives outside torch (tables say so rather than print 0)."""
        return None

    @property
    def results(self) -> Optional[Dict]:
        """The committed evaluation (zoo.evaluate's JSON), or None before it is measured."""
        path = RESULTS_DIR / f"{self.key}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def checkpoint_config(self) -> Dict:
        """What a checkpoint's config.json would hold (card.summarize of the committed evaluation,
        threshold included): the app's zoo table and verdicts read it."""
        from ..card import summarize  # the cards' own summary, so peers and checkpoints read alike

        config = {"architecture": {"name": self.name, "method": self.method, "backbone": self.description}}
        if self.results:
            metrics = summarize(self.results)
            metrics["threshold_from"] = f"{metrics.get('threshold_from')} ({RESULTS_DIR.name}/{self.key}.json)"
            config["metrics"] = metrics
            if "threshold" in metrics:
                config["threshold"] = metrics["threshold"]
        return config

    def card(self) -> str:
        """A model card in the shape of a checkpoint's: what it is, what it saw, its licence."""
        lines = [f"# {self.name} (pretrained peer)", "", self.description, "",
                 f"- trained on: {self.trained_on}", f"- licence: {self.licence}",
                 "- not trained by FaceScope, and not identity-disjoint from LFW or CFP: its training data "
                 "likely holds people of both", ""]
        results = self.results
        if results:
            rows = [[protocol, condition_label(condition, metrics["degradation"]),
                     f"{100 * metrics['accuracy']:.2f} ± {100 * metrics['accuracy_std']:.2f}"]
                    for protocol, values in sorted(results.get("protocols", {}).items(), key=lambda i: protocol_rank(i[0]))
                    for condition, metrics in values.get("conditions", {}).items()]
            lines += ["## Measured here", "", markdown_table(["protocol", "condition", "accuracy (%)"], rows),
                      f"Aligner: {results.get('aligner', '?')}. Reproduce: `python -m zoo.evaluate --model "
                          f"{self.name} --out zoo/peers/results/{self.key}.json`."]
        else:
            lines.append(f"Not evaluated yet: `python -m zoo.evaluate --model {self.name} "
                         f"--out zoo/peers/results/{self.key}.json`.")
        return "\n".join(lines) + "\n"


def check_faces(name: str, images) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != (3, SIZE, SIZE) \
            or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name}: expected aligned faces as a float (N, 3, {SIZE}, {SIZE}) tensor "
                         f"scaled to [-1, 1], got {shape}")


def is_peer(name: object) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def peer_names() -> List[str]:
    """Every registered peer as `peer:KEY`."""
    return [PREFIX + key for key in PEERS]


def make_peer(name: str) -> Peer:
    """A peer by `peer:KEY` (or bare KEY); KeyError names the known ones."""
    key = name[len(PREFIX):] if is_peer(name) else name
    if key not in PEERS:
        raise KeyError(f"unknown peer {name!r}; known: {', '.join(peer_names())}")
    return PEERS.get(key)()


from . import dlib, sface  # noqa: E402,F401  # registers the peers
