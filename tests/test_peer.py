"""The dlib peer: zoo-shaped embeddings, dlib's own framing, and real separation on LFW View 1.

The peer is only worth a row in the benchmark table if (a) the fixed 112 -> 150 warp gives
dlib what its own pipeline would and (b) it sees exactly the pixels the zoo models see;
both are checked here on real faces, not on noise.
"""
import numpy as np
import pytest
import torch

import zoo
from faces import lfw_faces, lfw_paths
from train.data import Degradation, load_image, load_protocol
from train.data.align import model_files
from train.evaluate import evaluate_protocol, to_tensor
from train.peer import CHIP_PADDING, CHIP_POINTS, CHIP_SIZE, PEERS, DlibPeer, measure_chip_points, to_uint8


@pytest.fixture(scope="module")
def peer():
    return DlibPeer().eval()


def test_embeddings_are_unit_128d_and_bad_input_is_refused(peer):
    faces = lfw_faces(4)
    embeddings = peer.embed(faces)
    assert embeddings.shape == (4, 128) and embeddings.dtype == torch.float32
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.equal(peer(faces), embeddings)  # deterministic, forward == embed
    assert peer.embed(faces[:0]).shape == (0, 128)
    assert PEERS["dlib-resnet"] is DlibPeer and "million" in peer.trained_on
    for bad in (torch.zeros(2, 3, 150, 150), (faces * 128 + 127.5).to(torch.uint8), faces[0]):
        with pytest.raises(ValueError, match="aligned faces"):
            peer.embed(bad)


def test_uint8_round_trip_is_exact():
    crops = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    assert np.array_equal(to_uint8(to_tensor(crops)), crops)


def test_fixed_warp_reproduces_dlibs_own_chips(peer, face_aligner):
    """Same photo through FaceScope's crop + fixed warp and through dlib's own pipeline
    (HOG, 68 points, get_face_chip): the frame matches and so do the embeddings."""
    import dlib

    images = [load_image(p) for p in lfw_paths(6, seed=1)]
    measured = measure_chip_points(images)
    assert len(measured) == 6
    assert np.abs(measured.mean(0) - CHIP_POINTS).max() < 4.0  # pixels of the 150 px chip

    ours = peer.embed(to_tensor(np.stack([face_aligner.align(i).image for i in images]))).numpy()
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(model_files()["landmarks68"]))
    native = []
    for image in images:
        shape = predictor(image, max(detector(image, 1), key=lambda r: r.area()))
        vector = np.asarray(peer._net.compute_face_descriptor(dlib.get_face_chip(image, shape, CHIP_SIZE, CHIP_PADDING)))
        native.append(vector / np.linalg.norm(vector))
    similarity = ours @ np.array(native).T
    same_photo = np.diag(similarity)
    assert same_photo.min() > 0.97
    assert same_photo.min() > similarity[~np.eye(6, dtype=bool)].max()  # closer than any other person


def test_separates_people_on_lfw_view1_and_sees_the_zoo_models_pixels(crop_cache, data_root):
    """40 real test pairs through train.evaluate's own protocol code, clean and blurred."""
    pairs = load_protocol("lfw-view1", data_root).subset(40)
    conditions = [Degradation("blur0", "blur", 0.0), Degradation("blur4", "blur", 4.0)]

    seen = {"peer": [], "zoo": []}
    recording_peer = DlibPeer()
    peer_embed = recording_peer.embed
    recording_peer.embed = lambda images: seen["peer"].append(images.clone()) or peer_embed(images)
    torch.manual_seed(0)
    zoo_model = zoo.build("ir18", width=0.25).eval()
    zoo_embed = zoo_model.embed
    zoo_model.embed = lambda images: seen["zoo"].append(images.clone()) or zoo_embed(images)

    result = evaluate_protocol(recording_peer, pairs, conditions, crop_cache, progress=False)
    evaluate_protocol(zoo_model, pairs, conditions, crop_cache, progress=False)

    assert result["pairs_skipped"] == 0
    clean, blurred = result["conditions"]["blur0"], result["conditions"]["blur4"]
    assert clean["pairs"] == 40 and clean["accuracy"] >= 0.9 and clean["auc"] >= 0.95  # dlib: 99.38% on LFW
    assert blurred["fold_thresholds"] != clean["fold_thresholds"]  # the blur reached the peer
    assert len(seen["peer"]) == len(seen["zoo"]) >= 2  # same batches, every condition
    for peer_input, zoo_input in zip(seen["peer"], seen["zoo"]):
        assert torch.equal(peer_input, zoo_input)  # identical degraded crops for peer and zoo model
