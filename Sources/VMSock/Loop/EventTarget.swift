import CLibevent
import Glibc

/// What a libevent callback calls into. Each event carries one target as its callback argument, retained with
/// `Unmanaged` when the event is made and released by libevent's finalizer after the event is freed: the target
/// outlives every callback, even one running on the loop thread while another thread frees the event.
class EventTarget {
    /// Called on the loop thread with libevent's `EV_*` bits.
    func fired(_ events: Int16) {}
}

/// The one C callback for every event: hands the bits to the event's target.
private let eventTrampoline: event_callback_fn = { _, events, argument in
    Unmanaged<EventTarget>.fromOpaque(argument!).takeUnretainedValue().fired(events)
}

/// Runs once libevent is done with a freed event (after any running callback): drops the event's target.
private let finalizeTrampoline: event_finalize_callback_fn = { _, argument in
    Unmanaged<EventTarget>.fromOpaque(argument!).release()
}

/// Thin wrappers over the libevent calls the loop makes on events.
enum LibeventEvent {
    /// A new event on `base` that calls `target`. `EV_FINALIZE` is always added, so `delete` never blocks a
    /// thread while the callback runs on the loop thread (the retained target keeps the callback safe).
    /// - Parameters: fd: a descriptor, or -1 for an event only activated by hand or by a timeout.
    static func make(
        _ base: OpaquePointer, fd: Int32, events: Int32, target: EventTarget
    ) throws(VMSockError) -> OpaquePointer {
        let context = Unmanaged<EventTarget>.passRetained(target).toOpaque()
        guard let event = event_new(base, fd, Int16(events | EV_FINALIZE), eventTrampoline, context) else {
            Unmanaged<EventTarget>.fromOpaque(context).release()
            throw VMSockError(code: ENOMEM, "libevent could not make an event for descriptor \(fd)")
        }
        return event
    }

    /// Makes the event pending, with an optional timeout. Any thread.
    static func add(_ event: OpaquePointer, timeout: Duration? = nil) {
        guard let timeout else {
            event_add(event, nil)
            return
        }
        let (seconds, attoseconds) = timeout.components
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
        event_add(event, &tv)
    }

    /// Makes the event not pending. Any thread; never blocks (the event has EV_FINALIZE).
    static func delete(_ event: OpaquePointer) { event_del(event) }

    /// Runs the event's callback in the loop's next round, as if `events` had happened. Any thread; wakes the loop.
    static func activate(_ event: OpaquePointer, _ events: Int32) { event_active(event, events, 0) }

    /// Deletes and frees the event; its target is released after any callback still running. Any thread; the
    /// event must not be used afterwards.
    static func free(_ event: OpaquePointer) { event_free_finalize(0, event, finalizeTrampoline) }

    /// libevent's bits for a poll event: POLLIN waits with EV_READ, POLLOUT with EV_WRITE.
    static func bits(for interest: PollInterest) -> Int32 {
        interest.events & Int16(POLLOUT) != 0 ? EV_WRITE : EV_READ
    }
}
