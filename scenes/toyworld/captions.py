"""Captions and category labels from a ToyWorld scene description.

Single object: ``"a glossy red torus"``, ``"a matte blue and white checkered box"``,
``"a polished gold sphere"``; composites name their main part: ``"a mushroom with a glossy red
cap"``. Multi-object scenes join the object captions: ``"a glossy red torus and a matte green
cone"``. The category is the shape name (``"torus"``, ``"mushroom"``) or ``"multi"``.
"""

from __future__ import annotations

MAIN_PART = {"mushroom": "cap", "table": "top", "snowman": "nose", "dumbbell": "weights"}
TEX_WORD = {"checker": "checkered", "stripes": "striped", "noise": "mottled"}


def material_phrase(mat: dict) -> str:
    """``"glossy red"``, ``"polished gold"``, ``"matte red and white checkered"``."""
    if mat["metallic"] >= 0.5:
        return f"{mat['finish'].split()[0]} {mat['color_name']}"
    tex = mat.get("texture", {"type": "none"})
    kind = tex.get("type", "none")
    if kind in ("checker", "stripes"):
        return f"{mat['finish']} {mat['color_name']} and {tex['color2_name']} {TEX_WORD[kind]}"
    if kind == "noise":
        return f"{mat['finish']} {TEX_WORD[kind]} {mat['color_name']}"
    return f"{mat['finish']} {mat['color_name']}"


def _article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


def object_caption(obj: dict) -> str:
    """Caption of one object dict (``category`` + ``parts`` with materials)."""
    cat = obj["category"]
    if cat in MAIN_PART:
        part = next(p for p in obj["parts"] if p["name"] == MAIN_PART[cat])
        ph = material_phrase(part["material"])
        art = "" if part["name"].endswith("s") else _article(ph) + " "  # plural parts: "with satin red weights"
        return f"a {cat} with {art}{ph} {part['name']}"
    ph = material_phrase(obj["parts"][0]["material"])
    return f"{_article(ph)} {ph} {cat}"


def scene_caption(objects: list[dict]) -> str:
    caps = [object_caption(o) for o in objects]
    if len(caps) == 1:
        return caps[0]
    return ", ".join(caps[:-1]) + " and " + caps[-1]


def scene_category(objects: list[dict]) -> str:
    return objects[0]["category"] if len(objects) == 1 else "multi"
