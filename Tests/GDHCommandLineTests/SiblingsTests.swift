import GDHCommandLine
import Testing

@Suite("The verbs gdh hands to its sibling executables")
struct SiblingsTests {
    @Test("train, eval and synth keep their verb for gdh-train; bench drops it for gdh-bench")
    func routes() throws {
        let train = try #require(Siblings.route(["train", "--data", "d", "--out", "m"]))
        #expect(train.verb.executable == "gdh-train")
        #expect(train.arguments == ["train", "--data", "d", "--out", "m"])
        let eval = try #require(Siblings.route(["eval", "--help"]))
        #expect(eval.verb.executable == "gdh-train" && eval.arguments == ["eval", "--help"])
        let synth = try #require(Siblings.route(["synth"]))
        #expect(synth.verb.executable == "gdh-train" && synth.arguments == ["synth"])
        let bench = try #require(Siblings.route(["bench", "search", "--bits", "64"]))
        #expect(bench.verb.executable == "gdh-bench")
        #expect(bench.arguments == ["search", "--bits", "64"])
        #expect(Siblings.route(["bench"])?.arguments == [])
        let inspect = try #require(Siblings.route(["inspect", "db"]))
        #expect(inspect.verb.executable == "gdh-db" && inspect.arguments == ["inspect", "db"])
    }

    @Test("gdh help VERB asks the sibling for the verb's help")
    func helpRoutes() {
        #expect(Siblings.route(["help", "train"])?.arguments == ["help", "train"])
        #expect(Siblings.route(["help", "bench"])?.arguments == ["help"])
        #expect(Siblings.route(["help", "bench", "search"])?.arguments == ["help", "search"])
    }

    @Test("gdh's own verbs, help and options stay with gdh")
    func ownVerbs() {
        for args in [[], ["knn", "00"], ["help"], ["help", "knn"], ["--help"], ["-h"], ["stats", "train"], ["Train"]] {
            #expect(Siblings.route(args) == nil, "\(args)")
        }
    }

    @Test("The table: unique verbs, each with an abstract, run by gdh-train, gdh-bench or gdh-db")
    func table() {
        let verbs = Siblings.verbs.map(\.verb)
        #expect(Set(verbs).count == verbs.count)
        #expect(Set(verbs) == ["train", "eval", "synth", "bench", "inspect", "dump"])
        for v in Siblings.verbs {
            #expect(["gdh-train", "gdh-bench", "gdh-db"].contains(v.executable))
            #expect(!v.abstract.isEmpty && !v.abstract.contains("\n"))
            #expect(Siblings.abstract(of: v.verb) == v.abstract)
        }
        #expect(Siblings.abstract(of: "knn") == "")
    }

    @Test("The sibling is looked up beside gdh first, then in PATH's order")
    func locate() {
        let present: Set<String> = ["/opt/gdh/bin/gdh-train", "/usr/bin/gdh-train", "/usr/local/bin/gdh-train", "/usr/bin/gdh-bench"]
        let exists = { (p: String) in present.contains(p) }
        #expect(Siblings.locate("gdh-train", ownDirectory: "/opt/gdh/bin", path: "/usr/local/bin:/usr/bin", isExecutable: exists)
            == "/opt/gdh/bin/gdh-train")
        #expect(Siblings.locate("gdh-train", ownDirectory: "/build", path: "/usr/local/bin:/usr/bin", isExecutable: exists)
            == "/usr/local/bin/gdh-train")
        #expect(Siblings.locate("gdh-train", ownDirectory: "/build", path: "/usr/bin:/usr/local/bin", isExecutable: exists)
            == "/usr/bin/gdh-train")
        #expect(Siblings.locate("gdh-bench", ownDirectory: nil, path: "::/usr/bin/", isExecutable: exists) == "/usr/bin/gdh-bench")
        #expect(Siblings.locate("gdh-db", ownDirectory: "/opt/gdh/bin", path: "/usr/bin", isExecutable: exists) == nil)
        #expect(Siblings.locate("gdh-train", ownDirectory: "/build", path: "", isExecutable: exists) == nil)
        #expect(Siblings.locate("gdh-train", ownDirectory: "/build", path: nil, isExecutable: exists) == nil)
    }

    @Test("The message when the sibling is missing names it, where it was looked for and how to build it")
    func missingMessage() throws {
        let train = try #require(Siblings.verb("train"))
        #expect(Siblings.missingMessage(train, ownDirectory: "/opt/gdh/bin")
            == "gdh: 'train' is run by the gdh-train executable, which is not beside gdh (/opt/gdh/bin) nor on PATH; "
            + "build it with: swift build --product gdh-train")
    }
}
