"""A station: takes units from its stage's buffer, works them, passes them on.

Breakdowns use operating time to failure without SimPy ``Interrupt``: before each stretch
of work the station knows its remaining time to failure and the end of the production
window, so it sleeps until the nearest of cycle end, failure and window end. That is the
machine-shop model with one timeout per stretch instead of a failure process per station
and an interrupt per failure. ``Interrupt`` is used only for Stop/Hold from
:class:`StationControl`, which arrive from outside the model. A cycle cut by the end of a
production window pauses and resumes where it stopped in the next window.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import simpy

from iiotbed.devices.sim import states as S
from iiotbed.devices.sim._signals import Context, Counter, Signal
from iiotbed.devices.sim._simpy import now_of
from iiotbed.devices.sim.calendar import EPS
from iiotbed.devices.sim.line import LineModel
from iiotbed.devices.sim.network import LinkUser
from iiotbed.devices.sim.units import Buffer, Crew, Unit
from iiotbed.errors import CommandRefused
from iiotbed.scenario import Dist, Stage
from iiotbed.telemetry import EventName, PlannedState, Tag

if TYPE_CHECKING:
    from iiotbed.devices.sim.supply import KitStock

__all__ = ["Station", "StationControl"]

_Proc = Generator[simpy.Event, Any, None]
_A = S.Activity
# each state's tag values as plain ints (ItemState, OperationMode, PackMLState, Fault, power)
_INTS = {st: (int(st.item), int(st.mode), int(st.packml), 1 if st is S.BREAKDOWN else 0,
              int(st.power)) for st in S.STATES}


class Station:
    """One machine of a stage (process or inspection); see the module docstring."""

    def __init__(
        self, ctx: Context, line: LineModel, stage: Stage, stage_index: int, name: str, path: str,
        inbuf: Buffer, outbuf: Buffer | None, crew: Crew, kits: KitStock | None,
        link: LinkUser | None,
    ) -> None:
        sc = ctx.scenario
        self.ctx, self.env, self.line, self.stage = ctx, ctx.env, line, stage
        self.index, self.name, self.path = stage_index, name, path
        self.inbuf, self.outbuf, self.crew, self.kits, self.link = inbuf, outbuf, crew, kits, link
        self.speed = 1.0
        self.stopped = self.held = False
        self._resume: simpy.Event | None = None
        self._interruptible = False
        self.unit: Unit | None = None
        self.ideal = [p.ideal_cycle_time[stage.name] for p in sc.products]
        self.product_names = [p.name for p in sc.products]
        self._factor = ctx.sampler(f"{path}/cycle_time_factor", stage.cycle_time_factor)
        self._quality = ctx.uniforms(f"{path}/quality")
        p = stage.power
        self._powers = (p.executing, p.idle, p.down, p.off)
        # state and energy
        self.planned = ctx.calendar.segment_at(0.0)[2]
        self.activity = _A.WAITING
        self.state = self._display()
        self._t_state = 0.0
        self._energy = 0.0
        self.sig_item = Signal(ctx, path, Tag.ITEM_STATE, int(self.state.item))
        self.sig_mode = Signal(ctx, path, Tag.OPERATION_MODE, int(self.state.mode))
        self.sig_packml = Signal(ctx, path, Tag.PACKML_STATE, int(self.state.packml))
        self.sig_fault = Signal(ctx, path, Tag.FAULT, 0)
        self.sig_energy = Signal(ctx, path, Tag.ENERGY, 0.0, "KWH")
        # the (signal, value) pairs a change of state emits, in tag order: only refresh sets
        # these four signals, so their values are always the current state's
        sigs = (self.sig_item, self.sig_mode, self.sig_packml, self.sig_fault)
        self._changes = {a: {b: tuple((sig, _INTS[b][k]) for k, sig in enumerate(sigs)
                                      if _INTS[a][k] != _INTS[b][k]) for b in S.STATES}
                         for a in S.STATES}
        self._emit = ctx.emit
        # counters
        self.processed = Counter(ctx, path, Tag.PROCESSED)
        self.processed_by = [Counter(ctx, path, f"{Tag.PROCESSED}/{n}") for n in self.product_names]
        self.defective = Counter(ctx, path, Tag.DEFECTIVE)
        self.rework = Counter(ctx, path, Tag.REWORK)
        self.consumed = Counter(ctx, path, Tag.CONSUMED) if kits is not None else None
        # failures, degradation, predictive maintenance
        f = stage.failures
        self.failure_count: Counter | None = None
        self.ttf_left = self.ttf_total = float("inf")
        if f is not None:
            self.failure_count = Counter(ctx, path, Tag.FAILURES)
            self._ttf = ctx.sampler(f"{path}/ttf", f.ttf)
            self._repair = ctx.sampler(f"{path}/repair", f.repair)
            self._response = ctx.sampler(f"{path}/response", sc.technicians.response_time)
            self.ttf_left = self.ttf_total = self._ttf()
        self._degr: Signal | None = None
        deg = stage.degradation
        if deg is not None and f is not None:
            self._degr = Signal(ctx, path, deg.signal, deg.baseline, deg.unit)
            noise = (deg.at_failure - deg.baseline) * 0.02
            self._noise = ctx.sampler(f"{path}/degradation", Dist(dist="normal", mean=0.0, sd=noise),
                                      floor=None)
        pdm = sc.maintenance.predictive
        self._pdm = pdm if (pdm.enabled and self._degr is not None) else None
        self._pdm_tried = False
        self._pdm_draw = ctx.uniforms(f"{path}/predictive")
        # inspection
        insp = stage.inspection
        self.inspected: Counter | None = None
        self.first_pass: Counter | None = None
        if insp is not None:
            self.inspected = Counter(ctx, path, Tag.INSPECTED)
            self.first_pass = Counter(ctx, path, Tag.PASSED_FIRST)
            self._insp_time = ctx.sampler(f"{path}/inspection_time", insp.time)
            self._inference = ctx.sampler(f"{path}/inference_time", insp.inference_time)
        self.process = self.env.process(self._run())

    # ------------------------------------------------------------------ state

    def _display(self) -> S.State:
        a, planned = self.activity, self.planned
        if a is _A.BREAKDOWN:
            return S.BREAKDOWN
        if a is _A.PREDICTIVE:
            return S.PREDICTIVE
        if planned is not PlannedState.Production:
            if planned is PlannedState.PlannedMaintenance:
                return S.PLANNED_MAINTENANCE
            return S.BREAK if planned is PlannedState.Break else S.OFF_SHIFT
        if self.held:
            return S.HELD
        if self.stopped:
            return S.STOPPED
        return S.EXECUTING if a is _A.EXECUTING else S.SUSPENDED

    def refresh(self) -> None:
        """Re-derive the state after activity, calendar or control changed; emit on change."""
        st = self._display()
        old = self.state
        if st is old:
            return
        now = now_of(self.env)  # env.now without its property's frame; see _simpy
        self._energy = energy = self._energy + self._powers[old.power] * (now - self._t_state) / 3600.0
        self._t_state = now
        self.state = st
        # Signal.set inlined, only for the tags this change of state changes (a third of
        # all emitted rows come from here)
        emit = self._emit
        for sig, value in self._changes[old][st]:
            sig.value = value
            emit((now, sig, value))
        sig = self.sig_energy
        kwh = round(energy, 6)
        if kwh != sig.value:
            sig.value = kwh
            emit((now, sig, kwh))

    def flush_energy(self) -> None:
        """Emit the energy integrated up to now (end of a run)."""
        now = self.env.now
        self._energy += self._powers[self.state.power] * (now - self._t_state) / 3600.0
        self._t_state = now
        self.sig_energy.set(round(self._energy, 6))

    def _act(self, a: S.Activity) -> None:
        if a is not self.activity:
            self.activity = a
            self.refresh()

    def set_planned(self, planned: PlannedState) -> None:
        self.planned = planned
        self.refresh()

    # ------------------------------------------------------------------ control

    def control(self, *, stopped: bool | None = None, held: bool | None = None) -> None:
        if stopped is not None:
            self.stopped = stopped
        if held is not None:
            self.held = held
        if self.stopped or self.held:
            if self._interruptible:
                self._interruptible = False
                self.process.interrupt("control")
        elif self._resume is not None and not self._resume.triggered:
            self._resume.succeed()
        self.refresh()

    # ------------------------------------------------------------------ process

    def _run(self) -> _Proc:
        # now_of(env) (_simpy) instead of the env.now property: read twice a unit and once
        # per stretch
        # per-station constants and hot attributes as locals: this loop runs once per unit
        env, inbuf, quality = self.env, self.inbuf, self._quality
        in_items, in_level, name = inbuf.items, inbuf.level, self.name
        insp = self.stage.inspection
        p_defect = self.stage.defect_probability
        kits, consumed, outbuf = self.kits, self.consumed, self.outbuf
        ideal, factor = self.ideal, self._factor
        processed, processed_by = self.processed, self.processed_by
        emit = self.ctx.emit
        scrap_at_end = outbuf is None and not self.line.has_inspection
        waiting, executing = _A.WAITING, _A.EXECUTING
        timeout, production_end = env.timeout, self.ctx.calendar.production_end
        clock = now_of
        while True:
            req = inbuf.store.get()
            if not req.triggered and self.activity is not waiting:
                self.activity = waiting
                self.refresh()
            unit: Unit = yield req
            now = clock(env)
            in_level.set(len(in_items))
            unit.waits.append(now - unit.t_in)
            unit.stations.append(name)
            self.unit = unit
            if kits is not None and consumed is not None:
                while kits.stock <= 0:
                    self._act(waiting)
                    yield kits.wait()
                kits.take()
                consumed.inc()
            if insp is None:
                work = ideal[unit.product] * factor() / self.speed
                # the first stretch of _work inlined (most cycles are one stretch): no
                # generator per unit, no delegation at each resume; _work does the rest
                now = clock(env)
                end = production_end(now)
                if work > EPS and end is not None and not (self.stopped or self.held):
                    if self.activity is not executing:
                        self.activity = executing
                        self.refresh()
                    h = min(work, end - now, self.ttf_left)
                    self._interruptible = True
                    try:  # noqa: SIM105  # as in _work
                        yield timeout(h)
                    except simpy.Interrupt:
                        pass
                    self._interruptible = False
                    done = clock(env) - now
                    work -= done
                    self.ttf_left -= done
                    if self.ttf_left <= EPS:
                        yield from self._breakdown()
                if work > EPS:
                    yield from self._work(work)
                if p_defect > 0.0 and quality() < p_defect and not unit.defective:
                    unit.defective, unit.origin = True, self
                    self.ctx.event(self.path, EventName.DEFECT_INTRODUCED, {"unit": unit.id})
                scrap = unit.defective and scrap_at_end
            else:
                scrap = yield from self._inspect(unit)
            # Counter.inc inlined (two rows per unit)
            now = clock(env)
            processed.value = n = processed.value + 1  # type: ignore[operator]
            emit((now, processed, n))
            by = processed_by[unit.product]
            by.value = n = by.value + 1  # type: ignore[operator]
            emit((now, by, n))
            if self._degr is not None:
                self._condition()
            if scrap:
                self._scrap(unit)
            elif outbuf is None:
                self.line.produced(unit)
            else:
                unit.t_in = now
                put = outbuf.store.put(unit)
                if not put.triggered and self.activity is not waiting:
                    self.activity = waiting
                    self.refresh()
                yield put
                unit.t_in = clock(env)
                outbuf.level.set(len(outbuf.items))
            self.unit = None
            if self._pdm is not None and not self._pdm_tried and self.ttf_left < self._pdm.lead_time:
                self._pdm_tried = True
                if self._pdm_draw() < self._pdm.detection_rate:
                    yield from self._predictive()

    def _inspect(self, unit: Unit) -> Generator[simpy.Event, Any, bool]:
        insp = self.stage.inspection
        assert insp is not None and self.inspected is not None and self.first_pass is not None
        work = self._insp_time() / self.speed
        if self.link is not None:
            work += self.link.round_trip(self.env.now) + self._inference()
        yield from self._work(work)
        self.inspected.inc()
        q = self._quality
        rate = insp.detection_rate if unit.defective else insp.false_reject_rate
        if not (rate > 0.0 and q() < rate):
            self.first_pass.inc()
            return False
        origin: Station = unit.origin if unit.defective else self
        if insp.rework_fraction > 0.0 and q() < insp.rework_fraction:
            yield from self._work(insp.rework_time / self.speed)
            origin.rework.inc()
            unit.defective, unit.origin = False, None
            self.ctx.event(self.path, EventName.UNIT_REWORKED,
                                {"unit": unit.id, "origin": origin.name})
            return False
        return True

    def _scrap(self, unit: Unit) -> None:
        origin: Station = unit.origin if unit.defective else self
        origin.defective.inc()
        self.line.scrapped(unit, self.path, origin.name)

    def _work(self, work: float) -> _Proc:
        """Spend ``work`` seconds executing, through window ends, stops and breakdowns."""
        env, cal = self.env, self.ctx.calendar
        while work > EPS:
            now = now_of(env)  # see _run
            end = cal.production_end(now)
            if end is None or self.stopped or self.held:
                yield from self._pause()
                continue
            if self.activity is not _A.EXECUTING:  # _act inlined: once per stretch
                self.activity = _A.EXECUTING
                self.refresh()
            h = min(work, end - now, self.ttf_left)
            self._interruptible = True
            # a Stop/Hold interrupts: account for the work done, then pause (try/except, not
            # contextlib.suppress: no context-manager object per stretch)
            try:  # noqa: SIM105
                yield env.timeout(h)
            except simpy.Interrupt:
                pass
            self._interruptible = False
            done = now_of(env) - now
            work -= done
            self.ttf_left -= done
            if self.ttf_left <= EPS:
                yield from self._breakdown()

    def _pause(self) -> _Proc:
        env = self.env
        self._act(_A.PAUSED)
        while True:
            if self.stopped or self.held:
                self._resume = env.event()
                yield self._resume
                continue
            start = self.ctx.calendar.next_production(env.now)
            if start <= env.now + EPS:
                return
            yield env.timeout(start - env.now)

    def _breakdown(self) -> _Proc:
        assert self.failure_count is not None
        env = self.env
        t0 = env.now
        self.failure_count.inc()
        self._act(_A.BREAKDOWN)
        self.ctx.event(self.path, EventName.FAILURE_START, {"failure": self.failure_count.value})
        tech_cfg = self.ctx.scenario.technicians
        duration = self._response() + self._repair() * tech_cfg.repair_time_factor
        tech, waited = yield from self.crew.work(self.path, duration, "repair")
        self.ctx.event(self.path, EventName.REPAIR_END, {
            "technician": tech, "downtime": round(env.now - t0, 6), "waited": round(waited, 6)})
        self.ttf_left = self.ttf_total = self._ttf()
        self._pdm_tried = False
        self._act(_A.PAUSED)

    def _predictive(self) -> _Proc:
        assert self._pdm is not None
        env = self.env
        t0 = env.now
        self._act(_A.PREDICTIVE)
        self.ctx.event(self.path, EventName.PDM_START,
                            {"remaining_ttf": round(self.ttf_left, 3)})
        tech, _ = yield from self.crew.work(self.path, self._pdm.duration, "predictive")
        self.ctx.event(self.path, EventName.PDM_END,
                            {"technician": tech, "downtime": round(env.now - t0, 6)})
        self.ttf_left = self.ttf_total = self._ttf()
        self._pdm_tried = False
        self._act(_A.PAUSED)

    def _condition(self) -> None:
        deg = self.stage.degradation
        assert deg is not None and self._degr is not None
        used = 1.0 - self.ttf_left / self.ttf_total if self.ttf_total > 0 else 1.0
        v = deg.baseline + (deg.at_failure - deg.baseline) * min(max(used, 0.0), 1.0)
        self._degr.set(round(v + self._noise(), 3))


class StationControl:
    """Live control of one station (what OPC UA methods and setpoints call).

    A command the station cannot carry out raises :class:`~iiotbed.errors.CommandRefused`;
    each protocol maps it once. Start/Stop/Hold/Unhold/Reset are accepted in every state.
    """

    def __init__(self, station: Station) -> None:
        self._s = station
        self.path = station.path

    @property
    def speed(self) -> float:
        return self._s.speed

    @property
    def state(self) -> str:
        """Name of the current state (``executing``, ``stopped``, ``breakdown``...)."""
        return self._s.state.name

    def start(self) -> None:
        self._s.control(stopped=False)

    def stop(self) -> None:
        self._s.control(stopped=True)

    def hold(self) -> None:
        self._s.control(held=True)

    def unhold(self) -> None:
        self._s.control(held=False)

    def reset(self) -> None:
        self._s.control(stopped=False, held=False)

    def set_speed(self, factor: float) -> None:
        """Speed setpoint: 1.0 nominal, cycle time divided by ``factor`` (0 < factor <= 2).

        Raises :class:`~iiotbed.errors.CommandRefused` (``out_of_range``) outside that range.
        """
        if not 0.0 < factor <= 2.0:
            raise CommandRefused(f"speed factor must be in (0, 2], got {factor}",
                                 target=self.path, command="SetSpeed", out_of_range=True)  # fmt: skip
        self._s.speed = float(factor)
