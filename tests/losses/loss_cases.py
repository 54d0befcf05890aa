"""Small, seeded inputs for every registered loss (used by the cross-cutting edge-case,
autocast, gradcheck and DistillLoss tests). A plain module, imported as ``loss_cases``."""
import torch

from kd_det.losses import build_loss

ALL_LOSSES = ["kd", "dkd", "ckd", "dcd", "fitnet", "fgfi", "reviewkd", "msd", "crd"]


def _anchors(h, w, stride):
    ys, xs = torch.meshgrid(torch.arange(h) * stride, torch.arange(w) * stride, indexing="ij")
    centers = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1).float()
    boxes = []
    for half in (stride * 0.75, stride * 1.5):
        boxes.append(torch.cat([centers - half, centers + half], dim=1))
    return torch.stack(boxes, dim=1).reshape(-1, 4)          # (H * W * 2, 4), location-major


def make_case(name, n, dtype=torch.float32, seed=0):
    """Returns (loss module, kwargs) with batch / RoI count ``n``."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)

    def r(*shape):
        return (torch.randn(*shape, generator=g) * 1.5).to(dtype)

    if name in ("kd", "dkd", "ckd"):
        loss = build_loss(name)
        kwargs = {"logits_s": r(n, 5), "logits_t": r(n, 5)}
        if name == "dkd":
            kwargs["target"] = torch.randint(0, 5, (n,), generator=g)
    elif name == "dcd":
        loss = build_loss("dcd", in_dim_s=5, in_dim_t=6, proj_dim=4)
        kwargs = {"emb_s": r(n, 5), "emb_t": r(n, 6)}
    elif name == "crd":
        loss = build_loss("crd", in_dim_s=5, in_dim_t=6, num_samples=20, feat_dim=4, nce_k=5).eval()
        kwargs = {"emb_s": r(n, 5), "emb_t": r(n, 6), "index": torch.arange(n) % 20,
                  "contrast_index": torch.randint(0, 20, (n, 6), generator=g)}
    elif name in ("fitnet", "reviewkd", "fgfi"):
        params = {"in_channels": [2, 3], "out_channels": [3, 2]}
        if name == "reviewkd":
            params["mid_channels"] = 2
        loss = build_loss(name, **params)
        kwargs = {"feats_s": [r(n, 2, 4, 4), r(n, 3, 2, 2)], "feats_t": [r(n, 3, 4, 4), r(n, 2, 2, 2)]}
        if name == "fgfi":
            kwargs["anchors"] = [_anchors(4, 4, 8), _anchors(2, 2, 16)]
            kwargs["gt_boxes"] = [torch.tensor([[4.0, 4.0, 20.0, 14.0]]) for _ in range(n)]
    elif name == "msd":
        loss = build_loss("msd", in_channels=[2, 3], out_channels=[3, 4], grids=(1, 2))
        kwargs = {"feats_s": [r(n, 2, 4, 4), r(n, 3, 2, 2)], "feats_t": [r(n, 3, 4, 4), r(n, 4, 2, 2)],
                  "teacher_classifier": torch.nn.Linear(4, 3).to(dtype)}
    else:
        raise KeyError(name)
    if dtype == torch.float64:
        loss = loss.double()
    return loss, kwargs


def float_inputs(kwargs):
    """(key, tensor) for every floating input tensor, list items included (key[i])."""
    out = []
    for key, value in kwargs.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            out.append((key, value))
        elif isinstance(value, list) and key.startswith("feats"):
            out.extend((f"{key}[{i}]", v) for i, v in enumerate(value))
    return out
