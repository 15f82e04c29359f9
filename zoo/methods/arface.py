"""ARFace: attention-aware patch dropping learnt by reinforcement (Zhang et al., T-BIOM 2021).

Two nets. The Attention-Net looks at five patches centred on the landmarks of the aligned
face and decides which to keep; its mask M (0 inside dropped patches, 1 elsewhere)
multiplies the input of the Feature-Net (the backbone) in training and at inference. In
training, M resized to the feature map also multiplies the output of `num_layers` blocks
picked at random per batch, each with probability `layer_mask_prob`: the paper's
regulariser, which approximates an ensemble of patch sub-models and is off at inference.

FaceScope's reading of the policy: the Attention-Net outputs one categorical distribution
over the 31 keep/drop modes of the 5 patches (2^5 minus all-dropped), sampled
(multinomial) in training and argmax at inference. Excluding the all-dropped mode is then
exact, and a patch's keep probability is the marginal of that distribution.

The Attention-Net sees detached images and M is built from the discrete mode, so the
recognition loss never reaches it: it learns only by REINFORCE, L = -(R - b) log p(tau),
R the Feature-Net's accuracy on the masked batch and b a moving average of past rewards.
The trainer alternates, per batch, its own Feature-Net step (the recognition loss) and the
Attention-Net step this model gives it (`extra_optimizers`, `extra_losses`).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import INPUT_SIZE, TEMPLATE_LANDMARKS
from ..model import METHODS, Explanation, FaceModel, ModelConfig, check_images

PATCH_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
# Mode k keeps patch p iff bit p of k + 1 is set: every keep/drop pattern but all-dropped.
MODES = torch.tensor([[bool((k >> p) & 1) for p in range(len(PATCH_NAMES))]
                      for k in range(1, 2 ** len(PATCH_NAMES))])
# Paper's best num_layers (Fig. 6): 3 of MobileFaceNet's 15 blocks, 9 of ResNet-50's 24. Other
# depths keep the same fraction of their blocks (ir18: 3, ir34: 6, ir100: 18).
PAPER_MASKED_FRACTION = {"mobilefacenet": 3 / 15, "resnet": 9 / 24}
KEEP_ALL = len(MODES) - 1  # the mode that keeps every patch (all five bits set)
# Fine-tuning starts the policy at keep-all with this probability for every face, the rest
# spread evenly: its argmax (inference) is the trained network unmasked, half of each training
# batch still explores masks. From a random policy 100 steps of REINFORCE locked onto "drop the
# right mouth corner" (p > 0.9999), which cost the fine-tuned model 2 points on LFW View 1.
FINETUNE_KEEP_ALL_PROBABILITY = 0.5


def square_boxes(radius: int) -> List[Tuple[int, int, int, int]]:
    """Unclipped (x0, y0, x1, y1) pixel boxes, 2*radius wide, around each template landmark."""
    boxes = []
    for x, y in TEMPLATE_LANDMARKS:
        x0, y0 = math.floor(x - radius + 0.5), math.floor(y - radius + 0.5)
        boxes.append((x0, y0, x0 + 2 * radius, y0 + 2 * radius))
    return boxes


def patch_boxes(radius: int, size: int = INPUT_SIZE) -> List[Tuple[int, int, int, int]]:
    """The patches as half-open (x0, y0, x1, y1) boxes clipped to the image: what M zeroes."""
    return [(max(0, x0), max(0, y0), min(size, x1), min(size, y1)) for x0, y0, x1, y1 in square_boxes(radius)]


def mode_masks(radius: int, size: int = INPUT_SIZE) -> torch.Tensor:
    """(31, size, size): M of every mode, 0 inside each dropped patch box and 1 elsewhere."""
    masks = torch.ones(len(MODES), size, size)
    for patch, (x0, y0, x1, y1) in enumerate(patch_boxes(radius, size)):
        masks[~MODES[:, patch], y0:y1, x0:x1] = 0
    return masks


def resize_mask(mask: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """M scaled down to a feature map. `nearest-exact` samples pixel centres, so the dropped
    region stays centred on the patch (plain `nearest` shifts it up-left by half a stride)."""
    return F.interpolate(mask, size=size, mode="nearest-exact")


class AttentionNet(nn.Module):
    """The paper's five-layer policy CNN: conv 7x7, pool, conv 5x5, pool, FC.

    "Only two layers of convolution" with large kernels, pooling and PReLU: it judges shallow
    cues (occlusion, pose) per patch. The conv trunk is shared by the 5 patches (each cropped
    2r x 2r, zero-padded where it leaves the image, resized to `input_size`); the FC sees the
    5 feature vectors in landmark order and scores the 31 modes.
    """

    def __init__(self, radius: int, input_size: int, channels: int):
        super().__init__()
        self.radius, self.input_size = radius, input_size
        self.trunk = nn.Sequential(
            nn.Conv2d(3, channels, 7, padding=3), nn.PReLU(channels), nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 5, padding=2), nn.PReLU(2 * channels),
            nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(len(PATCH_NAMES) * 2 * channels, len(MODES))

    def crops(self, images: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) -> (N*5, 3, input_size, input_size) patches in PATCH_NAMES order."""
        r = self.radius
        padded = F.pad(images, (r, r, r, r))
        patches = torch.stack([padded[:, :, y0 + r:y1 + r, x0 + r:x1 + r]
                               for x0, y0, x1, y1 in square_boxes(r)], dim=1)
        return F.interpolate(patches.flatten(0, 1), size=self.input_size, mode="area")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Mode logits (N, 31)."""
        features = self.trunk(self.crops(images))
        return self.classifier(features.view(images.shape[0], -1))  # shape, not len(): export keeps the batch symbolic


@METHODS.register("arface")
class ARFaceModel(FaceModel):
    """Feature-Net (any backbone) behind the Attention-Net's input mask.

    Options: `patch_radius` (paper: 30 px at 112x112), `num_layers` masked blocks per batch
    (None resolves to the paper's 3 for MobileFaceNet and 9 for IR-ResNets, clipped to the
    backbone's block count; the config stores the resolved int), `layer_mask_prob` (0.5),
    `policy_input_size` and `policy_channels` (Attention-Net crop side and first conv width).
    Training-only settings belong to the recipe's [arface]: the policy's learning rate (the
    paper gives none: FaceScope's choice) and the reward baseline's momentum (ENAS's 0.99).
    """

    method = "arface"
    supported_backbones = ("mobilefacenet", "ir18", "ir34", "ir50", "ir100")
    default_options = {"patch_radius": 30, "num_layers": None, "layer_mask_prob": 0.5,
                       "policy_input_size": 32, "policy_channels": 16}
    training_settings = {"policy_lr": 0.01, "baseline_momentum": 0.99}
    analyses = ("patch-policy",)
    patch_names = PATCH_NAMES

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        options = self.options
        blocks = len(self.backbone.blocks)
        if options["num_layers"] is None:
            family = "mobilefacenet" if config.backbone == "mobilefacenet" else "resnet"
            options["num_layers"] = round(PAPER_MASKED_FRACTION[family] * blocks)
        if not 0 <= options["num_layers"] <= blocks:
            raise ValueError(f"{self.name}: num_layers must be in [0, {blocks}] (its block count), "
                             f"got {options['num_layers']}")
        if not 0.0 <= options["layer_mask_prob"] <= 1.0:
            raise ValueError(f"{self.name}: layer_mask_prob must be in [0, 1], got {options['layer_mask_prob']}")
        if not 0 < options["patch_radius"] <= INPUT_SIZE // 2:
            raise ValueError(f"{self.name}: patch_radius must be in (0, {INPUT_SIZE // 2}], "
                             f"got {options['patch_radius']}")
        self.attention = AttentionNet(options["patch_radius"], options["policy_input_size"],
                                      options["policy_channels"])
        # Derived from the options, so rebuilt rather than stored in checkpoints.
        self.register_buffer("modes", MODES.clone(), persistent=False)
        self.register_buffer("masks", mode_masks(options["patch_radius"]), persistent=False)
        self.last_modes: Optional[torch.Tensor] = None
        self.last_log_prob: Optional[torch.Tensor] = None
        self.last_masked_blocks: List[int] = []

    def feature_parameters(self) -> Iterator[nn.Parameter]:
        """The Feature-Net's parameters: what the recognition loss trains."""
        return self.backbone.parameters()

    def init_from(self, trained: FaceModel) -> List[str]:
        """Feature-Net from `trained` (exact), and a policy that starts at keep-all.

        The Attention-Net's classifier gets zero weights and biases that give keep-all
        `FINETUNE_KEEP_ALL_PROBABILITY` and every other mode an equal share, so the untrained
        ARFace model computes `trained` exactly at inference and still samples masks in
        training. The zero weights still receive gradient, so REINFORCE can move away from it.
        """
        untrained = super().init_from(trained)
        others = len(MODES) - 1
        p = FINETUNE_KEEP_ALL_PROBABILITY
        with torch.no_grad():
            self.attention.classifier.weight.zero_()
            self.attention.classifier.bias.zero_()
            self.attention.classifier.bias[KEEP_ALL] = math.log(p * others / (1.0 - p))
        return untrained

    def policy_parameters(self) -> Iterator[nn.Parameter]:
        """The Attention-Net's parameters: what `reinforce_loss` trains."""
        return self.attention.parameters()

    def extra_optimizers(self, settings: Dict[str, Any]) -> Dict[str, torch.optim.Optimizer]:
        """The Attention-Net learns only by REINFORCE, with its own SGD."""
        return {"policy": torch.optim.SGD(list(self.policy_parameters()), lr=float(settings["policy_lr"]),
                                          momentum=0.9)}

    def extra_losses(self, correct: torch.Tensor, state: Dict[str, Any], settings: Dict[str, Any],
                     mean_over_processes: Callable[[torch.Tensor], torch.Tensor]
                     ) -> Tuple[Dict[str, torch.Tensor], Dict[str, float]]:
        """REINFORCE after the trainer's Feature-Net step on the masked batch.

        Reward: per-sample correctness of the Feature-Net on that masked batch (its mean is the
        batch accuracy the paper names), against a moving-average baseline of past accuracies,
        kept in `state` so a resumed run goes on from it.
        """
        reward = correct.float()
        accuracy = mean_over_processes(reward.mean())
        tracker = ReinforceBaseline(float(settings["baseline_momentum"]))
        tracker.value = state.get("reward_baseline")
        baseline = tracker.update(accuracy)
        state["reward_baseline"] = tracker.value
        return {"policy": self.reinforce_loss(reward, baseline)}, {"reward_baseline": tracker.value}

    def mode_mask(self, modes: torch.Tensor) -> torch.Tensor:
        """(N,) mode indices -> M as (N, 1, 112, 112)."""
        return self.masks[modes].unsqueeze(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Training: sample a mode per image, keep its log-probability for REINFORCE, mask
        the input and the chosen blocks. Eval: argmax mode, input mask only."""
        logits = self.attention(images.detach())
        if self.training:
            policy = torch.distributions.Categorical(logits=logits)
            modes = policy.sample()
            self.last_log_prob = policy.log_prob(modes)
            chosen = torch.randperm(len(self.backbone.blocks))[:self.options["num_layers"]]
            keep = torch.rand(len(chosen)) < self.options["layer_mask_prob"]
            self.last_masked_blocks = sorted(chosen[keep].tolist())
        else:
            modes = logits.argmax(dim=1)
            self.last_log_prob = None
            self.last_masked_blocks = []
        self.last_modes = modes
        mask = self.mode_mask(modes).to(images.dtype)
        x = self.backbone.begin(images * mask)
        for index, block in enumerate(self.backbone.blocks):
            x = block(x)
            if index in self.last_masked_blocks:
                x = x * resize_mask(mask, x.shape[-2:])
        return self.backbone.head(x)

    def reinforce_loss(self, reward, baseline: float) -> torch.Tensor:
        """REINFORCE loss for the modes sampled by the last training forward.

        `reward`: the batch's R (scalar, e.g. its accuracy) or one per sample. The batch is
        one trajectory, log p(tau) = sum_i log p(mode_i); dividing by N (the paper's 1/N)
        gives -mean_i (R_i - b) log p(mode_i), whose gradient reaches only the Attention-Net.
        """
        if self.last_log_prob is None:
            raise RuntimeError(f"{self.name}: reinforce_loss needs a training-mode forward first")
        reward = torch.as_tensor(reward, dtype=self.last_log_prob.dtype, device=self.last_log_prob.device)
        return -((reward.detach() - baseline) * self.last_log_prob).mean()

    @torch.no_grad()
    def explain(self, images: torch.Tensor) -> Explanation:
        """The policy on `images`: mode and per-patch keep probabilities, the inference
        (argmax) decision and its mask, and the patch boxes to outline (the paper's Fig. 4)."""
        check_images(images, self.name)
        probability = self.attention(images).softmax(dim=1)
        modes = probability.argmax(dim=1)
        return Explanation(
            maps={"mask": self.mode_mask(modes)[:, 0]},
            values={"keep_probability": probability @ self.modes.to(probability.dtype),
                    "kept": self.modes[modes],
                    "mode_probability": probability,
                    "mode": modes,
                    "patch_boxes": torch.tensor(patch_boxes(self.options["patch_radius"]))})


class ReinforceBaseline:
    """Moving-average reward baseline b <- momentum * b + (1 - momentum) * R.

    The paper takes b from ENAS's code (controller_bl_dec = 0.99, the default here). `update`
    returns b from past rewards only, so it never depends on the current action (the paper's
    condition for an unbiased gradient); the first batch's b is its own R.
    """

    def __init__(self, momentum: float = 0.99):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"baseline momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.value: Optional[float] = None

    def update(self, reward) -> float:
        """b for this batch's `reward` (scalar or per-sample, averaged), then fold it in."""
        reward = float(torch.as_tensor(reward, dtype=torch.float64).mean())
        baseline = reward if self.value is None else self.value
        self.value = self.momentum * baseline + (1.0 - self.momentum) * reward
        return baseline
