"""The sidecar's zenoh API against real zenoh sessions on loopback: in this host, in a second host
process, and as clients of a router running in a third process."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from boss_sidecar.errors import SidecarError
from boss_sidecar.samples import Query, QueryReply, Reply, Sample
from boss_sidecar.sidecar import Sidecar
from boss_sidecar.testing import client_config, free_port, peer_config, wait_until
from peers.sidecar_support import BOUND, Collector, LineProgram, line_program


def _texts(samples: list[Sample]) -> list[str]:
    return [sample.text() for sample in samples]


def _probe_until_seen(put_probe: Callable[[], object], seen: Collector) -> None:
    """Put probes until the subscriber sees one: the publisher then knows the subscription."""

    def probe() -> bool:
        put_probe()
        try:
            seen.wait(1, timeout=0.2)
        except AssertionError:
            return False
        return True

    wait_until(probe, BOUND, "a probe to reach the subscriber")


# ----------------------------------------------------------------- two host processes


class TwoHosts:
    """This process's sidecar ``a`` (listening) and the peer host program ``b`` (connected to it)."""

    def __init__(self, a: Sidecar, b: LineProgram, b_zid: str) -> None:
        self.a, self.b, self.b_zid = a, b, b_zid
        self.probes, self.received = Collector(), Collector()

    def on_sample(self, sample: Sample) -> None:
        (self.probes if sample.key_expr.endswith("/probe") else self.received)(sample)


@pytest.fixture(scope="module")
def two_hosts() -> Iterator[TwoHosts]:
    port = free_port()
    a = Sidecar("host-a", peer_config(port)).start()
    try:
        with line_program("sidecar_peer_host.py", json.dumps(peer_config(connect_ports=(port,)))) as b:
            hosts = TwoHosts(a, b, b.expect("ready"))
            a.subscribe("twohosts/to_a/**", hosts.on_sample)
            a.queryable("twohosts/a/**", lambda query: f"a answers {query.parameters}")
            wait_until(lambda: hosts.b_zid in a.info()["peers"], BOUND, "the second host to connect")
            wait_until(lambda: a.get("twohosts/b/hello", timeout=1), BOUND, "the second host's queryable to be known")
            _probe_until_seen(lambda: b.ask("put", "twohosts/to_a/probe", 1), hosts.probes)

            def a_probe() -> None:
                a.put("twohosts/to_b/probe", "p")
                a.flush()

            wait_until(lambda: a_probe() or b.ask("probes"), BOUND, "a probe from this host to reach the other")
            yield hosts
            assert b.ask("stop") is False, "the second host imported zenoh"
            assert b.finish() == 0
    finally:
        a.stop()


def test_samples_put_in_another_host_reach_this_subscriber_in_order(two_hosts: TwoHosts) -> None:
    """A put in the second host process arrives at this host's subscription callback, in order."""
    two_hosts.b.ask("put", "twohosts/to_a/seq", 300)
    samples = two_hosts.received.wait(300)
    assert _texts(samples) == [str(index) for index in range(300)]
    assert {sample.key_expr for sample in samples} == {"twohosts/to_a/seq"}


def test_samples_put_here_reach_the_other_hosts_subscriber_in_order(two_hosts: TwoHosts) -> None:
    """A put in this host arrives at the second host's subscription, in order."""
    for index in range(300):
        two_hosts.a.put("twohosts/to_b/seq", str(index))
    assert two_hosts.b.ask("wait", 300) == [["twohosts/to_b/seq", str(index)] for index in range(300)]


def test_get_here_is_answered_by_the_other_hosts_queryable(two_hosts: TwoHosts) -> None:
    """get in this host reaches the queryable whose handler runs in the second host."""
    replies = two_hosts.a.get("twohosts/b/item?x=1")
    assert replies == [Reply(True, "twohosts/b/item", b"b answers x=1")]


def test_get_in_the_other_host_is_answered_by_this_hosts_queryable(two_hosts: TwoHosts) -> None:
    """get in the second host reaches the queryable whose handler runs in this host."""
    assert two_hosts.b.ask("get", "twohosts/a/item?y=2") == [[True, "twohosts/a/item", "a answers y=2"]]


def test_info_shows_each_hosts_zid_among_the_others_peers(two_hosts: TwoHosts) -> None:
    """info() of each sidecar lists the other sidecar's zid as a peer and no router."""
    a_info, b_info = two_hosts.a.info(), two_hosts.b.ask("info")
    assert a_info["peers"] == [b_info["zid"]] and b_info["peers"] == [a_info["zid"]]
    assert a_info["routers"] == b_info["routers"] == []


# ----------------------------------------------------------------- clients of a router


def test_clients_of_a_router_in_another_process_exchange_samples_and_queries(
    make_sidecar: Callable[..., Sidecar],
) -> None:
    """Two client-mode sidecars reach each other through a router session in a third process."""
    port = free_port()
    with line_program("zenoh_router.py", str(port)) as router:
        router_zid = router.expect("ready")
        a = make_sidecar("client-a", client_config(port))
        b = make_sidecar("client-b", client_config(port))
        assert a.info()["routers"] == [router_zid] and b.info()["routers"] == [router_zid]
        probes, received = Collector(), Collector()
        a.subscribe("routed/probe", probes)
        a.subscribe("routed/seq", received)
        a.queryable("routed/q", lambda query: "routed answer")
        wait_until(lambda: b.get("routed/q", timeout=1), BOUND, "the queryable to be known through the router")
        _probe_until_seen(lambda: (b.put("routed/probe", "p"), b.flush()), probes)
        for index in range(100):
            b.put("routed/seq", str(index))
        assert _texts(received.wait(100)) == [str(index) for index in range(100)]
        assert b.get("routed/q") == [Reply(True, "routed/q", b"routed answer")]
        a.stop()
        b.stop()
        assert router.finish() == 0


# ----------------------------------------------------------------- subscriptions


def test_each_subscription_gets_its_samples_in_order(make_sidecar: Callable[..., Sidecar]) -> None:
    """Interleaved puts on two keys reach each key's callback in the order they were put."""
    sidecar = make_sidecar("order")
    one, two = Collector(), Collector()
    sidecar.subscribe("order/one", one)
    sidecar.subscribe("order/two", two)
    for index in range(500):
        sidecar.put("order/one", f"1-{index}")
        sidecar.put("order/two", f"2-{index}")
    assert _texts(one.wait(500)) == [f"1-{index}" for index in range(500)]
    assert _texts(two.wait(500)) == [f"2-{index}" for index in range(500)]


def test_a_blocked_callback_stalls_only_its_own_subscription(make_sidecar: Callable[..., Sidecar]) -> None:
    """While one callback is blocked, another subscription's callback still gets every sample."""
    sidecar = make_sidecar("stall")
    gate, entered = threading.Event(), threading.Event()
    slow, fast = Collector(), Collector()

    def blocked(sample: Sample) -> None:
        entered.set()
        gate.wait(BOUND)
        slow(sample)

    sidecar.subscribe("stall/k", blocked)
    sidecar.subscribe("stall/k", fast)
    for index in range(50):
        sidecar.put("stall/k", str(index))
    assert _texts(fast.wait(50)) == [str(index) for index in range(50)]
    assert entered.wait(BOUND)  # its thread may start after the other callback took all 50
    assert slow.items == []
    gate.set()
    assert _texts(slow.wait(50)) == [str(index) for index in range(50)]


def test_subscription_without_callback_is_iterated(make_sidecar: Callable[..., Sidecar]) -> None:
    """A subscription made without a callback yields samples from recv() and iteration, in order."""
    sidecar = make_sidecar("iterate")
    subscription = sidecar.subscribe("iter/k")
    for index in range(6):
        sidecar.put("iter/k", str(index))
    assert [subscription.recv(timeout=BOUND).text() for _ in range(3)] == ["0", "1", "2"]
    iterated = []
    for sample in subscription:
        iterated.append(sample.text())
        if len(iterated) == 3:
            break
    assert iterated == ["3", "4", "5"]
    with pytest.raises(queue.Empty):
        subscription.recv(timeout=0)
    subscription.close()
    assert list(subscription) == []


def test_closed_subscription_receives_no_more_samples(make_sidecar: Callable[..., Sidecar]) -> None:
    """After close(), a subscription's callback gets nothing while an open one still does."""
    sidecar = make_sidecar("close")
    closed, still_open = Collector(), Collector()
    subscription = sidecar.subscribe("close/k", closed)
    sidecar.subscribe("close/k", still_open)
    sidecar.put("close/k", "before")
    closed.wait(1)
    subscription.close()
    sidecar.put("close/k", "after")
    assert _texts(still_open.wait(2)) == ["before", "after"]
    sidecar.flush()
    assert _texts(closed.items) == ["before"]


def test_closed_subscriptions_leave_no_threads_in_the_worker(make_sidecar: Callable[..., Sidecar]) -> None:
    """Subscribing starts a thread per subscription in the worker; closing the subscriptions ends them.

    (Only those are counted: the worker's serving pool keeps the threads it started, by design.)"""
    sidecar = make_sidecar("threads")
    worker = sidecar.host("peers.sidecar_objects:Introspect")

    def subscription_threads() -> list[str]:
        return [name for name in worker.thread_names() if name.startswith("subscriber-")]

    assert subscription_threads() == []
    subscriptions = [sidecar.subscribe(f"thr/{index}", lambda sample: None) for index in range(5)]
    assert len(subscription_threads()) == 5
    for subscription in subscriptions:
        subscription.close()
    wait_until(lambda: subscription_threads() == [], BOUND, "the worker's subscription threads to end")


# ----------------------------------------------------------------- queryables


@pytest.mark.parametrize(
    ("selector", "result", "expected"),
    [
        ("qr/item", b"raw", [Reply(True, "qr/item", b"raw")]),
        ("qr/item", "text", [Reply(True, "qr/item", b"text")]),
        ("qr/item", QueryReply("qr/item", "typed", "text/plain"), [Reply(True, "qr/item", b"typed", "text/plain")]),
        (
            "qr/**",
            [QueryReply("qr/a", b"1"), QueryReply("qr/b", "2")],
            [Reply(True, "qr/a", b"1"), Reply(True, "qr/b", b"2")],
        ),
        ("qr/item", None, []),
    ],
    ids=["bytes", "str", "QueryReply", "list", "None"],
)
def test_queryable_handler_result_becomes_the_replies(
    make_sidecar: Callable[..., Sidecar], selector: str, result: object, expected: list[Reply]
) -> None:
    """bytes, str, a QueryReply, a list of them or None: get returns the matching replies."""
    sidecar = make_sidecar("replies")
    seen: list[Query] = []

    def handler(query: Query) -> object:
        seen.append(query)
        return result

    sidecar.queryable("qr/**", handler)
    assert sorted(sidecar.get(selector), key=repr) == expected  # zenoh does not keep replies in order
    assert [query.key_expr for query in seen] == [selector]


def test_query_carries_parameters_payload_and_attachment(make_sidecar: Callable[..., Sidecar]) -> None:
    """The handler sees the selector's parameters and the get's payload, encoding and attachment."""
    sidecar = make_sidecar("query")
    seen: list[Query] = []
    sidecar.queryable("q/k", seen.append)
    assert sidecar.get("q/k?a=1;b=2", "body", encoding="text/plain", attachment="meta") == []
    (query,) = seen
    assert (query.selector, query.key_expr, query.parameters) == ("q/k?a=1;b=2", "q/k", "a=1;b=2")
    assert (query.payload, query.encoding, query.attachment) == (b"body", "text/plain", b"meta")


def test_raising_queryable_handler_gives_an_error_reply(make_sidecar: Callable[..., Sidecar]) -> None:
    """A handler that raises answers with an error: get returns it as a Reply with ok False."""
    sidecar = make_sidecar("raises")

    def handler(query: Query) -> str:
        raise RuntimeError(f"cannot answer {query.key_expr}")

    sidecar.queryable("err/k", handler)
    (reply,) = sidecar.get("err/k")
    assert not reply.ok and reply.key_expr is None
    assert reply.text() == "RuntimeError: cannot answer err/k"


def test_plain_payload_for_a_wildcard_query_gives_an_error_reply(make_sidecar: Callable[..., Sidecar]) -> None:
    """A bare payload has no key to answer a wildcard query on: the error reply says to use QueryReply."""
    sidecar = make_sidecar("wildcard")
    sidecar.queryable("wild/**", lambda query: "no key")
    (reply,) = sidecar.get("wild/**")
    assert not reply.ok and "QueryReply" in reply.text()


def test_closed_queryable_no_longer_answers(make_sidecar: Callable[..., Sidecar]) -> None:
    """After close(), get finds no queryable to answer."""
    sidecar = make_sidecar("closeq")
    queryable = sidecar.queryable("cq/k", lambda query: "here")
    assert sidecar.get("cq/k") == [Reply(True, "cq/k", b"here")]
    queryable.close()
    assert sidecar.get("cq/k", timeout=1) == []


# ----------------------------------------------------------------- publishing


@pytest.mark.parametrize(
    "priority", ["real_time", "interactive_high", "interactive_low", "data_high", "DATA", "data_low", "background"]
)
@pytest.mark.parametrize("congestion_control", ["drop", "block", "block_first"])
def test_put_options_are_accepted_and_encoding_and_attachment_arrive(
    make_sidecar: Callable[..., Sidecar], priority: str, congestion_control: str
) -> None:
    """Every priority and congestion control is accepted; encoding and attachment reach the subscriber."""
    sidecar = make_sidecar("options")
    subscription = sidecar.subscribe("opts/k")
    sidecar.put(
        "opts/k",
        b"\x00\x01",
        encoding="application/octet-stream",
        congestion_control=congestion_control,
        priority=priority,
        express=True,
        attachment="meta",
    )
    sidecar.flush()
    sample = subscription.recv(timeout=BOUND)
    assert sample == Sample("opts/k", b"\x00\x01", "put", "application/octet-stream", None, b"meta")


def test_delete_reaches_the_subscriber_after_earlier_puts(make_sidecar: Callable[..., Sidecar]) -> None:
    """delete() publishes a deletion, ordered after the puts made before it."""
    sidecar = make_sidecar("delete")
    subscription = sidecar.subscribe("del/k")
    sidecar.put("del/k", "value")
    sidecar.delete("del/k", priority="data_high", congestion_control="block")
    first, second = subscription.recv(timeout=BOUND), subscription.recv(timeout=BOUND)
    assert (first.kind, first.text(), second.kind, second.payload) == ("put", "value", "delete", b"")


def test_a_burst_of_mixed_samples_arrives_each_with_its_own_fields(make_sidecar: Callable[..., Sidecar]) -> None:
    """Samples that travel together (keys, kinds, encodings and attachments differing or alike) keep their own."""
    sidecar = make_sidecar("mixed")
    subscription = sidecar.subscribe("mix/**")
    expected = []
    for index in range(300):
        key, attachment = f"mix/{index % 3}", (b"a%d" % index if index % 5 == 0 else None)
        if index % 7 == 6:
            sidecar.delete(key)
            expected.append(Sample(key, b"", "delete", "zenoh/bytes", None, None))
            continue
        encoding = "text/plain" if index % 2 else "zenoh/bytes"
        sidecar.put(key, b"%d" % index, encoding=encoding, attachment=attachment)
        expected.append(Sample(key, b"%d" % index, "put", encoding, None, attachment))
    for index in range(100):  # and a stretch where every field but the payload is alike
        sidecar.put("mix/same", b"s%d" % index)
        expected.append(Sample("mix/same", b"s%d" % index, "put", "zenoh/bytes", None, None))
    sidecar.flush()
    assert [subscription.recv(timeout=BOUND) for _ in expected] == expected


def test_many_puts_travel_as_few_messages(make_sidecar: Callable[..., Sidecar]) -> None:
    """Puts made while a batch is on the wire go together as one message to the worker."""
    sidecar = make_sidecar("coalesce")
    received = Collector()
    sidecar.subscribe("co/k", received)
    endpoint = sidecar._supervisor.endpoint()
    send = endpoint.notify
    batches: list[int] = []
    all_queued = threading.Event()

    def counting(method: str, *args: Any) -> None:
        if method == "put_batch":
            batches.append(len(args[0]))
            all_queued.wait(BOUND)  # hold the first batch on the wire while the rest pile up
        send(method, *args)

    endpoint.notify = counting  # type: ignore[method-assign]
    sidecar.put("co/k", "0")
    wait_until(lambda: batches, BOUND, "the first batch to be on the wire")
    for index in range(1, 1000):
        sidecar.put("co/k", str(index))
    all_queued.set()
    sidecar.flush()
    assert batches == [1, 999]
    assert _texts(received.wait(1000)) == [str(index) for index in range(1000)]


def test_put_rejected_in_the_worker_surfaces_on_the_next_flush_naming_it(
    make_sidecar: Callable[..., Sidecar],
) -> None:
    """An invalid priority is refused by the worker; the next flush raises a SidecarError naming it, once."""
    sidecar = make_sidecar("badput")
    sidecar.put("bad/k", "x", priority="urgent")
    with pytest.raises(SidecarError, match=r"put 'bad/k': priority .*'urgent'"):
        sidecar.flush()
    sidecar.flush()


def test_put_on_a_key_zenoh_refuses_surfaces_on_a_later_call(make_sidecar: Callable[..., Sidecar]) -> None:
    """A key expression only zenoh rejects fails in the worker; a following call raises it by name."""
    sidecar = make_sidecar("badkey")
    sidecar.put("bad/**x", "x")
    raised: list[SidecarError] = []

    def next_call_raises() -> bool:
        try:
            sidecar.info()
        except SidecarError as exc:
            raised.append(exc)
        return bool(raised)

    wait_until(next_call_raises, BOUND, "the put error to surface")
    assert "bad/**x" in str(raised[0])
    assert sidecar.info()["zid"]


@pytest.mark.parametrize("key", ["", "/lead", "trail/", "double//slash", "what?", "hash#"])
def test_put_with_malformed_key_raises_at_once(make_sidecar: Callable[..., Sidecar], key: str) -> None:
    """Obviously malformed key expressions are refused in the host with a ValueError."""
    sidecar = make_sidecar("malformed")
    with pytest.raises(ValueError, match="key expression"):
        sidecar.put(key, "x")


# ----------------------------------------------------------------- liveliness


def test_liveliness_token_appears_is_listed_and_disappears(make_sidecar: Callable[..., Sidecar]) -> None:
    """A token in one sidecar shows up as a put, is listed by liveliness_get, and a close is a delete."""
    port = free_port()
    a = make_sidecar("lv-a", peer_config(port))
    b = make_sidecar("lv-b", peer_config(connect_ports=(port,)))
    wait_until(lambda: b.info()["zid"] in a.info()["peers"], BOUND, "the sidecars to connect")
    changes = Collector()
    a.liveliness_subscribe("lv/**", changes)
    token = b.liveliness_token("lv/b")
    appeared = changes.wait(1)[0]
    assert (appeared.key_expr, appeared.kind) == ("lv/b", "put")
    assert a.liveliness_get("lv/**", timeout=5) == ["lv/b"]
    history = Collector()
    a.liveliness_subscribe("lv/**", history, history=True)
    assert history.wait(1)[0].key_expr == "lv/b"
    token.close()
    gone = changes.wait(2)[1]
    assert (gone.key_expr, gone.kind) == ("lv/b", "delete")
    assert a.liveliness_get("lv/**", timeout=1) == []
