package main

import (
	"math"
	"slices"
	"time"
)

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted durations, or 0 for none.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// median returns the middle value of ds (the lower one for an even count).
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return percentile(s, 50)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Ratio is A/B measured over alternating rounds: Value from the totals of
// all rounds, Min and Max over the rounds, to show how noisy it was.
type Ratio struct {
	Value  float64 `json:"value"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	Rounds int     `json:"rounds"`
}

// newRatio builds a Ratio from the overall values and the per-round pairs.
// Rounds where b is zero are left out of Min and Max.
func newRatio(a, b float64, roundsA, roundsB []float64) *Ratio {
	if b == 0 {
		return nil
	}
	r := &Ratio{Value: a / b, Min: math.Inf(1), Max: math.Inf(-1)}
	for i := range min(len(roundsA), len(roundsB)) {
		if roundsB[i] == 0 {
			continue
		}
		v := roundsA[i] / roundsB[i]
		r.Min, r.Max = math.Min(r.Min, v), math.Max(r.Max, v)
		r.Rounds++
	}
	if r.Rounds == 0 {
		r.Min, r.Max = r.Value, r.Value
	}
	return r
}
