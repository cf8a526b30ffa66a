"""Judging whether a per-image policy is instance-aware, against the right null.

A policy that picks an architecture per image spends its accuracy and latency as a mixture of single
architectures. Sending each image to architecture A with probability q and to B otherwise, with no
look at the image, lands in expectation exactly on the straight line between A and B in (latency,
accuracy). The null a policy must beat is therefore the *static frontier*: the upper concave
envelope of the single architectures, not just their Pareto points. A policy above it at its
end-to-end latency (controller included) gains something only reading the image can give.

Beside the gain: how much the chosen architecture says about the image's class and difficulty
(mutual information, in bits, with a label-shuffling null beside it), and the oracle that reads the
labels, the ceiling of any per-image choice within the family.

Units: latency in ms (batch 1, by the latency table), accuracy as a fraction (0-1); the gain is in
percentage points and percent of latency, as reports display it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from instanas_gym.agents.policy import Policy, SavedPolicy
from instanas_gym.agents.router import router_latency_ms
from instanas_gym.agents.router_file import SavedRouter
from instanas_gym.envs.bandit import InstaNASBandit
from instanas_gym.envs.config import EnvConfig, JudgeConfig
from instanas_gym.judge.evaluation import clock_against_table
from instanas_gym.judge.frontier import frontier_accuracy, gain_over_frontier, oracle, static_frontier
from instanas_gym.judge.information import (
    conditional_mutual_information_bits,
    difficulty_bins,
    mutual_information_bits,
    permutation_cmi_bits,
    permutation_mi_bits,
)
from instanas_gym.judge.plots import hardest_easiest_plot, instance_aware_plot
from instanas_gym.latency.onnx import controller_latency_ms
from instanas_gym.model.outcomes import OutcomeStore
from instanas_gym.space.family import probe_masks
from instanas_gym.space.masks import validate_mask
from instanas_gym.utils.checks import check_int
from instanas_gym.utils.display import results_table
from instanas_gym.utils.files import atomic_write_json
from instanas_gym.utils.run import RunConfig


def random_mixture_policy(mask_a: np.ndarray, mask_b: np.ndarray, share_a: float = 0.5, seed: int = 0) -> Policy:
    """The null policy: each image to ``mask_a`` with probability ``share_a``, else to ``mask_b``,
    without a look at the image. In expectation it lies on the chord between the two architectures."""
    a, b = validate_mask(mask_a), validate_mask(mask_b)
    rng = np.random.default_rng(seed)
    return lambda images: np.where((rng.random(len(images)) < share_a)[:, None, None], a, b)


# ---- the measurement ------------------------------------------------------------------------------
def _run_policy(policy: Policy, bandit: InstaNASBandit, n: int, batch_size: int) -> dict[str, np.ndarray]:
    """The policy's masks (n, 17, 5) on the first n images, and whether each is right and its network ms."""
    masks, correct, network_ms = [], [], []
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        m = validate_mask(policy(bandit.data.images[idx]), batched=True, name="the policy's masks")
        out = bandit.evaluate(idx, m)
        masks.append(m)
        correct.append(out["correct"])
        network_ms.append(out["network_latency_ms"])
    return {"masks": np.concatenate(masks), "correct": np.concatenate(correct), "network_ms": np.concatenate(network_ms)}


def _family(bandit: InstaNASBandit, reference_masks: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct effective masks (K, 17, 5) of the references then of the policy's choices, in
    order of first appearance, and each image's index into them."""
    refs = validate_mask(reference_masks, batched=True, name="reference_masks")
    eff = bandit.model.space.effective_mask(np.concatenate([refs, chosen])).astype(np.uint8)
    index: dict[bytes, int] = {}
    ids = np.array([index.setdefault(m.tobytes(), len(index)) for m in eff], dtype=np.int64)
    family = eff[np.sort(np.unique(ids, return_index=True)[1])]
    return family, ids[len(refs):]


def _scored(arch: np.ndarray, references: int, members: int, own_limit: int | None) -> np.ndarray:
    """Family indices to score: every member, or the references and the ``own_limit`` members the
    images of ``arch`` use most (ties: lower index first), in index order."""
    if own_limit is None:
        return np.arange(members)
    own = np.bincount(arch, minlength=members)[references:]
    top = references + np.argsort(-own, kind="stable")[:own_limit]
    return np.sort(np.concatenate([np.arange(references), top[own[top - references] > 0]]))


def _information(arch: np.ndarray, labels: np.ndarray, difficulty: np.ndarray) -> dict[str, float]:
    """What the chosen architecture says about the class and the difficulty, with shuffling nulls (bits)."""
    return {
        "mi_class_bits": mutual_information_bits(arch, labels),
        "mi_class_null_bits": permutation_mi_bits(arch, labels),
        "mi_difficulty_bits": mutual_information_bits(arch, difficulty),
        "mi_difficulty_null_bits": permutation_mi_bits(arch, difficulty),
        "cmi_difficulty_class_bits": conditional_mutual_information_bits(arch, difficulty, labels),
        "cmi_difficulty_class_null_bits": permutation_cmi_bits(arch, difficulty, labels),
    }


def instance_awareness(
    policy: Policy,
    bandit: InstaNASBandit,
    reference_masks: np.ndarray,
    controller_ms: float = 0.0,
    limit: int | None = None,
    batch_size: int = 500,
    own_limit: int | None = None,
    store: OutcomeStore | None = None,
) -> dict[str, Any]:
    """Judge ``policy`` (uint8 images (B, H, W, C) -> masks (B, 17, 5)) on the bandit's split (the
    first ``limit`` images when given) against the static frontier of its family: the reference
    masks (R, 17, 5) and every distinct architecture it uses, each run alone on all those images and
    placed at its table latency (whole network, batch 1, ms). Single architectures' answers come from
    ``store`` (default: the bandit's :meth:`~instanas_gym.envs.bandit.InstaNASBandit.outcome_store`),
    which runs those it does not hold yet.

    Returns a dict: ``images``; ``accuracy`` (fraction); ``network_ms``, ``controller_ms``, ``e2e_ms``
    (their sum) in ms; ``distinct_archs``, ``archs_2pct`` (those serving at least 2% of the images),
    ``arch_index`` and ``arch_share`` (family index and the fraction of images each used
    architecture serves, most used first); ``frontier`` (``latency_ms``, ``accuracy`` of its
    vertices); ``gain`` (:func:`~instanas_gym.judge.frontier.gain_over_frontier` at ``e2e_ms``);
    ``mi_class_bits``, ``mi_difficulty_bits`` and their label-shuffling nulls; ``cmi_difficulty_class_bits``,
    what the choice says about the difficulty beyond the class (I(arch; difficulty | class)), and its
    null (the difficulty shuffled within each class); ``oracle`` over the family; ``references`` (R);
    per family member ``family_masks`` (effective masks, uint8), ``family_latency_ms``,
    ``family_accuracy``; per image ``arch`` (family index), ``labels``, ``loss`` (all-ops
    cross-entropy, nats) and ``difficulty`` (its quintile, 0 = easiest).

    ``own_limit``: score only the references and the policy's ``own_limit`` most used architectures
    (ties: first used first), e.g. for a policy with a different mask per image; the others keep
    their family index but get accuracy nan and are left out of the frontier and of the oracle
    (whose ``choice`` then indexes the scored members, in family order). None (default): score all.
    """
    n = bandit.num_images if limit is None else min(limit, bandit.num_images)
    check_int("own_limit", own_limit, minimum=0, optional=True)
    store = store or bandit.outcome_store()
    run = _run_policy(policy, bandit, n, batch_size)
    family, arch = _family(bandit, reference_masks, run["masks"])
    scored = _scored(arch, len(reference_masks), len(family), own_limit)
    correct = store.get(family[scored], n).correct
    latency = np.asarray(bandit.table.network_ms(family), dtype=np.float64).reshape(len(family))
    family_accuracy = np.full(len(family), np.nan)
    family_accuracy[scored] = correct.mean(1)
    return _report(run, arch, family, latency, family_accuracy, scored, correct, store.loss(n),
                   bandit.data.labels[:n], float(controller_ms), len(reference_masks))


def _report(run: dict[str, np.ndarray], arch: np.ndarray, family: np.ndarray, latency: np.ndarray,
            family_accuracy: np.ndarray, scored: np.ndarray, correct: np.ndarray, loss: np.ndarray,
            labels: np.ndarray, controller_ms: float, references: int) -> dict[str, Any]:
    """:func:`instance_awareness`'s dict from the policy's run and its family's scores."""
    n = len(arch)
    accuracy, network_ms = float(run["correct"].mean()), float(run["network_ms"].mean())
    frontier = static_frontier(latency[scored], family_accuracy[scored])
    difficulty = difficulty_bins(loss)
    used, counts = np.unique(arch, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return {
        "images": n, "accuracy": accuracy, "network_ms": network_ms, "controller_ms": controller_ms,
        "e2e_ms": network_ms + controller_ms, "distinct_archs": len(used),
        "archs_2pct": int(np.sum(counts >= 0.02 * n)),
        "arch_index": used[order], "arch_share": counts[order] / n,
        "frontier": {"latency_ms": frontier[0], "accuracy": frontier[1]},
        "gain": gain_over_frontier(frontier, network_ms + controller_ms, accuracy),
        **_information(arch, labels, difficulty),
        "oracle": oracle(correct, latency[scored]), "references": references,
        "family_masks": family, "family_latency_ms": latency, "family_accuracy": family_accuracy,
        "arch": arch, "labels": labels, "loss": loss, "difficulty": difficulty,
    }


# ---- reports -------------------------------------------------------------------------------------
def family_names(bandit: InstaNASBandit, names: tuple[str, ...], probes: np.ndarray, family: np.ndarray) -> list[str]:
    """A name per family member: the first probe of that effective mask, else ``policy_<k>`` in order."""
    eff = bandit.model.space.effective_mask(probes)
    out, k = [], 0
    for member in family.astype(bool):
        hit = [n for n, e in zip(names, eff) if (e == member).all()]
        out.append(hit[0] if hit else f"policy_{k}")
        k += not hit
    return out


def jsonable(value: Any) -> Any:
    """``value`` with numpy arrays and scalars as lists and Python numbers (nan as None)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and np.isnan(value) else value


def judge_instance_awareness(
    policy: Policy, bandit: InstaNASBandit, controller_ms: float, out: str | Path, what: str = "policy",
    limit: int | None = None, own_limit: int | None = None, measure: int = 0,
) -> dict[str, Any]:
    """:func:`instance_awareness` against the 18 probe architectures of
    :func:`~instanas_gym.space.family.probe_masks` (seed 0, by ``bandit``'s table) plus the policy's own,
    written to ``out``: ``instance_aware.json`` (every figure and array), ``instance_aware.png`` (the
    frontier plot) and ``hardest_easiest.png`` (the easiest and hardest images by the all-ops loss,
    with the architecture each got). ``own_limit``: as for :func:`instance_awareness`. With ``measure`` > 0,
    ``clock`` compares the networks of the first ``measure`` images on the clock with the table
    (:func:`~instanas_gym.judge.evaluation.clock_against_table`). Returns the report.

    Single architectures' answers come from the supernet's outcomes file (the bundled supernet ships
    the probes' and its family's on the test split); those it lacks are computed and added."""
    names, masks = zip(*probe_masks(bandit.table, seed=0))
    refs = np.stack(masks)
    report = instance_awareness(policy, bandit, refs, controller_ms=controller_ms, limit=limit, own_limit=own_limit)
    report["family_names"] = family_names(bandit, names, refs, report["family_masks"])
    report["policy"] = what
    if measure:
        arch = np.asarray(report["arch"][:measure])
        report["clock"] = clock_against_table(bandit, np.asarray(report["family_masks"])[arch],
                                              np.asarray(report["family_latency_ms"])[arch])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "instance_aware.json", jsonable(report))
    instance_aware_plot(report, out / "instance_aware.png")
    hardest_easiest_plot(bandit.data.images[: report["images"]], report["loss"], report["arch"], report["labels"],
                         out / "hardest_easiest.png")
    return report


def summary_lines(r: dict[str, Any]) -> list[str]:
    """The figures of a :func:`judge_instance_awareness` report that answer the question, <= 80 columns."""
    gain, oracle_ = r["gain"], r["oracle"]
    return [
        f"{r['policy']}"[:80],
        (f"{r['images']} images, family of {len(r['family_latency_ms'])} architectures "
         f"({r['references']} probes + the policy's)"),
        (f"accuracy {100 * r['accuracy']:.2f}%, e2e {r['e2e_ms']:.3f} ms (network {r['network_ms']:.3f} "
         f"+ controller {r['controller_ms']:.3f})"),
        (f"distinct architectures {r['distinct_archs']} ({r['archs_2pct']} serve >= 2%), most used serves "
         f"{100 * r['arch_share'][0]:.1f}% of the images"),
        (f"gain over the static frontier: {gain['points']:+.2f} points at equal latency, "
         f"{gain['latency_pct']:+.1f}% latency"),
        f"MI(arch; class)      {r['mi_class_bits']:.3f} bits (labels shuffled: {r['mi_class_null_bits']:.3f})",
        f"MI(arch; difficulty) {r['mi_difficulty_bits']:.3f} bits (shuffled: {r['mi_difficulty_null_bits']:.3f})",
        (f"MI(arch; difficulty | class) {r['cmi_difficulty_class_bits']:.3f} bits (shuffled within classes: "
         f"{r['cmi_difficulty_class_null_bits']:.3f})"),
        f"oracle over the family (reads the labels): {100 * oracle_['accuracy']:.2f}% at {oracle_['latency_ms']:.3f} ms",
    ]


def frontier_results(r: dict[str, Any]) -> dict[str, dict[str, float]]:
    """A :func:`judge_instance_awareness` report as rows of a results table
    (:func:`~instanas_gym.utils.display.results_table`): the policy at its end-to-end latency; the static
    frontier at that latency (a random per-image mixture of its two neighbouring vertices); the most
    accurate single architecture of the family whose latency is at most the policy's (the best it
    could deploy alone in that time), the MobileNetV2 path and the label-reading oracle. Latency: the
    whole network by the table (``network_latency_ms``) and end to end (``e2e_ms``, the policy's
    controller included), in ms."""
    lat, acc = np.asarray(r["family_latency_ms"], np.float64), np.asarray(r["family_accuracy"], np.float64)
    names = r.get("family_names") or [f"architecture {k}" for k in range(len(lat))]
    e2e = float(r["e2e_ms"])

    def single(k: int) -> dict[str, float]:  # architecture k alone on every image
        return {"accuracy": float(acc[k]), "network_latency_ms": float(lat[k]), "e2e_ms": float(lat[k]),
                "distinct_archs": 1, "archs_2pct": 1, "top_share": 1.0}

    rows: dict[str, dict[str, float]] = {r["policy"]: {
        "accuracy": r["accuracy"], "network_latency_ms": r["network_ms"], "e2e_ms": e2e,
        "distinct_archs": r["distinct_archs"], "archs_2pct": r["archs_2pct"], "top_share": float(r["arch_share"][0]),
        "gain_points": r["gain"]["points"], "gain_latency_pct": r["gain"]["latency_pct"],
        "mi_class_bits": r["mi_class_bits"], "mi_difficulty_bits": r["mi_difficulty_bits"],
        "cmi_difficulty_class_bits": r["cmi_difficulty_class_bits"],
    }}
    frontier = (np.asarray(r["frontier"]["latency_ms"]), np.asarray(r["frontier"]["accuracy"]))
    rows["static frontier at that latency"] = {"accuracy": float(frontier_accuracy(frontier, e2e)),
                                               "network_latency_ms": e2e, "e2e_ms": e2e}
    fits = np.flatnonzero(np.isfinite(acc) & (lat <= e2e))
    if len(fits):
        k = int(fits[np.argmax(acc[fits])])
        rows[f"best single within it ({names[k]})"] = single(k)
    if "mobilenetv2" in names:
        k = names.index("mobilenetv2")
        rows["MobileNetV2 path"] = single(k)
    o = r["oracle"]
    rows["oracle (reads the labels)"] = {"accuracy": o["accuracy"], "network_latency_ms": o["latency_ms"]}
    return rows


def judge_policy(saved: SavedPolicy | SavedRouter, env: EnvConfig, out: str | Path, run: RunConfig | None = None,
                 judge: JudgeConfig | None = None) -> dict[str, Any]:
    """A policy file's greedy choices (a REINFORCE policy, or a router's routed ones) judged on ``env``'s
    test split against the static frontier (:func:`judge_instance_awareness`, written to ``out``); its
    network timed in the latency table's runtime and counted in the end-to-end latency; ``judge``: the test
    images judged, the policy's own architectures scored and the images timed on the clock."""
    judge = judge or JudgeConfig()
    bandit = env.bandit("test", run)
    meta = bandit.table.meta
    runtime, threads, shape = meta.get("runtime", "torch"), bandit.table.threads, bandit.data.spec.image_shape
    if isinstance(saved, SavedRouter):
        ms = router_latency_ms(saved.router, shape, runtime, threads, latency_ms=saved.latency_ms,
                               price_per_ms=saved.price_per_ms)
        what = "router"
    elif saved.view == "masks":
        ms = controller_latency_ms(saved.network, shape, runtime, threads)
        what = "REINFORCE (masks)"
    else:
        ms = router_latency_ms(saved.network, shape, runtime, threads, latency_ms=saved.family.network_ms(bandit.table))
        what = "REINFORCE (family)"
    return judge_instance_awareness(saved.policy(), bandit, ms, out, what, judge.limit, judge.own_archs, judge.measure)


def print_judgement(report: dict[str, Any], title: str, out: str | Path, console: Console) -> None:
    """A :func:`judge_instance_awareness` report as the frontier table, the architectures used and the nulls."""
    console.print(results_table(frontier_results(report), title))
    names = report["family_names"]
    console.print("architectures used: " + ", ".join(
        f"{names[k]} {100 * share:.1f}%" for k, share in zip(report["arch_index"][:8], report["arch_share"][:8])))
    print_clock(report, console)
    console.print(f"labels shuffled: MI cls {report['mi_class_null_bits']:.3f}, MI dif "
                  f"{report['mi_difficulty_null_bits']:.3f}, MI dif|cls {report['cmi_difficulty_class_null_bits']:.3f} "
                  f"(shuffled within classes) bits; the frontier: {report['references']} probes and the "
                  f"policy's architectures, each alone; plots and figures in {out}/instance_aware.*")


def print_clock(report: dict[str, Any], console: Console) -> None:
    """The report's clock check (``clock``), when it has one, as one line."""
    c = report.get("clock")
    if c:
        console.print(f"on the clock: {c['clock_ms']:.3f} ms per image for the networks of the first {c['images']} "
                      f"test images, against {c['table_ms']:.3f} ms by the latency table (ratio {c['ratio']:.2f})")
