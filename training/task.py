"""The LightningModule: any registered detector, AdamW with warmup and cosine decay, COCO mAP and
hazard-point metrics, an operating point chosen for recall."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
from ordnance.datasets.records import DatasetError
from ordnance.inference.metrics import match_points, pr_curve, summarise
from ordnance.models import backbone_weights_record, build_detector
from ordnance.training.callbacks import cpu_training_threads
from torchmetrics.detection import MeanAveragePrecision

log = logging.getLogger(__name__)

DEFAULT_CLASSES = ("ap_mine", "at_mine", "uxo")


class DetectionTask(L.LightningModule):
    """Train and validate a detector from :func:`ordnance.models.build_detector`.

    Args:
        model: Detector name (``ordnance.models.list_detectors()``).
        class_names: Classes, in label order.
        weights: torchvision backbone weight name (downloads where there is internet), or None.
        init_checkpoint: Start from these weights (a Lightning .ckpt or a state-dict .pt); class heads whose
            shape differs (another class count) are re-initialised.
        lr, weight_decay, warmup_steps: AdamW with linear warmup then cosine decay per step.
        anneal_by_time: With a ``trainer.max_time`` budget, the cosine decay follows whichever runs out
            first, steps or time, so the learning rate reaches its floor when the time budget stops training
            (on a slower machine the run takes fewer steps but still ends annealed).
        tile_size_px: Input side for this model (export and scoring use it).
        gsd_m: Ground sample distance of the training imagery, metres per pixel (0 when unknown).
        max_detections: K, detections per image.
        tolerance_floor_px: A detection hits a truth item when its centre is within half the item's size,
            or this many pixels when that is smaller.
        min_precision: The operating point is the lowest score threshold whose validation precision is at
            least this (recall first).
        fa_per_image: False-alarm rates per image at which recall is reported.
        input_scale: CenterNet only: the network resamples its input by this factor (see
            :class:`ordnance.models.centernet.CenterNet`); the tile contract stays ``tile_size_px``.
        channels_last: Train in channels-last memory format (with ``precision: bf16-mixed`` on a CPU with
            AVX-512 BF16 this about halves the step time).
        freeze_batchnorm: BatchNorm layers keep their running statistics in training (their scale and shift
            still learn): for fine-tuning on very small batches, and for data-parallel training on CPUs, where
            ``trainer.sync_batchnorm`` does not run (on GPUs the DDP preset synchronises them instead).
        test_flips: Validate and test on the maps averaged over the image and its flips (1: none, 2:
            left-right, 4: also up-down and both), at that many times the compute; training is unchanged.
            ``ordnance export --test-flips`` puts the same averaging into the exported graph.
        members: With ``model: ensemble`` only: the member CenterNets' detector names, whose maps the ensemble
            averages (``ordnance ensemble`` writes such a checkpoint from trained runs; it is validated, tested and
            exported like any other, and not trained).
    """

    monitor = "val/hazard_ap"
    mode = "max"

    def __init__(
        self,
        model: str = "centernet_resnet18",
        class_names: list[str] = DEFAULT_CLASSES,
        weights: str | None = None,
        init_checkpoint: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        warmup_steps: int = 100,
        anneal_by_time: bool = False,
        tile_size_px: int = 512,
        gsd_m: float = 0.01,
        max_detections: int = 300,
        tolerance_floor_px: float = 4.0,
        min_precision: float = 0.5,
        fa_per_image: tuple[float, ...] = (0.1, 1.0),
        input_scale: float = 1.0,
        channels_last: bool = False,
        freeze_batchnorm: bool = False,
        test_flips: int = 1,
        members: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.class_names = list(class_names)
        # Content keys of every image these weights were trained on, the parent checkpoint's included
        # (``datasets.records.image_keys``); those read from a loaded checkpoint are checked against the split it is
        # validated or tested on.
        self._trained_on: set[str] = set()
        self._trained_on_loaded: set[str] = set()
        self.precision_requested: str | None = None  # set by the CLI when it fell back from bf16 to float32
        self.configure_models()
        self.register_buffer("operating_threshold", torch.tensor(0.3))
        # 1: the threshold reached ``min_precision`` on validation; 0: it never did (fallback); -1: not known.
        self.register_buffer("operating_validated", torch.tensor(-1.0))
        self._val: list = []
        self.map_metric = MeanAveragePrecision(
            box_format="xyxy",
            iou_type="bbox",
            backend="faster_coco_eval",
            max_detection_thresholds=[1, 10, max_detections],
        )
        self.ap50_metric = MeanAveragePrecision(
            box_format="xyxy",
            iou_type="bbox",
            backend="faster_coco_eval",
            iou_thresholds=[0.5],
            class_metrics=True,
            max_detection_thresholds=[1, 10, max_detections],
        )

    def configure_models(self) -> None:
        hp = self.hparams
        self.detector = build_detector(
            hp.model,
            num_classes=len(hp.class_names),
            weights=hp.weights,
            tile_size_px=hp.tile_size_px,
            max_detections=hp.max_detections,
            input_scale=hp.get("input_scale", 1.0),
            members=hp.get("members"),
        )
        self._parent: dict = {}
        if hp.init_checkpoint:
            from ordnance.models import weights_sha256

            self._trained_on |= load_init_weights(self.detector, Path(hp.init_checkpoint))
            self._parent = {"init_checkpoint": str(hp.init_checkpoint), "weights_sha256": weights_sha256(self.detector)}
        if hp.get("channels_last", False):
            self.detector.to(memory_format=torch.channels_last)
        self.set_test_flips(hp.get("test_flips", 1))

    def set_test_flips(self, flips: int) -> None:
        """Evaluate (validate, test, export) on the average over the image and its flips (1, 2 or 4 views);
        training is not affected. CenterNet detectors only."""
        net = getattr(self.detector, "net", None)
        if flips != 1 and not hasattr(net, "test_flips"):
            raise ValueError(f"test_flips is only supported by the CenterNet detectors, not {self.hparams.model!r}")
        if flips not in (1, 2, 4):
            raise ValueError(f"test_flips must be 1, 2 or 4, got {flips}")
        if net is not None and hasattr(net, "test_flips"):
            net.test_flips = int(flips)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # before every step: the trainer sets each module's mode itself after validation and at the start
        if self.hparams.get("freeze_batchnorm", False):
            for module in self.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def _images(self, images: torch.Tensor) -> torch.Tensor:
        images = _to_float(images)
        return images.contiguous(memory_format=torch.channels_last) if self.hparams.get("channels_last") else images

    def forward(self, images: torch.Tensor):
        """uint8 or float [0, 1] images -> list of (boxes, scores, labels)."""
        return self.detector.predict(self._images(images))

    def training_step(self, batch, batch_idx):
        images, boxes, labels, _ = batch
        losses = self.detector.losses(self._images(images), boxes, labels)
        loss = sum(losses.values())
        # under DDP each process's loss is its share of the global batch's (see centernet.mean_over_processes):
        # their mean over processes is the global batch's loss
        sync = self.trainer.world_size > 1
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=len(images), sync_dist=sync)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images), sync_dist=sync)
        return loss

    def validation_step(self, batch, batch_idx):
        images, boxes, labels, _ = batch
        predictions = self(images)
        preds = [{"boxes": b.float(), "scores": s.float(), "labels": l} for b, s, l in predictions]
        boxes, labels = [b[l >= 0] for b, l in zip(boxes, labels)], [l[l >= 0] for l in labels]  # no ignore regions
        truth = [{"boxes": b, "labels": l} for b, l in zip(boxes, labels)]
        self.map_metric.update(preds, truth)
        self.ap50_metric.update(preds, truth)
        for (pb, ps, pl), tb, tl in zip(predictions, boxes, labels):
            keep = ps >= 0.01
            self._val.append(
                (
                    pb[keep].cpu().numpy(),
                    ps[keep].cpu().numpy(),
                    pl[keep].cpu().numpy(),
                    tb.cpu().numpy(),
                    tl.cpu().numpy(),
                )
            )

    def test_step(self, batch, batch_idx):
        """Same measurements as validation, on the data module's test split, logged as ``test/...``."""
        self.validation_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test", self.operating_threshold.item())

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def _per_class_ap50(self) -> dict[str, float]:
        ap50 = self.ap50_metric.compute()
        self.ap50_metric.reset()
        classes = ap50["classes"].reshape(-1).tolist()
        values = ap50["map_per_class"].reshape(-1).tolist()
        return {self.class_names[int(c)]: float(v) for c, v in zip(classes, values) if v >= 0}

    def _epoch_end(self, stage: str, fixed_threshold: float | None = None) -> None:
        """Log COCO AP, per-class AP50 and hazard-point recall; on validation, choose the operating point.

        Args:
            stage: "val" or "test".
            fixed_threshold: Score threshold to report at (test: the validated operating point, never one
                chosen on the test data); None chooses it on these data.
        """
        coco = self.map_metric.compute()
        self.map_metric.reset()
        metrics = {f"{stage}/map50": float(coco["map_50"]), f"{stage}/map": float(coco["map"])}
        for name, value in self._per_class_ap50().items():
            metrics[f"{stage}/ap50_{name}"] = value
        if self.trainer.world_size > 1:  # DDP: every process scored its share of the images; pool them
            import torch.distributed as dist

            shares: list = [None] * self.trainer.world_size
            dist.all_gather_object(shares, self._val)
            self._val = [item for share in shares for item in share]
        matches = hazard_matches(self._val, self.hparams.tolerance_floor_px)
        n_images = len(self._val)
        self._val = []
        if fixed_threshold is None:
            threshold, validated = operating_point(matches, self.hparams.min_precision)
        else:
            threshold, validated = float(fixed_threshold), None
        if stage == "val" and not self.trainer.sanity_checking:
            self.operating_threshold.fill_(threshold)
            self.operating_validated.fill_(float(validated))
            self._validated_threshold = (threshold, float(validated))
        overall = summarise(matches, n_images=n_images, fa_per_image=tuple(self.hparams.fa_per_image))
        at_op = summarise(matches, n_images=n_images, threshold=threshold)
        metrics.update(
            {
                f"{stage}/hazard_ap": overall["ap"],
                f"{stage}/hazard_recall_max": overall["recall"],
                f"{stage}/recall": at_op["recall"],
                f"{stage}/precision": at_op["precision"],
                f"{stage}/fa_per_image": at_op["false_alarms_per_image"],
                f"{stage}/threshold": threshold,
            }
        )
        for key, value in overall.items():
            if key.startswith("recall_at_"):
                metrics[f"{stage}/{key}"] = value
        self.log_dict(metrics, prog_bar=False)
        self.print(" ".join(f"{k.split('/')[1]}={v:.3f}" for k, v in metrics.items()))
        self.last_val_matches = matches

    def lineage(self) -> dict:
        """Where these weights came from: the pretrained backbone weights they were built with, the checkpoint they
        started from (its weights' sha256) and, for a
        fine-tune on reviewed surveys, the runs and decisions (see ``DetectionDataModule.lineage``). Kept in
        every checkpoint; the export writes it into the model card."""
        # The pretrained weights the backbone was built with (kept when a checkpoint of it is fine-tuned further)
        backbone = (
            {"backbone_weights": backbone_weights_record(self.hparams.weights, self.hparams.model)}
            if self.hparams.get("weights")
            else {}
        )
        if getattr(self, "_lineage", None) is not None:
            return backbone | self._lineage
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        data = datamodule.lineage() if hasattr(datamodule, "lineage") else {}
        parent = getattr(self, "_parent", {})
        return backbone | ({"parent": parent} if parent else {}) | data

    def training_record(self) -> dict:
        """How far these weights were trained and on what, kept in the lineage and so in the exported card: the
        device (on a CPU, the intra-op threads of the training steps), the precision (and the one the recipe asked
        for, where the CPU lacked native bf16), epochs and steps against their limits, and the clock budget spent.
        A recipe whose clock ran out long before its epochs (a slower machine than it was sized on) reads
        ``stopped_by: "max_time"`` with the epochs it reached."""
        trainer = self.trainer
        device = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else self.device.type
        record = {
            "device": device,
            "precision": str(trainer.precision),
            "epochs": int(trainer.current_epoch) + 1,
            "max_epochs": trainer.max_epochs,
            "steps": int(trainer.global_step),
        }
        if trainer.max_steps and trainer.max_steps > 0:
            record["max_steps"] = int(trainer.max_steps)
        threads = cpu_training_threads(trainer)
        if threads is not None:
            record["cpu_threads"] = threads
        if self.precision_requested and self.precision_requested != record["precision"]:
            record["precision_requested"] = self.precision_requested
        timer = _time_budget(trainer)
        if timer is not None:
            spent, left = timer.time_elapsed(), timer.time_remaining()
            record["time_budget_s"] = round(spent + left, 1)
            record["time_spent_s"] = round(spent, 1)
            if left <= 0 and (trainer.max_epochs is None or record["epochs"] < trainer.max_epochs):
                record["stopped_by"] = "max_time"
        return record

    def trained_on(self) -> set[str]:
        """Content keys of the images these weights have seen: the parent's, a resumed run's and, while fitting,
        the training split's."""
        keys = self._trained_on | self._trained_on_loaded
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        fitting = trainer is not None and trainer.state.fn == "fit"
        if fitting and hasattr(datamodule, "image_keys"):
            keys |= set(datamodule.image_keys("train"))
        return keys

    def _refuse_seen_images(self, split: str) -> None:
        """Validating or testing a trained checkpoint on images it trained on would report optimistic recall and,
        in validation, choose the operating threshold on them: refused when an annotated image of the split is
        among the checkpoint's training images (unannotated ones are only warned about)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.trainer.state.fn == "fit" or not self._trained_on_loaded or not hasattr(datamodule, "image_keys"):
            return
        keys = datamodule.image_keys(split)
        seen = [k for k in keys if k in self._trained_on_loaded]
        annotated = sum(keys[k] for k in seen)
        name = {"val": "validation", "test": "test"}[split]
        if annotated:
            raise DatasetError(
                f"the {name} split holds {annotated} annotated image(s) this checkpoint was trained on (of"
                f" {len(keys)}): its recall there would be optimistic and its operating threshold chosen on seen"
                " items; validate on images none of its training runs used",
                getattr(datamodule, "data_yaml", None),
            )
        if seen:
            log.warning("the %s split holds %d unannotated image(s) this checkpoint was trained on", name, len(seen))

    def on_validation_start(self) -> None:
        self._refuse_seen_images("val")

    def on_test_start(self) -> None:
        self._refuse_seen_images("test")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep the operating point of the last validation in the saved weights, and the lineage. Weight
        averaging (EMA) puts its averaged state in the checkpoint, where this buffer would be an average of stale
        thresholds."""
        checkpoint["ordnance_lineage"] = self.lineage()
        if self._trainer is not None and self.trainer.state.fn == "fit":
            checkpoint["ordnance_lineage"] = checkpoint["ordnance_lineage"] | {"training": self.training_record()}
        checkpoint["ordnance_training_images"] = sorted(self.trained_on())
        chosen = getattr(self, "_validated_threshold", None)
        if chosen is not None and "operating_threshold" in checkpoint.get("state_dict", {}):
            checkpoint["state_dict"]["operating_threshold"] = torch.tensor(chosen[0])
            checkpoint["state_dict"]["operating_validated"] = torch.tensor(chosen[1])

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints from before the operating point's status was kept load with it unknown. A resumed or
        exported checkpoint keeps the lineage it was saved with."""
        if "ordnance_lineage" in checkpoint:
            self._lineage = checkpoint["ordnance_lineage"]
        self._trained_on_loaded = set(checkpoint.get("ordnance_training_images", []))
        state = checkpoint.get("state_dict", {})
        if "operating_threshold" in state:
            state.setdefault("operating_validated", torch.tensor(-1.0))

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(hp.warmup_steps, total // 4)
        timer = _time_budget(self.trainer) if hp.get("anneal_by_time") else None

        def factor(step: int) -> float:
            spent = None
            if timer is not None:
                elapsed = timer.time_elapsed()
                spent = elapsed / max(elapsed + timer.time_remaining(), 1e-9)
            return lr_factor(step, warmup, total, spent)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def lr_factor(step: int, warmup: int, total: int, time_spent: float | None = None, floor: float = 0.02) -> float:
    """Learning-rate multiplier: linear warmup over ``warmup`` steps, then cosine decay to ``floor`` at
    ``total`` steps or, when ``time_spent`` (share of a time budget used) is given, at whichever ends first."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if time_spent is not None:
        progress = max(progress, time_spent)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _time_budget(trainer: L.Trainer):
    """The trainer's ``max_time`` Timer, or None without one."""
    from lightning.pytorch.callbacks import Timer

    return next((c for c in trainer.callbacks if isinstance(c, Timer) and c.time_remaining() is not None), None)


def _to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255.0 if images.dtype == torch.uint8 else images


def hazard_matches(records, floor_px: float):
    """Per-image point matching of (pred boxes, scores, labels, truth boxes, truth labels), class-agnostic."""
    matches = []
    for pb, ps, _, tb, _ in records:
        pc = (pb[:, :2] + pb[:, 2:]) / 2
        tc = (tb[:, :2] + tb[:, 2:]) / 2
        tolerance = np.maximum(np.max(tb[:, 2:] - tb[:, :2], axis=1) / 2, floor_px) if len(tb) else np.zeros(0)
        matches.append(match_points(pc, ps, tc, tolerance))
    return matches


def choose_threshold(matches, min_precision: float) -> float:
    """Lowest score threshold whose precision is at least ``min_precision`` (highest recall); 0.5 if none."""
    return operating_point(matches, min_precision)[0]


def operating_point(matches, min_precision: float) -> tuple[float, bool]:
    """(threshold, validated): :func:`choose_threshold`'s choice, and whether any threshold reached
    ``min_precision`` (False: 0.5 is a fallback that was never validated)."""
    thresholds, _, precision = pr_curve(matches)
    ok = np.nonzero(precision >= min_precision)[0]
    return (float(thresholds[ok.max()]), True) if len(ok) else (0.5, False)


def load_init_weights(detector: torch.nn.Module, path: Path) -> set[str]:
    """Load weights for fine-tuning; class heads of another shape are left at their initialisation. Returns the
    content keys of the images the checkpoint was trained on (empty for a state dict or an older checkpoint)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: init_checkpoint does not exist")
    state = torch.load(path, map_location="cpu", weights_only=False)
    seen = set(state.get("ordnance_training_images", [])) if isinstance(state, dict) else set()
    state = state.get("state_dict", state)
    state = {k.removeprefix("detector."): v for k, v in state.items() if not k.startswith("map_metric")}
    own = detector.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    usable = {k: v for k, v in state.items() if k in own and k not in skipped}
    missing = sorted(set(own) - set(usable))
    detector.load_state_dict(usable, strict=False)
    log.info("init_checkpoint %s: loaded %d tensors; re-initialised %s", path, len(usable), skipped or "none")
    if len(usable) < len(own) // 2:
        raise ValueError(f"{path}: only {len(usable)} of {len(own)} tensors match this detector; wrong model?")
    detector.reinitialised = skipped + missing
    return seen
