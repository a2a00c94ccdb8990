"""A synthetic shop with known ground truth, written in the raw layout.

Items are rendered product images: the silhouette depends on the category (which the catalog names),
while colour and pattern are only in the pixels (the catalog does not name them). Users have a taste
over category x colour x pattern, a popularity bias and an activity level; they produce event funnels
(view -> click -> add_to_cart -> purchase) over several days while new items keep arriving. Because the
truth is known (``truth/``), tests and benchmarks can tell whether a model really learned the visual
signal, e.g. whether brand-new items reach the users whose taste they match.

Layout written under the output root::

    raw/catalog/items.csv              item_id, category, price, added_date
    raw/images/<item_id>.<ext>         one image per item (JPEG, some PNG / CMYK / palette)
    raw/events/dt=<ds>/events.jsonl    user_id, item_id, event_type, ts, event_id
    raw/user_images/dt=<ds>/<user_id>/<photo_id>.<ext>   shoppers' photos of items they like (JPEGs
                                       carry GPS EXIF, as phone photos do); some users only upload
    truth/items.csv                    colour, pattern, popularity, arrival day of every item
    truth/users.jsonl                  every user's taste weights, activity and popularity bias
    truth/bad_records.jsonl            every injected bad record: kind, where, what
    truth/user_photos.jsonl            what each photo shows (item, category, colour, pattern)
    truth/upload_only_users.jsonl      users whose only signal is uploads, with items they would buy
    truth/summary.json                 counts and parameters
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta

import numpy as np
from PIL import Image, ImageDraw

from visrec.store.lake import Lake
from visrec.vocabulary import EVENT_TYPES

CATEGORIES: tuple[str, ...] = (
    "tshirt",
    "jacket",
    "dress",
    "trousers",
    "skirt",
    "shoe",
    "bag",
    "hat",
)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 30, 40),
    "orange": (240, 130, 20),
    "yellow": (235, 200, 30),
    "green": (40, 150, 60),
    "blue": (30, 70, 190),
    "purple": (120, 50, 150),
    "black": (30, 30, 30),
    "pink": (240, 130, 170),
}
PATTERNS: tuple[str, ...] = ("solid", "stripes", "dots", "checks", "diagonal")
# Kinds of injected bad input, named by the quarantine reason ingestion must give them (a duplicate is
# dropped, not quarantined).
IMAGE_BAD_KINDS: tuple[str, ...] = (
    "truncated",
    "empty_file",
    "not_an_image",
    "wrong_extension",
    "decompression_bomb",
)
EVENT_BAD_KINDS: tuple[str, ...] = (
    "malformed",
    "missing_field",
    "unknown_item",
    "unknown_event_type",
    "duplicate",
    "future_timestamp",
)


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 16):
    angles = np.linspace(math.radians(a0), math.radians(a1), n)
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


# Silhouettes in unit coordinates (x right, y down, [-1, 1]); a category may have several polygons.
SHAPES: dict[str, list[list[tuple[float, float]]]] = {
    "tshirt": [
        [
            (-0.35, -0.8),
            (0.35, -0.8),
            (0.9, -0.45),
            (0.7, -0.15),
            (0.45, -0.3),
            (0.45, 0.85),
            (-0.45, 0.85),
            (-0.45, -0.3),
            (-0.7, -0.15),
            (-0.9, -0.45),
        ]
    ],
    "jacket": [
        [
            (-0.35, -0.85),
            (0.35, -0.85),
            (0.75, -0.6),
            (0.95, 0.6),
            (0.7, 0.65),
            (0.5, -0.1),
            (0.5, 0.9),
            (-0.5, 0.9),
            (-0.5, -0.1),
            (-0.7, 0.65),
            (-0.95, 0.6),
            (-0.75, -0.6),
        ]
    ],
    "dress": [[(-0.25, -0.9), (0.25, -0.9), (0.3, -0.3), (0.75, 0.9), (-0.75, 0.9), (-0.3, -0.3)]],
    "trousers": [
        [(-0.5, -0.9), (0.5, -0.9), (0.55, 0.9), (0.12, 0.9), (0.0, -0.2), (-0.12, 0.9), (-0.55, 0.9)]
    ],
    "skirt": [[(-0.4, -0.45), (0.4, -0.45), (0.8, 0.5), (-0.8, 0.5)]],
    "shoe": [
        [
            (-0.9, 0.1),
            (-0.3, 0.1),
            (-0.3, -0.35),
            (0.05, -0.35),
            (0.2, 0.0),
            (0.9, 0.2),
            (0.9, 0.45),
            (-0.9, 0.45),
        ]
    ],
    "bag": [
        [(-0.6, -0.2), (0.6, -0.2), (0.7, 0.75), (-0.7, 0.75)],
        _arc(0, -0.2, 0.45, 0.55, 180, 360) + _arc(0, -0.2, 0.3, 0.4, 360, 180),
    ],
    "hat": [_arc(0, 0.2, 0.55, 0.7, 180, 360), _arc(0, 0.2, 0.95, 0.18, 0, 360, 24)],
}


@dataclass(frozen=True)
class ShopConfig:
    """Parameters of a synthetic shop. The defaults are the demo scale."""

    users: int = 2000
    items: int = 1000
    days: int = 10
    seed: int = 42
    corrupt_rate: float = 0.0
    start_date: str = "2026-11-01"
    image_size: int = 64
    initial_item_share: float = 0.6  # items on sale on day 0; the rest arrive day by day
    uploader_share: float = 0.05  # users who also upload photos of items they like
    upload_only_share: float = 0.02  # extra users (as a share of ``users``) whose only signal is uploads
    popularity_bias: tuple[float, float] = (0.05, 0.4)  # range of users' share of popularity-driven visits

    def __post_init__(self) -> None:
        if self.users < 1 or self.items < len(CATEGORIES) or self.days < 1:
            raise ValueError(
                f"need users >= 1, items >= {len(CATEGORIES)} and days >= 1 "
                f"(got users={self.users}, items={self.items}, days={self.days})"
            )
        if not 0.0 <= self.corrupt_rate <= 0.5:
            raise ValueError(f"corrupt rate must be within [0, 0.5], got {self.corrupt_rate}")
        if not (0.0 <= self.uploader_share <= 1.0 and 0.0 <= self.upload_only_share <= 1.0):
            raise ValueError("uploader_share and upload_only_share must be within [0, 1]")
        if not 0.0 <= self.popularity_bias[0] <= self.popularity_bias[1] <= 1.0:
            raise ValueError(f"popularity_bias must be a range within [0, 1], got {self.popularity_bias}")
        if self.image_size < 32:
            raise ValueError(f"image size must be at least 32, got {self.image_size}")
        date.fromisoformat(self.start_date)


@dataclass
class ShopSummary:
    """What ``generate_shop`` wrote."""

    out: str
    items: int
    users: int
    days: int
    events: int
    bad_images: int
    bad_event_lines: int
    first_ds: str
    last_ds: str
    photos: int = 0
    bad_photos: int = 0


def _rngs(seed: int, n: int) -> list[np.random.Generator]:
    # Independent streams, so a change in one part of the generator leaves the others' output alone.
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def _day(config: ShopConfig, d: int) -> str:
    return (date.fromisoformat(config.start_date) + timedelta(days=int(d))).isoformat()


# --- images ------------------------------------------------------------------------------------------
def render_item(
    category: str, colour: str, pattern: str, rng: np.random.Generator, size: int = 64
) -> np.ndarray:
    """Render one product photo (``size`` x ``size`` RGB uint8) with random pose and background."""
    scale = rng.uniform(0.62, 0.92) * size / 2
    angle = rng.uniform(-0.3, 0.3)
    cx = size / 2 + rng.uniform(-0.1, 0.1) * size
    cy = size / 2 + rng.uniform(-0.1, 0.1) * size
    cos, sin = math.cos(angle), math.sin(angle)

    # Silhouette mask, drawn at 4x and downsampled for soft edges.
    ss = 4
    mask_img = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(mask_img)
    for poly in SHAPES[category]:
        pts = [
            ((cx + scale * (x * cos - y * sin)) * ss, (cy + scale * (x * sin + y * cos)) * ss)
            for x, y in poly
        ]
        draw.polygon(pts, fill=255)
    mask = np.asarray(mask_img.resize((size, size), Image.Resampling.BOX), np.float32)[..., None]
    mask /= 255.0

    # Texture in the item's own frame, so the pattern turns with the item.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u = (xx - cx) * cos + (yy - cy) * sin
    v = -(xx - cx) * sin + (yy - cy) * cos
    period = rng.uniform(0.1, 0.16) * size
    phase = rng.uniform(0, period)
    if pattern == "solid":
        secondary = np.zeros_like(u, dtype=bool)
    elif pattern == "stripes":
        secondary = ((v + phase) % period) < period * 0.45
    elif pattern == "dots":
        du = ((u + phase) % period) - period / 2
        dv = ((v + phase) % period) - period / 2
        secondary = du * du + dv * dv < (period * 0.28) ** 2
    elif pattern == "checks":
        secondary = (np.floor((u + phase) / period) + np.floor((v + phase) / period)) % 2 == 0
    elif pattern == "diagonal":
        secondary = ((u + v + phase) % period) < period * 0.45
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    base = np.array(COLOURS[colour], np.float32) + rng.normal(0, 10, 3)
    light = base * 0.3 + 255 * 0.7
    texture = np.where(secondary[..., None], light, base)
    shade = 0.82 + 0.18 * (1 - (v - v.min()) / max(float(np.ptp(v)), 1.0))
    texture = texture * shade[..., None]

    # Background: a pale random tone with a gradient.
    bg_tone = rng.uniform(190, 250) + rng.normal(0, 8, 3)
    grad = rng.uniform(-25, 25) * (xx / size - 0.5) + rng.uniform(-25, 25) * (yy / size - 0.5)
    background = bg_tone[None, None, :] + grad[..., None]

    image = background * (1 - mask) + texture * mask + rng.normal(0, 3, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _encode(pixels: np.ndarray, fmt: str) -> tuple[bytes, str]:
    """Encode as JPEG (most items) or in the other modes real catalogs contain."""
    img = Image.fromarray(pixels, "RGB")
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.save(buf, "JPEG", quality=90)
        return buf.getvalue(), "jpg"
    if fmt == "cmyk":
        img.convert("CMYK").save(buf, "JPEG", quality=90)
        return buf.getvalue(), "jpg"
    if fmt == "palette":
        img.convert("P", palette=Image.Palette.ADAPTIVE, colors=128).save(buf, "PNG")
        return buf.getvalue(), "png"
    if fmt == "rgba":
        rgba = img.convert("RGBA")
        rgba.putalpha(255)
        rgba.save(buf, "PNG")
        return buf.getvalue(), "png"
    raise ValueError(fmt)


def _absurd_png(width: int = 200_000, height: int = 200_000) -> bytes:
    """A tiny PNG file whose header claims a decompression-bomb size."""
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --- user photos -------------------------------------------------------------------------------------
PHOTO_BAD_KINDS: tuple[str, ...] = ("truncated", "empty_file", "not_an_image", "decompression_bomb")
_GPS = {1: "N", 2: (52.0, 22.0, 12.5), 3: "E", 4: (4.0, 53.0, 41.0)}  # a phone's location tag


def shopper_photo(pixels: np.ndarray, rng: np.random.Generator, size: int = 160) -> np.ndarray:
    """A catalog image as a shopper would photograph it: larger, turned, off-centre, cropped, relit,
    on a cluttered background."""
    from PIL import ImageEnhance

    canvas = np.empty((size, size, 3), np.float32)
    canvas[:] = rng.uniform(60, 230, 3)
    for _ in range(int(rng.integers(2, 6))):  # clutter: boxes of other colours
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(size // 8, size // 3, 2)
        canvas[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0, 255, 3)
    product = Image.fromarray(pixels).resize(
        (int(size * rng.uniform(0.7, 0.9)),) * 2, Image.Resampling.BICUBIC
    )
    angle = float(rng.uniform(-15, 15))
    mask = Image.new("L", product.size, 255).rotate(angle, expand=True, fillcolor=0)
    product = product.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    photo = Image.fromarray(canvas.astype(np.uint8))
    offset = rng.integers(0, max(size - product.size[0], 1), 2) if product.size[0] < size else (0, 0)
    photo.paste(product, (int(offset[0]), int(offset[1])), mask)
    photo = ImageEnhance.Brightness(photo).enhance(float(rng.uniform(0.85, 1.15)))
    crop = rng.uniform(0.0, 0.08, 4) * size
    photo = photo.crop((crop[0], crop[1], size - crop[2], size - crop[3]))
    return np.asarray(photo, np.uint8)


def shopper_photos(pixels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """:func:`shopper_photo` of each catalog image (uint8, one per row of ``pixels``), saved as JPEG
    at quality 60 and read back at ``size`` x ``size``: what a shopper uploads."""
    rng = np.random.default_rng(seed)
    photos = []
    for image in pixels:
        out = io.BytesIO()
        Image.fromarray(shopper_photo(image, rng)).save(out, "JPEG", quality=60)
        photo = Image.open(io.BytesIO(out.getvalue())).convert("RGB")  # square already
        photos.append(np.asarray(photo.resize((size, size), Image.Resampling.LANCZOS)))
    return np.stack(photos)


def _encode_upload(pixels: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    img = Image.fromarray(pixels, "RGB")
    buf = io.BytesIO()
    fmt = rng.choice(["jpeg", "png", "webp"], p=[0.7, 0.15, 0.15])
    if fmt == "jpeg":
        exif = Image.Exif()
        exif[0x010F] = "PhoneMaker"  # camera make
        exif[0x8825] = _GPS
        img.save(buf, "JPEG", quality=85, exif=exif)
        return buf.getvalue(), "jpg"
    img.save(buf, "PNG" if fmt == "png" else "WEBP")
    return buf.getvalue(), str(fmt) if fmt != "jpeg" else "jpg"


def _user_photos(
    config: ShopConfig,
    users: dict,
    items: dict,
    item_pixels: list[np.ndarray],
    rng: np.random.Generator,
    out: Lake,
    bad: list[dict],
) -> tuple[int, int]:
    """Uploads of shoppers (some existing users, plus upload-only users) -> raw/user_images/; truth."""
    colour_names = list(COLOURS)
    n_extra = round(config.upload_only_share * config.users)
    extra = _make_users(ShopConfig(users=max(n_extra, 1), items=config.items, days=config.days), rng)
    uploaders = [int(u) for u in np.flatnonzero(rng.random(config.users) < config.uploader_share)]
    who = [(u, False) for u in uploaders] + [(config.users + j, True) for j in range(n_extra)]
    photos, truth, only = [], [], []
    for u, upload_only in who:
        taste = extra if upload_only else users
        row = u - config.users if upload_only else u
        sub = {k: v[row : row + 1] for k, v in taste.items()}
        weights = affinity(sub, items)[0]
        for _ in range(int(rng.integers(1, 4))):
            d = int(rng.integers(0, config.days))
            on_sale = np.flatnonzero(items["arrival"] <= d)
            p = np.exp(2.0 * (weights[on_sale] - weights[on_sale].max()))
            i = int(rng.choice(on_sale, p=p / p.sum()))
            photos.append((d, u, i))
        if upload_only:
            on_sale = np.flatnonzero(items["arrival"] <= config.days - 1)
            p = np.exp(2.0 * (weights[on_sale] - weights[on_sale].max()))
            would_buy = rng.choice(on_sale, size=min(10, len(on_sale)), replace=False, p=p / p.sum())
            only.append(
                {
                    "user_id": user_id(u),
                    "would_buy": [item_id(int(i)) for i in would_buy],
                    "taste_rank": [item_id(int(i)) for i in on_sale[np.argsort(-weights[on_sale])]],
                }
            )
    n_bad = 0
    if config.corrupt_rate > 0 and photos:
        n_bad = max(1, round(config.corrupt_rate * len(photos)))
    bad_at = {
        int(k): PHOTO_BAD_KINDS[n % len(PHOTO_BAD_KINDS)]
        for n, k in enumerate(rng.choice(len(photos), min(n_bad, len(photos)), replace=False))
    }
    for n, (d, u, i) in enumerate(photos):
        data, ext = _encode_upload(shopper_photo(item_pixels[i], rng), rng)
        photo = f"p{n + 1:06d}"
        if n in bad_at:
            data, bad_ext = _corrupt_image(bad_at[n], data, rng)
            ext = bad_ext or ext
        key = f"raw/user_images/dt={_day(config, d)}/{user_id(u)}/{photo}.{ext}"
        if n in bad_at:
            bad.append({"kind": bad_at[n], "where": key, "user_id": user_id(u)})
        out.put_bytes(key, data)
        truth.append(
            {
                "ds": _day(config, d),
                "user_id": user_id(u),
                "photo_id": photo,
                "key": key,
                "item_id": item_id(i),
                "category": CATEGORIES[items["cat"][i]],
                "colour": colour_names[items["col"][i]],
                "pattern": PATTERNS[items["pat"][i]],
                "corrupt": n in bad_at,
            }
        )
    out.put_bytes("truth/user_photos.jsonl", "".join(json.dumps(t) + "\n" for t in truth).encode())
    out.put_bytes("truth/upload_only_users.jsonl", "".join(json.dumps(t) + "\n" for t in only).encode())
    return len(photos), len(bad_at)


# --- the shop ----------------------------------------------------------------------------------------
def _make_items(config: ShopConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = config.items
    cat = rng.integers(0, len(CATEGORIES), n)
    cat[: len(CATEGORIES)] = np.arange(len(CATEGORIES))  # every category present
    col = rng.integers(0, len(COLOURS), n)
    pat = rng.integers(0, len(PATTERNS), n)
    popularity = rng.normal(0, 1, n).astype(np.float32)
    arrival = np.where(rng.random(n) < config.initial_item_share, 0, rng.integers(1, max(config.days, 2), n))
    arrival = np.minimum(arrival, config.days - 1)
    price_base = np.array([15, 60, 45, 40, 30, 55, 35, 20], np.float64)[cat]
    price = np.round(price_base * rng.lognormal(0, 0.35, n), 2)
    fmt = rng.choice(["jpeg", "cmyk", "palette", "rgba"], n, p=[0.85, 0.05, 0.05, 0.05])
    return {
        "cat": cat,
        "col": col,
        "pat": pat,
        "popularity": popularity,
        "arrival": arrival,
        "price": price,
        "fmt": fmt,
    }


def _make_users(config: ShopConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = config.users
    n_cat, n_col, n_pat = len(CATEGORIES), len(COLOURS), len(PATTERNS)
    # Taste: a few favourite categories, one or two favourite colours, one favourite pattern.
    w_cat = rng.normal(0, 0.3, (n, n_cat))
    w_col = rng.normal(0, 0.3, (n, n_col))
    w_pat = rng.normal(0, 0.3, (n, n_pat))
    rows = np.arange(n)
    for _ in range(2):
        w_cat[rows, rng.integers(0, n_cat, n)] += 1.5
    w_col[rows, rng.integers(0, n_col, n)] += 2.0
    second = rng.random(n) < 0.4
    w_col[rows[second], rng.integers(0, n_col, second.sum())] += 1.5
    w_pat[rows, rng.integers(0, n_pat, n)] += 1.8
    activity = np.clip(rng.lognormal(math.log(0.6), 0.9, n), 0.02, 8.0)  # funnels per day
    pop_bias = rng.uniform(*config.popularity_bias, n)  # share of visits driven by what is popular
    return {
        "w_cat": w_cat.astype(np.float32),
        "w_col": w_col.astype(np.float32),
        "w_pat": w_pat.astype(np.float32),
        "activity": activity,
        "pop_bias": pop_bias,
    }


def affinity(users: dict[str, np.ndarray], items: dict[str, np.ndarray]) -> np.ndarray:
    """True taste of every user for every item (users x items); the oracle ranks by it."""
    return users["w_cat"][:, items["cat"]] + users["w_col"][:, items["col"]] + users["w_pat"][:, items["pat"]]


def _sample_from_cdf(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, u * cdf[-1], side="right"), len(cdf) - 1)


def _day_events(
    config: ShopConfig, d: int, users: dict, items: dict, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Sample one day's funnels; returns parallel arrays sorted by timestamp."""
    n_col, n_pat = len(COLOURS), len(PATTERNS)
    available = np.flatnonzero(items["arrival"] <= d)
    n_funnels = rng.poisson(users["activity"])
    user_of = np.repeat(np.arange(config.users), n_funnels)
    if user_of.size == 0:
        return {k: np.array([], dtype=np.int64) for k in ("user", "item", "type", "secs")}
    item_weight = np.exp(0.7 * items["popularity"][available]).astype(np.float64)

    # Each item belongs to a (category, colour, pattern) group; users choose a group by taste, then
    # an item in it by popularity, which keeps sampling cheap at 50k users x 10k items.
    group_of = (items["cat"][available] * n_col + items["col"][available]) * n_pat + items["pat"][available]
    n_groups = len(CATEGORIES) * n_col * n_pat
    group_weight = np.bincount(group_of, weights=item_weight, minlength=n_groups)
    g = np.arange(n_groups)
    g_cat, g_col, g_pat = g // (n_col * n_pat), (g // n_pat) % n_col, g % n_pat

    chosen = np.empty(user_of.size, dtype=np.int64)
    by_popularity = rng.random(user_of.size) < users["pop_bias"][user_of]
    pop_cdf = np.cumsum(item_weight**2)  # the popular stream is sharper than the taste stream
    chosen[by_popularity] = available[_sample_from_cdf(pop_cdf, rng.random(by_popularity.sum()))]

    taste_idx = np.flatnonzero(~by_popularity)
    chunk = 20_000
    for start in range(0, taste_idx.size, chunk):
        idx = taste_idx[start : start + chunk]
        u = user_of[idx]
        scores = users["w_cat"][u][:, g_cat] + users["w_col"][u][:, g_col] + users["w_pat"][u][:, g_pat]
        probs = np.exp(scores * 1.5) * group_weight[None, :]
        cdf = np.cumsum(probs, axis=1)
        pick = (cdf < rng.random(len(idx))[:, None] * cdf[:, -1:]).sum(axis=1)
        groups = np.minimum(pick, n_groups - 1)
        for grp in np.unique(groups):
            members = np.flatnonzero(group_of == grp)
            sel = idx[groups == grp]
            cdf_items = np.cumsum(item_weight[members])
            chosen[sel] = available[members[_sample_from_cdf(cdf_items, rng.random(sel.size))]]

    # Funnel: conversions rise with the user's true affinity for the item.
    aff = (
        users["w_cat"][user_of, items["cat"][chosen]]
        + users["w_col"][user_of, items["col"][chosen]]
        + users["w_pat"][user_of, items["pat"][chosen]]
    )
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    click = rng.random(aff.size) < sig(-1.2 + 0.6 * aff)
    cart = click & (rng.random(aff.size) < sig(-1.5 + 0.5 * aff))
    buy = cart & (rng.random(aff.size) < sig(-0.3 + 0.4 * aff))

    start_s = rng.integers(0, 20 * 3600, aff.size)
    t_click = start_s + rng.integers(5, 120, aff.size)
    t_cart = t_click + rng.integers(10, 600, aff.size)
    t_buy = t_cart + rng.integers(30, 1800, aff.size)
    parts = [
        (np.ones(aff.size, bool), 0, start_s),
        (click, 1, t_click),
        (cart, 2, t_cart),
        (buy, 3, t_buy),
    ]
    user = np.concatenate([user_of[m] for m, _, _ in parts])
    item = np.concatenate([chosen[m] for m, _, _ in parts])
    etype = np.concatenate([np.full(m.sum(), k) for m, k, _ in parts])
    secs = np.concatenate([t[m] for m, _, t in parts])
    order = np.lexsort((etype, user, secs))
    return {"user": user[order], "item": item[order], "type": etype[order], "secs": secs[order]}


def _event_lines(config: ShopConfig, d: int, ev: dict[str, np.ndarray], first_id: int) -> list[str]:
    day0 = datetime.fromisoformat(_day(config, d) + "T00:00:00")
    lines = []
    for n, (u, i, t, s) in enumerate(zip(ev["user"], ev["item"], ev["type"], ev["secs"], strict=True)):
        ts = (day0 + timedelta(seconds=int(s))).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(
            f'{{"user_id": "{user_id(u)}", "item_id": "{item_id(i)}", '
            f'"event_type": "{EVENT_TYPES[t]}", "ts": "{ts}", "event_id": "e{first_id + n:09d}"}}'
        )
    return lines


def user_id(index: int) -> str:
    """The synthetic shop's id for user number ``index``."""
    return f"u{int(index):06d}"


def item_id(index: int) -> str:
    """The synthetic shop's id for item number ``index``."""
    return f"i{int(index):06d}"


def _corrupt_events(config: ShopConfig, day_lines: list[list[str]], rng: np.random.Generator) -> list[dict]:
    """Insert bad lines into the day files; return one truth record per inserted line."""
    total = sum(len(lines) for lines in day_lines)
    if config.corrupt_rate <= 0 or total == 0:
        return []
    n_bad = max(len(EVENT_BAD_KINDS), round(config.corrupt_rate * total))
    bad: list[dict] = []
    inserts: list[list[tuple[int, str]]] = [[] for _ in day_lines]
    nonempty = [d for d, lines in enumerate(day_lines) if lines]
    for k in range(n_bad):
        kind = EVENT_BAD_KINDS[k % len(EVENT_BAD_KINDS)]
        d = int(rng.choice(nonempty))
        src = day_lines[d][int(rng.integers(0, len(day_lines[d])))]
        record = json.loads(src)
        if kind == "malformed":
            line = src[: int(rng.integers(5, len(src) - 5))]
        elif kind == "missing_field":
            del record[str(rng.choice(["user_id", "item_id", "event_type", "ts"]))]
            line = json.dumps(record)
        elif kind == "unknown_item":
            record["item_id"] = f"x{int(rng.integers(0, 10**6)):06d}"
            record["event_id"] += f"-bad{k}"
            line = json.dumps(record)
        elif kind == "unknown_event_type":
            record["event_type"] = str(rng.choice(["hover", "wishlist", "PURCHASE", ""]))
            record["event_id"] += f"-bad{k}"
            line = json.dumps(record)
        elif kind == "duplicate":
            line = src
        else:  # future_timestamp
            future = datetime.fromisoformat(_day(config, config.days - 1)) + timedelta(
                days=int(rng.integers(30, 4000))
            )
            record["ts"] = future.strftime("%Y-%m-%dT%H:%M:%SZ")
            record["event_id"] += f"-bad{k}"
            line = json.dumps(record)
        pos = int(rng.integers(0, len(day_lines[d]) + 1))
        inserts[d].append((pos, line))
        bad.append({"kind": kind, "where": f"raw/events/dt={_day(config, d)}/events.jsonl", "line": line})
    for d, ins in enumerate(inserts):
        for pos, line in sorted(ins, key=lambda x: -x[0]):
            day_lines[d].insert(pos, line)
    return bad


def _corrupt_image(kind: str, data: bytes, rng: np.random.Generator) -> tuple[bytes, str | None]:
    """Return the bad bytes and, for ``wrong_extension``, the misleading extension."""
    if kind == "truncated":
        return data[: max(16, len(data) // int(rng.integers(3, 6)))], None
    if kind == "empty_file":
        return b"", None
    if kind == "not_an_image":
        return b"<html><body>404 Not Found</body></html>\n", None
    if kind == "wrong_extension":
        buf = io.BytesIO()
        Image.open(io.BytesIO(data)).convert("RGB").save(buf, "PNG")
        return buf.getvalue(), "jpg"  # PNG bytes behind a .jpg name
    if kind == "decompression_bomb":
        return _absurd_png(), "png"
    raise ValueError(kind)


def generate_shop(
    config: ShopConfig, out: Lake, progress: Callable[[str, int, int], None] | None = None
) -> ShopSummary:
    """Generate the shop described by ``config`` into ``out`` (raw layout plus ``truth/``)."""
    # A sixth stream for user photos: spawning one more leaves the first five (and so every earlier
    # shop's bytes) unchanged.
    rng_items, rng_users, rng_events, rng_images, rng_bad, rng_photos = _rngs(config.seed, 6)
    tick = progress or (lambda stage, done, total: None)
    items = _make_items(config, rng_items)
    users = _make_users(config, rng_users)
    colour_names = list(COLOURS)

    # Catalog and truth about items.
    catalog = ["item_id,category,price,added_date"]
    truth_items = ["item_id,category,colour,pattern,popularity,arrival_day"]
    for i in range(config.items):
        iid = item_id(i)
        cat = CATEGORIES[items["cat"][i]]
        catalog.append(f"{iid},{cat},{items['price'][i]:.2f},{_day(config, items['arrival'][i])}")
        truth_items.append(
            f"{iid},{cat},{colour_names[items['col'][i]]},{PATTERNS[items['pat'][i]]},"
            f"{items['popularity'][i]:.4f},{items['arrival'][i]}"
        )
    out.put_bytes("raw/catalog/items.csv", ("\n".join(catalog) + "\n").encode())
    out.put_bytes("truth/items.csv", ("\n".join(truth_items) + "\n").encode())

    # Images (some corrupted).
    bad: list[dict] = []
    n_bad_images = 0
    if config.corrupt_rate > 0:
        n_bad_images = max(len(IMAGE_BAD_KINDS), round(config.corrupt_rate * config.items))
    bad_image_kind = {
        int(i): IMAGE_BAD_KINDS[k % len(IMAGE_BAD_KINDS)]
        for k, i in enumerate(rng_bad.choice(config.items, n_bad_images, replace=False))
    }
    item_pixels: list[np.ndarray] = []
    for i in range(config.items):
        pixels = render_item(
            CATEGORIES[items["cat"][i]],
            colour_names[items["col"][i]],
            PATTERNS[items["pat"][i]],
            rng_images,
            config.image_size,
        )
        item_pixels.append(pixels)
        data, ext = _encode(pixels, str(items["fmt"][i]))
        kind = bad_image_kind.get(i)
        if kind:
            data, bad_ext = _corrupt_image(kind, data, rng_bad)
            ext = bad_ext or ext
            key = f"raw/images/{item_id(i)}.{ext}"
            bad.append({"kind": kind, "where": key, "item_id": item_id(i)})
        out.put_bytes(f"raw/images/{item_id(i)}.{ext}", data)
        if i % 200 == 0 or i == config.items - 1:
            tick("images", i + 1, config.items)

    # Events, one file per day.
    day_lines: list[list[str]] = []
    n_events = 0
    for d in range(config.days):
        ev = _day_events(config, d, users, items, rng_events)
        lines = _event_lines(config, d, ev, n_events)
        n_events += len(lines)
        day_lines.append(lines)
        tick("events", d + 1, config.days)
    bad_events = _corrupt_events(config, day_lines, rng_bad)
    bad.extend(bad_events)
    for d, lines in enumerate(day_lines):
        body = "\n".join(lines) + ("\n" if lines else "")
        out.put_bytes(f"raw/events/dt={_day(config, d)}/events.jsonl", body.encode())

    n_photos, n_bad_photos = _user_photos(config, users, items, item_pixels, rng_photos, out, bad)
    tick("photos", 1, 1)

    # Ground truth about users and bad records.
    user_lines = []
    for u in range(config.users):
        user_lines.append(
            json.dumps(
                {
                    "user_id": user_id(u),
                    "activity": round(float(users["activity"][u]), 4),
                    "popularity_bias": round(float(users["pop_bias"][u]), 4),
                    "category": dict(zip(CATEGORIES, users["w_cat"][u].round(4).tolist(), strict=True)),
                    "colour": dict(zip(COLOURS, users["w_col"][u].round(4).tolist(), strict=True)),
                    "pattern": dict(zip(PATTERNS, users["w_pat"][u].round(4).tolist(), strict=True)),
                }
            )
        )
    out.put_bytes("truth/users.jsonl", ("\n".join(user_lines) + "\n").encode())
    out.put_bytes("truth/bad_records.jsonl", "".join(json.dumps(b) + "\n" for b in bad).encode())
    summary = ShopSummary(
        out=out.uri,
        items=config.items,
        users=config.users,
        days=config.days,
        events=n_events,
        bad_images=n_bad_images,
        bad_event_lines=len(bad_events),
        first_ds=_day(config, 0),
        last_ds=_day(config, config.days - 1),
        photos=n_photos,
        bad_photos=n_bad_photos,
    )
    out.put_bytes(
        "truth/summary.json",
        json.dumps({"config": asdict(config), "summary": asdict(summary)}, indent=1).encode(),
    )
    return summary


def write_events_table(lake: Lake) -> int:
    """Write a *clean* shop's raw events straight into the ``events`` table, one partition per day,
    skipping the Spark ingestion job; returns the number of events. For tests and benchmarks of the
    later stages only (ingestion has its own); a real run uses ``visrec ingest``."""
    import pandas as pd
    import pyarrow as pa

    catalog = pd.read_csv(io.BytesIO(lake.get_bytes("raw/catalog/items.csv")), dtype=str)
    category = dict(zip(catalog["item_id"], catalog["category"], strict=True))
    total = 0
    for key in lake.list_keys("raw/events"):
        lines = lake.get_bytes(key).decode().splitlines()
        frame = pd.DataFrame(
            [json.loads(x) for x in lines], columns=["user_id", "item_id", "event_type", "ts", "event_id"]
        )
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        frame["price"] = pd.Series([None] * len(frame), dtype="float64")
        frame["category"] = frame["item_id"].map(category)
        lake.write_table(
            "events", key.split("dt=")[1][:10], pa.Table.from_pandas(frame, preserve_index=False)
        )
        total += len(frame)
    return total
