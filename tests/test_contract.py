"""The TF-free contract's rules that several packages apply (contract/)."""

from __future__ import annotations

from contract.artifacts import INT64_MAX, version_names, version_number


def test_version_folders_are_read_as_tf_serving_reads_them():
    assert version_number("7") == 7 and version_number("007") == 7
    assert version_number("12/") == 12  # tf.io.gfile lists folders with a trailing "/"
    assert version_number(str(INT64_MAX)) == INT64_MAX
    for not_a_version in (str(INT64_MAX + 1), "\u0663", "1.5", "-1", "", ".incoming-3-h-1",
                          "v2", " 2"):
        assert version_number(not_a_version) is None, not_a_version


def test_version_names_are_the_versions_newest_first():
    children = ["1/", "10", ".incoming-11-host-5", "\u0663", "2", "assets", "010"]
    assert version_names(children) == ["10", "010", "2", "1"]
