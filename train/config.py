"""Training recipes: TOML files with the papers' hyperparameters, plus command-line overrides.

A recipe has the sections [model], [loss], [optim], [aux], [init], [augment], [partial_fc], [run] and, for
a method with training settings of its own (`FaceModel.training_settings`), a section named
after the method (e.g. [arface]). `--set optim.lr=0.05` overrides any value;
the values are parsed as TOML, so `--set model.width=0.25` gives a float and
`--set optim.milestones=[4,6]` a list.
"""
from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any, Dict, Iterable, List, Set

from zoo import METHODS, FaceModel

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

DEFAULTS: Dict[str, Any] = {
    "model": {"name": "ir50", "width": 1.0},
    "loss": {"name": "arcface"},
    "optim": {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128,
              "epochs": 20, "milestones": [10, 16, 19], "gamma": 0.1, "warmup_steps": 0},
    "aux": {},
    # Fine-tuning: start from a trained zoo checkpoint (name or folder); "centres" starts the
    # class matrix at each identity's mean embedding; backbone_lr (if set) is the learning rate
    # of every pretrained tensor, new_layers_lr (if set) that of the layers the method adds to the
    # start (SCAN's scales, SRANet's and HPDA's attention, ARFace's masks), optim.lr the head's
    # and, by default, the new layers'. wise_alpha < 1 publishes the trained weights averaged
    # with the start (train/wise.py).
    "init": {"from": "", "head": "random", "backbone_lr": None, "new_layers_lr": None, "wise_alpha": 1.0},
    # Training-time augmentation: mirror with p=0.5; blur a fraction of each batch with a
    # Gaussian of sigma drawn uniformly from blur_sigma (pixels at 112 px).
    "augment": {"flip": True, "blur_fraction": 0.0, "blur_sigma": [0.5, 4.0]},
    # PartialFC (train/partial_fc.py): the class matrix sharded over the processes, each using
    # sample_rate of its centres per step (1.0: all, the exact softmax); for 85k+ classes.
    "partial_fc": {"enabled": False, "sample_rate": 1.0},
    # compile: false, true (torch.compile's default backend, inductor) or a backend name ("eager":
    # tracing only, what the CPU tests use). workers: DataLoader processes ("auto": none for a
    # packed .npz, up to 8 for a streamed .rec or folder).
    "run": {"seed": 0, "checkpoint_every": 200, "log_every": 10, "amp": "auto", "channels_last": "auto",
            "record_every_epoch": True, "max_steps": 0, "compile": False, "workers": "auto"},
}


class ConfigError(ValueError):
    """A recipe file or override that cannot be used."""


def resolve_path(name_or_path: str) -> Path:
    """A recipe name (`scan`) from train/configs, or a path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = CONFIG_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ConfigError(f"no recipe {name_or_path!r} (looked for {path}); recipes: {', '.join(recipe_names())}")
    return path


def recipe_names() -> List[str]:
    """The recipes of train/configs, by name."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def method_sections() -> Set[str]:
    """Recipe sections of the methods' own training settings: one per method that has some."""
    return {name for name, method in METHODS.items() if method.training_settings}


def method_settings(config: Dict[str, Any], model: FaceModel) -> Dict[str, Any]:
    """`model`'s training settings: its method's defaults, overridden by the recipe's section."""
    return {**model.training_settings, **config.get(model.method, {})}


def merge(base: Dict[str, Any], update: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> Dict[str, Any]:
    """`optim.lr=0.05` -> {"optim": {"lr": 0.05}}; the value is read as TOML (bare words as strings)."""
    key, sep, raw = text.partition("=")
    if not sep or "." not in key:
        raise ConfigError(f"override {text!r}: expected SECTION.KEY=VALUE, e.g. optim.lr=0.05")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    nested: Dict[str, Any] = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


def read_recipe(path: Path, seen: tuple = ()) -> Dict[str, Any]:
    """A recipe file; `base = "other"` starts from another recipe, each section given here
    replacing the base's section whole (so a new loss never inherits the old one's m)."""
    if path in seen:
        raise ConfigError(f"{path}: recipes extend each other in a loop ({' -> '.join(p.stem for p in seen)})")
    try:
        recipe = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: {err}") from None
    base = recipe.pop("base", None)
    if base is not None:
        recipe = {**read_recipe(resolve_path(str(base)), (*seen, path)), **recipe}
    return recipe


def for_processes(config: Dict[str, Any], world: int) -> Dict[str, Any]:
    """The recipe as `world` processes run it. `optim.batch_size` is per process (per GPU), so the
    global batch is `world` times larger, and so are the learning rates (optim.lr and
    init.backbone_lr, init.new_layers_lr; the linear scaling rule of Goyal et al., 2017). The rates as run and the
    `scaling` section go into the run's saved config; a method's own optimiser is left as it is."""
    config = copy.deepcopy(config)
    config["optim"]["lr"] = float(config["optim"]["lr"]) * world
    for key in ("backbone_lr", "new_layers_lr"):
        if config["init"][key] is not None:
            config["init"][key] = float(config["init"][key]) * world
    config["scaling"] = {"processes": world, "batch_per_process": int(config["optim"]["batch_size"]),
                         "global_batch_size": int(config["optim"]["batch_size"]) * world, "lr_factor": world}
    return config


def load_recipe(name_or_path: str, overrides: Iterable[str] = ()) -> Dict[str, Any]:
    path = resolve_path(name_or_path)
    recipe = read_recipe(path)
    unknown = set(recipe) - set(DEFAULTS) - method_sections()
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}; "
                          f"known: {sorted(set(DEFAULTS) | method_sections())}")
    config = merge(DEFAULTS, recipe)
    for text in overrides:
        config = merge(config, parse_override(text))
    config["recipe"] = path.stem
    return config
