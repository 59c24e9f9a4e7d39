import os

import pytest

from vp_jax import stages


def _stage(inputs, calls, valid=lambda d: True, fail=False):
    def run(directory):
        calls.append(directory)
        with open(os.path.join(directory, "out.txt"), "a") as f:
            f.write("x")
        if fail:
            raise KeyboardInterrupt  # a killed run
    return stages.Stage("tok", inputs, run, valid)


def test_second_run_with_same_inputs_is_skipped(tmp_path):
    calls = []
    stages.run_stage(_stage({"bits": 10}, calls), str(tmp_path), log=lambda m: None)
    stages.run_stage(_stage({"bits": 10}, calls), str(tmp_path), log=lambda m: None)
    assert len(calls) == 1


def test_a_changed_config_field_invalidates_and_clears_the_stage(tmp_path):
    calls = []
    stages.run_stage(_stage({"bits": 10}, calls), str(tmp_path), log=lambda m: None)
    stages.run_stage(_stage({"bits": 12}, calls), str(tmp_path), log=lambda m: None)
    assert len(calls) == 2
    assert (tmp_path / "tok" / "out.txt").read_text() == "x"  # stale output removed first


def test_invalid_outputs_are_rebuilt(tmp_path):
    calls = []
    stages.run_stage(_stage({"a": 1}, calls), str(tmp_path), log=lambda m: None)
    stages.run_stage(_stage({"a": 1}, calls, valid=lambda d: len(calls) > 1), str(tmp_path),
                     log=lambda m: None)
    assert len(calls) == 2


def test_an_interrupted_run_resumes_in_place_with_its_partial_outputs(tmp_path):
    calls = []
    with pytest.raises(KeyboardInterrupt):
        stages.run_stage(_stage({"a": 1}, calls, fail=True), str(tmp_path), log=lambda m: None)
    stages.run_stage(_stage({"a": 1}, calls), str(tmp_path), log=lambda m: None)
    assert (tmp_path / "tok" / "out.txt").read_text() == "xx"  # kept, then continued


def test_fingerprint_is_order_independent_and_sensitive_to_values():
    assert stages.fingerprint({"a": 1, "b": [1, 2]}) == stages.fingerprint({"b": [1, 2], "a": 1})
    assert stages.fingerprint({"a": 1}) != stages.fingerprint({"a": 2})
