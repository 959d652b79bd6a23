"""Line-side kits and the supply that refills them: handlers with carts or an AMR fleet.

A station's stock is refilled when it falls to the reorder point; one order is open per
station at a time. A delivery brings up to the carrier's capacity, never more than fits.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Generator
from typing import Any

import simpy

from iiotbed.devices.sim._signals import Context, Signal
from iiotbed.devices.sim.network import LinkUser
from iiotbed.errors import CommandRefused
from iiotbed.scenario import AmrFleet, Kits, ManualSupply
from iiotbed.telemetry import EventName, Tag

__all__ = ["AmrControl", "AmrSupply", "KitStock", "ManualCarts", "Supplier"]

_Proc = Generator[simpy.Event, Any, None]
Point = tuple[float, float]
Leg = tuple[Point, Point, float, float]  # from, to, start time, arrival time


def _dist(a: Point, b: Point) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


class Supplier:
    """Something that accepts replenishment orders."""

    def order(self, stock: KitStock) -> None:
        raise NotImplementedError


class KitStock:
    """Kits beside one station: ``take`` one per unit, reorder at the reorder point."""

    def __init__(self, ctx: Context, path: str, kits: Kits, position: Point, supplier: Supplier) -> None:
        self.env = ctx.env
        self.path = path
        self.capacity = kits.capacity
        self.reorder_point = kits.reorder_point
        self.stock = kits.capacity if kits.initial is None else kits.initial
        self.position = position
        self.supplier = supplier
        self.open_order = False
        self._waiter: simpy.Event | None = None

    def start(self) -> None:
        """Order at once if the initial stock is already at the reorder point."""
        if self.stock <= self.reorder_point:
            self.open_order = True
            self.supplier.order(self)

    def wait(self) -> simpy.Event:
        """An event fired by the next delivery."""
        if self._waiter is None or self._waiter.triggered:
            self._waiter = self.env.event()
        return self._waiter

    def take(self) -> None:
        self.stock -= 1
        if self.stock <= self.reorder_point and not self.open_order:
            self.open_order = True
            self.supplier.order(self)

    def room(self) -> int:
        return self.capacity - self.stock

    def deliver(self, n: int) -> None:
        self.stock += n
        self.open_order = False
        if self._waiter is not None and not self._waiter.triggered:
            self._waiter.succeed()
        if self.stock <= self.reorder_point:
            self.open_order = True
            self.supplier.order(self)


class ManualCarts(Supplier):
    """Handlers (a shared resource) walk a cart warehouse -> station and back.

    Simplification: handlers are available around the clock.
    """

    def __init__(self, ctx: Context, cfg: ManualSupply, warehouse: Point) -> None:
        self.ctx = ctx
        self.cfg = cfg
        self.warehouse = warehouse
        self.handlers = simpy.Resource(ctx.env, cfg.handlers)

    def order(self, stock: KitStock) -> None:
        self.ctx.env.process(self._trip(stock))

    def _trip(self, stock: KitStock) -> _Proc:
        env, cfg = self.ctx.env, self.cfg
        with self.handlers.request() as req:
            yield req
            leg = _dist(self.warehouse, stock.position) / cfg.speed
            yield env.timeout(cfg.load_time + leg + cfg.unload_time)
            n = min(cfg.capacity, stock.room())
            stock.deliver(n)
            self.ctx.event(stock.path, EventName.KIT_DELIVERY, {"kits": n, "by": "handler"})
            yield env.timeout(leg)


class _Amr:
    __slots__ = ("battery", "battery_sig", "hold", "idle_since", "leg", "name", "path", "pos",
                 "proc", "t_batt", "trip", "x", "y")

    def __init__(self, ctx: Context, path: str, name: str, pos: Point) -> None:
        self.path, self.name, self.pos = path, name, pos
        self.hold: simpy.Event | None = None  # set while paused from outside (AmrControl)
        self.leg: Leg | None = None  # the leg it is driving now
        self.trip = 0  # the delivery under way (AmrTripStart to AmrTripEnd), 0 if none
        self.proc: simpy.Process | None = None  # its trip process (cancelled by interrupting it)
        self.battery = 100.0
        self.t_batt = 0.0
        self.idle_since = 0.0
        self.battery_sig = Signal(ctx, path, Tag.BATTERY, 100.0, "P1")
        self.x = Signal(ctx, path, Tag.POSITION_X, pos[0], "MTR")
        self.y = Signal(ctx, path, Tag.POSITION_Y, pos[1], "MTR")


class AmrSupply(Supplier):
    """An AMR fleet: orders cross the dispatch link, then go to a free AMR.

    Orders are served first come first served; ``dispatch: fifo`` gives an order to the
    AMR idle the longest, ``nearest`` to the idle AMR nearest the warehouse. AMRs charge
    when their battery falls below the threshold after a trip (or before one).
    """

    def __init__(self, ctx: Context, cfg: AmrFleet, warehouse: Point, line_path: str,
                 link: LinkUser | None) -> None:
        self.ctx, self.cfg, self.warehouse, self.link = ctx, cfg, warehouse, link
        home = cfg.battery.charger_position
        self.amrs = [_Amr(ctx, f"{line_path}/amr-{i + 1:02d}", f"amr-{i + 1:02d}", home)
                     for i in range(cfg.count)]
        self.idle: list[_Amr] = list(self.amrs)
        self.orders: deque[KitStock] = deque()
        self.chargers = simpy.Resource(ctx.env, cfg.battery.chargers)
        self._wake: simpy.Event | None = None
        self._trips = 0
        ctx.env.process(self._dispatcher())

    def order(self, stock: KitStock) -> None:
        if self.link is None:
            self._enqueue(stock)
        else:
            self.ctx.env.process(self._send(stock))

    def _send(self, stock: KitStock) -> _Proc:
        assert self.link is not None
        yield self.ctx.env.timeout(self.link.one_way(self.ctx.env.now))
        self._enqueue(stock)

    def _enqueue(self, stock: KitStock) -> None:
        self.orders.append(stock)
        self._poke()

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def _dispatcher(self) -> _Proc:
        env = self.ctx.env
        while True:
            if not self.orders or not self.idle:
                self._wake = env.event()
                yield self._wake
                continue
            stock = self.orders.popleft()
            if self.cfg.dispatch == "nearest":
                amr = min(self.idle, key=lambda a: (_dist(a.pos, self.warehouse), a.name))
            else:
                amr = min(self.idle, key=lambda a: (a.idle_since, a.name))
            self.idle.remove(amr)
            amr.proc = env.process(self._trip(amr, stock))

    def _drain(self, amr: _Amr, metres: float) -> None:
        b = self.cfg.battery
        now = self.ctx.env.now
        amr.battery -= metres / 1000.0 * b.consumption_per_km + b.idle_drain_per_h * (now - amr.t_batt) / 3600.0
        amr.battery = max(amr.battery, 0.0)
        amr.t_batt = now

    def _step(self, amr: _Amr) -> _Proc:
        """Wait here while the AMR is paused (a paused AMR finishes its step, then holds)."""
        if amr.hold is None:
            return
        env = self.ctx.env
        t0 = env.now
        self.ctx.event(amr.path, EventName.AMR_PAUSED, {})
        while amr.hold is not None:
            yield amr.hold
        self._drain(amr, 0.0)
        self.ctx.event(amr.path, EventName.AMR_RESUMED, {"paused": round(env.now - t0, 6)})

    def _move(self, amr: _Amr, to: Point) -> _Proc:
        yield from self._step(amr)
        d = _dist(amr.pos, to)
        if d > 0.0:
            env = self.ctx.env
            amr.leg = (amr.pos, to, env.now, env.now + d / self.cfg.speed)
            yield env.timeout(d / self.cfg.speed)
            amr.leg = None
        self._drain(amr, d)
        amr.pos = to
        amr.x.set(round(to[0], 3))
        amr.y.set(round(to[1], 3))
        amr.battery_sig.set(round(amr.battery, 3))

    def _trip(self, amr: _Amr, stock: KitStock) -> _Proc:
        env, cfg = self.ctx.env, self.cfg
        self._drain(amr, 0.0)
        if amr.battery < cfg.battery.charge_threshold:
            yield from self._charge(amr)
        self._trips += 1
        trip = amr.trip = self._trips
        self.ctx.event(amr.path, EventName.AMR_TRIP_START, {"trip": trip, "station": stock.path})
        try:
            yield from self._move(amr, self.warehouse)
            yield from self._step(amr)
            yield env.timeout(cfg.load_time)
            yield from self._move(amr, stock.position)
            yield from self._step(amr)
            yield env.timeout(cfg.unload_time)
        except simpy.Interrupt:  # AmrControl.cancel: stop here, the order goes back first in line
            self._stop(amr)
            self.ctx.event(amr.path, EventName.AMR_TRIP_CANCELLED, {"trip": trip, "station": stock.path})
            self.orders.appendleft(stock)
            self._poke()
        else:
            amr.trip = 0
            n = min(cfg.capacity, stock.room())
            stock.deliver(n)
            self.ctx.event(stock.path, EventName.KIT_DELIVERY, {"kits": n, "by": amr.name})
            self._drain(amr, 0.0)
            amr.battery_sig.set(round(amr.battery, 3))
            self.ctx.event(amr.path, EventName.AMR_TRIP_END, {"trip": trip, "station": stock.path, "kits": n})
        if amr.battery < cfg.battery.charge_threshold:
            yield from self._charge(amr)
        yield from self._step(amr)
        amr.idle_since = env.now
        self.idle.append(amr)
        self._poke()

    def _stop(self, amr: _Amr) -> None:
        """A trip called off: the AMR stops where it is now (on its leg if driving)."""
        amr.trip = 0
        leg, amr.leg = amr.leg, None
        if leg is not None:
            at = _on_leg(leg, self.ctx.env.now)
            self._drain(amr, _dist(amr.pos, at))
            amr.pos = at
            amr.x.set(round(at[0], 3))
            amr.y.set(round(at[1], 3))
        else:
            self._drain(amr, 0.0)
        amr.battery_sig.set(round(amr.battery, 3))

    def _charge(self, amr: _Amr) -> _Proc:
        env, b = self.ctx.env, self.cfg.battery
        yield from self._move(amr, b.charger_position)
        with self.chargers.request() as req:
            yield req
            self._drain(amr, 0.0)
            self.ctx.event(amr.path, EventName.CHARGE_START, {"battery": round(amr.battery, 3)})
            yield env.timeout(max(0.0, b.charge_to - amr.battery) / b.charge_rate_per_h * 3600.0)
            amr.battery = max(amr.battery, b.charge_to)
            amr.t_batt = env.now
            amr.battery_sig.set(round(amr.battery, 3))
            self.ctx.event(amr.path, EventName.CHARGE_END, {"battery": round(amr.battery, 3)})


def _on_leg(leg: Leg, t: float) -> Point:
    """Where an AMR driving ``leg`` is at time ``t`` (constant speed; clamped to the leg)."""
    (x0, y0), (x1, y1), t0, t1 = leg
    f = 1.0 if t1 <= t0 else min(1.0, max(0.0, (t - t0) / (t1 - t0)))
    return x0 + (x1 - x0) * f, y0 + (y1 - y0) * f


class AmrControl:
    """Live control of one AMR (what VDA 5050 ``startPause``/``stopPause``/``cancelOrder`` call).

    ``pause`` lets the AMR finish the step it is on (a leg, loading, unloading, charging),
    then holds it where it is until ``resume``; the model logs ``AmrPaused``/``AmrResumed``.
    ``cancel`` calls off the delivery under way: the AMR stops where it is (mid-leg too),
    the model logs ``AmrTripCancelled``, and the station's kit order goes back to the head
    of the dispatcher's queue (a later trip delivers it).
    """

    def __init__(self, supply: AmrSupply, amr: _Amr) -> None:
        self._env = supply.ctx.env
        self._amr = amr
        self.name = amr.name
        self.path = amr.path

    @property
    def paused(self) -> bool:
        return self._amr.hold is not None

    @property
    def position(self) -> Point:
        """Where the AMR last arrived (metres)."""
        return self._amr.pos

    @property
    def trip(self) -> int:
        """The delivery trip under way (its ``AmrTripStart`` number), 0 if none."""
        return self._amr.trip

    @property
    def leg(self) -> Leg | None:
        """The leg it is driving now: (from, to, start time, arrival time), else None."""
        return self._amr.leg

    def position_at(self, t: float) -> Point:
        """Where it is at sim time ``t`` (interpolated on the leg it is driving)."""
        leg = self._amr.leg
        return self._amr.pos if leg is None else _on_leg(leg, t)

    def cancel(self) -> int:
        """Call off the delivery under way (takes effect at the current sim time); its trip
        number. Raises CommandRefused when the AMR is not on a delivery."""
        amr = self._amr
        if not amr.trip or amr.proc is None or not amr.proc.is_alive:
            raise CommandRefused("it is not on a delivery trip", target=amr.name, command="cancelOrder")
        amr.proc.interrupt("cancelOrder")
        trip, amr.trip = amr.trip, 0  # a second cancel before the interrupt lands is refused
        return trip

    def pause(self) -> None:
        if self._amr.hold is None:
            self._amr.hold = self._env.event()

    def resume(self) -> None:
        hold, self._amr.hold = self._amr.hold, None
        if hold is not None and not hold.triggered:
            hold.succeed()
