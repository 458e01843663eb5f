"""``flowfed.package_model``: a trained model, its metrics and lineage as one file.

Typed ``data-transformation``: the bundle re-arranges artifacts that already exist (the
model's weights, the evaluation's metrics, the catalog identities of both and of the
training data) into one distributable file, which is seed 001's "structural operation".
It is not ``evaluation`` (it computes no metric, and evaluation tools produce metrics
only), and not ``analysis`` (nothing is trained; the bundle is a file, not a new version
of a trainable model).
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from flowfed.tools import Context, Lazy, tool
from flowfed.tools.library._common import identity, resolve
from flowfed.tools.library.evaluation import REPORTED

#: The default of the optional ``train`` input. Annotated ``Lazy | None`` the input would be
#: loaded (flowfed recognizes a bare ``Lazy`` annotation only), and reading a whole
#: training table just to name it is the cost ``Lazy`` exists to avoid.
_NO_INPUT: Any = None

#: Fixed zip entry metadata: the same inputs give the same bytes, hence the same hash.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, on every platform: same bytes everywhere
            info.external_attr = 0o644 << 16
            zf.writestr(info, files[name])
    return buf.getvalue()


def _artifact_line(label: str, ident: dict[str, Any] | None) -> str:
    if ident is None:
        return f"- {label}: passed in directly (no catalog identity)"
    version = f":{ident['version']}" if ident.get("version") is not None else ""
    rows = f", {ident['rows']} rows" if ident.get("rows") is not None else ""
    return f"- {label}: artifact `{ident['name']}{version}`, sha256 `{ident['sha256']}`{rows}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "n/a" if value is None else str(value)


def _sig(value: Any) -> str:
    """Four significant digits: δ is 1e-05, not 0.0000."""
    return f"{value:.4g}" if isinstance(value, float) else _fmt(value)


def _card(
    *,
    name: str,
    description: str,
    model: Any,
    metrics: dict[str, Any],
    lineage: dict[str, Any],
    intended_use: str,
    limitations: str,
    files: dict[str, str],
) -> str:
    cls = type(model)
    features = list(getattr(model, "features", []) or [])
    lines = [f"# Model card: {name}", ""]
    if description:
        lines += [description, ""]
    lines += [
        "## Model",
        "",
        f"- class: `{cls.__module__}.{cls.__qualname__}`",
        f"- target: `{getattr(model, 'target', 'n/a')}`",
        f"- features ({len(features)}): " + ", ".join(f"`{f}`" for f in features),
    ]
    training = getattr(model, "training", None)
    if isinstance(training, dict) and training:
        flat = {k: v for k, v in training.items() if not isinstance(v, dict | list)}
        lines.append("- training: " + ", ".join(f"{k}={_fmt(v)}" for k, v in flat.items()))
        if training.get("federated"):
            lines += _federated_lines(training)
    lines += ["", "## Data provenance", ""]
    sources = lineage["data_sources"]
    if sources:
        lines += [f"- source: {s}" for s in sources]
    else:
        # Said outright: a card must not look as if it recorded provenance it does not have.
        lines.append("- source: not recorded (set `data_sources` on the packaging step)")
    lines.append(_artifact_line("training data", lineage["train"]))
    lines.append(_artifact_line("model", lineage["model"]))
    lines.append(_artifact_line("metrics", lineage["metrics"]))
    run = lineage["run"]
    if run.get("run_id"):
        lines.append(
            f"- packaged by run `{run['run_id']}`, step `{run['step']}`, node `{run['node']}`"
            " (`flowfed lineage` on the artifacts above shows their full history)"
        )
    lines += ["", "## Evaluation", "", "| metric | value |", "|---|---|"]
    for key in ("rows", *REPORTED):
        if key in metrics:
            lines.append(f"| {key} | {_fmt(metrics[key])} |")
    cm = metrics.get("confusion_matrix")
    if isinstance(cm, dict) and {"tp", "fp", "tn", "fn"} <= set(cm):
        lines += [
            "",
            "Confusion matrix (rows: actual, columns: predicted):",
            "",
            "| | predicted 0 | predicted 1 |",
            "|---|---|---|",
            f"| actual 0 | {cm['tn']} | {cm['fp']} |",
            f"| actual 1 | {cm['fn']} | {cm['tp']} |",
        ]
    lines += ["", "## Intended use", "", intended_use or "Not stated.", ""]
    lines += ["## Limitations", "", limitations or "Not stated.", ""]
    lines += ["## Files", "", "| file | sha256 |", "|---|---|"]
    lines += [f"| `{f}` | `{h}` |" for f, h in sorted(files.items())]
    return "\n".join(lines) + "\n"


def _federated_lines(training: dict[str, Any]) -> list[str]:
    """The card's account of a federated model: how it was trained, and its privacy."""
    config = training.get("strategy_config") or {}
    settings = ", ".join(f"{k}={_fmt(v)}" for k, v in config.items())
    lines = [
        "",
        "## Federated training",
        "",
        f"- strategy: {training.get('strategy')}" + (f" ({settings})" if settings else ""),
        f"- rounds: {training.get('rounds')} (of {training.get('rounds_planned')} planned)",
        f"- participants in the final round: {training.get('participants')} of "
        f"{training.get('participants_total')}",
        f"- warm start from a given model: {'yes' if training.get('warm_start') else 'no'}",
        f"- secure aggregation: {'yes' if training.get('secure_aggregation') else 'no'}",
    ]
    final = {
        k: training[k]
        for k in ("loss", "train_accuracy")
        if isinstance(training.get(k), int | float)
    }
    if final:
        lines.append(
            "- final round, mean over its participants (weighted by rows): "
            + ", ".join(f"{k}={_fmt(v)}" for k, v in final.items())
        )
    privacy = training.get("privacy")
    if isinstance(privacy, dict):
        lines += [
            "",
            "## Differential privacy",
            "",
            f"- client-level (ε, δ) = ({_sig(privacy.get('epsilon'))}, "
            f"{_sig(privacy.get('delta'))}) after {training.get('rounds')} rounds",
            f"- clip norm C = {_fmt(privacy.get('clip_norm'))}, noise multiplier z = "
            f"{_fmt(privacy.get('noise_multiplier'))} (noise std z·C on the sum of clipped "
            "changes, from the OS's CSPRNG)",
            f"- accountant: {privacy.get('accountant')}",
            f"- sampling: {privacy.get('sampling')}",
        ]
    return lines


@tool(name="flowfed.package_model", version="1.0", type="data-transformation")
def package_model(
    model: Lazy,
    metrics: Lazy,
    ctx: Context,
    train: Lazy = _NO_INPUT,
    *,
    name: str = "model",
    description: str = "",
    data_sources: list[str] | None = None,
    intended_use: str = "",
    limitations: str = "",
    output_dir: str | None = None,
) -> Path:
    """Bundle a trained model into ``<name>.zip``: weights, metrics.json, a model card.

    The zip holds ``model/model<suffix>`` (the model's own ``save`` output, JSON for the
    built-in models), ``metrics.json``, ``MODEL_CARD.md`` (model, data provenance,
    evaluation, intended use, limitations, file hashes) and ``manifest.json`` (format,
    model class, every file's SHA-256 and the lineage). Provenance is ``data_sources``
    (free text: where the data came from) plus the catalog identities (name, version,
    SHA-256) of the ``model``, ``metrics`` and optional ``train`` inputs; ``train`` is
    never read, only named. The bytes depend only on these, so a re-run gives the same hash.
    """
    model_value, model_id = resolve(model)
    metrics_value, metrics_id = resolve(metrics)
    if not callable(getattr(model_value, "save", None)):
        raise TypeError(f"{type(model_value).__name__} is not a model with save(path)")
    if not isinstance(metrics_value, dict):
        raise TypeError(f"metrics must be a dict, got {type(metrics_value).__name__}")
    suffix = str(getattr(model_value, "file_suffix", ".bin"))
    with tempfile.TemporaryDirectory(prefix="flowfed-package-") as tmp:
        weights_path = Path(tmp) / f"model{suffix}"
        model_value.save(weights_path)
        weights = weights_path.read_bytes()
    files: dict[str, bytes] = {
        f"model/model{suffix}": weights,
        "metrics.json": (json.dumps(metrics_value, indent=1, sort_keys=True) + "\n").encode(),
    }
    lineage = {
        "data_sources": list(data_sources or []),
        "train": identity(train) if train is not None else None,
        "model": model_id,
        "metrics": metrics_id,
        "run": {"run_id": ctx.run_id, "step": ctx.step, "node": ctx.node},
    }
    if not lineage["data_sources"] and train is None:
        ctx.log("no data_sources and no train input: the card records no provenance", "warning")
    hashes = {f: hashlib.sha256(b).hexdigest() for f, b in files.items()}
    files["MODEL_CARD.md"] = _card(
        name=name,
        description=description,
        model=model_value,
        metrics=metrics_value,
        lineage=lineage,
        intended_use=intended_use,
        limitations=limitations,
        files=hashes,
    ).encode()
    cls = type(model_value)
    manifest = {
        "format": "flowfed.model_bundle/1",
        "name": name,
        "model_class": f"{cls.__module__}:{cls.__qualname__}",
        "files": {**hashes, "MODEL_CARD.md": hashlib.sha256(files["MODEL_CARD.md"]).hexdigest()},
        "lineage": lineage,
    }
    files["manifest.json"] = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    # Without output_dir the bundle goes to a fresh temporary folder: flowfed copies the
    # returned file into the artifact store after the tool returns, so it must outlive
    # this call.
    folder = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="flowfed-bundle-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.zip"
    path.write_bytes(_zip(files))
    ctx.log(f"packaged {cls.__qualname__} with {len(metrics_value)} metrics into {path.name}")
    return path
