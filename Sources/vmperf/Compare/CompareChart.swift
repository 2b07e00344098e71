import Foundation
import VMPerfSupport

/// The comparison's table drawn as an SVG bar chart (`vmperf --compare --svg FILE`): for each write size, the
/// throughput of each transport, and the mean 64-byte round trip of each, as horizontal bars on a
/// logarithmic scale (the figures span three orders of magnitude), each bar labelled with its figure.
struct CompareChart {
    let rows: [Compare.Row]

    private static let colors: [Options.Choice: String] = [.shm: "#1b7837", .ivshmem: "#7fbc41", .tcp: "#b2182b", .unix: "#2166ac"]
    private static let names = CompareTable.names

    /// The transports measured, in the table's order.
    private var transports: [Options.Choice] {
        Compare.allTransports.filter { choice in rows.contains { $0.figures[choice] != nil } }
    }
    private static let width = 760.0
    private static let labelWidth = 130.0
    private static let barSpace = 480.0
    private static let barHeight = 14.0

    /// The SVG document.
    func svg() -> String {
        var body: [String] = []
        var y = 30.0
        body.append(text(x: 10, y: y, "vmperf --compare", size: 16, weight: "bold"))
        y += 10
        for (index, choice) in transports.enumerated() {
            let x = 10 + Double(index) * 170
            body.append(#"<rect x="\#(x)" y="\#(y)" width="12" height="12" fill="\#(Self.colors[choice]!)"/>"#)
            body.append(text(x: x + 18, y: y + 11, Self.names[choice]!))
        }
        y += 36
        let throughput = rows.filter { !$0.latency }
        body.append(text(x: 10, y: y, "Throughput, GB/s (log scale; longer is better)", weight: "bold"))
        y += 10
        y = section(throughput, into: &body, at: y, unit: "GB/s", ratio: { figure, tcp in figure / tcp }) {
            $0.bytesPerSecond / 1e9
        }
        y += 22
        let latency = rows.filter(\.latency)
        body.append(text(x: 10, y: y, "Round trip, mean µs (log scale; shorter is better)", weight: "bold"))
        y += 10
        y = section(latency, into: &body, at: y, unit: "µs", ratio: { figure, tcp in tcp / figure }) {
            ($0.histogram?.mean ?? 0) / 1000
        }
        y += 10
        return """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(Self.width))" height="\(Int(y))" \
            viewBox="0 0 \(Int(Self.width)) \(Int(y))" font-family="sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            \(body.joined(separator: "\n"))
            </svg>

            """
    }

    /// One group of bars per row, one bar per transport, each labelled with its figure and, but for TCP's, how it
    /// compares with TCP's (`ratio`: times the throughput, times lower the round trip); returns where the next
    /// element goes.
    private func section(
        _ rows: [Compare.Row], into body: inout [String], at top: Double, unit: String,
        ratio: (Double, Double) -> Double, _ value: (Compare.Figure) -> Double
    ) -> Double {
        let values = rows.flatMap { row in row.figures.values.map(value) }.filter { $0 > 0 }
        guard let low = values.min(), let high = values.max() else { return top }
        // The scale starts a decade below the smallest figure, so that the shortest bar is still visible.
        let floor = log10(low) - 1
        let span = max(log10(high) - floor, 1e-9)
        var y = top
        for row in rows {
            y += 6
            let label = row.latency ? "\(row.blockSize) B messages" : row.workload
            body.append(text(x: 10, y: y + 1.5 * Self.barHeight, label))
            for choice in transports {
                guard let figure = row.figures[choice] else { continue }
                let v = value(figure)
                let length = v > 0 ? max(1, (log10(v) - floor) / span * Self.barSpace) : 0
                body.append(
                    #"<rect class="bar" x="\#(Self.labelWidth)" y="\#(y)" width="\#(coordinate(length))" height="\#(Self.barHeight)" fill="\#(Self.colors[choice]!)"><title>\#(Self.names[choice]!): \#(format(v)) \#(unit)</title></rect>"#)
                var label = "\(format(v)) \(unit)"
                if choice != .tcp, let tcp = row.figures[.tcp].map(value), tcp > 0, v > 0 {
                    label += String(format: row.latency ? " (%.1fx lower than TCP)" : " (%.1fx TCP)", ratio(v, tcp))
                }
                body.append(text(x: Self.labelWidth + length + 6, y: y + Self.barHeight - 3, label, size: 11))
                y += Self.barHeight + 2
            }
        }
        return y
    }

    private func text(x: Double, y: Double, _ content: String, size: Int = 12, weight: String = "normal") -> String {
        let escaped = content.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
        return #"<text x="\#(coordinate(x))" y="\#(coordinate(y))" font-size="\#(size)" font-weight="\#(weight)">\#(escaped)</text>"#
    }

    /// A figure as the table prints it: three significant digits.
    private func format(_ value: Double) -> String { String(format: "%.3g", value) }

    private func coordinate(_ value: Double) -> String { String(format: "%.1f", value) }

    /// Fails at once, before a run whose chart could not be written: when the folder `path` names is missing or
    /// not writable.
    static func checkWritable(_ path: String) throws {
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        guard FileManager.default.isWritableFile(atPath: folder) else {
            throw Failure("cannot write the chart to \(path): \(folder) is missing or not writable")
        }
    }

    /// Writes the chart to `path`.
    /// - Throws: a `Failure` saying which file could not be written and why.
    func write(to path: String) throws {
        do {
            try Data(svg().utf8).write(to: URL(fileURLWithPath: path))
        } catch {
            throw Failure("cannot write the chart to \(path): \(error.localizedDescription)")
        }
    }
}
