"""The network computes the authors' function (parity fixtures), loads their layouts strictly, and
refuses inputs outside its size contract."""

from __future__ import annotations

import pathlib
import warnings

import pytest
import torch
from safetensors.torch import load_file

from lir.network import LIR, LIRConfig, config_from_state_dict, drop_fixed_kernels
from lir.network.literal import literal_copy

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
LAYOUTS = ["lir_parity_small.safetensors", "lir_parity_small_cpu_layout.safetensors"]
SMALL = LIRConfig(dim=16, left_blk_num=(1, 1), bottom_blk_num=1, right_blk_num=(1, 1))


def read_fixture(name: str) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    data = load_file(FIXTURES / name)
    weights = {k[len("weights."):]: v for k, v in data.items() if k.startswith("weights.")}
    return weights, data["input"], data["output_fp64"]


def fixture_model(name: str) -> tuple[LIR, torch.Tensor, torch.Tensor]:
    weights, x, expected = read_fixture(name)
    model = LIR.from_config(config_from_state_dict(weights))
    model.load_state_dict(weights)
    return model.eval(), x, expected


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("form", ["fast", "fast_channels_last", "literal"])
def test_float32_matches_authors_output(layout: str, form: str) -> None:
    model, x, expected = fixture_model(layout)
    if form == "literal":
        model = literal_copy(model)
    if form == "fast_channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = model(x)
    assert y.dtype == torch.float32 and y.shape == expected.shape
    assert (y.double() - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("literal", [False, True])
def test_float64_matches_authors_output(layout: str, literal: bool) -> None:
    model, x, expected = fixture_model(layout)
    model = (literal_copy(model) if literal else model).double()
    with torch.no_grad():
        y = model(x.double())
    assert (y - expected).abs().max().item() < 1e-9


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_bfloat16_on_cpu_runs_close_to_float32(memory_format: torch.memory_format) -> None:
    model, x, expected = fixture_model(LAYOUTS[0])
    model = model.to(torch.bfloat16, memory_format=memory_format)
    with torch.no_grad():
        y = model(x.to(torch.bfloat16).contiguous(memory_format=memory_format))
    assert y.dtype == torch.bfloat16
    assert (y.double() - expected).abs().max().item() < 0.1


def test_fast_form_refolds_after_reload() -> None:
    model, x, _ = fixture_model(LAYOUTS[0])
    with torch.no_grad():
        before = model(x)
        state = model.state_dict()
        state["EAA1.0.stage2.0.alpha"] = state["EAA1.0.stage2.0.alpha"] * 3.0
        model.load_state_dict(state)
        after = model(x)
        reference = literal_copy(model)(x)
    assert (after - before).abs().max().item() > 1e-5
    assert (after - reference).abs().max().item() < 1e-5


def test_gradients_flow_through_fast_form() -> None:
    model, x, _ = fixture_model(LAYOUTS[0])
    model.train()
    model(x).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_training_works_after_an_inference_mode_pass() -> None:
    # The cached filter constants made during a restore (inference mode) must not be inference
    # tensors, or training the same network afterwards fails in backward.
    from lir.network import blocks

    blocks.filter_bank.cache_clear()
    blocks.blur_taps.cache_clear()
    model, x, _ = fixture_model(LAYOUTS[0])
    with torch.inference_mode():
        model(x)
    model.train()
    model(x).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_torch_compile_traces_the_network_cleanly() -> None:
    # The cached filter constants are made afresh while traced: Dynamo warns about a cache it traces.
    model, x, _ = fixture_model(LAYOUTS[0])
    torch._dynamo.reset()
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        compiled = torch.compile(model, backend="eager", fullgraph=True)(x)
    assert not [str(w.message) for w in caught if "lru_cache" in str(w.message)]
    with torch.no_grad():
        assert torch.equal(compiled, model(x))


def test_default_config_has_the_authors_parameter_count() -> None:
    assert sum(p.numel() for p in LIR().parameters()) == 7_310_915


def test_state_dict_round_trip(tmp_path: pathlib.Path) -> None:
    from safetensors.torch import save_file

    model, x, _ = fixture_model(LAYOUTS[1])
    state = model.state_dict()
    assert not any(k.endswith(("Sobel_x", "Edge", "Laplation")) for k in state)
    save_file(state, tmp_path / "m.safetensors")
    again = LIR.from_config(config_from_state_dict(load_file(tmp_path / "m.safetensors")))
    again.load_state_dict(load_file(tmp_path / "m.safetensors"))
    with torch.no_grad():
        assert torch.equal(again.eval()(x), model(x))


def test_cpu_layout_kernels_are_checked() -> None:
    weights, _, _ = read_fixture(LAYOUTS[1])
    key = "EAA1.0.stage2.0.Sobel_x"
    weights[key] = weights[key] * 2
    with pytest.raises(RuntimeError, match=key):
        LIR.from_config(SMALL).load_state_dict(weights)
    with pytest.raises(ValueError, match=key):
        drop_fixed_kernels(weights)


def test_drop_fixed_kernels_keeps_learned_weights_only() -> None:
    cpu, _, _ = read_fixture(LAYOUTS[1])
    gpu, _, _ = read_fixture(LAYOUTS[0])
    dropped = drop_fixed_kernels(cpu)
    assert dropped.keys() == gpu.keys()
    assert len(cpu) == len(gpu) + 7 * 20


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda sd: sd.pop("EAA3.0.stage3.1.sg.gamma"), "EAA3.0.stage3.1.sg.gamma"),
        (lambda sd: sd.__setitem__("EAA1.0.extra", torch.zeros(1)), "EAA1.0.extra"),
        (lambda sd: sd.__setitem__("Conv_tail.conv.weight", torch.zeros(3, 32, 3, 3)), "Conv_tail.conv.weight"),
    ],
    ids=["missing", "unexpected", "wrong-shape"],
)
def test_loading_is_strict_and_names_the_key(edit, message: str) -> None:
    weights, _, _ = read_fixture(LAYOUTS[0])
    edit(weights)
    with pytest.raises(RuntimeError, match=message.replace(".", r"\.")):
        LIR.from_config(SMALL).load_state_dict(weights)


def test_config_read_back_from_checkpoints() -> None:
    weights, _, _ = read_fixture(LAYOUTS[1])
    assert config_from_state_dict(weights) == SMALL
    odd = LIRConfig(dim=32, left_blk_num=(2, 1), bottom_blk_num=0, right_blk_num=(1, 3))
    assert config_from_state_dict(LIR.from_config(odd).state_dict()) == odd
    assert LIRConfig.from_dict(odd.to_dict()) == odd
    assert config_from_state_dict(LIR().state_dict()) == LIRConfig()


@pytest.mark.parametrize(
    "state, message",
    [
        ({"conv.weight": torch.zeros(3, 3, 3, 3)}, "not an LIR checkpoint"),
        ({"params": torch.zeros(1)}, "lir convert"),
        ({"module.Conv_head.conv.weight": torch.zeros(16, 3, 3, 3)}, "lir convert"),
        ({"Conv_head.conv.weight": torch.zeros(20, 3, 3, 3)}, "multiple of 16"),
        ({"Conv_head.conv.weight": torch.zeros(16, 3, 3, 3), "EAA1.1.x": torch.zeros(1)}, "EAA1"),
    ],
)
def test_non_lir_checkpoints_are_refused(state: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_from_state_dict(state)


@pytest.mark.parametrize(
    "field, value", [("dim", 40), ("dim", 0), ("left_blk_num", (1,)), ("bottom_blk_num", -1), ("img_channel", 1.5)]
)
def test_bad_configs_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        LIRConfig(**{field: value})


def test_unknown_config_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="width"):
        LIRConfig.from_dict({"width": 48})


@pytest.mark.parametrize("shape", [(1, 3, 128, 144), (1, 3, 96, 128), (1, 3, 100, 128), (3, 128, 128), (1, 4, 128, 128)])
def test_input_outside_the_size_contract_is_refused(shape: tuple[int, ...]) -> None:
    model = LIR.from_config(SMALL).eval()
    with pytest.raises(ValueError, match="multiples of 32|N×C×H×W|channels"):
        model(torch.rand(shape))
