"""What a watch asks for beyond the plain tree: submodules and Git LFS objects."""

from enum import StrEnum
from typing import Self


class SubmoduleMode(StrEnum):
    """`Watch.submodules`: how far gitlinks are expanded into files."""

    OFF = "off"  # gitlinks are skipped (and counted), as always
    SHALLOW = "shallow"  # the commit's own submodules, not theirs
    RECURSIVE = "recursive"  # submodules of submodules too, up to a depth limit

    @classmethod
    def parse(cls, value: str | None) -> Self:
        """The mode a stored or given value names (None: off); ValueError otherwise."""
        if value is None or value == "":
            return cls.OFF
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise ValueError(
                f"submodules must be one of {', '.join(m.value for m in cls)}, not {value[:40]!r}"
            ) from None
