"""Where a model comes from, checked without loading it (no torch, no diffusers): a shipped name, a
registered tiny pipeline, a fine-tune folder, a local pipeline folder or a hub id; the image sizes its
VAE allows; the counts a shipped generator was trained on. `compseed run` checks a config with these
before any notebook starts, so a bad model name fails in a fraction of a second; `pipelines` loads.

Usage:
    check_source(ModelConfig(pipeline="miniworld"))        # -> 'shipped'
    check_size(ModelConfig(pipeline="tiny-sd21"), 768, 768)
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

from .config import ModelConfig
from .testing import PIPELINES, registered_folder


class ModelLoadError(RuntimeError):
    """A pipeline could not be found or loaded; the message names the input."""


# Trained pipelines shipped inside the repository (weights as safetensors, see their README.md).
_MODELS = Path(__file__).resolve().parent.parent / "models"
# "-web": the web-caption twins (trained on web-like captions, miniworld/generator/captions.py).
SHIPPED: dict[str, Path] = {name: _MODELS / name for name in
                            ("miniworld", "miniworld-pixart", "miniworld-web", "miniworld-pixart-web")}
TRAINING_CONFIGS: dict[str, str] = {"miniworld": "configs/train/miniworld_stage4.yaml",
                                    "miniworld-pixart": "configs/train/miniworld_pixart.yaml",
                                    "miniworld-web": "configs/train/miniworld_web_stage4.yaml",
                                    "miniworld-pixart-web": "configs/train/miniworld_pixart_web.yaml"}


# Counts a shipped generator saw in training (the mini world draws one to six of a kind).
TRAINED_COUNTS: dict[str, tuple[int, int]] = {name: (1, 6) for name in SHIPPED}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def trained_counts(source: str) -> tuple[int, int] | None:
    """(lowest, highest) count the named generator was trained on, where the kit knows it."""
    return TRAINED_COUNTS.get(source)


FINETUNE_FILE = "compseed_finetune.json"  # finetune.ADAPTER_FILE: a base model + changed weights
DELTA_FILE = "delta.safetensors"  # a fine-tune's changed weights (finetune writes it, `apply_delta` loads it)
TEXT_ENCODER_PREFIX = "text_encoder."  # in a delta: the text encoder's changed weights (finetune.text_encoder)


def finetune_folder(source: str) -> Path | None:
    """The folder when `source` is a fine-tune folder (base model + changed weights), else None."""
    folder = Path(source).expanduser()
    return folder if (folder / FINETUNE_FILE).is_file() else None


def finetune_base(folder: Path) -> str:
    """The base model a fine-tune folder names (relative paths are as given when it was trained)."""
    try:
        base = json.loads((folder / FINETUNE_FILE).read_text())["base"]
    except (OSError, ValueError, KeyError) as e:
        raise ModelLoadError(f"fine-tune folder {folder}: {FINETUNE_FILE} does not name its base model ({e})") \
            from None
    if Path(base).expanduser().resolve() == folder.resolve():
        raise ModelLoadError(f"fine-tune folder {folder} names itself as its base model")
    return base


def check_source(cfg: ModelConfig) -> str:
    """Check, without loading, that `cfg.pipeline` can be found: 'shipped', 'registered', 'finetune' (a
    fine-tune folder: its base model is checked too), 'folder' or 'hub'.

    A local folder must hold model_index.json and a folder for each component it lists; something that
    looks like a path but is no such folder, or a name that is neither registered nor a hub id, fails.
    """
    source = cfg.pipeline
    if source in SHIPPED:
        if not (SHIPPED[source] / "model_index.json").is_file():
            raise ModelLoadError(f"shipped pipeline {source!r} is missing at {SHIPPED[source]}: restore it from "
                                 f"git or train it with `compseed train-miniworld {TRAINING_CONFIGS[source]}`")
        return "shipped"
    if source in PIPELINES:
        return "registered"
    if finetune_folder(source) is not None:
        check_source(dataclasses.replace(cfg, pipeline=finetune_base(finetune_folder(source)), revision=None))
        return "finetune"
    folder = Path(source).expanduser()
    if folder.is_dir():
        index = folder / "model_index.json"
        if not index.is_file():
            raise ModelLoadError(f"model.pipeline {source!r} is a folder without model_index.json: not a diffusers "
                                 f"pipeline folder (save one with pipe.save_pretrained(folder))")
        try:
            components = json.loads(index.read_text())
        except ValueError as e:
            raise ModelLoadError(f"{index} is not valid JSON: {e}") from None
        missing = [k for k, v in components.items() if not k.startswith("_") and isinstance(v, list)
                   and v[0] is not None and not (folder / k).is_dir()]
        if missing:
            raise ModelLoadError(f"pipeline folder {source!r} lacks the component folder(s) {missing} that its "
                                 f"model_index.json lists")
        return "folder"
    if source.startswith((".", "/", "~")) or not _HUB_ID.match(source):
        kind = "no such folder" if source.startswith((".", "/", "~")) or "/" in source else "unknown name"
        raise ModelLoadError(f"model.pipeline {source!r}: {kind}; use a registered name "
                             f"({', '.join([*SHIPPED, *PIPELINES])}), a local pipeline folder with model_index.json, "
                             f"or a hub id owner/name")
    check_hub(source, cfg.revision)
    return "hub"


def check_size(cfg: ModelConfig, height: int, width: int) -> None:
    """Image size against the pipeline's own VAE factor, read from its vae/config.json without loading it
    (a hub model not in the local cache is checked when it loads)."""
    tuned = finetune_folder(cfg.pipeline)
    if tuned is not None:  # the base model decides the size (checked once, not here and again below)
        return check_size(dataclasses.replace(cfg, pipeline=finetune_base(tuned), revision=None), height, width)
    kind = check_source(cfg)
    if kind == "shipped":
        folder = SHIPPED[cfg.pipeline]
    elif kind == "registered":
        folder = registered_folder(cfg.pipeline)
    elif kind == "folder":
        folder = Path(cfg.pipeline).expanduser()
    else:
        import huggingface_hub as hub

        cached = hub.try_to_load_from_cache(cfg.pipeline, "vae/config.json", revision=cfg.revision)
        if not isinstance(cached, str):
            return
        folder = Path(cached).parent.parent
    try:
        vae = json.loads((folder / "vae" / "config.json").read_text())
        factor = 2 ** (len(vae["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError):
        return  # no standard VAE config: the pipeline's own check runs when it loads
    if height % factor or width % factor:
        raise ModelLoadError(f"generate.height/width {height}x{width}: {cfg.pipeline} needs multiples of {factor} "
                             f"(its VAE's scale factor)")


def check_hub(repo_id: str, revision: str | None) -> None:
    """A hub id must be in the local cache or, online, exist on the hub (one short request)."""
    import huggingface_hub as hub

    if hub.try_to_load_from_cache(repo_id, "model_index.json", revision=revision) not in (None, hub._CACHED_NO_EXIST):
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ModelLoadError(f"model {repo_id!r} is not in the local hub cache and HF_HUB_OFFLINE is set: download "
                             f"it first or point model.pipeline at a local folder")
    try:
        hub.HfApi().model_info(repo_id, revision=revision, timeout=10)
    except (hub.errors.RepositoryNotFoundError, hub.errors.RevisionNotFoundError) as e:
        raise ModelLoadError(f"model {repo_id!r}{f' at revision {revision!r}' if revision else ''} does not exist "
                             f"on the hub (or needs a token): {str(e).splitlines()[0][:200]}") from None
    except Exception as e:  # noqa: BLE001 (any network failure): say which model and why, once
        raise ModelLoadError(f"model {repo_id!r} is not in the local hub cache and the hub could not be reached "
                             f"({type(e).__name__}: {str(e)[:160]}): download it first or use a local "
                             f"pipeline folder") from None
