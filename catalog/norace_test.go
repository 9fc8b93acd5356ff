//go:build !race

package catalog

// raceEnabled: see race_test.go.
const raceEnabled = false
