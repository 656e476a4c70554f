"""Class-name lists (src/io/class_names.py): one check for every source, the bundled ImageNet-1k list, the JSON form."""
import pytest

from src.io.class_names import (
    IMAGENET_CLASSES_FILE,
    check_class_names,
    describe_difference,
    imagenet_class_names,
    load_class_names,
    names_from_json,
    names_to_json,
)


def test_imagenet_names_are_in_index_order_and_unique():
    names = imagenet_class_names()
    assert len(names) == len(set(names)) == 1000
    assert names[0] == "tench, Tinca tinca" and names[1] == "goldfish, Carassius auratus"
    assert names[409] == "analog clock" and names[999] == "toilet tissue, toilet paper, bathroom tissue"
    # The two synsets WordNet lemmatises as "crane" are told apart, so the list passes the duplicate check.
    assert (names[134], names[517]) == ("crane (bird)", "crane (machine)")
    assert load_class_names(IMAGENET_CLASSES_FILE) == names


def test_names_file_lines(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("ant  \nbee\ncat\n\n\n")
    assert load_class_names(path, 3) == ["ant", "bee", "cat"]
    with pytest.raises(ValueError, match=r"names.txt: 3 class names, but the model has 4 classes"):
        load_class_names(path, 4)
    path.write_text("ant\n\ncat\n")
    with pytest.raises(ValueError, match=r"names.txt: line 2 is not a usable class name \(''\)"):
        load_class_names(path)
    path.write_text("ant\nbee\nant\n")
    with pytest.raises(ValueError, match=r"names.txt: class name 'ant' is given twice \(line 1 and line 3\)"):
        load_class_names(path)
    path.write_bytes(b"ant\n\xff\xfe\n")
    with pytest.raises(ValueError, match="names.txt: not a UTF-8 text file of class names"):
        load_class_names(path)
    with pytest.raises(FileNotFoundError, match="missing.txt: class names file not found"):
        load_class_names(tmp_path / "missing.txt")


@pytest.mark.parametrize("names, message", [
    ("ant", "expected a list of class names, got str"),
    (["ant", 3], r"class 1 is not a usable class name \(3\)"),
    (["ant", "two\nlines"], r"class 1 is not a usable class name \('two\\nlines'\)"),
    (["ant", "   "], "class 1 is not a usable class name"),
    (["ant", "bee", "ant"], r"class name 'ant' is given twice \(class 0 and class 2\)"),
    (["x" * 200, "x" * 200], r"class name 'x{59}\.\.\. is given twice"),
])
def test_bad_lists_are_one_line_naming_the_source(names, message):
    with pytest.raises(ValueError, match=f"^stored: {message}") as err:
        check_class_names(names, "stored")
    assert "\n" not in str(err.value)


def test_json_round_trip_and_bad_json():
    names = ["ant", "bée", "cat, Felis"]
    assert names_from_json(names_to_json(names, "w"), "w") == names
    with pytest.raises(ValueError, match="w.ckpt: not a JSON list of class names"):
        names_from_json("[ant", "w.ckpt")
    with pytest.raises(ValueError, match="w.ckpt: expected a JSON string of class names, got int"):
        names_from_json(3, "w.ckpt")
    with pytest.raises(ValueError, match="w.ckpt: expected a list of class names, got dict"):
        names_from_json('{"0": "ant"}', "w.ckpt")


def test_describe_difference():
    assert describe_difference(["a", "b", "c"], ["a", "x", "c"]) == "class 1 is 'b' vs 'x'"
    assert describe_difference(["a", "b"], ["a", "b", "c"]) == "2 names vs 3"
