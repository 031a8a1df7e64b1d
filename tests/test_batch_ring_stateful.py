"""Stateful test of the batch ring: random packs, receipts, drops and repeated receipts.

One process plays both sides: the worker packs batches into its ring, and
the reader (this same process, allowed to attach its own ring) receives them
as views of the slots, or the worker receives its own batches as copies. The
model is the list of batches in flight and held. After every step, every
batch the reader holds must still show exactly the bytes that were packed;
a batch received a second time must be refused, never shown with another
batch's bytes.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, multiple, rule

from omeframe.engine import batch_ring as br
from stateful_runs import stateful_case

pytestmark = pytest.mark.skipif(not br.supported(), reason="batch rings need memfd_create and /proc (Linux)")

_STATE = ("_mine", "_replaced", "_attached", "_older", "_in_flight", "_refused", "_held", "_self_attach")


@st.composite
def batches(draw: st.DrawFn) -> list[np.ndarray]:
    """One to three arrays; now and then one larger than the ring's first slots (the ring grows)."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        dtype = draw(st.sampled_from(["uint8", "<u2", ">i4", "float32"]))
        n = draw(st.one_of(st.integers(0, 64), st.integers(4000, 70_000)))
        seed = draw(st.integers(0, 2**32 - 1))
        out.append(np.random.default_rng(seed).integers(0, 250, n).astype(dtype))
    return out


class RingModel(RuleBasedStateMachine):
    """A worker's ring and its reader, in one process, against lists of expected arrays."""

    sent = Bundle("sent")  # packed, not yet received: (Packed, expected arrays)
    received = Bundle("received")  # Packed objects received once (by either side)

    @initialize()
    def start(self) -> None:
        self.saved = {name: getattr(br, name) for name in _STATE}
        br._mine = None
        br._replaced = {}
        br._attached = {}
        br._older = weakref.WeakValueDictionary()
        br._in_flight = {}
        br._refused = set()
        br._held = {}
        br._self_attach = True
        self.held: list[tuple[list[np.ndarray], list[np.ndarray]]] = []  # (views, expected)

    def teardown(self) -> None:
        self.held = []
        gc.collect()
        for name, value in getattr(self, "saved", {}).items():
            setattr(br, name, value)

    @rule(target=sent, arrays=batches())
    def pack(self, arrays: list[np.ndarray]) -> Any:
        packed = br.pack(arrays)
        if packed is None:  # not attached yet, or a new ring: the batch goes the usual way
            invitation = br.invitation()
            if invitation is not None:
                assert br.attach(invitation)
            return multiple()
        return packed, [a.copy() for a in arrays]

    @rule(target=received, item=consumes(sent))
    def receive(self, item: Any) -> Any:
        packed, expected = item
        views = br.unpack(packed)
        _assert_same(views, expected)
        self.held.append((views, expected))
        return packed

    @rule(target=received, item=consumes(sent))
    def receive_in_the_worker(self, item: Any) -> Any:
        packed, expected = item
        br._self_attach = False  # the process that packed it: copies, and the slot is freed at once
        try:
            copies = br.unpack(packed)
        finally:
            br._self_attach = True
        _assert_same(copies, expected)
        assert all(c.base is None for c in copies)
        return packed

    @rule(packed=received, as_worker=st.booleans())
    def receive_again(self, packed: Any, as_worker: bool) -> None:
        br._self_attach = not as_worker
        try:
            with pytest.raises(RuntimeError, match="already received"):
                br.unpack(packed)
        finally:
            br._self_attach = True

    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        if not self.held:
            return
        i = data.draw(st.integers(0, len(self.held) - 1))
        views, expected = self.held.pop(i)
        if data.draw(st.booleans()) and views and views[0].size > 1:  # keep a slice: the slot stays held
            self.held.append(([views[0][1:]], [expected[0][1:]]))
        del views
        gc.collect()

    @invariant()
    def held_batches_never_change(self) -> None:
        for views, expected in getattr(self, "held", []):
            _assert_same(views, expected)


def _assert_same(got: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == e.dtype and g.shape == e.shape and np.array_equal(g, e)


TestRingModel = stateful_case(RingModel, examples=40, steps=40)
