"""src/io/checkpoint.py: torch-free .pth reading, safetensors, strict loading, .ckpt I/O and metadata."""

import json
import os
import pickle
import shlex
import struct
import zipfile
import zlib
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from safetensors.numpy import save_file

from src.io.checkpoint import (
    CheckpointMismatchError,
    UnsafePickleError,
    convert_checkpoint,
    infer_model_args,
    load_weights,
    read_checkpoint_meta,
    read_class_names,
    read_state_dict,
    save_weights,
)
from src.io.class_names import imagenet_class_names
from src.models import create_model

from ..conftest import FIXTURES, MINI_ARCH, MINI_CLASSES
from ..torch_zip import p_global, p_ordered_dict, p_str, p_tensor, state_to_pth, write_pth, write_zip

MINI_PTH = FIXTURES / "deit_mini.pth"


MINI_ST = FIXTURES / "deit_mini.safetensors"


def _mini(num_classes: int = MINI_CLASSES):
    """The mini DeiT of the fixtures, randomly initialised."""
    return create_model("deit_tiny_patch16_224", num_classes=num_classes, **MINI_ARCH)


def _params(model) -> dict[str, np.ndarray]:
    return {name: param.asnumpy().copy() for name, param in model.parameters_and_names()}


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    for name in a:
        assert a[name].dtype == np.float32 and a[name].shape == b[name].shape, name
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_pth_and_safetensors_read_identically():
    from_pth, from_st = read_state_dict(MINI_PTH), read_state_dict(MINI_ST)
    assert len(from_pth) == 152 and set(from_pth) == set(from_st)
    _assert_same(from_pth, from_st)


def test_bare_state_dict_pth(tmp_path):
    # Rewrite the fixture's pickle from {"model": sd} to sd: drop the outer dict, its key and final SETITEM.
    with zipfile.ZipFile(MINI_PTH) as zf:
        records = {name: zf.read(name) for name in zf.namelist()}
    pkl = records["deit_mini/data.pkl"]
    outer = b"\x80\x02}q\x00X\x05\x00\x00\x00modelq\x01"
    assert pkl.startswith(outer) and pkl.endswith(b"s.")
    records["deit_mini/data.pkl"] = b"\x80\x02" + pkl[len(outer):-2] + b"."
    bare = tmp_path / "bare.pth"
    with zipfile.ZipFile(bare, "w") as zf:
        for name, raw in records.items():
            zf.writestr(name, raw)
    _assert_same(read_state_dict(bare), read_state_dict(MINI_ST))


@pytest.mark.parametrize("storage_type,byteorder", [("FloatStorage", "little"), ("FloatStorage", "big"),
                                                    ("HalfStorage", "little"), ("BFloat16Storage", "big"),
                                                    ("DoubleStorage", "little")])
def test_pth_dtypes_and_byteorder(tmp_path, storage_type, byteorder):
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    expected = {"FloatStorage": x, "DoubleStorage": x, "HalfStorage": x.astype(np.float16).astype(np.float32),
                "BFloat16Storage": ((x.view(np.uint32) >> 16) << 16).view(np.float32)}[storage_type]
    path = tmp_path / "w.pt"
    state_to_pth(path, {"w": x, "b": x[0]}, storage_type, byteorder, wrap=False)
    state = read_state_dict(path)
    _assert_same(state, {"w": expected, "b": expected[0]})


def test_pth_views_offsets_and_shared_storage(tmp_path):
    flat = np.arange(24, dtype=np.float32)
    entries = {"t": ("0", 24, 2, (3, 4), (1, 3)),  # a transposed view starting at element 2
               "row": ("0", 24, 20, (4,), (1,)),
               "every5": ("0", 24, 0, (5,), (5,))}
    path = tmp_path / "views.bin"
    write_pth(path, entries, {"0": flat.tobytes()}, wrap=False)
    state = read_state_dict(path)
    np.testing.assert_array_equal(state["t"], flat[2:14].reshape(4, 3).T)
    np.testing.assert_array_equal(state["row"], flat[20:24])
    np.testing.assert_array_equal(state["every5"], flat[::5])


def test_pth_saved_parameters(tmp_path):
    # torch.save({"w": nn.Parameter(t)}) wraps the tensor in _rebuild_parameter(tensor, requires_grad, hooks).
    x = np.arange(6, dtype=np.float32)
    param = (p_global("torch._utils", "_rebuild_parameter") + pickle.MARK + p_tensor("0", "FloatStorage", 6, 0,
             (2, 3), (3, 1)) + pickle.NEWTRUE + p_ordered_dict() + pickle.TUPLE + pickle.REDUCE)
    pkl = pickle.PROTO + b"\x02" + p_ordered_dict() + pickle.MARK + p_str("w") + param + pickle.SETITEMS + pickle.STOP
    write_zip(tmp_path / "p.pth", pkl, {"0": x.tobytes()})
    np.testing.assert_array_equal(read_state_dict(tmp_path / "p.pth")["w"], x.reshape(2, 3))


def test_pth_out_of_bounds_view_is_refused(tmp_path):
    path = tmp_path / "oob.pth"
    write_pth(path, {"w": ("0", 4, 1, (4,), (1,))}, {"0": np.zeros(4, np.float32).tobytes()}, wrap=False)
    with pytest.raises(ValueError, match=r"oob\.pth.*reaches element 4 of a storage with 4 elements"):
        read_state_dict(path)


def test_safetensors_half_and_bfloat16(tmp_path):
    x = np.random.default_rng(1).standard_normal(6).astype(np.float32)
    save_file({"h": x.astype(np.float16)}, str(tmp_path / "h.safetensors"))
    np.testing.assert_array_equal(read_state_dict(tmp_path / "h.safetensors")["h"], x.astype(np.float16))
    # Hand-written file: the safetensors numpy API cannot produce bfloat16.
    bits = (x.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"b": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, len(bits)]}}).encode()
    (tmp_path / "b.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bits)
    b = read_state_dict(tmp_path / "b.safetensors")["b"]
    assert b.dtype == np.float32
    np.testing.assert_array_equal(b, ((x.view(np.uint32) >> 16) << 16).view(np.float32).reshape(2, 3))


@pytest.mark.parametrize("protocol", [2, 4])  # GLOBAL and STACK_GLOBAL opcodes
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {shlex.quote(str(marker))}",)

    payload = pickle.dumps({"model": {"w": Payload()}}, protocol=protocol)
    pickle.loads(payload)  # the payload is live: plain pickle runs it
    assert marker.exists()
    marker.unlink()
    path = tmp_path / "evil.pth"
    write_zip(path, payload, {})
    refused = rf"evil\.pth: refusing to unpickle global '{os.system.__module__}\.system'"
    with pytest.raises(UnsafePickleError, match=refused):
        read_state_dict(path)
    assert not marker.exists()


def test_unreadable_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        read_state_dict(tmp_path / "nope.pth")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"w\.npz: unsupported checkpoint extension '\.npz'"):
        read_state_dict(tmp_path / "w.npz")
    (tmp_path / "legacy.pth").write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(ValueError, match=r"legacy\.pth: not a PyTorch zip checkpoint.*re-save"):
        read_state_dict(tmp_path / "legacy.pth")
    write_zip(tmp_path / "list.pth", pickle.dumps([1, 2], protocol=2), {})
    with pytest.raises(ValueError, match=r"list\.pth: expected a state dict or \{'model': state_dict\}, found a list"):
        read_state_dict(tmp_path / "list.pth")
    (tmp_path / "bad.ckpt").write_bytes(b"garbage" * 8)
    with pytest.raises(ValueError, match=r"bad\.ckpt: not a readable MindSpore checkpoint"):
        read_state_dict(tmp_path / "bad.ckpt")


def test_pth_and_safetensors_load_identically():
    a, b = _mini(), _mini()
    load_weights(a, MINI_PTH)
    load_weights(b, MINI_ST)
    _assert_same(_params(a), _params(b))
    _assert_same(_params(a), read_state_dict(MINI_ST))


def test_strict_mismatch_lists_everything_and_leaves_model_untouched(tmp_path):
    state = read_state_dict(MINI_ST)
    del state["blocks.3.mlp.fc1.bias"]
    state["blocks.99.extra"] = np.zeros((2, 3), np.float32)
    state["pos_embed"] = np.zeros((1, 50, 48), np.float32)
    save_file(state, str(tmp_path / "bad.safetensors"))
    model = _mini()
    before = _params(model)
    with pytest.raises(CheckpointMismatchError) as info:
        load_weights(model, tmp_path / "bad.safetensors")
    message = str(info.value)
    assert "\n" not in message and "bad.safetensors does not match the model" in message
    assert "missing 1: [blocks.3.mlp.fc1.bias (192)]" in message
    assert "unexpected 1: [blocks.99.extra (2,3)]" in message
    assert "mismatched 1: [pos_embed file (1,50,48) vs model (1,197,48)]" in message
    _assert_same(_params(model), before)


def test_drop_head_for_other_class_count():
    model = _mini(num_classes=5)
    before = _params(model)
    with pytest.raises(CheckpointMismatchError, match=r"head\.weight file \(10,48\) vs model \(5,48\)"):
        load_weights(model, MINI_PTH)
    load_weights(model, MINI_PTH, drop_head=True)
    after, file_state = _params(model), read_state_dict(MINI_PTH)
    for name, value in after.items():
        expected = before[name] if name.startswith("head.") else file_state[name]
        np.testing.assert_array_equal(value, expected, err_msg=name)
    assert after["head.weight"].shape == (5, 48)


def test_ckpt_round_trip_with_metadata(tmp_path):
    model = _mini()
    load_weights(model, MINI_PTH)
    path = tmp_path / "w.ckpt"
    meta = {"epoch": 7, "lr": 0.1234567891234, "model": "deit_tiny_patch16_224", "best": True, "big": 2 ** 40}
    save_weights(model, path, meta={"epoch": 1})
    save_weights(model, path, meta=meta)  # overwrites the (read-only) earlier file
    assert os.listdir(tmp_path) == ["w.ckpt"]  # no temporary file left behind
    assert read_checkpoint_meta(path) == meta
    state = read_state_dict(path)
    assert not any(name.startswith("meta.") for name in state)
    fresh = _mini()
    load_weights(fresh, path)
    _assert_same(_params(fresh), read_state_dict(MINI_PTH))


def test_save_weights_rejects_bad_input(tmp_path):
    model = _mini()
    with pytest.raises(ValueError, match=r"metadata 'tags' is a list, expected int, float, str or bool"):
        save_weights(model, tmp_path / "w.ckpt", meta={"tags": [1]})
    with pytest.raises(ValueError, match=r"w\.pth: the file name must end with \.ckpt"):
        save_weights(model, tmp_path / "w.pth")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_weights(model, tmp_path / "missing" / "w.ckpt")
    assert os.listdir(tmp_path) == []


TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)


def _tiny(num_classes: int = 3):
    return create_model("deit_tiny_patch16_224", num_classes=num_classes, **TINY)


def test_class_names_are_stored_as_one_json_entry(tmp_path):
    model, path = _tiny(), tmp_path / "w.ckpt"
    save_weights(model, path, meta={"epoch": 2, "class_names": ["ant", "bée", "cat, Felis"]})
    assert read_checkpoint_meta(path) == {"epoch": 2, "class_names": ["ant", "bée", "cat, Felis"]}
    assert isinstance(ms.load_checkpoint(str(path))["meta.class_names"], str)  # one scalar entry, like the others
    assert read_class_names(path) == ["ant", "bée", "cat, Felis"]
    load_weights(_tiny(), path)  # still a plain weights file
    # Files written before names were stored (with other metadata or none at all), and other formats, store none.
    save_weights(model, tmp_path / "old.ckpt", meta={"epoch": 2})
    save_weights(model, tmp_path / "bare.ckpt")
    assert read_class_names(tmp_path / "old.ckpt") is read_class_names(tmp_path / "bare.ckpt") is None
    assert read_class_names(MINI_PTH) is None


def test_class_names_that_do_not_fit_are_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"save_weights: .*w.ckpt: 2 class names, but the model has 3 classes"):
        save_weights(_tiny(), tmp_path / "w.ckpt", meta={"class_names": ["a", "b"]})
    with pytest.raises(ValueError, match=r"metadata 'class_names': class name 'a' is given twice"):
        save_weights(_tiny(), tmp_path / "w.ckpt", meta={"class_names": ["a", "b", "a"]})
    assert os.listdir(tmp_path) == []


def test_malformed_stored_names_name_the_file_and_key(tmp_path):
    path = tmp_path / "w.ckpt"
    params = [{"name": n, "data": p} for n, p in _tiny().parameters_and_names()]
    ms.save_checkpoint(params, str(path), append_dict={"meta.class_names": "[ant"})
    with pytest.raises(ValueError, match=r"w.ckpt: metadata 'class_names': not a JSON list of class names"):
        read_class_names(path)


def test_converted_files_carry_class_names(tmp_path):
    save_weights(_tiny(1000), tmp_path / "in1k.ckpt")  # a 1000-class file without names
    summary = convert_checkpoint(tmp_path / "in1k.ckpt", tmp_path / "out1k.ckpt", "deit_tiny_patch16_224", **TINY)
    assert summary.endswith("(num_classes=1000, img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3); "
                            "1000 class names of ImageNet-1k")
    assert read_class_names(tmp_path / "out1k.ckpt") == imagenet_class_names()

    names = tmp_path / "names.txt"
    names.write_text("ant\nbee\ncat\n")
    save_weights(_tiny(), tmp_path / "in.ckpt")
    assert convert_checkpoint(tmp_path / "in.ckpt", tmp_path / "a.ckpt", "deit_tiny_patch16_224",
                              class_names_file=names, **TINY).endswith(f"; 3 class names from {names}")
    # Converting a file that stores names keeps them; a file without any gets none.
    assert convert_checkpoint(tmp_path / "a.ckpt", tmp_path / "b.ckpt", "deit_tiny_patch16_224", **TINY).endswith(
        f"; 3 class names kept from {tmp_path / 'a.ckpt'}")
    assert read_class_names(tmp_path / "b.ckpt") == ["ant", "bee", "cat"]
    convert_checkpoint(tmp_path / "in.ckpt", tmp_path / "c.ckpt", "deit_tiny_patch16_224", **TINY)
    assert read_class_names(tmp_path / "c.ckpt") is None

    names.write_text("ant\nbee\ncat\ndog\n")
    with pytest.raises(ValueError, match="names.txt: 4 class names, but the model has 3 classes"):
        convert_checkpoint(tmp_path / "in.ckpt", tmp_path / "d.ckpt", "deit_tiny_patch16_224",
                           class_names_file=names, **TINY)
    assert not (tmp_path / "d.ckpt").exists()


def test_a_ckpt_without_metadata_has_empty_metadata(tmp_path):
    # Before: MindSpore refused the selection of meta.* entries as empty ("not a readable MindSpore checkpoint").
    save_weights(_mini(), tmp_path / "bare.ckpt")
    assert read_checkpoint_meta(tmp_path / "bare.ckpt") == {}


def _flip_middle(path: Path, n: int = 40) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + n] = bytes(b ^ 0xFF for b in data[mid:mid + n])
    path.write_bytes(bytes(data))


def test_weights_carry_a_crc_and_damage_is_refused(tmp_path):
    # Before: 40 flipped bytes in a train.py weights file loaded silently (ten values became -534..3019).
    path = tmp_path / "w.ckpt"
    save_weights(_mini(), path, meta={"epoch": 3})
    assert path.read_bytes()[-17:-10] == b"crc_num"
    _flip_middle(path)
    model = _mini()
    before = _params(model)
    with pytest.raises(ValueError) as info:
        load_weights(model, path)
    assert str(info.value) == f"{path}: the file is damaged: its CRC32 checksum does not match its contents"
    _assert_same(_params(model), before)
    with pytest.raises(ValueError, match="damaged"):
        read_checkpoint_meta(path)


def test_ckpt_without_crc_still_loads_quietly(tmp_path, capfd):
    import mindspore as ms  # pylint: disable=import-outside-toplevel

    source = _mini()
    load_weights(source, MINI_PTH)
    path = tmp_path / "elsewhere.ckpt"
    ms.save_checkpoint(source, str(path))  # no CRC, as other tools write them
    assert path.read_bytes()[-17:-10] != b"crc_num"
    capfd.readouterr()
    model = _mini()
    load_weights(model, path)
    _assert_same(_params(model), read_state_dict(MINI_PTH))
    assert capfd.readouterr().err == ""  # no MindSpore warning about the missing CRC


def test_empty_ckpt_says_so(tmp_path):
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.ckpt: the checkpoint is empty \(0 bytes\): it holds no tensors$"):
        read_state_dict(tmp_path / "empty.ckpt")
    (tmp_path / "crc_only.ckpt").write_bytes(b"crc_num" + zlib.crc32(b"").to_bytes(10, "big"))
    with pytest.raises(ValueError, match=r"crc_only\.ckpt: the checkpoint is empty \(17 bytes\)"):
        read_state_dict(tmp_path / "crc_only.ckpt")


def test_architecture_mismatch_names_a_few_and_counts(tmp_path):
    # Before: every one of the ~150 entries was listed (6 KB).
    model = create_model("deit_tiny_patch16_224", num_classes=MINI_CLASSES)
    with pytest.raises(CheckpointMismatchError) as info:
        load_weights(model, MINI_ST)
    message = str(info.value)
    assert len(message) < 600 and "\n" not in message
    assert "mismatched 151: [" in message and message.count(" vs model ") == 3 and "; ...]" in message


def test_safetensors_with_a_huge_zero_size_shape_names_the_file(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [0, 2 ** 62], "data_offsets": [0, 0]}}).encode()
    path = tmp_path / "zero.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(ValueError, match=r"zero\.safetensors: tensor 'w' cannot be built \(ValueError: array is too "
                                         r"big"):
        read_state_dict(path)


def _zeros_state(shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    return {name: np.broadcast_to(np.float32(0), shape) for name, shape in shapes.items()}


def test_infer_model_args():
    tiny = {name: tuple(p.shape) for name, p in create_model("deit_tiny_distilled_patch16_224",
                                                              num_classes=7).parameters_and_names()}
    assert infer_model_args(_zeros_state(tiny)) == ("deit_tiny_distilled_patch16_224", 7, {})
    base_384 = {"patch_embed.proj.weight": (768, 3, 16, 16), "pos_embed": (1, 577, 768), "head.weight": (1000, 768),
                "blocks.0.mlp.fc1.weight": (3072, 768), "blocks.11.norm1.weight": (768,)}
    # DeiT-B and timm's ViT-B have the same shapes: the file name tells them apart, or nothing does
    assert infer_model_args(_zeros_state(base_384), "deit_base_patch16_384.pth") == ("deit_base_patch16_384", 1000, {})
    with pytest.raises(ValueError, match=r"^model\.pth: the shapes fit 2 registered models with the same architecture "
                                         r"but their own data settings: deit_base_patch16_384, vit_base_patch16_384; "
                                         r"name the model explicitly$"):
        infer_model_args(_zeros_state(base_384), "model.pth")
    shallow = dict(base_384, pos_embed=(1, 197, 768), **{"blocks.5.norm1.weight": (768,)})
    del shallow["blocks.11.norm1.weight"]
    assert infer_model_args(_zeros_state(shallow), "/x/vit_base_patch16_224.safetensors") == (
        "vit_base_patch16_224", 1000, {"depth": 6})
    with pytest.raises(ValueError, match=r"same architecture with depth=6 but"):
        infer_model_args(_zeros_state(shallow))
    with pytest.raises(ValueError, match="embed_dim 48 .* matches no registered model"):
        infer_model_args(read_state_dict(MINI_ST))

