struct Client {
    init(_ options: Options, _ report: Report) {}
    init(_ options: Options, host: String, _ report: Report) {}
    func run() throws { throw Failure("not built yet") }
}
