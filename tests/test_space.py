"""The Hub Space export: exactly README.md (front matter), app.py and requirements.txt; the dry run through
scripts/publish.py; the push through a recording fake HfApi (token checked first, one commit, never written)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import tomllib
import yaml

from tests.support.images import bps_like_tiff
from tests.support.paths import REPO
from tests.support.tiny_models import LABELS, save_tiny_model
from tests.test_hub import FAKE_TOKEN, RecordingFakeHfApi, http_error


class SpaceFakeHfApi(RecordingFakeHfApi):
    """The recording fake, also noting the repo type of each call."""

    def create_repo(self, repo_id, **kwargs):
        out = super().create_repo(repo_id, **kwargs)
        self.calls[-1].update(repo_type=kwargs.get("repo_type"), space_sdk=kwargs.get("space_sdk"))
        return out

    def upload_folder(self, **kwargs):
        out = super().upload_folder(**kwargs)
        self.calls[-1].update(repo_type=kwargs.get("repo_type"))
        return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("space") / "run")


def publish_main(argv) -> int:
    spec = importlib.util.spec_from_file_location("publish_script", REPO / "scripts" / "publish.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def front_matter(readme: str) -> dict:
    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n")[1])


def test_dry_run_writes_exactly_the_space_files(model_dir, tmp_path, monkeypatch):
    from packaging.requirements import Requirement

    from bps_vit import __version__

    monkeypatch.delenv("HF_TOKEN", raising=False)
    space = tmp_path / "space"
    code = publish_main(["--model", str(model_dir), "--dry_run", "--export_dir", str(tmp_path / "hub"),
                         "--repo_id", "alice/bps-vit-tiny", "--space_repo_id", "alice/bps-vit-app",
                         "--space_export_dir", str(space)])
    assert code == 0
    assert sorted(p.name for p in space.iterdir()) == ["README.md", "app.py", "requirements.txt"]
    meta = front_matter((space / "README.md").read_text())
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert meta["models"] == ["alice/bps-vit-tiny"]
    app = (space / "app.py").read_text()
    compile(app, "app.py", "exec")
    assert 'serve("alice/bps-vit-tiny"' in app and len(app.splitlines()) <= 6
    assert (space / "requirements.txt").read_text() == f"bps-vit[app]=={__version__}\n"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__  # the pin names a version that exists
    # the Space runs a gradio that the [app] extra (the version the browser test runs) allows
    (app_pin,) = [Requirement(r) for r in project["optional-dependencies"]["app"] if r.startswith("gradio")]
    assert app_pin.specifier.contains(meta["sdk_version"]), (meta["sdk_version"], str(app_pin))


def test_push_checks_the_token_first_and_makes_one_commit(model_dir, tmp_path, monkeypatch):
    from bps_vit.publish import PublishArguments
    from bps_vit.publish.space import SpaceArguments, plan_space, run_space

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    api = SpaceFakeHfApi(user="alice")
    args = PublishArguments(model=str(model_dir), repo_id="alice/bps-vit-tiny")
    plan = plan_space(SpaceArguments(space_repo_id="alice/bps-vit-app", space_export_dir=str(tmp_path / "s")), args,
                      api=api)
    assert api.methods() == ["whoami"] and not (tmp_path / "s").exists()  # checked before anything is built
    result = run_space(plan)
    assert result.pushed and api.methods() == ["whoami", "create_repo", "upload_folder"]
    create, upload = api.calls[1], api.calls[2]
    assert create["repo_type"] == "space" and create["space_sdk"] == "gradio" and upload["repo_type"] == "space"
    assert upload["files"] == ["README.md", "app.py", "requirements.txt"] and upload["token_given"]
    for path in (tmp_path / "s").iterdir():
        assert FAKE_TOKEN not in path.read_text()


def test_bad_space_requests_fail_before_any_work(model_dir, tmp_path, monkeypatch):
    from bps_vit.publish import PublishArgumentError, PublishArguments, PublishError
    from bps_vit.publish.space import SpaceArguments, plan_space

    space = SpaceArguments(space_repo_id="bob/app", space_export_dir=str(tmp_path / "s"))
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    api = SpaceFakeHfApi(user="alice")
    with pytest.raises(PublishError, match="neither 'bob'"):
        plan_space(space, PublishArguments(model=str(model_dir), repo_id="alice/m"), api=api)
    with pytest.raises(PublishError, match="needs --repo_id"):
        plan_space(space, PublishArguments(model=str(model_dir), dry_run=True), api=api)
    with pytest.raises(PublishArgumentError, match="--space_repo_id 'no spaces/allowed' is not a valid Hub repo id"):
        plan_space(SpaceArguments(space_repo_id="no spaces/allowed"), PublishArguments(model=str(model_dir)))
    with pytest.raises(PublishArgumentError, match="--repo_id 'm': give it as USER/NAME"):  # exit code 2
        plan_space(space, PublishArguments(model=str(model_dir), repo_id="m"), api=api)
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(PublishError, match="No Hugging Face token"):
        plan_space(SpaceArguments(space_repo_id="alice/app"), PublishArguments(model=str(model_dir), repo_id="alice/m"))
    assert not (tmp_path / "s").exists()


def test_examples_are_exported_beside_the_model_and_found_by_the_app(tmp_path, monkeypatch):
    from bps_vit.app import load_app_model

    monkeypatch.delenv("HF_TOKEN", raising=False)
    run = save_tiny_model(tmp_path / "run")
    for label in LABELS:
        (tmp_path / "bps" / "test" / label).mkdir(parents=True)
        for i in range(3):
            bps_like_tiff(tmp_path / "bps" / "test" / label / f"{label}_{i}.tif", label, seed=i)
    export = tmp_path / "hub"
    argv = ["--model", str(run), "--dry_run", "--export_dir", str(export), "--examples_from", str(tmp_path / "bps")]
    assert publish_main(argv) == 0
    assert sorted(p.name for p in (export / "examples").iterdir()) == ["Fe_0.tif", "Fe_1.tif", "X-ray_0.tif",
                                                                       "X-ray_1.tif"]
    assert publish_main(argv) == 0  # a second export replaces the first (examples/ is part of an export)
    app = load_app_model(str(export))
    assert sorted(Path(p).name for p in app.examples) == ["Fe_0.tif", "Fe_1.tif", "X-ray_0.tif", "X-ray_1.tif"]


def test_a_token_shaped_value_is_never_exported(tmp_path):
    from bps_vit.publish.export import TokenLeakError
    from bps_vit.publish.space import SpacePlan, build_space

    plan = SpacePlan("alice/m", "alice/app", tmp_path / "s", f"bps-vit[app] @ https://x/{FAKE_TOKEN}", dry_run=True)
    with pytest.raises(TokenLeakError, match=r"\['requirements.txt'\]") as err:
        build_space(plan)
    assert FAKE_TOKEN not in str(err.value) and not (tmp_path / "s").exists()
    assert not list(tmp_path.iterdir())  # the staging folder is gone too


def test_a_refused_space_push_says_why_and_keeps_the_folder(model_dir, tmp_path, monkeypatch):
    from bps_vit.publish import PublishArguments, PublishError
    from bps_vit.publish.space import SpaceArguments, plan_space, run_space

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    api = SpaceFakeHfApi(user="alice", create_error=http_error(403))
    plan = plan_space(SpaceArguments(space_repo_id="alice/app", space_export_dir=str(tmp_path / "s")),
                      PublishArguments(model=str(model_dir), repo_id="alice/m"), api=api)
    with pytest.raises(PublishError, match="permission denied \\(403\\) for alice/app") as err:
        run_space(plan)
    assert "is intact" in str(err.value) and FAKE_TOKEN not in str(err.value)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["README.md", "app.py", "requirements.txt"]
