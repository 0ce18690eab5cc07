"""The accelerate configs under configs/accelerate/ are what they say: each loads with accelerate's own
reader, names only options `accelerate launch` knows, and the FSDP ones become an FSDP2 full-shard
plugin through accelerate's own launch path (config file → launch arguments → environment → plugin)."""
from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType
from accelerate.utils.launch import prepare_multi_gpu_env

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
EXPECTED = {  # file: (distributed type, machines, processes, ZeRO stage)
    "ddp.yaml": (DistributedType.MULTI_GPU, 1, 8, None),
    "fsdp2.yaml": (DistributedType.FSDP, 1, 8, None),
    "zero2.yaml": (DistributedType.DEEPSPEED, 1, 8, 2),
    "zero3.yaml": (DistributedType.DEEPSPEED, 1, 8, 3),
    "multi-node-fsdp2.yaml": (DistributedType.FSDP, 2, 16, None),
}


def test_every_shipped_config_is_listed():
    assert {p.name for p in CONFIGS.glob("*.yaml")} == EXPECTED.keys()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_and_names_only_launch_options(name):
    cfg = load_config_from_file(str(CONFIGS / name))
    kind, machines, processes, stage = EXPECTED[name]
    assert (cfg.distributed_type, cfg.num_machines, cfg.num_processes) == (kind, machines, processes)
    assert cfg.mixed_precision == "bf16"
    known = {o for action in launch_command_parser()._actions for o in action.option_strings}
    nested = {**(cfg.fsdp_config or {}), **(cfg.deepspeed_config or {})}
    assert not [k for k in nested if f"--{k}" not in known]
    if stage is not None:
        assert cfg.deepspeed_config["zero_stage"] == stage


@pytest.mark.parametrize("name", ["fsdp2.yaml", "multi-node-fsdp2.yaml"])
def test_fsdp_configs_become_an_fsdp2_full_shard_plugin(name, monkeypatch):
    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / name), "-m", "personalign", "train"])
    args, _, _ = _validate_launch_command(args)
    env = prepare_multi_gpu_env(args)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.state_dict_type.name == "SHARDED_STATE_DICT" and plugin.cpu_ram_efficient_loading
    assert plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]
