"""The shipped examples run end to end (into temporary folders)."""

from __future__ import annotations

import json
import pickle

import pytest


@pytest.mark.parametrize("threshold", [0.0, 1.01])
def test_ml_pipeline_trains_in_a_loop_then_deploys_or_reports(tmp_path, threshold):
    """examples.ml_pipeline: the loop trains until the target, the branch deploys the
    model file (reachable threshold) or writes a report (unreachable one)."""
    pytest.importorskip("sklearn")
    from examples.ml_pipeline import TARGET_ACCURACY, wf

    result = wf.run(params={"out": str(tmp_path / "out"), "deploy_threshold": threshold},
                    fresh=True)
    assert result.ok, result.error
    trained = result["train"]
    assert trained["accuracy"] >= TARGET_ACCURACY or trained["epochs"] == 60
    if threshold == 0.0:
        assert result.tasks["report"].state == "skipped"
        with open(result["deploy"], "rb") as f:
            saved = pickle.load(f)
        assert saved["metrics"]["test_accuracy"] == result["evaluate"]["test_accuracy"]
        assert "deployed to" in result["summary"]
    else:
        assert result.tasks["deploy"].state == "skipped"
        report = json.loads((tmp_path / "out" / "iris_report.json").read_text())
        assert report["deployed"] is False and report["threshold"] == threshold
