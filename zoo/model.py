"""The one model interface the rest of FaceScope uses, and the method registry.

A *method* (plain, SCAN, SRANet, ARFace, HPDA, ...) wraps a registered *backbone*. A model
name is `<method>-<backbone>` (`scan-ir50`) or just the backbone for the plain method
(`ir50`). Everything needed to rebuild a model lives in its `ModelConfig`, which is what
`config.json` of a checkpoint stores.
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import (BACKBONES, CHANNEL_ORDERS, EMBEDDING_DIM, INPUT_MEAN, INPUT_SIZE, INPUT_STD, Backbone,
                        Conv3x3Factory, plain_conv3x3, to_input)
from .registry import Registry

METHODS: Registry = Registry("method")


@dataclass
class ModelConfig:
    """Architecture of a model: enough to rebuild it bit-for-bit from weights."""

    method: str
    backbone: str
    width: float = 1.0
    head: Optional[str] = None  # None: the backbone's own default (fc for IR, gdc for MobileFaceNet)
    dropout: float = 0.0
    options: Dict[str, Any] = field(default_factory=dict)  # method-specific, validated by the method
    embedding_dim: int = EMBEDDING_DIM
    # The (height, width) centre crop of the aligned 112x112 face the network sees.
    input_size: Tuple[int, int] = (INPUT_SIZE, INPUT_SIZE)
    # BatchNorm epsilons that differ from torch's 1e-5 (imported weights keep their source's):
    # "*" sets every BN layer, a module path sets one ("backbone.head.1.bn").
    bn_eps: Dict[str, float] = field(default_factory=dict)
    # How aligned uint8 crops are scaled into the network (`preprocess`, `to_input`).
    input_mean: float = INPUT_MEAN
    input_std: float = INPUT_STD
    channel_order: str = "RGB"

    def __post_init__(self):
        self.input_size = tuple(int(v) for v in self.input_size)
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {self.channel_order!r}")

    @property
    def name(self) -> str:
        return self.backbone if self.method == "plain" else f"{self.method}-{self.backbone}"

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Explanation:
    """A method's own view of an input batch.

    `maps`: name -> (N, h, w) spatial maps at the resolution the method computes them
    (the analysis layer resizes them onto the face). `values`: name -> any other tensor
    (per-layer learnt t, keep probabilities, attention matrices).
    """

    maps: Dict[str, torch.Tensor] = field(default_factory=dict)
    values: Dict[str, torch.Tensor] = field(default_factory=dict)


class FaceModel(nn.Module):
    """Base of every zoo model: images (N,3,112,112) in [-1,1] -> 512-d embeddings.

    Subclasses set `method`, `supported_backbones` and `default_options`, and may override
    `conv3x3_factory`, `forward`, `explain`, `auxiliary_losses`, `no_weight_decay`, `init_from`
    and the hooks below through which a method owns all that is its own, so the trainer, the
    publisher, the analyses and the app never need to know which method a model is:
    - training: `training_settings` (its recipe section), `extra_optimizers` and
      `extra_losses` (parameters it trains by its own losses), `epoch_records`;
    - publishing: `inference_form`;
    - analysis: `analyses`, `record_keys`.
    """

    method = "plain"
    supported_backbones: Tuple[str, ...] = ("ir18", "ir34", "ir50", "ir100", "mobilefacenet")
    default_options: Dict[str, Any] = {}
    # Analyses of the method's own internals, by the names analysis/ implements them under
    # (each name implies the interface that analysis reads, e.g. `learnt_t` for "t-density").
    # Analyses that need only embeddings (Grad-CAM, UMAP, ...) work on every model.
    analyses: Tuple[str, ...] = ()
    # analysis name -> the records.jsonl key under which `epoch_records` logs what it reads.
    record_keys: Dict[str, str] = {}
    # Training-only settings (not architecture, so not in ModelConfig) with their defaults; a
    # recipe overrides them in a section named after the method.
    training_settings: Dict[str, Any] = {}

    def __init__(self, config: ModelConfig):
        super().__init__()
        unknown = set(config.options) - set(self.default_options)
        if unknown:
            raise ValueError(f"{config.name}: unknown option(s) {sorted(unknown)}; "
                             f"known: {sorted(self.default_options)}")
        if config.backbone not in self.supported_backbones:
            raise ValueError(f"method {self.method!r} does not support backbone {config.backbone!r}; "
                             f"supported: {', '.join(self.supported_backbones)}")
        self.config = dataclasses.replace(config, options={**self.default_options, **config.options})
        head = {} if config.head is None else {"head": config.head}
        self.backbone: Backbone = BACKBONES.get(config.backbone)(
            width=config.width, dropout=config.dropout, conv3x3=self.conv3x3_factory(),
            embedding_dim=config.embedding_dim, input_size=config.input_size, **head)

    @property
    def options(self) -> Dict[str, Any]:
        return self.config.options

    @property
    def name(self) -> str:
        return self.config.name

    def conv3x3_factory(self) -> Conv3x3Factory:
        """The backbone's 3x3 conv; called once `self.config` (with merged options) is set."""
        return plain_conv3x3

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) embedding; what margin losses train on."""
        return self.backbone(images)

    def preprocess(self, crops) -> torch.Tensor:
        """Aligned (N,112,112,3) uint8 RGB crops -> this model's input (its config's scaling)."""
        config = self.config
        return to_input(crops, config.input_mean, config.input_std, config.channel_order)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """L2-normalised embeddings in eval mode, batched so large sets fit in memory."""
        check_images(images, self.name)
        with self.evaluating():
            chunks = [self(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        return F.normalize(torch.cat(chunks).float(), dim=1)

    @contextmanager
    def evaluating(self) -> Iterator["FaceModel"]:
        """Eval mode for the block, then back to whichever mode the model was in."""
        was_training = self.training
        self.eval()
        try:
            yield self
        finally:
            self.train(was_training)

    @torch.no_grad()
    def explain(self, images: torch.Tensor) -> Explanation:
        """The method's own maps for `images`; a plain model has none."""
        check_images(images, self.name)
        return Explanation()

    def auxiliary_losses(self) -> Dict[str, torch.Tensor]:
        """Method losses from the last training forward (SCAN's RMO, HPDA's divergence)."""
        return {}

    def no_weight_decay(self) -> List[str]:
        """Names of parameters the optimiser must not decay (SCAN's t)."""
        return []

    def extra_optimizers(self, settings: Dict[str, Any]) -> Dict[str, torch.optim.Optimizer]:
        """Optimisers of the parameters the method trains by its own losses instead of the
        recognition loss, by the name of the loss in `extra_losses` each minimises; the trainer
        keeps those parameters out of its own optimiser and saves these optimisers' state.
        `settings`: `training_settings` as the recipe sets them."""
        return {}

    def extra_losses(self, correct: torch.Tensor, state: Dict[str, Any], settings: Dict[str, Any],
                     mean_over_processes: Callable[[torch.Tensor], torch.Tensor]
                     ) -> Tuple[Dict[str, torch.Tensor], Dict[str, float]]:
        """After the trainer's step on a batch: the losses of `extra_optimizers` (by name) and
        values to log. `correct`: (N,) whether each face of the batch was recognised; `state`:
        the method's JSON-able training state, saved with the run so a resume continues it;
        `mean_over_processes`: averages a tensor over the training processes (in place)."""
        return {}, {}

    def epoch_records(self) -> Dict[str, Any]:
        """What training logs once per epoch for the method's analyses, under `record_keys`."""
        return {}

    def inference_form(self) -> "FaceModel":
        """The model to publish for inference: the same outputs, maybe in a cheaper architecture."""
        return self

    def init_from(self, trained: "FaceModel") -> List[str]:
        """Start from a trained plain model of the same backbone (fine-tuning).

        Every tensor of `trained` must land in this model under the same name and shape;
        returns the names of this model's own tensors left at their initialisation. Methods
        whose layers replace backbone layers (SCAN) or heads (HPDA) override this so the
        untrained method computes `trained` as closely as the method allows.
        """
        source, target = trained.state_dict(), self.state_dict()
        misfits = [k for k in source if k not in target or target[k].shape != source[k].shape]
        if misfits:
            raise ValueError(f"{self.name}: cannot start from {trained.name}: {len(misfits)} tensor(s) have no "
                             f"same-shaped place here, e.g. {misfits[:3]}")
        self.load_state_dict({**target, **source})
        return sorted(set(target) - set(source))

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def check_images(images: torch.Tensor, model_name: str) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{model_name}: expected aligned faces as a (N, 3, {INPUT_SIZE}, {INPUT_SIZE}) "
                         f"tensor scaled to [-1, 1], got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"{model_name}: expected a float tensor scaled to [-1, 1], got {images.dtype}")


METHODS.register("plain")(FaceModel)


def parse_name(name: str) -> Tuple[str, str]:
    """`scan-ir50` -> ("scan", "ir50"); `ir50` -> ("plain", "ir50")."""
    if name in BACKBONES:
        return "plain", name
    method, _, backbone = name.rpartition("-")
    if method in METHODS and backbone in BACKBONES:
        return method, backbone
    raise KeyError(f"unknown model {name!r}; registered models: {', '.join(model_names())}")


def model_names() -> List[str]:
    """Every registered model name: each method with each backbone it supports."""
    names = []
    for method, cls in METHODS.items():
        for backbone in cls.supported_backbones:
            names.append(ModelConfig(method, backbone).name)
    return names


def build(name_or_config, **overrides) -> FaceModel:
    """Build an (untrained) model by registered name, or from a ModelConfig / its dict."""
    if isinstance(name_or_config, ModelConfig):
        config = name_or_config
    elif isinstance(name_or_config, dict):
        config = ModelConfig.from_dict(name_or_config)
    else:
        method, backbone = parse_name(name_or_config)
        config = ModelConfig(method, backbone)
    fields = {f.name for f in dataclasses.fields(ModelConfig)} - {"method", "backbone"}
    options = dict(config.options)
    arch = {}
    for key, value in overrides.items():
        (arch if key in fields else options)[key] = value
    options.update(arch.pop("options", {}))
    config = dataclasses.replace(config, **arch, options=options)
    model = METHODS.get(config.method)(config)
    set_bn_eps(model, config.bn_eps)
    return model


def inherit_bn_eps(model: "FaceModel", eps: Dict[str, float]) -> None:
    """Give a model built to start from a trained one that model's BatchNorm epsilons,
    skipping layers it does not have (a method that replaced the head); kept in its config."""
    norms = {name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    model.config.bn_eps = {k: v for k, v in eps.items() if k == "*" or k in norms}
    set_bn_eps(model, model.config.bn_eps)


def set_bn_eps(model: nn.Module, eps: Dict[str, float]) -> None:
    """Apply a config's BatchNorm epsilons ("*" for all, else per module path)."""
    norms = {name: m for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    unknown = sorted(set(eps) - set(norms) - {"*"})
    if unknown:
        raise ValueError(f"{model.name}: bn_eps names modules that are not BatchNorm layers: {unknown[:3]}")
    for name, module in norms.items():
        module.eps = float(eps.get(name, eps.get("*", module.eps)))
