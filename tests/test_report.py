"""`rllib-o2o report`: figures of a run by hand, aggregation over seeds, the written files."""

from __future__ import annotations

import json
import math

import pytest

from rllib_o2o.cli import main
from rllib_o2o.report import aggregate, load_runs, run_metrics, summarize, write_report


def curve(scores, every=1000):
    return [{"env_steps": i * every, "return": s, "score": s} for i, s in enumerate(scores)]


def test_run_metrics_by_hand():
    # 11 evaluations over 10k steps: first 10% = steps 0 and 1000; last 10% = steps 9000 and 10000
    scores = [50, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120]
    m = run_metrics(curve(scores), 10_000)
    assert m["offline"] == 50 and m["dip"] == 30 and m["final"] == 120
    assert m["last10"] == pytest.approx(115.0)
    # trapezoids: (50+30)/2 + (30+40)/2 + ... = sum of pairwise means, each over 1000 of 10000 steps
    pairs = [(a + b) / 2 for a, b in zip(scores, scores[1:])]
    assert m["auc"] == pytest.approx(sum(pairs) / 10)


def test_summarize_uses_the_t_interval():
    s = summarize([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == pytest.approx(1.0) and s["n"] == 3
    assert s["ci95"] == pytest.approx(4.303 / math.sqrt(3))  # t(0.975, df=2)


def test_one_seed_has_no_spread_and_no_nan_in_json(tmp_path):
    assert summarize([5.0]) == {"mean": 5.0, "std": None, "ci95": None, "n": 1}
    write_run(tmp_path, "hopper-medium", 0, "aca", [40, 38, 60])
    write_report(tmp_path)
    text = (tmp_path / "report" / "report.json").read_text()
    row = json.loads(text)["table"][0]
    assert row["final"] == {"mean": 60.0, "std": None, "ci95": None, "n": 1}
    assert "NaN" not in text
    assert "| hopper-medium | aca | 1 | 40.0 ± n/a |" in (tmp_path / "report" / "report.md").read_text()


def write_run(root, dataset, seed, method, scores, offline_data_online=False, fingerprint=None, data_score=None):
    run = root / dataset / f"seed{seed}"
    run.mkdir(parents=True, exist_ok=True)
    name = "results.json" if method == "aca" else f"results-{method}.json"
    results = {"method": method, "seed": seed, "env_id": "Hopper-v5", "dataset": f"/data/{dataset}",
               "online": {"curve": curve(scores)}, "offline_data_online": offline_data_online}
    if fingerprint is not None:
        results["dataset_fingerprint"] = fingerprint
    if data_score is not None:
        results["dataset_score"] = data_score
    (run / name).write_text(json.dumps(results))


def test_report_groups_seeds_and_methods_and_writes_table_and_plot(tmp_path, capsys):
    write_run(tmp_path, "hopper-medium", 0, "aca", [40, 38, 60])
    write_run(tmp_path, "hopper-medium", 1, "aca", [42, 40, 70])
    write_run(tmp_path, "hopper-medium", 0, "naive", [40, 5, 50])
    write_run(tmp_path, "hopper-medium", 0, "balanced-replay", [30, 20, 40], offline_data_online=True)
    table = aggregate(load_runs(tmp_path))
    assert set(table) == {("hopper-medium", "aca"), ("hopper-medium", "naive"), ("hopper-medium", "balanced-replay")}
    assert [table[("hopper-medium", m)]["offline_data_online"] for m in ("aca", "balanced-replay")] == [False, True]
    assert table[("hopper-medium", "aca")]["seeds"] == [0, 1]
    assert table[("hopper-medium", "aca")]["final"]["mean"] == 65.0
    assert table[("hopper-medium", "naive")]["dip"]["mean"] == 5.0

    assert main(["report", str(tmp_path)]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| hopper-medium | aca | 2 | 41.0 ± 1.4 | 39.0 ± 1.4 | 65.0 ± 7.1 |" in text
    assert (tmp_path / "report" / "hopper-medium.png").stat().st_size > 1000
    assert (tmp_path / "report" / "across-datasets.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert len(saved["runs"]) == 4 and "| naive |" in capsys.readouterr().out
    # regret = mean over evaluations of 1 - score/100: (0.60 + 0.62 + 0.40) / 3 and (0.58 + 0.60 + 0.30) / 3
    assert table[("hopper-medium", "aca")]["regret"]["mean"] == pytest.approx((0.54 + 1.48 / 3) / 2)
    # across datasets: the IQM of aca's two finals (n = 2: nothing trimmed) inside its bootstrap interval
    overall = saved["across_datasets"]["aca"]
    assert overall["datasets"] == ["hopper-medium"] and overall["runs"] == 2
    assert overall["final"]["iqm"] == 65.0 and 60.0 <= overall["final"]["low"] <= 65.0 <= overall["final"]["high"] <= 70.0
    assert saved["across_datasets"]["naive"]["regret"] == {"iqm": pytest.approx(1 - 95 / 300), "low": pytest.approx(1 - 95 / 300),
                                                           "high": pytest.approx(1 - 95 / 300)}  # one run: no spread


def test_results_under_a_former_method_name_are_read_under_todays(tmp_path):
    write_run(tmp_path, "hopper-medium", 0, "aca-consistent-target", [40, 38, 60])  # the default's former name
    write_run(tmp_path, "hopper-medium", 1, "aca", [42, 40, 70])
    write_run(tmp_path, "hopper-medium", 0, "naive", [40, 5, 50])
    table = aggregate(load_runs(tmp_path))
    assert set(table) == {("hopper-medium", "aca"), ("hopper-medium", "naive")}
    assert table[("hopper-medium", "aca")]["seeds"] == [0, 1]


def test_report_on_a_directory_without_results_is_an_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no results" in capsys.readouterr().err


def test_report_refuses_curves_without_normalised_scores(tmp_path):
    write_run(tmp_path, "cartpole-x", 0, "aca", [1, 2, 3])
    path = tmp_path / "cartpole-x" / "seed0" / "results.json"
    data = json.loads(path.read_text())
    data["online"]["curve"][1]["score"] = None
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="without a normalised score"):
        write_report(tmp_path)


def test_report_refuses_one_dataset_name_trained_on_different_rows(tmp_path, capsys):
    write_run(tmp_path, "hopper-medium", 0, "aca", [40, 38, 60], fingerprint="aaaa000000000000")
    write_run(tmp_path, "hopper-medium", 1, "aca", [42, 40, 70])  # written before fingerprints: not checked
    write_run(tmp_path, "hopper-medium", 0, "naive", [40, 5, 50], fingerprint="aaaa000000000000")
    write_run(tmp_path, "walker2d-medium", 0, "aca", [40, 5, 50], fingerprint="cccc000000000000")  # another name
    runs = load_runs(tmp_path)
    assert [r["dataset_fingerprint"] for r in runs if r["dataset"] == "walker2d-medium"] == ["cccc000000000000"]
    write_run(tmp_path, "hopper-medium", 2, "aca", [42, 40, 70], fingerprint="bbbb000000000000")
    with pytest.raises(ValueError, match=r"hopper-medium: its runs were trained on different data "
                                         r"\(fingerprint aaaa000000000000: 2 run\(s\).*bbbb000000000000: 1 run\(s\), "
                                         r"e.g. .*seed2"):
        load_runs(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    assert not (tmp_path / "report" / "report.json").exists()


def test_report_refuses_older_results_whose_data_scores_differ(tmp_path):
    """Results from before the fingerprint: the data's mean score tells data apart (to 6 decimals)."""
    write_run(tmp_path, "hopper-medium", 0, "aca", [40, 38, 60], data_score=30.78674583990806)
    write_run(tmp_path, "hopper-medium", 1, "aca", [42, 40, 70], data_score=30.78674583990806 + 1e-9)
    write_run(tmp_path, "hopper-medium", 2, "aca", [42, 40, 70], fingerprint="aaaa000000000000")  # no score: passes
    assert len(load_runs(tmp_path)) == 3
    write_run(tmp_path, "hopper-medium", 0, "rlpd", [2, 3, 90], data_score=29.53982831775616,
              fingerprint="aaaa000000000000")
    with pytest.raises(ValueError, match=r"mean data score 29.539828: 1 run\(s\), e.g. .*results-rlpd.json; "
                                         r"mean data score 30.786746: 2 run\(s\)"):
        load_runs(tmp_path)
