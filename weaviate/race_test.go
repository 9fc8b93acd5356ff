//go:build race

package weaviate

const raceEnabled = true
