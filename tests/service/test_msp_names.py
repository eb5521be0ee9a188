import pytest

from meshfl.config.errors import ConfigError, MeshflError
from meshfl.service.msp_names import NAMES_FILE, label, read_names, remember_name


def test_names_are_kept_per_node_and_survive_a_restart(tmp_path):
    assert read_names(tmp_path) == {}
    remember_name(tmp_path, 9_223_372_036_854_775_001, "acme-it")
    remember_name(tmp_path, 17, "globex")
    remember_name(tmp_path, 17, "globex.eu")  # re-registering renames
    names = read_names(tmp_path)
    assert names == {9_223_372_036_854_775_001: "acme-it", 17: "globex.eu"}
    assert label("17", names) == "globex.eu" and label(5, names) == "5"


@pytest.mark.parametrize("bad", ["", "-acme", "acme it", 'a"b', "x" * 65, "ünï"])
def test_a_bad_name_says_what_a_name_must_be(tmp_path, bad):
    with pytest.raises(ConfigError, match="--name must be 1-64 letters"):
        remember_name(tmp_path, 1, bad)
    assert not (tmp_path / NAMES_FILE).exists()


def test_one_name_cannot_label_two_nodes(tmp_path):
    remember_name(tmp_path, 1, "acme")
    with pytest.raises(ConfigError, match="'acme' already labels node 1"):
        remember_name(tmp_path, 2, "acme")


def test_a_damaged_names_file_is_named(tmp_path):
    (tmp_path / NAMES_FILE).write_text("[1, 2")
    with pytest.raises(MeshflError, match=NAMES_FILE):
        read_names(tmp_path)


def test_without_a_name_an_msp_is_named_by_its_key_comment_else_its_file(tmp_path):
    from meshfl.deploy.certs import generate_supernode_keys
    from meshfl.service.msp_names import default_name

    keys = generate_supernode_keys(tmp_path / "node.key", comment="acme-it")
    assert default_name(keys.public) == "acme-it"
    plain = tmp_path / "msp-3.pub"
    plain.write_text("ecdsa-sha2-nistp384 AAAA\n")  # no comment
    assert default_name(plain) == "msp-3"
    odd = tmp_path / "msp-4.pub"
    odd.write_text("ecdsa-sha2-nistp384 AAAA root@host with spaces\n")  # not a name
    assert default_name(odd) == "msp-4"
