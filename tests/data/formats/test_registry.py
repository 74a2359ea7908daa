"""tinyclf.data.formats.registry: the one list of datasets. params accept exactly its names, and an
unknown name is refused with a suggestion. (Each format's own facts: its test module; the contract
every registered format keeps: test_contract.py.)"""

from __future__ import annotations

import pytest

from tinyclf.data.formats import registry
from tinyclf.params import ParamsError, params_from_dict


def test_params_know_exactly_the_registered_datasets():
    for name in registry.names():
        assert params_from_dict({"data": {"dataset": name, "image_size": 64},
                                 "download": {"source": "/photos"}}).data.dataset == name
    with pytest.raises(ParamsError) as err:
        params_from_dict({"data": {"dataset": "cifar-10"}})
    assert f"must be one of {', '.join(registry.names())}" in str(err.value)
    assert "did you mean 'cifar10'" in str(err.value)


def test_unknown_dataset_is_named_with_a_suggestion():
    with pytest.raises(ValueError, match=r"unknown dataset 'tiny_imagenet'.*did you mean 'tiny-imagenet'"):
        registry.get("tiny_imagenet")
    with pytest.raises(ValueError, match="has no generated stand-in"):
        registry.stand_in("folder")
