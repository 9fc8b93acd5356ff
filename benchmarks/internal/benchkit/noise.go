package benchkit

import (
	"fmt"
	"math"
	"math/rand"
)

// Noisy returns src plus independent N(0, sigma^2) noise per component, re-normalised to
// unit length: a distinct vector close to src (cosine about 1/sqrt(1+dim*sigma^2)).
func Noisy(rng *rand.Rand, src []float32, sigma float64) []float32 {
	v := make([]float32, len(src))
	var ss float64
	for j, x := range src {
		y := float64(x) + rng.NormFloat64()*sigma
		v[j] = float32(y)
		ss += y * y
	}
	inv := float32(1 / math.Sqrt(ss))
	for j := range v {
		v[j] *= inv
	}
	return v
}

// CatalogueID is the product id servebench gives catalogue item i, which the serving
// profile benchmark also asks for.
func CatalogueID(i int) string { return fmt.Sprintf("bench-%06d", i) }
