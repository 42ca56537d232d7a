"""``boss_sidecar.testing``: the hermetic configurations stay hermetic whatever a caller does with one."""

from __future__ import annotations

from boss_sidecar.testing import client_config, peer_config, router_config


def test_changing_one_configuration_changes_no_later_one() -> None:
    """Turning multicast on in one peer_config() leaves every later peer and router configuration without it."""
    changed = peer_config()
    changed["scouting"]["multicast"]["enabled"] = True
    changed["scouting"]["gossip"]["enabled"] = True
    router = router_config(7447)
    router["scouting"]["multicast"]["enabled"] = True
    for config in (peer_config(), peer_config(connect_ports=(7447,)), router_config(7447), client_config(7447)):
        assert config["scouting"]["multicast"] == {"enabled": False}
        assert config["scouting"].get("gossip", {"enabled": False}) == {"enabled": False}
