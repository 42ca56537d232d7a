"""The supervisor's backend that forks workers from the shared template (``boss_sidecar.template``)."""

from __future__ import annotations

from boss_sidecar import template
from boss_sidecar._process import WorkerProcess
from boss_sidecar.supervisor import ProcessBackend


class TemplateBackend(ProcessBackend):
    """Forks workers from the shared template; a fresh interpreter when the template cannot be used."""

    def spawn(self, command: list[str], channel_fd: int, env: dict[str, str]) -> WorkerProcess:
        if command[1:3] != ["-m", template.WORKER_MODULE]:
            return super().spawn(command, channel_fd, env)
        try:
            return template.fork(command[3:], channel_fd, env)
        except template.TemplateUnavailable as exc:
            template.log().warning("worker template unavailable: starting a fresh interpreter", reason=str(exc))
            return super().spawn(command, channel_fd, env)


__all__ = ["TemplateBackend"]
