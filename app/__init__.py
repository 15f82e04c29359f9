"""FaceScope's Gradio app: `service` does the work (pure Python), `ui` lays it out.

    python app.py                      # the app on the embedded zoo, offline, on the CPU

`service` holds the uploaded photos (`photos`), the models (`models`) and one lock, and hands
each request to its tab's module in `tabs`; `panels` draws each method's own maps, `status`
what a tab's status line says.

May import: `zoo` (models, data, evaluation helpers) and `analysis`; never `train`
(tests/test_layers.py).
"""
