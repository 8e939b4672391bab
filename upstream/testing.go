package upstream

import "fmt"

// NewTestHostSet builds a host set of unconnected hosts with the given
// weights, for load balancer tests.
func NewTestHostSet(weights []uint32) *HostSet {
	c := &Cluster{Name: "test"}
	var hosts []*Host
	for i, w := range weights {
		hosts = append(hosts, c.newHost(fmt.Sprintf("10.0.0.%d:80", i+1), w, "", nil))
	}
	return newHostSet(hosts)
}
