"""Facts about the host from /proc and os: cpu count, memory, disk, load, uptime (JSON text)."""

import json
import os
import shutil


def _meminfo() -> dict:
    facts = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in ("MemTotal", "MemAvailable"):
                    facts[name] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return facts


def _uptime() -> float | None:
    try:
        with open("/proc/uptime") as f:
            return float(f.read().split()[0])
    except OSError:
        return None


class hostfacts:  # noqa: N801 - the contract: the class is named as the app
    def facts(self, param: dict) -> tuple[str, str]:
        mem = _meminfo()
        disk = shutil.disk_usage(param.get("path", "/"))
        load = os.getloadavg()
        return "true", json.dumps(
            {
                "hostname": os.uname().nodename,
                "cpu_count": os.cpu_count(),
                "mem_total": mem.get("MemTotal"),
                "mem_available": mem.get("MemAvailable"),
                "disk_total": disk.total,
                "disk_free": disk.free,
                "load": list(load),
                "uptime_s": _uptime(),
            }
        )
