"""What training records each epoch for the analyses (analysis/ reads records.jsonl).

- the method's own records (`FaceModel.epoch_records`), e.g. SCAN's `scan_t`: every SAC
  layer's learnt t (the paper's Fig. 3 densities over epochs).
- `margins`: NPCFace's Fig. 3/5/6 data, for every head: for
  mis-classified samples, the distance (1 - cos) to the own class centre and to the nearest
  other centre; histograms of the positive cosine of mis- vs well-classified samples.
"""
from __future__ import annotations

from typing import Any, Dict, List

import torch

from zoo import FaceModel

COSINE_BINS = torch.linspace(-1, 1, 41)
MAX_PAIRS_PER_EPOCH = 2000


class EpochRecorders:
    def __init__(self, model: FaceModel):
        self.model = model
        self._reset()

    def _reset(self) -> None:
        self.pairs: List[torch.Tensor] = []
        self.pair_count = 0
        self.mis_hist = torch.zeros(len(COSINE_BINS) - 1)
        self.well_hist = torch.zeros(len(COSINE_BINS) - 1)

    @torch.no_grad()
    def observe(self, own: torch.Tensor, others: torch.Tensor) -> None:
        """A batch's cosines to the own and to the nearest other class centre (`own_and_nearest`)."""
        mis = others > own
        self.mis_hist += torch.histogram(own[mis].cpu(), COSINE_BINS).hist
        self.well_hist += torch.histogram(own[~mis].cpu(), COSINE_BINS).hist
        if self.pair_count < MAX_PAIRS_PER_EPOCH and mis.any():
            pairs = torch.stack([1 - own[mis], 1 - others[mis]], dim=1).cpu()[: MAX_PAIRS_PER_EPOCH - self.pair_count]
            self.pairs.append(pairs)
            self.pair_count += len(pairs)

    def flush(self) -> Dict[str, Any]:
        record: Dict[str, Any] = self.model.epoch_records()
        pairs = torch.cat(self.pairs) if self.pairs else torch.zeros(0, 2)
        record["margins"] = {
            "bins": COSINE_BINS.tolist(),
            "misclassified_positive_cos_hist": self.mis_hist.tolist(),
            "well_classified_positive_cos_hist": self.well_hist.tolist(),
            "misclassified_distance_own_vs_nearest": [[round(a, 5), round(b, 5)] for a, b in pairs.tolist()],
        }
        self._reset()
        return record
