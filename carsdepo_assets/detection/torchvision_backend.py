"""Faster R-CNN from ``torchvision.models.detection`` on a registered backbone body + FPN.

Sized for small damage on a CPU: anchors from 16 px on stride-8 features (or several sizes per
level, learned from the training boxes: anchors.py) with elongated aspect ratios for scratches,
GroupNorm in the FPN (stable from scratch and with tiny batches), a slim two-layer box head, and
proposal counts from the config. Images are resized with Pillow before the model
(``data.image_tensor``), so the model's own transform only normalises and batches. """

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import AnchorGenerator, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from carsdepo_assets.detection.backbones import (
    FEATURE_NAMES,
    BackboneBody,
    build_backbone_body,
    group_norm,
)
from carsdepo_assets.detection.backends import (
    DetectorBackend,
    TrainedDetector,
    TrainingSummary,
    TrainProgress,
)
from carsdepo_assets.detection.config import ConfigError, DetectorConfig
from carsdepo_assets.detection.data import LoadedSplit, image_tensor
from carsdepo_assets.detection.training import fit, pretrain_on_synthetic_panels
from carsdepo_assets.detection.types import Detection
from carsdepo_assets.taxonomy import CLASS_NAME_BY_ID, CLASS_NAMES

PREDICT_BATCH = 8
LEVELS = (*FEATURE_NAMES, "pool")  # FPN outputs: c3, c4, c5 and a max-pooled extra level


class FpnBackbone(nn.Module):
    """A backbone body with a GroupNorm FPN on top, as torchvision's FasterRCNN expects."""

    def __init__(self, body: BackboneBody, channels: int):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(
            [body.out_channels[name] for name in FEATURE_NAMES], channels,
            extra_blocks=LastLevelMaxPool(), norm_layer=group_norm,
        )
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(x))


class _PreResizedTransform(GeneralizedRCNNTransform):
    """Normalise and batch only: images arrive already resized by ``data.image_tensor``."""

    def resize(self, image, target=None):
        return image, target


def build_model(config: DetectorConfig, *, load_backbone_weights: bool = True) -> FasterRCNN:
    """The Faster R-CNN for ``config`` (resolved: ``norm`` is not ``auto``).

    ``load_backbone_weights=False`` builds the same architecture without reading ImageNet
    weights, for loading a saved detector.
    """
    if len(config.anchor_sizes) != len(LEVELS):
        raise ConfigError(
            f"anchor_sizes has {len(config.anchor_sizes)} entries, the torchvision backend has "
            f"{len(LEVELS)} feature levels ({', '.join(LEVELS)}): give the sizes of each level"
        )
    body = build_backbone_body(
        config.backbone, norm=config.resolved_norm,
        pretrained=config.pretrained and load_backbone_weights,
        weights_path=config.weights_path if load_backbone_weights else None,
        freeze_at=config.freeze_at,
    )
    # channels-last weights make oneDNN's CPU convolutions (depthwise ones above all) cheaper:
    # measured on 2 cores, a training step took 28 % less CPU time and inference 15 % less,
    # with the same outputs (benchmarks/bench_detector.py records the training rate)
    backbone = FpnBackbone(body, config.fpn_channels).to(memory_format=torch.channels_last)
    anchors = AnchorGenerator(
        sizes=config.anchor_sizes,
        aspect_ratios=(config.aspect_ratios,) * len(LEVELS),
    )
    roi_pool = MultiScaleRoIAlign(featmap_names=list(FEATURE_NAMES), output_size=7,
                                  sampling_ratio=2)
    model = FasterRCNN(
        backbone,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(config.fpn_channels, anchors.num_anchors_per_location()[0]),
        rpn_pre_nms_top_n_train=config.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=config.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=config.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=config.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=config.rpn_batch_size_per_image,
        rpn_fg_iou_thresh=config.rpn_fg_iou_thresh,
        rpn_bg_iou_thresh=config.rpn_bg_iou_thresh,
        box_roi_pool=roi_pool,
        box_head=TwoMLPHead(config.fpn_channels * 7 * 7, config.box_head_dim),
        box_predictor=FastRCNNPredictor(config.box_head_dim, len(CLASS_NAMES) + 1),
        box_batch_size_per_image=config.box_batch_size_per_image,
        box_detections_per_img=config.box_detections_per_img,
        box_score_thresh=config.box_score_thresh,
    )
    model.transform = _PreResizedTransform(
        config.min_size, config.max_size, list(body.pixel_mean), list(body.pixel_std)
    )
    return model


class TorchvisionDetector(TrainedDetector):
    backend = "torchvision"

    def __init__(self, model: FasterRCNN, config: DetectorConfig,
                 summary: TrainingSummary | None = None):
        super().__init__(model, config, summary)
        self.device = next(model.parameters()).device

    def _predict_resized(self, images: list[Image.Image], min_size: int,
                         max_size: int) -> list[list[Detection]]:
        self.model.eval()
        results: list[list[Detection]] = []
        for start in range(0, len(images), PREDICT_BATCH):
            chunk = images[start:start + PREDICT_BATCH]
            tensors = [image_tensor(image, min_size, max_size)[0] for image in chunk]
            with torch.inference_mode():
                outputs = self.model([tensor.to(self.device) for tensor in tensors])
            for image, tensor, output in zip(chunk, tensors, outputs, strict=True):
                results.append(_detections(output, tensor.shape, image.size))
        return results

    def _set_output_limits(self, score_floor: float, max_detections: int) -> None:
        self.model.roi_heads.score_thresh = score_floor
        self.model.roi_heads.detections_per_img = max_detections

    @classmethod
    def _build_model(cls, config: DetectorConfig) -> FasterRCNN:
        return build_model(config, load_backbone_weights=False)


def _detections(output: dict, tensor_shape: torch.Size, size: tuple[int, int]) -> list[Detection]:
    """Model output at input scale -> detections in the original image's pixels."""
    width, height = size
    fx, fy = width / tensor_shape[-1], height / tensor_shape[-2]
    boxes = output["boxes"].cpu() * torch.tensor([fx, fy, fx, fy])
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    return [
        Detection(CLASS_NAME_BY_ID[int(label)], float(score), tuple(box))
        for box, label, score in zip(boxes.tolist(), output["labels"].tolist(),
                                     output["scores"].tolist(), strict=True)
    ]


class TorchvisionBackend(DetectorBackend):
    name = "torchvision"
    detector_class = TorchvisionDetector

    def _fit(
        self,
        train: LoadedSplit,
        val: LoadedSplit | None,
        config: DetectorConfig,
        workdir: Path,
        on_progress: Callable[[TrainProgress], None] | None,
        start_from: TrainedDetector | None = None,
    ) -> TorchvisionDetector:
        torch.manual_seed(config.seed)
        model = build_model(config)
        if start_from is not None:
            model.load_state_dict(start_from.model.state_dict())

        def as_detector(summary: TrainingSummary | None) -> TorchvisionDetector:
            return TorchvisionDetector(model, config, summary)

        if config.synthetic_pretrain_iterations:
            pretrain_on_synthetic_panels(model, config, workdir, as_detector)
        return fit(model, train, val, config, workdir, as_detector, on_progress)
