"""The torchvision backend end to end on tiny synthetic panels: training reports progress and
keeps the best weights, predictions are well-formed and in original pixels, a saved detector
predicts identically, bad input fails before training, divergence keeps a good checkpoint.

A few iterations cannot teach a detector anything, so these tests prove behaviour, not
quality (quality is measured in benchmarks/bench_detector.py).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from carsdepo_assets.detection.backends import (
    DETECTOR_FILE,
    TrainingDiverged,
    load_detector,
    train_detector,
)
from carsdepo_assets.detection.config import DetectorConfig
from carsdepo_assets.detection.data import CocoSplit, DatasetError, image_tensor
from carsdepo_assets.synth import generate_dataset
from carsdepo_assets.taxonomy import CLASS_NAMES, NONE_ANSWER

pytestmark = pytest.mark.slow  # trains detectors (tiny ones, a few iterations each)
WIDTH, HEIGHT = 224, 160
TINY = dict(backend="torchvision", min_size=HEIGHT, max_size=WIDTH, batch_size=2,
            box_score_thresh=0.0, num_threads=1)


@pytest.fixture(scope="module")
def panels(tmp_path_factory) -> CocoSplit:
    out = tmp_path_factory.mktemp("panels")
    result = generate_dataset(out, n_images=6, seed=5, width=WIDTH, height=HEIGHT)
    assert result.n_clean >= 1 and all(result.instances_per_class.values())
    return CocoSplit.from_folder(out)


@pytest.fixture(scope="module")
def images(panels) -> list[Image.Image]:
    return [Image.open(path).convert("RGB") for path in sorted(panels.image_root.iterdir())]


@pytest.fixture(scope="module")
def trained(panels, tmp_path_factory):
    """The default (pretrained EfficientNet-Lite0) detector after 4 iterations, validated at 2
    and 4, with every progress report kept."""
    reports = []
    workdir = tmp_path_factory.mktemp("work")
    config = DetectorConfig(iterations=4, eval_period=2, checkpoint_period=2, **TINY)
    detector = train_detector(panels, panels, config, workdir, reports.append)
    return detector, reports, workdir


def test_training_reports_finite_losses_and_speed_every_iteration(trained):
    _, reports, _ = trained
    assert [r.iteration for r in reports] == [1, 2, 3, 4]
    for report in reports:
        assert {"loss_classifier", "loss_box_reg", "loss_objectness", "total"} <= set(
            report.losses)
        assert all(math.isfinite(v) for v in report.losses.values())
        assert report.images_per_second > 0 and report.lr > 0
    assert [r.val_metrics is not None for r in reports] == [False, True, False, True]
    assert "AP50" in reports[1].val_metrics


def test_validation_keeps_the_best_weights_and_records_the_choice(trained):
    detector, reports, workdir = trained
    summary = detector.summary
    assert [h["iteration"] for h in summary.val_history] == [2, 4]
    best = max(summary.val_history, key=lambda h: h["AP50"])
    assert summary.best_val_metric == best["AP50"]
    best_saved = torch.load(workdir / "best" / "model.pt", weights_only=True)
    assert all(torch.equal(best_saved[k], v.cpu()) for k, v in detector.model.state_dict().items())
    assert summary.backend == "torchvision" and summary.images_seen == 8


def test_predictions_are_well_formed_detections_in_image_pixels(trained, images):
    detector, _, _ = trained
    results = detector.predict(images)
    assert len(results) == len(images)
    assert any(results)  # box_score_thresh=0: candidates come back even untrained
    for image, detections in zip(images, results, strict=True):
        scores = [d.score for d in detections]
        assert scores == sorted(scores, reverse=True)
        for d in detections:
            x1, y1, x2, y2 = d.box
            assert d.label in CLASS_NAMES and 0.0 <= d.score <= 1.0
            assert 0 <= x1 < x2 <= image.width and 0 <= y1 < y2 <= image.height


def test_boxes_are_scaled_back_to_the_pixels_of_the_image_given(trained, images):
    """The model sees every photo at its input size; a photo twice as large as that input
    gets its boxes back at twice the model's coordinates."""
    detector, _, _ = trained
    large = images[0].resize((WIDTH * 2, HEIGHT * 2), Image.Resampling.BILINEAR)
    tensor, scale = image_tensor(large, detector.config.min_size, detector.config.max_size)
    assert scale == 0.5
    with torch.no_grad():
        raw = detector.model.eval()([tensor])[0]
    found = detector.predict([large])[0]
    assert torch.allclose(torch.tensor([d.box for d in found]), 2 * raw["boxes"])
    assert max(d.box[2] for d in found) > WIDTH  # beyond the model's own input width


def test_saved_detector_reloads_from_its_folder_and_predicts_identically(trained, images,
                                                                         tmp_path):
    detector, _, _ = trained
    folder = detector.save(tmp_path / "detector")
    meta = json.loads((folder / DETECTOR_FILE).read_text())
    assert meta["backend"] == "torchvision"
    assert meta["config"]["norm"] == "frozen_bn" and meta["config"]["device"] in ("cpu", "cuda")
    reloaded = load_detector(folder)
    assert reloaded.predict(images) == detector.predict(images)
    assert reloaded.summary == detector.summary


def test_output_limits_widen_predictions_for_evaluation_and_restore_the_config(trained,
                                                                               images):
    detector, _, _ = trained
    narrow = detector.config.replace(box_score_thresh=0.2, box_detections_per_img=3)
    capped = type(detector)(detector.model, narrow)
    capped._set_output_limits(narrow.box_score_thresh, narrow.box_detections_per_img)
    before = capped.predict(images)
    assert all(len(found) <= 3 and all(d.score >= 0.2 for d in found) for found in before)

    with capped.output_limits(0.001, 100):
        wide = capped.predict(images)

    assert sum(map(len, wide)) > sum(map(len, before))
    assert all(len(found) <= 100 and all(d.score >= 0.001 for d in found) for found in wide)
    assert capped.predict(images) == before  # the config's limits are back
    detector._set_output_limits(detector.config.box_score_thresh,  # the shared model's own
                                detector.config.box_detections_per_img)


def test_anchors_learned_at_training_start_are_saved_and_reloaded_with_the_model(panels, images,
                                                                                tmp_path):
    far_too_large = ((256,), (512,), (1024,), (2048,))  # so that the learned set wins
    config = DetectorConfig(iterations=2, eval_period=100, learn_anchors=True,
                            anchor_sizes=far_too_large, anchor_sizes_per_level=2,
                            anchor_ratio_count=3, **TINY)

    detector = train_detector(panels, None, config, tmp_path / "work")

    learned = detector.config
    assert all(len(level) == 2 for level in learned.anchor_sizes)
    assert len(learned.aspect_ratios) == 3
    assert detector.model.rpn.anchor_generator.sizes == learned.anchor_sizes
    coverage = detector.summary.anchor_coverage
    assert set(coverage) == set(CLASS_NAMES) and all(c["boxes"] > 0 for c in coverage.values())
    folder = detector.save(tmp_path / "detector")
    saved = json.loads((folder / DETECTOR_FILE).read_text())
    assert saved["config"]["anchor_sizes"] == [list(level) for level in learned.anchor_sizes]
    assert saved["training"]["anchor_coverage"] == coverage
    reloaded = load_detector(folder)
    assert reloaded.config == learned
    assert reloaded.predict(images) == detector.predict(images)


def test_sliced_prediction_settings_are_saved_with_the_model_and_used_after_reloading(
        trained, images, tmp_path):
    detector, _, _ = trained
    sliced = type(detector)(detector.model, detector.config.replace(work_side=320, crop_size=128))
    large = images[0].resize((WIDTH * 2, HEIGHT * 2), Image.Resampling.BILINEAR)

    found = sliced.predict([large])[0]

    assert found != detector.predict([large])[0]  # the tiles add detections of their own
    assert all(0 <= d.box[0] < d.box[2] <= large.width for d in found)
    reloaded = load_detector(sliced.save(tmp_path / "sliced"))
    assert (reloaded.config.work_side, reloaded.config.crop_size) == (320, 128)
    assert reloaded.predict([large]) == [found]


def test_the_mirrored_pass_is_saved_with_the_model_and_merged_after_reloading(
        trained, images, tmp_path):
    detector, _, _ = trained
    flipped = type(detector)(detector.model, detector.config.replace(flip_tta=True))

    found = flipped.predict(images)

    assert found != detector.predict(images)  # the mirror's detections join the first pass's
    for image, detections in zip(images, found, strict=True):
        assert len(detections) <= flipped.config.box_detections_per_img
        assert all(0 <= d.box[0] < d.box[2] <= image.width for d in detections)
        assert [d.score for d in detections] == sorted((d.score for d in detections),
                                                       reverse=True)
    reloaded = load_detector(flipped.save(tmp_path / "flipped"))
    assert reloaded.config.flip_tta
    assert reloaded.predict(images) == found


def test_operating_points_chosen_on_val_map_each_class_onto_the_threshold_and_are_saved(
        panels, images, tmp_path):
    config = DetectorConfig(iterations=2, eval_period=2, operating_precision=0.3, **TINY)

    detector = train_detector(panels, panels, config, tmp_path)

    calibration = dict(detector.config.score_calibration)
    points = detector.summary.operating_points
    assert set(calibration) == set(points) == set(CLASS_NAMES)  # the panels have both classes
    assert all(calibration[label] == pytest.approx(point["raw_threshold"], abs=1e-4)
               for label, point in points.items())
    raw = type(detector)(detector.model, detector.config.replace(score_calibration=()))
    cut = detector.config.score_threshold
    for mapped, unmapped in zip(detector.predict(images), raw.predict(images), strict=True):
        assert [d.score for d in mapped] == sorted((d.score for d in mapped), reverse=True)
        assert sorted((d.label, d.box) for d in mapped) == sorted((d.label, d.box)
                                                                 for d in unmapped)
        # a box passes the one threshold exactly when its raw score reaches its class's point
        assert ({(d.label, d.box) for d in mapped if d.score >= cut}
                == {(d.label, d.box) for d in unmapped if d.score >= calibration[d.label]})
    reloaded = load_detector(detector.save(tmp_path / "calibrated"))
    assert reloaded.config.score_calibration == detector.config.score_calibration
    assert reloaded.predict(images) == detector.predict(images)


def test_native_resolution_training_with_crops_repeat_factors_and_copy_paste_runs_and_predicts(
        panels, images, tmp_path):
    reports = []
    config = DetectorConfig(iterations=3, eval_period=3, work_side=320, crop_size=128,
                            repeat_factor_threshold=0.9, copy_paste=2, **TINY)

    detector = train_detector(panels, panels, config, tmp_path, reports.append)

    assert all(math.isfinite(v) for r in reports for v in r.losses.values())
    assert reports[-1].val_metrics is not None  # validated through the sliced path
    assert detector.config.work_side == 320
    assert len(detector.predict(images[:1])) == 1


def test_answers_are_none_below_the_operating_point_and_detections_above(trained, images):
    detector, _, _ = trained
    assert detector.answers(images[:2], threshold=1.01) == [NONE_ANSWER, NONE_ANSWER]
    for answer in detector.answers(images[:2], threshold=0.0):
        assert answer == NONE_ANSWER or all(set(d) == {"label", "score", "box"} for d in answer)


@pytest.mark.parametrize("backbone", ["resnet_tiny", "efficientnet_lite0"])
def test_from_scratch_training_with_groupnorm_stays_finite(panels, tmp_path, backbone):
    reports = []
    config = DetectorConfig(backbone=backbone, pretrained=False, iterations=4, lr=2e-3,
                            warmup_iterations=1, eval_period=100, **TINY)
    detector = train_detector(panels, None, config, tmp_path, reports.append)
    assert detector.config.norm == "gn"
    assert all(math.isfinite(v) for r in reports for v in r.losses.values())
    assert all(torch.isfinite(p).all() for p in detector.model.parameters())


def test_the_lite2_backbone_trains_from_its_imagenet_weights_and_reloads(panels, images,
                                                                         tmp_path):
    config = DetectorConfig(backbone="efficientnet_lite2", iterations=2, eval_period=100, **TINY)
    detector = train_detector(panels, None, config, tmp_path / "work")
    assert detector.config.backbone == "efficientnet_lite2"
    assert detector.config.norm == "frozen_bn"  # from the packaged weights
    reloaded = load_detector(detector.save(tmp_path / "detector"))
    assert reloaded.predict(images[:2]) == detector.predict(images[:2])


def test_class_without_instances_fails_before_any_training(panels, tmp_path):
    coco = json.loads(panels.annotations.read_text())
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] == 1]
    only_scratches = tmp_path / "scratches.json"
    only_scratches.write_text(json.dumps(coco))
    reports = []
    with pytest.raises(DatasetError, match="dent"):
        train_detector(CocoSplit(only_scratches, panels.image_root), None,
                       DetectorConfig(iterations=2, **TINY), tmp_path / "work", reports.append)
    assert reports == [] and not (tmp_path / "work").exists()


def test_divergence_stops_with_the_iteration_and_keeps_the_last_good_checkpoint(panels,
                                                                                tmp_path):
    """A real cause: an absurd learning rate (no gradient clipping) blows the loss up."""
    config = DetectorConfig(backbone="resnet_tiny", pretrained=False, optimizer="sgd", lr=1e3,
                            warmup_iterations=8, clip_grad_norm=0.0, iterations=30,
                            checkpoint_period=1, eval_period=100, **TINY)
    with pytest.raises(TrainingDiverged) as caught:
        train_detector(panels, None, config, tmp_path)
    error = caught.value
    assert error.iteration > 2 and f"iteration {error.iteration}" in str(error)
    assert error.checkpoint is not None and str(error.checkpoint) in str(error)
    kept = load_detector(error.checkpoint)
    assert all(torch.isfinite(p).all() for p in kept.model.parameters())
    assert all(math.isfinite(d.score) for found in kept.predict(
        [Image.open(next(panels.image_root.iterdir()))]) for d in found)


def test_backbone_body_learns_at_its_factor_of_the_learning_rate(panels, tmp_path):
    from carsdepo_assets.detection.backends import resolve_config
    from carsdepo_assets.detection.torchvision_backend import build_model

    def one_step(factor: float) -> dict[str, torch.Tensor]:
        config = DetectorConfig(iterations=1, warmup_iterations=0, backbone_lr_factor=factor,
                                **TINY)
        return train_detector(panels, None, config, tmp_path / str(factor)).model.state_dict()

    torch.manual_seed(0)
    start = build_model(resolve_config(DetectorConfig(**TINY))).state_dict()
    full, slow = one_step(1.0), one_step(0.01)

    def moved(state: dict[str, torch.Tensor], prefix: str) -> float:
        return sum(float((state[k] - start[k]).abs().sum()) for k in start
                   if k.startswith(prefix) and start[k].is_floating_point())

    assert moved(full, "backbone.body.") > 0
    assert moved(slow, "backbone.body.") < 0.05 * moved(full, "backbone.body.")
    assert moved(slow, "roi_heads.") == pytest.approx(moved(full, "roi_heads."), rel=0.2)


def test_the_moving_average_tracks_recent_weights_and_swaps_in_only_inside_its_block():
    from carsdepo_assets.detection.training import WeightAverage

    layer = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.0)
    average = WeightAverage(layer, decay=0.5)
    expected = 0.0
    for step, value in enumerate([1.0, 2.0, 3.0], start=1):
        with torch.no_grad():
            layer.weight.fill_(value)
        average.update()
        weight = 1 - min(0.5, (1 + step) / (10 + step))  # the ramp, then the decay
        expected += weight * (value - expected)

    assert average.state["weight"].item() == pytest.approx(expected)
    with average.applied():
        assert layer.weight.item() == pytest.approx(expected)
    assert layer.weight.item() == 3.0  # the live weights again after the block


def test_with_ema_decay_training_validates_and_keeps_the_averaged_weights(panels, tmp_path):
    def kept(decay: float) -> dict[str, torch.Tensor]:
        config = DetectorConfig(iterations=3, eval_period=3, ema_decay=decay, **TINY)
        detector = train_detector(panels, panels, config, tmp_path / str(decay))
        assert detector.summary.best_iteration == 3
        return detector.model.state_dict()

    last, averaged = kept(0.0), kept(0.9)

    assert any(not torch.equal(last[key], averaged[key]) for key in last
               if key.startswith("roi_heads."))
    best = torch.load(tmp_path / "0.9" / "best" / "model.pt", weights_only=True)
    assert all(torch.equal(best[key], averaged[key]) for key in averaged)


def test_synthetic_pretraining_trains_on_generated_panels_before_the_real_training(panels,
                                                                                  tmp_path):
    def trained_weights(pretrain_iterations: int) -> dict[str, torch.Tensor]:
        config = DetectorConfig(iterations=1, warmup_iterations=0, synthetic_pretrain_images=3,
                                synthetic_pretrain_iterations=pretrain_iterations, **TINY)
        workdir = tmp_path / str(pretrain_iterations)
        detector = train_detector(panels, None, config, workdir)
        assert detector.config.synthetic_pretrain_iterations == pretrain_iterations
        return detector.model.state_dict()

    without, with_pretraining = trained_weights(0), trained_weights(2)

    pretraining = tmp_path / "2" / "synthetic-pretraining"
    coco = json.loads((pretraining / "annotations.json").read_text())
    assert len(coco["images"]) == 3 and (pretraining / "last" / DETECTOR_FILE).is_file()
    assert not (tmp_path / "0" / "synthetic-pretraining").exists()
    assert any(not torch.equal(without[key], with_pretraining[key]) for key in without
               if key.startswith("roi_heads."))


def test_fine_tuning_starts_from_the_given_detector_and_keeps_its_shape(trained, panels,
                                                                         tmp_path):
    """A retrain on new labels fine-tunes the champion: its anchors and input sizes (which its
    weights were trained for) stay, the schedule is the new run's, and the weights it starts
    from are the champion's, not ImageNet's."""
    parent, _, _ = trained
    schedule = DetectorConfig(iterations=1, lr=1e-9, warmup_iterations=0, learn_anchors=True,
                              **{**TINY, "min_size": 200})

    child = train_detector(panels, None, schedule, tmp_path, start_from=parent)

    assert child.config.anchor_sizes == parent.config.anchor_sizes
    assert child.config.min_size == parent.config.min_size != 200
    assert child.config.iterations == 1 and child.config.lr == 1e-9
    assert not child.config.learn_anchors
    drift = max((child.model.state_dict()[key].float() - value.float()).abs().max().item()
                for key, value in parent.model.state_dict().items())
    assert drift < 1e-3  # one step at a learning rate of 1e-9 leaves the parent's weights
