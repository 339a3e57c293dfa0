"""The accelerate launch configs in configs/accelerate/ parse and validate as `accelerate launch` would read them.

No hardware is needed: the launcher's own parser and validator run; nothing is launched."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.paths import REPO
from tests.support.tiny_models import ARCHITECTURE_IDS, tiny_configs

CONFIGS = REPO / "configs" / "accelerate"
EXPECTED = {  # file: (distributed type, processes, machines)
    "single_gpu.yaml": ("NO", 1, 1),
    "multi_gpu.yaml": ("MULTI_GPU", 8, 1),
    "multi_node.yaml": ("MULTI_GPU", 16, 2),
    "fsdp.yaml": ("FSDP", 8, 1),
}


def _validated(path: Path):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(path), "scripts/train.py", "configs/demo.yaml"])
    args, defaults, _ = _validate_launch_command(args)
    return args, defaults


def test_every_config_is_listed():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_launch_config_parses_and_validates(name):
    args, defaults = _validated(CONFIGS / name)
    distributed_type, processes, machines = EXPECTED[name]
    assert defaults.distributed_type.value == distributed_type
    assert (args.num_processes, args.num_machines) == (processes, machines)
    assert args.mixed_precision == "bf16"
    assert not args.cpu
    assert args.training_script_args == ["configs/demo.yaml"]
    if machines > 1:
        assert args.main_process_ip and args.main_process_port
        assert processes % machines == 0


def _launch_environment(path: Path) -> dict[str, str]:
    """The FSDP environment `accelerate launch` would give each process for this config."""
    from accelerate.utils.launch import prepare_multi_gpu_env

    args, _ = _validated(path)
    return {k: v for k, v in prepare_multi_gpu_env(args).items() if k.startswith(("FSDP_", "ACCELERATE_"))}


@pytest.mark.parametrize("architecture", ARCHITECTURE_IDS)
def test_fsdp_wraps_the_classes_each_model_lists_in_no_split_modules(architecture, monkeypatch):
    """The shipped FSDP config names no class, so accelerate's own wrap policy takes the model's `_no_split_modules`:
    built here as each process would build it, for a tiny model of every supported architecture."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy

    from bps_vit.backbones import encoder_blocks
    from bps_vit.model import build_model_from_config

    args, defaults = _validated(CONFIGS / "fsdp.yaml")
    assert args.use_fsdp and args.fsdp_auto_wrap_policy == "TRANSFORMER_BASED_WRAP"
    assert args.fsdp_transformer_layer_cls_to_wrap is None  # a fixed class would wrap nothing in other models
    assert defaults.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # one safetensors file, like DDP
    for key, value in _launch_environment(CONFIGS / "fsdp.yaml").items():
        monkeypatch.setenv(key, value)
    model = build_model_from_config(tiny_configs()[architecture].to_dict())
    policy = fsdp2_prepare_auto_wrap_policy(FullyShardedDataParallelPlugin(), model)
    wrapped = {type(module).__name__ for module in model.modules() if policy(module)}
    present = {type(module).__name__ for module in model.modules()}
    assert wrapped == set(model._no_split_modules) & present and wrapped
    # every encoder block lies inside a shard unit (Swin's blocks inside its wrapped stages)
    units = [module for module in model.modules() if policy(module)]
    for block in encoder_blocks(model):
        assert any(block is unit or any(block is inner for inner in unit.modules()) for unit in units)


def test_a_missing_launch_config_names_the_file(tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file

    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config_from_file(str(tmp_path / "nope.yaml"))
