"""What every page is built with: the service, the failure reporter and the shared inputs on top."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import gradio as gr

from ..service import Service
from ..status import Failures


def face_index(number) -> int:
    """The UI's 1-based face number as the service's 0-based index (empty means the largest)."""
    return 0 if number in (None, "") else int(number) - 1


@dataclass
class PageContext:
    """The page's shared parts. `pair_inputs` are photo A, photo B and their face numbers, in the order
    every pair handler takes them; `model_choice` is the multi-select of models to compare; `names`
    the usable models when the page was built (a pull updates every chooser a page returns)."""

    service: Service
    failures: Failures
    pair_inputs: List[gr.components.Component]
    model_choice: gr.Dropdown
    names: List[str]

    def single_model_chooser(self, label: str = "model", **options) -> gr.Dropdown:
        """A chooser of one model, first model preselected; return it from the page so pulls update it."""
        return gr.Dropdown(self.names, value=self.names[0] if self.names else None, allow_custom_value=True,
                           label=label, **options)
