"""The machine a measurement ran on, as results files name it."""

import os
import platform
from pathlib import Path

# words a CPU's model name carries that tell no CPU from another
NOISE = {"(r)", "(tm)", "processor", "cpu"}


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def cpu_slug() -> str:
    """The CPU's model for a file name: "AMD EPYC" -> "amd-epyc", "Intel(R) Xeon(R) Processor"
    -> "intel-xeon"."""
    name = cpu_model().lower()
    for word in ("(r)", "(tm)"):
        name = name.replace(word, " ")
    return "-".join(w for w in name.split() if w not in NOISE) or "cpu"


def cpu_description() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores"
