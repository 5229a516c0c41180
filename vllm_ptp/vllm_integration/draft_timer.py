"""The engine side of `vllm-ptp bench`'s draft share: time spent drafting, written where the bench reads it."""
from __future__ import annotations

import contextlib
import json
import os
import time

import torch


class DraftTimer:
    """Opt-in (EngineSettings.draft_time_file): wall time spent in the runner's propose_draft_token_ids (the
    drafting of every method, vLLM's own too), written to `path` as {"seconds", "calls"} after every call, so a
    benchmark in another process can read the draft share of a run. Without a path, it only yields."""

    def __init__(self, path: str | None):
        from vllm.distributed import get_tensor_model_parallel_rank
        # Every tensor-parallel worker drafts the same tokens at the same time: the first one reports.
        self.path = path if get_tensor_model_parallel_rank() == 0 else None
        self.seconds, self.calls = 0.0, 0

    @contextlib.contextmanager
    def timing(self, device: torch.device):
        if not self.path:
            yield
            return
        start = time.perf_counter()
        try:
            yield
        finally:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.seconds += time.perf_counter() - start
            self.calls += 1
            tmp = f"{self.path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump({"seconds": self.seconds, "calls": self.calls}, f)
            os.replace(tmp, self.path)
