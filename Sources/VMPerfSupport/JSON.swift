import Foundation

/// A JSON value whose objects keep their keys in the order written, so that `-J` reads like iperf3's (cJSON)
/// output: `start`, `intervals`, `end`, in that order, tab-indented.
public indirect enum JSON: Equatable {
    case object([(String, JSON)])
    case array([JSON])
    case string(String)
    case int(Int64)
    case double(Double)
    case bool(Bool)
    case null
    /// JSON text written as it is: another document, already checked to parse (`verbatim(checking:)`).
    case verbatim(String)

    /// `text` as a value of its own, if it is a JSON object in UTF-8: it begins with "{", has no control character
    /// but tab, newline and carriage return (a NUL, say, which the parser may take as another encoding) and no
    /// byte-order mark, and parses; nil otherwise.
    public static func verbatim(checking text: String) -> JSON? {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard trimmed.hasPrefix("{"),
              !trimmed.unicodeScalars.contains(where: { ($0.value < 0x20 && !"\t\n\r".unicodeScalars.contains($0)) || $0 == "\u{FEFF}" }),
              (try? JSONSerialization.jsonObject(with: Data(trimmed.utf8))) is [String: Any]
        else { return nil }
        return .verbatim(trimmed)
    }

    public static func == (a: JSON, b: JSON) -> Bool { a.rendered() == b.rendered() }

    public static func int(_ value: Int) -> JSON { .int(Int64(value)) }

    /// cJSON's layout: one key per line, tabs, arrays of objects spread out.
    public func rendered(indent: Int = 0) -> String {
        let pad = String(repeating: "\t", count: indent + 1)
        let close = String(repeating: "\t", count: indent)
        switch self {
        case .object(let members):
            if members.isEmpty { return "{\n\(close)}" }
            let body = members.map { "\(pad)\(Self.quote($0.0)):\t\($0.1.rendered(indent: indent + 1))" }
            return "{\n" + body.joined(separator: ",\n") + "\n\(close)}"
        case .array(let items):
            if items.isEmpty { return "[]" }
            let body = items.map { "\(pad)\($0.rendered(indent: indent + 1))" }
            return "[\n" + body.joined(separator: ",\n") + "\n\(close)]"
        case .string(let text): return Self.quote(text)
        case .int(let value): return String(value)
        case .double(let value):
            guard value.isFinite else { return "0" }
            if value == value.rounded() && abs(value) < 1e15 { return String(Int64(value)) }
            return String(format: "%.17g", value)
        case .bool(let value): return value ? "true" : "false"
        case .null: return "null"
        case .verbatim(let text): return text
        }
    }

    public static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
