"""A bound on oneDNN's process-wide primitive cache, for vLLM processes that serve our drafts.

vLLM's CPU backend runs each linear layer through oneDNN, which builds one primitive per distinct row count M (tokens
in the step) and keeps up to ONEDNN_PRIMITIVE_CACHE_CAPACITY of them per process (oneDNN's default: 1024), about
0.6 MiB each here. Speculative decoding multiplies the distinct M's: a step verifies 1 + k tokens per request, and
the draft runs shapes of its own. Under load the cache then keeps filling for thousands of requests; the vLLM worker
grew by 355-564 MiB after warm-up (1000 requests, 16 concurrent). Each vLLM layer still keeps its own 32 most recent
primitives, so a smaller process-wide cache bounds the memory at a small cost in primitive rebuilds.

oneDNN reads the variable once, when a process first uses the cache. Setting it in the process that builds the
config therefore reaches vLLM's engine and worker processes, which start later.
"""
from __future__ import annotations

import os

CAPACITY_VARIABLE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
CAPACITY = 64


def bound_primitive_cache() -> str:
    """Set the capacity for this process and those it starts, unless the user chose one. Returns the value in use."""
    return os.environ.setdefault(CAPACITY_VARIABLE, str(CAPACITY))
