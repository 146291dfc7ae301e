"""Whether the classes are balanced enough to train without a warning.

The Data page and ``tlstudio data`` show the same sentence.
"""

from __future__ import annotations

from typing import Mapping

IMBALANCE_RATIO = 3.0


def imbalance_warning(counts: Mapping[str, int], ratio: float = IMBALANCE_RATIO) -> str:
    """A sentence about class imbalance when the largest class is over ``ratio`` times the smallest, else ``""``.

    Classes without images are left out (they are reported as empty classes).
    """
    usable = {name: n for name, n in counts.items() if n > 0}
    if len(usable) < 2:
        return ""
    largest = max(usable, key=usable.__getitem__)
    smallest = min(usable, key=usable.__getitem__)
    factor = usable[largest] / usable[smallest]
    if factor <= ratio:
        return ""
    return (
        f"The classes are imbalanced: {largest!r} has {usable[largest]} images, {smallest!r} only "
        f"{usable[smallest]} ({factor:.1f}× fewer). Training weights the classes to compensate "
        f"(class weights, on by default); more images of {smallest!r} would help most."
    )
