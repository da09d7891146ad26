"""``pic`` and ``pit``: the two modelled interrupt sources, register by register."""
from __future__ import annotations

from ..core.clock import NS_PER_INSN
from ..core.pic import Chip, Pic
from ..core.pit import PIT_HZ, Pit

_MODES = {0: "interrupt on terminal count", 1: "one-shot", 2: "rate generator",
          3: "square wave", 4: "software strobe", 5: "hardware strobe"}
_ACCESS = {1: "lobyte", 2: "hibyte", 3: "lobyte/hibyte"}


def _chip(name: str, chip: Chip) -> str:
    state = "ready" if chip.init_step == 0 else f"awaiting ICW{chip.init_step}"
    pending = chip.pending_line()
    return (f"{name}: vector base {chip.vector_base:#04x}  irr {chip.irr:08b}  isr "
            f"{chip.isr:08b}  imr {chip.imr:08b}  {'auto-EOI' if chip.auto_eoi else 'EOI'}  "
            f"{state}  pending line {'-' if pending is None else pending}")


def pic_report(pic: Pic) -> str:
    lines = [_chip("master", pic.master), _chip("slave ", pic.slave)]
    unmasked = [line for line in range(16) if line != 2 and not pic.masked(line)]
    lines.append("unmasked lines: " + (" ".join(map(str, unmasked)) or "none") +
                 f"; an interrupt is {'pending' if pic.pending() else 'not pending'}")
    return "\n".join(lines) + "\n"


def pit_report(pit: Pit, now: int) -> str:
    ch = pit.channel
    mode = _MODES.get(ch.mode, f"mode {ch.mode} (not modelled)")
    lines = [f"channel 0: mode {ch.mode} ({mode}), access {_ACCESS.get(ch.access, '?')}, "
             f"reload {ch.reload:#06x} ({ch.period} ticks, {PIT_HZ / ch.period:.2f} Hz)"]
    if ch.start_tick is None:
        lines.append("not counting (no reload value written since the mode was set)")
    else:
        deadline = pit.next_deadline()
        nxt = "none" if deadline is None else (
            f"at virtual time {deadline} (in {deadline - now} instruction periods, "
            f"{(deadline - now) * NS_PER_INSN / 1000:.1f} us)")
        lines.append(f"counting: current count {pit.current_count():#06x}, "
                     f"{ch.fired} interrupts raised, next interrupt {nxt}")
    return "\n".join(lines) + "\n"
