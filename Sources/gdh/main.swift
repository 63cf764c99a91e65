import GDHCommandLine

// `gdh train|eval|synth|bench|inspect|dump ...` run sibling executables (Siblings.verbs),
// so that gdh links no neural network, OpenBLAS or LMDB code. The arguments are routed
// here, before ArgumentParser sees them: a subcommand that captures its arguments for
// passthrough (`@Argument(parsing: .captureForPassthrough)`) would still have `--help`
// and `-h` taken by ArgumentParser's built-in help check, which looks for them anywhere
// in the input before parsing, so `gdh train --help` would print the placeholder's help
// instead of gdh-train's. The placeholders (SiblingCommand) only give `gdh --help` its
// listing; this call replaces the process with the sibling, or exits 1 if it is missing.
Siblings.execIfSiblingVerb(Array(CommandLine.arguments.dropFirst()))
GDH.main()
