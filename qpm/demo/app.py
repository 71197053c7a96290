"""``qpm demo``: a local Gradio app over one trained model, as the CHiQPM reference's
demonstrator. Upload an image: its class, where its features are active, and CHiQPM's tree of
class paths; move the coverage slider: the conformal prediction set and the tree follow (the
image's outputs are kept, so only the set and the tree are recomputed).

Nothing remote: analytics and Gradio's version check are off (``GRADIO_ANALYTICS_ENABLED``
before Gradio is imported, ``analytics_enabled=False``), no share link, the server listens on
127.0.0.1 by default, and the page's fonts and scripts are Gradio's own packaged files
(``tests/test_demo.py`` checks every request the browser makes).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

from qpm.conformal import methods_for
from qpm.errors import QPMError
from qpm.explain.local import feature_colours, plot_local, set_caption
from qpm.explain.tree import plot_hierarchy
from qpm.text import printable

SLIDER = (0.5, 0.99, 0.005)  # coverage: minimum, maximum, step
INTRO = (
    "Upload an image. **Features**: where each feature of the predicted class and of the "
    "runner-up is active, and its part in the two scores. **Tree**: every class uses {k} "
    "features; sorted by how strongly this image activates them, classes whose strongest "
    "features agree share a branch, and a class leaves the predicted class's branch at the "
    "first feature where they differ. **Coverage**: the share of images whose true class the "
    "prediction set should contain (calibrated on held-out test images); green in the tree."
)


def gradio():
    """Gradio, imported with its analytics and version check switched off."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio as gr
    except ImportError:
        raise QPMError("qpm demo needs Gradio, which is not installed.",
                       "Install the extra: pip install 'qpm[demo]'.") from None
    return gr


class Demo:
    """What the app's callbacks do, without Gradio (testable on its own)."""

    def __init__(self, model, method: str | None = None) -> None:
        self.model = model
        weight, _ = model.layer()
        self.methods = methods_for(weight)
        self.method = method or ("hierarchical" if "hierarchical" in self.methods else "thr")
        if self.method not in self.methods:
            raise QPMError(f"The {self.method} method does not work with this model.",
                           f"Use one of: {', '.join(self.methods)}.")
        try:
            self.calibration = model.calibration()
        except QPMError as exc:
            self.calibration, self.why_no_sets = None, exc.problem
        self.folder = Path(tempfile.mkdtemp(prefix="qpm-demo-"))
        self._count = 0

    @property
    def coverage(self) -> float:
        return self.calibration.coverage if self.calibration is not None else 0.9

    def _file(self, stem: str) -> Path:
        self._count += 1
        return self.folder / f"{stem}-{self._count}.png"

    def classify(self, image, coverage: float):
        """(features figure, tree figure, set text, state) for an uploaded image."""
        if image is None:
            return None, None, "", None
        expl = self.model.explain(image)
        state = {"expl": expl, "outputs": self.model.outputs(image)}
        figure = plot_local(replace(expl, hierarchy=None, sets=None), self._file("features"))
        tree, text = self.update(coverage, state)
        return str(figure), tree, text, state

    def update(self, coverage: float, state):
        """(tree figure, set text) at ``coverage`` for the image in ``state``."""
        if not state:
            return None, ""
        expl, out = state["expl"], state["outputs"]
        names = self.model.class_names
        sets = None
        if self.calibration is not None:
            sets = self.model.prediction_sets(out, float(coverage), self.method)
        members = [] if sets is None else sets.classes[0]
        tree = self.model.hierarchy(out.values[0], expl.predicted, members)
        text = [f"**Predicted:** {printable(expl.predicted_name)}"]
        if sets is None:
            text.append(f"No prediction sets: {printable(self.why_no_sets)} Run qpm "
                        "calibrate on this run first.")
        else:
            listed = ", ".join(printable(names[c]) for c in members) or "(empty)"
            text.append(f"**Prediction set at {100 * float(coverage):g}% coverage** "
                        f"({len(members)} class{'es' if len(members) != 1 else ''}): {listed}")
            text.append(sets.describe())
        if tree is None:
            return None, "\n\n".join(text)
        path = plot_hierarchy(tree, names, self._file("tree"), feature_colours(expl),
                              members, "" if sets is None else set_caption(sets))
        return str(path), "\n\n".join(text)


def build_app(model, method: str | None = None, title: str = ""):
    """The Gradio Blocks of the demo (not launched)."""
    gr = gradio()
    demo = Demo(model, method)
    k = model.per_class
    with gr.Blocks(analytics_enabled=False, title=title or "qpm demo") as app:
        gr.Markdown(f"### {printable(title) or 'qpm demo'}\n\n" + INTRO.format(k=k))
        with gr.Row():
            image = gr.Image(type="pil", sources=["upload"], label="image",
                             elem_id="qpm-image", height=240)
            with gr.Column():
                coverage = gr.Slider(*SLIDER[:2], value=demo.coverage, step=SLIDER[2],
                                     label="coverage", elem_id="qpm-coverage",
                                     interactive=demo.calibration is not None)
                answer = gr.Markdown(elem_id="qpm-set")
        features = gr.Image(label="features", elem_id="qpm-features", interactive=False)
        tree = gr.Image(label="tree of class paths", elem_id="qpm-tree", interactive=False)
        state = gr.State(None)
        image.change(demo.classify, [image, coverage], [features, tree, answer, state])
        coverage.change(demo.update, [coverage, state], [tree, answer],
                        trigger_mode="always_last")
    return app, demo
