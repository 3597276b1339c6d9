"""Fixtures shared by the library's tests."""

import pytest
from synthetic_ct import train_on_synthetic_cts, two_organ_config


@pytest.fixture(scope="session")
def organ_model(tmp_path_factory):
    """A small two-organ U-Net trained here on synthetic CTs where organ 1 was contoured in half of
    the cases only (intensity tells the organs apart, so a few steps teach it)."""
    config = two_organ_config()
    card_input = {"modality": "CT", "body_region": "test", "organs": ["bright", "brighter"], "intensity": "HU"}
    best, card, _ = train_on_synthetic_cts(config, tmp_path_factory.mktemp("organs"), card_input=card_input)
    return best, card
