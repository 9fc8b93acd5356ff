//go:build race

package main

// raceEnabled says the race detector is on: the tests that measure retrieval quality on real
// photos skip, since instrumented decoding and linear algebra make them minutes long and
// they exercise no concurrency the other tests do not.
const raceEnabled = true
