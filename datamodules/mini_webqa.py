"""A synthetic, deterministic WebQA-shaped data directory (the UniVL-DR release layout).

Fictional entities ("the Orvane bridge") each own several images drawn with PIL and several
text facts. All images of an entity share one caption, so only the pixels tell them apart;
image queries ask which picture of an entity shows a visual property ("a red triangle"), text
queries ask for one attribute ("When was the Orvane bridge built?"). Facts and images of the same
entity (and of namesakes such as "the Orvane tower") are each other's distractors. Documents are
labelled train/dev/test/unasked before queries are drawn, so no dev or test positive is ever a
train positive: a model has to learn colour and shape words against pixels and attribute words
against facts, not memorise documents.

Usage: ``generate_mini_webqa(out_dir, size="small", seed=0)`` or
``python -m datamodules.mini_webqa --out DIR [--size tiny|small] [--seed N]``.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import multiprocessing
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from retrieval.atomic import atomic_write
from retrieval.errors import InputError

# --------------------------------------------------------------------------- vocabulary
SYLLABLES = (
    "or",
    "vane",
    "kel",
    "dra",
    "mi",
    "ra",
    "tho",
    "sen",
    "bal",
    "lu",
    "zar",
    "en",
    "vi",
    "tor",
    "qua",
    "lis",
    "ne",
    "mor",
    "ca",
    "del",
    "ith",
    "ul",
    "bre",
    "nar",
    "sol",
    "ka",
    "pe",
    "rin",
    "go",
    "ter",
    "sha",
    "wen",
    "dun",
    "ae",
    "fal",
    "ro",
    "bex",
    "tam",
    "hal",
    "cy",
)
KINDS = (
    "bridge",
    "tower",
    "castle",
    "museum",
    "temple",
    "lighthouse",
    "library",
    "stadium",
    "palace",
    "fountain",
    "monastery",
    "observatory",
    "harbour",
    "dam",
    "cathedral",
    "theatre",
)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 214),
    "yellow": (240, 214, 40),
    "orange": (245, 135, 25),
    "purple": (135, 55, 175),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
MATERIALS = ("granite", "sandstone", "red brick", "limestone", "marble", "steel", "timber", "basalt", "slate")
CAPTIONS = (
    "A photograph of the {e}.",
    "A view of the {e}.",
    "The {e}, seen from outside.",
    "Picture of the {e}.",
    "Tourist photo of the {e}.",
    "The {e} on a clear day.",
)
RADIUS = {"large": 0.22, "medium": 0.15, "small": 0.11}  # fraction of the image side
SPLITS = ("train", "dev", "test")
FIRST_IMAGE_ID = 10_000_000


def _name(rng: random.Random) -> str:
    """A fictional proper name made of two or three random syllables."""
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 2, 3)))).capitalize()


def _year(rng: random.Random) -> str:
    return str(rng.randint(1620, 1995))


def _person(rng: random.Random) -> str:
    return f"{_name(rng)} {_name(rng)}"


def _hex32(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:]


def _article(word: str) -> str:
    """``word`` with its indefinite article ("a red", "an orange")."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


# --------------------------------------------------------------------------- text attributes
@dataclass(frozen=True)
class Attribute:
    """One kind of fact: a value generator, fact templates and question templates ({e}, {v})."""

    name: str
    value: Callable[[random.Random], str]
    facts: tuple[str, ...]
    questions: tuple[str, ...]


ATTRIBUTES = (
    Attribute(
        "built",
        _year,
        ("the {e} was built in {v}.", "construction of the {e} was completed in {v}."),
        (
            "When was the {e} built?",
            "In what year was the {e} completed?",
            "What year did construction of the {e} finish?",
        ),
    ),
    Attribute(
        "opened",
        _year,
        ("the {e} opened to the public in {v}.", "visitors were first admitted to the {e} in {v}."),
        ("When did the {e} open to the public?", "In which year were visitors first let into the {e}?"),
    ),
    Attribute(
        "restored",
        _year,
        ("the {e} was restored in {v} after a fire.", "a major restoration of the {e} ended in {v}."),
        ("When was the {e} restored?", "In what year was the {e} renovated?"),
    ),
    Attribute(
        "location",
        _name,
        ("the {e} is located in {v}.", "the {e} stands in the town of {v}."),
        ("Where is the {e} located?", "In which town is the {e}?", "What town is home to the {e}?"),
    ),
    Attribute(
        "architect",
        _person,
        ("the {e} was designed by the architect {v}.", "{v} drew the plans for the {e}."),
        ("Who designed the {e}?", "Which architect planned the {e}?"),
    ),
    Attribute(
        "height",
        lambda rng: str(rng.randint(12, 380)),
        ("the {e} is {v} metres tall.", "the {e} rises {v} metres above the ground."),
        ("How tall is the {e}?", "What is the height of the {e} in metres?"),
    ),
    Attribute(
        "material",
        lambda rng: rng.choice(MATERIALS),
        ("the {e} is built mostly of {v}.", "the walls of the {e} are made of {v}."),
        ("What material is the {e} made of?", "Which material was used to build the {e}?"),
    ),
    Attribute(
        "visitors",
        lambda rng: str(rng.randint(5, 900)),
        (
            "about {v} thousand people visit the {e} every year.",
            "the {e} receives roughly {v} thousand visitors a year.",
        ),
        ("How many people visit the {e} each year?", "How many visitors does the {e} get per year?"),
    ),
    Attribute(
        "named_after",
        _person,
        ("the {e} is named after {v}.", "the {e} takes its name from {v}."),
        ("Who is the {e} named after?", "After whom was the {e} named?"),
    ),
    Attribute(
        "owner",
        lambda rng: f"the {_name(rng)} {rng.choice(('Trust', 'Society', 'Foundation'))}",
        ("the {e} is owned by {v}.", "{v} has managed the {e} for decades."),
        ("Who owns the {e}?", "Which organisation is the owner of the {e}?"),
    ),
    Attribute(
        "river",
        _name,
        ("the {e} lies on the banks of the {v} river.", "the {v} river flows past the {e}."),
        ("Which river flows past the {e}?", "On which river does the {e} lie?"),
    ),
)


# --------------------------------------------------------------------------- scenes (image content)
@dataclass(frozen=True)
class Group:
    """``count`` copies of one coloured shape of one size class."""

    colour: str
    shape: str
    count: int = 1
    size: str = "large"


@dataclass(frozen=True)
class Scene:
    """What an image shows: a background colour and shape groups (the first is the main one)."""

    background: str
    groups: tuple[Group, ...]


def _group_phrase(group: Group) -> str:
    if group.count == 2:
        return f"two {group.colour} {_plural(group.shape)}"
    size = "" if group.size == "medium" else group.size + " "
    return f"{_article(size + group.colour)} {group.shape}"


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def verbalize(scene: Scene, rng: random.Random, noise: float) -> str:
    """A captioner-like description: varied wording, and with probability ``noise`` per shape
    group a mistake (a secondary group dropped or a wrong colour)."""
    parts = []
    for i, group in enumerate(scene.groups):
        if rng.random() < noise:
            if i > 0:
                continue
            group = replace(group, colour=rng.choice([c for c in COLOURS if c != group.colour]))
        parts.append(_group_phrase(group))
    template = rng.choice(
        ("an image of {o} on {b} background", "{o} against {b} background", "a picture showing {o} on {b} background")
    )
    return template.format(o=_join(parts), b=_article(scene.background))


def random_scene(rng: random.Random, main_pair: tuple[str, str] | None = None) -> Scene:
    """A random scene: one main group (``main_pair`` if given), 0-2 small groups, a background
    colour different from every shape colour."""
    colour, shape = main_pair or (rng.choice(list(COLOURS)), rng.choice(SHAPES))
    count = 2 if rng.random() < 0.2 else 1
    groups = [Group(colour, shape, count, "medium" if count == 2 else "large")]
    background = rng.choice([c for c in COLOURS if c != colour])
    for _ in range(rng.choice((0, 1, 1, 2))):
        pair = (rng.choice([c for c in COLOURS if c != background]), rng.choice(SHAPES))
        if pair not in {(g.colour, g.shape) for g in groups}:
            groups.append(Group(*pair, 2 if rng.random() < 0.2 else 1, "small"))
    return Scene(background, tuple(groups))


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a regular-ish ``shape`` centred at (cx, cy) with radius r, rotated by angle."""
    if shape == "triangle":
        polar = [(r, a) for a in (-90, 30, 150)]
    elif shape == "square":
        polar = [(r * 0.95, a) for a in (45, 135, 225, 315)]
    elif shape == "diamond":
        polar = [(r, -90), (r * 0.6, 0), (r, 90), (r * 0.6, 180)]
    elif shape == "star":
        polar = [(r if k % 2 == 0 else r * 0.45, -90 + 36 * k) for k in range(10)]
    else:  # cross: a plus sign with arms of half-width w
        w = 0.32 * r
        pts = [
            (w, r),
            (w, w),
            (r, w),
            (r, -w),
            (w, -w),
            (w, -r),
            (-w, -r),
            (-w, -w),
            (-r, -w),
            (-r, w),
            (-w, w),
            (-w, r),
        ]
        polar = [(math.hypot(x, y), math.degrees(math.atan2(y, x))) for x, y in pts]
    return [(cx + d * math.cos(math.radians(a + angle)), cy + d * math.sin(math.radians(a + angle))) for d, a in polar]


def _place(rng: random.Random, r: float, side: int, placed: list[tuple[float, float, float]]) -> tuple[float, float]:
    """A centre for a shape of radius r that avoids earlier shapes if it can (50 tries)."""
    lo, hi = r + 1, side - r - 1
    for _ in range(50):
        cx, cy = rng.uniform(lo, hi), rng.uniform(lo, hi)
        if all(math.hypot(cx - x, cy - y) >= r + q + 1 for x, y, q in placed):
            break
    placed.append((cx, cy, r))
    return cx, cy


def _background(colour: str, side: int, rng: random.Random) -> np.ndarray:
    """A ``side`` x ``side`` x 3 uint8 array: the colour with a gentle random linear gradient."""
    ramp = np.linspace(rng.uniform(0.82, 0.95), rng.uniform(1.0, 1.1), side, dtype=np.float32)[:, None]
    line = np.clip(ramp * np.array(COLOURS[colour], dtype=np.float32) + (1 - ramp) * 40.0, 0, 255).astype(np.uint8)
    rows = line[:, None, :] if rng.random() < 0.5 else line[None, :, :]
    return np.ascontiguousarray(np.broadcast_to(rows, (side, side, 3)))


def draw_scene(scene: Scene, side: int, seed: str) -> Image.Image:
    """Render ``scene`` as a ``side`` x ``side`` RGB image; ``seed`` fixes layout and noise."""
    rng = random.Random(seed)
    image = Image.fromarray(_background(scene.background, side, rng), "RGB")
    draw = ImageDraw.Draw(image)
    placed: list[tuple[float, float, float]] = []
    for group in scene.groups:
        r = max(3.0, RADIUS[group.size] * side)
        for _ in range(group.count):
            cx, cy = _place(rng, r, side, placed)
            fill = COLOURS[group.colour]
            if group.shape == "circle":
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
            else:
                draw.polygon(_polygon(group.shape, cx, cy, r, rng.uniform(-12, 12)), fill=fill)
    pixels = np.asarray(image, dtype=np.int16)
    pixels += np.random.default_rng(rng.getrandbits(64)).integers(-7, 8, pixels.shape, dtype=np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8), "RGB")


def encode_jpeg(image: Image.Image, quality: int = 90) -> bytes:
    """JPEG file bytes of ``image``."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


# --------------------------------------------------------------------------- imgs.tsv writing
def write_tsv(tsv_path: str | Path, lineidx_path: str | Path, records: Iterable[tuple[str, bytes]]) -> int:
    """Write ``<id>\\t<base64>`` lines and the ``<id>\\t<byte offset>`` index; return the count."""
    index: list[str] = []
    with atomic_write(tsv_path, "wb") as tsv:
        position = 0
        for image_id, data in records:
            if not image_id or any(ch in image_id for ch in "\t\r\n"):
                raise InputError(f"image id {image_id!r} is empty or holds a tab/newline; use plain ids")
            line = image_id.encode() + b"\t" + base64.b64encode(data) + b"\n"
            tsv.write(line)
            index.append(f"{image_id}\t{position}\n")
            position += len(line)
    with atomic_write(lineidx_path, "w") as lineidx:
        lineidx.writelines(index)
    return len(index)


def random_image(image_id: str, image_size: int = 64, seed: int = 0, quality: int = 90) -> bytes:
    """JPEG bytes of a random scene; a pure function of its arguments."""
    rng = random.Random(f"{seed}:scene:{image_id}")
    return encode_jpeg(draw_scene(random_scene(rng), image_size, f"{seed}:{image_id}"), quality)


def _random_image_record(args: tuple[str, int, int, int]) -> tuple[str, bytes]:
    return args[0], random_image(*args)


def write_image_tsv(
    tsv_path: str | Path,
    lineidx_path: str | Path,
    n_images: int,
    image_size: int = 64,
    seed: int = 0,
    quality: int = 90,
    first_id: int = FIRST_IMAGE_ID,
    workers: int = 1,
) -> list[str]:
    """Write ``n_images`` random scenes (ids ``first_id``, ``first_id + 1``, ...) as a tsv + lineidx.

    ``workers`` > 1 draws the images in a process pool; the files are the same either way.
    """
    if n_images < 1 or image_size < 16 or workers < 1:
        raise InputError(
            f"n_images={n_images}, image_size={image_size}, workers={workers}: need "
            f"n_images >= 1, image_size >= 16 and workers >= 1"
        )
    ids = [str(first_id + i) for i in range(n_images)]
    jobs = [(i, image_size, seed, quality) for i in ids]
    if workers == 1:
        write_tsv(tsv_path, lineidx_path, map(_random_image_record, jobs))
    else:
        with multiprocessing.get_context().Pool(workers) as pool:
            write_tsv(tsv_path, lineidx_path, pool.imap(_random_image_record, jobs, chunksize=64))
    return ids


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class MiniWebQAConfig:
    """Sizes and knobs of a generated data directory (presets in ``PRESETS``)."""

    n_entities: int = 150
    images_per_entity: tuple[int, int] = (3, 5)
    attributes_per_entity: tuple[int, int] = (5, 6)
    n_train: int = 1500
    n_dev: int = 200
    n_test: int = 200
    image_size: int = 64
    jpeg_quality: int = 90
    paraphrase_prob: float = 0.12  # an attribute stated by two facts: a text query with 2 positives
    duplicate_image_prob: float = 0.2  # an image repeating another's main shape: 2 image positives
    namesake_prob: float = 0.15  # an entity reusing another's name ("Orvane tower" vs "Orvane bridge")
    unasked_share: float = 0.06  # documents no query targets
    verbal_noise: float = 0.1  # error rate of the generated image descriptions
    max_positives: int = 2

    def validate(self) -> MiniWebQAConfig:
        """Return self, or raise InputError naming the first bad field."""
        checks = [
            ("n_entities", self.n_entities >= 1),
            ("images_per_entity", 1 <= self.images_per_entity[0] <= self.images_per_entity[1]),
            (
                "attributes_per_entity",
                1 <= self.attributes_per_entity[0] <= self.attributes_per_entity[1] <= len(ATTRIBUTES),
            ),
            ("n_train", self.n_train >= 1),
            ("n_dev", self.n_dev >= 1),
            ("n_test", self.n_test >= 1),
            ("image_size", self.image_size >= 16),
            ("jpeg_quality", 1 <= self.jpeg_quality <= 95),
            ("max_positives", self.max_positives >= 1),
        ]
        checks += [
            (f, 0.0 <= getattr(self, f) <= 1.0)
            for f in ("paraphrase_prob", "duplicate_image_prob", "namesake_prob", "unasked_share", "verbal_noise")
        ]
        for name, ok in checks:
            if not ok:
                raise InputError(
                    f"mini_webqa option {name}={getattr(self, name)!r} is out of range; "
                    f"see MiniWebQAConfig for valid values"
                )
        return self


PRESETS: dict[str, dict[str, object]] = {
    "tiny": dict(n_entities=12, attributes_per_entity=(3, 5), n_train=40, n_dev=10, n_test=10),
    "small": dict(n_entities=150, n_train=1500, n_dev=200, n_test=200),
}


def make_config(size: str = "small", **overrides: object) -> MiniWebQAConfig:
    """The preset ``size`` with keyword overrides applied and checked."""
    if size not in PRESETS:
        raise InputError(f"unknown mini_webqa size {size!r}; choose one of {sorted(PRESETS)}")
    known = {f.name for f in fields(MiniWebQAConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InputError(f"unknown mini_webqa option(s) {unknown}; valid options: {sorted(known)}")
    values = {**PRESETS[size], **overrides}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return MiniWebQAConfig(**values).validate()  # type: ignore[arg-type]


# --------------------------------------------------------------------------- corpus
@dataclass
class Entity:
    name: str
    kind: str
    page: str  # 32-hex page id shared by the entity's snippet ids
    caption: str

    @property
    def title(self) -> str:
        return f"{self.name} {self.kind}"


@dataclass
class ImageDoc:
    image_id: int
    entity: int
    scene: Scene
    group: int  # label group: an image repeating another's main shape shares its group


@dataclass
class FactDoc:
    snippet_id: str
    entity: int
    attribute: str
    value: str
    text: str


def make_entities(cfg: MiniWebQAConfig, rng: random.Random) -> list[Entity]:
    """Entities with unique (name, kind); some reuse an earlier name with another kind."""
    entities: list[Entity] = []
    taken: set[tuple[str, str]] = set()
    while len(entities) < cfg.n_entities:
        reuse = entities and rng.random() < cfg.namesake_prob
        name = rng.choice(entities).name if reuse else _name(rng)
        kind = rng.choice(KINDS)
        if (name, kind) in taken:
            continue
        taken.add((name, kind))
        title = f"{name} {kind}"
        entities.append(Entity(name, kind, _hex32(rng), rng.choice(CAPTIONS).format(e=title)))
    return entities


def make_images(cfg: MiniWebQAConfig, entities: list[Entity], rng: random.Random) -> list[ImageDoc]:
    """Several scenes per entity; distinct main shapes, except that an image sometimes repeats one."""
    total = len(entities) * cfg.images_per_entity[1]
    ids = iter(rng.sample(range(FIRST_IMAGE_ID, FIRST_IMAGE_ID + 50 * total), total))
    images: list[ImageDoc] = []
    for e in range(len(entities)):
        mains: list[tuple[str, str]] = []
        for _ in range(rng.randint(*cfg.images_per_entity)):
            if mains and rng.random() < cfg.duplicate_image_prob:
                group = rng.randrange(len(mains))
            else:
                free = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in mains]
                mains.append(rng.choice(free))
                group = len(mains) - 1
            images.append(ImageDoc(next(ids), e, random_scene(rng, mains[group]), group))
    return images


def make_facts(cfg: MiniWebQAConfig, entities: list[Entity], rng: random.Random) -> list[FactDoc]:
    """A few attributes per entity, one fact each, sometimes a second paraphrased fact."""
    facts: list[FactDoc] = []
    for e, entity in enumerate(entities):
        n = 0
        for attr in rng.sample(ATTRIBUTES, rng.randint(*cfg.attributes_per_entity)):
            value = attr.value(rng)
            templates = rng.sample(attr.facts, 2 if rng.random() < cfg.paraphrase_prob else 1)
            for template in templates:
                text = _sentence(template.format(e=entity.title, v=value))
                facts.append(FactDoc(f"{entity.page}_{n}", e, attr.name, value, text))
                n += 1
    return facts


def assign_labels(keys: list, weights: dict[str, float], rng: random.Random) -> dict:
    """Split ``keys`` into labelled shares proportional to ``weights`` (shuffled, exact quotas)."""
    keys = sorted(set(keys))
    rng.shuffle(keys)
    total = sum(weights.values())
    labels: dict = {}
    start = 0
    for i, (label, weight) in enumerate(weights.items()):
        end = len(keys) if i == len(weights) - 1 else start + round(len(keys) * weight / total)
        labels.update((k, label) for k in keys[start:end])
        start = end
    return labels


def split_weights(cfg: MiniWebQAConfig) -> dict[str, float]:
    """Document shares per split: proportional to query counts, dev/test boosted so they need
    few paraphrases, plus the unasked share."""
    asked = {"train": cfg.n_train, "dev": 1.5 * cfg.n_dev, "test": 1.5 * cfg.n_test}
    scale = (1 - cfg.unasked_share) / sum(asked.values())
    return {**{k: v * scale for k, v in asked.items()}, "none": cfg.unasked_share}


# --------------------------------------------------------------------------- queries
@dataclass(frozen=True)
class Target:
    """A set of positives that queries may ask for, with the question wordings that ask for it."""

    split: str
    modality: str  # "image" or "text"
    entity: int
    positives: tuple[str, ...]
    questions: tuple[str, ...]
    answer: str


IMAGE_QUESTIONS = {
    "pair": (
        "Which picture of the {e} shows {ac} {s}?",
        "In which image of the {e} can you see {ac} {s}?",
        "Find the photo of the {e} with {ac} {s} in it.",
    ),
    "shape": ("Which picture of the {e} contains a {s}?", "Show me the image of the {e} that has a {s}."),
    "colour": (
        "Which picture of the {e} has the colour {c} in it?",
        "In which photo of the {e} is there something {c}?",
    ),
    "background": ("Which picture of the {e} has {ac} background?", "Find the image of the {e} with {ac} background."),
    "two": ("Which picture of the {e} shows two {c} {p}?", "In which image of the {e} are there two {c} {p}?"),
}


def _properties(scene: Scene) -> set[tuple[str, ...]]:
    """Every visual property of a scene that a query may ask about."""
    props: set[tuple[str, ...]] = {("background", scene.background), ("colour", scene.background)}
    for g in scene.groups:
        props |= {("pair", g.colour, g.shape), ("shape", g.shape), ("colour", g.colour)}
        if g.count == 2:
            props.add(("two", g.colour, g.shape))
    return props


def _image_target_text(prop: tuple[str, ...], title: str) -> tuple[tuple[str, ...], str]:
    """Question wordings and answer for a visual property of an entity's pictures."""
    kind, *args = prop
    c = args[0] if kind in ("pair", "colour", "background", "two") else ""
    s = args[-1] if kind in ("pair", "shape", "two") else ""
    slots = dict(e=title, c=c, ac=_article(c) if c else "", s=s, p=_plural(s) if s else "")
    questions = tuple(q.format(**slots) for q in IMAGE_QUESTIONS[kind])
    answer = {
        "pair": f"{slots['ac']} {s}",
        "shape": f"a {s}",
        "colour": f"something {c}",
        "background": f"{slots['ac']} background",
        "two": f"two {c} {slots['p']}",
    }[kind]
    return questions, f"The picture with {answer}."


def image_targets(cfg: MiniWebQAConfig, entities: list[Entity], images: list[ImageDoc], labels: dict) -> list[Target]:
    """Visual properties that pick 1..max_positives pictures of an entity, all in one split."""
    targets = []
    for e, entity in enumerate(entities):
        own = [img for img in images if img.entity == e]
        for prop in sorted(set().union(*(_properties(img.scene) for img in own))):
            hits = [img for img in own if prop in _properties(img.scene)]
            splits = {labels[(e, img.group)] for img in hits}
            if len(hits) <= cfg.max_positives and len(splits) == 1 and splits <= set(SPLITS):
                questions, answer = _image_target_text(prop, entity.title)
                positives = tuple(str(i.image_id) for i in hits)
                targets.append(Target(splits.pop(), "image", e, positives, questions, answer))
    return targets


def text_targets(entities: list[Entity], facts: list[FactDoc], labels: dict) -> list[Target]:
    """One target per (entity, attribute): the facts stating it."""
    by_key: dict[tuple[int, str], list[FactDoc]] = {}
    for fact in facts:
        by_key.setdefault((fact.entity, fact.attribute), []).append(fact)
    attrs = {a.name: a for a in ATTRIBUTES}
    targets = []
    for (e, name), group in by_key.items():
        if labels[(e, name)] in SPLITS:
            questions = tuple(q.format(e=entities[e].title) for q in attrs[name].questions)
            positives = tuple(f.snippet_id for f in group)
            targets.append(Target(labels[(e, name)], "text", e, positives, questions, group[0].value))
    return targets


def pick_questions(targets: list[Target], n: int, rng: random.Random, what: str) -> list[tuple[Target, str]]:
    """``n`` (target, question) pairs: one wording of every target first, then second wordings..."""
    wordings = [(t, rng.sample(t.questions, len(t.questions))) for t in targets]
    rng.shuffle(wordings)
    depth = max((len(qs) for _, qs in wordings), default=0)
    pool = [(t, qs[d]) for d in range(depth) for t, qs in wordings if d < len(qs)]
    if len(pool) < n:
        raise InputError(
            f"only {len(pool)} {what} queries can be drawn, {n} asked; lower the query count or raise n_entities"
        )
    return pool[:n]


DocsOf = dict[int, tuple[list[str], list[str]]]  # entity -> (image ids, snippet ids)


def _negatives(target: Target, entities: list[Entity], docs_of: DocsOf) -> tuple[list[str], list[str]]:
    """WebQA-style distractors: the entity's and its namesakes' docs that are not positives."""
    name = entities[target.entity].name
    related = [target.entity] + [e for e, ent in enumerate(entities) if ent.name == name and e != target.entity]
    positives = set(target.positives)
    img = [d for e in related for d in docs_of[e][0] if d not in positives]
    txt = [d for e in related for d in docs_of[e][1] if d not in positives]
    return img, txt


def make_queries(
    cfg: MiniWebQAConfig,
    entities: list[Entity],
    images: list[ImageDoc],
    facts: list[FactDoc],
    targets: list[Target],
    rng: random.Random,
) -> dict[str, list[dict]]:
    """Per split: half image, half text queries in the release's JSON schema."""
    docs_of: DocsOf = {e: ([], []) for e in range(len(entities))}
    for img in images:
        docs_of[img.entity][0].append(str(img.image_id))
    for fact in facts:
        docs_of[fact.entity][1].append(fact.snippet_id)
    out: dict[str, list[dict]] = {}
    for split in SPLITS:
        n = getattr(cfg, f"n_{split}")
        chosen = []
        for modality, count in (("image", n // 2), ("text", n - n // 2)):
            pool = [t for t in targets if t.split == split and t.modality == modality]
            chosen += pick_questions(pool, count, rng, f"{split} {modality}")
        rng.shuffle(chosen)
        out[split] = [_query_record(t, q, rng, *_negatives(t, entities, docs_of)) for t, q in chosen]
    return out


def _query_record(target: Target, question: str, rng: random.Random, img_neg: list[str], txt_neg: list[str]) -> dict:
    image = target.modality == "image"
    return {
        "qid": _hex32(rng),
        "Q": question,
        "A": [target.answer],
        "img_posFacts": list(target.positives) if image else [],
        "img_negFacts": img_neg,
        "txt_posFacts": [] if image else list(target.positives),
        "txt_negFacts": txt_neg,
    }


# --------------------------------------------------------------------------- writing
def _write_jsonl(path: Path, records: Iterable[dict]) -> None:
    with atomic_write(path) as handle:
        handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _write_qrels(path: Path, queries: list[dict]) -> None:
    with atomic_write(path) as handle:
        for q in queries:
            handle.writelines(f"{q['qid']}\t{d}\t1\n" for d in q["img_posFacts"] + q["txt_posFacts"])


def _readme(size: str, seed: int, overrides: dict[str, object], counts: dict[str, int]) -> str:
    extra = " ".join(f"{k}={v!r}" for k, v in sorted(overrides.items()))
    return (
        "SYNTHETIC data: a mini WebQA in the UniVL-DR release layout, generated by datamodules.mini_webqa.\n"
        "Fictional entities; images drawn with PIL; not real WebQA, numbers on it are not comparable to the paper.\n"
        f"size={size} seed={seed}"
        + (f" overrides: {extra}" if extra else "")
        + "\n"
        + " ".join(f"{k}={v}" for k, v in counts.items())
        + "\n"
        f"regenerate: python -m datamodules.mini_webqa --out DIR --size {size} --seed {seed}\n"
        "files: train/dev/test.json, all_docs.json, all_imgs.json, all_imgs_exp.json (caption [SEP] generated "
        "description), imgs.tsv + imgs.lineidx.new, dev_qrels.txt, test_qrels.txt\n"
    )


def generate_mini_webqa(out_dir: str | Path, size: str = "small", seed: int = 0, **overrides: object) -> Path:
    """Write a complete synthetic data directory in the WebQA release layout; return its path.

    The same (size, seed, overrides) always gives byte-identical files.
    """
    cfg = make_config(size, **overrides)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a directory to write the data into")
    corpus_rng = random.Random(f"{seed}:corpus")
    entities = make_entities(cfg, corpus_rng)
    images = make_images(cfg, entities, corpus_rng)
    facts = make_facts(cfg, entities, corpus_rng)
    weights = split_weights(cfg)
    img_labels = assign_labels([(i.entity, i.group) for i in images], weights, random.Random(f"{seed}:img-split"))
    txt_labels = assign_labels([(f.entity, f.attribute) for f in facts], weights, random.Random(f"{seed}:txt-split"))
    targets = image_targets(cfg, entities, images, img_labels) + text_targets(entities, facts, txt_labels)
    queries = make_queries(cfg, entities, images, facts, targets, random.Random(f"{seed}:queries"))
    _write_corpus(out, cfg, entities, images, facts, seed)
    for split in SPLITS:
        _write_jsonl(out / f"{split}.json", queries[split])
    for split in ("dev", "test"):
        _write_qrels(out / f"{split}_qrels.txt", queries[split])
    counts = {"images": len(images), "text_facts": len(facts), **{f"{s}_queries": len(queries[s]) for s in SPLITS}}
    with atomic_write(out / "README.txt") as handle:
        handle.write(_readme(size, seed, overrides, counts))
    return out


def _write_corpus(
    out: Path, cfg: MiniWebQAConfig, entities: list[Entity], images: list[ImageDoc], facts: list[FactDoc], seed: int
) -> None:
    """all_docs.json, all_imgs.json, all_imgs_exp.json and imgs.tsv + lineidx, in shuffled order."""
    order_rng = random.Random(f"{seed}:order")
    facts = order_rng.sample(facts, len(facts))
    images = order_rng.sample(images, len(images))
    _write_jsonl(
        out / "all_docs.json",
        (
            {
                "title": entities[f.entity].title,
                "fact": f.text,
                "url": f"https://wiki.example.org/{entities[f.entity].title.replace(' ', '_')}",
                "snippet_id": f.snippet_id,
            }
            for f in facts
        ),
    )
    _write_jsonl(
        out / "all_imgs.json",
        (
            {"title": entities[i.entity].title, "caption": entities[i.entity].caption, "image_id": i.image_id}
            for i in images
        ),
    )
    verbal_rng = random.Random(f"{seed}:verbal")
    _write_jsonl(
        out / "all_imgs_exp.json",
        (
            {
                "title": entities[i.entity].title,
                "caption": f"{entities[i.entity].caption} [SEP] {verbalize(i.scene, verbal_rng, cfg.verbal_noise)}",
                "image_id": i.image_id,
            }
            for i in images
        ),
    )
    write_tsv(
        out / "imgs.tsv",
        out / "imgs.lineidx.new",
        (
            (
                str(i.image_id),
                encode_jpeg(draw_scene(i.scene, cfg.image_size, f"{seed}:{i.image_id}"), cfg.jpeg_quality),
            )
            for i in images
        ),
    )


# --------------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic WebQA-layout data directory.")
    parser.add_argument("--out", required=True, help="directory to write (created if missing)")
    parser.add_argument("--size", default="small", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = generate_mini_webqa(args.out, size=args.size, seed=args.seed)
    print(f"wrote {out} ({args.size}, seed {args.seed}) in {time.perf_counter() - start:.1f}s")
    print((out / "README.txt").read_text().splitlines()[3])
    return 0


if __name__ == "__main__":
    sys.exit(main())
