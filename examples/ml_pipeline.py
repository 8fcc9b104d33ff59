"""Train a classifier until it is good enough, then deploy it or write a report.

Run it from the repository root (it needs scikit-learn: ``pip install -e ".[examples]"``)::

    python -m examples.ml_pipeline

The data set is the iris flowers that scikit-learn ships, so nothing is downloaded.
``train`` is a loop: one epoch of ``SGDClassifier.partial_fit`` per iteration, each
iteration handed the previous model through ``ctx.previous``, until the validation
accuracy reaches the target (every iteration is saved: kill it and run it again, and it
goes on from the last finished epoch). ``decide`` is a branch on the test score:
``deploy`` writes the model file, ``report`` writes what went wrong.
"""

from __future__ import annotations

import json
import os
import pickle
from typing import Any

from flowforge import Loop, branch, task, workflow

OUTPUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "output")
TARGET_ACCURACY = 0.9  # validation accuracy that ends training

PARAMS = {"seed": 7, "deploy_threshold": 0.8, "out": OUTPUT_DIR}

with workflow("ml_pipeline", executor="thread", params=PARAMS) as wf:

    @task
    def load_data() -> dict[str, Any]:
        from sklearn.datasets import load_iris

        iris = load_iris()
        return {"X": iris.data, "y": iris.target, "classes": list(iris.target_names)}

    @task
    def split(load_data: dict[str, Any], seed: int) -> dict[str, Any]:
        from sklearn.model_selection import train_test_split

        X, y = load_data["X"], load_data["y"]
        X_fit, X_test, y_fit, y_test = train_test_split(
            X, y, test_size=0.25, stratify=y, random_state=seed
        )
        X_train, X_val, y_train, y_val = train_test_split(
            X_fit, y_fit, test_size=0.25, stratify=y_fit, random_state=seed
        )
        return {"train": (X_train, y_train), "val": (X_val, y_val), "test": (X_test, y_test)}

    @task(loop=Loop(max_iterations=60, until=lambda r: r["accuracy"] >= TARGET_ACCURACY,
                    on_exhausted="succeed"))
    def train(split: dict[str, Any], seed: int, ctx: Any) -> dict[str, Any]:
        from sklearn.linear_model import SGDClassifier
        from sklearn.preprocessing import StandardScaler

        X_train, y_train = split["train"]
        if ctx.previous is None:
            model = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=0.01,
                                  random_state=seed)
            scaler = StandardScaler().fit(X_train)
        else:
            model, scaler = ctx.previous["model"], ctx.previous["scaler"]
        model.partial_fit(scaler.transform(X_train), y_train, classes=[0, 1, 2])
        X_val, y_val = split["val"]
        accuracy = float(model.score(scaler.transform(X_val), y_val))
        ctx.log.info("epoch", epoch=ctx.iteration, accuracy=round(accuracy, 3))
        return {"model": model, "scaler": scaler, "accuracy": accuracy,
                "epochs": ctx.iteration + 1}

    @task
    def evaluate(train: dict[str, Any], split: dict[str, Any]) -> dict[str, Any]:
        X_test, y_test = split["test"]
        model, scaler = train["model"], train["scaler"]
        score = float(model.score(scaler.transform(X_test), y_test))
        return {"test_accuracy": score, "epochs": train["epochs"],
                "validation_accuracy": train["accuracy"]}

    @branch
    def decide(evaluate: dict[str, Any], deploy_threshold: float) -> str:
        return "deploy" if evaluate["test_accuracy"] >= deploy_threshold else "report"

    @task(depends_on=["decide"])
    def deploy(train: dict[str, Any], evaluate: dict[str, Any], out: str) -> str:
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, "iris_model.pkl")
        with open(path, "wb") as f:
            pickle.dump({"model": train["model"], "scaler": train["scaler"],
                         "metrics": evaluate}, f)
        return path

    @task(depends_on=["decide"])
    def report(evaluate: dict[str, Any], deploy_threshold: float, out: str) -> str:
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, "iris_report.json")
        with open(path, "w") as f:
            json.dump({"deployed": False, "why": "test accuracy below threshold",
                       "threshold": deploy_threshold, **evaluate}, f, indent=2)
        return path

    @task(trigger="none_failed")  # runs after whichever branch was taken
    def summary(evaluate: dict[str, Any], deploy: str | None, report: str | None) -> str:
        done = f"deployed to {deploy}" if deploy else f"not deployed; report in {report}"
        return (f"{evaluate['epochs']} epochs, test accuracy "
                f"{evaluate['test_accuracy']:.2f}: {done}")


def main() -> int:
    result = wf.run()
    if result.ok:
        print(result["summary"])
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
