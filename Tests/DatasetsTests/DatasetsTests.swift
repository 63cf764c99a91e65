import Testing
@testable import Datasets

@Test func DatasetsModuleLoads() { #expect(Bool(true)) }
