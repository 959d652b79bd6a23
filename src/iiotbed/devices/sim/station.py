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
from iiotbed.devices.sim._round import round3, round6
from iiotbed.devices.sim._signals import Context, Counter, Signal
from iiotbed.devices.sim._simpy import now_of, sleep
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
# states by index in STATES, compared by identity (no hashing of the State tuples)
_STATES = S.STATES
(_I_EXECUTING, _I_SUSPENDED, _I_STOPPED, _I_HELD, _I_BREAK, _I_OFF_SHIFT,
 _I_PLANNED_MAINTENANCE, _I_BREAKDOWN, _I_PREDICTIVE) = (_STATES.index(st) for st in (
    S.EXECUTING, S.SUSPENDED, S.STOPPED, S.HELD, S.BREAK, S.OFF_SHIFT, S.PLANNED_MAINTENANCE,
    S.BREAKDOWN, S.PREDICTIVE))
_EXECUTING, _BREAKDOWN, _PREDICTIVE = _A.EXECUTING, _A.BREAKDOWN, _A.PREDICTIVE
_PRODUCTION, _BREAK = PlannedState.Production, PlannedState.Break
_PLANNED_MAINTENANCE = PlannedState.PlannedMaintenance


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
        self._index = self._state_index()
        self.state = _STATES[self._index]
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
        self._changes = [[tuple((sig, _INTS[b][k]) for k, sig in enumerate(sigs)
                                if _INTS[a][k] != _INTS[b][k]) for b in _STATES]
                         for a in _STATES]
        # kW drawn in each state, by state index
        self._kw = [self._powers[st.power] for st in _STATES]
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

    def _state_index(self) -> int:
        """Index in ``STATES`` of the state to show (see the table in docs/event-log.md)."""
        a, planned = self.activity, self.planned
        if a is _BREAKDOWN:
            return _I_BREAKDOWN
        if a is _PREDICTIVE:
            return _I_PREDICTIVE
        if planned is not _PRODUCTION:
            if planned is _PLANNED_MAINTENANCE:
                return _I_PLANNED_MAINTENANCE
            return _I_BREAK if planned is _BREAK else _I_OFF_SHIFT
        if self.held:
            return _I_HELD
        if self.stopped:
            return _I_STOPPED
        return _I_EXECUTING if a is _EXECUTING else _I_SUSPENDED

    def refresh(self) -> None:
        """Re-derive the state after activity, calendar or control changed; emit on change."""
        # _state_index inlined: refresh runs about once per unit and stage
        a, planned = self.activity, self.planned
        if a is _BREAKDOWN:
            i = _I_BREAKDOWN
        elif a is _PREDICTIVE:
            i = _I_PREDICTIVE
        elif planned is not _PRODUCTION:
            if planned is _PLANNED_MAINTENANCE:
                i = _I_PLANNED_MAINTENANCE
            else:
                i = _I_BREAK if planned is _BREAK else _I_OFF_SHIFT
        elif self.held:
            i = _I_HELD
        elif self.stopped:
            i = _I_STOPPED
        else:
            i = _I_EXECUTING if a is _EXECUTING else _I_SUSPENDED
        old = self._index
        if i == old:
            return
        now = now_of(self.env)  # env.now without its property's frame; see _simpy
        self._energy = energy = self._energy + self._kw[old] * (now - self._t_state) / 3600.0
        self._t_state = now
        self._index = i
        self.state = _STATES[i]
        # Signal.set inlined, only for the tags this change of state changes (a third of
        # all emitted rows come from here)
        emit = self._emit
        for sig, value in self._changes[old][i]:
            sig.value = value
            emit((now, sig, value))
        sig = self.sig_energy
        p = energy * 1e6  # round6(energy) inlined (see _round)
        if -1e12 < p < 1e12 and (k := round(p)) and -0.499 < p - k < 0.499:
            kwh = k / 1e6
        else:
            kwh = round(energy, 6)
        if kwh != sig.value:
            sig.value = kwh
            emit((now, sig, kwh))

    def flush_energy(self) -> None:
        """Emit the energy integrated up to now (end of a run)."""
        now = self.env.now
        self._energy += self._powers[self.state.power] * (now - self._t_state) / 3600.0
        self._t_state = now
        self.sig_energy.set(round6(self._energy))

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
        # The loop runs once per unit: the calls it would make per unit are inlined, each
        # marked with what it stands for (Signal.set, Counter.inc, production_end,
        # _condition, env.timeout -> _simpy.sleep); per-station constants are locals.
        # now_of(env) (_simpy) reads env.now without the property's frame.
        env, inbuf, quality = self.env, self.inbuf, self._quality.draw  # C-level draws: rng
        in_store, in_items, in_level, name = inbuf.store, inbuf.items, inbuf.level, self.name
        insp = self.stage.inspection
        p_defect = self.stage.defect_probability
        kits, consumed, outbuf = self.kits, self.consumed, self.outbuf
        out_store = out_items = out_level = None
        if outbuf is not None:
            out_store, out_items, out_level = outbuf.store, outbuf.items, outbuf.level
        ideal, factor = self.ideal, self._factor.draw
        processed, processed_by = self.processed, self.processed_by
        emit = self.ctx.emit
        scrap_at_end = outbuf is None and not self.line.has_inspection
        waiting, executing = _A.WAITING, _A.EXECUTING
        cal = self.ctx.calendar
        production_end = cal.production_end
        clock = now_of
        degr, deg = self._degr, self.stage.degradation
        base = span = 0.0
        if degr is not None and deg is not None:
            base, span = deg.baseline, deg.at_failure - deg.baseline
        noise = self._noise.draw if degr is not None else None
        inspected, first_pass, link = self.inspected, self.first_pass, self.link
        while True:
            # Fifo.get triggers at once exactly when no get waits and an item is there
            if (in_store._gets or not in_items) and self.activity is not waiting:
                req = in_store.get()
                self.activity = waiting
                self.refresh()
            else:
                req = in_store.get()
            unit: Unit = yield req
            now = clock(env)
            v = len(in_items)  # in_level.set(len(in_items))
            if v != in_level.value:
                in_level.value = v
                emit((now, in_level, v))
            unit.waits.append(now - unit.t_in)
            unit.stations.append(name)
            self.unit = unit
            if kits is not None and consumed is not None:
                while kits.stock <= 0:
                    self._act(waiting)
                    yield kits.wait()
                kits.take()
                consumed.value = n = consumed.value + 1  # type: ignore[operator]  # consumed.inc()
                emit((clock(env), consumed, n))
            if insp is None:
                work = ideal[unit.product] * factor() / self.speed
            else:
                work = self._insp_time.draw() / self.speed
                if link is not None:
                    work += link.round_trip(clock(env)) + self._inference.draw()
            # the first stretch of _work inlined (most cycles are one stretch): no generator
            # per unit, no delegation at each resume; _work does the rest
            now = clock(env)  # a wait for kits may have passed
            seg = cal._last  # production_end(now), with the calendar's last segment
            if seg[0] <= now + EPS < seg[1]:
                end = seg[1] if seg[2] is _PRODUCTION else None
            else:
                end = production_end(now)
            if work > EPS and end is not None and not (self.stopped or self.held):
                if self.activity is not executing:
                    self.activity = executing
                    self.refresh()
                h = work  # min(work, end - now, self.ttf_left), without the call
                if end - now < h:
                    h = end - now
                if self.ttf_left < h:
                    h = self.ttf_left
                self._interruptible = True
                try:  # noqa: SIM105  # as in _work
                    yield sleep(env, h)
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
            if insp is None:
                if p_defect > 0.0 and quality() < p_defect and not unit.defective:
                    unit.defective, unit.origin = True, self
                    self.ctx.event(self.path, EventName.DEFECT_INTRODUCED, {"unit": unit.id})
                scrap = unit.defective and scrap_at_end
            else:
                # the judgement, as _judge: inspected, then passed first time or rejected
                assert inspected is not None and first_pass is not None
                now = clock(env)
                inspected.value = n = inspected.value + 1  # type: ignore[operator]
                emit((now, inspected, n))
                rate = insp.detection_rate if unit.defective else insp.false_reject_rate
                if not (rate > 0.0 and quality() < rate):
                    first_pass.value = n = first_pass.value + 1  # type: ignore[operator]
                    emit((now, first_pass, n))
                    scrap = False
                else:
                    scrap = yield from self._rejected(unit)
            # Counter.inc inlined (two rows per unit)
            now = clock(env)
            processed.value = n = processed.value + 1  # type: ignore[operator]
            emit((now, processed, n))
            by = processed_by[unit.product]
            by.value = n = by.value + 1  # type: ignore[operator]
            emit((now, by, n))
            if noise is not None and degr is not None:
                # _condition inlined
                total = self.ttf_total
                used = 1.0 - self.ttf_left / total if total > 0 else 1.0
                if used < 0.0:  # min(max(used, 0.0), 1.0)
                    used = 0.0
                elif used > 1.0:
                    used = 1.0
                x = round3(base + span * used + noise())
                if x != degr.value:  # degr.set(x)
                    degr.value = x
                    emit((now, degr, x))
            if scrap:
                self._scrap(unit)
            elif out_store is None:
                self.line.produced(unit)
            else:
                assert out_items is not None and out_level is not None
                unit.t_in = now
                # Fifo.put triggers at once exactly when no put waits and there is room
                if ((out_store._puts or len(out_items) >= out_store.capacity)
                        and self.activity is not waiting):
                    put = out_store.put(unit)
                    self.activity = waiting
                    self.refresh()
                else:
                    put = out_store.put(unit)
                yield put
                unit.t_in = now = clock(env)
                v = len(out_items)  # outbuf.level.set(len(outbuf.items))
                if v != out_level.value:
                    out_level.value = v
                    emit((now, out_level, v))
            self.unit = None
            if self._pdm is not None and not self._pdm_tried and self.ttf_left < self._pdm.lead_time:
                self._pdm_tried = True
                if self._pdm_draw() < self._pdm.detection_rate:
                    yield from self._predictive()

    def _rejected(self, unit: Unit) -> Generator[simpy.Event, Any, bool]:
        """After a rejection at inspection: rework the unit (False) or scrap it (True)."""
        insp = self.stage.inspection
        assert insp is not None
        origin: Station = unit.origin if unit.defective else self
        if insp.rework_fraction > 0.0 and self._quality() < insp.rework_fraction:
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
            h = work  # min(work, end - now, self.ttf_left), without the call
            if end - now < h:
                h = end - now
            if self.ttf_left < h:
                h = self.ttf_left
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
            "technician": tech, "downtime": round6(env.now - t0), "waited": round6(waited)})
        self.ttf_left = self.ttf_total = self._ttf()
        self._pdm_tried = False
        self._act(_A.PAUSED)

    def _predictive(self) -> _Proc:
        assert self._pdm is not None
        env = self.env
        t0 = env.now
        self._act(_A.PREDICTIVE)
        self.ctx.event(self.path, EventName.PDM_START,
                            {"remaining_ttf": round3(self.ttf_left)})
        tech, _ = yield from self.crew.work(self.path, self._pdm.duration, "predictive")
        self.ctx.event(self.path, EventName.PDM_END,
                            {"technician": tech, "downtime": round6(env.now - t0)})
        self.ttf_left = self.ttf_total = self._ttf()
        self._pdm_tried = False
        self._act(_A.PAUSED)

    def _condition(self) -> None:
        deg = self.stage.degradation
        assert deg is not None and self._degr is not None
        used = 1.0 - self.ttf_left / self.ttf_total if self.ttf_total > 0 else 1.0
        v = deg.baseline + (deg.at_failure - deg.baseline) * min(max(used, 0.0), 1.0)
        self._degr.set(round3(v + self._noise()))


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
