"""The codec measurement (python -m benchmarks.codecs) measures what a hop really does: each
example it times decodes back to the envelope it was encoded from."""

from __future__ import annotations

from packline_contracts.envelope import decode, encode
from packline_contracts.examples import example_envelope

from benchmarks import codecs


def test_every_measured_message_goes_through_encode_and_decode_unchanged() -> None:
    for kind in codecs.KINDS:
        envelope = example_envelope(kind)
        record = encode(envelope)
        assert decode(record.value, tuple(record.headers), record.key) == envelope
        size, figures = codecs.costs(kind, [])
        assert size == len(record.value) and len(figures) == 2 and min(figures) > 0
