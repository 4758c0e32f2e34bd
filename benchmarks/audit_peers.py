"""The peer arm of ``bench_audit.py``: each instrument's measurements made with the peer
libraries directly, in plain loops (see that script's docstring), and the checks that the
numbers agree where the methods are the same."""

from __future__ import annotations

import itertools
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn


# ----------------------------------------------------------------------------- peer helpers
def block_module(model: nn.Module, point: str) -> nn.Module:
    mods = dict(model.named_modules())
    return mods[point.removesuffix(".resid")]


def p_target(model: nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(x).double(), 1)[:, target].numpy()


def peer_localisation(maps: np.ndarray, masks: dict, x: np.ndarray, q: float) -> list[dict]:
    """Per case × map channel × ROI: IoU, hit rate, relevance mass (signed, positive, per area),
    intensity Pearson/Spearman within the ROI and over the whole image (numpy/scipy loops)."""
    from scipy.stats import pearsonr, spearmanr

    rows = []
    n, cm = maps.shape[:2]
    for i in range(n):
        for c in range(cm):
            a = maps[i, c].ravel().astype(np.float64)
            top = a >= np.percentile(a, q)
            for roi, m in masks.items():
                s = m[i].ravel().astype(bool)
                iou = (top & s).sum() / max((top | s).sum(), 1)
                hit = (top & s).sum() / max(top.sum(), 1)
                mass = a[s].sum() / a.sum() if a.sum() != 0 else np.nan
                ap = np.maximum(a, 0)
                mass_pos = ap[s].sum() / ap.sum() if ap.sum() > 0 else np.nan
                per_area = mass / s.mean() if s.any() else np.nan
                rows.append({"case": i, "ch": c, "roi": roi, "iou": iou, "hit": hit, "mass": mass,
                             "mass_pos": mass_pos, "mass_per_area": per_area})
                contrasts = [c] if cm == x.shape[1] else range(x.shape[1])
                for k in contrasts:
                    xi = x[i, k].ravel()[s]
                    if s.sum() > 2 and np.ptp(a[s]) > 0 and np.ptp(xi) > 0:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            rows[-1][f"pearson_{k}"] = pearsonr(a[s], xi)[0]
                            rows[-1][f"spearman_{k}"] = spearmanr(a[s], xi)[0]
            contrasts = [c] if cm == x.shape[1] else range(x.shape[1])
            for k in contrasts:
                xi = x[i, k].ravel()
                if np.ptp(a) > 0 and np.ptp(xi) > 0:
                    rows.append({"case": i, "ch": c, "roi": "all", "pearson": pearsonr(a, xi)[0],
                                 "spearman": spearmanr(a, xi)[0]})
    return rows


def peer_aupc(model: nn.Module, x: torch.Tensor, target: int, maps: np.ndarray, n_samples: int, steps: int,
              seed: int) -> np.ndarray:
    """ΔAUPC per case: deletion curves of the map's order and ``n_samples`` random orders,
    one forward (batch 1) per (case, ordering, step); baseline 0."""
    rng = np.random.default_rng(seed)
    fr = np.linspace(0, 1, steps + 1)
    out = []
    for i in range(x.shape[0]):
        a = maps[i]  # (C_map, *spatial)
        orders = [np.argsort(-a.ravel(), kind="stable")] + [rng.permutation(a.size) for _ in range(n_samples)]
        areas = []
        for order in orders:
            ps = []
            for f in fr:
                k = round(f * a.size)
                keep = np.ones(a.size, bool)
                keep[order[:k]] = False
                keep = torch.from_numpy(keep.reshape(a.shape)).to(x.dtype)
                ps.append(p_target(model, (x[i:i + 1] * keep[None]), target)[0])
            areas.append(np.trapezoid(ps, fr))
        out.append(np.mean(areas[1:]) - areas[0])
    return np.asarray(out)


def peer_gini(maps: np.ndarray) -> np.ndarray:
    out = []
    for a in maps:
        v = np.sort(np.abs(a.ravel()))
        k = v.size
        i = np.arange(1, k + 1)
        out.append(((2 * i - k - 1) * v).sum() / (k * v.sum()) if v.sum() > 0 else np.nan)
    return np.asarray(out)


def peer_sens(explain, x: torch.Tensor, target: int, radius: float, n: int) -> np.ndarray:
    from captum.metrics import sensitivity_max

    def fn(inp, target):
        with torch.enable_grad():  # sensitivity_max runs the explanation under no_grad
            return (explain(inp[0] if isinstance(inp, tuple) else inp, target),)  # Captum iterates a tuple

    return sensitivity_max(fn, x, perturb_radius=radius,
                           n_perturb_samples=n, target=int(target)).detach().numpy()


def peer_maps_block(ctx, p, maps_fn, x_all: torch.Tensor, explain, sampled_n: int | None = None) -> list:
    """Localisation + faithfulness of one map method over the cases, per batch (as the audit's units)."""
    bs = ctx.cfg.batch_size
    n = ctx.n if sampled_n is None else sampled_n
    masks = ctx.masks()
    out = []
    for a in range(0, n, bs):
        b = min(a + bs, n)
        x = x_all[a:b]
        maps = maps_fn(x)
        out.append(peer_localisation(maps, {r: m[a:b] for r, m in masks.items()}, x.numpy(), p.q))
        if p.faithfulness:
            out.append(peer_aupc(ctx.model, x, ctx.target, maps, p.aupc_samples, p.aupc_steps, a))
            out.append(peer_gini(maps))
            k = min(p.robust_cases, b - a)
            if explain is not None and k:
                out.append(peer_sens(explain, x[:k], ctx.target, p.robust_radius, p.robust_samples))
    return out


# ----------------------------------------------------------------------------- peers
def gradcam_maps(model, x, target, layers) -> dict[str, np.ndarray]:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    out = {}
    for name in layers:
        with GradCAM(model, target_layers=[block_module(model, name)]) as cam:
            out[name] = cam(x, targets=[ClassifierOutputTarget(target)] * x.shape[0])[:, None]
    model.zero_grad(set_to_none=True)
    return out


def peer_gradcam(ctx, p):
    points = list(p.points or ctx.points)
    x_all = ctx.x()
    bs, masks, res = ctx.cfg.batch_size, ctx.masks(), []
    last = points[-1]

    def explain(inp, target=None):
        return torch.from_numpy(gradcam_maps(ctx.model, inp, ctx.target, [last])[last])

    for a in range(0, ctx.n, bs):
        b = min(a + bs, ctx.n)
        x = x_all[a:b]
        cams = gradcam_maps(ctx.model, x, ctx.target, points)
        for pt in points:
            res.append((pt, a, peer_localisation(cams[pt], {r: m[a:b] for r, m in masks.items()}, x.numpy(), p.q)))
        if p.faithfulness:
            peer_aupc(ctx.model, x, ctx.target, cams[last], p.aupc_samples, p.aupc_steps, a)
            peer_gini(cams[last])
            k = min(p.robust_cases, b - a)
            if k:
                peer_sens(explain, x[:k], ctx.target, p.robust_radius, p.robust_samples)
    return res


def lrp_attr(model, x, target, low, high):
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonGammaBox

    from probes.attribution.lrp_canonizers import default_canonizers

    comp = EpsilonGammaBox(low=low.expand_as(x), high=high.expand_as(x), canonizers=default_canonizers())
    was = model.training
    model.eval()
    with Gradient(model=model, composite=comp) as attributor:
        _, rel = attributor(x, torch.eye(2)[[target] * x.shape[0]])
    model.train(was)
    return rel.detach()


def peer_lrp(ctx, p):
    x_all = ctx.x()
    dims = [0] + list(range(2, x_all.ndim))
    low, high = x_all.amin(dim=dims, keepdim=True), x_all.amax(dim=dims, keepdim=True)

    def explain(inp, target=None):
        return lrp_attr(ctx.model, inp, ctx.target, low, high)

    return peer_maps_block(ctx, p, lambda x: explain(x).numpy(), x_all, explain)


def lime_maps(model, x, target, n_samples, seed) -> np.ndarray:
    from lime import lime_image

    from probes.attribution.features import slic_segments

    out = np.zeros((x.shape[0], 1, *x.shape[2:]))
    for i in range(x.shape[0]):
        seg = slic_segments(x[i], 50, 1.0).numpy()

        def classify(imgs):
            t = torch.from_numpy(np.ascontiguousarray(imgs.transpose(0, 3, 1, 2))).float()
            with torch.no_grad():
                return torch.softmax(model(t), 1).numpy()

        ex = lime_image.LimeImageExplainer(kernel_width=0.25, random_state=seed)
        e = ex.explain_instance(x[i].numpy().transpose(1, 2, 0).astype(np.float64), classify, labels=(target,),
                                top_labels=None, hide_color=0, num_samples=n_samples, batch_size=50,
                                segmentation_fn=lambda img, s=seg: s)
        for s, w in e.local_exp[target]:
            out[i, 0][seg == s] = w
    return out


def captum_maps(model, x, target, method, opts) -> np.ndarray:
    from captum.attr import InputXGradient, IntegratedGradients

    xr = x.clone().requires_grad_(True)
    if method == "input_x_gradient":
        a = InputXGradient(model).attribute(xr, target=target)
    elif method == "integrated_gradients":
        a = IntegratedGradients(model).attribute(xr, baselines=torch.zeros_like(x), target=target,
                                                 n_steps=opts.get("n_steps", 50))
    else:
        raise KeyError(method)
    model.zero_grad(set_to_none=True)
    return a.detach().numpy()


def peer_attribution(ctx, p):
    from probes.attribution import METHODS

    x_all, res = ctx.x(), []
    for m in p.methods:
        opts = dict(p.options.get(m, {}))
        if m == "lime":
            res.append(peer_maps_block(ctx, p, lambda x, opts=opts: lime_maps(ctx.model, x, ctx.target, opts.get("n_samples", 1000), 0),
                                       x_all, None, min(ctx.n, p.sampled_cases)))
        elif m in ("input_x_gradient", "integrated_gradients"):
            def explain(inp, target=None, m=m, opts=opts):
                return torch.from_numpy(captum_maps(ctx.model, inp, ctx.target, m, opts))
            sampled = METHODS[m].kind == "perturbation"
            res.append(peer_maps_block(ctx, p, lambda x, m=m, opts=opts: captum_maps(ctx.model, x, ctx.target, m, opts),
                                       x_all, explain, min(ctx.n, p.sampled_cases) if sampled else None))
        else:
            print(f"  peer attribution: no peer for method {m!r} (skipped)")
    return res


def layer_features(model, x_all: torch.Tensor, module: nn.Module, bs: int) -> np.ndarray:
    feats = []
    h = module.register_forward_hook(lambda m, i, o: feats.append(o.detach().flatten(2).mean(2).double().numpy()))
    try:
        with torch.no_grad():
            for a in range(0, x_all.shape[0], bs):
                model(x_all[a:a + bs])
    finally:
        h.remove()
    return np.concatenate(feats)


def peer_probes(ctx, p):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss, roc_auc_score
    from sklearn.model_selection import GroupShuffleSplit

    from audit.run.instruments.probes import probe_points
    from probes.internals.linear import DEFAULT_CS

    y = (ctx.labels() == ctx.target).astype(int)
    groups = np.asarray(ctx.groups())
    idx = np.arange(ctx.n)
    try:
        tr, rest = next(GroupShuffleSplit(1, test_size=1 - p.split[0], random_state=0).split(idx, y, groups))
        va_i, te_i = next(GroupShuffleSplit(1, test_size=p.split[2] / (1 - p.split[0]), random_state=0)
                          .split(rest, y[rest], groups[rest]))
    except ValueError:  # too few patients (a tiny warm-up run)
        return {}
    va, te = rest[va_i], rest[te_i]
    rng = np.random.default_rng(0)
    mods = dict(ctx.model.named_modules())
    out = {}
    for pt in probe_points(ctx, p):
        mod = mods[pt.removesuffix(".resid")]
        X = layer_features(ctx.model, ctx.x(), mod, ctx.cfg.batch_size)
        tasks = [("real", y)] + ([("control", rng.permutation(y))] if p.control else [])
        for task, yy in tasks:
            best = None
            if min(len(set(yy[tr])), len(set(yy[va])), len(set(yy[te]))) < 2:
                continue  # a split with one class (a tiny warm-up run)
            for C in DEFAULT_CS:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    clf = LogisticRegression(C=C, max_iter=p.max_iter).fit(X[tr], yy[tr])
                loss = log_loss(yy[va], clf.predict_proba(X[va]), labels=[0, 1])
                if best is None or loss < best[0]:
                    best = (loss, clf)
            if best is not None and len(set(yy[te])) == 2:
                out[(pt, task)] = roc_auc_score(yy[te], best[1].predict_proba(X[te])[:, 1])
    return out


def _graft(model, module, act, mask=None):
    def hook(m, i, o):
        return act if mask is None else torch.where(mask, act, o)
    return module.register_forward_hook(hook)


def peer_patching(ctx, p):
    from audit.run.instruments.patching import base_class, pair_masks, probabilities
    from probes.internals import select_pairs

    probs = probabilities(ctx)
    pairs = select_pairs(probs, ctx.labels(), x_label=ctx.target, x_base_label=base_class(ctx, p, probs.shape[1]),
                         min_confidence=p.min_confidence, n_pairs=p.n_pairs)
    if pairs.empty:
        return {}
    xs, bs_ = pairs["x"].to_numpy(), pairs["x_base"].to_numpy()
    x = ctx.x()
    masks = pair_masks(ctx, p, xs, bs_)
    model, out = ctx.model, {}
    rng = np.random.default_rng(0)
    for k in range(len(xs)):
        for direction, (src, dst, ri) in (("x->x_base", (xs[k], bs_[k], 0)), ("x_base->x", (bs_[k], xs[k], 1))):
            p0 = p_target(model, x[dst:dst + 1], ctx.target)[0]
            for pt in ctx.points:
                mod = block_module(model, pt)
                cap = []
                h = mod.register_forward_hook(lambda m, i, o, cap=cap: cap.append(o.detach()))
                with torch.no_grad():
                    model(x[src:src + 1])
                h.remove()
                act = cap[0]
                variants = [("full", "none", None)]
                if masks:
                    for roi, (mx, mb) in masks.items():
                        m = torch.from_numpy(np.asarray((mx if ri == 0 else mb)[k], np.float32))[None, None]
                        cell = nn.functional.adaptive_avg_pool2d(m, act.shape[2:]) > p.roi_threshold
                        variants.append((roi, "none", cell))
                        variants.append((roi, "complement", ~cell))
                        for _ in range(p.n_samples):
                            flat = torch.zeros(cell.numel(), dtype=torch.bool)
                            flat[torch.from_numpy(rng.permutation(cell.numel())[:int(cell.sum())])] = True
                            variants.append((roi, "random", flat.reshape(cell.shape)))
                for roi, control, cell in variants:
                    h = _graft(model, mod, act, cell)
                    try:
                        p1 = p_target(model, x[dst:dst + 1], ctx.target)[0]
                    finally:
                        h.remove()
                    out.setdefault((pt, direction, roi, control), []).append(p1 - p0)
    return out


def peer_geometry(ctx, p):
    rois = tuple(p.rois) if p.rois is not None else ctx.rois
    masks = ctx.masks(rois=rois)
    out = []
    for pt in (list(p.points) if p.points is not None else list(ctx.points)):
        mod = block_module(ctx.model, pt)
        acts = []
        h = mod.register_forward_hook(lambda m, i, o, acts=acts: acts.append(o.detach()))
        with torch.no_grad():
            for a in range(0, ctx.n, ctx.cfg.batch_size):
                ctx.model(ctx.x(a, a + ctx.cfg.batch_size))
        h.remove()
        A = torch.cat(acts).double().numpy()
        for i in range(ctx.n):
            g = A[i].reshape(A.shape[1], -1).mean(1)
            pooled = {}
            for r in rois:
                m = torch.from_numpy(masks[r][i].astype(np.float32))[None, None]
                w = nn.functional.adaptive_avg_pool2d(m, A.shape[2:])[0, 0].numpy().ravel()
                if w.sum() > 0:
                    pooled[r] = (A[i].reshape(A.shape[1], -1) * w).sum(1) / w.sum()
            vecs = {"global": g, **pooled}
            for ra, rb in itertools.combinations(vecs, 2):
                u, v = vecs[ra], vecs[rb]
                out.append((i, pt, ra, rb, 1 - u @ v / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-12)))
    return out


def peer_ablation(ctx, p):
    from sklearn.metrics import roc_auc_score, roc_curve

    from audit.run.instruments.ablation import specs

    y = (ctx.labels() == ctx.target).astype(int)
    masks = ctx.masks() if ctx.rois else {}
    x = ctx.x().numpy()
    out = {}
    for spec in ["none", *specs(ctx, p)]:
        probs = []
        for i in range(ctx.n):
            xi = x[i].copy()
            if spec.startswith("no top"):
                k = float(spec.split("top")[1].split("%")[0])
                thr = np.percentile(xi, 100 - k)
                xi[xi >= thr] = 0
            elif spec == "no extracranial":
                xi[:, ~masks["brain"][i]] = 0
            elif spec.startswith("no "):
                xi[:, masks[spec[3:]][i]] = 0
            probs.append(p_target(ctx.model, torch.from_numpy(xi)[None], ctx.target)[0])
        if len(set(y)) == 2:
            out[spec] = (roc_auc_score(y, probs), roc_curve(y, probs))
    return out


def peer_shapley(ctx, p):
    from captum.attr import ShapleyValues

    from audit.run.instruments.shapley import metrics

    model = ctx.model
    x = ctx.x()
    c = x.shape[1]
    fmask = torch.arange(c).reshape(1, c, *([1] * (x.ndim - 2)))  # one feature per contrast (broadcast)
    sv = ShapleyValues(lambda inp: torch.softmax(model(inp), 1))
    out = {}
    n_metrics = len(metrics(ctx, p))  # noqa: F841  (per-case φ does not depend on the value function)
    g = np.random.default_rng(0)
    with torch.no_grad():
        for absent in p.absent:
            phis = []
            for i in range(ctx.n):
                if absent == "zero":
                    base = [torch.zeros_like(x[i:i + 1])]
                elif absent == "mean":
                    base = [x.mean(0, keepdim=True)]
                else:
                    donors = [int(j) for j in g.choice([j for j in range(ctx.n) if j != i], p.n_samples)]
                    base = [x[j:j + 1] for j in donors]
                phi = [sv.attribute(x[i:i + 1], baselines=b, target=ctx.target, feature_mask=fmask,
                                    perturbations_per_eval=16) for b in base]
                phis.append(torch.stack(phi).mean(0)[0, :, 0, 0].numpy())
            out[absent] = np.stack(phis)
    _PHI.clear()
    _PHI.update({k: v.mean(0) for k, v in out.items()})
    return out


_PHI: dict[str, np.ndarray] = {}  # the peer's cohort φ (mean per-case φ), read by peer_truthfulness


def peer_truthfulness(ctx, p):
    from scipy.stats import kendalltau

    from audit.run.instruments.truthfulness import feature_roi

    x = ctx.x()
    dims = [0] + list(range(2, x.ndim))
    low, high = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    roi = ctx.masks()[feature_roi(ctx, p)]
    out = {}
    with torch.no_grad():
        pred = torch.cat([ctx.model(x[a:a + 32]).argmax(1) for a in range(0, ctx.n, 32)]).numpy()
    for m in p.methods:
        maps = []
        for a in range(0, ctx.n, p.rows(ctx)):
            xb = x[a:a + p.rows(ctx)]
            tgt = int(pred[a])  # per-case predicted class: batches of one class at a time below
            if m == "gradcam":
                last = ctx.points[-1]
                mb = np.concatenate([gradcam_maps(ctx.model, xb[i:i + 1], int(pred[a + i]), [last])[last]
                                     for i in range(xb.shape[0])])
            elif m == "lrp":
                mb = np.concatenate([lrp_attr(ctx.model, xb[i:i + 1], int(pred[a + i]), low, high).numpy()
                                     for i in range(xb.shape[0])])
            elif m in ("input_x_gradient", "integrated_gradients"):
                mb = np.concatenate([captum_maps(ctx.model, xb[i:i + 1], int(pred[a + i]), m, {})
                                     for i in range(xb.shape[0])])
            else:
                print(f"  peer truthfulness: no peer for method {m!r}")
                break
            del tgt
            maps.append(mb)
        if not maps:
            continue
        maps = np.concatenate(maps)
        rows = []
        for i in range(ctx.n):
            a = maps[i]
            fp = np.maximum(a, 0)[:, roi[i]].sum() / max(np.maximum(a, 0).sum(), 1e-12)
            imp = np.abs(a).reshape(a.shape[0], -1).sum(1)
            phi = _PHI.get(p.shapley_absent, np.ones(len(imp)))
            tau = kendalltau(imp, phi)[0] if a.shape[0] > 1 else np.nan
            rows.append((fp, tau))
        d = np.concatenate([peer_aupc(ctx.model, x[i:i + 1], int(pred[i]), maps[i:i + 1], p.n_samples, p.steps, i)
                            for i in range(ctx.n)])
        out[m] = (rows, d)
    return out


def peer_predictions(ctx, p):
    rows = []
    for name in [None, *ctx.extra]:
        n = ctx.n if name is None else len(ctx.extra[name])
        for a in range(0, n, ctx.cfg.batch_size):
            b = min(a + ctx.cfg.batch_size, n)
            with torch.no_grad():
                prob = torch.softmax(ctx.model(ctx.x(a, b, name)).double(), 1).numpy()
            for i, cid in enumerate(ctx.case_ids(a, b, name)):
                rows.append({"set": name or "audit", "case_id": cid, "p": prob[i].tolist()})
    return pd.DataFrame(rows)


def peer_verify(ctx, p):
    x = ctx.x(0, min(p.n_cases, ctx.n))
    model, out = ctx.model, []
    for pt in ctx.points:
        mod = block_module(model, pt)
        cap = []
        h = mod.register_forward_hook(lambda m, i, o, cap=cap: cap.append(o))
        with torch.no_grad():
            ref = model(x)
        h.remove()
        h = mod.register_forward_hook(lambda m, i, o, cap=cap: cap[0])
        with torch.no_grad():
            same = model(x)
        h.remove()
        keep = []
        h = mod.register_forward_hook(lambda m, i, o, keep=keep: (o.retain_grad(), keep.append(o))[1])
        y = model(x.clone().requires_grad_(True))
        y.sum().backward()
        h.remove()
        model.zero_grad(set_to_none=True)
        out.append((pt, bool(cap), float((same - ref).abs().max()), keep[0].grad is not None))
    return out


PEERS = {"predictions": peer_predictions, "verify": peer_verify, "gradcam": peer_gradcam, "lrp": peer_lrp,
         "attribution": peer_attribution, "probes": peer_probes, "patching": peer_patching,
         "geometry": peer_geometry, "ablation": peer_ablation, "shapley": peer_shapley,
         "truthfulness": peer_truthfulness}


def run_peer(cfg, ctx, names) -> dict[str, float]:
    params = cfg.instrument_params()
    per = {}
    for name in names:
        if name not in PEERS or name not in params:
            continue
        t0 = time.perf_counter()
        PEERS[name](ctx, params[name])
        per[name] = time.perf_counter() - t0
    return per


# ----------------------------------------------------------------------------- checks
def checks(cfg, ctx, man_out: Path) -> None:
    from probes.attribution import attribute, layer_gradcam, lrp

    x = ctx.x(0, min(4, ctx.n))
    t = ctx.target
    pts = list(ctx.points)
    ours = layer_gradcam(ctx.model, x, t, points=pts)
    peer = gradcam_maps(ctx.model, x, t, pts)
    err = 0.0
    for pt in pts:
        o = ours[pt].detach().double().numpy()
        lo, hi = o.min(axis=(1, 2, 3), keepdims=True), o.max(axis=(1, 2, 3), keepdims=True)
        o = (o - lo) / np.where(hi > lo, hi - lo, 1)
        err = max(err, float(np.abs(o - peer[pt]).max()))
    print(f"check gradcam (min-max per case, {len(pts)} blocks, 4 cases): max |Δ| = {err:.2e}  (tol 1e-4)")
    for m, opts in (("input_x_gradient", {}), ("integrated_gradients", {"n_steps": 32})):
        o = attribute(ctx.model, x, t, m, **opts).maps.detach().numpy()
        q = captum_maps(ctx.model, x, t, m, opts)
        rel = np.abs(o - q).max() / max(np.abs(q).max(), 1e-12)
        print(f"check {m}: max |Δ| / max |a| = {rel:.2e}  (tol 1e-4)")
    xa = ctx.x()
    dims = [0] + list(range(2, xa.ndim))
    low, high = xa.amin(dim=dims, keepdim=True), xa.amax(dim=dims, keepdim=True)
    o = lrp(ctx.model, x, t, low=low, high=high, check=False).maps.detach().numpy().ravel()
    q = lrp_attr(ctx.model, x, t, low, high).numpy().ravel()
    print(f"check lrp (medaudit epsilon_gamma_box vs zennit EpsilonGammaBox: different conv rules): "
          f"Pearson r = {np.corrcoef(o, q)[0, 1]:.4f}")
    loc_path = man_out / "tables" / "gradcam.localisation.parquet"
    if loc_path.exists():
        tab = pd.read_parquet(loc_path)
        last = pts[-1]
        sel = tab[(tab.point == last) & (tab.metric.isin(["iou@95", "relevance_mass"]))]
        rows = peer_localisation(peer[last], {r: m[:4] for r, m in ctx.masks(0, 4).items()}, x.numpy(), 95.0)
        err = 0.0
        ids = ctx.case_ids(0, 4)
        for r in rows:
            if r["roi"] == "all":
                continue
            for metric, key in (("iou@95", "iou"), ("relevance_mass", "mass")):
                v = sel[(sel.case_id == ids[r["case"]]) & (sel.roi == r["roi"]) & (sel.metric == metric)]["value"]
                if len(v) and np.isfinite(v.iloc[0]) and np.isfinite(r[key]):
                    err = max(err, abs(float(v.iloc[0]) - r[key]))
        print(f"check localisation (last block, IoU@95 and relevance mass, 4 cases, audit table vs numpy loop): "
              f"max |Δ| = {err:.2e}  (tol 1e-3; min-max scaling moves IoU ties only)")
