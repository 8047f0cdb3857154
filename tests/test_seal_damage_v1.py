"""What docs/SECURITY.md ("Damaged kits") says of format-1 kits: their tags cover the
ciphertext, so a flipped bit in the pad changes the text shown and nothing notices; a
flipped bit in a key is caught. (Format 2 catches both: tests/test_seal2.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ghostline.errors import RejectedMessage
from ghostline.pad.kit import Kit
from ghostline.pad.seal import Rule, open_sealed, seal_with_kit
from helpers import MemoryAcceptedLog, make_kit_set, open_kits

OFFSET = 10
TEXT = b"pay $100"
ONE = TEXT.index(b"1")  # 0x31 ^ 0x08 = 0x39: "1" becomes "9"


@pytest.fixture
def kits(tmp_path: Path) -> Iterator[list[Kit]]:
    opened = open_kits(make_kit_set(tmp_path / "kits", 3, slice_len=256, auth_keys=8))
    yield opened
    for kit in opened:
        kit.close()


def flip_on_disk(kit: Kit, at: int, mask: int) -> None:
    with open(kit.path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ mask]))


def shown(kit: Kit, data: bytes) -> bytes:
    return open_sealed(kit, data, MemoryAcceptedLog()).plaintext


def test_a_flipped_pad_bit_in_the_senders_kit_changes_what_every_receiver_shows(
    kits: list[Kit],
) -> None:
    flip_on_disk(kits[0], kits[0].layout.slice_start(0) + OFFSET + ONE, 0x08)
    data = seal_with_kit(kits[0], 1, OFFSET, TEXT)
    assert shown(kits[1], data) == b"pay $900"
    assert shown(kits[2], data) == b"pay $900"


def test_a_flipped_pad_bit_in_a_receivers_kit_changes_what_that_receiver_shows(
    kits: list[Kit],
) -> None:
    data = seal_with_kit(kits[0], 1, OFFSET, TEXT)
    flip_on_disk(kits[1], kits[1].layout.slice_start(0) + OFFSET + ONE, 0x08)
    assert shown(kits[1], data) == b"pay $900"
    assert shown(kits[2], data) == TEXT


def test_a_flipped_bit_in_a_receivers_key_is_caught(kits: list[Kit]) -> None:
    data = seal_with_kit(kits[0], 1, OFFSET, TEXT)
    flip_on_disk(kits[1], kits[1].layout.inbound_key_offset(0, 1) + 3, 0x01)
    with pytest.raises(RejectedMessage) as caught:
        shown(kits[1], data)
    assert caught.value.rule == Rule.BAD_TAG
