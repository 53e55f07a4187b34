"""DetectorConfig: JSON round trips, presets, clear errors, and how ``auto`` is resolved."""

from __future__ import annotations

import json
import sys

import pytest

from carsdepo_assets.detection.backends import backend_available, resolve_config
from carsdepo_assets.detection.config import PRESETS, ConfigError, DetectorConfig


def test_config_survives_a_json_round_trip_unchanged():
    config = DetectorConfig.preset("gpu", seed=7, weights_path="/models/lite0.pth")
    assert DetectorConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_default_config_is_the_cpu_preset_and_real_data_presets_use_larger_inputs():
    assert DetectorConfig() == DetectorConfig.preset("cpu")
    assert set(PRESETS) == {"cpu", "gpu", "real_cpu", "real_cpu_short"}
    for name in ("gpu", "real_cpu"):
        real = DetectorConfig.preset(name)
        assert real.min_size > DetectorConfig().min_size
        assert real.iterations > DetectorConfig().iterations


def test_the_ablation_preset_is_real_cpu_at_a_shorter_budget():
    full, short = DetectorConfig.preset("real_cpu"), DetectorConfig.preset("real_cpu_short")
    assert short.iterations < full.iterations
    assert short == full.replace(iterations=short.iterations, eval_period=short.eval_period)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"learning_rate": 0.1}, "learning_rate"),
        ({"backend": "yolo"}, "backend"),
        ({"min_size": 800, "max_size": 512}, "min_size"),
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"iterations": 0}, "iterations"),
        ({"norm": "gn", "pretrained": True}, "norm='gn'"),
    ],
)
def test_invalid_config_is_rejected_naming_the_field(data, named):
    with pytest.raises(ConfigError, match=named):
        DetectorConfig.from_dict(data)


def test_unknown_preset_is_rejected_with_the_known_ones():
    with pytest.raises(ConfigError, match="cpu"):
        DetectorConfig.preset("tpu")


def test_norm_auto_freezes_batchnorm_over_weights_and_uses_groupnorm_from_scratch():
    assert DetectorConfig(pretrained=True).resolved_norm == "frozen_bn"
    assert DetectorConfig(pretrained=False, weights_path="w.pth").resolved_norm == "frozen_bn"
    assert DetectorConfig(pretrained=False).resolved_norm == "gn"


def test_auto_backend_resolves_to_torchvision_when_detectron2_is_absent(monkeypatch):
    # None in sys.modules makes ``import detectron2`` raise ImportError, as when not installed
    monkeypatch.setitem(sys.modules, "detectron2", None)
    resolved = resolve_config(DetectorConfig(backend="auto", device="auto"))
    assert resolved.backend == "torchvision"
    assert resolved.device in ("cpu", "cuda")
    assert resolved.norm == "frozen_bn"
    with pytest.raises(ConfigError, match="detectron2"):
        resolve_config(DetectorConfig(backend="detectron2"))


@pytest.mark.detectron2
def test_auto_backend_prefers_detectron2_when_it_is_importable():
    if not backend_available("detectron2"):
        pytest.skip("detectron2 (or its carsdepo backend) is not installed")
    assert resolve_config(DetectorConfig(backend="auto")).backend == "detectron2"
