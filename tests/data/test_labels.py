"""Label mapping (masam.data.labels): merging values, the text form of a map, the names that remain."""

from __future__ import annotations

import numpy as np
import pytest

from masam.data.labels import label_map_from_text, merge_labels, merged_names, parse_label_map
from masam.errors import ConfigError


def test_merge_labels_and_its_text_form():
    array = np.array([[0, 12, 13], [13, 5, 14]], np.uint8)
    assert merge_labels(array, {13: 12}).tolist() == [[0, 12, 12], [12, 5, 14]]
    assert merge_labels(array, {13: 12, 14: 0, 20: 1}).tolist() == [[0, 12, 12], [12, 5, 0]]
    assert merge_labels(array, {}).dtype == np.uint8 and merge_labels(array, {13: 12}).dtype == np.uint8
    assert parse_label_map("13:12, 14:0") == {13: 12, 14: 0}
    with pytest.raises(ValueError, match="expected FROM:TO"):
        parse_label_map("13-12")


def test_the_option_text_and_the_names_after_a_merge():
    assert label_map_from_text(None) == {} and label_map_from_text("13:12") == {13: 12}
    with pytest.raises(ConfigError, match="label merge '13-12'"):
        label_map_from_text("13-12")
    labels = {"background": 0, "a": 12, "b": 13, "c": 14}
    assert merged_names(labels, {13: 12}) == {"background": 0, "a": 12, "c": 14}
    assert merged_names(labels, {13: 12}, {12: "a_and_b"}) == {"background": 0, "a_and_b": 12, "c": 14}
