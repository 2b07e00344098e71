/// iperf3's --bidir role tags: TX or RX as this side sees a stream, then C(lient) or S(erver).
extension TestParameters {
    /// Streams split by direction, in the order iperf3 prints them: one group, or with --bidir this side's
    /// sending streams first, each group with its role tag.
    func directionGroups<T>(_ items: [T], on side: TestRun.Side, localSends: (T) -> Bool) -> [(role: String?, items: [T])] {
        guard bidir else { return [(nil, items)] }
        return [(Self.tag(sending: true, on: side), items.filter(localSends)),
                (Self.tag(sending: false, on: side), items.filter { !localSends($0) })]
    }

    private static func tag(sending: Bool, on side: TestRun.Side) -> String {
        (sending ? "TX-" : "RX-") + (side == .client ? "C" : "S")
    }
}
