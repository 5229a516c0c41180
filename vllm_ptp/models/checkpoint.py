"""Draft checkpoint folders: config.json (speculators style) + model.safetensors + README.md.

Every problem with a folder is a CheckpointError naming the file, the field and what was expected, raised when the
folder is opened (engine start-up), never later.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
FINGERPRINT_ROWS = 16


class CheckpointError(Exception):
    """A draft checkpoint that cannot be served: says which file, which field, what was expected.

    Not a ValueError on purpose: pydantic would fold it into a generic ValidationError of SpeculativeConfig.
    """


def read_config(folder: str | Path) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"draft checkpoint {folder}: not a directory (expected a folder with {CONFIG_FILE} "
                              f"and {WEIGHTS_FILE})")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (expected the draft's speculators-style config)")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable JSON ({e})") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def speculators_type(folder: str | Path) -> str | None:
    """The `speculators_model_type` of a folder's config.json, or None when there is no such folder/field."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return config.get("speculators_model_type") if isinstance(config, dict) else None


def require(config: dict, field: str, kind: type, path: Path):
    value = config.get(field)
    if kind is int and isinstance(value, bool):
        value = None
    if not isinstance(value, kind):
        raise CheckpointError(f"{path}: field '{field}' must be {kind.__name__}, got {value!r}")
    return value


def load_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    folder = Path(folder)
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(f"{folder}: found pickle weights {pickles}; only {WEIGHTS_FILE} (safetensors) is "
                                  f"loaded, pickle files are never unpickled. Convert them with safetensors.")
        raise CheckpointError(f"{path}: missing (expected the draft weights in safetensors format)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def save_checkpoint(folder: str | Path, config: dict, state_dict: dict[str, torch.Tensor], card: str) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.detach().contiguous() for k, v in state_dict.items()}, str(folder / WEIGHTS_FILE))
    (folder / "README.md").write_text(card)


def embedding_fingerprint(embed_weight: torch.Tensor) -> list[float]:
    """Norms of the first embedding rows: identifies the target's weights across dtypes and file formats."""
    return [round(float(x), 4) for x in embed_weight[:FINGERPRINT_ROWS].float().norm(dim=-1)]


def check_fingerprint(config_path: Path, verifier: dict, embed_weight: torch.Tensor) -> None:
    """Refuse a target whose embedding differs from the one the draft was trained with (when the draft recorded it)."""
    expected = verifier.get("embedding_fingerprint")
    if not expected:
        return
    got = embedding_fingerprint(embed_weight)
    if not torch.allclose(torch.tensor(got), torch.tensor(expected), rtol=2e-2, atol=1e-3):
        raise CheckpointError(
            f"{config_path}: field 'speculators_config.verifier.embedding_fingerprint' does not match the target's "
            f"embedding: this draft was trained for {verifier.get('name_or_path', 'another model')!r}, not for the "
            f"model being served")


def load_matching_weights(folder: str | Path, expected: dict[str, torch.Tensor],
                          ignore: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The folder's tensors, refused unless names and shapes are exactly `expected`'s (a model's state_dict) and
    every float tensor is finite; the shapes of the tensors named in `ignore` are not checked."""
    weights = load_weights(folder)
    path = Path(folder) / WEIGHTS_FILE
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: tensors do not match config.json (missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]})")
    for name, tensor in weights.items():
        if tensor.shape != expected[name].shape and name not in ignore:
            raise CheckpointError(f"{path}: tensor '{name}' has shape {tuple(tensor.shape)}, config.json implies "
                                  f"{tuple(expected[name].shape)}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: tensor '{name}' holds NaN or inf values")
    return weights


def require_positive(values: dict[str, int], path: Path) -> None:
    for name, value in values.items():
        if value <= 0:
            raise CheckpointError(f"{path}: field '{name}' must be positive, got {value}")
