"""HEROS in a worker uses the worker's zenoh session, for every realm, and never closes it.

HEROS opens one zenoh session per realm through ``heros.zenoh.session_manager`` (and closes it
when the realm's last HERO goes). In a worker that would be a second session beside the one the
worker supervises, configured apart and closed behind its back. This points the manager at the
worker's session instead: every realm gets it, and releasing a HERO never closes it.
"""

from __future__ import annotations

import sys
import types
from typing import Any


def share_session_with_heros(session: Any) -> bool:
    """Make HEROS (if it is imported) use ``session`` for every realm; True when HEROS was found."""
    heros_zenoh = sys.modules.get("heros.zenoh")
    if heros_zenoh is None or session is None:
        return False
    manager = heros_zenoh.session_manager

    def request_session(self: Any, obj: object, realm: str) -> Any:
        self._sessions[realm] = session
        if obj not in self._referrers:
            self._referrers.append(obj)
            self._referrer_realms.append(realm)
        return session

    def release_session(self: Any, obj: object) -> None:
        if obj in self._referrers:
            index = self._referrers.index(obj)
            del self._referrers[index]
            del self._referrer_realms[index]

    manager.request_session = types.MethodType(request_session, manager)
    manager.release_session = types.MethodType(release_session, manager)
    for realm in list(manager._sessions):
        manager._sessions[realm] = session
    return True
