from __future__ import annotations

from pathlib import Path

import pytest

from facecls.config import ConfigError, RunConfig
from facecls.config_io import from_dict, load_yaml, replace, save_yaml, to_dict
from facecls.config_rules import resolve


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = replace(RunConfig(), train={"epochs": 3, "lr": 0.001}, data={"split_file": "x.csv"})
    save_yaml(config, tmp_path / "c.yaml")
    assert load_yaml(tmp_path / "c.yaml") == config


def test_recipes_fill_unset_fields_only() -> None:
    report = resolve(replace(RunConfig(), train={"recipe": "report"})).train
    assert (report.optimizer, report.lr, report.weight_decay) == ("adam", 1e-4, 5e-3)
    assert (report.schedule, report.label_smoothing, report.flip_tta) == ("constant", 0.0, False)
    fast = resolve(RunConfig()).train
    assert (fast.optimizer, fast.schedule, fast.flip_tta) == ("adamw", "onecycle", True)
    mine = resolve(replace(RunConfig(), train={"lr": 0.5, "epochs": 2})).train
    assert (mine.lr, mine.epochs, mine.optimizer) == (0.5, 2, "adamw")
    assert resolve(resolve(RunConfig())) == resolve(RunConfig())  # idempotent


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"train": {"epoch": 3}}, "unknown key"),
        ({"train": {"epochs": "3"}}, "expected int"),
        ({"train": {"epochs": True}}, "expected int"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"train": {"class_weights": "square"}}, "class_weights"),
        ({"data": {"image_size": 8}}, "image_size"),
        ({"colour": 1}, "unknown key"),
    ],
)
def test_invalid_values_raise(values: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        from_dict(values)


def test_int_accepted_for_float() -> None:
    assert from_dict({"train": {"lr": 1}}).train.lr == 1.0
    assert isinstance(to_dict(resolve(from_dict({})))["train"]["lr"], float)


def test_auto_precision_is_bf16_only_where_the_cpu_has_it(tmp_path, monkeypatch) -> None:
    import torch

    from facecls import runtime as optimization

    with_bf16, without = tmp_path / "with", tmp_path / "without"
    with_bf16.write_text("flags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n")
    without.write_text("flags\t\t: fpu sse2 avx2 avx512f\n")
    check = optimization.cpu_has_native_bf16.__wrapped__
    assert check(str(with_bf16)) and not check(str(without))
    assert not check(str(tmp_path / "missing"))  # no /proc (macOS, Windows): fp32
    cpu = torch.device("cpu")
    for native in (True, False):
        monkeypatch.setattr(optimization, "cpu_has_native_bf16", lambda native=native: native)
        assert optimization.autocast_dtype("auto", cpu) == (torch.bfloat16 if native else None)
        assert optimization.autocast_dtype("fp32", cpu) is None
        assert optimization.autocast_dtype("bf16", cpu) == torch.bfloat16
        assert optimization.autocast_dtype("auto", torch.device("cuda")) == torch.bfloat16
