package benchkit

import (
	"fmt"
	"slices"
	"time"
)

// Percentile returns the p-th percentile (0..100) of samples by the nearest-rank method, or 0
// for no samples. samples is sorted in place.
func Percentile(samples []time.Duration, p float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	slices.Sort(samples)
	rank := int(p/100*float64(len(samples))+0.999999999) - 1
	return samples[min(max(rank, 0), len(samples)-1)]
}

// Millis formats a duration as milliseconds with two decimals for tables.
func Millis(d time.Duration) string {
	return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000)
}
