"""retain_freed_memory: a freed large tensor's pages are reused by the next one instead of being faulted in again."""

from __future__ import annotations

import resource
import sys

import pytest
import torch

from recsys.utils.allocator import retain_freed_memory


def minor_faults_of_a_fresh_tensor(numel: int) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(numel)
    t.fill_(1.0)  # touch every page
    del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_large_blocks_are_reused_without_page_faults():
    numel = 12 << 20  # 48 MiB: above glibc's adaptive mmap threshold (at most 32 MiB by default)
    pages = numel * 4 // resource.getpagesize()
    # (with glibc's defaults every such tensor gets fresh mmap pages: ~pages faults each time)
    assert retain_freed_memory()
    minor_faults_of_a_fresh_tensor(numel)  # the first one grows the heap
    assert minor_faults_of_a_fresh_tensor(numel) < pages // 10  # then the same pages serve again
