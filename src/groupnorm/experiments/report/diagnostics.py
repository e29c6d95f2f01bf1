"""How much do BN's batch statistics depend on which images are in the batch? (a diagnostic for Table 2)

For each BN layer of a trained model, on ``n`` validation images, the share of a channel's variance that is
*between* images (the variance over images of the per-image channel mean, divided by the channel's total variance),
averaged over channels::

    rho_c = Var_n( mean_{h,w} x[n, c, h, w] ) / Var_{n,h,w}( x[n, c, h, w] )

The mean that BN computes over b images then deviates from the population mean by about ``sqrt(rho / b)``
standard deviations (ignoring the within-image part, which S = H*W positions average away). Small rho means that
even 2 images per worker estimate BN's statistics well, so BN cannot degrade much at small batches.

    python -m groupnorm.experiments.report.diagnostics OUT [--data-dir DIR] [--images 1000]
"""
from __future__ import annotations

import argparse
import json
import os

import torch

from .. import store
from ..protocol import RunConfig
from ..data import DataSpec, add_data_arguments, as_spec, load_data, spec_from_args
from ..training import build_run_model


def between_image_share(out: str, key: str, data: DataSpec | str | None = None, images: int = 1000) -> list[tuple]:
    """[(channels, height, width, rho)] for each BN layer of run ``key`` in ``out`` (its saved ``model.pt``)."""
    rdir = store.run_dir(out, key)
    with open(os.path.join(rdir, "config.json")) as f:
        cfg = RunConfig.from_json({k: v for k, v in json.load(f).items() if k != "key"})
    _, val = load_data(as_spec(data), cfg.train_size, images)
    model = build_run_model(cfg, info=val.info)
    model.load_state_dict(torch.load(os.path.join(rdir, "model.pt"), map_location="cpu", weights_only=True))
    model.eval()
    rows = []

    def hook(mod, inp, outp):
        x = inp[0].double()
        rho = (x.mean(dim=(2, 3)).var(dim=0) / x.var(dim=(0, 2, 3)).clamp_min(1e-12)).mean().item()
        rows.append((x.shape[1], x.shape[2], x.shape[3], rho))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            model(torch.cat([x for x, _ in val.eval_batches(len(val))]))
    finally:
        for h in handles:
            h.remove()
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m groupnorm.experiments.report.diagnostics", description=__doc__.split("\n")[0])
    p.add_argument("out")
    add_data_arguments(p)
    p.add_argument("--images", type=int, default=1000)
    args = p.parse_args(argv)
    for r in store.read_results(args.out):
        if r["norm"] != "bn":
            continue
        layers = between_image_share(args.out, r["config_key"], spec_from_args(args), args.images)
        rhos = [x[3] for x in layers]
        print(f"BN b={r['batch_per_worker']} seed {r['seed']}: rho per layer "
              + " ".join(f"{c}ch/{h}x{w}:{rho:.2f}" for c, h, w, rho in layers)
              + f" | mean {sum(rhos) / len(rhos):.3f}; 2-image mean error ~ {(sum(rhos) / len(rhos) / 2) ** 0.5:.2f} std")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
