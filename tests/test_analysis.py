"""Analyses on real zoo models and real LFW faces: what each figure must show, and that it renders.

Models come from `zoo_model(method)`: the plain model is the embedded zoo's reference,
`mobilefacenet.y1` (InsightFace's MobileFaceNet, 128-d embeddings; it stays in the zoo for
good), and each method is its registered MobileFaceNet architecture at width 0.25 with 128-d
embeddings, like the zoo's fine-tuned models, after a few SGD steps on real faces (so t,
attention and BatchNorm statistics have left their initial values); the fine-tuned
checkpoints themselves are never needed. Assertions hold for any weights: shapes, ranges,
exact identities of the maths, never what only good training shows. Every figure is written
as PNG (plotly + kaleido + Chromium), HTML and JSON.
"""
import json

import numpy as np
import pytest
import torch

import analysis as A
from analysis import export
from analysis.__main__ import main as cli
import zoo
from faces import DATA_ROOT, LFW_IMAGES, lfw_faces
from PIL import Image

REFERENCE = "mobilefacenet.y1"  # the embedded zoo's imported reference: a real trained checkpoint
BUILD = {"scan": "scan-mobilefacenet", "sranet": "sranet-mobilefacenet", "arface": "arface-mobilefacenet",
         "hpda": "hpda-mobilefacenet"}
SMALL = {"width": 0.25, "embedding_dim": 128}  # the zoo's embedding size, at test cost
_MODELS = {}


def _trained_build(method, faces, steps=2):
    torch.manual_seed(0)
    model = zoo.build(BUILD[method], **SMALL).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(steps):
        loss = -model(faces).std() + sum(model.auxiliary_losses().values(), torch.zeros(()))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@pytest.fixture(scope="session")
def zoo_model():
    """zoo_model(method): mobilefacenet.y1 for "plain", else a briefly trained small build of `method`."""
    train_faces = lfw_faces(2, seed=5)

    def get(method):
        if method not in _MODELS:
            _MODELS[method] = zoo.load(REFERENCE) if method == "plain" else _trained_build(method, train_faces)
        return _MODELS[method]

    return get


@pytest.fixture(scope="module")
def faces():
    return lfw_faces(3, seed=2)


@pytest.fixture(scope="module")
def face(faces):
    return A.as_face(faces[0])


@pytest.fixture(scope="session")
def png_export():
    available, reason = export.png_export_status()
    if not available:
        pytest.fail(reason)
    with export.image_server():
        yield


@pytest.fixture
def renders(png_export, tmp_path):
    """renders(figure, data): writes PNG, HTML and JSON and checks each file is what it claims."""

    def check(figure, data=None, name="figure"):
        files = export.save(tmp_path, name, figure, data, png=True)
        png = files["png"].read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(files["png"]) as image:
            assert image.size == (figure.layout.width, figure.layout.height)
        assert "plotly.min.js" in files["html"].read_text()[:20000]
        assert (tmp_path / "plotly.min.js").is_file()
        if data is not None:
            json.loads(files["json"].read_text())
        json.loads(figure.to_json())
        return files

    return check


def lfw_labelled(identities=12, per_identity=5):
    """`identities` LFW people with at least `per_identity` photos, that many each, resized like faces.py."""
    names = [line.split("\t")[0] for line in (DATA_ROOT / "lfw" / "lfw-names.txt").read_text().splitlines()
             if int(line.split("\t")[1]) >= per_identity][:identities]
    paths = [p for n in names for p in sorted((LFW_IMAGES / n).glob("*.jpg"))[:per_identity]]
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((112, 112), Image.BILINEAR)) for p in paths])
    return images, np.repeat(np.arange(len(names)), per_identity), names, paths


def write_records(path, epochs):
    path.write_text("".join(json.dumps({"epoch": e, "step": 10 * e, **record}) + "\n" for e, record in epochs))
    return path


def margins(pairs, mis_hist, well_hist):
    bins = np.linspace(-1, 1, len(mis_hist) + 1).tolist()
    return {"margins": {"bins": bins, "misclassified_positive_cos_hist": mis_hist,
                        "well_classified_positive_cos_hist": well_hist,
                        "misclassified_distance_own_vs_nearest": pairs}}


# Hand-built correlation cases: 5 (d_own, d_nearest) pairs with a known Pearson r.
LINE = ([0.5, 0.6, 0.7, 0.8, 0.9], [0.2, 0.3, 0.4, 0.5, 0.6])  # r = +1
ANTI = ([0.5, 0.6, 0.7, 0.8, 0.9], [0.45, 0.4, 0.35, 0.3, 0.25])  # r = -1
TEXTBOOK = ([0.62, 0.64, 0.66, 0.68, 0.70], [0.34, 0.32, 0.38, 0.36, 0.40])  # x = 1..5, y = 2,1,4,3,5: r = 0.8


# --- images and shared helpers --------------------------------------------------------------------

def test_overlay_blends_a_resized_map_onto_the_face(face):
    assert face.shape == (112, 112, 3) and face.dtype == np.uint8
    values = np.arange(49, dtype=np.float32).reshape(7, 7)
    out = A.overlay(face, values, "viridis", alpha=0.5)
    assert out.shape == (112, 112, 3) and out.dtype == np.uint8
    assert np.array_equal(A.overlay(face, values, alpha=0.0), face)
    categorical = A.resize_map(values, categorical=True)
    assert categorical.shape == (112, 112) and set(np.unique(categorical)) == set(values.ravel())
    assert A.resize_map(values[None].repeat(3, 0)).shape == (3, 112, 112)
    with pytest.raises(ValueError, match="uint8"):
        A.as_faces(np.zeros((112, 112, 3), np.float32))


# --- SCAN: learnt-t densities ---------------------------------------------------------------------

def test_reflected_kde_integrates_to_one_even_for_collapsed_or_identical_t():
    for values in (np.full(64, 1.0), np.r_[np.full(40, 1e-4), np.linspace(0.5, 2.0, 24)], np.array([0.7])):
        grid = np.linspace(0, values.max() + 4 * A.t_density.bandwidth(values), 1024)
        density = A.reflected_kde(values, grid)
        assert (density >= 0).all()
        assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=2e-3)


def test_t_densities_of_model_and_training_epochs_side_by_side(zoo_model, tmp_path, renders):
    model = zoo_model("scan")
    learnt = A.model_t(model)
    assert list(learnt) == A.scale_layers(model) and all((t > 0).all() for t in learnt.values())
    epochs = [(1, {"scan_t": {k: [1.0] * len(t) for k, t in learnt.items()}}),  # the initial value
              (2, {"scan_t": {k: (t * 0 + 1e-4).tolist() for k, t in learnt.items()}}),  # collapsed
              (2, {"scan_t": {k: t.tolist() for k, t in learnt.items()}})]  # epoch 2 logged again: last wins
    records = A.records_t(write_records(tmp_path / "records.jsonl", epochs))
    assert list(records) == [1, 2] and np.allclose(records[2][next(iter(learnt))], next(iter(learnt.values())))
    densities = A.t_densities({"model": learnt, "epoch 1": records[1], "epoch 2": records[2]})
    assert all(np.array_equal(d.grid, densities[0].grid) for d in densities)
    for density in densities:
        assert np.trapezoid(density.overall, density.grid) == pytest.approx(1.0, abs=2e-3)
        for layer_density in density.per_layer.values():
            assert np.trapezoid(layer_density, density.grid) == pytest.approx(1.0, abs=2e-3)
    initial = densities[1]
    assert initial.grid[initial.overall.argmax()] == pytest.approx(1.0, abs=0.01)
    assert A.t_density.pick_epochs(range(1, 11)) == [1, 4, 7, 10]
    with pytest.raises(A.AnalysisError, match=r"epoch\(s\) \[5\] not in the records"):
        A.t_density.pick_epochs(list(records), "1,5")
    renders(A.t_density_figure(densities), densities)


def test_t_density_of_a_plain_model_says_what_it_can_show(zoo_model):
    with pytest.raises(A.AnalysisError, match="only scan, scan-folded models do.*gradcam, correlation, umap"):
        A.model_t(zoo_model("plain"))


# --- SCAN: scale maps -----------------------------------------------------------------------------

def test_scale_sweep_maps_the_learnt_t_onto_the_face(zoo_model, face, renders):
    model = zoo_model("scan")
    sweep = A.scale_sweep(model, face)
    assert sweep.sigmas.tolist() == [0, 1, 2, 3, 4, 6]
    assert sweep.t_maps.shape == (6, 112, 112) and sweep.faces.shape == (6, 112, 112, 3)
    assert np.array_equal(sweep.faces[0], face) and not np.array_equal(sweep.faces[-1], face)
    assert min(sweep.native.shape[-2:]) >= 14 and sweep.layer in sweep.layers
    # every location holds one of the layer's learnt t (nearest-exact upsampling invents none)
    assert np.isin(sweep.t_maps, sweep.layer_t).all() and np.isin(sweep.native, sweep.layer_t).all()
    assert (sweep.mean_t >= sweep.layer_t.min()).all() and (sweep.mean_t <= sweep.layer_t.max()).all()
    assert np.allclose(sweep.mean_t, sweep.t_maps.mean(axis=(1, 2)))
    single = A.scale_maps(model, face, layer=sweep.layers[0])
    assert single.t_maps.shape == (1, 112, 112)
    with pytest.raises(A.AnalysisError, match="no SAC layer 'nope'.*stem"):
        A.scale_maps(model, face, layer="nope")
    renders(A.scale_maps_figure(sweep), sweep)


def test_scale_maps_of_a_plain_model_say_what_it_can_show(zoo_model, face):
    with pytest.raises(A.AnalysisError, match="has no scale maps.*can show: gradcam"):
        A.scale_sweep(zoo_model("plain"), face)


# --- attention ------------------------------------------------------------------------------------

def test_sranet_attention_maps_and_query_row(zoo_model, face, renders):
    model = zoo_model("sranet")
    data = A.attention(model, face, query=(40.0, 30.0))
    blocks = len(model.backbone.blocks)
    assert isinstance(data, A.ResidualAttention) and data.blocks.tolist() == list(range(blocks))
    for on_face in (data.before_on_face, data.after_on_face, data.spatial_on_face):
        assert on_face.shape == (blocks, 112, 112) and np.isfinite(on_face).all()
    for row in data.spatial:  # a softmax row over the key grid
        assert row.sum() == pytest.approx(1.0, abs=1e-5) and (row >= 0).all()
    assert (data.spatial_on_face >= 0).all() and (data.spatial_on_face <= 1).all()
    with pytest.raises(ValueError, match="outside"):
        A.residual_attention(model, face, query=(112, 0))
    renders(A.attention_figure(data), data)


def test_hpda_masks_on_the_face(zoo_model, face, renders):
    model = zoo_model("hpda")
    data = A.attention(model, face)
    layers, scales, branches = len(model.tapped_blocks), model.options["scales"], model.options["branches"]
    assert data.masks.shape == (layers, scales, branches, 112, 112)
    assert (data.masks >= 0).all() and (data.masks <= 1).all() and (data.native <= 1).all()
    assert data.tapped_blocks.tolist() == list(model.tapped_blocks)
    renders(A.attention_figure(data), data)


def test_arface_policy_drops_exactly_the_outlined_patches(zoo_model, face, renders):
    data = A.attention(zoo_model("arface"), face)
    assert data.kept.any() and data.mask.shape == (112, 112)
    assert ((data.keep_probability >= 0) & (data.keep_probability <= 1)).all()
    assert data.mode_probability.sum() == pytest.approx(1.0, abs=1e-5)
    expected = np.ones((112, 112))
    for (x0, y0, x1, y1), kept in zip(data.boxes, data.kept):
        if not kept:
            expected[y0:y1, x0:x1] = 0
    assert np.array_equal(data.mask, expected)
    assert np.array_equal(data.masked_face[data.mask == 0], np.zeros(((data.mask == 0).sum(), 3)))
    renders(A.attention_figure(data), data)


def test_attention_of_a_plain_model_says_what_it_can_show(zoo_model, face):
    with pytest.raises(A.AnalysisError, match="has no attention maps: only arface, hpda, sranet.*gradcam"):
        A.attention(zoo_model("plain"), face)


def test_attention_readers_go_by_what_the_method_declares(zoo_model, face):
    """`attention` reads each model in the form its method declares; a reader asked of another
    method's model says which methods have it."""
    assert A.available_analyses(zoo_model("hpda")) == ["attention", "gradcam", "correlation", "umap"]
    assert isinstance(A.attention(zoo_model("arface"), face), A.PatchPolicy)
    with pytest.raises(A.AnalysisError, match="has no patch policy: only arface models do.*attention, gradcam"):
        A.patch_policy(zoo_model("sranet"), face)
    with pytest.raises(TypeError, match="not attention data"):
        A.attention_figure(A.scale_maps(zoo_model("scan"), face))


# --- Grad-CAM -------------------------------------------------------------------------------------

def test_similarity_target_is_the_cosine():
    reference, output = torch.randn(512), torch.randn(512)
    expected = torch.nn.functional.cosine_similarity(output, reference, dim=0)
    assert A.SimilarityTarget(reference)(output) == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize("method", ["plain", "scan", "sranet", "arface", "hpda"])
def test_gradcam_of_similarity_for_any_model(method, zoo_model, faces, renders):
    model = zoo_model(method)
    data = A.gradcam_similarity(model, faces[1:], faces[0])
    assert data.cams.shape == (2, 112, 112) and (data.cams >= 0).all() and (data.cams <= 1 + 1e-6).all()
    assert data.target_layer == f"backbone.blocks.{len(model.backbone.blocks) - 1}"
    embeddings = model.embed(model.preprocess(A.as_faces(faces)))
    assert np.allclose(data.similarity, (embeddings[1:] @ embeddings[0]).numpy(), atol=1e-5)
    assert not model.training and all(p.grad is None for p in model.parameters())
    if method == "plain":
        renders(A.gradcam_figure(data), data)


@pytest.mark.parametrize("as_tensor", [True, False])
def test_gradcam_takes_a_reference_embedding_of_the_models_size(zoo_model, faces, as_tensor):
    """mobilefacenet.y1 makes 128-d embeddings: a 128-d reference is an embedding (not a face),
    and gives the same maps as the face it was computed from; another size is refused."""
    model = zoo_model("plain")
    assert model.config.embedding_dim == 128
    reference = model.embed(model.preprocess(A.as_faces(faces[:1])))[0]
    assert reference.shape == (128,)
    from_face = A.gradcam_similarity(model, faces[1:], faces[0])
    from_embedding = A.gradcam_similarity(model, faces[1:], reference if as_tensor else reference.numpy())
    assert from_embedding.reference_face is None and from_face.reference_face is not None
    assert np.allclose(from_embedding.similarity, from_face.similarity, atol=1e-5)
    assert np.allclose(from_embedding.cams, from_face.cams, atol=1e-4)
    assert np.allclose(A.gradcam_similarity(model, faces[1:], reference[None]).similarity, from_face.similarity,
                       atol=1e-5)  # a (1, 128) batch of one embedding
    with pytest.raises(A.AnalysisError, match="reference embedding has 512 values.*makes 128-d embeddings"):
        A.gradcam_similarity(model, faces[1:], torch.randn(512))


# --- NPCFace: hard positive-negative correlation --------------------------------------------------

def test_correlation_and_cosine_overlap_over_epochs(tmp_path, renders):
    zipped = lambda pairs: [list(p) for p in zip(*pairs)]
    path = write_records(tmp_path / "records.jsonl", [
        (1, margins(zipped(LINE), [0, 2, 2, 0], [0, 2, 2, 0])),  # same cosine distribution: overlap 1
        (2, margins(zipped(ANTI), [3, 1, 0, 0], [0, 0, 1, 3])),  # disjoint: overlap 0
        (3, margins(zipped(TEXTBOOK), [1, 1, 0, 0], [0, 1, 1, 0])),  # half shared
        (4, margins([], [0, 0, 0, 0], [0, 1, 1, 0])),  # nothing mis-classified
    ])
    data = A.records_correlation(path)
    assert data.epochs.tolist() == [1, 2, 3, 4] and data.counts.tolist() == [5, 5, 5, 0]
    assert np.allclose(data.r[:3], [1.0, -1.0, 0.8]) and np.isnan(data.r[3])
    assert np.allclose(data.overlap[:3], [1.0, 0.0, 0.5]) and np.isnan(data.overlap[3])
    renders(A.epochs_figure(data), data)


def test_hard_samples_of_a_model_on_labelled_real_faces(zoo_model, tmp_path, renders):
    model = zoo_model("plain")
    faces, labels, names, _ = lfw_labelled(identities=8, per_identity=4)
    data = A.model_hard_samples(model, faces, labels, names, cache=A.EmbeddingCache(tmp_path / "emb"))
    embeddings = model.embed(model.preprocess(faces)).numpy().astype(np.float64)
    centres = np.stack([embeddings[labels == c].mean(0) for c in range(len(names))])
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    assert np.allclose(data.d_own, 1 - (embeddings * centres[labels]).sum(1), atol=1e-5)
    assert (data.hard == (data.d_nearest < data.d_own)).all() and (data.nearest_class != labels).all()
    assert np.isnan(data.r) if data.hard.sum() < 3 else -1 <= data.r <= 1
    renders(A.hard_samples_figure(data), data)


# --- embedding UMAP -------------------------------------------------------------------------------

def test_umap_of_labelled_faces_caches_embeddings(zoo_model, tmp_path, renders):
    model = zoo_model("plain")  # 128-d: the cache must keep embeddings of the model's own size
    faces, labels, names, paths = lfw_labelled(identities=12, per_identity=5)
    cache = A.EmbeddingCache(tmp_path / "embeddings")
    first = A.embedding_umap(model, faces, labels, names, paths, blur_levels=(0, 3), cache=cache)
    assert first.xy.shape == (120, 2) and np.isfinite(first.xy).all()
    assert first.labels.tolist() == labels.tolist() * 2 and first.blur.tolist() == [0.0] * 60 + [3.0] * 60
    assert first.thumbnails.shape == (120, 48, 48, 3)
    assert np.array_equal(first.thumbnails[0], np.asarray(Image.fromarray(faces[0]).resize((48, 48), Image.BOX)))
    assert len(list(cache.root.rglob("*.npy"))) == 2
    assert all(np.load(p).shape == (60, 128) for p in cache.root.rglob("*.npy"))
    original = model.embed
    model.embed = lambda *a, **k: pytest.fail("a cached embedding was recomputed")
    try:
        second = A.embedding_umap(model, faces, labels, names, paths, blur_levels=(0, 3), cache=cache)
    finally:
        model.embed = original
    assert np.allclose(second.xy, first.xy)
    figure = A.umap_figure(second)
    point = figure.data[0].customdata[0]
    assert point[0] == names[0] and point[4].startswith("data:image/jpeg;base64,")
    renders(figure, second)


def test_embedding_cache_keys_follow_weights_images_and_degradation(zoo_model, tmp_path):
    model = zoo_model("plain")
    faces = A.as_faces(lfw_faces(2, seed=7))
    cache = A.EmbeddingCache(tmp_path)
    paths = {cache.path(model, faces, "clean"), cache.path(model, faces, "blur2"), cache.path(model, faces[::-1], "clean")}
    assert len(paths) == 3
    changed = zoo.build(model.config)
    assert A.model_fingerprint(changed) != A.model_fingerprint(model)
    changed.load_state_dict(model.state_dict())
    assert A.model_fingerprint(changed) == A.model_fingerprint(model)


# --- command line ---------------------------------------------------------------------------------

def test_cli_writes_html_json_and_png(zoo_model, tmp_path, monkeypatch, capsys, png_export):
    monkeypatch.setenv("FACESCOPE_CACHE", str(tmp_path / "cache"))
    checkpoint = zoo.save(zoo_model("scan"), tmp_path / "scan-checkpoint")
    image = sorted((LFW_IMAGES / "Aaron_Peirsol").glob("*.jpg"))[0]
    assert cli(["scale-map", "--model", str(checkpoint), "--image", str(image), "--blur", "0,3",
                "--out", str(tmp_path / "scale")]) == 0
    stem = f"scale_map_{image.stem}"
    assert {p.name for p in (tmp_path / "scale").iterdir()} >= {f"{stem}.html", f"{stem}.json", f"{stem}.png"}
    saved = json.loads((tmp_path / "scale" / f"{stem}.json").read_text())
    assert saved["sigmas"] == [0.0, 3.0] and "faces" not in saved
    records = write_records(tmp_path / "records.jsonl", [(1, margins([list(p) for p in zip(*LINE)], [1, 1], [1, 1]))])
    assert cli(["correlation", "--records", str(records), "--out", str(tmp_path / "corr")]) == 0
    assert (tmp_path / "corr" / "correlation_epochs.png").is_file()
    assert cli(["t-density", "--model", str(tmp_path / "scan-checkpoint"), "--records", str(records),
                "--out", str(tmp_path / "t")]) == 2
    assert "no `scan_t` entries" in capsys.readouterr().err
    with pytest.raises(SystemExit) as help_exit:
        cli(["umap", "--help"])
    assert help_exit.value.code == 0 and "--per-identity" in capsys.readouterr().out
