"""What this machine can hold: free main memory and, for a CUDA device, free GPU memory (bytes).

Used to refuse work that cannot fit (an image file declaring 256 GB, a training patch too large) with a sentence
that gives the sizes, before allocating, instead of dying in the allocator.
"""

from __future__ import annotations

import os
import sys


def available_memory_bytes() -> int | None:
    """Main memory available to a new allocation now (Linux: ``MemAvailable``), else total physical memory;
    ``None`` when the system does not say."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if sys.platform == "win32":
        import ctypes

        class MemoryStatus(ctypes.Structure):
            _fields_ = [("length", ctypes.c_ulong), ("load", ctypes.c_ulong), ("total", ctypes.c_ulonglong),
                        ("available", ctypes.c_ulonglong), ("page_total", ctypes.c_ulonglong),
                        ("page_available", ctypes.c_ulonglong), ("virtual_total", ctypes.c_ulonglong),
                        ("virtual_available", ctypes.c_ulonglong), ("extended", ctypes.c_ulonglong)]

        status = MemoryStatus(length=ctypes.sizeof(MemoryStatus))
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
            return int(status.available)
        return None
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def gpu_memory_bytes(device) -> int | None:
    """Free memory of a CUDA ``torch.device`` (``None`` for any other device)."""
    import torch

    if getattr(device, "type", str(device)) != "cuda" or not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def gib(n_bytes: float) -> str:
    """``n_bytes`` as GiB for messages (``"12.3 GiB"``)."""
    return f"{n_bytes / 2**30:.1f} GiB"
