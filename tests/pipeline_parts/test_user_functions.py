"""load_function / validate_result: real script files, every error with a clear message."""

from __future__ import annotations

import collections
import textwrap

import pytest

from cam_server.pipeline.instance.user_code import (
    UserScriptError,
    allow_external_functions,
    load_function,
    validate_result,
)

pytestmark = pytest.mark.unit


def _script(folder, name, body):
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


GOOD = """
    def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
        return {"sum": image + VALUE}
    VALUE = 1
"""


@pytest.fixture()
def external_allowed():
    """As on a pipeline server started with --allow_external_functions."""
    previous = allow_external_functions(True)
    yield
    allow_external_functions(previous)


def test_load_by_name_with_and_without_py_and_by_path(tmp_path, external_allowed):
    path = _script(tmp_path, "my_proc.py", GOOD)
    f1 = load_function("my_proc", tmp_path)
    f2 = load_function("my_proc.py", tmp_path)
    f3 = load_function(str(path), None)
    assert f1(1, 0, 0, 0, 0, {}) == {"sum": 2}
    assert f1 is f2 is f3  # cached: same module object


@pytest.mark.parametrize(("name", "what"), [
    ("{path}", "is a path"), ("json", "not found in the scripts folder"), ("os.path", "names a Python module"),
    ("../my_proc", "is a path"), ("sub/my_proc.py", "is a path")])
def test_only_the_scripts_folder_by_default(tmp_path, name, what):
    path = _script(tmp_path, "my_proc.py", GOOD)
    with pytest.raises(UserScriptError, match=what):
        load_function(name.format(path=path), tmp_path / "elsewhere", function_name="dumps")
    assert load_function("my_proc", tmp_path)(1, 0, 0, 0, 0, {}) == {"sum": 2}


def test_reload_reimports_changed_file(tmp_path):
    _script(tmp_path, "re.py", GOOD)
    assert load_function("re", tmp_path)(1, 0, 0, 0, 0, {}) == {"sum": 2}
    _script(tmp_path, "re.py", GOOD.replace("VALUE = 1", "VALUE = 10"))
    assert load_function("re", tmp_path)(1, 0, 0, 0, 0, {}) == {"sum": 2}  # cached without reload
    assert load_function("re", tmp_path, reload=True)(1, 0, 0, 0, 0, {}) == {"sum": 11}


def test_missing_file(tmp_path):
    with pytest.raises(UserScriptError, match=r"script 'nope\.py' not found \(scripts folder: "):
        load_function("nope.py", tmp_path)
    with pytest.raises(UserScriptError, match=r"script 'nope' not found in the scripts folder .* importable"):
        load_function("nope", tmp_path)
    with pytest.raises(UserScriptError, match="must be a non-empty string"):
        load_function("", tmp_path)


def test_no_path_traversal_through_scripts_folder(tmp_path):
    (tmp_path / "scripts").mkdir()
    _script(tmp_path, "outside.py", GOOD)
    with pytest.raises(UserScriptError, match="is a path, not a script of the scripts folder"):
        load_function("../outside", tmp_path / "scripts")


def test_syntax_error_reports_line(tmp_path):
    _script(tmp_path, "bad.py", """
        def process_image(image, *args):
            x = (1,
            return x
    """)
    with pytest.raises(UserScriptError, match=r"syntax error in script bad\.py line \d+: "):
        load_function("bad", tmp_path)
    try:
        load_function("bad", tmp_path)
    except UserScriptError as ex:
        assert "line 3" in str(ex) or "line 4" in str(ex)


def test_exception_at_import_reports_line(tmp_path):
    _script(tmp_path, "boom.py", """
        import math

        VALUE = 1 / 0
    """)
    with pytest.raises(UserScriptError, match=r"error importing script boom\.py: ZeroDivisionError: division by "
                                              r"zero \(boom\.py line 4\)"):
        load_function("boom", tmp_path)


def test_missing_function_lists_what_is_defined(tmp_path):
    _script(tmp_path, "other.py", "def process(stream_data, pulse_id, timestamp, parameters):\n    return {}\n")
    with pytest.raises(UserScriptError, match=r"script other\.py has no function 'process_image' "
                                              r"\(it defines: process\)"):
        load_function("other", tmp_path)
    assert load_function("other", tmp_path, function_name="process")(None, 1, 2, {}) == {}


def test_not_callable(tmp_path):
    _script(tmp_path, "nc.py", "process_image = 42\n")
    with pytest.raises(UserScriptError, match=r"'process_image' in script nc\.py is not callable \(it is int\)"):
        load_function("nc", tmp_path)


def test_signature_check(tmp_path):
    _script(tmp_path, "sig.py", "def process_image(image, pulse_id):\n    return {}\n")
    with pytest.raises(UserScriptError, match=r"cannot be called with 7 positional arguments; its signature is "
                                              r"process_image\(image, pulse_id\)"):
        load_function("sig", tmp_path, n_args=7)
    _script(tmp_path, "sig7.py", GOOD)
    assert callable(load_function("sig7", tmp_path, n_args=7))
    assert callable(load_function("sig7", tmp_path, n_args=6))  # bsdata has a default


def test_importable_module(tmp_path, external_allowed):
    f = load_function("json", None, function_name="dumps")
    assert f({"a": 1}) == '{"a": 1}'


def test_validate_result():
    assert validate_result({"a": 1}) == {"a": 1}
    od = collections.OrderedDict(b=2)
    assert validate_result(od) is od
    assert validate_result(collections.ChainMap({"c": 3})) == {"c": 3}
    with pytest.raises(UserScriptError, match="processing function must return a dict, got list"):
        validate_result([1, 2])
    with pytest.raises(UserScriptError, match="processing function must return a dict, got NoneType"):
        validate_result(None)
    with pytest.raises(UserScriptError, match=r"returned a non-string key 3 \(int\)"):
        validate_result({3: 1})
