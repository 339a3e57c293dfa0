"""The accelerate launch configs in configs/accelerate/ parse and validate as `accelerate launch` would read them.

No hardware is needed: the launcher's own parser and validator run; nothing is launched."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
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


def test_fsdp_wraps_a_layer_class_the_vit_model_has():
    import transformers.models.vit.modeling_vit as vit

    args, defaults = _validated(CONFIGS / "fsdp.yaml")
    assert args.use_fsdp and args.fsdp_auto_wrap_policy == "TRANSFORMER_BASED_WRAP"
    assert hasattr(vit, args.fsdp_transformer_layer_cls_to_wrap)
    assert defaults.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # one safetensors file, like DDP


def test_a_missing_launch_config_names_the_file(tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file

    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config_from_file(str(tmp_path / "nope.yaml"))
