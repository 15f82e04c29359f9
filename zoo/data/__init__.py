"""Face data: readers, alignment, degradations, the crop cache and named protocols.

Everything yields HxWx3 uint8 RGB arrays; a model turns them into its input with its own
`preprocess` (the convention lives in `zoo.backbones.to_input` and each model's config).
May import: numpy, OpenCV, PIL, dlib, `zoo.registry` and `zoo.backbones` (the template); no
model code, and never `train`, `analysis` or `app`.
"""
from .align import (ALIGNERS, DEFAULT_ALIGNER, TEMPLATE_112, AlignedFace, Aligner, Detection, FaceAligner, YuNetAligner,
                    aligner_names, center_crop, make_aligner, similarity_transform, warp_to_template)
from .cache import AlignedImages, CropCache, align_files
from .degrade import BLUR_LEVELS, Degradation, gaussian_blur, low_resolution, parse_degradation
from .errors import DataError, EmptyDatasetError, FormatError, ImageDecodeError, MissingFileError
from .folder import ImageList, read_image_folder
from .images import decode_image, load_image
from .pairs import PairList, read_cfp_pairs, read_lfw_pairs, read_pairs, read_plain_pairs, stratified_folds
from .paths import cache_root, data_root
from .protocols import PROTOCOLS, TEST_PROTOCOLS, facescope_small_train, load_protocol
from .recordio import RecordIODataset, RecordIOReader, RecordIOWriter, write_insightface_rec

__all__ = [
    "ALIGNERS", "DEFAULT_ALIGNER", "TEMPLATE_112", "AlignedFace", "Aligner", "Detection", "FaceAligner",
    "YuNetAligner", "aligner_names", "center_crop", "make_aligner", "similarity_transform", "warp_to_template", "AlignedImages", "CropCache", "align_files", "BLUR_LEVELS",
    "Degradation", "gaussian_blur", "low_resolution", "parse_degradation", "DataError",
    "EmptyDatasetError", "FormatError", "ImageDecodeError", "MissingFileError", "ImageList",
    "read_image_folder", "decode_image", "load_image", "PairList", "read_cfp_pairs", "read_lfw_pairs",
    "read_pairs", "read_plain_pairs", "stratified_folds", "cache_root", "data_root", "PROTOCOLS",
    "TEST_PROTOCOLS", "facescope_small_train", "load_protocol", "RecordIODataset", "RecordIOReader",
    "RecordIOWriter", "write_insightface_rec",
]
