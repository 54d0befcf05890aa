"""Experiment: a harder shapes task (8 look-alike classes + clutter), COCO json + PNG."""
import json, os, sys
import cv2, numpy as np

CATS = ["circle", "ellipse", "square", "rectangle", "rhombus", "triangle", "pentagon", "hexagon"]
H, W = 128, 160

def outline(cat, cx, cy, r, rng):
    a = rng.uniform(0, 2 * np.pi)
    if cat in ("circle", "ellipse"):
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        ry = r * (rng.uniform(0.5, 0.7) if cat == "ellipse" else 1.0)
        x, y = r * np.cos(t), ry * np.sin(t)
    elif cat in ("square", "rectangle", "rhombus"):
        if cat == "rhombus":
            q = rng.uniform(0.5, 0.7)
            x, y = np.array([r, 0, -r, 0.]), np.array([0, r * q, 0, -r * q])
        else:
            q = rng.uniform(0.45, 0.65) if cat == "rectangle" else 1.0
            s = r / np.sqrt(1 + q * q)
            x, y = np.array([s, -s, -s, s]), np.array([s * q, s * q, -s * q, -s * q])
    else:
        n = {"triangle": 3, "pentagon": 5, "hexagon": 6}[cat]
        t = np.arange(n) * 2 * np.pi / n
        x, y = r * np.cos(t), r * np.sin(t)
    c, s = np.cos(a), np.sin(a)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1)

def render(rng, image_id):
    base = rng.integers(0, 90, size=3)
    img = (base + rng.integers(0, 40, size=(H, W, 3))).clip(0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 4))):  # clutter: unlabelled lines
        p = rng.integers(0, [W, H, W, H])
        cv2.line(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), tuple(int(v) for v in rng.integers(60, 200, 3)), int(rng.integers(1, 3)))
    anns = []
    for _ in range(int(rng.integers(2, 7))):
        k = int(rng.integers(0, len(CATS)))
        r = float(rng.uniform(7, min(H, W) / 3.5))
        cx, cy = rng.uniform(r * 0.5, W - r * 0.5), rng.uniform(r * 0.5, H - r * 0.5)
        pts = outline(CATS[k], cx, cy, r, rng)
        pts[:, 0] = pts[:, 0].clip(0, W - 1); pts[:, 1] = pts[:, 1].clip(0, H - 1)
        cv2.fillPoly(img, [np.round(pts).astype(np.int32)], tuple(int(c) for c in rng.integers(110, 256, size=3)))
        x0, y0 = pts.min(0); x1, y1 = pts.max(0)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        anns.append({"image_id": image_id, "category_id": k + 1,
                     "bbox": [round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
                     "area": round(float(cv2.contourArea(pts.astype(np.float32))), 2),
                     "segmentation": [[round(float(v), 2) for v in pts.reshape(-1)]], "iscrowd": 0})
    return img, anns

root = sys.argv[1]
for split, (n, seed) in {"train": (300, 11), "val": (150, 12)}.items():
    rng = np.random.default_rng(seed)
    os.makedirs(f"{root}/{split}", exist_ok=True); os.makedirs(f"{root}/annotations", exist_ok=True)
    images, annotations = [], []
    for i in range(1, n + 1):
        img, anns = render(rng, i)
        cv2.imwrite(f"{root}/{split}/{i:06d}.png", img)
        images.append({"id": i, "file_name": f"{i:06d}.png", "height": H, "width": W})
        for a in anns:
            a["id"] = len(annotations) + 1; annotations.append(a)
    json.dump({"images": images, "annotations": annotations, "categories": [{"id": i + 1, "name": c} for i, c in enumerate(CATS)]},
              open(f"{root}/annotations/instances_{split}.json", "w"))
    print(split, n, len(annotations))
