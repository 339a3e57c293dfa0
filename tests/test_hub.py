"""Publishing: card from the run's files, export folder, one-commit push (through a recording fake HfApi), faults,
token safety, and the round trip export -> from_pretrained -> predict. All offline."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from bps_vit.provenance import weights_fingerprint
from bps_vit.publish.export import PublishError, build_export
from bps_vit.results import SCHEMA_VERSION, RunResults
from tests.support.images import bps_like_tiff
from tests.support.paths import REPO
from tests.support.tiny_models import fit_tiny_model

FAKE_TOKEN = "hf_" + "Zq7" * 11 + "x"  # token-shaped (hf_ + 34 alnum), never a real one

TEST_RESULTS = {
    "test_accuracy": 0.8125,
    "test_balanced_accuracy": 0.7983,
    "test_f1_macro": 0.8041,
    "test_roc_auc": 0.8777,
    "test_loss": 0.4321,
    "epoch": 2.0,
}
#: bps_results.json as written before the schema was versioned (version 0); the fixture writes it through the schema.
BPS_RESULTS = {
    "validation": {
        "accuracy": 0.7512, "balanced_accuracy": 0.7433, "f1_macro": 0.7401, "roc_auc": 0.8234,
        "confusion_matrix": [[9, 3], [2, 6]], "n": 20,
    },
    "test": {
        "accuracy": 0.8125, "balanced_accuracy": 0.7983, "f1_macro": 0.8041, "roc_auc": 0.8777,
        "confusion_matrix": [[7, 1], [2, 6]], "n": 16,
    },
    "per_condition": [
        {"condition": "Fe 0.82Gy 4h", "label": "Fe", "dose_Gy": 0.82, "hr_post_exposure": 4, "n": 8, "accuracy": 0.875},
        {"condition": "X-ray 1Gy 24h", "label": "X-ray", "dose_Gy": 1.0, "hr_post_exposure": 24, "n": 8,
         "accuracy": 0.75},
    ],
    "sham_control": {"n": 40, "accuracy": 0.5249, "balanced_accuracy": 0.5311},
    "baseline": {"majority_class": "Fe", "accuracy": 0.5625},
    "data": {"data_dir": "data/bps", "source": "synthetic", "split_by": "plate",
             "counts": {"train": {"Fe": 20, "X-ray": 20}}},
    "model": {"model_name_or_path": None, "config_name": "configs/model/vit_tiny.json", "image_size": 64},
    "training": {"epochs": 2, "learning_rate": 0.001, "seed": 42},
}
EXPLAIN_METRICS = {
    "model": "outputs/tiny", "split": "test", "num_images": 6,
    "methods": {
        "rollout": {"deletion_auc": 0.3111, "insertion_auc": 0.6222, "random_deletion_auc": 0.4333,
                    "random_insertion_auc": 0.5444, "randomization_spearman": 0.1555, "foci_mass": 0.3666,
                    "foci_mass_baseline": 0.0777, "pointing_game": 0.6888, "pointing_game_baseline": 0.0999,
                    "seconds_per_image": 0.0123},
        "shap": {"deletion_auc": 0.2911, "insertion_auc": None, "random_deletion_auc": 0.4301,
                 "random_insertion_auc": None, "randomization_spearman": None, "foci_mass": None,
                 "foci_mass_baseline": None, "pointing_game": None, "pointing_game_baseline": None,
                 "seconds_per_image": 1.5},
    },
}
EXPECTED_EXPORT = {
    "README.md", "config.json", "preprocessor_config.json", "model.safetensors",
    "all_results.json", "test_results.json", "bps_results.json", "explain_metrics.json",
    "figures/confusion_matrix.png", "figures/training_curves.png",
    "figures/explain/rollout_grid.png", "figures/explain/shap/shap_grid.png",
}


def tiny_images(folder: Path, n_per_label: int = 4, seed: int = 0) -> tuple[list[Path], list[int]]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths, labels = [], []
    for label_id, label in enumerate(("Fe", "X-ray")):
        for i in range(n_per_label):
            path = folder / f"P{242 + label_id}_73665006707-A{i + 1}_003_01{i}_proj.tif"
            bps_like_tiff(path, label, rng, height=72, width=72)
            paths.append(path)
            labels.append(label_id)
    return paths, labels


def png(path: Path, color: int = 120) -> None:
    from PIL import Image

    Image.fromarray(np.full((20, 30), color, dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny trained run folder laid out as train.py writes it, plus an explanation folder."""
    root = tmp_path_factory.mktemp("hub")
    run = root / "outputs" / "tiny-run"
    run.mkdir(parents=True)
    paths, labels = tiny_images(root / "images")
    model, processor = fit_tiny_model(paths, labels, run)

    (run / "test_results.json").write_text(json.dumps(TEST_RESULTS))
    (run / "all_results.json").write_text(json.dumps({**TEST_RESULTS, "eval_accuracy": 0.7512, "train_loss": 0.6}))
    RunResults.from_dict(BPS_RESULTS).to_json(run / "bps_results.json")
    (run / "train_results.json").write_text(json.dumps({"train_loss": 0.6}))
    (run / "eval_results.json").write_text(json.dumps({"eval_accuracy": 0.7512}))
    (run / "figures").mkdir()
    png(run / "figures" / "confusion_matrix.png")
    png(run / "figures" / "training_curves.png")
    (run / "checkpoint-2").mkdir()
    (run / "checkpoint-2" / "optimizer.pt").write_bytes(b"pickle")
    (run / "checkpoint-2" / "model.safetensors").write_bytes(b"x")
    (run / "training_args.bin").write_bytes(b"pickle")
    (run / "explain" / "figures" / "shap").mkdir(parents=True)
    png(run / "explain" / "figures" / "rollout_grid.png")
    png(run / "explain" / "figures" / "shap" / "shap_grid.png")
    (run / "explain" / "explain_metrics.json").write_text(
        json.dumps({**EXPLAIN_METRICS, "model_fingerprint": weights_fingerprint(run)})
    )
    return {"run": run, "model": model, "processor": processor, "images": paths, "root": root}


class RecordingFakeHfApi:
    """TEST DOUBLE for huggingface_hub.HfApi: records create_repo/upload_folder calls, never touches a network.

    `fail_uploads` makes that many upload_folder calls raise (a push failing midway); errors can be injected
    for whoami and create_repo.
    """

    def __init__(self, user="alice", orgs=(), role="write", fail_uploads=0, whoami_error=None, create_error=None):
        self.user, self.orgs, self.role = user, list(orgs), role
        self.fail_uploads = fail_uploads
        self.whoami_error, self.create_error = whoami_error, create_error
        self.calls: list[dict] = []

    def whoami(self, token=None):
        self.calls.append({"method": "whoami", "token_given": token is not None})
        if self.whoami_error:
            raise self.whoami_error
        return {"name": self.user, "orgs": [{"name": o} for o in self.orgs],
                "auth": {"accessToken": {"role": self.role}}}

    def create_repo(self, repo_id, *, token=None, private=None, exist_ok=False, repo_type=None, **kwargs):
        self.calls.append({"method": "create_repo", "repo_id": repo_id, "private": private, "exist_ok": exist_ok})
        if self.create_error:
            raise self.create_error
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, token=None, **kwargs):
        files = sorted(p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file())
        self.calls.append({"method": "upload_folder", "repo_id": repo_id, "folder": folder_path,
                           "commit_message": commit_message, "files": files, "token_given": token is not None})
        if self.fail_uploads > 0:
            self.fail_uploads -= 1
            raise ConnectionError("connection reset by peer after 3 of 12 files")
        return f"https://huggingface.co/{repo_id}/commit/abc123"

    def methods(self):
        return [c["method"] for c in self.calls]


def http_error(status: int):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    return HfHubHTTPError(f"{status} Client Error", response=httpx2.Response(status, request=request))


@pytest.fixture
def with_token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    return FAKE_TOKEN


@pytest.fixture
def without_token(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


def export_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- card


def test_card_yaml_parses_and_carries_test_metrics(trained_run, tmp_path):
    from huggingface_hub import ModelCard

    from bps_vit.publish import publish

    out = tmp_path / "export"
    publish(trained_run["run"], "alice/bps-vit-tiny", dry_run=True, export_dir=out)
    card = ModelCard.load(out / "README.md")
    text = (out / "README.md").read_text()
    meta = yaml.safe_load(text.split("---")[1])
    assert meta["pipeline_tag"] == "image-classification"
    assert meta["license"] == "apache-2.0"
    assert {"image-classification", "vision", "vit", "microscopy", "biology", "space-radiation", "nasa-bps",
            "explainability"} <= set(meta["tags"])
    assert "base_model" not in meta  # from-scratch config, not fine-tuned from a Hub checkpoint
    results = meta["model-index"][0]["results"][0]
    assert results["dataset"]["split"] == "test"
    assert "ynthetic" in results["dataset"]["name"]  # bps_results.json["data"] says synthetic
    carried = {m["type"]: m["value"] for m in results["metrics"]}
    assert carried == {
        "accuracy": TEST_RESULTS["test_accuracy"],
        "balanced_accuracy": TEST_RESULTS["test_balanced_accuracy"],
        "f1": TEST_RESULTS["test_f1_macro"],
        "roc_auc": TEST_RESULTS["test_roc_auc"],
    }
    assert card.data.eval_results[0].metric_value == TEST_RESULTS["test_accuracy"]
    body = card.text
    # numbers in the body come from the files: validation, test, per condition, sham, baseline, faithfulness
    for number in ("0.7512", "0.8125", "0.8750", "0.5311", "0.5625", "0.3111", "0.6222", "0.2911"):
        assert number in body, number
    assert "Within chance" in body  # sham balanced accuracy 0.5311 on 40 images, no interpretation in the file
    assert "OSD-366" in body and "whole **plates** are assigned" in body and "Caveat for this run" not in body
    assert "stretched per image between its 0.50th and 99.50th percentiles" in body
    for figure in ("figures/confusion_matrix.png", "figures/explain/rollout_grid.png",
                   "figures/explain/shap/shap_grid.png"):
        assert f"]({figure})" in body  # relative paths, so they render on the Hub
        assert (out / figure).is_file()


def test_card_base_model_and_real_dataset(trained_run, tmp_path):
    from bps_vit.publish.card import build_model_card

    run = tmp_path / "ft-run"
    run.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (run / name).write_text((trained_run["run"] / name).read_text())
    bps = json.loads(json.dumps(BPS_RESULTS))
    bps["model"] = {"model_name_or_path": "google/vit-base-patch16-224-in21k", "config_name": None}
    bps["data"] = {"data_dir": "data/bps", "source": "s3", "split_by": "field", "counts": {}}
    bps["sham_control"] = {"n": 400, "accuracy": 0.71, "balanced_accuracy": 0.70}
    results = RunResults.from_dict(bps)
    results.to_json(run / "bps_results.json")
    card = build_model_card(run, repo_id="alice/bps")
    assert card.data.base_model == "google/vit-base-patch16-224-in21k"
    assert card.data.eval_results[0].dataset_name.startswith("NASA BPS Microscopy")
    assert "Warning" in card.text and "plate/batch signature" in card.text  # sham far above chance
    assert "Caveat for this run:** it was split by **field**" in card.text
    # the card shows the run's own verdict, as written in the file
    results.sham_control.interpretation = "far from chance (written by the run)"
    results.to_json(run / "bps_results.json")
    assert "far from chance (written by the run)" in build_model_card(run).text
    assert "explain/explain_metrics.json" in card.text  # listed as missing, not a crash


def test_card_with_no_results_files_says_not_available(trained_run, tmp_path):
    from bps_vit.publish.card import build_model_card

    run = tmp_path / "bare"
    run.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (run / name).write_text((trained_run["run"] / name).read_text())
    (run / "all_results.json").write_text("{not json")
    card = build_model_card(run)
    assert card.data.eval_results is None
    assert card.text.count("not available") >= 4
    yaml.safe_load(str(card).split("---")[1])


def test_version_0_results_load_and_are_rejudged_and_a_newer_version_is_refused(trained_run, tmp_path):
    from bps_vit.publish import PublishError, publish
    from bps_vit.publish.card import build_model_card

    run = tmp_path / "old-run"
    run.mkdir()
    for name in ("config.json", "preprocessor_config.json", "model.safetensors"):
        (run / name).write_bytes((trained_run["run"] / name).read_bytes())
    old = json.loads(json.dumps(BPS_RESULTS))
    # version 0 used a fixed +-0.1: 0.55 on 2000 images was "near chance"; the binomial band (+-0.022) flags it
    old["sham_control"] = {"n": 2000, "balanced_accuracy": 0.55, "batch_signature_suspected": False,
                           "interpretation": "near chance (0.5)"}
    (run / "bps_results.json").write_text(json.dumps(old))
    loaded = RunResults.from_json(run / "bps_results.json")
    assert loaded.schema_version == SCHEMA_VERSION
    assert loaded.splits["test"].per_condition[0].condition == "Fe 0.82Gy 4h"
    assert loaded.sham_control.batch_signature_suspected is True
    assert "0.8125" in build_model_card(run).text
    (run / "bps_results.json").write_text(json.dumps({**old, "schema_version": SCHEMA_VERSION + 1}))
    newer = rf"schema_version {SCHEMA_VERSION + 1} is newer.*version {SCHEMA_VERSION}"
    with pytest.raises(PublishError, match=newer):
        publish(run, dry_run=True, export_dir=tmp_path / "out")


def test_the_one_card_template_sits_in_the_package():
    from bps_vit.publish.card import find_template

    assert find_template() == REPO / "bps_vit" / "publish" / "model_card.md"
    assert not (REPO / "model_card.md").exists() and not (REPO / "setup.py").exists()  # no second copy, no hook


@pytest.mark.slow
def test_a_built_wheel_ships_the_card_template(tmp_path):
    """`pip install .` (non-editable) must find the template: package data, no build hook."""
    import shutil
    import zipfile

    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "bps_vit", source / "bps_vit", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("bps_vit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("bps_vit/publish/model_card.md")
    assert shipped == (REPO / "bps_vit" / "publish" / "model_card.md").read_bytes()


# ----------------------------------------------------------------------------- export folder


def test_dry_run_folder_has_exactly_the_listed_files(trained_run, tmp_path):
    from bps_vit.publish import publish

    out = tmp_path / "export"
    result = publish(trained_run["run"], "alice/bps-vit-tiny", dry_run=True, export_dir=out)
    assert not result.pushed
    assert export_files(out) == EXPECTED_EXPORT == set(result.files)
    # every file gets the user's umask, the weights too: safetensors writes them 0600 (issue 23 item 11)
    umask = os.umask(0o022)
    os.umask(umask)
    assert {name: oct((out / name).stat().st_mode & 0o777) for name in result.files} == \
        {name: oct(0o666 & ~umask) for name in result.files}
    config = json.loads((out / "preprocessor_config.json").read_text())
    assert config["bps_preprocessing"]["low_percentile"] == 0.5 and config["do_rescale"] is True
    # re-running replaces the previous export in place
    publish(trained_run["run"], "alice/bps-vit-tiny", dry_run=True, export_dir=out)
    assert export_files(out) == EXPECTED_EXPORT


def test_publish_lists_the_model_folder_once_and_logs_the_pickles_left_out(trained_run, tmp_path, caplog):
    from bps_vit.publish import publish

    # observed, not counted: each listing of the model folder logs the pickles it leaves out, so one line = one listing
    with caplog.at_level(logging.INFO, logger="bps_vit.publish.export"):
        result = publish(trained_run["run"], dry_run=True, export_dir=tmp_path / "out")
    assert "training_args.bin" not in result.files and (trained_run["run"] / "training_args.bin").is_file()
    assert "model.safetensors" in result.files
    left_out = [r.getMessage() for r in caplog.records if "leaving pickle files" in r.getMessage()]
    assert left_out == [f"{trained_run['run']}: leaving pickle files ['training_args.bin'] out of the export "
                        "(safetensors only)."]


def test_export_refuses_foreign_folder_and_pickle_only_model(trained_run, tmp_path):
    from bps_vit.publish import PublishError, publish

    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(PublishError, match="not part of an export"):
        publish(trained_run["run"], dry_run=True, export_dir=foreign)
    assert (foreign / "thesis.tex").read_text() == "precious"

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((trained_run["run"] / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(PublishError, match=r"pickle files \['pytorch_model.bin'\].*refused"):
        publish(pickled, dry_run=True, export_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_token_like_string_in_run_files_is_refused(trained_run, tmp_path, with_token):
    import shutil

    from bps_vit.publish import TokenLeakError, publish

    run = tmp_path / "leaky"
    shutil.copytree(trained_run["run"], run)
    results = json.loads((run / "bps_results.json").read_text())
    results["data"]["data_dir"] = "hf_" + "a1B2" * 9
    (run / "bps_results.json").write_text(json.dumps(results))
    with pytest.raises(TokenLeakError, match="bps_results.json") as err:
        publish(run, dry_run=True, export_dir=tmp_path / "out")
    assert "a1B2a1B2" not in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "source, exported_as",
    [("explain/explain_metrics.json", "explain_metrics.json"),
     ("explain/figures/shap/shap_grid.png", "figures/explain/shap/shap_grid.png")],
)
def test_token_in_a_nested_file_is_refused(trained_run, tmp_path, source, exported_as):
    """The scan goes into every folder (mutant M10b): explain metrics and figures two levels down included."""
    import shutil

    from bps_vit.publish import TokenLeakError, publish

    run = tmp_path / "nested"
    shutil.copytree(trained_run["run"], run)
    token = "hf_" + "Q9w" * 11
    if source.endswith(".json"):
        metrics = json.loads((run / source).read_text())
        metrics["settings"] = {"hub_token": token}
        (run / source).write_text(json.dumps(metrics))
    else:
        with (run / source).open("ab") as handle:  # e.g. a PNG text chunk someone filled
            handle.write(token.encode())
    with pytest.raises(TokenLeakError) as err:
        publish(run, dry_run=True, export_dir=tmp_path / "out")
    assert exported_as in str(err.value) and token not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_scan_for_tokens_reads_every_depth(tmp_path):
    from bps_vit.publish.export import scan_for_tokens

    for relative in ("top.txt", "a/one.txt", "a/b/c/deep.bin"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"nothing here")
    (tmp_path / "a/b/c/deep.bin").write_bytes(b"\x00" * 10 + b"hf_" + b"x7Y" * 11)
    (tmp_path / "a/one.txt").write_text("the literal secret s3cr3t-value")
    assert scan_for_tokens(tmp_path) == ["a/b/c/deep.bin"]
    assert scan_for_tokens(tmp_path, token="s3cr3t-value") == ["a/b/c/deep.bin", "a/one.txt"]


# ----------------------------------------------------------------------------- push (fake HfApi)


def test_push_makes_one_create_repo_and_one_commit(trained_run, tmp_path, with_token):
    from bps_vit.publish import publish

    api = RecordingFakeHfApi(user="alice")
    out = tmp_path / "export"
    result = publish(trained_run["run"], "alice/bps-vit-tiny", private=True, export_dir=out, api=api)
    assert api.methods() == ["whoami", "create_repo", "upload_folder"]
    create, upload = api.calls[1], api.calls[2]
    assert create == {"method": "create_repo", "repo_id": "alice/bps-vit-tiny", "private": True, "exist_ok": True}
    assert upload["repo_id"] == "alice/bps-vit-tiny"
    assert upload["commit_message"] == "Publish bps-vit run tiny-run"
    assert set(upload["files"]) == EXPECTED_EXPORT and upload["token_given"]
    assert result.pushed and result.commit_url.endswith("abc123")


def test_push_failing_midway_keeps_export_and_rerun_pushes(trained_run, tmp_path, with_token):
    from bps_vit.publish import PublishError, publish

    api = RecordingFakeHfApi(user="alice", fail_uploads=1)
    out = tmp_path / "export"
    with pytest.raises(PublishError, match="intact; re-run the same publish command") as err:
        publish(trained_run["run"], "alice/bps-vit-tiny", export_dir=out, api=api, commit_message="run 7")
    assert "connection reset" in str(err.value)
    assert export_files(out) == EXPECTED_EXPORT  # nothing lost
    result = publish(trained_run["run"], "alice/bps-vit-tiny", export_dir=out, api=api, commit_message="run 7")
    assert result.pushed
    uploads = [c for c in api.calls if c["method"] == "upload_folder"]
    assert len(uploads) == 2 and uploads[1]["commit_message"] == "run 7"
    assert set(uploads[1]["files"]) == EXPECTED_EXPORT


@pytest.mark.parametrize(
    "api_kwargs, repo_id, message",
    [
        ({"whoami_error": "401"}, "alice/x", "token was rejected"),
        ({"create_error": "403"}, "alice/x", "permission denied"),
        ({"user": "alice", "orgs": ["lab"]}, "nasa/x", "Permission denied: the token belongs to 'alice'"),
        ({"role": "read"}, "alice/x", "read-only"),
    ],
)
def test_permission_faults_fail_with_a_clear_message(trained_run, tmp_path, with_token, api_kwargs, repo_id, message):
    from bps_vit.publish import PublishError, publish

    for key in ("whoami_error", "create_error"):
        if key in api_kwargs:
            api_kwargs[key] = http_error(int(api_kwargs[key]))
    api = RecordingFakeHfApi(**api_kwargs)
    with pytest.raises(PublishError, match=message):
        publish(trained_run["run"], repo_id, export_dir=tmp_path / "export", api=api)
    assert "upload_folder" not in api.methods()


def test_invalid_repo_id_and_missing_token_fail_before_any_work(trained_run, tmp_path, without_token):
    from bps_vit.publish import PublishError, publish

    api = RecordingFakeHfApi()
    with pytest.raises(PublishError, match="not a valid Hub repo id"):
        publish(trained_run["run"], "alice/bad name!", export_dir=tmp_path / "a", api=api)
    with pytest.raises(PublishError, match="No Hugging Face token found. Set HF_TOKEN"):
        publish(trained_run["run"], "alice/ok", export_dir=tmp_path / "b", api=api)
    assert api.calls == [] and not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_token_never_in_outputs_or_logs(trained_run, tmp_path, with_token, caplog, capsys):
    from bps_vit.publish import PublishError, publish

    caplog.set_level(logging.DEBUG)
    out = tmp_path / "export"
    publish(trained_run["run"], "alice/bps-vit-tiny", export_dir=out, api=RecordingFakeHfApi())
    leaky = RecordingFakeHfApi(create_error=RuntimeError(f"server echoed Authorization: Bearer {FAKE_TOKEN}"))
    with pytest.raises(PublishError) as err:
        publish(trained_run["run"], "alice/bps-vit-tiny", export_dir=out, api=leaky)
    captured = capsys.readouterr()
    texts = [caplog.text, captured.out, captured.err, str(err.value)]
    texts += [p.read_bytes().decode("latin-1") for p in out.rglob("*") if p.is_file()]
    assert caplog.text  # the logs were captured
    for text in texts:
        assert FAKE_TOKEN not in text
        assert not re.search(r"hf_[A-Za-z0-9]{30,}", text)


# ----------------------------------------------------------------------------- the scripts


def run_script(args, env_overrides, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(env_overrides)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


@pytest.mark.slow
def test_publish_script_without_token_or_network_fails_fast(trained_run, tmp_path):
    import time

    script = str(REPO / "scripts" / "publish.py")
    base = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    no_token = run_script([script, "--model", str(trained_run["run"]), "--repo_id", "alice/x"], base, tmp_path)
    assert no_token.returncode == 1 and "No Hugging Face token found" in no_token.stderr
    offline = run_script(
        [script, "--model", str(trained_run["run"]), "--repo_id", "alice/x"], {**base, "HF_TOKEN": FAKE_TOKEN},
        tmp_path,
    )
    assert offline.returncode == 1 and "HF_HUB_OFFLINE" in offline.stderr
    # "network down": a real HfApi against a closed local port
    unreachable = run_script(
        [script, "--model", str(trained_run["run"]), "--repo_id", "alice/x"],
        {**base, "HF_HUB_OFFLINE": "0", "HF_TOKEN": FAKE_TOKEN, "HF_ENDPOINT": "http://127.0.0.1:9"},
        tmp_path,
    )
    assert unreachable.returncode == 1 and "cannot reach the Hugging Face Hub" in unreachable.stderr
    assert time.monotonic() - started < 60
    for result in (no_token, offline, unreachable):
        assert FAKE_TOKEN not in result.stdout + result.stderr
    assert not (trained_run["run"] / "hub_export").exists()  # failed before any heavy work


@pytest.mark.slow
def test_publish_script_dry_run(trained_run, tmp_path):
    out = tmp_path / "dry"
    result = run_script(
        [str(REPO / "scripts" / "publish.py"), "--model", str(trained_run["run"]), "--repo_id", "alice/x",
         "--dry_run", "--export_dir", str(out)],
        {"HF_HUB_OFFLINE": "1", "HF_TOKEN": FAKE_TOKEN}, tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "nothing pushed" in result.stdout
    assert export_files(out) == EXPECTED_EXPORT
    typo = run_script([str(REPO / "scripts" / "publish.py"), "--model", str(tmp_path / "outputs" / "tyop"),
                       "--dry_run"], {"HF_HUB_OFFLINE": "1"}, tmp_path)
    assert typo.returncode == 2 and "error: --model" in typo.stderr and "Traceback" not in typo.stderr  # usage


# ----------------------------------------------------------------------------- round trip


def test_round_trip_dry_run_export_loads_and_predicts_identically(trained_run, tmp_path):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from bps_vit.imaging import Stretch
    from bps_vit.model import InferenceModel, load_for_inference
    from bps_vit.predict import predict_paths
    from bps_vit.publish import publish

    out = tmp_path / "export"
    publish(trained_run["run"], "alice/bps-vit-tiny", dry_run=True, export_dir=out)
    images = trained_run["images"]
    in_memory = predict_paths(InferenceModel.of(trained_run["model"], trained_run["processor"]), images,
                              batch_size=3, progress=False)

    exported = load_for_inference(out, attn_implementation="sdpa")
    assert exported.stretch == Stretch(low_percentile=0.5, high_percentile=99.5)  # travelled with the model
    loaded = predict_paths(exported, images, batch_size=5, progress=False)
    assert [p.label for p in loaded] == [p.label for p in in_memory]
    np.testing.assert_allclose([p.probs for p in loaded], [p.probs for p in in_memory], atol=1e-6)
    assert len({p.label for p in in_memory}) >= 1 and all(p.ok for p in loaded)

    # "as a user would": plain from_pretrained of model and processor; the stretch travels in the processor
    plain = AutoModelForImageClassification.from_pretrained(out)
    plain_processor = AutoImageProcessor.from_pretrained(out)
    assert plain.config.id2label == {0: "Fe", 1: "X-ray"}
    as_user = predict_paths(InferenceModel.of(plain, plain_processor), images, batch_size=8, progress=False)
    np.testing.assert_allclose([p.probs for p in as_user], [p.probs for p in in_memory], atol=1e-6)


def test_pipeline_on_8bit_images_with_export(trained_run, tmp_path):
    import torch
    from PIL import Image
    from transformers import pipeline

    from bps_vit.publish import publish

    out = tmp_path / "export"
    publish(trained_run["run"], dry_run=True, export_dir=out)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (90, 80), dtype=np.uint8))
    classifier = pipeline("image-classification", model=str(out))
    result = classifier(image)
    assert {r["label"] for r in result} == {"Fe", "X-ray"}
    assert abs(sum(r["score"] for r in result) - 1) < 1e-5
    # the pipeline rescales 8-bit by 1/255 (do_rescale=True kept in the export) and matches a manual forward
    inputs = classifier.image_processor(images=image.convert("RGB"), return_tensors="pt")
    with torch.no_grad():
        probs = classifier.model(**inputs).logits.softmax(-1)[0]
    by_label = {r["label"]: r["score"] for r in result}
    assert by_label["Fe"] == pytest.approx(float(probs[0]), abs=1e-5)


def test_publish_refuses_explanations_of_another_model(trained_run, tmp_path):
    """A retrain into an old folder kept its explain/: the export must not pair new weights with old maps."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run["run"], run)
    stale = json.loads((run / "explain" / "explain_metrics.json").read_text())
    stale["model_fingerprint"] = "0" * 64  # made by another model
    (run / "explain" / "explain_metrics.json").write_text(json.dumps(stale))
    with pytest.raises(PublishError) as error:
        build_export(run, tmp_path / "export")
    message = str(error.value)
    assert "explain_metrics.json" in message and f"python scripts/explain.py --model {run}" in message
    assert not (tmp_path / "export").exists()
    del stale["model_fingerprint"]  # an explanation that cannot show which model made it is refused too
    (run / "explain" / "explain_metrics.json").write_text(json.dumps(stale))
    with pytest.raises(PublishError, match="fingerprint"):
        build_export(run, tmp_path / "export")
