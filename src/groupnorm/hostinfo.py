"""What a benchmark or a results row records about the machine it ran on (no torch import)."""
import os
import platform


def cpu_model() -> str:
    """The CPU's model name (``model name`` in /proc/cpuinfo), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The 1, 5 and 15 minute load averages as ``"a b c"``, or ``"unknown"`` where the OS has none."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"
