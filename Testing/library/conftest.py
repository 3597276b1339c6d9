"""Fixtures shared by the library's tests."""

import pytest
from synthetic_ct import LPS_RAS, train_on_synthetic_cts

from imagetomesh.preprocessing import GridSpec
from imagetomesh.training.augment import AugmentConfig


@pytest.fixture(scope="session")
def organ_model(tmp_path_factory):
    """A small two-organ U-Net trained here on synthetic CTs where organ 1 was contoured in half of
    the cases only (intensity tells the organs apart, so a few steps teach it)."""
    from imagetomesh.training.configs import TrainConfig

    organs = [
        {"name": "bright", "label": 1, "colour": [255, 0, 0]},
        {"name": "brighter", "label": 2, "colour": [0, 0, 255]},
    ]
    config = TrainConfig(
        "unet",
        {"unet": {"in_channels": 1, "num_classes": 3, "base": 8, "depth": 2, "norm": "batch"}},
        # the whole image and air around it (as the head-and-neck grid holds air beyond a scan's ends)
        grid=GridSpec((32, 32, 40), (4.0, 4.0, 4.0), LPS_RAS, "ct"),
        steps=500,
        lr=3e-2,
        val_every=500,
        threads=1,
        organs=organs,
        patch=[12, 12, 12],
        foreground=0.5,  # air and padding too: air must not look like the fat-like organ
        augment=AugmentConfig(flip=0, rotate_deg=0, scale=0, intensity_scale=0, intensity_shift=0, noise=0),
    )
    card_input = {"modality": "CT", "body_region": "test", "organs": ["bright", "brighter"], "intensity": "HU"}
    best, card, _ = train_on_synthetic_cts(config, tmp_path_factory.mktemp("organs"), card_input=card_input)
    return best, card
