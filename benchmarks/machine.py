"""The machine a benchmark ran on, as lines for its report: `lscpu`'s model and
flags, cores, memory and the library versions that set the speed."""

from __future__ import annotations

import os
import platform
import subprocess


def machine_lines() -> list[str]:
    fields: dict[str, str] = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        out = ""
    for line in out.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    import torch

    versions = [f"Python {platform.python_version()}", f"torch {torch.__version__}"]
    for name in ("tensorflow", "keras", "tf_keras"):
        try:
            module = __import__(name)
            versions.append(f"{name} {module.__version__}")
        except ImportError:
            pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return [
        f"CPU: {fields.get('Model name', platform.processor() or '?')}, "
        f"{os.cpu_count()} logical cores, {memory:.0f} GiB; {platform.platform()}",
        f"CPU flags (lscpu): {fields.get('Flags', 'not available')}",
        "Versions: " + ", ".join(versions),
    ]
