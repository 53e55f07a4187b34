"""The ``gpu`` preset is real_cpu's small-damage design at a GPU's scale, and stays so.

No GPU trains here: the preset trains on the CPU at a tiny scale (a few 128 px crops of tiny
synthetic panels) with every part of the design left on, and the tests check that each part
really acted: the anchors the model uses are the learned ones, training read native-resolution
crops with repeat factors, the backbone body learned at its factor of the rate, synthetic panels
came first, and prediction went through the tiles.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from carsdepo_assets.cli import train, train_real
from carsdepo_assets.detection import backends, training
from carsdepo_assets.detection.backbones import BackboneBody
from carsdepo_assets.detection.backends import load_detector, train_detector
from carsdepo_assets.detection.config import SCALE_FIELDS, WITHOUT_CHANGE, DetectorConfig
from carsdepo_assets.detection.data import CocoSplit
from carsdepo_assets.synth import generate_dataset

WIDTH, HEIGHT = 224, 160
CROP = 128
GPU = DetectorConfig.preset("gpu")
# The gpu preset at a scale two CPU cores train in seconds: what the preset has on is scaled
# down, never switched on (a preset that turned a part off fails the tests below). The panels
# are read at 320 x 228: 9 tiles of 128 px each.
TINY = dict(iterations=2, batch_size=2, crop_size=CROP, eval_period=2, min_size=HEIGHT,
            max_size=WIDTH, work_side=min(GPU.work_side, 320),
            synthetic_pretrain_iterations=min(GPU.synthetic_pretrain_iterations, 1),
            synthetic_pretrain_images=3, backend="torchvision", num_threads=1)


def test_the_presets_of_the_small_damage_design_agree_with_real_cpu_on_every_design_field():
    design = DetectorConfig.preset("real_cpu")
    for name in ("gpu", "real_cpu_short"):
        scaled = DetectorConfig.preset(name)
        differing = {field.name for field in dataclasses.fields(DetectorConfig)
                     if getattr(scaled, field.name) != getattr(design, field.name)}
        assert differing <= SCALE_FIELDS, f"{name} changes design fields {differing - SCALE_FIELDS}"


def test_the_gpu_preset_trains_on_larger_crops_and_batches_for_longer():
    cpu = DetectorConfig.preset("real_cpu")
    assert GPU.crop_size > cpu.crop_size and GPU.batch_size > cpu.batch_size
    assert GPU.iterations * GPU.batch_size > cpu.iterations * cpu.batch_size


def test_the_gpu_preset_and_its_tiny_scale_leave_every_part_of_the_design_on():
    for config in (GPU, GPU.replace(**TINY)):
        for change, undone in WITHOUT_CHANGE.items():
            assert any(getattr(config, key) != value for key, value in undone.items()), change


@dataclasses.dataclass
class Calls:
    """What the training and prediction functions were called with and returned."""

    crop_samples: list = dataclasses.field(default_factory=list)
    whole_image_samples: list = dataclasses.field(default_factory=list)
    repeat_factors: list = dataclasses.field(default_factory=list)
    optimizers: list = dataclasses.field(default_factory=list)
    tiles: list = dataclasses.field(default_factory=list)


def recorded(function: Callable, calls: list) -> Callable:
    def wrapper(*args, **kwargs):
        result = function(*args, **kwargs)
        calls.append((args, result))
        return result
    return wrapper


@pytest.fixture(scope="module")
def panels(tmp_path_factory) -> CocoSplit:
    """Six panels, seven boxes (enough for five learned aspect ratios); dents are on fewer than
    half of them, so repeat factors above 1 are due."""
    out = tmp_path_factory.mktemp("panels")
    generate_dataset(out, n_images=6, seed=5, width=WIDTH, height=HEIGHT)
    return CocoSplit.from_folder(out)


@pytest.fixture(scope="module")
def trained(panels, tmp_path_factory):
    """The gpu preset at the tiny scale, trained on the panels and validated on them, with
    the calls that show each part of the design at work."""
    calls = Calls()
    workdir = tmp_path_factory.mktemp("work")
    spied = {"crop_sample": calls.crop_samples, "training_sample": calls.whole_image_samples,
             "repeat_factors": calls.repeat_factors, "_optimizer": calls.optimizers}
    with pytest.MonkeyPatch.context() as patch:
        for name, kept in spied.items():
            patch.setattr(training, name, recorded(getattr(training, name), kept))
        patch.setattr(backends, "tiles", recorded(backends.tiles, calls.tiles))
        detector = train_detector(panels, panels, GPU.replace(**TINY), workdir)
    return detector, calls, workdir


@pytest.mark.slow
def test_the_model_uses_the_anchors_learned_from_the_training_boxes(trained):
    detector, _, _ = trained
    used = detector.config
    assert used.anchor_sizes != GPU.anchor_sizes
    assert all(len(level) == GPU.anchor_sizes_per_level for level in used.anchor_sizes)
    assert len(used.aspect_ratios) == GPU.anchor_ratio_count
    generator = detector.model.rpn.anchor_generator
    assert generator.sizes == used.anchor_sizes
    assert all(tuple(ratios) == used.aspect_ratios for ratios in generator.aspect_ratios)
    assert detector.model.rpn.proposal_matcher.high_threshold == GPU.rpn_fg_iou_thresh


@pytest.mark.slow
def test_training_read_native_resolution_crops_with_repeat_factors(trained):
    _, calls, _ = trained
    assert calls.whole_image_samples == []
    # the synthetic panels' steps and then the real ones, batch_size crops each
    assert len(calls.crop_samples) == (1 + TINY["iterations"]) * TINY["batch_size"]
    # crops of at most crop_size (whole panels would be 224 x 160), most of them whole
    sides = [tuple(tensor.shape[-2:]) for _, (tensor, _) in calls.crop_samples]
    assert max(max(side) for side in sides) == CROP and (CROP, CROP) in sides
    (records, threshold), factors = calls.repeat_factors[-1]
    assert threshold == GPU.repeat_factor_threshold > 0
    assert len(records) == 6 and factors.max() > 1


@pytest.mark.slow
def test_the_backbone_body_learned_at_its_factor_of_the_rate(trained):
    detector, calls, _ = trained
    _, optimizer = calls.optimizers[-1]
    factor = GPU.backbone_lr_factor
    body = {id(p) for module in detector.model.modules() if isinstance(module, BackboneBody)
            for p in module.parameters() if p.requires_grad}
    scales = {group[training.LR_SCALE]: {id(p) for p in group["params"]}
              for group in optimizer.param_groups}
    assert factor < 1.0 and body
    assert scales == {1.0: scales[1.0], factor: body}  # the rest (FPN, RPN, heads) at 1.0


@pytest.mark.slow
def test_synthetic_panels_trained_the_model_before_the_photos(trained):
    _, calls, workdir = trained
    pretraining = Path(workdir) / "synthetic-pretraining"
    assert len(list((pretraining / "images").iterdir())) == TINY["synthetic_pretrain_images"]
    assert (pretraining / "last" / backends.DETECTOR_FILE).is_file()
    assert len(calls.optimizers) == 2  # one for the panels, one for the photos


@pytest.mark.slow
def test_validation_and_prediction_read_the_photo_in_tiles(trained, panels, tmp_path,
                                                           monkeypatch):
    detector, calls, _ = trained
    assert calls.tiles and all(len(crops) == 9 for _, crops in calls.tiles)  # validation's
    reloaded = load_detector(detector.save(tmp_path / "detector"))
    after_reload: list = []
    monkeypatch.setattr(backends, "tiles", recorded(backends.tiles, after_reload))
    photo = Image.open(next(panels.image_root.iterdir())).convert("RGB")

    found = reloaded.predict([photo])[0]

    assert [len(crops) for _, crops in after_reload] == [9]
    assert all(math.isfinite(d.score) and 0 <= d.box[0] < d.box[2] <= WIDTH for d in found)


@pytest.mark.parametrize(("cuda", "chosen", "says"), [
    (True, "gpu", "torch sees CUDA, Test GPU"),
    (False, "real_cpu", "torch sees no CUDA device"),
])
def test_train_real_says_which_preset_auto_picked_and_why(monkeypatch, cuda, chosen, says):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")

    picked = train.resolve_preset("auto")

    assert picked == chosen
    reason = train_real.preset_reason("auto", picked)
    assert reason.startswith(chosen) and says in reason and "small-damage design" in reason
    assert train_real.preset_reason("gpu", "gpu") == "gpu (--preset gpu)"
