"""The Zoo page: the models with their accuracies and cards, and pulling more from the Hub."""
from __future__ import annotations

from typing import List, Optional

import gradio as gr
import pandas as pd

from ..status import escape
from .context import PageContext


def page(ctx: PageContext, demo: gr.Blocks, choosers: List[gr.Dropdown]) -> None:
    """The Zoo tab, built last: a pull (and every page load) updates `choosers` (the models to compare
    first, then every page's single-model chooser) and the tab's own card chooser."""
    with gr.Tab("Zoo"):
        zoo_table = gr.Dataframe(label="models (accuracy from each model's card; '-': not measured)",
                                 interactive=False, wrap=True)
        refresh_button = gr.Button("Refresh the list")
        with gr.Group():
            gr.Markdown(f"&nbsp;**Pull a model from a repo on {escape(ctx.service.hub_endpoint)} and use it at "
                        "once** (the hub is the server's choice: `python app.py --hub-endpoint URL`)")
            with gr.Row():
                repo_box = gr.Textbox(label="repo id", placeholder="ORG/NAME, e.g. facescope/scan-mobilefacenet.fss-ft")
                revision_box = gr.Textbox(label="revision (optional)", placeholder="branch, tag or commit")
            pull_button = gr.Button("Pull and use", variant="primary")
        pull_status = gr.Markdown()
        entries = [e.name for e in ctx.service.entries()]
        card_choice = gr.Dropdown(entries, value=entries[0] if entries else None, allow_custom_value=True,
                                  label="model card of")
        card_text = gr.Markdown()
    choosers = [*choosers, card_choice]

    def zoo_list(request: gr.Request):
        with ctx.failures.reported(request, "zoo"):
            headers, rows = ctx.service.zoo_table()
        return pd.DataFrame(rows, columns=headers)

    def model_card(model, request: gr.Request):
        if not model:
            return ""
        with ctx.failures.reported(request, "zoo"):
            return ctx.service.card(model)

    def selectors(selected: Optional[str] = None) -> tuple:
        """Updates of every model chooser, after a pull or when a page (re)loads."""
        usable = ctx.service.model_names()
        top = selected or (usable[0] if usable else None)
        singles = [gr.update(choices=usable, value=top) for _ in choosers[1:-1]]  # one model each
        return (gr.update(choices=usable, value=usable), *singles,
                gr.update(choices=[e.name for e in ctx.service.entries()], **({"value": selected} if selected else {})))

    def pull_model(repo_id, revision, request: gr.Request):
        with ctx.failures.reported(request, "zoo"):
            entry = ctx.service.pull(repo_id, revision)
        threshold = (f"threshold {entry.threshold:.4f}" if entry.calibrated else
                     f"uncalibrated threshold {entry.threshold:g}: no evaluation in its config.json")
        status = (f"Pulled **{escape(entry.name)}** ({escape(entry.model.name)}, {threshold}) from "
                  f"{escape(entry.source)}; it is selected in every tab.")
        return (status, zoo_list(request), *selectors(entry.name))

    def refresh(request: gr.Request):
        return (zoo_list(request), *selectors())

    refresh_event = refresh_button.click(zoo_list, None, zoo_table, api_name="zoo_list")
    refresh_event.failure(ctx.failures.shower("zoo", 0), None, pull_status, api_visibility="private")
    card_event = card_choice.change(model_card, card_choice, card_text, api_name="model_card")
    card_event.failure(ctx.failures.shower("zoo", 0), None, pull_status, api_visibility="private")
    pull_event = pull_button.click(pull_model, [repo_box, revision_box],
                                   [pull_status, zoo_table, *choosers], api_name="pull_model")
    pull_event.failure(ctx.failures.shower("zoo", 0), None, pull_status, api_visibility="private")
    demo.load(refresh, None, [zoo_table, *choosers], api_visibility="private")
    demo.load(model_card, card_choice, card_text, api_visibility="private")
