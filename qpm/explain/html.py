"""A static, self-contained index.html: one collapsible entry per class.

No network and no external files other than the PNGs next to it (referenced relatively), so
the folder can be zipped, mailed or opened from disk. A tiny inline script marks the body
with ``data-images-ok`` once every image has loaded, which the headless-browser test reads.
"""

from __future__ import annotations

import html
from pathlib import Path

from qpm.pipeline.artifacts import atomic_write

_STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }
details.class-entry { border: 1px solid #ccc; border-radius: 4px; margin: .3em 0;
  padding: .3em .6em; }
details.class-entry > summary { cursor: pointer; font-weight: bold; }
ul.features { columns: 2; }
.weight { color: #666; font-size: 90%; }
figure { margin: .6em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
img.assignment { max-width: 100%; max-height: 600px; }
.pair-list { font-size: 90%; }
"""

_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.every(function (im) { return im.complete && im.naturalWidth > 0; });
  document.body.setAttribute('data-images-ok', ok ? 'true' : 'false');
  document.body.setAttribute('data-image-count', String(imgs.length));
});
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _feature_items(features: list[dict]) -> str:
    items = []
    for f in features:
        w = f.get("weight")
        weight = "" if w is None else f' <span class="weight">(w = {w:.3g})</span>'
        items.append(f"<li>{_e(f['name'])}{weight}</li>")
    return "\n".join(items)


def _figure(p: dict, names: dict[int, str]) -> str:
    a, b = p["classes"]
    dist = "; ".join(f"{_e(names[int(k)])}: {v}" for k, v in p["distinguishing"].items())
    return (f'<figure><img loading="eager" src="{_e(p["figure"])}" '
            f'alt="{_e(names[a])} vs {_e(names[b])}"><figcaption>{_e(names[a])} vs '
            f"{_e(names[b])}: {len(p['shared'])} shared, distinguishing {dist}"
            "</figcaption></figure>")


def write_index(out_dir: str | Path, explanation: dict, title: str = "",
                assignment_png: str | None = "assignment.png") -> Path:
    """Write ``out_dir/index.html`` for an :func:`explanation_dict` (with figure paths)."""
    out_dir = Path(out_dir)
    names = {c["index"]: c["name"] for c in explanation["classes"]}
    pairs_of: dict[int, list[dict]] = {}
    for p in explanation["similar_pairs"]:
        for c in p["classes"]:
            pairs_of.setdefault(c, []).append(p)
    closest_of: dict[int, list[dict]] = {}
    for p in explanation.get("closest_pairs", []):
        for c in p["classes"]:
            closest_of.setdefault(c, []).append(p)
    title = title or f"Global explanation ({explanation.get('model_type', 'model')})"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title>",
        f"<style>{_STYLE}</style>",
        f"<script>{_SCRIPT}</script>",
        "</head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p>{explanation['n_classes']} classes described by {explanation['n_features']} "
        f"features. Open a class to see the features it uses and how it compares with the "
        f"classes that share all but one of its features.</p>",
    ]
    if assignment_png:
        parts.append(
            f'<h2>Assignment</h2><img class="assignment" src="{_e(assignment_png)}" '
            f'alt="feature-class assignment matrix">'
        )
    parts.append('<h2>Classes</h2><div id="classes">')
    opened = False  # the first class with a comparison figure starts open, as an example
    for cls in explanation["classes"]:
        c = cls["index"]
        feats = cls["features"]
        shown = pairs_of.get(c) or closest_of.get(c, [])
        start_open = not opened and any(p.get("figure") for p in shown)
        opened = opened or start_open
        parts.append(f'<details class="class-entry" id="class-{c}" data-class="{c}"'
                     + (" open>" if start_open else ">"))
        parts.append(f"<summary>{_e(cls['name'])} &mdash; {len(feats)} feature(s)</summary>")
        parts.append(f'<ul class="features">{_feature_items(feats)}</ul>')
        close = pairs_of.get(c, [])
        if close:
            others = [names[o] for p in close for o in p["classes"] if o != c]
            parts.append('<p class="pair-list">Shares all but one feature with: '
                         + ", ".join(_e(o) for o in others) + "</p>")
        else:
            close = closest_of.get(c, [])
            others = [f"{names[o]} ({len(p['shared'])} shared)"
                      for p in close for o in p["classes"] if o != c]
            parts.append('<p class="pair-list">No class shares all but one of its features; '
                         + ("closest: " + ", ".join(_e(o) for o in others) if others
                            else "it shares no feature with any class") + ".</p>")
        parts.extend(_figure(p, names) for p in close if p.get("figure"))
        parts.append("</details>")
    parts.append("</div></body></html>")
    text = "\n".join(parts) + "\n"
    return atomic_write(out_dir / "index.html", lambda fh: fh.write(text), mode="w")
