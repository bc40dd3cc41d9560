"""Training checkpoints: model, optimiser, scheduler and RNG state after each epoch, resumable after a kill.

Why: a fine-tune of a real backbone runs for hours on a shared machine, and a
killed run should lose one epoch, not all of them. State is safetensors + JSON
(never pickle), written as a whole folder that replaces the last one in one
rename, beside the model folder. A run with the same settings and the same
labelled pairs (:func:`run_key`) resumes from it; anything else ignores it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

#: Settings that change how fast a run goes, never what it makes: a resume may change them.
_NOT_IN_KEY = ("workers", "time_budget_s", "cache_dir")


def run_key(settings: dict[str, Any], rows: list[dict], labels: list[int]) -> str:
    """What a checkpoint must match to be resumed: the training settings and the exact labelled data."""
    d = {k: v for k, v in settings.items() if k not in _NOT_IN_KEY}
    data = "\n".join(f"{r['sop_instance_uid']}:{y}" for r, y in zip(rows, labels))
    return hashlib.sha256((json.dumps(d, sort_keys=True) + data).encode()).hexdigest()[:16]


class Checkpoint:
    """The checkpoint folder ``.<model folder>.checkpoint`` for one run (``key``)."""

    def __init__(self, out: Path, key: str):
        self.dir = out.with_name(f".{out.name}.checkpoint")
        self.key = key

    def save(self, epoch: int, model, opt, sched, rng, history: list[float]) -> None:
        import os
        import shutil

        from safetensors.torch import save

        from osteo_batch.outputs import private_dir, write_private

        tmp = private_dir(self.dir.with_name(self.dir.name + ".tmp"))
        tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
        osd = opt.state_dict()
        for idx, st in osd["state"].items():
            for k, v in st.items():
                tensors[f"opt.{idx}.{k}"] = v.detach().contiguous() if hasattr(v, "detach") else _scalar_tensor(v)
        write_private(tmp / "state.safetensors", save(tensors))
        meta = {"key": self.key, "epoch": epoch, "history": history, "param_groups": osd["param_groups"],
                "opt_keys": {str(i): list(st) for i, st in osd["state"].items()},
                "sched": sched.state_dict(), "rng": rng.bit_generator.state}
        write_private(tmp / "meta.json", json.dumps(meta, default=str))
        shutil.rmtree(self.dir, ignore_errors=True)
        os.replace(tmp, self.dir)  # a folder: write_private is for files

    def restore(self, model, opt, sched, rng, history: list[float]) -> int:
        """Load a matching checkpoint into the given objects; returns the epoch to start at (0: none)."""
        from safetensors.torch import load_file

        meta_path = self.dir / "meta.json"
        if not meta_path.is_file():
            return 0
        meta = json.loads(meta_path.read_text())
        if meta.get("key") != self.key:
            return 0
        tensors = load_file(str(self.dir / "state.safetensors"))
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        state = {int(i): {k: tensors[f"opt.{i}.{k}"] for k in keys} for i, keys in meta["opt_keys"].items()}
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        sched.load_state_dict(meta["sched"])
        rng.bit_generator.state = meta["rng"]
        history[:] = meta["history"]
        return int(meta["epoch"])

    def clear(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


def _scalar_tensor(v):
    import torch

    return torch.tensor(v)
