"""The detectron2 side of a ``DetectorConfig``: the project's backbones as a detectron2 backbone,
and the config fields mapped onto a detectron2 ``CfgNode``.

The backbone body (``backbones.py``, EfficientNet-Lite0 with its packaged ImageNet weights by
default) is the very module the torchvision backend uses, wrapped as a detectron2 ``Backbone``
and registered in ``BACKBONE_REGISTRY`` as ``build_carsdepo_fpn_backbone``, with detectron2's
own FPN on top. The Faster R-CNN around it is sized as in the torchvision backend: the anchor
sizes of each FPN level (p3-p6, strides 8-64; several per level when learned, anchors.py),
elongated aspect ratios for scratches, RoIs pooled from p3-p5, a two-layer box head. Fields
detectron2 has no key for (backbone name and weights, photometric augmentation, the operating
score threshold, the optimizer) live under ``cfg.CARSDEPO``, so one cfg describes the whole
model and its training.

Importing this module needs detectron2 (the backend registry imports it only on demand).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, ShapeSpec
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool

from carsdepo_assets.detection.backbones import (
    FEATURE_NAMES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneBody,
    build_backbone_body,
    group_norm,
)
from carsdepo_assets.detection.config import ConfigError, DetectorConfig
from carsdepo_assets.taxonomy import CLASS_NAMES

# FPN outputs: one per body feature (p3, p4, p5 at strides 8, 16, 32) and a max-pooled p6.
FPN_LEVELS = ("p3", "p4", "p5", "p6")
ROI_LEVELS = FPN_LEVELS[:-1]


class BodyBackbone(Backbone):
    """A ``backbones.BackboneBody`` as a detectron2 ``Backbone`` (features c3, c4, c5)."""

    def __init__(self, body: BackboneBody):
        super().__init__()
        self.body = body
        self._out_features = list(FEATURE_NAMES)
        self._out_feature_channels = dict(body.out_channels)
        self._out_feature_strides = dict(body.strides)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.body(x)


@BACKBONE_REGISTRY.register()
def build_carsdepo_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> FPN:
    """The registered body named by ``cfg.CARSDEPO.BACKBONE`` with an FPN on top."""
    body = build_backbone_body(
        cfg.CARSDEPO.BACKBONE,
        norm=cfg.CARSDEPO.NORM,
        pretrained=cfg.CARSDEPO.PRETRAINED,
        weights_path=cfg.CARSDEPO.WEIGHTS_PATH or None,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
    )
    # "GN" sized as in the torchvision backend: works for any channel count (detectron2's own
    # GN needs a multiple of 32)
    norm = group_norm if cfg.MODEL.FPN.NORM == "GN" else cfg.MODEL.FPN.NORM
    return FPN(
        bottom_up=BodyBackbone(body),
        in_features=list(cfg.MODEL.FPN.IN_FEATURES),
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=norm,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


def detectron2_cfg(
    config: DetectorConfig,
    *,
    train_dataset: str | None = None,
    val_dataset: str | None = None,
    output_dir: str = "",
    load_backbone_weights: bool = True,
) -> CfgNode:
    """The detectron2 cfg for a resolved ``config`` (backend, device and norm decided).

    ``load_backbone_weights=False`` describes the same architecture without reading ImageNet
    or user weights, for loading a saved detector.
    """
    if len(config.anchor_sizes) != len(FPN_LEVELS):
        raise ConfigError(
            f"anchor_sizes has {len(config.anchor_sizes)} entries, the detectron2 backend has "
            f"{len(FPN_LEVELS)} FPN levels ({', '.join(FPN_LEVELS)}): give the sizes of each level"
        )
    if config.device not in ("cpu", "cuda") or config.norm == "auto":
        raise ConfigError("detectron2_cfg needs a resolved config (backends.resolve_config)")
    cfg = get_cfg()
    cfg.CARSDEPO = CfgNode({
        "BACKBONE": config.backbone,
        "PRETRAINED": bool(config.pretrained and load_backbone_weights),
        "WEIGHTS_PATH": (config.weights_path or "") if load_backbone_weights else "",
        "NORM": config.norm,
        "OPTIMIZER": config.optimizer,
        "CLIP_GRAD_NORM": float(config.clip_grad_norm),  # global norm, see the trainer's hook
        "BRIGHTNESS": float(config.brightness),
        "CONTRAST": float(config.contrast),
        "SCORE_THRESHOLD": float(config.score_threshold),
    })

    model = cfg.MODEL
    model.DEVICE = config.device
    model.META_ARCHITECTURE = "GeneralizedRCNN"
    model.WEIGHTS = ""
    model.MASK_ON = False
    # every registered body takes ImageNet-normalised RGB; detectron2 works in 0-255 pixels
    model.PIXEL_MEAN = [255.0 * value for value in IMAGENET_MEAN]
    model.PIXEL_STD = [255.0 * value for value in IMAGENET_STD]
    model.BACKBONE.NAME = build_carsdepo_fpn_backbone.__name__
    model.BACKBONE.FREEZE_AT = config.freeze_at
    model.FPN.IN_FEATURES = list(FEATURE_NAMES)
    model.FPN.OUT_CHANNELS = config.fpn_channels
    model.FPN.NORM = "GN"
    # a list of sizes per level; one list of ratios is broadcast to every level
    model.ANCHOR_GENERATOR.SIZES = [list(level) for level in config.anchor_sizes]
    model.ANCHOR_GENERATOR.ASPECT_RATIOS = [list(config.aspect_ratios)]
    model.RPN.IN_FEATURES = list(FPN_LEVELS)
    model.RPN.PRE_NMS_TOPK_TRAIN = config.rpn_pre_nms_top_n_train
    model.RPN.POST_NMS_TOPK_TRAIN = config.rpn_post_nms_top_n_train
    model.RPN.PRE_NMS_TOPK_TEST = config.rpn_pre_nms_top_n_test
    model.RPN.POST_NMS_TOPK_TEST = config.rpn_post_nms_top_n_test
    model.RPN.BATCH_SIZE_PER_IMAGE = config.rpn_batch_size_per_image
    model.RPN.IOU_THRESHOLDS = [config.rpn_bg_iou_thresh, config.rpn_fg_iou_thresh]
    model.RPN.IOU_LABELS = [0, -1, 1]
    model.ROI_HEADS.NAME = "StandardROIHeads"
    model.ROI_HEADS.IN_FEATURES = list(ROI_LEVELS)
    model.ROI_HEADS.NUM_CLASSES = len(CLASS_NAMES)
    model.ROI_HEADS.BATCH_SIZE_PER_IMAGE = config.box_batch_size_per_image
    model.ROI_HEADS.SCORE_THRESH_TEST = config.box_score_thresh
    model.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    model.ROI_BOX_HEAD.NUM_CONV = 0
    model.ROI_BOX_HEAD.NUM_FC = 2
    model.ROI_BOX_HEAD.FC_DIM = config.box_head_dim
    model.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    model.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 2
    model.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"

    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.MIN_SIZE_TRAIN = (config.min_size,)
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
    cfg.INPUT.MAX_SIZE_TRAIN = config.max_size
    cfg.INPUT.MIN_SIZE_TEST = config.min_size
    cfg.INPUT.MAX_SIZE_TEST = config.max_size
    cfg.INPUT.RANDOM_FLIP = "horizontal" if config.hflip else "none"

    cfg.DATASETS.TRAIN = (train_dataset,) if train_dataset else ()
    cfg.DATASETS.TEST = (val_dataset,) if val_dataset else ()
    # two cores: a worker process would only compete with the model
    cfg.DATALOADER.NUM_WORKERS = 0
    # images without boxes are kept: they teach the model to answer "None"
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False

    solver = cfg.SOLVER
    solver.IMS_PER_BATCH = config.batch_size
    solver.BASE_LR = config.lr
    solver.MAX_ITER = config.iterations
    solver.MOMENTUM = 0.9
    solver.WEIGHT_DECAY = config.weight_decay
    solver.WEIGHT_DECAY_NORM = config.weight_decay
    # as in the torchvision backend: linear warm-up from lr/100 to lr, then a cosine decay to
    # lr/100 over the iterations after the warm-up (RESCALE_INTERVAL); a warm-up as long as
    # the run is cut short by one iteration (detectron2 cannot rescale an empty cosine part)
    solver.LR_SCHEDULER_NAME = "WarmupCosineLR"
    solver.BASE_LR_END = config.lr / 100
    solver.WARMUP_FACTOR = 0.01
    solver.WARMUP_ITERS = min(config.warmup_iterations, config.iterations - 1)
    solver.WARMUP_METHOD = "linear"
    solver.RESCALE_INTERVAL = True
    solver.STEPS = ()
    solver.CHECKPOINT_PERIOD = config.checkpoint_period
    # detectron2 clips per parameter; the backend clips the global norm (CARSDEPO.CLIP_GRAD_NORM)
    solver.CLIP_GRADIENTS.ENABLED = False

    cfg.TEST.EVAL_PERIOD = config.eval_period
    cfg.TEST.DETECTIONS_PER_IMAGE = config.box_detections_per_img
    cfg.SEED = config.seed
    cfg.OUTPUT_DIR = output_dir
    cfg.freeze()
    return cfg
