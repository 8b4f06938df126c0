"""ACA, its ablations and the baselines share one harness: what each method starts from and which stages it runs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import ray

from rllib_o2o.algorithms.o2o_sac.updates import ACAUpdate, CQLUpdate, SACMLUpdate, SACUpdate
from rllib_o2o.checkpoints import load_module_checkpoint, save_module_checkpoint
from rllib_o2o.bench_profiles import ALL_METHODS
from rllib_o2o.methods import (DEFAULT_METHOD, DEFAULT_METHOD_FOR_IMPORTED_POLICY, FROM_KIND, METHODS, OFFLINE_KINDS,
                               get_method, needs_alignment, with_offline_kind)
from rllib_o2o.rundir.names import alignment_stage_name, online_stage_name, results_file_name
from rllib_o2o.pipeline import PipelineConfig, run_pipeline
from rllib_o2o.stages.online import start_module
from rllib_o2o.rundir.layout import RunDir
from rllib_o2o.suggest import UnknownNameError

TINY = dict(env="Pendulum-v1", batch_size=64, hidden=[32, 32], replay_capacity=10_000, offline_steps=200,
            offline_eval_every=100, align_steps=100, online_steps=400, eval_every=200, eval_episodes=1)


def _run_methods(out, dataset_dir, methods) -> dict:
    """Each method's tiny pipeline in one run directory (they share its stages), on a 2-CPU Ray; `methods`
    may name benchmarks/variants.yaml's variants."""
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        return {m: run_pipeline(PipelineConfig(dataset=str(dataset_dir), out=str(out), method=m,
                                               variants=project_variants(), **TINY))
                for m in methods}
    finally:
        ray.shutdown()


def project_variants() -> dict:
    """benchmarks/variants.yaml's variants: the probes kept runnable outside the catalogue."""
    import yaml

    return yaml.safe_load((Path(__file__).resolve().parents[1] / "benchmarks" / "variants.yaml").read_text())["variants"]


def test_every_method_is_a_known_combination():
    variants = project_variants()
    for name, method in [*METHODS.items(), *((n, get_method(n, variants)) for n in variants)]:
        assert method.offline is None or method.offline in OFFLINE_KINDS, name
        assert method.start in ("aligned", "offline", "scratch"), name
        update = method.online_update_class()
        assert issubclass(update, SACUpdate) and update.reports_drift, name  # an online update
        assert (method.start == "scratch") == (method.offline is None), name
        assert method.offline is None or method.offline_update_class() in (SACMLUpdate, CQLUpdate), name
        assert method.start == "aligned" or name == "aca-offline-critic" or update is not ACAUpdate, name
        assert method.description or name in variants, name
        assert not update.uses_density_ratio or method.offline, name
        kind = method.offline_kind()
        if method.start == "offline":  # the online module loads the offline critic strictly: the same ensemble
            assert (method.num_critics, method.critic_target_members, method.critic_layer_norm) == (
                kind.num_critics, kind.critic_target_members, kind.critic_layer_norm), name
        assert method.warmup_env_steps >= 0 and method.updates_per_env_step >= 1, name
    assert needs_alignment("aca-no-clip") and not needs_alignment("naive")
    with pytest.raises(ValueError, match="unknown method 'td3'"):
        get_method("td3")


def test_the_catalogue_is_the_default_aca_the_papers_form_ablations_baselines_and_rivals():
    assert len(METHODS) <= 12 and DEFAULT_METHOD == "aca"
    default = METHODS["aca"]
    assert default.distill_baseline and default.reference_entropy_target and default.keep_offline_entropy_bonus
    # each ablation is the default with one switch turned
    ablations = {"aca-no-align": {"fresh_critic": True}, "aca-no-clip": {"use_log_prob_clip": False},
                 "aca-fixed-w": {"fixed_w": True}}
    for name, change in ablations.items():
        assert replace(METHODS[name], description="") == replace(default, description="", **change), name
    # an imported policy has no critic to distil Z from: its default fits Z by TD
    assert not METHODS[DEFAULT_METHOD_FOR_IMPORTED_POLICY].distill_baseline
    assert not any(FROM_KIND in name for name in METHODS)  # the offline stage is an option, not a name
    assert set(ALL_METHODS) == set(METHODS)


def test_a_variant_is_its_base_method_with_the_fields_it_names():
    variants = {"aca-no-bonus": {"base": "aca", "keep_offline_entropy_bonus": False},
                "td-from-cql": {"base": "aca-td", "offline": "cql"}}
    assert get_method("aca-no-bonus", variants) == replace(METHODS["aca"], keep_offline_entropy_bonus=False)
    assert get_method("td-from-cql", variants).offline == "cql"
    # a variant runs from another offline stage as a catalogue method does
    assert get_method(with_offline_kind("aca-no-bonus", "iql", variants), variants).offline == "iql"
    cfg = PipelineConfig(method="aca-no-bonus", variants=variants)
    cfg.validate()
    assert cfg.resolved_method() == get_method("aca-no-bonus", variants)
    # its stage directories and results file are its own (its alignment: the default's, when that is the same)
    assert (alignment_stage_name("aca-no-bonus", variants), online_stage_name("aca-no-bonus"),
            results_file_name("aca-no-bonus")) == ("alignment", "online-aca-no-bonus", "results-aca-no-bonus.json")
    assert alignment_stage_name("td-from-cql", variants) == "alignment-from-cql-td"
    with pytest.raises(UnknownNameError, match="unknown method 'aca-no-bonus'"):
        get_method("aca-no-bonus")  # only where the variants are given
    for bad, match in [({"x": {"base": "acca"}}, "did you mean 'aca'"), ({"x": {"base": "aca", "fixd_w": True}},
                       "did you mean 'fixed_w'"), ({"x": {"base": "aca", "fixed_w": 1}}, "must be a bool"),
                       ({"aca": {"base": "aca"}}, "catalogue method's name"),
                       ({"x": {"base": "aca", "offline": "bcq"}}, "offline must be one of")]:
        with pytest.raises(ValueError, match=match):
            PipelineConfig(variants=bad).validate()
    with pytest.raises(ValueError, match="is now `--method aca`"):
        get_method("aca-consistent-target")


def test_the_projects_variants_run_the_probes_they_name():
    variants = project_variants()
    assert not set(variants) & set(METHODS)
    aca = METHODS["aca"]
    assert get_method("aca-reference-entropy", variants) == replace(aca, keep_offline_entropy_bonus=False)
    assert get_method("aca-distilled-z", variants) == replace(aca, keep_offline_entropy_bonus=False,
                                                              reference_entropy_target=False)
    assert get_method("aca-paper-carry-adam", variants).carry_optimizer_state


def test_config_refuses_an_unknown_method():
    with pytest.raises(ValueError, match="unknown method"):
        PipelineConfig(method="nope").validate()


def test_config_refuses_to_distil_z_from_an_imported_policy():
    PipelineConfig(method="aca").validate()
    with pytest.raises(ValueError, match="actor only; use --method aca-td"):
        PipelineConfig(method="aca", offline_checkpoint="/some/ckpt").validate()


def test_naive_starts_from_the_whole_offline_module_with_its_update_count_reset(tmp_path):
    weights = {"actor.head.weight": np.ones((2, 3), np.float32), "critic.weights.0": np.full((2, 4, 5), 2.0),
               "target_critic.weights.0": np.zeros((2, 4, 5)), "log_alpha": np.array(-1.5, np.float32),
               "num_updates": np.array(5000, np.int64)}
    save_module_checkpoint(tmp_path / "offline" / "module", weights, {"stage": "offline", "actor_activation": "relu"})
    got, start_meta = start_module("naive", RunDir(tmp_path))
    assert start_meta["actor_activation"] == "relu" and int(got["num_updates"]) == 0
    np.testing.assert_array_equal(got["critic.weights.0"], weights["critic.weights.0"])
    assert float(got["log_alpha"]) == -1.5  # the offline temperature travels with the critic
    assert start_module("sac-scratch", RunDir(tmp_path)) == (None, {})
    # the ablation with ACA's online losses keeps the offline critic but starts at ACA's temperature 1
    got, _ = start_module("aca-offline-critic", RunDir(tmp_path), project_variants())
    np.testing.assert_array_equal(got["critic.weights.0"], weights["critic.weights.0"])
    assert float(got["log_alpha"]) == 0.0 and int(got["num_updates"]) == 0

    save_module_checkpoint(tmp_path / "offline" / "module", {"actor.head.weight": weights["actor.head.weight"]},
                           {"stage": "offline"})  # e.g. an imported policy: no critic to transfer
    with pytest.raises(ValueError, match="transfers the offline critic"):
        start_module("naive", RunDir(tmp_path))


@pytest.mark.slow
def test_methods_share_stages_of_one_run_directory(tmp_path, pendulum_dir):
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        results = {m: run_pipeline(PipelineConfig(dataset=str(pendulum_dir), out=str(tmp_path), method=m, **TINY))
                   for m in ("aca", "naive", "aca-no-align", "cql-sac", "balanced-replay", "sac-scratch")}
    finally:
        ray.shutdown()
    for m, r in results.items():
        assert r["method"] == m
        assert [p["env_steps"] for p in r["online"]["curve"]] == [0, 200, 400], m
        on_disk = json.loads((tmp_path / ("results.json" if m == "aca" else f"results-{m}.json")).read_text())
        assert on_disk["final_score"] == r["final_score"]
    # only Balanced Replay keeps offline rows online here (the pendulum dataset's preset seeds no episodes)
    assert {m for m, r in results.items() if r["offline_data_online"]} == {"balanced-replay"}
    # one SAC+ML offline stage and one alignment served aca, naive and the ablation
    assert results["naive"]["offline"]["curve"] == results["aca"]["offline"]["curve"]
    assert results["naive"]["alignment"] is None and results["sac-scratch"]["offline"] is None
    # the three start from the same offline actor: identical deterministic evaluation at step 0
    start = {m: results[m]["online"]["curve"][0]["return"] for m in results}
    assert start["naive"] == pytest.approx(start["aca"]) == pytest.approx(start["aca-no-align"])
    assert start["sac-scratch"] != pytest.approx(start["aca"])
    assert start["balanced-replay"] == pytest.approx(start["cql-sac"])  # one CQL stage serves both
    cql_meta = json.loads((tmp_path / "offline-cql" / "module" / "meta.json").read_text())
    assert cql_meta["algorithm"] == "O2OSAC/cql"
    assert sorted(p.name for p in tmp_path.glob("online*")) == [
        "online", "online-aca-no-align", "online-balanced-replay", "online-cql-sac", "online-naive",
        "online-sac-scratch"]


@pytest.mark.slow
def test_alignment_variants_get_their_own_stage_and_share_the_offline_one(tmp_path, pendulum_dir):
    results = _run_methods(tmp_path, pendulum_dir, (
        "aca-td", "aca-paper", "aca-paper-online-temperature", "aca-paper-carry-adam", "aca-distilled-z",
        "aca-ensemble", "aca"))
    assert sorted(p.name for p in tmp_path.glob("alignment*")) == [
        "alignment", "alignment-10-members", "alignment-offline-temperature-with-log-pi0-td", "alignment-td",
        "alignment-with-log-pi0-td"]
    reports = {p.name: json.loads((p / "DONE.json").read_text()) for p in tmp_path.glob("alignment*")}
    done = {name: report["settings"] for name, report in reports.items()}
    assert {name: r["z_source"] for name, r in reports.items()} == {
        "alignment-td": "td", "alignment": "offline critic", "alignment-10-members": "offline critic",
        "alignment-offline-temperature-with-log-pi0-td": "td", "alignment-with-log-pi0-td": "td"}
    assert all("heldout_distill_error" in p for p in reports["alignment"]["z_loss_curve"])
    assert done["alignment"]["z_includes_log_pi0"] is False
    # the ensemble's 10 Z_i; its online stage loads them strictly into a 10-member critic
    assert [done[name]["num_members"] for name in ("alignment", "alignment-10-members")] == [2, 10]
    alpha_off = json.loads((tmp_path / "offline" / "DONE.json").read_text())["alpha_off"]
    # the aligned checkpoint records the offline temperature; the default's target keeps its bonus
    assert json.loads((tmp_path / "alignment" / "module" / "meta.json").read_text())[
        "offline_temperature"] == alpha_off
    bonus = {m: r["online"]["curve"][-1]["offline_entropy_bonus_weight"] for m, r in results.items()}
    assert bonus.pop("aca") > 0 and set(bonus.values()) == {0.0}
    assert done["alignment-td"]["alpha_off"] == 1.0 and done["alignment-td"]["z_includes_log_pi0"] is False
    assert done["alignment-with-log-pi0-td"]["alpha_off"] == 1.0
    assert done["alignment-with-log-pi0-td"]["z_includes_log_pi0"] is True
    paper = done["alignment-offline-temperature-with-log-pi0-td"]
    assert paper["alpha_off"] == alpha_off != 1.0 and paper["z_includes_log_pi0"] is True
    # one offline stage served all seven; the carried-Adam ablation reuses aca-paper's alignment
    start = {m: r["online"]["curve"][0]["return"] for m, r in results.items()}
    assert len({round(v, 6) for v in start.values()}) == 1
    assert results["aca-paper-carry-adam"]["alignment"] == results["aca-paper"]["alignment"]
    for m, r in results.items():  # the online diagnostics are in the curve
        assert {"kl_to_reference", "critic_action_weight_norm", "td_error_rms"} <= set(r["online"]["curve"][-1]), m


def test_an_aligned_checkpoint_without_the_offline_temperature_is_refused_by_the_methods_that_need_it():
    from rllib_o2o.stages.online import require_offline_temperature

    with pytest.raises(ValueError, match="run's alignment/ directory"):
        require_offline_temperature("aca", {"stage": "aligned"})
    require_offline_temperature("aca", {"offline_temperature": 0.5})
    require_offline_temperature("aca-td", {"stage": "aligned"})  # no bonus: nothing needed


def test_aca_from_the_cql_stage_aligns_by_td_or_by_distillation_and_shares_cql_sacs_offline_stage(tmp_path,
                                                                                                   pendulum_dir):
    results = _run_methods(tmp_path, pendulum_dir, ("cql-sac", "aca-from-cql", "aca-from-cql-td"))  # a variant
    assert sorted(p.name for p in tmp_path.glob("offline*")) == ["offline-cql"]  # no SAC+ML stage
    reports = {p.name: json.loads((p / "DONE.json").read_text()) for p in tmp_path.glob("alignment*")}
    # the TD fit does not read the CQL critic (whose values CQL's penalty pushes down); the distillation does
    assert {name: r["z_source"] for name, r in reports.items()} == {
        "alignment-from-cql-td": "td", "alignment-from-cql": "offline critic"}
    bonus = {m: r["online"]["curve"][-1].get("offline_entropy_bonus_weight", 0.0) for m, r in results.items()}
    assert bonus["aca-from-cql"] > 0 and bonus["aca-from-cql-td"] == 0.0
    start = {m: r["online"]["curve"][0]["return"] for m, r in results.items()}
    assert len({round(v, 6) for v in start.values()}) == 1  # one CQL actor starts all three


@pytest.mark.slow
def test_wsrl_and_rlpd_run_in_the_harness_with_their_own_stages_and_data_settings(tmp_path, pendulum_dir):
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        results = {m: run_pipeline(PipelineConfig(dataset=str(pendulum_dir), out=str(tmp_path), method=m, utd=2,
                                                  online_warmup_steps=200, **TINY))
                   for m in ("cql-sac", "wsrl", "rlpd")}
    finally:
        ray.shutdown()
    # WSRL keeps no offline data online, RLPD samples half of every batch from it
    assert {m: r["offline_data_online"] for m, r in results.items()} == {"cql-sac": False, "wsrl": False, "rlpd": True}
    # WSRL pre-trains its own CQL stage with 10 layer-normalised critics; cql-sac's keeps the twins
    weights = {name: load_module_checkpoint(tmp_path / name / "module")[0] for name in ("offline-cql", "offline-cql-ensemble")}
    assert weights["offline-cql-ensemble"]["critic.weights.0"].shape[0] == 10
    assert "critic.norm_gains.0" in weights["offline-cql-ensemble"]
    assert weights["offline-cql"]["critic.weights.0"].shape[0] == 2 and "critic.norm_gains.0" not in weights["offline-cql"]
    assert results["rlpd"]["offline"] is None
    # WSRL starts from its offline policy: the offline stage's evaluation is the online stage's at step 0
    wsrl = results["wsrl"]
    assert wsrl["online"]["curve"][0]["return"] == pytest.approx(wsrl["offline"]["return"])
    for m in ("wsrl", "rlpd"):
        curve = results[m]["online"]["curve"]
        assert [p["env_steps"] for p in curve] == [0, 200, 400], m
        # the warm-up (200 env steps) made no update: no learner diagnostics at 200, then some at 400
        assert "kl_to_reference" not in curve[1] and "kl_to_reference" in curve[2], m


def test_a_method_from_another_offline_kind_is_that_method_with_the_kind_named_apart():
    from rllib_o2o.config import PipelineConfig
    from rllib_o2o.methods import OFFLINE_KINDS, get_method, with_offline_kind
    from rllib_o2o.rundir.names import alignment_stage_name, offline_stage_name, online_stage_name, results_file_name

    assert with_offline_kind("naive", None) == "naive"
    assert with_offline_kind("naive", get_method("naive").offline) == "naive"
    name = with_offline_kind("naive", "iql")
    assert name == "naive-from-iql"
    assert get_method(name) == replace(get_method("naive"), offline="iql")
    assert with_offline_kind(name, "iql") == name  # idempotent: a config read back keeps its method
    assert with_offline_kind(name, get_method("naive").offline) == "naive"
    assert (offline_stage_name(name), online_stage_name(name), results_file_name(name)) == (
        "offline-iql", "online-naive-from-iql", "results-naive-from-iql.json")
    assert alignment_stage_name(with_offline_kind("aca", "iql")) == "alignment-from-iql"
    assert "iql" in OFFLINE_KINDS
    with pytest.raises(ValueError, match="no offline stage"):
        with_offline_kind("sac-scratch", "iql")
    with pytest.raises(UnknownNameError):
        get_method("naive-from-nothing")

    cfg = PipelineConfig(method="cql-sac", offline_algo="iql")
    assert cfg.method == "cql-sac-from-iql"
    cfg.validate()
    assert PipelineConfig(**vars(cfg)).method == cfg.method
    with pytest.raises(ValueError, match="no offline stage"):
        PipelineConfig(method="rlpd", offline_algo="iql").validate()
    with pytest.raises(ValueError, match="give one of them"):
        PipelineConfig(method="aca", offline_algo="iql", offline_checkpoint="x").validate()
