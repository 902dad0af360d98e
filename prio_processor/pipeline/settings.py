"""Stamping exchanged records with the server's settings, and checking the partner's.

verify1 and verify2 records and aggregates carry, under `prio_settings`, the
non-secret settings in clear (`prg_keying`, `evaluation_point`) and a keyed MAC
over all shared settings (engine.fingerprint). A stage that joins records
refuses ones made with other settings, naming what differs: a clear setting
by name, otherwise the shared secret, batch id or n_data. Records of the
original tool carry no stamp and are accepted.
"""

from __future__ import annotations

from typing import Any

from ..engine.fingerprint import same_mac
from ..engine.server import Schedule, Server
from .errors import SettingsMismatch

FIELD = "prio_settings"
_SECRET_CAUSE = "the shared secret, the batch id or n_data differs"


def stamp(server: Server, schedule: Schedule | None) -> dict[str, Any]:
    return {
        "prg_keying": server.keying.value,
        "evaluation_point": None if schedule is None else Schedule(schedule).value,
        "mac": server.settings_mac(schedule),
    }


class SettingsCheck:
    """Checks the stamps of joined records against this server's settings.

    With `schedule` None (aggregate has no --evaluation-point) the first stamp
    seen fixes the schedule, and every other stamp must agree with it.
    """

    def __init__(self, server: Server, schedule: Schedule | None) -> None:
        self._keying = server.keying.value
        self.schedule: str | None = None if schedule is None else Schedule(schedule).value
        self._macs = {s.value: server.settings_mac(s) for s in Schedule}
        self._checked: set[tuple[str, str | None, str]] = set()

    def check(self, record: dict[str, Any], whose: str) -> None:
        found = record.get(FIELD)
        if found is None:
            return
        if not isinstance(found, dict):
            raise SettingsMismatch(f"{whose} records carry an unreadable {FIELD}")
        keying, point, mac = found.get("prg_keying"), found.get("evaluation_point"), found.get("mac")
        key = (str(keying), point if isinstance(point, str) else None, str(mac))
        if key in self._checked:  # the same stamp on every record: check it once
            return
        if keying != self._keying:
            raise SettingsMismatch(f"--prg-keying differs: {self._keying} here, {keying} in {whose} records")
        if point not in self._macs:
            raise SettingsMismatch(f"{whose} records name an unknown evaluation point {point!r}")
        if self.schedule is None:
            self.schedule = point
        elif point != self.schedule:
            raise SettingsMismatch(
                f"--evaluation-point differs: {self.schedule} here, {point} in {whose} records"
            )
        if not isinstance(mac, str) or not same_mac(mac, self._macs[point]):
            raise SettingsMismatch(f"{_SECRET_CAUSE} between this server and {whose} records")
        self._checked.add(key)


def compare_stamps(own: dict[str, Any] | None, peer: dict[str, Any] | None) -> None:
    """Two servers' aggregate stamps must be equal (publish has no shared secret to recompute them)."""
    if own is None or peer is None:
        return
    if not isinstance(own, dict) or not isinstance(peer, dict):
        raise SettingsMismatch(f"an aggregate carries an unreadable {FIELD}")
    for name, option in (("prg_keying", "--prg-keying"), ("evaluation_point", "--evaluation-point")):
        if own.get(name) != peer.get(name):
            raise SettingsMismatch(f"{option} differs: {own.get(name)} here, {peer.get(name)} at the partner")
    if not same_mac(str(own.get("mac")), str(peer.get("mac"))):
        raise SettingsMismatch(f"{_SECRET_CAUSE} between the two servers")
