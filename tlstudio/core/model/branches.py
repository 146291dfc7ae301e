"""Where a base model's branches split and join, for people reading the network.

EfficientNet's and ResNet's blocks compute a change on a side branch and add it
back to their input (the skip connection); Inception-style blocks run parallel
paths and concatenate them. In the tensor catalogue such a block is a run of
tensors that cannot be cut, followed by the join (``block3b_add:0``) where the
model can be cut again. :func:`branch_units` names those runs so that a view
can fold them into one row, ``block3b + skip (add)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

from tlstudio.core.model.tensors import TensorInfo
from tlstudio.core.spec.text import counted


@dataclass(frozen=True)
class BranchUnit:
    """Consecutive catalogue tensors inside branches that join again at ``join``.

    ``name`` is what the layers' names share (``block3b``), ``members`` the
    tensors inside the branches in catalogue order, ``join`` the tensor where
    they join and ``join_type`` its layer type. ``skip`` is True when the join
    also reads the tensor just before the unit unchanged: an identity skip
    connection, as in EfficientNet's and ResNet's residual blocks.
    """

    name: str
    members: tuple[str, ...]
    join: str
    join_type: str
    skip: bool

    def label(self) -> str:
        """A row's worth: ``block3b + skip (add)``, or ``mixed: parallel paths (concatenate)``."""
        how = " + skip" if self.skip else ": parallel paths"
        return f"{self.name}{how} ({self.join_type.lower()})"

    def summary(self) -> str:
        """``block3b: 8 layers + skip (add)``, or ``mixed: 2 layers on parallel paths (concatenate)``."""
        how = "+ skip" if self.skip else "on parallel paths"
        return f"{self.name}: {counted(len(self.members), 'layer')} {how} ({self.join_type.lower()})"


def branch_units(infos: Sequence[TensorInfo]) -> list[BranchUnit]:
    """The branch units of a catalogue (``tensors.catalogue``), in order; none for a plain chain like VGG."""
    by_name = {info.name: info for info in infos}
    units: list[BranchUnit] = []
    start = 0
    while start < len(infos):
        join = infos[start].joins_at
        if not join or join not in by_name:
            start += 1
            continue
        end = start
        while end < len(infos) and infos[end].joins_at == join:
            end += 1
        members = infos[start:end]
        joined = by_name[join]
        before = infos[start - 1].name if start > 0 else None
        units.append(
            BranchUnit(
                name=_shared_name([info.layer for info in members] + [joined.layer]) or joined.layer,
                members=tuple(info.name for info in members),
                join=join,
                join_type=joined.layer_type,
                skip=before is not None and before in joined.merges,
            )
        )
        start = end
    return units


def _shared_name(layers: list[str]) -> str:
    """The common prefix of layer names up to a ``_``: ``block3b_dwconv``, ``block3b_add`` → ``block3b``."""
    prefix = os.path.commonprefix(layers)
    if prefix in layers:
        return prefix
    return prefix[: prefix.rfind("_")] if "_" in prefix else ""
