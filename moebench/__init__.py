"""moebench: a hash-pinned reproduction kit for llama.cpp inference benchmarks.

Every stage lives in its own module (config -> source -> build -> models -> plan -> run ->
analyze -> figures -> report); `tasks.py` is a thin invoke front over them.
"""

__version__ = "0.1.0"
