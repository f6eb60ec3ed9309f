"""Procedural data for weft's default model: shapes drawn with signed distance fields, and captions.

Everything the training, the evaluation and the weft tests must agree on lives here:
the palette, the shape geometry, the size and position words, the caption templates,
and the held-out (shape, colour, background) triples and templates used only for
evaluation. Rendering runs on whatever device the tensors are on (the GPU when training).
"""
import math

import numpy as np
import torch

RES = 128

# Colours far apart in RGB (smallest pairwise distance is about 99, orange/red).
PALETTE = {
    "red": (215, 25, 30),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (245, 225, 40),
    "orange": (240, 120, 20),
    "purple": (140, 50, 190),
    "pink": (245, 130, 200),
    "cyan": (40, 210, 230),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLORS = list(PALETTE)
SHAPES = ["circle", "square", "triangle", "star"]
SIZES = ["small", "medium", "large"]
# Half extent h of a shape as a fraction of the image side, per size word.
SIZE_RANGE = {"small": (0.12, 0.15), "medium": (0.19, 0.23), "large": (0.27, 0.32)}
# Anchors (x, y) in fractions of the image, y down.
POSITIONS = {
    "top left": (0.25, 0.25), "top": (0.5, 0.25), "top right": (0.75, 0.25),
    "left": (0.25, 0.5), "center": (0.5, 0.5), "right": (0.75, 0.5),
    "bottom left": (0.25, 0.75), "bottom": (0.5, 0.75), "bottom right": (0.75, 0.75),
}
POS_NAMES = list(POSITIONS)
STAR_INNER = 0.45  # inner radius / outer radius of the 5-pointed star
EXTENT = 1.15  # largest extent of any shape in units of h (triangle and star radius)

SIZE_WORDS = {"small": ["small", "little"], "medium": ["medium", "medium-sized"], "large": ["large", "big"]}
# Position phrases used inside a sentence ("a red star in the top left ...").
POS_IN = {
    "top left": ["in the top left", "at the top left", "in the top left corner"],
    "top": ["at the top", "in the top"],
    "top right": ["in the top right", "at the top right", "in the top right corner"],
    "left": ["on the left", "at the left"],
    "center": ["in the center", "in the middle"],
    "right": ["on the right", "at the right"],
    "bottom left": ["in the bottom left", "at the bottom left", "in the bottom left corner"],
    "bottom": ["at the bottom", "in the bottom"],
    "bottom right": ["in the bottom right", "at the bottom right", "in the bottom right corner"],
}
# Bare position words used in lists ("small green triangle, top left, white background").
POS_BARE = {k: [k] for k in POSITIONS}
POS_BARE["center"] = ["center", "centered", "middle"]

# {z}=size word, {c}=shape colour, {s}=shape, {b}=background colour,
# {p}=bare position, {pin}=position phrase. Templates needing z/p/pin are used only when
# the sampled caption states a size/position.
TRAIN_TEMPLATES = [
    "a {c} {s} on a {b} background",
    "{c} {s} on a {b} background",
    "a {z} {c} {s} on a {b} background",
    "{z} {c} {s}, {p}, {b} background",
    "{c} {s}, {p}, {b} background",
    "a {c} {s} {pin} on a {b} background",
    "a {z} {c} {s} {pin}, {b} background",
    "a {c} {s} {pin} of a {b} image",
    "a {z} {c} {s} {pin} of a {b} image",
    "{c} {s}, {b} background",
    "a {b} background with a {c} {s}",
    "a {b} background with a {z} {c} {s} {pin}",
    "{c} {s} on {b}",
    "{z} {c} {s} on {b}",
    "a picture of a {c} {s} on a {b} background",
    "an image of a {z} {c} {s} {pin} on {b}",
]
# Captions that do not name the background (it is then drawn at random).
TRAIN_TEMPLATES_NOBG = ["a {c} {s}", "a {z} {c} {s}", "{c} {s} {pin}", "a {z} {c} {s} {pin}"]
# Used only for evaluation (never in training).
EVAL_TEMPLATES = ["a {z} {c} {s} on a {b} background, {p}"]
# How LoRA captions name the outline style (the LoRA is trained with and without them):
# "{s}" -> "{s} outline" or "{c}" -> "outlined {c}".
OUTLINE_WORDS = ["{s} outline", "outlined {c}"]


def _heldout_triples():
    """32 (shape, colour, background) triples that never appear in training captions or images."""
    rng = np.random.RandomState(1234)
    out = []
    for si, s in enumerate(SHAPES):
        used = set()
        while len(used) < 8:
            c, b = rng.choice(len(COLORS), 2, replace=False)
            used.add((int(c), int(b)))
        out += [(si, c, b) for c, b in sorted(used)]
    return out


HELDOUT = _heldout_triples()
_HELD_SET = set(HELDOUT)


def _article(text):
    # "a orange" -> "an orange"; "a outline" -> "an outline".
    words = text.split(" ")
    for i in range(len(words) - 1):
        if words[i] in ("a", "A") and words[i + 1][:1] in "aeiou":
            words[i] = "an"
    return " ".join(words)


def fill_template(t, s, c, b, z=None, p=None, rng=None, outline=False):
    rng = rng or np.random
    if outline:
        ow = OUTLINE_WORDS[rng.randint(len(OUTLINE_WORDS))]
        t = t.replace("{s}", ow) if ow.startswith("{s}") else t.replace("{c}", ow)
    zw = rng.choice(SIZE_WORDS[z]) if z else ""
    pw = rng.choice(POS_BARE[p]) if p else ""
    pin = rng.choice(POS_IN[p]) if p else ""
    text = t.format(z=zw, c=c, s=s, b=b, p=pw, pin=pin)
    return _article(" ".join(text.split()))


def sample_attrs(n, rng, heldout_ok=False, p_size=0.6, p_pos=0.6):
    """Random attributes for n images as numpy arrays.

    Returns dict: shape, color, bg (palette indices), size (0..2), size_named (bool),
    pos (0..8 or -1 = anywhere), h, cx, cy (fractions of the image side).
    """
    shape = rng.randint(0, len(SHAPES), n)
    color = rng.randint(0, len(COLORS), n)
    bg = (color + rng.randint(1, len(COLORS), n)) % len(COLORS)
    if not heldout_ok:
        for i in range(n):
            while (int(shape[i]), int(color[i]), int(bg[i])) in _HELD_SET:
                color[i] = rng.randint(0, len(COLORS))
                bg[i] = (color[i] + rng.randint(1, len(COLORS))) % len(COLORS)
    size = rng.randint(0, 3, n)
    size_named = rng.rand(n) < p_size
    pos = np.where(rng.rand(n) < p_pos, rng.randint(0, 9, n), -1)
    lo = np.array([SIZE_RANGE[k][0] for k in SIZES])[size]
    hi = np.array([SIZE_RANGE[k][1] for k in SIZES])[size]
    h = lo + (hi - lo) * rng.rand(n)
    cmin = EXTENT * h + 0.02
    cmax = 1 - cmin
    ax = np.array([POSITIONS[k][0] for k in POS_NAMES])
    ay = np.array([POSITIONS[k][1] for k in POS_NAMES])
    jx, jy = (rng.rand(2, n) - 0.5) * 0.08
    ux, uy = rng.rand(2, n)
    cx = np.where(pos >= 0, ax[np.maximum(pos, 0)] + jx, cmin + (cmax - cmin) * ux)
    cy = np.where(pos >= 0, ay[np.maximum(pos, 0)] + jy, cmin + (cmax - cmin) * uy)
    cx = np.clip(cx, cmin, cmax)
    cy = np.clip(cy, cmin, cmax)
    return dict(shape=shape, color=color, bg=bg, size=size, size_named=size_named, pos=pos,
                h=h, cx=cx, cy=cy)


def captions(a, rng, p_nobg=0.1, outline=None, templates=None):
    """One caption per image. outline: None, or probability of an outline prefix (LoRA data)."""
    out = []
    for i in range(len(a["shape"])):
        s, c, b = SHAPES[a["shape"][i]], COLORS[a["color"][i]], COLORS[a["bg"][i]]
        z = SIZES[a["size"][i]] if a["size_named"][i] else None
        p = POS_NAMES[a["pos"][i]] if a["pos"][i] >= 0 else None
        pool = templates or (TRAIN_TEMPLATES_NOBG if rng.rand() < p_nobg else TRAIN_TEMPLATES)
        ok = [t for t in pool if ("{z}" in t) == (z is not None)
              and (("{p}" in t) or ("{pin}" in t)) == (p is not None)]
        if not ok:  # e.g. size named, position not, and no such no-bg template
            ok = [t for t in pool if ("{z}" not in t or z) and ("{p}" not in t and "{pin}" not in t or p)]
        t = ok[rng.randint(len(ok))]
        ol = outline is not None and rng.rand() < outline
        out.append(fill_template(t, s, c, b, z, p, rng, outline=ol))
    return out


def _sdf(shape, px, py, h):
    """Signed distance in pixels (negative inside). px, py: offsets from the centre, y up."""
    # circle
    d_c = torch.sqrt(px * px + py * py) - h
    # square, half side 0.9 h
    qx, qy = px.abs() - 0.9 * h, py.abs() - 0.9 * h
    d_s = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2) + torch.maximum(qx, qy).clamp(max=0)
    # equilateral triangle pointing up, circumradius EXTENT*h (Inigo Quilez's sdEquilateralTriangle)
    r = EXTENT * h * math.sqrt(3) / 2
    k = math.sqrt(3)
    tx = px.abs() - r
    ty = py + r / k
    sw = (tx + k * ty) > 0
    tx2 = torch.where(sw, (tx - k * ty) / 2, tx)
    ty2 = torch.where(sw, (-k * tx - ty) / 2, ty)
    tx2 = tx2 - torch.maximum(torch.minimum(tx2, torch.zeros_like(tx2)), -2 * r)
    d_t = -torch.sqrt(tx2 * tx2 + ty2 * ty2) * torch.sign(ty2)
    # five-pointed star pointing up, outer radius EXTENT*h (Inigo Quilez's sdStar5)
    R = EXTENT * h
    k1x, k1y = 0.809016994375, -0.587785252292
    k2x, k2y = -k1x, k1y
    sx, sy = px.abs(), py
    dt = (k1x * sx + k1y * sy).clamp(min=0) * 2
    sx, sy = sx - dt * k1x, sy - dt * k1y
    dt = (k2x * sx + k2y * sy).clamp(min=0) * 2
    sx, sy = sx - dt * k2x, sy - dt * k2y
    sx = sx.abs()
    sy = sy - R
    bax, bay = STAR_INNER * -k1y, STAR_INNER * k1x - 1
    hh = ((sx * bax + sy * bay) / (bax * bax + bay * bay)).clamp(min=0)
    hh = torch.minimum(hh, R)
    d_r = torch.sqrt((sx - bax * hh) ** 2 + (sy - bay * hh) ** 2) * torch.sign(sy * bax - sx * bay)
    return torch.where(shape == 0, d_c, torch.where(shape == 1, d_s, torch.where(shape == 2, d_t, d_r)))


def render(a, device, outline=False, jitter=12.0, gen=None, res=RES):
    """Draws images (B,3,res,res) in [-1,1] and the filled shape masks (B,1,res,res) in [0,1]."""
    f = lambda k: torch.as_tensor(np.asarray(a[k]), device=device)
    n = len(a["shape"])
    pal = torch.tensor([PALETTE[c] for c in COLORS], device=device, dtype=torch.float32)
    col = pal[f("color").long()]
    bg = pal[f("bg").long()]
    if jitter:
        col = col + (torch.rand(n, 3, device=device, generator=gen) * 2 - 1) * jitter
        bg = bg + (torch.rand(n, 3, device=device, generator=gen) * 2 - 1) * jitter
    col = (col.clamp(0, 255) / 127.5 - 1)[:, :, None, None]
    bg = (bg.clamp(0, 255) / 127.5 - 1)[:, :, None, None]
    g = torch.arange(res, device=device, dtype=torch.float32) + 0.5
    h = f("h").float()[:, None, None] * res
    px = g[None, None, :] - f("cx").float()[:, None, None] * res
    py = -(g[None, :, None] - f("cy").float()[:, None, None] * res)
    d = _sdf(f("shape")[:, None, None], px, py, h)
    fill = (0.5 - d).clamp(0, 1)[:, None]
    if outline:
        w = torch.clamp(0.15 * h, min=4.5)[:, None]
        alpha = (w / 2 + 0.5 - d.abs()[:, None]).clamp(0, 1)
    else:
        alpha = fill
    img = bg * (1 - alpha) + col * alpha
    return img, fill


def eval_prompts(n_per_shape=8, seed=5):
    """The held-out evaluation set: prompts (never in training) with their expected attributes.

    Each held-out triple gets one prompt from one of 4 wordings: three training templates
    (the triple itself is held out) and one held-out template.
    """
    rng = np.random.RandomState(seed)
    wordings = [
        ("a {c} {s} on a {b} background", False, False),
        ("{z} {c} {s}, {p}, {b} background", True, True),
        ("a {c} {s} {pin} of a {b} image", False, True),
        (EVAL_TEMPLATES[0], True, True),
    ]
    out = []
    for i, (si, ci, bi) in enumerate(HELDOUT):
        t, has_z, has_p = wordings[i % len(wordings)]
        z = SIZES[rng.randint(3)] if has_z else None
        p = POS_NAMES[rng.randint(9)] if has_p else None
        if t == "a {c} {s} {pin} of a {b} image":
            p = "center"
        text = fill_template(t, SHAPES[si], COLORS[ci], COLORS[bi], z, p, rng)
        out.append(dict(prompt=text, shape=SHAPES[si], color=COLORS[ci], background=COLORS[bi],
                        size=z, position=p, seed=1000 + i))
    return out


if __name__ == "__main__":
    import sys

    from PIL import Image

    rng = np.random.RandomState(0)
    a = sample_attrs(64, rng)
    caps = captions(a, rng)
    img, m = render(a, "cpu")
    img2, _ = render(a, "cpu", outline=True)
    grid = lambda x: ((x[:, :, :, :].reshape(8, 8, 3, RES, RES).permute(0, 3, 1, 4, 2)
                       .reshape(8 * RES, 8 * RES, 3) + 1) * 127.5).clamp(0, 255).byte().numpy()
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/shapes"
    Image.fromarray(grid(img)).save(out + "_fill.png")
    Image.fromarray(grid(img2)).save(out + "_outline.png")
    print("\n".join(caps[:16]))
    print(captions(a, rng, outline=0.5)[:6])
    for e in eval_prompts()[:8]:
        print(e)
