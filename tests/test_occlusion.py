"""Occlusion sensitivity on real faces: where a trained model's match rests, a hand-made model
whose match rests on one region, the folded inference copy, and a patch policy's own view."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import analysis as A
import zoo
from analysis.occlusion import GREY, LANDMARK_NAMES, inference_copy
from test_arface import NOSE, RIGHT_MOUTH, force_mode, mode_index
from zoo.backbones import to_input

REFERENCE = "mobilefacenet.y1"
POLICY_MODEL = "arface-mobilefacenet.fss-ft"  # the embedded zoo's model with a patch policy


@pytest.fixture(scope="module")
def pair(data_root):
    """Two aligned photos of one person."""
    from zoo.data import load_image, make_aligner

    align = make_aligner()
    person = sorted((data_root / "lfw" / "images" / "Colin_Powell").glob("*.jpg"))
    return tuple(align.align(load_image(p)).image for p in person[:2])


class RegionModel:
    """A hand-made 'model' whose embedding is the pixels of one region of the face, so only
    patches that touch the region can change a similarity."""

    name = "region"
    region = (60, 40, 84, 64)  # x0, y0, x1, y1

    def preprocess(self, crops):
        return to_input(crops)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        x0, y0, x1, y1 = self.region
        return torch.nn.functional.normalize(images[:, :, y0:y1, x0:x1].flatten(1), dim=1)


def overlaps(box, region) -> bool:
    return box[0] < region[2] and region[0] < box[2] and box[1] < region[3] and region[1] < box[3]


def test_occlusion_sensitivity_maps_the_match_onto_the_face(pair):
    """Greying the middle of a face costs its match to another photo of the person more than
    greying the border, for a trained model; the map is the mean drop of the covering patches."""
    first, second = pair
    model = zoo.load(REFERENCE)
    data = A.occlusion_sensitivity(model, first, second, patch=16, stride=8)
    assert data.drops.shape == (13, 13) and data.map.shape == (112, 112)
    assert data.map[40:90, 30:82].mean() > 3 * abs(np.r_[data.map[:10].ravel(), data.map[-10:].ravel()].mean())
    assert data.drops[0, 0] == pytest.approx(data.map[:8, :8].mean(), abs=1e-6)  # only one patch covers a corner
    assert set(data.landmarks) == set(A.landmark_boxes()) and max(data.landmarks.values()) > 0.02
    assert data.policy is None  # a plain model has no patch policy
    with pytest.raises(ValueError, match="stride must be 1 to the patch size"):
        A.occlusion_sensitivity(model, first, second, patch=8, stride=9)


def test_a_model_that_looks_at_one_region_lights_up_only_there(pair):
    """Against itself, face A loses similarity exactly where a patch touches the region the
    model reads, and nowhere else; the map is zero outside the patches that touch it."""
    face = pair[0]
    model = RegionModel()
    data = A.occlusion_sensitivity(model, face, face, patch=16, stride=8)
    corners = range(0, 112 - 16 + 1, 8)
    touching = np.array([[overlaps((x, y, x + 16, y + 16), model.region) for x in corners] for y in corners])
    assert data.similarity == pytest.approx(1.0, abs=1e-6)
    assert np.array_equal(np.abs(data.drops) > 1e-5, touching) and data.drops[touching].min() > 1e-3
    x0, y0, x1, y1 = model.region
    lit = np.zeros((112, 112), bool)
    lit[max(0, y0 - 15):y1 + 15, max(0, x0 - 15):x1 + 15] = True  # pixels of a patch that touches it
    assert np.abs(data.map[~lit]).max() < 1e-5 and data.map[y0:y1, x0:x1].min() > 1e-3
    assert abs(data.landmarks["left mouth corner"]) < 1e-5 and data.landmarks["right eye"] > 1e-3


def test_the_folded_copy_embeds_like_the_model_and_leaves_it_alone(pair):
    model = zoo.load(POLICY_MODEL)
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    folded = inference_copy(model)
    images = model.preprocess(np.stack(pair))
    assert torch.allclose(folded.embed(images), model.embed(images), atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())  # every one follows a conv
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == norms > 0


def test_any_embedding_on_several_threads_gives_the_same_map(pair, tmp_path):
    """The app's runtime (onnxruntime on the model's export) and one thread per core draw the
    map torch draws on one thread, to the runtimes' float tolerance."""
    from zoo.runtime import OnnxEmbedder

    first, second = pair
    model = zoo.load(REFERENCE)
    alone = A.occlusion_sensitivity(model, first, second, workers=1)
    threaded = A.occlusion_sensitivity(model, first, second, workers=2)
    onnx = A.occlusion_sensitivity(model, first, second, embed=OnnxEmbedder(model, tmp_path).embed, workers=2)
    assert np.abs(threaded.drops - alone.drops).max() < 1e-5 and alone.drops.max() > 0.05
    assert np.abs(onnx.drops - alone.drops).max() < 2e-4 and onnx.similarity == pytest.approx(alone.similarity, abs=1e-4)
    assert onnx.landmarks == pytest.approx(alone.landmarks, abs=2e-4)


def cosine(model, face, other) -> float:
    embeddings = model.embed(model.preprocess(np.stack([face, other])))
    return float(embeddings[0] @ embeddings[1])


def greyed(face, boxes):
    out = face.copy()
    for x0, y0, x1, y1 in boxes:
        out[y0:y1, x0:x1] = GREY
    return out


def test_a_patch_policy_shows_its_mode_beside_the_patch_drops(pair):
    """The embedded ARFace model: the mode its policy picks for face A (A.patch_policy's), its
    patches greyed one at a time, and, with its policy made to drop the nose and the right mouth
    corner, those two greyed together; each drop is the similarity lost on a hand-greyed copy."""
    first, second = pair
    model = zoo.load(POLICY_MODEL)
    data = A.occlusion_sensitivity(model, first, second)
    decision = A.patch_policy(model, first)
    assert np.array_equal(data.policy.kept, decision.kept) and np.array_equal(data.policy.boxes, decision.boxes)
    assert data.policy.mode_probability == pytest.approx(decision.mode_probability.max())
    assert (data.policy.mode_drop is None) == bool(decision.kept.all())
    for box, drop in zip(decision.boxes, data.policy.patch_drops):
        assert drop == pytest.approx(data.similarity - cosine(model, greyed(first, [box]), second), abs=1e-4)

    force_mode(model, mode_index({NOSE, RIGHT_MOUTH}))
    forced = A.occlusion_sensitivity(model, first, second).policy
    assert forced.kept.tolist() == [True, True, False, True, False]
    assert forced.dropped_names == [LANDMARK_NAMES[NOSE], LANDMARK_NAMES[RIGHT_MOUTH]]
    similarity = cosine(model, first, second)
    together = greyed(first, [forced.boxes[NOSE], forced.boxes[RIGHT_MOUTH]])
    assert forced.mode_drop == pytest.approx(similarity - cosine(model, together, second), abs=1e-4)
    # The model masks what its mode drops, so greying those patches as well changes almost nothing.
    assert abs(forced.mode_drop) < 0.01 and abs(forced.patch_drops[NOSE]) < 0.01

    figure = A.occlusion_figure(data)
    bars = [trace for trace in figure.data if trace.type == "bar"]
    assert [list(bar.x) for bar in bars[:2]] == [list(LANDMARK_NAMES)] * 2 and list(bars[2].x) == ["its policy's mode"]
