"""The detectron2 backend on tiny synthetic data: it trains, predicts, saves and loads like the
torchvision backend. Skipped where detectron2 is not installed (it is built locally, if at all).

Training runs are a handful of iterations on a few 224x160 panels: enough to exercise the whole
path (datasets, trainer, hooks, evaluator, checkpoints), not to learn damage.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2")

from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.engine import DefaultPredictor  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

from carsdepo_assets.detection.backbones import build_backbone_body  # noqa: E402
from carsdepo_assets.detection.backends import (  # noqa: E402
    DETECTOR_FILE,
    TrainingDiverged,
    load_detector,
    resolve_backend,
    resolve_config,
    train_detector,
)
from carsdepo_assets.detection.config import ConfigError, DetectorConfig  # noqa: E402
from carsdepo_assets.detection.data import CocoSplit  # noqa: E402
from carsdepo_assets.detection.detectron2_backend import (  # noqa: E402
    Detectron2Backend,
    Detectron2Detector,
)
from carsdepo_assets.detection.detectron2_model import FPN_LEVELS, detectron2_cfg  # noqa: E402
from carsdepo_assets.synth import generate_dataset, image_rng, render_panel  # noqa: E402
from carsdepo_assets.taxonomy import CLASS_NAMES  # noqa: E402

pytestmark = pytest.mark.detectron2

WIDTH, HEIGHT = 224, 160
TINY = DetectorConfig(
    backend="detectron2", min_size=160, max_size=224, batch_size=2, iterations=4,
    eval_period=2, checkpoint_period=2, warmup_iterations=2,
)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The cores are shared with other jobs: more torch threads would mostly wait for each
    other (training and prediction both run many times slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> tuple[CocoSplit, CocoSplit]:
    root = tmp_path_factory.mktemp("synthetic")
    train = generate_dataset(root / "train", 6, seed=1, width=WIDTH, height=HEIGHT)
    assert all(train.instances_per_class.values()) and train.n_clean  # both classes and "None"
    generate_dataset(root / "val", 3, seed=2, width=WIDTH, height=HEIGHT)
    return CocoSplit.from_folder(root / "train"), CocoSplit.from_folder(root / "val")


@pytest.fixture(scope="module")
def trained(splits, tmp_path_factory: pytest.TempPathFactory):
    """One short run with a val split, shared by the tests that read its results."""
    progress = []
    workdir = tmp_path_factory.mktemp("workdir")
    detector = train_detector(*splits, TINY, workdir, progress.append)
    return detector, progress, workdir


def panel(width: int, height: int, seed: int = 7):
    image, _ = render_panel(image_rng(seed, 0), width, height)
    return image


def test_auto_resolves_to_detectron2_when_it_is_installed():
    assert resolve_backend("auto") == "detectron2"
    assert resolve_config(DetectorConfig()).backend == "detectron2"


@pytest.mark.parametrize("preset", ["real_cpu", "gpu"])
def test_auto_passes_over_detectron2_for_the_small_damage_design(preset):
    """Its crops and synthetic pretraining are the torchvision backend's: ``auto`` must not
    pick a backend that would refuse the preset."""
    config = DetectorConfig.preset(preset)
    assert any("torchvision backend's" in reason for reason in Detectron2Backend.refusals(config))
    assert resolve_config(config).backend == "torchvision"


def test_a_time_budget_is_refused_so_auto_trains_it_on_torchvision():
    config = DetectorConfig(time_budget_s=60)
    reasons = Detectron2Backend.refusals(config)
    assert any("time budget" in reason and "time_budget_s=0" in reason for reason in reasons)
    assert resolve_config(config).backend == "torchvision"
    assert Detectron2Backend.refusals(DetectorConfig()) == []


@pytest.mark.parametrize(("field", "value"), [("ema_decay", 0.99), ("copy_paste", 2)])
def test_the_torchvision_backends_training_extras_are_refused_by_name(field, value):
    reasons = Detectron2Backend.refusals(DetectorConfig(**{field: value}))
    assert any(f"{field}=0" in reason for reason in reasons)


def test_training_reports_every_iteration_and_selects_weights_on_the_val_split(trained):
    detector, progress, workdir = trained
    assert [p.iteration for p in progress] == [1, 2, 3, 4]
    assert all(math.isfinite(p.losses["total"]) and p.lr > 0 for p in progress)
    validated = {p.iteration: p.val_metrics for p in progress if p.val_metrics is not None}
    assert set(validated) == {2, 4}  # every eval_period and at the end
    names = {"AP", "AP50", "none_accuracy", *(f"AP50_{name}" for name in CLASS_NAMES)}
    for metrics in validated.values():  # the torchvision backend's names; undefined left out
        assert "none_accuracy" in metrics and set(metrics) <= names
        assert all(0.0 <= value <= 1.0 for value in metrics.values())
    summary = detector.summary
    assert summary.backend == "detectron2" and summary.images_seen == 4 * TINY.batch_size
    assert [row["iteration"] for row in summary.val_history] == [2, 4]
    assert summary.best_iteration in (2, 4) and summary.train_images == 6
    assert summary.val_images == 3
    # the kept detector is saved as a checkpoint folder, and the run's datasets are unregistered
    assert isinstance(load_detector(workdir / "last"), Detectron2Detector)
    assert not [name for name in DatasetCatalog.list() if name.startswith("carsdepo_")]
    assert not [name for name in MetadataCatalog.list() if name.startswith("carsdepo_")]


def test_predictions_are_well_formed_and_in_original_pixels(trained):
    """A 448x320 photo is shrunk to 224x160 for the model; boxes come back in the photo's
    pixels, exactly as detectron2's own DefaultPredictor returns them."""
    detector, _, _ = trained
    image = panel(448, 320)
    [found] = detector.predict([image])
    assert 0 < len(found) <= TINY.box_detections_per_img
    scores = [d.score for d in found]
    assert scores == sorted(scores, reverse=True) and min(scores) >= TINY.box_score_thresh
    for d in found:
        x1, y1, x2, y2 = d.box
        assert d.label in CLASS_NAMES and 0 <= x1 <= x2 <= 448 and 0 <= y1 <= y2 <= 320

    reference = DefaultPredictor(detectron2_cfg(detector.config, load_backbone_weights=False))
    reference.model = detector.model
    instances = reference(np.asarray(image)[:, :, ::-1])["instances"]  # it takes BGR
    np.testing.assert_allclose([d.box for d in found], instances.pred_boxes.tensor.numpy(),
                               atol=1e-3)


def test_saved_detector_loads_back_with_the_same_predictions(trained, tmp_path: Path):
    detector, _, _ = trained
    images = [panel(WIDTH, HEIGHT, seed) for seed in (11, 12)]
    detector.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / DETECTOR_FILE).read_text())
    assert meta["backend"] == meta["config"]["backend"] == "detectron2"
    assert meta["training"]["backend"] == "detectron2"

    loaded = load_detector(tmp_path / "model")
    assert isinstance(loaded, Detectron2Detector) and loaded.config == detector.config
    for before, after in zip(detector.predict(images), loaded.predict(images), strict=True):
        assert [d.label for d in before] == [d.label for d in after]
        np.testing.assert_allclose([d.box for d in before], [d.box for d in after], atol=1e-3)
        np.testing.assert_allclose([d.score for d in before], [d.score for d in after],
                                   atol=1e-5)


def test_backbone_is_the_shared_body_under_an_fpn_and_honours_weights_path(tmp_path: Path):
    """The user's weights file ends up in the detectron2 model's body, parameter for parameter
    (plain BatchNorm: frozen BatchNorm would be folded into the convolutions)."""
    own = build_backbone_body("efficientnet_lite0", norm="bn", pretrained=False)
    torch.nn.init.normal_(own.net._conv_stem.weight)
    torch.save(own.net.state_dict(), tmp_path / "lite0.pt")
    config = resolve_config(TINY.replace(pretrained=False, norm="bn",
                                         weights_path=str(tmp_path / "lite0.pt")))

    model = build_model(detectron2_cfg(config))
    assert tuple(model.backbone.output_shape()) == FPN_LEVELS
    assert [s.stride for s in model.backbone.output_shape().values()] == [8, 16, 32, 64]
    body = model.backbone.bottom_up.body
    torch.testing.assert_close(body.net._conv_stem.weight, own.net._conv_stem.weight)


def test_training_from_scratch_uses_group_norm_and_stays_finite(splits, tmp_path: Path):
    progress = []
    config = TINY.replace(pretrained=False, iterations=2)
    detector = train_detector(splits[0], None, config, tmp_path, progress.append)
    norms = {type(m).__name__ for m in detector.model.backbone.modules()}
    assert detector.config.norm == "gn" and "GroupNorm" in norms
    assert not norms & {"BatchNorm2d", "FrozenBatchNorm2d"}
    assert all(math.isfinite(p.losses["total"]) for p in progress)
    assert detector.summary.best_iteration is None  # no val split: the last weights are kept


def test_diverging_loss_stops_with_the_last_good_checkpoint_kept(splits, tmp_path: Path):
    """A learning rate of 1000 without clipping blows the weights up within a few steps."""
    config = TINY.replace(optimizer="sgd", lr=1000.0, clip_grad_norm=0.0, warmup_iterations=0,
                          iterations=20, checkpoint_period=1)
    with pytest.raises(TrainingDiverged, match="diverged at iteration") as caught:
        train_detector(splits[0], None, config, tmp_path)
    assert caught.value.iteration > 1
    kept = load_detector(caught.value.checkpoint)
    assert caught.value.checkpoint == tmp_path / "last"
    assert isinstance(kept, Detectron2Detector)


def test_anchor_sizes_must_match_the_fpn_levels():
    config = resolve_config(TINY.replace(anchor_sizes=(16, 32, 64)))
    with pytest.raises(ConfigError, match="the sizes of each level"):
        detectron2_cfg(config)


def test_model_builds_with_several_anchor_sizes_per_level_and_the_rpn_thresholds():
    config = resolve_config(TINY.replace(
        anchor_sizes=((12, 20), (40, 56), (90, 120), (250, 400)), aspect_ratios=(0.3, 1.0, 3.0),
        rpn_fg_iou_thresh=0.5, rpn_bg_iou_thresh=0.3, pretrained=False, norm="gn"))

    model = build_model(detectron2_cfg(config, load_backbone_weights=False)).eval()

    assert model.proposal_generator.anchor_generator.num_anchors == [6] * len(FPN_LEVELS)
    assert list(model.proposal_generator.anchor_matcher.thresholds[1:-1]) == [0.3, 0.5]
    with torch.inference_mode():
        output = model([{"image": torch.rand(3, 160, 224) * 255, "height": 160,
                         "width": 224}])[0]
    assert output["instances"].pred_boxes.tensor.shape[1] == 4
