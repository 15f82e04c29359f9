"""FaceScope's Gradio app: `service` does the work (pure Python), `ui` lays it out.

    python app.py                      # the app on the embedded zoo, offline, on the CPU

May import: `zoo` (models, data, evaluation helpers) and `analysis`; never `train`
(tests/test_layers.py).
"""
