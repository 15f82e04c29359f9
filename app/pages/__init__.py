"""The page's tabs, one module each: its Gradio layout and the handlers that call `app.service`
(`app.tabs` computes, these modules only lay out and wire). A new tab is one module with
`page(ctx) -> [single-model choosers]` and one entry in `PAGES`; the Zoo tab comes last because
a pull updates every other page's choosers."""
from . import blur_lab, compare, embeddings, error_browser, explain, occlusion, verify
from . import zoo as zoo_page
from .context import PageContext, face_index

PAGES = (verify.page, blur_lab.page, explain.page, occlusion.page, compare.page, error_browser.page, embeddings.page)

__all__ = ["PAGES", "PageContext", "face_index", "zoo_page"]
