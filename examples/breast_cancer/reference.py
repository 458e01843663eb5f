"""The centralized reference of the breast cancer example: one model on all the data.

A federated result means little without the number it approximates. This tool rebuilds
the *same* 80/20 split that ``make_data.py`` dealt to the hospitals from scikit-learn's
public copy of the data (never from the hospitals' files), standardizes with the
training rows' statistics, fits scikit-learn's ``LogisticRegression`` on the pooled
training rows and evaluates it on the pooled test rows. The flow reports it beside the
federated model's pooled metrics.
"""

from __future__ import annotations

from flowfed.tools import Context, tool


@tool(name="breast_cancer.centralized_reference", version="1.0", type="evaluation")
def centralized_reference(
    ctx: Context, *, test_fraction: float = 0.2, seed: int = 0, c: float = 1.0
) -> dict:
    """Accuracy, ROC AUC and F1 of centralized logistic regression on the example's split."""
    # Imported here, not at module level: scikit-learn takes about a second to import,
    # and every `flowfed run` of the example (and every node agent) imports this file.
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    from flowfed.tools.library.evaluation import classification_metrics

    frame = load_breast_cancer(as_frame=True).frame
    train, test = train_test_split(
        frame, test_size=test_fraction, stratify=frame["target"], random_state=seed
    )
    features = [col for col in frame.columns if col != "target"]
    mean = train[features].mean()
    std = train[features].std(ddof=0)
    x_train = ((train[features] - mean) / std).to_numpy()
    x_test = ((test[features] - mean) / std).to_numpy()
    clf = LogisticRegression(C=c, max_iter=5000).fit(x_train, train["target"].to_numpy())
    proba = clf.predict_proba(x_test)[:, 1]
    result = classification_metrics(np.asarray(test["target"]), proba)
    ctx.metric("accuracy", result["accuracy"])
    ctx.log(
        f"centralized logistic regression on {len(train)} train / {len(test)} test rows: "
        f"accuracy {result['accuracy']:.4f}, ROC AUC {result['roc_auc']:.4f}"
    )
    return {k: result[k] for k in ("rows", "accuracy", "roc_auc", "f1", "confusion_matrix")}


@tool(name="breast_cancer.central_evaluate", version="1.0", type="evaluation")
def central_evaluate(model: object, ctx: Context, *, seed: int = 0, round: int = 0) -> dict:
    """Central evaluation of the global model, on the public copy's test rows.

    A federated step's ``evaluate_fn``.
    Like Flower's ``evaluate_fn``: the server holds a data set of its own, here the test
    rows of scikit-learn's public copy of the data (the same 80/20 split as
    ``make_data.py``), standardized with the public training rows' statistics as the
    hospitals' pooled statistics do. Returns ``{"loss", "accuracy"}``, stored as the
    step's ``central_loss`` and ``central_accuracy`` for the round.
    """
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    from flowfed.tools.library.fl_evaluation import binary_log_loss

    frame = load_breast_cancer(as_frame=True).frame
    train, test = train_test_split(
        frame, test_size=0.2, stratify=frame["target"], random_state=seed
    )
    features = [col for col in frame.columns if col != "target"]
    scaled = test.copy()
    scaled[features] = (test[features] - train[features].mean()) / train[features].std(ddof=0)
    proba = np.asarray(model.predict_proba(scaled), dtype=np.float64)  # type: ignore[attr-defined]
    y = test["target"].to_numpy(dtype=np.float64)
    result = {
        "loss": binary_log_loss(y, proba),
        "accuracy": float(np.mean((proba >= 0.5) == (y == 1.0))),
    }
    ctx.log(f"central evaluation after round {round}: {result}")
    return result
