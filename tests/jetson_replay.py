"""Replaying stand-ins for a Jetson's `tegrastats` and `nvpmodel`, for the emulated Jetson smoke.

Each stand-in is a POSIX shell script with one recording of tests/fixtures/ embedded when it is
written, so the script alone can be bind-mounted where the launcher mounts the host's tool
(moebench.images.launch.JETSON_HOST_FILES) and runs in any image that has /bin/sh. The kit's
real monitors and parsers read them; nothing of the kit knows it is talking to a replay, which is
why the smoke also declares the replay (MOEBENCH_MONITOR_REPLAY) and every record says so.

The recordings are those tests/fixtures/*/README.txt describe: the documented output formats with
illustrative values, not captures of a real Jetson.
"""

from __future__ import annotations

import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TEGRASTATS_RECORDING = FIXTURES / "tegrastats" / "orin_nano.txt"
NVPMODEL_RECORDING = FIXTURES / "nvpmodel" / "orin_nano_15w.txt"

# tegrastats runs until it is killed, one line per --interval (ms, default 1000); the recording loops.
_TEGRASTATS = """#!/bin/sh
# moebench test stand-in, not NVIDIA's tegrastats: replays {source} line by line,
# one line per --interval (ms), over and over until it is killed.
interval_ms=1000
while [ $# -gt 0 ]; do
  case "$1" in --interval) interval_ms=$2; shift 2 ;; *) shift ;; esac
done
pause=$(printf '%d.%03d' $((interval_ms / 1000)) $((interval_ms % 1000)))
while :; do
  while IFS= read -r line; do
    printf '%s\\n' "$line" || exit 0
    sleep "$pause"
  done <<'RECORDED'
{recording}RECORDED
done
"""

_NVPMODEL = """#!/bin/sh
# moebench test stand-in, not NVIDIA's nvpmodel: answers `nvpmodel -q` with {source}; sets nothing.
if [ "$1" != "-q" ]; then
  echo "nvpmodel stand-in: only -q is replayed" >&2
  exit 1
fi
cat <<'RECORDED'
{recording}RECORDED
"""


def _relative(path: Path) -> str:
    return str(path.relative_to(FIXTURES.parent.parent))


def write_stand_ins(directory: Path) -> dict[str, Path]:
    """Write both stand-ins into `directory`; returns {path of the host tool they replace: script}."""
    directory.mkdir(parents=True, exist_ok=True)
    scripts = {"/usr/bin/tegrastats": (directory / "tegrastats", _TEGRASTATS, TEGRASTATS_RECORDING),
               "/usr/sbin/nvpmodel": (directory / "nvpmodel", _NVPMODEL, NVPMODEL_RECORDING)}
    for script, template, recording in scripts.values():
        text = recording.read_text(encoding="utf-8")
        script.write_text(template.format(source=_relative(recording), recording=text.rstrip("\n") + "\n"),
                          encoding="utf-8")
        script.chmod(0o755)
    return {tool: script for tool, (script, _, _) in scripts.items()}


def replay_declaration() -> str:
    """MOEBENCH_MONITOR_REPLAY for these stand-ins: which recording each tool plays back."""
    return json.dumps({"nvpmodel": _relative(NVPMODEL_RECORDING), "tegrastats": _relative(TEGRASTATS_RECORDING)})
