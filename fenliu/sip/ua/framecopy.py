"""Copying a pjsua2 ``ByteVector`` (a SWIG ``std::vector<unsigned char>``) to ``bytes`` fast.

``bytes(frame.buf)`` walks the vector element by element through SWIG: 240–900 µs for one
20 ms frame at 16 kHz, on the media clock thread, 50 times a second per leg. The vector's
storage is contiguous, so we read its [begin, end) pointers (libstdc++ layout: three pointers
``_M_start, _M_finish, _M_end_of_storage``) and copy the block with ``ctypes.string_at``:
about 2.5 µs. ``FastCopy.check()`` proves the layout on this build at start-up and the copier
falls back to ``bytes()`` if it does not hold.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

_PTR = ctypes.sizeof(ctypes.c_void_p)


def _pointer_copy(vec: Any) -> bytes:
    addr = int(vec.this)
    begin = ctypes.c_void_p.from_address(addr).value or 0
    end = ctypes.c_void_p.from_address(addr + _PTR).value or 0
    if end <= begin:
        return b""
    return ctypes.string_at(begin, end - begin)


def _slow_copy(vec: Any) -> bytes:
    return bytes(vec)


def make_copier(byte_vector_type: Callable[[bytes], Any]) -> tuple[Callable[[Any], bytes], str]:
    """Return (copy function, name) after checking the fast path on real vectors."""
    try:
        for sample in (bytes(range(256)) * 3, b"\x00\x7f" * 320, b""):
            vec = byte_vector_type(sample)
            if _pointer_copy(vec) != sample or vec.size() != len(sample):
                return _slow_copy, "bytes()"
    except Exception:  # an unexpected binding: the slow path is always right
        return _slow_copy, "bytes()"
    return _pointer_copy, "pointer"
