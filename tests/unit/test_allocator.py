"""retain_freed_memory: large tensors come from glibc's heap (kept for reuse), not from fresh mmap regions."""

from __future__ import annotations

import ctypes
import sys

import pytest
import torch

from recsys.utils.allocator import retain_freed_memory


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def mmapped_bytes_while_holding(numel: int) -> int:
    """glibc's bytes in mmapped chunks (``mallinfo2().hblkhd``) while a ``numel`` float tensor is alive."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    before = libc.mallinfo2().hblkhd
    t = torch.empty(numel)
    during = libc.mallinfo2().hblkhd
    del t
    return during - before


@pytest.mark.skipif(not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2"),
                    reason="glibc >= 2.33")
def test_large_tensors_come_from_the_heap_not_fresh_mmaps():
    numel = 12 << 20  # 48 MiB: above glibc's default mmap threshold (adaptive, at most 32 MiB)
    assert retain_freed_memory()
    assert mmapped_bytes_while_holding(numel) == 0  # without it: a fresh 48 MiB mmap region
