"""A router that sends each image to one of K fixed architectures, fitted on the search split and
judged on the test split against the static frontier of single architectures.

    python benchmarks/bench_router.py --out runs/router
    python benchmarks/bench_router.py --budgets-ms 0.372 0.279 --k 6 --epochs 8 --out runs/router
    python benchmarks/bench_router.py --search-limit 300 --test-limit 300 --epochs 1 --out runs/router_smoke

Candidates: the 18 probe masks of ``instanas_gym.space.family.probe_masks(table, seed=0)`` and
``--extra-candidates`` masks of ``instanas_gym.space.masks.spread_masks`` (seeded by ``--seed``). On
the search split, ``instanas_gym.judge.routing.fit_router`` scores them on a held-out 20% of the
images, chooses a family of at most ``--k`` (``select_family``: the most accurate, the fastest
within 20 points of it, the fastest, then greedily the members that most raise the label-reading
oracle's utility averaged over a ladder of latency prices), trains a router with the controller's
body (``--widths``, ``--input-size``: by default the demo controller's 0.65-MMAC size) on the other
80% to predict each member's correctness, and per budget picks the latency price at which routing
meets it on the held-out images. The family and the router do not depend on the budget: they are
fitted once, and each budget only sets a price.

Budgets (``--budgets-ms``, default the MobileNetV2 path's table ms and 0.75 x that) are end to end:
the router's own median ms at batch 1, in the latency table's runtime and thread count, is taken off
before the network's budget is met (``--network-budgets``: the budgets are the network's alone).

On the test split, per budget: ``instanas_gym.judge.awareness.instance_awareness`` with the
probe masks as references and the router's ms as the controller's: test accuracy, end-to-end ms,
distinct architectures, the gain over the static frontier (points at equal latency, % latency at
equal accuracy), mutual information of the choice with class and difficulty beside their
label-shuffled nulls, and the oracle over the family. The test split is read only after fitting.

Writes to ``--out``: report.json (settings, the fit's search-split figures, per budget the price,
the held-out routing figures and the test figures) and per budget a folder budget_<ms>ms/ holding
what ``instance_aware.judge_instance_awareness`` writes (instance_aware.json with every figure and
per-image array, instance_aware.png, hardest_easiest.png) and the router (router.pt, for
``instanas_gym.agents.router.load_router``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from instanas_gym.agents.config import ControllerConfig
from instanas_gym.agents.router import Router, price_for_budget, router_latency_ms, router_policy
from instanas_gym.agents.router_file import save_router
from instanas_gym.envs.bandit import InstaNASBandit
from instanas_gym.judge.awareness import jsonable, judge_instance_awareness, summary_lines
from instanas_gym.judge.routing import fit_router, routing_figures
from instanas_gym.space.family import probe_masks
from instanas_gym.space.masks import mobilenetv2_mask, spread_masks

#: The test report's figures copied into report.json (the per-image arrays stay in instance_aware.json).
SUMMARY_KEYS = ("images", "accuracy", "network_ms", "controller_ms", "e2e_ms", "distinct_archs", "arch_share", "gain",
                "mi_class_bits", "mi_class_null_bits", "mi_difficulty_bits", "mi_difficulty_null_bits",
                "family_names", "family_latency_ms", "family_accuracy")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--data-root", default=None, help="data folder (default: the environment's)")
    p.add_argument("--supernet", default=None, help="checkpoint (default: the environment's)")
    p.add_argument("--latency-table", default=None, help="latency table JSON (default: the environment's)")
    p.add_argument("--search-split", default="search", help="the split to fit on (never the test split)")
    p.add_argument("--budgets-ms", type=float, nargs="+", default=None,
                   help="end-to-end latency budgets, ms (default: the MobileNetV2 path's table ms and 0.75x)")
    p.add_argument("--network-budgets", action="store_true", help="the budgets are the network's alone")
    p.add_argument("--extra-candidates", type=int, default=14, help="spread masks added to the 18 probes")
    p.add_argument("--k", type=int, default=6, help="most architectures in the family")
    p.add_argument("--margin", type=float, default=0.2, help="the cheap anchor's accuracy margin (fraction)")
    p.add_argument("--anchors", choices=["accuracy", "frontier"], default="accuracy",
                   help="the family's first members: best, cheap anchor, fastest; or the candidates' static frontier")
    p.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32], help="the router body's stage channels")
    p.add_argument("--input-size", type=int, default=14, help="side the router resizes images to (0: as they come)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--holdout", type=float, default=0.2, help="share of the search images held out")
    p.add_argument("--augment", action="store_true", help="augment the router's training batches")
    p.add_argument("--search-limit", type=int, default=None, help="fit on the first N search images only")
    p.add_argument("--test-limit", type=int, default=None, help="judge on the first N test images only")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/router", help="folder for report.json, plots and routers")
    return p.parse_args(argv)


def print_table(rows: list[dict]) -> None:
    """One line per budget, 80 columns."""
    print(f"{'budget':>7} {'acc %':>6} {'e2e':>6} {'archs':>5} {'gain pt':>7} {'gain %':>6} "
          f"{'MI cls':>11} {'MI diff':>11} {'oracle':>13}")
    for r in rows:
        t = r["test"]
        print(f"{r['budget_ms']:7.3f} {100 * t['accuracy']:6.2f} {t['e2e_ms']:6.3f} {t['distinct_archs']:5d} "
              f"{t['gain']['points']:+7.2f} {t['gain']['latency_pct']:+6.1f} "
              f"{t['mi_class_bits']:5.3f}/{t['mi_class_null_bits']:5.3f} "
              f"{t['mi_difficulty_bits']:5.3f}/{t['mi_difficulty_null_bits']:5.3f} "
              f"{100 * t['oracle']['accuracy']:5.1f}@{t['oracle']['latency_ms']:.3f}")
    print("budget, e2e: ms (table, batch 1, router included); gain: points at equal latency, % latency")
    print("at equal accuracy, over the static frontier; MI: bits / label-shuffled null; oracle: % @ ms")


def main(argv: list[str] | None = None) -> dict:
    a = parse(argv)
    if a.search_split == "test":
        raise SystemExit("--search-split must not be the test split: the router is judged there")
    start = time.perf_counter()
    search = InstaNASBandit(a.dataset, split=a.search_split, data_root=a.data_root, supernet=a.supernet,
                            latency_table=a.latency_table, threads=a.threads)
    table, shape = search.table, search.data.spec.image_shape
    names, probes = zip(*probe_masks(table, seed=0))
    probes = np.stack(probes)
    extra = spread_masks(np.random.default_rng(a.seed), a.extra_candidates) if a.extra_candidates else probes[:0]
    candidates = np.concatenate([probes, extra])
    cand_names = [*names, *(f"spread_{i}" for i in range(len(extra)))]
    config = ControllerConfig(tuple(a.widths), a.input_size or None)
    runtime, threads = table.meta.get("runtime", "torch"), int(table.meta.get("threads", 1))
    router_ms = router_latency_ms(Router(config, shape[2], a.k), shape, runtime, threads)  # weights do not matter
    mbv2_ms = float(table.network_ms(mobilenetv2_mask()))
    budgets = a.budgets_ms or [mbv2_ms, 0.75 * mbv2_ms]
    network = [b if a.network_budgets else b - router_ms for b in budgets]
    print(f"router: {a.widths} channels at {a.input_size or 'full'} px, {router_ms:.3f} ms in {runtime} "
          f"({threads} thread); MobileNetV2 path {mbv2_ms:.3f} ms; {len(candidates)} candidates", flush=True)

    router, family, lat, price, fit = fit_router(
        search, candidates, a.k, max(network), config, a.epochs, a.lr, a.batch_size, a.holdout, a.seed, a.margin,
        a.augment, a.search_limit, log=lambda msg: print(f"  {msg}", flush=True), anchors=a.anchors)
    fam_names = [cand_names[i] for i in fit["family"]]
    print(f"family of {len(lat)}, on {len(fit['holdout_index'])} held-out search images (auc: the router's ranking):")
    for name, ms, acc, auc in zip(fam_names, lat, fit["family_accuracy"], fit["auc"]):
        print(f"  {name:<20} {ms:6.3f} ms {100 * acc:6.2f}%  auc {auc:.3f}")
    print(f"fitted in {time.perf_counter() - start:.0f} s", flush=True)

    test = InstaNASBandit(a.dataset, split="test", data_root=a.data_root, supernet=a.supernet,
                          latency_table=a.latency_table, threads=a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for budget, net_budget in zip(budgets, network):
        tag = f"{budget:.3f}ms"
        try:
            price = price_for_budget(fit["holdout_probs"], lat, net_budget)
        except ValueError as err:
            print(f"budget {budget:.3f} ms: skipped ({err})")
            continue
        held = routing_figures(fit["holdout_probs"], fit["holdout_correct"], lat, price)
        what = f"router, budget {budget:.3f} ms end to end ({net_budget:.3f} ms network), price {price:.4f}/ms"
        report = judge_instance_awareness(router_policy(router, family, lat, price), test, router_ms,
                                          out / f"budget_{tag}", what, a.test_limit)
        save_router(router, out / f"budget_{tag}" / "router.pt", family, lat, price, budget_ms=budget,
                    network_budget_ms=net_budget, router_ms=router_ms, family_names=fam_names, runtime=runtime)
        print()
        print("\n".join(summary_lines(report)))
        print(f"held-out search images: {100 * held['accuracy']:.2f}% at {held['latency_ms']:.3f} ms network, "
              f"{held['gain']['points']:+.2f} points over the family's frontier")
        summary = {key: report[key] for key in SUMMARY_KEYS}
        summary["oracle"] = {key: report["oracle"][key] for key in ("accuracy", "latency_ms")}
        rows.append({"budget_ms": budget, "network_budget_ms": net_budget, "price_per_ms": price,
                     "holdout": held, "test": summary})
    print()
    print_table(rows)
    per_budget = ("holdout_probs", "holdout_correct", "budget_ms", "price_per_ms", "routed", "routed_ms_search")
    fit_json = {k: v for k, v in fit.items() if k not in per_budget}  # the per-budget figures are in "budgets"
    result = {"settings": vars(a), "router_ms": router_ms, "runtime": runtime, "mobilenetv2_ms": mbv2_ms,
              "candidate_names": cand_names, "family_names": fam_names, "family_masks": family, "fit": fit_json,
              "budgets": rows}
    (out / "report.json").write_text(json.dumps(jsonable(result)))
    print(f"wrote {out}/report.json and budget_*/ ({time.perf_counter() - start:.0f} s)")
    return result


if __name__ == "__main__":
    main()
