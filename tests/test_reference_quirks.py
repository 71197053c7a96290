"""`--reference-quirks`: the SLDD and Q-SENN baselines exactly as the reference code trains them.

The expected values below are what the reference's own functions return on the same small
generated inputs. They were obtained by copying its files out of ThomasNorr/CHiQPM (HEAD,
`git show HEAD:architectures/SLDDLevel.py` and `sparsification/{qsenn,sldd,feature_helpers}.py`)
into a scratch folder outside this repository and running, with this project's venv:
  - `sparsification.qsenn.get_sparsified_weights_for_factor([W], [b], 2)` for W1/b1, W2/b2;
  - `sparsification.sldd.set_lowest_percent_to_zero(M, 5)` (and the whole
    `get_sparsified_weights_for_factor([zeros, M, dense], biases, 3)`, which picks M and
    returns the same matrix) for M below;
  - `SLDDLevel(sel, W, mean0, std0, b)` trained 3 steps with `torch.optim.SGD(lr=0.1,
    momentum=0.95, weight_decay=5e-4)` on the cross-entropy of (X[:, sel], y), as its
    fine-tuning optimiser does (every trainable parameter, one group);
  - `SLDDLevel` with a std below its clamp, forward only;
  - `feature_helpers.calculate_metadata` of the normalised features a fine-tuned
    `SLDDLevel(sel2, ..., m_tr, s_tr, ...)` returns for F (a loader of batch 256), i.e. the
    statistics its Q-SENN round 2 gives the next head.
The inputs are re-drawn here with the same seeded numpy calls.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from qpm.baselines import GLMConfig, quantise, run_qsenn
from qpm.baselines.glm import standardise
from qpm.baselines.sldd import prune
from qpm.errors import QPMError
from qpm.models.heads import head_from_state
from qpm.models.sparse_head import SparseHead
from qpm.pipeline.training import FitSettings, make_optimizer, train_loader

pytestmark = pytest.mark.usefixtures("one_thread")

# --- Q-SENN's last threshold ------------------------------------------------------------------

W1 = np.array([[0.8, 0, -0.25], [0.25, -0.6, 0], [0, 0.4, 0]], np.float32)  # 5 <= C*k = 6
B1 = np.array([0.3, -0.2, 0.1], np.float32)
W2 = np.array([[-0.9, 0.2, 0.5], [0.3, 0, -0.7], [0.1, 0.6, 0]], np.float32)  # largest < 0
B2 = np.array([0.05, -0.4, 0.2], np.float32)
V1, V2 = 0.5125000476837158, 0.4599999785423279
REF_Q1 = ([[V1, 0, -V1], [0, -V1, 0], [0, V1, 0]], [0.0, 0.30000001192092896, -0.30000001192092896])
REF_Q2 = ([[V2, V2, V2], [V2, 0, -V2], [0, V2, 0]],
          [-0.4000000059604645, 0.4000000059604645, 0.13333332538604736])


@pytest.mark.parametrize("w, b, ref", [(W1, B1, REF_Q1), (W2, B2, REF_Q2)])
def test_quirks_quantise_as_the_reference(w, b, ref):
    wq, bq, _ = quantise(w, b, 6, reference_quirks=True)
    assert wq == pytest.approx(np.array(ref[0]), abs=1e-7)
    assert bq == pytest.approx(np.array(ref[1]), abs=1e-7)


def test_default_quantise_keeps_every_weight_of_a_sparse_enough_solution():
    wq, _, v = quantise(W1, B1, 6)  # 5 non-zeros: all stay, with their signs
    assert (np.sign(wq) == np.sign(W1)).all()
    assert v == pytest.approx((0.8 + 0.25 + 0.25 + 0.6 + 0.4) / 5)
    wq, _, _ = quantise(W2, B2, 6)
    assert wq[0, 0] < 0  # the largest weight keeps its sign


# --- SLDD's final pruning ---------------------------------------------------------------------


def sldd_matrix() -> np.ndarray:
    rng = np.random.default_rng(3)
    m = np.zeros((4, 10), np.float32)
    idx = rng.choice(40, 24, replace=False)
    m.flat[idx] = rng.normal(0, 1, 24).astype(np.float32)
    return m


# the positions (row, column) set_lowest_percent_to_zero(M, 5) zeroes: the 4 smallest of 24
REF_SLDD_ZEROED = [(0, 1), (1, 2), (1, 8), (3, 0)]


@pytest.mark.parametrize("k", [2, 3, 10])
def test_quirks_prune_sldd_to_5_per_class_whatever_k(k):
    m = sldd_matrix()
    expected = m.copy()
    for r, c in REF_SLDD_ZEROED:
        expected[r, c] = 0
    assert np.array_equal(prune(m, k, reference_quirks=True), expected)


def test_default_prunes_sldd_to_k_per_class():
    m = sldd_matrix()
    assert np.count_nonzero(prune(m, 3)) == 4 * 3
    kept = prune(m, 3)
    assert np.abs(m[kept == 0]).max() <= np.abs(kept[kept != 0]).min()


# --- the heads' normalisation -----------------------------------------------------------------

SEL, WH, BH = [2, 0, 3], [[1.5, 0.0, -0.7], [0.0, 0.9, 0.4]], [0.1, -0.1]
MEAN0, STD0 = [1.8, 2.2, 1.9], [1.1, 0.6, 1.4]
REF_MEAN = [2.042759656906128, 1.9566805362701416, 1.760102391242981]
REF_STD = [1.009398341178894, 1.0448280572891235, 1.3541747331619263]
REF_CLAMPED = [[2.987044095993042, -1232148.0], [0.4639151394367218, -140226.703125],
               [-0.36778494715690613, -1098800.0], [-1.5390276908874512, -1693684.375],
               [-0.5526961088180542, -1397848.375], [0.25430402159690857, -1809755.25]]


def head_inputs():
    rng = np.random.default_rng(5)
    x = torch.as_tensor(rng.gamma(2.0, 1.0, (6, 4)).astype(np.float32))
    return x, torch.tensor([0, 1, 0, 1, 1, 0])


class _Model(nn.Module):  # what make_optimizer expects: a network with a classifier
    def __init__(self, head):
        super().__init__()
        self.classifier = head


def _trained(reference_quirks: bool) -> SparseHead:
    head = SparseHead(SEL, np.array(WH), np.array(BH), np.array(MEAN0), np.array(STD0),
                      dropout=0.0, reference_quirks=reference_quirks)
    settings = FitSettings(epochs=1, lr=0.1, momentum=0.95, weight_decay=5e-4, step_size=1,
                           gamma=1.0, batch_size=6)
    opt, _ = make_optimizer(_Model(head), settings)  # the fine-tuning optimiser
    x, y = head_inputs()
    for _ in range(3):
        loss = nn.functional.cross_entropy(head(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head


def test_quirks_head_learns_raw_mean_and_std_as_the_reference():
    head = _trained(reference_quirks=True)
    assert [n for n, p in head.named_parameters() if p.requires_grad] == ["mean", "std"]
    mean, std = head.normalisation()
    assert mean.tolist() == pytest.approx(REF_MEAN, rel=1e-5)
    assert std.tolist() == pytest.approx(REF_STD, rel=1e-5)


def test_quirks_head_clamps_its_std_where_it_divides():
    head = SparseHead(SEL, np.array(WH), np.array(BH), np.array(MEAN0),
                      np.array([1.1, 1e-9, 1.4]), dropout=0.0, reference_quirks=True).eval()
    with torch.no_grad():
        assert head(head_inputs()[0]).numpy() == pytest.approx(np.array(REF_CLAMPED), rel=1e-5)


def test_default_head_learns_offset_and_scale_toward_the_data_statistics():
    head = _trained(reference_quirks=False)
    assert [n for n, p in head.named_parameters() if p.requires_grad] == ["mean", "log_scale"]
    mean, std = head.normalisation()
    assert not np.allclose(mean.numpy(), REF_MEAN, rtol=1e-3)
    assert torch.equal(head.data_mean, torch.tensor(MEAN0))  # the statistics stay apart


def test_quirks_head_round_trips_through_its_state():
    head = _trained(reference_quirks=True)
    again = head_from_state("sparse", head.state_dict())
    again.load_state_dict(head.state_dict())
    assert again.reference_quirks and not again.learn_normalisation
    x = head_inputs()[0]
    with torch.no_grad():
        assert torch.equal(again.eval()(x), head.eval()(x))
    default = head_from_state("sparse", _trained(reference_quirks=False).state_dict())
    assert not default.reference_quirks


# --- Q-SENN's rounds 2-4 ----------------------------------------------------------------------

SEL2, M_TR, S_TR = [4, 1, 2], [1.5, 2.5, 1.0], [0.8, 1.7, 1.2]
REF_ROUND2_MEAN = [0.3624935448169708, -0.4465368688106537, 0.6932377815246582]
REF_ROUND2_STD = [1.441880702972412, 0.6810505986213684, 0.986914873123169]


def round2_features() -> np.ndarray:
    return np.random.default_rng(7).gamma(2.0, 1.0, (40, 5)).astype(np.float32)


def head_input(features, selection, mean, std) -> np.ndarray:
    """What a fine-tuned quirks head with this mean and std returns for ``features``."""
    head = SparseHead(selection, np.ones((2, len(selection))), np.zeros(2), np.asarray(mean),
                      np.asarray(std), reference_quirks=True)
    with torch.no_grad():
        return head.layer_input(torch.as_tensor(features, dtype=torch.float32)).numpy()


def test_quirks_round_statistics_are_those_of_the_normalised_head_input():
    # SEL2 is not sorted: the head keeps the reference's column order
    st = standardise(head_input(round2_features(), SEL2, M_TR, S_TR))
    assert st.mean.tolist() == pytest.approx(REF_ROUND2_MEAN, abs=1e-6)
    assert st.std.tolist() == pytest.approx(REF_ROUND2_STD, abs=1e-6)


def test_run_qsenn_with_quirks_fits_later_rounds_on_the_head_input():
    rng = np.random.default_rng(0)
    y = np.arange(120) % 3
    X = np.maximum(rng.normal(0, 1, (120, 10)) + 2.5 * (np.arange(10) % 3 == y[:, None]), 0)
    seen = []

    def extract(layer):
        if layer is None:
            return X, y
        seen.append(layer.selection.copy())
        # a fine-tuned head: its mean and std moved away from the layer's
        return head_input(X, layer.selection, layer.mean + 0.5, layer.std * 2), y

    cfg = GLMConfig(n_lambdas=10, max_epochs=25, batch_size=64)
    history = run_qsenn(extract, lambda *a: {}, 3, per_class=2, n_features=6,
                        schedule=[(1, 1.0)] * 3, cfg=cfg, reference_quirks=True)
    first = history[0].layer
    for prev, h in zip(history, history[1:], strict=False):
        assert np.array_equal(h.layer.selection, first.selection)  # selection stays
        fed = head_input(X, prev.layer.selection, prev.layer.mean + 0.5, prev.layer.std * 2)
        assert h.layer.mean == pytest.approx(fed.mean(axis=0), abs=1e-5)  # its statistics
        assert h.layer.std == pytest.approx(fed.std(axis=0), abs=1e-5)
        assert h.layer.info["reference_quirks"] is True
    assert len(seen) == 2
    # without quirks every round standardises the raw features of the selection
    plain = run_qsenn(lambda layer: (X, y), lambda *a: {}, 3, per_class=2, n_features=6,
                      schedule=[(1, 1.0)] * 2, cfg=cfg)
    sel = plain[1].layer.selection
    assert plain[1].layer.mean == pytest.approx(X[:, sel].mean(axis=0), abs=1e-5)
    with pytest.raises(ValueError, match="head's input"):
        run_qsenn(lambda layer: (X, y), lambda *a: {}, 3, per_class=2, n_features=6,
                  schedule=[(1, 1.0)] * 2, cfg=cfg, reference_quirks=True)


# --- the training loader ----------------------------------------------------------------------


def test_quirks_loader_keeps_the_ragged_last_batch():
    data = torch.utils.data.TensorDataset(torch.arange(20.0), torch.zeros(20, dtype=torch.long))
    base = dict(epochs=1, lr=0.1, momentum=0.9, weight_decay=0.0, step_size=1, gamma=1.0,
                batch_size=8)
    assert sum(len(b[0]) for b in train_loader(data, FitSettings(**base))) == 16
    kept = train_loader(data, FitSettings(**base, drop_last=False))
    assert sorted(torch.cat([b[0] for b in kept]).tolist()) == list(map(float, range(20)))


def test_quirks_turn_off_drop_last_in_fine_tuning_only(tmp_path):
    from qpm.pipeline.stages import RunContext
    from qpm.run_folder.config import TrainConfig

    cfg = TrainConfig(model_type="sldd", reference_quirks=True).resolve()
    ctx = RunContext(cfg, tmp_path)
    assert ctx.fit_settings(finetune=True).drop_last is False
    assert ctx.fit_settings(finetune=False).drop_last is True  # the shared dense model
    plain = RunContext(TrainConfig(model_type="sldd").resolve(), tmp_path)
    assert plain.fit_settings(finetune=True).drop_last is True


# --- the flag in the run folder ---------------------------------------------------------------


def test_quirks_make_a_variant_of_their_own():
    from qpm.pipeline.stages import variant_of
    from qpm.run_folder.config import TrainConfig

    for mt in ("sldd", "qsenn"):
        assert variant_of(TrainConfig(model_type=mt, n_features=50)) == f"{mt}-n50-k5"
        quirks = TrainConfig(model_type=mt, n_features=50, reference_quirks=True)
        assert variant_of(quirks) == f"{mt}-n50-k5-reference-quirks"


def test_a_rerun_keeps_the_flag_for_its_model_type_only(tmp_path):
    import json

    from qpm import run_folder as rf
    from qpm.run_folder.config import rerun_settings

    (tmp_path / rf.CONFIG).write_text(json.dumps({"model_type": "sldd",
                                                  "reference_quirks": True}))
    assert rerun_settings(tmp_path, {})[0]["reference_quirks"] is True
    assert rerun_settings(tmp_path, {"reference_quirks": False})[0]["reference_quirks"] is False
    # another model type does not inherit it (it would be refused for qpm)
    assert "reference_quirks" not in rerun_settings(tmp_path, {"model_type": "qpm"})[0]


def test_quirks_are_refused_for_qpm(tiny_imagefolder, tmp_path, capsys):
    from conftest import TINY_RUN_FLAGS

    from qpm.cli import main
    from qpm.pipeline.stages import pipeline_stages
    from qpm.run_folder.config import TrainConfig

    with pytest.raises(QPMError, match="applies to --model-type qsenn or sldd, not qpm"):
        pipeline_stages(TrainConfig(reference_quirks=True).resolve())
    code = main(["train", *TINY_RUN_FLAGS, "--data-root", str(tiny_imagefolder), "--run-dir",
                 str(tmp_path / "run"), "--reference-quirks"])
    err = capsys.readouterr().err
    assert code == 2 and "--reference-quirks applies to" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before any work


def test_quirks_train_sldd_and_qsenn_in_their_own_variants(run_copy, tiny_imagefolder, capsys):
    import json

    from conftest import consistent

    from qpm.cli import main
    from qpm.models.checkpoint import load_model
    from qpm.pipeline.run import run_pipeline
    from qpm.run_folder.config import TrainConfig

    glm = GLMConfig(n_lambdas=20, max_epochs=20, batch_size=16)
    for mt in ("sldd", "qsenn"):
        cfg = TrainConfig(dataset="imagefolder", data_root=str(tiny_imagefolder),
                          arch="small-cnn", image_size=16, epochs=1, ft_epochs=1,
                          n_features=6, per_class=2, batch_size=8, device="cpu",
                          model_type=mt, reference_quirks=True, run_dir=str(run_copy))
        summary = run_pipeline(cfg, log=lambda _m: None, glm=glm)
        assert {s.name: s.status for s in summary.stages}["dense"] == "skipped"
        folder = run_copy / "variants" / f"{mt}-n6-k2-reference-quirks"
        assert summary.variant_dir == folder
        assert json.loads((folder / "config.json").read_text())["reference_quirks"] is True
        head = load_model(folder / f"{mt}.pt")[0].classifier
        assert isinstance(head, SparseHead) and head.reference_quirks
        assert "data_std" not in head.state_dict()
        again = run_pipeline(cfg, log=lambda _m: None, glm=glm)  # finished: nothing runs
        assert {s.status for s in again.stages} == {"skipped"}
    assert consistent(run_copy)
    assert not list((run_copy / "variants").glob("sldd-n6-k2"))  # the default is another one
    assert main(["evaluate", str(run_copy), "--device", "cpu", "--model-type", "qsenn"]) == 0
    assert "qsenn-n6-k2-reference-quirks" in capsys.readouterr().out
