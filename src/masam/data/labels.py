"""Label mapping: label values merged as labels are read (``--merge-labels``, BTCV's 13:12), the
text form of a map, and the class names that remain.

Used by ``masam prepare`` (raw downloads), the cache (``masam preprocess`` and training) and
``masam evaluate``."""

from __future__ import annotations

import re

import numpy as np

from ..errors import ConfigError


def merge_labels(array: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Label values replaced by ``mapping`` (others unchanged), e.g. ``{13: 12}``; same shape and dtype."""
    if not mapping:
        return array
    top = max(int(array.max(initial=0)), *mapping) + 1
    table = np.arange(top, dtype=np.int64)
    for src, dst in mapping.items():
        table[int(src)] = int(dst)
    return table[array].astype(array.dtype)


def parse_label_map(text: str) -> dict[int, int]:
    """``"13:12,14:0"`` -> ``{13: 12, 14: 0}`` (the form of ``--merge-labels``)."""
    mapping = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)\s*:\s*(\d+)", part)
        if match is None:
            raise ValueError(f"label merge {part!r}: expected FROM:TO with non-negative integers, e.g. 13:12")
        mapping[int(match[1])] = int(match[2])
    return mapping


def merged_names(labels: dict[str, int], mapping: dict[int, int], names: dict[int, str] | None = None):
    """``dataset.json`` labels after a merge: values merged away disappear; ``names`` renames."""
    by_value = {v: k for k, v in labels.items() if v not in mapping}
    by_value.update(names or {})
    return {name: value for value, name in sorted(by_value.items())}


def label_map_from_text(text: str | None) -> dict[int, int]:
    """``--merge-labels`` text -> ``{from: to}`` (empty when not given); a bad map is a ConfigError."""
    try:
        return parse_label_map(text) if text else {}
    except ValueError as err:
        raise ConfigError(str(err)) from None
