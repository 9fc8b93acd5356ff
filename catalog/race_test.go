//go:build race

package catalog

// raceEnabled says the race detector is on: the tests that measure retrieval quality on
// every shared photo skip, since instrumented decoding makes them minutes long and they
// exercise no concurrency the other tests do not.
const raceEnabled = true
