"""FaceScope analyses: the papers' figures, computed for any zoo model.

May import `zoo` (models, data, evaluation helpers) and third-party libraries; never `train`
or `app` (tests/test_layers.py). The app imports this package.

Every analysis is a function returning plain data (a dataclass of numpy arrays, which the
app and the tests use directly) and a function turning that data into a plotly figure:

    from analysis import scale_sweep, scale_maps_figure
    data = scale_sweep(model, face)           # face: aligned (112, 112, 3) uint8 RGB
    scale_maps_figure(data).show()

| analysis | data | figure | models |
| --- | --- | --- | --- |
| learnt-t densities (SCAN Fig. 3) | t_densities(model_t / records_t) | t_density_figure | SCAN |
| scale maps and blur sweep | scale_maps, scale_sweep | scale_maps_figure | SCAN |
| attention | attention (residual_attention, pyramid_masks, patch_policy) | attention_figure | SRANet, HPDA, ARFace |
| Grad-CAM of similarity | gradcam_similarity | gradcam_figure | any |
| occlusion sensitivity of similarity | occlusion_sensitivity | occlusion_figure | any, peers too |
| hard pos./neg. correlation (NPCFace) | records_correlation, model_hard_samples | epochs_figure, hard_samples_figure | any |
| embedding UMAP | embedding_umap | umap_figure | any |
| errors and disagreements (stored per-pair results) | model_errors, model_disagreements, disagreement_counts | disagreement_figure | any, peers too |

A method declares which of the method-specific analyses its models show
(`FaceModel.analyses`); `available_analyses(model)` lists what a model can show, and asking
for anything else raises AnalysisError saying so. `export.save` writes HTML, JSON and PNG; `python -m analysis`
does all of this from the command line. `html_report` writes one self-contained HTML page of faces,
tables, figures and notes (`analysis.html_report`).
"""
from .attention_maps import (PatchPolicy, PyramidMasks, ResidualAttention, attention, attention_figure, patch_policy,
                             patch_policy_figure, pyramid_masks, pyramid_masks_figure, residual_attention,
                             residual_attention_figure)
from .common import AnalysisError, available_analyses
from .correlation import (EpochCorrelation, HardSamples, centre_distances, epochs_figure, hard_samples_figure,
                          histogram_overlap, model_hard_samples, pearson, records_correlation)
from .embeddings import EmbeddingCache, EmbeddingMap, embed_faces, embedding_umap, model_fingerprint, umap_figure
from .error_browser import (ConditionResults, Disagreements, PairResults, RankedPairs, disagreement_counts,
                            disagreement_figure, model_disagreements, model_errors, read_pair_results,
                            stored_pair_results, stored_results_file)
from .export import png_export_status, save, save_all
from .gradcam import GradCamMaps, SimilarityTarget, gradcam_figure, gradcam_similarity
from .html_report import html_report, save_report
from .images import as_face, as_faces, overlay, resize_map
from .occlusion import Occlusion, PolicyDrops, add_landmark_bars, landmark_boxes, occlusion_figure, occlusion_sensitivity
from .scale_map import ScaleMaps, scale_layers, scale_maps, scale_maps_figure, scale_sweep
from .t_density import TDensity, model_t, records_t, reflected_kde, t_densities, t_density_figure

__all__ = [
    "AnalysisError", "Occlusion", "PolicyDrops", "add_landmark_bars", "html_report", "save_report", "landmark_boxes", "occlusion_figure", "occlusion_sensitivity", "EmbeddingCache", "EmbeddingMap", "EpochCorrelation", "GradCamMaps", "HardSamples",
    "PatchPolicy", "PyramidMasks", "ResidualAttention", "ScaleMaps", "SimilarityTarget", "TDensity", "as_face",
    "as_faces", "attention", "attention_figure", "available_analyses", "centre_distances", "embed_faces",
    "embedding_umap", "epochs_figure", "gradcam_figure", "gradcam_similarity", "hard_samples_figure",
    "histogram_overlap", "model_fingerprint", "model_hard_samples", "model_t", "overlay", "patch_policy",
    "patch_policy_figure", "pearson", "png_export_status", "pyramid_masks", "pyramid_masks_figure",
    "records_correlation", "records_t", "reflected_kde", "residual_attention", "residual_attention_figure",
    "resize_map", "save", "save_all", "scale_layers", "scale_maps", "scale_maps_figure", "scale_sweep",
    "t_densities", "t_density_figure", "umap_figure",
    "ConditionResults", "Disagreements", "PairResults", "RankedPairs", "disagreement_counts", "disagreement_figure",
    "model_disagreements", "model_errors", "read_pair_results", "stored_pair_results", "stored_results_file",
]
