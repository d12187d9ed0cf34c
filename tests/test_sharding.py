"""The logical-axis table: checked whenever it maps parameters onto a mesh."""

import jax
import pytest
from jax.sharding import PartitionSpec

from flmjax.sharding import LOGICAL_AXIS_RULES, check_rules, logical_to_mesh_sharding, make_mesh


def test_the_release_table_is_valid_and_bad_tables_are_refused():
    check_rules(LOGICAL_AXIS_RULES)
    with pytest.raises(ValueError, match="'embed' has two rules"):
        check_rules((("embed", "fsdp"), ("embed", None)))
    with pytest.raises(ValueError, match=r"'embed' maps to unknown mesh axes \['model'\]"):
        check_rules((("embed", ("fsdp", "model")),))
    mesh = make_mesh(devices=jax.devices()[:1])
    with pytest.raises(ValueError, match="two rules"):
        logical_to_mesh_sharding(PartitionSpec("embed"), mesh, (("embed", "fsdp"), ("embed", None)))
    assert logical_to_mesh_sharding(PartitionSpec("embed"), mesh).spec == PartitionSpec("fsdp")
