"""The training engine: one loop for every method, on one CPU/GPU or many through torchrun.

Exact resume without pickles: the data order of an epoch is a seeded permutation, and the
global RNG is reseeded from (seed, step, rank) before every step, so a run restarted from a
checkpoint (weights, momentum buffers, step counter, method state; safetensors + JSON)
replays the very batches, flips and samples the uninterrupted run would have seen. The
learning rate is a pure function of the step. Exact on the CPU; on CUDA some backward
kernels (scatter, index_add) sum in a nondeterministic order, so a resumed run drifts in the
last bits.

Under torchrun each process takes `optim.batch_size` faces per step (the learning rates scale
with the processes: `train.config.for_processes`); the data (`train.data`) arrive as uint8 and
are normalised on the device; the losses are read once per log window (`train.steps`).
"""
from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn
from tqdm import tqdm

from train import checkpoint, distributed
from train.config import for_processes, method_settings
from train.data import StepBatches, TrainingFaces, blur_some, flip_some, training_loader
from train.heads import build_head, is_sharded, start_at_class_centres
from train.recorders import EpochRecorders
from train.steps import LossWindow, training_step
import zoo


class TrainObjective(nn.Module):
    """Model + classification head as one module, so DDP synchronises both in one backward."""

    def __init__(self, model: zoo.FaceModel, head: nn.Module):
        super().__init__()
        self.model, self.head = model, head

    def forward(self, images: torch.Tensor, labels: torch.Tensor):
        """Raw embeddings, logits, and the unweighted loss terms of one batch.

        The network may run under autocast (bf16); the head never does: cosines, margins, hard
        masks and logits are fp32 whatever the caller's autocast, as are the loss terms."""
        embeddings = self.model(images)
        auxiliary = {name: value.float() for name, value in self.model.auxiliary_losses().items()}
        with torch.autocast(embeddings.device.type, enabled=False):
            recognition, logits = self.head.loss(embeddings.float(), labels)
        return embeddings, logits, {"recognition": recognition, **auxiliary}


class Trainer:
    def __init__(self, config: Dict[str, Any], data: TrainingFaces, run_dir: Path,
                 device: Optional[str] = None, progress: bool = True):
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.config = config = for_processes(config, self.world)
        self.data, self.run_dir = data, Path(run_dir)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        self.progress = progress and self.rank == 0
        self.model, self.new_tensors = start_model(config)
        self.model.to(self.device)
        optim = config["optim"]
        self.per_rank_batch = int(optim["batch_size"])
        self.head = build_head(config, data.num_classes, self.model.config.embedding_dim, self.per_rank_batch,
                               self.rank, self.world).to(self.device)
        if config["init"]["head"] == "centres":
            start_at_class_centres(self.head, self.model, data, self.device, config["init"]["from"],
                                   progress=self.progress)
        elif config["init"]["head"] != "random":
            raise ValueError(f"init.head must be 'random' or 'centres', got {config['init']['head']!r}")
        run = config["run"]
        self.channels_last = run["channels_last"] is True or (run["channels_last"] == "auto" and self.device.type == "cuda")
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.amp = run["amp"] is True or (run["amp"] == "auto" and self.device.type == "cuda")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # one input shape all run: let cuDNN time its kernels once
        if run["compile"]:
            self.model.compile(**({} if run["compile"] is True else {"backend": run["compile"]}))
        self.objective = TrainObjective(self.model, self.head)
        self.method_settings = method_settings(config, self.model)
        self.extra_optimizers = self.model.extra_optimizers(self.method_settings)
        own = {p for optimizer in self.extra_optimizers.values() for group in optimizer.param_groups
               for p in group["params"]}  # trained by the method's own losses, not the recognition loss
        if self.world > 1:
            if is_sharded(self.head):  # each process trains its own shard: nothing of it to average
                shard = {f"head.{name}" for name, _ in self.head.named_parameters()}
                nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self.objective, shard)
            self.objective = nn.parallel.DistributedDataParallel(
                self.objective, find_unused_parameters=bool(own))
        self.optimizer = self._sgd([(n, p) for n, p in TrainObjective(self.model, self.head).named_parameters()
                                    if p not in own], config["optim"]["lr"])
        self.method_state: Dict[str, Any] = {}
        self.step = 0
        self.train_seconds = 0.0  # wall time spent in fit(), summed over resumes
        self.steps_per_epoch = self.order(0).steps_per_epoch
        if self.steps_per_epoch == 0:
            raise ValueError(f"{data.path}: {len(data)} images cannot fill one batch of {optim['batch_size']} "
                             f"in each of {self.world} process(es)")
        self.total_steps = int(optim["epochs"]) * self.steps_per_epoch
        if run["max_steps"]:
            self.total_steps = min(self.total_steps, int(run["max_steps"]))
        self.recorders = EpochRecorders(self.model)

    def _sgd(self, named, lr):
        """Groups by (weight decay, learning-rate scale): t never decays; when fine-tuning, every
        pretrained tensor runs at init.backbone_lr, the method's new layers at init.new_layers_lr
        and the head at optim.lr (either init rate, when unset, is optim.lr)."""
        no_decay = set(self.model.no_weight_decay())
        optim, init = self.config["optim"], self.config["init"]

        def relative(rate):
            return 1.0 if rate is None or not init["from"] else float(rate) / lr

        pretrained_scale, new_layers_scale = relative(init["backbone_lr"]), relative(init["new_layers_lr"])
        groups: Dict[tuple, list] = {}
        for name, p in named:
            key = name.removeprefix("model.")
            in_model = name.startswith("model.")
            rate = (new_layers_scale if key in self.new_tensors else pretrained_scale) if in_model else 1.0
            decay = 0.0 if key in no_decay else float(optim["weight_decay"])
            groups.setdefault((decay, rate), []).append(p)
        return torch.optim.SGD([{"params": params, "weight_decay": decay, "lr_scale": scale}
                                for (decay, scale), params in groups.items()],
                               lr=lr, momentum=float(optim["momentum"]))

    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch

    @property
    def lr(self) -> float:
        optim = self.config["optim"]
        warmup = int(optim.get("warmup_steps", 0))
        if self.step < warmup:
            return float(optim["lr"]) * (self.step + 1) / warmup
        passed = sum(self.epoch >= m for m in optim["milestones"])
        return float(optim["lr"]) * float(optim["gamma"]) ** passed

    def order(self, start: int) -> StepBatches:
        """This process's batches from step `start` on (DistributedSampler's order)."""
        seed = int(self.config["run"]["seed"]) * 7919
        return StepBatches(self.data, self.per_rank_batch, seed, start, self.rank, self.world)

    def on_device(self, faces: torch.Tensor, labels: torch.Tensor):
        """A loaded batch as the step's input. The augmentation is drawn from the step's seeded
        RNG; blur (when the recipe asks) runs on the CPU, bit for bit the evaluation's; the uint8
        faces cross to the device (asynchronously from pinned memory) and are normalised and
        flipped there."""
        augment = self.config["augment"]
        flip = torch.rand(len(labels)) < (0.5 if augment["flip"] else 0.0)
        faces = blur_some(faces, float(augment["blur_fraction"]), augment["blur_sigma"])
        faces = faces.to(self.device, non_blocking=True)
        images = flip_some(self.model.preprocess(faces), flip)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels.to(self.device, non_blocking=True)

    # ---- checkpoints -------------------------------------------------------------------
    def save_state(self) -> None:
        checkpoint.save_state(self)

    def load_state(self) -> bool:
        """Resume from run_dir/state if present; returns whether it did."""
        return checkpoint.load_state(self)

    # ---- the loop ----------------------------------------------------------------------
    def log(self, record: Dict[str, Any], file: str = "log.jsonl") -> None:
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / file, "a") as out:
                out.write(json.dumps(record) + "\n")

    def autocast(self):
        """Mixed precision for the forward pass and the loss only (`run.amp`: bf16 on GPUs by
        default); backward, the optimiser steps and the heads stay out of it."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else nullcontext()

    def closes_window(self, step: int) -> bool:
        """Whether the log window closes after `step` steps: every log_every steps, and before
        every checkpoint (a checkpoint is written only once its losses are known to be finite)."""
        run = self.config["run"]
        return step % int(run["log_every"]) == 0 or step % int(run["checkpoint_every"]) == 0 or step == self.total_steps

    def records(self, step: int) -> bool:
        """Whether the margin records observe the batch of step `step`: the steps that close a log
        window and the last step of each epoch."""
        return bool(self.config["run"]["record_every_epoch"]) and (
            self.closes_window(step) or step % self.steps_per_epoch == 0)

    def fit(self) -> Dict[str, Any]:
        run = self.config["run"]
        self.objective.train()
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.progress,
                   desc=f"{self.model.name} ({self.config['recipe']})", unit="step")
        window, last = LossWindow(), {}
        window_start, window_images = time.perf_counter(), 0
        fit_start = time.perf_counter() - self.train_seconds
        batches = iter(training_loader(self.data, self.order(self.step), run["workers"], self.device.type == "cuda"))
        while self.step < self.total_steps:
            torch.manual_seed((int(run["seed"]) * 1_000_003 + self.step) * 131 + self.rank)
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr * group["lr_scale"]
            images, labels = self.on_device(*next(batches))
            recording = self.records(self.step + 1)
            result = training_step(self, images, labels, scored=recording or self.closes_window(self.step + 1))
            window.add(self.step, result.loss, result.terms)
            if recording:
                self.recorders.observe(result.own, result.nearest)
            self.step += 1
            window_images += len(labels) * self.world
            if self.closes_window(self.step):
                means = window.close(self.lr, {"accuracy": result.correct.float().mean()})
                elapsed = time.perf_counter() - window_start
                last = {"step": self.step, "epoch": self.epoch, "lr": self.lr, **means,
                        "images_per_s": window_images / max(elapsed, 1e-9), **result.extra}
                self.log(last)
                bar.set_postfix(loss=f"{last['loss']:.3f}", acc=f"{last['accuracy']:.2f}",
                                img_s=f"{last['images_per_s']:.0f}")
                window_start, window_images = time.perf_counter(), 0
            if self.step % self.steps_per_epoch == 0 and run["record_every_epoch"]:
                self.log({"epoch": self.epoch, "step": self.step, **self.recorders.flush()}, "records.jsonl")
            if self.step % int(run["checkpoint_every"]) == 0 or self.step == self.total_steps:
                self.train_seconds = time.perf_counter() - fit_start
                self.save_state()
            bar.update(1)
        bar.close()
        return last


def start_model(config: Dict[str, Any]):
    """The recipe's model as a run starts it, seeded so that the same recipe gives the same start
    (train.publish rebuilds it to average the trained weights with it), and its new tensors."""
    torch.manual_seed(int(config["run"]["seed"]))
    return build_model(config)


def build_model(config: Dict[str, Any]):
    """The recipe's model and the names of its tensors that start untrained.

    With init.from, the model takes the trained checkpoint's embedding size, input crop and
    BatchNorm epsilons, and the method's `init_from` places the trained weights.
    """
    model_cfg = dict(config["model"])
    name = model_cfg.pop("name")
    source = config["init"]["from"]
    if not source:
        model = zoo.build(name, **model_cfg)
        return model, {key for key in model.state_dict()}
    trained = zoo.load(source)
    if trained.config.method != "plain":
        raise ValueError(f"init.from={source!r} is a {trained.config.method} model; fine-tuning starts from a plain one")
    model_cfg.setdefault("embedding_dim", trained.config.embedding_dim)
    model_cfg.setdefault("input_size", trained.config.input_size)
    model = zoo.build(name, **model_cfg)
    zoo.model.inherit_bn_eps(model, trained.config.bn_eps)
    return model, set(model.init_from(trained))
