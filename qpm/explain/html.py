"""A static, self-contained index.html: the assignment as a table, the feature gallery, one
card per class and every comparison figure once.

No network and no external files other than the PNGs next to it (referenced relatively), so
the folder can be zipped, mailed or opened from disk. A tiny inline script marks the body
with ``data-images-ok`` once every image has loaded, which the headless-browser test reads.
"""

from __future__ import annotations

import html
from pathlib import Path

from qpm.io import atomic_write

_STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222;
  padding: 0 1em; }
nav a { margin-right: 1em; }
.counts { font-size: 105%; } .warning { color: #a40; }
.matrix-wrap { overflow: auto; max-height: 80vh; border: 1px solid #ccc; }
table.matrix { border-collapse: collapse; font-size: 12px; }
table.matrix th, table.matrix td { border: 1px solid #e4e4e4; padding: 0; }
table.matrix thead th { position: sticky; top: 0; background: #fff; z-index: 2;
  writing-mode: vertical-rl; transform: rotate(180deg); padding: 4px 1px; font-weight: normal; }
table.matrix tbody th { position: sticky; left: 0; background: #fff; z-index: 1;
  text-align: left; padding: 0 6px; font-weight: normal; white-space: nowrap; }
table.matrix thead th.corner { left: 0; z-index: 3; writing-mode: horizontal-tb;
  transform: none; text-align: left; vertical-align: bottom; }
table.matrix td { width: 16px; min-width: 16px; height: 16px; }
table.matrix tbody tr:nth-child(5n) > * { border-bottom: 1px solid #aaa; }
table.matrix td.on { background: #1f4e99; } table.matrix td.neg { background: #c9781c; }
table.matrix tr:hover th, table.matrix tr:hover td:not(.on):not(.neg) { background: #eef3fb; }
table.matrix a { color: inherit; text-decoration: none; }
.feature-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(540px, 1fr));
  gap: .4em 1.2em; }
.feature-row h3 { font-size: 100%; margin: .5em 0 .2em; }
.users { font-weight: normal; color: #555; }
.strip { display: flex; gap: 4px; flex-wrap: wrap; }
.strip figure { margin: 0; width: 84px; text-align: center; font-size: 11px; }
.strip img { width: 84px; height: 84px; object-fit: contain; border: 1px solid #ddd; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr));
  gap: .7em; }
.class-entry { border: 1px solid #ccc; border-radius: 6px; padding: .4em .7em; }
.class-entry h3 { margin: .2em 0 .4em; font-size: 105%; overflow-wrap: anywhere; }
.class-entry ul { list-style: none; padding: 0; margin: 0; }
.class-entry li { display: flex; align-items: center; gap: .5em; margin: .15em 0; }
img.thumb { width: 48px; height: 48px; object-fit: cover; border: 1px solid #ddd; }
.weight { color: #555; font-size: 90%; } .also { color: #555; font-size: 85%; }
.pair-list { font-size: 90%; margin: .4em 0 .2em; }
figure.pair, figure.local { margin: 1em 0; }
figure.pair img, figure.local img { max-width: 100%; border: 1px solid #eee; }
:target { outline: 3px solid #f0b400; }
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


def _class_link(c: int, names: dict[int, str]) -> str:
    return f'<a href="#class-{c}">{_e(names[c])}</a>'


def _matrix(explanation: dict, names: dict[int, str]) -> str:
    feats = [f["index"] for f in explanation["features"]]
    head = "".join(f'<th scope="col" title="{_e(f)}"><a href="#feature-{f}">{f}</a></th>'
                   for f in feats)
    rows = []
    for cls in explanation["classes"]:
        weights = {f["index"]: f["weight"] for f in cls["features"]}
        cells = []
        for f in feats:
            w = weights.get(f)
            if w is None:
                cells.append("<td></td>")
                continue
            tip = _e(f"{names[cls['index']]} uses feature {f} (weight {w:.3g})")
            cells.append(f'<td class="{"on" if w > 0 else "neg"}" title="{tip}"></td>')
        rows.append(f'<tr><th scope="row">{_class_link(cls["index"], names)}</th>'
                    + "".join(cells) + "</tr>")
    return ('<div class="matrix-wrap"><table class="matrix" id="matrix"><thead><tr>'
            '<th class="corner">class \\ feature</th>' + head + "</tr></thead><tbody>"
            + "\n".join(rows) + "</tbody></table></div>")


def _feature_rows(explanation: dict, names: dict[int, str]) -> list[str]:
    parts = ['<div class="feature-grid">']
    for feat in explanation["features"]:
        users = ", ".join(_class_link(c, names) for c in feat["classes"])
        parts.append(f'<div class="feature-row" id="feature-{feat["index"]}">'
                     f"<h3>{_e(feat['name'])} <span class=\"users\">used by {users}</span></h3>"
                     '<div class="strip">')
        for g in feat.get("gallery", []):
            act = g.get("activation")
            value = "" if act is None else f'<br><span class="weight">{act:.2f}</span>'
            parts.append(f'<figure><img src="{_e(g["image"])}" alt="{_e(g["caption"])}">'
                         f"<figcaption>{_e(g['caption'])}{value}</figcaption></figure>")
        parts.append("</div></div>")
    parts.append("</div>")
    if explanation.get("unused"):
        parts.append("<p>Selected but used by no class: "
                     + ", ".join(f"feature {f}" for f in explanation["unused"]) + ".</p>")
    return parts


def _card(cls: dict, pairs: list[dict], thumbs: dict[int, str], names: dict[int, str],
          users: dict[int, list[int]], binary: bool) -> str:
    c = cls["index"]
    items = []
    for f in cls["features"]:
        thumb = (f'<img class="thumb" src="{_e(thumbs[f["index"]])}" alt="">'
                 if f["index"] in thumbs else "")
        weight = "" if binary else f' <span class="weight">w = {f["weight"]:.3g}</span>'
        others = [o for o in users.get(f["index"], []) if o != c]
        also = (f'<br><span class="also">also: {", ".join(_e(names[o]) for o in others[:6])}'
                + (f" and {len(others) - 6} more" if len(others) > 6 else "") + "</span>"
                if others else '<br><span class="also">only this class</span>')
        items.append(f'<li><a href="#feature-{f["index"]}">{thumb}</a><span>'
                     f'<a href="#feature-{f["index"]}">{_e(f["name"])}</a>{weight}{also}'
                     "</span></li>")
    links = []
    for p in pairs:
        other = p["classes"][1] if p["classes"][0] == c else p["classes"][0]
        text = f"vs {_e(names[other])} ({len(p['shared'])} shared)"
        links.append(f'<a href="#pair-{p["classes"][0]}-{p["classes"][1]}">{text}</a>'
                     if p.get("figure") else text)
    compare = ("Compare: " + "; ".join(links)) if links else "Shares no feature with another class."
    return (f'<div class="class-entry" id="class-{c}" data-class="{c}">'
            f"<h3>{_e(cls['name'])}</h3><ul>" + "".join(items) + "</ul>"
            f'<p class="pair-list">{compare}</p></div>')


def _pair_figure(p: dict, names: dict[int, str]) -> str:
    a, b = p["classes"]
    dist = "; ".join(f"only {_e(names[int(k)])}: " + ", ".join(f"feature {f}" for f in v)
                     for k, v in p["distinguishing"].items() if v)
    return (f'<figure class="pair" id="pair-{a}-{b}"><img src="{_e(p["figure"])}" '
            f'alt="{_e(names[a])} vs {_e(names[b])}"><figcaption>'
            f"{_class_link(a, names)} vs {_class_link(b, names)}: {len(p['shared'])} shared "
            f"feature(s); {dist}</figcaption></figure>")


def _no_pairs(pairs: list[dict]) -> str:
    """Why the class-pairs section shows no figure: an empty section says nothing."""
    if not pairs:
        return ("No two classes share a feature: each class is recognised by features of its "
                "own, so there is no pair to compare.")
    return (f"{len(pairs)} class pair(s) share features, but no comparison figure was drawn "
            "(qpm explain --max-figures 0, or no correctly classified example image of a "
            "class); the class cards list the pairs.")


def _local_section(local: dict, names: dict[int, str]) -> list[str]:
    """Local explanations with the tree of class paths, explained for a first-time reader."""
    k = local.get("per_class", "k")
    cov = local.get("coverage")
    how = (f" Green marks the {100 * cov:g}% prediction set: the classes that, calibrated on "
           f"held-out test images ({_e(local.get('calibration', ''))}), cannot be ruled out "
           "at that coverage." if cov is not None else
           " Run qpm calibrate on this run to also see each image's prediction set here.")
    parts = ['<section id="local"><h2>Local explanations</h2><p>Why one image got its class. '
             "Top: where each feature of the predicted class and of the runner-up is active, "
             "and its part in the two logits. Below: the tree of class paths. Every class "
             f"uses {k} features; on this image, sort each class's features by how strongly "
             "the image activates them. Classes whose strongest features are the same, in "
             "the same order, share a branch; a class leaves the predicted class's branch "
             "at the first feature where they differ, and a path stops at a feature that is "
             "not active on the image. The predicted class's path is black, its name bold; "
             "the dots have the colours of the heat maps above (grey: features not shown "
             f"there) and grow with the activation.{how}</p>"]
    for ex in local.get("examples", []):
        pset = ex.get("prediction_set_names")
        in_set = "" if pset is None else (
            f"; prediction set ({len(pset)}): " + ", ".join(_e(n) for n in pset))
        parts.append(f'<figure class="local" id="local-{_e(ex["split"])}-{ex["index"]}">'
                     f'<img src="{_e(ex["figure"])}" alt="local explanation of '
                     f'{_e(ex["class_name"])}"><figcaption>{_e(ex["split"])} image '
                     f'{ex["index"]}, a {_class_link(ex["class"], names)}: predicted '
                     f'{_class_link(ex["predicted"], names)}; {ex["classes_in_tree"]} '
                     f"class(es) in its tree{in_set}</figcaption></figure>")
    parts.append("</section>")
    return parts


def write_index(out_dir: str | Path, explanation: dict, title: str = "",
                assignment_png: str | None = "assignment.png") -> Path:
    """Write ``out_dir/index.html`` for an :func:`explanation_dict` (with figure paths)."""
    out_dir = Path(out_dir)
    names = {c["index"]: c["name"] for c in explanation["classes"]}
    all_pairs = [*explanation["similar_pairs"], *explanation.get("closest_pairs", [])]
    pairs_of: dict[int, list[dict]] = {}
    for p in all_pairs:
        for c in p["classes"]:
            pairs_of.setdefault(c, []).append(p)
    thumbs = {f["index"]: f["gallery"][0]["image"] for f in explanation["features"]
              if f.get("gallery")}
    binary = all(f["weight"] == 1 for c in explanation["classes"] for f in c["features"])
    title = title or f"Global explanation ({explanation.get('model_type', 'model')})"
    counts = explanation.get("counts_line") or f"{explanation['n_features']} features used"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_STYLE}</style>",
        f"<script>{_SCRIPT}</script>",
        "</head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="counts">{_e(counts)}.</p>',
    ]
    if explanation.get("counts_warning"):
        parts.append(f'<p class="warning">{_e(explanation["counts_warning"])}</p>')
    parts += [
        '<nav><a href="#assignment">Assignment</a><a href="#classes">Classes</a>'
        '<a href="#pairs">Class pairs</a>'
        + ('<a href="#local">Local explanations</a>' if explanation.get("local") else "")
        + '<a href="#features">Features</a></nav>',
        '<section id="assignment"><h2>Assignment</h2><p>One row per class, one column per '
        "used feature; a filled cell means the class uses the feature (hover for details, "
        "click a name to jump to it).</p>",
        _matrix(explanation, names),
    ]
    if assignment_png:
        parts.append(f'<p>The same as a picture: <a href="{_e(assignment_png)}">'
                     f"{_e(assignment_png)}</a>.</p>")
    parts += ['</section><section id="classes"><h2>Classes</h2><p>Each class with its '
              "features (the picture: the training image that activates the feature most) "
              'and the classes it is compared with.</p><div class="cards">']
    users = {f["index"]: f["classes"] for f in explanation["features"]}
    parts += [_card(cls, pairs_of.get(cls["index"], []), thumbs, names, users, binary)
              for cls in explanation["classes"]]
    parts += ['</div></section><section id="pairs"><h2>Class pairs</h2><p>Two classes that '
              "share all but one feature (or, for a class without such a partner, the class "
              "sharing most): an example image of each, then the features only the first "
              "class uses, the shared ones, and those only the second uses, each in its own "
              "colour where it is active.</p>"]
    drawn = [_pair_figure(p, names) for p in all_pairs if p.get("figure")]
    parts += drawn or [f"<p>{_e(_no_pairs(all_pairs))}</p>"]
    parts.append("</section>")
    if explanation.get("local"):
        parts += _local_section(explanation["local"], names)
    parts += ['<section id="features"><h2>Features</h2><p>For each feature, the '
              "training images that activate it most (class and activation below each), "
              "red where the feature is active: what the feature responds to.</p>",
              *_feature_rows(explanation, names)]
    parts.append("</section></body></html>")
    text = "\n".join(parts) + "\n"
    return atomic_write(out_dir / "index.html", lambda fh: fh.write(text), mode="w")
