"""Export a distilled student: a plain Detectron2 checkpoint + config, or a traced TorchScript / ONNX graph.

``pth`` writes ``OUT/model_final.pth`` (student tensors, ``distill.*`` dropped) and ``OUT/config.yaml`` (the
student's stock meta-architecture; keys stock ``get_cfg()`` lacks are dropped). ``torchscript`` / ``onnx`` also
write ``OUT/model.ts`` / ``OUT/model.onnx``: :class:`DeployModel` traced once, running without kd_det or
Detectron2 code (the TorchScript file needs ``import torchvision`` for its nms / roi_align ops).

Graph interface (both formats):

* input ``image``: float32 (3, H, W), pixel values 0-255 in the config's ``INPUT.FORMAT`` order, any H, W
  (resize it as Detectron2's ``DefaultPredictor`` does, ``INPUT.MIN/MAX_SIZE_TEST``, for the trained scale);
* outputs ``boxes`` (N, 4) float32 xyxy in the input's pixels, ``scores`` (N,) float32, ``classes`` (N,) int64
  (contiguous class index, ``thing_classes`` order), and for Mask R-CNN ``masks`` (N, H, W) uint8 (0/1).
  TorchScript returns that tuple, in that order.
"""
import os
import warnings

import torch
import torch.nn.functional as F
from detectron2.layers.mask_ops import _do_paste_mask
from detectron2.modeling import GeneralizedRCNN
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference_single_image
from torch import nn

from ...core import atomic_save, atomic_write_text
from ...config.detection import load_config
from ...errors import ConfigError
from ...safe_load import load_torch, state_dict_mismatch
from .wrapper import DISTILL_PREFIX, student_config

__all__ = ["export_student", "load_student", "DeployModel", "EXPORT_FORMATS", "OUTPUT_NAMES", "GRAPH_FILES", "require_exporter"]

#: --format value -> what it writes besides config.yaml.
EXPORT_FORMATS = ("pth", "torchscript", "onnx")
#: The graph file each traced format writes in OUT.
GRAPH_FILES = {"torchscript": "model.ts", "onnx": "model.onnx"}
#: Graph outputs, in TorchScript's tuple order (``masks`` only for Mask R-CNN students).
OUTPUT_NAMES = ("boxes", "scores", "classes", "masks")
ONNX_OPSET = 17  # roi_align with aligned=True needs >= 16 (half_pixel coordinates)


def require_exporter(fmt):
    """Refuse a --format outside :data:`EXPORT_FORMATS`, or ``onnx`` without the ``deploy`` extra's packages."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"--format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}.")
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401  (torch.onnx's exporter writes through it)
        except ImportError:
            raise ConfigError("--format onnx needs the onnx package, which is not installed; install kd_det's deploy "
                              "extra: pip install -e \".[deploy]\" (onnx, onnxruntime).") from None


def _keep_stock_keys(cfg):
    """Drop every key stock Detectron2's get_cfg() lacks (KD.*, DATASETS.COCO_FORMAT, ...) in place.

    MODEL.MOBILENET is kept when the student uses kd_det's MobileNetV2 backbone, MODEL.FCOS when it is an FCOS:
    that backbone / Detectron2 0.6's FCOS from a yacs config (and their keys) need ``import kd_det.detection.modeling``
    in any case (the FCOS weights also load into stock ``detectron2.modeling.meta_arch.fcos.FCOS`` built by hand).
    """
    from detectron2.config import get_cfg as stock_get_cfg

    keep_extra = {"MODEL.MOBILENET"} if "mobilenet" in cfg.MODEL.BACKBONE.NAME else set()
    if cfg.MODEL.META_ARCHITECTURE == "FCOS":
        keep_extra.add("MODEL.FCOS")

    def prune(node, ref, prefix):
        for key in list(node.keys()):
            name = prefix + key
            if name in keep_extra:
                continue
            if key not in ref:
                del node[key]
            elif hasattr(node[key], "keys") and hasattr(ref[key], "keys"):
                prune(node[key], ref[key], name + ".")

    prune(cfg, stock_get_cfg(), "")


class DeployModel(nn.Module):
    """One image in, tensors out: the trace-friendly inference of a Detectron2 student (see the module docstring).

    For a :class:`GeneralizedRCNN` it runs the steps of ``GeneralizedRCNN.inference`` for one image, without the
    per-image ``split`` of Detectron2's box / mask inference (whose sizes a trace would freeze at the traced
    image's proposal count); a dense detector (RetinaNet, FCOS) runs its own forward, which indexes per image.

    Args:
        model: a built Detectron2 student in eval mode.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        """image (3, H, W) float32 -> boxes (N, 4), scores (N,), classes (N,) int64[, masks (N, H, W) uint8]."""
        height, width = image.shape[-2:]
        if isinstance(self.model, GeneralizedRCNN):
            # detector_postprocess at scale 1 (boxes are clipped already), with masks pasted over the whole image:
            # its CPU path pastes into an int32 window whose Slice ONNX Runtime refuses, and the result is the same
            inst = self._rcnn(image)
            inst = inst[inst.pred_boxes.nonempty()]
            if inst.has("pred_masks"):
                masks, _ = _do_paste_mask(inst.pred_masks, inst.pred_boxes.tensor, height, width, skip_empty=False)
                inst.pred_masks = masks >= 0.5
        else:
            inst = self.model([{"image": image}])[0]["instances"]
        out = (inst.pred_boxes.tensor, inst.scores, inst.pred_classes)
        if inst.has("pred_masks"):
            out = out + (inst.pred_masks.to(torch.uint8),)
        return out

    def _rcnn(self, image):
        """``GeneralizedRCNN.inference`` for one image (Detectron2 0.6 semantics: softmax scores, class-specific
        deltas, ``fast_rcnn_inference_single_image``, class-specific sigmoid masks) -> Instances at input scale."""
        m = self.model
        images = m.preprocess_image([{"image": image}])
        features = m.backbone(images.tensor)
        proposals = m.proposal_generator(images, features, None)[0][0]
        rh, bp = m.roi_heads, m.roi_heads.box_predictor
        box_features = rh.box_head(rh.box_pooler([features[f] for f in rh.box_in_features],
                                                 [proposals.proposal_boxes]))
        logits, deltas = bp(box_features)
        boxes = bp.box2box_transform.apply_deltas(deltas, proposals.proposal_boxes.tensor)
        inst, _ = fast_rcnn_inference_single_image(boxes, F.softmax(logits, dim=-1), images.image_sizes[0],
                                                   bp.test_score_thresh, bp.test_nms_thresh, bp.test_topk_per_image)
        if rh.mask_on:
            mask_features = [features[f] for f in rh.mask_in_features]
            mask_logits = rh.mask_head.layers(rh.mask_pooler(mask_features, [inst.pred_boxes]))  # (N, C|1, M, M)
            if mask_logits.shape[1] > 1:
                mask_logits = mask_logits[torch.arange(mask_logits.shape[0]), inst.pred_classes][:, None]
            inst.pred_masks = mask_logits.sigmoid()  # (N, 1, M, M) in box coordinates
        return inst


def load_student(cfg, weights):
    """The student of ``cfg`` (built on its ``MODEL.DEVICE``, eval mode) holding the tensors of the checkpoint
    ``weights`` (train_net.py's, ``distill.*`` dropped, or an exported one), loaded strictly: a missing, unexpected
    or differently shaped tensor is one sentence, never Detectron2's skip-with-a-warning.

    Returns:
        (model, student state dict, number of dropped distillation tensors).
    """
    from detectron2.modeling import build_model

    ckpt = load_torch(weights, "Checkpoint")
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"Checkpoint {weights} holds no model state dict.")
    student = {k: v for k, v in state.items() if not k.startswith(DISTILL_PREFIX)}
    model = build_model(cfg).eval()
    bad = dict(zip(("missing", "unexpected", "of another shape"), state_dict_mismatch(model.state_dict(), student)))
    if any(bad.values()):
        detail = "; ".join(f"{len(v)} {what} (e.g. {v[0]})" for what, v in bad.items() if v)
        raise ConfigError(f"--weights {weights} does not fit the config's student ({cfg.MODEL.META_ARCHITECTURE}, "
                          f"{cfg.MODEL.BACKBONE.NAME}): tensors {detail}.")
    model.load_state_dict(student)
    return model, student, len(state) - len(student)


def _example_image(cfg):
    """A fixed (3, MIN_SIZE_TEST, ~4/3 of it) image to trace with (values 0-255)."""
    h = int(cfg.INPUT.MIN_SIZE_TEST)
    w = min(int(cfg.INPUT.MAX_SIZE_TEST), h * 4 // 3)
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)) * 255


def trace(model, fmt, path, example):
    """Trace ``DeployModel(model)`` on ``example`` and write it to ``path`` as ``fmt`` (torchscript | onnx)."""
    deploy = DeployModel(model).eval()
    masks = bool(getattr(getattr(model, "roi_heads", None), "mask_on", False))  # Mask R-CNN adds the masks output
    names = list(OUTPUT_NAMES[:4 if masks else 3])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings on Detectron2's Python-int shape checks: all static asserts
        tmp = f"{path}.tmp{os.getpid()}"
        try:
            if fmt == "torchscript":
                torch.jit.trace(deploy, (example,), check_trace=False).save(tmp)
            else:
                torch.onnx.export(deploy, (example,), tmp, input_names=["image"], output_names=names,
                                  dynamic_axes={"image": {1: "height", 2: "width"}, **{k: {0: "n"} for k in names}},
                                  opset_version=ONNX_OPSET, dynamo=False)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return names


def export_student(config_file, weights, out_dir, opts=(), fmt="pth"):
    """Write the student of ``weights`` to ``out_dir``: ``model_final.pth`` + ``config.yaml`` (the wrapper's
    ``STUDENT_ARCH``: GeneralizedRCNN, RetinaNet, FCOS), and for ``fmt`` torchscript / onnx also the traced graph.

    Args:
        config_file: the distillation (or plain) config the checkpoint was trained with.
        weights: a checkpoint written by train_net.py for that config.
        out_dir: output folder (created).
        opts: extra ``KEY VALUE`` overrides for the config.
        fmt: one of :data:`EXPORT_FORMATS`.

    Returns:
        dict with ``checkpoint``, ``config``, ``dropped`` (distillation tensors left out) and, for a traced format,
        ``graph`` (its path) and ``outputs`` (output names).
    """
    require_exporter(fmt)
    cfg = student_config(load_config(config_file, opts))
    if cfg.MODEL.KEYPOINT_ON:
        raise ConfigError("MODEL.KEYPOINT_ON True: export_student.py exports box and mask students only.")
    cfg.defrost()
    cfg.MODEL.WEIGHTS = ""
    on_cpu = cfg.clone()
    on_cpu.MODEL.DEVICE = "cpu"  # exported graphs are traced on the CPU; config.yaml keeps the run's device
    built, student, dropped = load_student(on_cpu, weights)  # a checkpoint that does not fit: refused, nothing written
    _keep_stock_keys(cfg)
    os.makedirs(out_dir, exist_ok=True)
    out = {"checkpoint": os.path.join(out_dir, "model_final.pth"), "config": os.path.join(out_dir, "config.yaml"),
           "dropped": dropped}
    if fmt != "pth":
        out["graph"] = os.path.join(out_dir, GRAPH_FILES[fmt])
        out["outputs"] = trace(built, fmt, out["graph"], _example_image(cfg))
    atomic_save({"model": student, "__author__": "kd_det export_student"}, out["checkpoint"])
    atomic_write_text(out["config"], cfg.dump())
    return out
