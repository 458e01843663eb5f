"""What a finished run prints under its status line: rounds, privacy, evaluation, results.

A local run (:mod:`flowfed.cli.run`) and a run followed on a server
(:mod:`flowfed.cli.remote`) print the same report from the run's summary.

Example:
    >>> print_report({"rounds": 3, "seconds_per_round": 0.1375})  # doctest: +SKIP
      federated: 3 rounds, 137.5 ms per round
"""

from __future__ import annotations

from typing import Any

from flowfed.cli.common import out
from flowfed.wording import plural


def print_report(summary: dict[str, Any]) -> None:
    """Federated rounds and a per-site / pooled / centralized table, when the run has them."""
    if not summary:
        return
    if summary.get("rounds"):
        spr = summary.get("seconds_per_round")
        out.print(
            f"  federated: {plural(summary['rounds'], 'round')}"
            + (f", {spr * 1000:.1f} ms per round" if spr else "")
            + (f" ({summary['mode']} mode)" if summary.get("mode") else "")
        )
    privacy = summary.get("privacy")
    if privacy:
        out.print(
            f"  differential privacy: ε = {privacy['epsilon']:.4g} at δ = {privacy['delta']:g} "
            f"({privacy['accountant']})"
        )
    evaluation = summary.get("evaluation")
    if evaluation:
        shown = ", ".join(
            f"{k} {v:.4g}" for k, v in evaluation.items() if k != "round" and k != "val_rows"
        )
        out.print(f"  evaluation after round {evaluation['round']}: {shown}")
    for label, metrics in (summary.get("variants") or {}).items():
        out.print(f"  subvariant {label}:")
        print_metrics(metrics)
    print_metrics(summary.get("metrics"))
    model = summary.get("model")
    if model:
        out.print(f"  global model: artifact {model['id']} ({model['name']})")


def print_metrics(metrics: Any) -> None:
    """Per-site, pooled and centralized accuracy and ROC AUC (a pool_metrics report)."""
    if not isinstance(metrics, dict) or "pooled" not in metrics:
        return

    def row(label: str, m: dict[str, Any]) -> str:
        auc = m.get("roc_auc")
        return (
            f"  {label:<24} {m.get('accuracy', float('nan')):>9.4f} "
            f"{'n/a' if auc is None else f'{auc:.4f}':>9} {m.get('rows', ''):>6}"
        )

    out.print(f"  {'':<24} {'accuracy':>9} {'ROC AUC':>9} {'rows':>6}")
    for site, m in (metrics.get("sites") or {}).items():
        out.print(row(site, m))
    out.print(row("pooled (federated)", metrics["pooled"]))
    if "centralized" in metrics:
        out.print(row("centralized reference", metrics["centralized"]))
        gap = metrics.get("gap", {}).get("accuracy")
        if gap is not None:
            out.print(f"  federated - centralized accuracy: {gap * 100:+.2f} points")
