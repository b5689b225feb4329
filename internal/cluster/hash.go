package cluster

import "hash/fnv"

// score is the rendezvous (highest random weight) score of a node for a
// gateway: FNV-1a of both names, then a 64-bit finaliser so that names
// differing in one character still spread evenly.
func score(node, gateway string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(node))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(gateway))
	x := h.Sum64()
	// splitmix64's finaliser.
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// pick returns the node that should own gateway among candidates (live,
// not draining): the first of preferred that is a candidate, else the
// candidate with the highest score (ties, which need equal 64-bit scores,
// go to the smaller name). It returns "" when there is no candidate.
func pick(gateway string, candidates []string, preferred []string) string {
	if len(candidates) == 0 {
		return ""
	}
	for _, p := range preferred {
		for _, c := range candidates {
			if c == p {
				return c
			}
		}
	}
	best, bestScore := "", uint64(0)
	for _, c := range candidates {
		s := score(c, gateway)
		if best == "" || s > bestScore || (s == bestScore && c < best) {
			best, bestScore = c, s
		}
	}
	return best
}
