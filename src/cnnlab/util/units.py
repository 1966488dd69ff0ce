"""Numbers for people: sizes in bytes, FLOPs, durations, and exact ceil division."""

from __future__ import annotations


def format_bytes_binary(n: float) -> str:
    """Keras's size notation: 384.00 B, 59.16 KB, 89.03 MB (1 KB = 1024 B)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_bytes_si(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as disk and memory sizes are sold)."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB", "GB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} TB"


def format_flops(n: float) -> str:
    """FLOPs with an SI prefix: 3.96 M, 2.47 G."""
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000 or unit == "T":
            return f"{n:.0f}" if unit == "" else f"{n:.2f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """Whole seconds as '4m05s', or '2h03m' from an hour on."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def ceil_div(a: int, b: int) -> int:
    """ceil(a / b) for positive b, exact for integers of any size."""
    return -(-a // b)
